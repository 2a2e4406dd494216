"""Classifiers from pretrained encoders: the trainer's supervised phase and `medalpy classify`."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from medalpy.cli import main
from medalpy.kernels import get_backend
from medalpy.supervised import random_encoders, train_classifier


def _blobs(seed, n, d=20, classes=3):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (classes, d))
    y = rng.integers(0, classes, n)
    X = np.clip(centres[y] + rng.normal(0, 0.15, (n, d)), 0, 1)
    return (X * 255).astype(np.uint8), y


def test_classifier_learns_separable_classes_and_keeps_the_encoders_given():
    X, y = _blobs(0, 600)
    enc = random_encoders(20, [16, 8], seed=1)
    before = enc.encoders[0].W.copy()
    result = train_classifier(get_backend("cpu"), enc, X[:400], y[:400], X[400:500], y[400:500],
                              X[500:], y[500:], 3, seed=2, epochs=30, patience=5, lr=0.1)
    assert result["test_error"] < 0.05
    np.testing.assert_array_equal(enc.encoders[0].W, before)  # the caller's network untouched
    assert result["network"].head == "classifier"


def test_early_stopping_on_validation_error():
    X, y = _blobs(3, 300)
    enc = random_encoders(20, [8], seed=1)
    result = train_classifier(get_backend("cpu"), enc, X[:200], y[:200], X[200:250], y[200:250],
                              X[250:], y[250:], 3, seed=2, epochs=500, patience=3, lr=0.1)
    errors = [r["val_loss"] for r in result["history"]]
    assert result["epochs_run"] < 500
    assert len(errors) - 1 - int(np.argmin(errors)) == 3  # stopped 3 epochs after the best
    assert result["val_error"] == min(errors)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    result = CliRunner().invoke(main, [
        "train", "mnist-sample", "--layers", "100,50", "--epochs-layer1", "4", "--budget", "2",
        "--train-size", "1000", "--val-size", "100", "--batch-size", "10", "--quiet",
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "model.h5"


@pytest.mark.parametrize("extra", [[], ["--random-init"]])
def test_classify_command(tmp_path, pretrained, extra):
    result = CliRunner().invoke(main, ["classify", str(pretrained), "mnist-sample",
                                       "--train-size", "300", "--epochs", "15", "--patience", "15",
                                       "--out", str(tmp_path), *extra])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["n_train"] == 300 and record["n_val"] == 100
    assert 0.0 <= record["test_error"] < 0.8  # ten classes: chance is 0.9
    assert record["settings"] == {"epochs": 15, "patience": 15, "lr": 0.1, "momentum": 0.9,
                                  "weight_decay": 1e-5, "batch_size": 20,
                                  "normalise_gradients": False, "seed": 0}
    assert 0 <= record["kept_epoch"] <= record["epochs_run"]
    assert (tmp_path / "classifier.h5").exists()


def test_classify_takes_the_settings_searched_for_the_models_preset(tmp_path):
    """A model trained with --preset paper-mnist is classified with the settings searched on
    that preset's encoders, unless an option says otherwise; the record says which."""
    from medalpy.supervised import CLASSIFIER_PRESETS

    result = CliRunner().invoke(main, [
        "train", "mnist-sample", "--preset", "paper-mnist", "--layers", "20", "--epochs-layer1",
        "1", "--train-size", "200", "--val-size", "100", "--quiet", "--out",
        str(tmp_path / "pre")])
    assert result.exit_code == 0, result.output
    model = str(tmp_path / "pre" / "model.h5")
    for name, extra in (("plain", []), ("given", ["--lr", "0.3"])):
        result = CliRunner().invoke(main, ["classify", model, "mnist-sample", "--train-size",
                                           "100", "--epochs", "2", "--out",
                                           str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        settings = json.loads((tmp_path / name / "metrics.json").read_text())["settings"]
        expected = {**CLASSIFIER_PRESETS["paper-mnist"], **({"lr": 0.3} if extra else {})}
        assert {k: settings[k] for k in expected} == expected


def test_classify_bad_input(tmp_path, pretrained):
    result = CliRunner().invoke(main, ["classify", str(pretrained), "mnist-sample",
                                       "--train-size", "99999", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "train size 99999 exceeds" in result.output
    result = CliRunner().invoke(main, ["classify", str(tmp_path / "none.h5"), "mnist-sample",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no such model" in result.output
    for bad, message in ((["--lr", "-1"], "--lr must be positive"),
                         (["--lr", "inf"], "--lr must be a finite number"),
                         (["--momentum", "5"], "--momentum must be in [0, 1)"),
                         (["--weight-decay", "nan"], "--weight-decay must be a finite"),
                         (["--batch-size", "0"], "--batch-size must be at least 1"),
                         (["--patience", "0"], "--patience must be"),
                         (["--train-size", "5"], "smaller than the 10 classes")):
        out = tmp_path / "bad"
        result = CliRunner().invoke(main, ["classify", str(pretrained), "mnist-sample", *bad,
                                           "--out", str(out)])
        assert result.exit_code == 2 and message in result.output, (bad, result.output)
        assert not out.exists(), bad


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_classification_error_is_the_fraction_of_wrong_arg_maxes(backend):
    """Over 4 batches of 16 and a short last one (70 rows), against the plain NumPy softmax
    classifier on the clean inputs."""
    from medalpy.backprop import Pass
    from medalpy.network import Network
    from medalpy.trainer import classification_error

    rng = np.random.default_rng(4)
    X, y = _blobs(4, 70, classes=4)
    net = Network(20, dtype=np.float64)
    net.add_encoder(12, rng)
    net.attach_classifier(4, rng)
    for layer in net.layers().values():
        layer.W[...] = rng.normal(0, 1.0, layer.W.shape)
    k = get_backend(backend)
    error = classification_error(k, Pass(k, net.path(0), 16, net.head, net.dtype, train=False),
                                 X, y, net.dtype)
    H = 1.0 / (1.0 + np.exp(-(X / 255.0 @ net.encoders[0].W + net.encoders[0].b)))
    predicted = np.argmax(H @ net.classifier.W + net.classifier.b, axis=1)
    assert 0.2 < error < 0.95  # neither trivial nor perfect, so every row counts
    assert error == np.count_nonzero(predicted != y) / 70


def test_every_searched_classifier_preset_names_a_preset_and_valid_settings():
    from medalpy.run import PRESETS
    from medalpy.supervised import CLASSIFIER_PRESETS, check_classifier_settings

    for preset, values in CLASSIFIER_PRESETS.items():
        assert preset in PRESETS
        check_classifier_settings(values)
        assert not {"epochs", "patience"} & set(values)  # the command's or the scale's
