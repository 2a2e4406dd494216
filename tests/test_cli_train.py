"""``medalpy train`` / ``evaluate`` through click's CliRunner and real subprocesses, on the
bundled real MNIST sample cut down to a few hundred images."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from medalpy import checkpoint
from medalpy.cli import main

TINY = ["mnist-sample", "--layers", "40,30", "--epochs-layer1", "2", "--budget", "2",
        "--train-size", "300", "--val-size", "100", "--batch-size", "10", "--lr", "0.3",
        "--quiet"]


def _train(args, out):
    return CliRunner().invoke(main, ["train", *args, "--out", str(out)])


@pytest.mark.parametrize("flag", [["--gradual"], ["--stacked"], ["--hybrid", "0.5"],
                                  ["--frozen-lower"]])
def test_train_writes_model_and_metrics(tmp_path, flag):
    result = _train([*TINY, *flag], tmp_path / "run")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["budget_units_spent"] == metrics["budget_units"] == 2 + 2 * 2
    assert metrics["data"]["kind"] == "sample" and metrics["data"]["n_train"] == 300
    assert np.isfinite(metrics["test_relative_ce"])
    first = metrics["history"][0]
    assert metrics["history"][1]["val_loss"] < first["val_loss"] and first["phase"] == "1:layer"
    assert metrics["eval_decoder"] == ("mirror" if flag == ["--stacked"] else "direct")
    assert len(metrics["history"]) == len((tmp_path / "run" / "log.jsonl").read_text()
                                          .splitlines())
    assert f"outputs in {tmp_path / 'run'}" in result.output
    saved = checkpoint.load(tmp_path / "run" / "model.h5")
    assert saved["kind"] == "model" and saved["network"].depth == 2


@pytest.mark.slow
@pytest.mark.parametrize("flag", [["--gradual"], ["--stacked"], ["--hybrid", "0.5"],
                                  ["--frozen-lower"]])
def test_a_short_run_of_every_schedule_learns_far_better_than_the_mean_image(tmp_path, flag):
    """At most 0.6 times the relative cross-entropy of predicting the mean image: a schedule
    that stops training a layer, or its noise, or its decoder, lands far above."""
    result = _train(["mnist-sample", *flag, "--layers", "100,100", "--epochs-layer1", "8",
                     "--budget", "8", "--train-size", "2000", "--val-size", "300", "--quiet"],
                    tmp_path / "run")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_relative_ce"] < 0.6 * metrics["mean_image_relative_ce"], metrics


def test_evaluate_recomputes_the_saved_metrics(tmp_path):
    assert _train([*TINY, "--gradual"], tmp_path / "run").exit_code == 0
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "run" / "model.h5"),
                                       "mnist-sample", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    again = json.loads(result.output)
    assert again["test_relative_ce"] == pytest.approx(metrics["test_relative_ce"], rel=1e-9)


def test_config_file_and_options(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("layers = [20, 10]\nlr = 0.05\nmomentum = 0.5\n")
    result = _train([*TINY, "--config", str(cfg), "--layers", "30,20"], tmp_path / "run")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]
    assert config["layers"] == [30, 20] and config["lr"] == 0.3 and config["momentum"] == 0.5


@pytest.mark.parametrize("args, message", [
    (["--layers", "10,x"], "layers must be comma-separated integers"),
    (["--noise", "1.5"], "noise (masking: the probability of setting a unit to 0) must be a "
                         "number of at least 0 and below 1, got 1.5"),
    (["--hybrid", "2"], "fraction must be in [0, 1], got 2.0"),
    (["--hybrid", "0.5", "--stacked"], "--stacked and --hybrid: choose one schedule"),
    (["--gradual", "--stacked"], "--gradual and --stacked: choose one schedule"),
    (["--data-dir", "/no/such/dir"], "--data-dir /no/such/dir: no such directory"),
    (["--layers", "4000000000,10"], "not enough memory: Unable to allocate"),
    (["--lr", "-1"], "lr must be positive"),
    (["--lr", "inf"], "lr must be a finite number, got inf"),
    (["--weight-decay", "inf"], "weight_decay must be a finite number"),
    (["--layers", "40,,30"], "layers must be comma-separated integers, got '40,,30'"),
    (["--preset", "nope"], "Invalid value for '--preset'"),
    (["--train-size", "100000"], "train_size 100000 exceeds"),
    (["--backend", "gpu"], "Invalid value for '--backend'"),
    (["--no-such-option"], "No such option"),
])
def test_bad_options_exit_2_with_one_line(tmp_path, args, message):
    result = _train([*TINY, *args], tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_config_file_names_the_file_and_key(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("learning_rate = 0.1\n")
    result = _train([*TINY, "--config", str(cfg)], tmp_path / "run")
    assert result.exit_code == 2
    assert f"{cfg}: unknown setting(s) learning_rate" in result.output


def test_existing_run_is_not_overwritten_without_resume(tmp_path):
    assert _train([*TINY, "--gradual"], tmp_path / "run").exit_code == 0
    before = (tmp_path / "run" / "model.h5").read_bytes()
    result = _train([*TINY, "--gradual"], tmp_path / "run")
    assert result.exit_code == 2 and "holds a finished `medalpy train` result" in result.output
    assert (tmp_path / "run" / "model.h5").read_bytes() == before


def test_damaged_or_foreign_checkpoint_gives_a_clear_error(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    result = CliRunner().invoke(main, ["evaluate", str(bad), "mnist-sample"])
    assert result.exit_code == 2 and f"{bad}: damaged" in result.output
    import h5py

    with h5py.File(tmp_path / "v9.h5", "w") as f:
        f.attrs["format"] = "medalpy"
        f.attrs["format_version"] = 9
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "v9.h5"), "mnist-sample"])
    assert result.exit_code == 2 and "format version 9" in result.output


def _cli(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "medalpy", "train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def _arrays(path):
    return {k: v for k, v in checkpoint.load(path)["network"].parameters().items()}


@pytest.mark.slow
def test_killed_run_resumes_bit_identical(tmp_path):
    args = ["mnist-sample", "--layers", "120,80", "--epochs-layer1", "3", "--budget", "3",
            "--train-size", "1500", "--val-size", "300", "--quiet", "--stacked"]
    # The uninterrupted reference run.
    ref = _cli([*args, "--out", str(tmp_path / "ref")])
    assert ref.wait(timeout=300) == 0, ref.stdout.read().decode()
    # The same run, killed (SIGKILL: no chance to clean up) after its third epoch...
    run = _cli([*args, "--out", str(tmp_path / "cut")])
    log = tmp_path / "cut" / "log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and run.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 4:
            break
        time.sleep(0.005)
    assert run.poll() is None, "the run finished before it could be interrupted"
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert not (tmp_path / "cut" / "model.h5").exists()
    # ...then resumed.
    resumed = _cli([*args, "--out", str(tmp_path / "cut"), "--resume"])
    out = resumed.communicate(timeout=300)[0].decode()
    assert resumed.returncode == 0, out
    assert "resuming" in out
    a, b = _arrays(tmp_path / "ref" / "model.h5"), _arrays(tmp_path / "cut" / "model.h5")
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    ma = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert ma["test_relative_ce"] == mb["test_relative_ce"]
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(ma["history"]) == strip(mb["history"])
    assert ma["phases"] == mb["phases"] and len(ma["phases"]) == 2  # kept epochs, starts


def test_resume_with_different_options_is_refused(tmp_path):
    assert _train([*TINY, "--gradual"], tmp_path / "run").exit_code == 0
    result = _train([*TINY, "--gradual", "--lr", "0.5", "--resume"], tmp_path / "run")
    assert result.exit_code == 2 and "the options lr differ" in result.output


def test_divergence_keeps_the_last_good_checkpoint(tmp_path):
    from medalpy import run
    from medalpy.errors import TrainingDiverged

    class Explode:
        def on_epoch_end(self, trainer, record):
            if record["epoch"] == 1:
                self.saved = {k: v.copy() for k, v in trainer.network.parameters().items()}
                trainer.optimiser.lr, trainer.optimiser.normalise_gradients = 1e38, False

    cfg = run.make_config({"dataset": "mnist-sample", "layers": [20, 10], "epochs_layer1": 3,
                           "budget": 1, "train_size": 200, "val_size": 50})
    boom = Explode()
    with pytest.raises(TrainingDiverged, match="epoch 2"):
        run.train(cfg, tmp_path, callbacks=[boom])
    saved = checkpoint.load(tmp_path / "checkpoint.h5")
    assert saved["trainer"]["position"].epoch == 0
    for name, array in saved["network"].parameters().items():
        np.testing.assert_array_equal(array, boom.saved[name])


def test_help_lists_commands_and_imports_nothing_heavy():
    out = subprocess.run([sys.executable, "-m", "medalpy", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "train" in out and "data" in out
    # What keeps --help instant: it imports no heavy module (checked, rather than timed).
    probe = subprocess.run([sys.executable, "-c",
                            "import sys; from medalpy.cli import main\n"
                            "try: main(['--help'])\nexcept SystemExit: pass\n"
                            "print(sorted(m for m in ('numba', 'h5py', 'scipy', 'numpy') "
                            "if m in sys.modules))"], capture_output=True, text=True, check=True)
    assert probe.stdout.strip().endswith("[]"), probe.stdout


def test_per_phase_settings_from_toml(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[phase_settings.gradual]\nlr = 0.01\nmomentum = 0.5\n")
    result = _train([*TINY, "--config", str(cfg)], tmp_path / "run")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]
    assert config["phase_settings"] == {"gradual": {"lr": 0.01, "momentum": 0.5}}
    cfg.write_text("[phase_settings.gradual]\nlearning_rate = 0.01\n")
    result = _train([*TINY, "--config", str(cfg)], tmp_path / "run2")
    assert result.exit_code == 2
    assert "phase_settings.gradual: unknown setting(s) learning_rate" in result.output


def test_progress_lines_show_phase_epoch_losses_and_time_left(tmp_path):
    args = [a for a in TINY if a != "--quiet"]
    result = CliRunner().invoke(main, ["train", *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    lines = [l for l in result.output.splitlines() if " epoch " in l]
    assert len(lines) == 2 + 2
    assert all(" loss " in l and " val " in l and " left ~" in l for l in lines)
    assert "1:layer epoch   1/2" in lines[0] and "2:gradual epoch   2/2" in lines[-1]
    assert "phase 2/2 2:gradual: 2 epochs, trains encoders [0, 1]" in result.output


def test_resume_on_other_data_is_refused(tmp_path):
    """A checkpoint written on other data (here: its record says the full set) is not
    resumed on the sample."""
    from medalpy import run
    from medalpy.errors import ConfigError

    class Stop:
        def on_epoch_end(self, trainer, record):
            raise KeyboardInterrupt

    cfg = run.make_config({"dataset": "mnist-sample", "layers": [20, 10], "epochs_layer1": 2,
                           "budget": 1, "train_size": 200, "val_size": 50})
    with pytest.raises(KeyboardInterrupt):
        run.train(cfg, tmp_path, callbacks=[Stop()])
    saved = checkpoint.load(tmp_path / "checkpoint.h5")
    assert saved["extra"]["data"]["kind"] == "sample"
    import h5py

    with h5py.File(tmp_path / "checkpoint.h5", "r+") as f:
        extra = json.loads(f["extra"][()])
        extra["data"]["kind"] = "full"
        del f["extra"]
        f["extra"] = json.dumps(extra)
    with pytest.raises(ConfigError, match="the data differs from the checkpoint's .* in kind"):
        run.train(cfg, tmp_path, resume=True)


@pytest.mark.parametrize("toml, message", [
    ('momentum = "0.9"\n', "momentum must be a finite number, got '0.9'"),
    ("finetune_epochs = 2.5\n", "finetune_epochs must be an integer"),
    ('normalise_gradients = "false"\n', "normalise_gradients must be true or false"),
    ("[phase_settings.fine_tune]\nlr = 0.1\n", "phase_settings.fine_tune: no such phase"),
    ("[phase_settings.gradual]\nbatch_size = 0\n",
     "phase_settings.gradual: batch_size must be at least 1"),
    ("fit_decoder_epochs = 0\n", "fit_decoder_epochs must be at least 1"),
    ("seed = -1\n", "seed must be not negative"),
    ("scale = [1]\n", "scale must be a string, got [1]"),
    ("preset = {}\n", "preset must be a string, got {}"),
    ("init = []\n", "init must be a string, got []"),
    ("data_dir = 5\n", "data_dir must be a string, got 5"),
    ('init = "orthogonal"\n', "init must be one of medal, normal, zeros"),
])
def test_bad_values_in_a_config_file_fail_up_front(tmp_path, toml, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    result = _train([*TINY, "--config", str(cfg)], tmp_path / "run")
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_a_config_file_that_is_not_utf8_is_named(tmp_path):
    cfg = tmp_path / "latin1.toml"
    cfg.write_bytes("lr = 0.1 # caf\xe9\n".encode("latin-1"))
    result = _train([*TINY, "--config", str(cfg)], tmp_path / "run")
    assert result.exit_code == 2 and f"{cfg}: not valid TOML" in result.output, result.output


@pytest.mark.parametrize("kind, level", [("salt-pepper", 0.2), ("gaussian", 0.3)])
def test_other_noise_kinds_train_and_are_evaluated_with_their_own_noise(tmp_path, kind, level):
    from medalpy.evaluation import reconstruction_metrics
    from medalpy.kernels import get_backend

    # A network that learns (TINY's barely reacts to its input, so any noise would do).
    learns = ["mnist-sample", "--layers", "100,100", "--epochs-layer1", "8", "--budget", "8",
              "--train-size", "2000", "--val-size", "300", "--quiet"]
    result = _train([*learns, "--gradual", "--noise-type", kind, "--noise", str(level)],
                    tmp_path / kind)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / kind / "metrics.json").read_text())
    assert metrics["config"]["noise_type"] == kind and metrics["config"]["noise"] == level
    net = checkpoint.load(tmp_path / kind / "model.h5")["network"]
    from medalpy.data import load

    test = load("mnist-sample").test_images
    own = reconstruction_metrics(get_backend("cpu"), net, test, level, noise_type=kind)
    masking = reconstruction_metrics(get_backend("cpu"), net, test, level)
    assert metrics["test_relative_ce"] == pytest.approx(own["relative_ce"], rel=1e-9)
    assert metrics["test_relative_ce"] != pytest.approx(masking["relative_ce"], rel=1e-6)
    # Training saw that noise too: masking at the same level gives other weights.
    assert metrics["test_relative_ce"] < 0.8 * metrics["mean_image_relative_ce"]
    assert _train([*learns, "--gradual", "--noise", "0.2"], tmp_path / "m").exit_code == 0
    other = checkpoint.load(tmp_path / "m" / "model.h5")["network"]
    assert not np.array_equal(net.encoders[0].W, other.encoders[0].W)


@pytest.mark.parametrize("args, message", [
    (["--noise", "1.0"], "noise (masking: the probability of setting a unit to 0) must be"),
    (["--noise-type", "salt-pepper", "--noise", "-0.1"], "noise (salt-pepper"),
    (["--noise-type", "gaussian", "--noise", "-1"], "noise (gaussian: the standard deviation)"),
    (["--noise-type", "gaussian", "--noise", "nan"], "noise must be a finite number, got nan"),
    (["--noise-type", "blur"], "Invalid value for '--noise-type'"),
])
def test_noise_levels_are_checked_for_their_kind(tmp_path, args, message):
    result = _train([*TINY, "--gradual", *args], tmp_path / "run")
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_divergence_names_the_checkpoint_only_when_there_is_one(tmp_path):
    args = ["mnist-sample", "--layers", "20,10", "--epochs-layer1", "2", "--budget", "1",
            "--train-size", "200", "--val-size", "100", "--quiet", "--no-normalise-gradients",
            "--lr", "1e30"]
    result = _train(args, tmp_path / "run")
    assert result.exit_code == 2 and "loss became" in result.output, result.output
    assert "lower the learning rate" in result.output
    # The first epoch diverged: no checkpoint was written, and none is promised.
    assert "checkpoint" not in result.output


@pytest.mark.parametrize("flag,head", [("--gradual", ["decoder"]),
                                       ("--stacked", ["mirror.1", "mirror.0"])])
def test_the_clean_metric_equals_plain_numpy_from_the_saved_files(tmp_path, flag, head):
    """``test_relative_ce_clean`` recomputed without medalpy: the weights read from model.h5
    with h5py, the test images from the IDX file with gzip, the maths in float64 NumPy."""
    import gzip
    from pathlib import Path

    import h5py

    assert _train([*TINY, flag], tmp_path / "run").exit_code == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    sample = Path(__file__).resolve().parents[1] / "data" / "mnist-sample"
    with gzip.open(sample / "t10k-images-idx3-ubyte.gz") as f:
        X = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784) / 255.0
    with h5py.File(tmp_path / "run" / "model.h5") as f:
        layers = [(f[f"network/{name}/W"][()].astype(np.float64),
                   f[f"network/{name}/b"][()].astype(np.float64))
                  for name in ["encoder.0", "encoder.1", *head]]
    A = X
    for W, b in layers:
        A = 1.0 / (1.0 + np.exp(-(A @ W + b)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ce = -(X * np.log(A) + (1 - X) * np.log1p(-A)).sum(axis=1)
        ent = -np.nan_to_num(X * np.log(X) + (1 - X) * np.log1p(-X)).sum(axis=1)
    assert metrics["test_relative_ce_clean"] == pytest.approx((ce - ent).mean(), rel=1e-4)
    assert metrics["data"]["n_test"] == len(X) == 1000
