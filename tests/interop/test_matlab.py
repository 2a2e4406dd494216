"""``medalpy export --format mat`` / ``medalpy import``: the round trip keeps every array bit
for bit and all metadata; ``contrib/medalpy_reconstruct.m`` run in GNU Octave reconstructs as
medalpy does; malformed files are one-line errors."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

import medalpy
from medalpy import checkpoint
from medalpy.errors import CheckpointError
from medalpy.evaluation import reconstruct
from medalpy.kernels import get_backend
from medalpy.matlab import export_mat, from_mat, import_mat

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"


@pytest.fixture(scope="module")
def images():
    return medalpy.load_dataset("mnist-sample").train_images[:400]


def _model(tmp_path, images, method, dtype, **more):
    cfg = medalpy.make_config({"method": method, "layers": [30, 20], "epochs_layer1": 1,
                               "budget": 1, "dtype": dtype, "backend": "numpy", **more})
    trainer = medalpy.build_trainer(cfg, images[:300], images[300:])
    trainer.run()
    path = tmp_path / f"{method}-{dtype}.h5"
    checkpoint.save(path, trainer.network, cfg.to_dict(), extra={"test_relative_ce": 1.25})
    return path


def _same(a, b):
    """Every array bit for bit (and dtype), every flag and every setting."""
    na, nb = a["network"], b["network"]
    assert (na.n_inputs, na.dtype, na.head, na.decoder_target) == \
        (nb.n_inputs, nb.dtype, nb.head, nb.decoder_target)
    la, lb = na.layers(), nb.layers()
    assert list(la) == list(lb)
    for name in la:
        assert la[name].trainable == lb[name].trainable
        for part in ("W", "b"):
            x, y = getattr(la[name], part), getattr(lb[name], part)
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert x.tobytes() == y.tobytes(), f"{name}.{part} changed"
    assert a["config"] == b["config"] and a["extra"] == b["extra"]


@pytest.mark.parametrize("method,dtype", [("gradual", "float32"), ("stacked", "float64")])
def test_round_trip_keeps_everything(tmp_path, images, method, dtype):
    original = _model(tmp_path, images, method, dtype)
    export_mat(original, tmp_path / "m.mat")
    back = import_mat(tmp_path / "m.mat", tmp_path / "back")
    _same(checkpoint.load(original), checkpoint.load(back))
    # and what MATLAB reads: W stored fan_out x fan_in, b a column
    model = scipy.io.loadmat(tmp_path / "m.mat", struct_as_record=False)["model"][0, 0]
    W1 = model.encoders[0, 0][0, 0].W
    assert W1.shape == (30, 784) and W1.dtype == np.dtype(dtype)
    assert model.encoders[0, 0][0, 0].b.shape == (30, 1)
    assert list(model.arch.ravel()) == [784, 30, 20]


def test_a_frozen_layer_and_noise_settings_travel(tmp_path, images):
    path = _model(tmp_path, images, "hybrid", "float32", fraction=0.5, noise=0.25)
    saved = checkpoint.load(path)
    saved["network"].encoders[0].trainable = False
    checkpoint.save(path, saved["network"], saved["config"], extra=saved["extra"])
    export_mat(path, tmp_path / "m.mat")
    loaded = from_mat(tmp_path / "m.mat")
    _same(saved, loaded)
    model = scipy.io.loadmat(tmp_path / "m.mat", struct_as_record=False)["model"][0, 0]
    assert model.noise[0, 0] == 0.25 and model.fraction[0, 0] == 0.5
    assert str(model.method[0]) == "hybrid"


def test_a_trained_runs_schedule_is_readable_in_matlab(tmp_path):
    from click.testing import CliRunner

    from medalpy.cli import main

    result = CliRunner().invoke(main, [
        "train", "mnist-sample", "--layers", "20,10", "--epochs-layer1", "2", "--budget", "1",
        "--train-size", "200", "--val-size", "100", "--quiet", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    export_mat(tmp_path / "r" / "model.h5", tmp_path / "m.mat")
    model = scipy.io.loadmat(tmp_path / "m.mat", struct_as_record=False)["model"][0, 0]
    assert str(model.schedule[0]) == "1:layer 2 epochs; 2:gradual 1 epochs"


@pytest.mark.skipif(shutil.which("octave") is None,
                    reason="GNU Octave is absent (Debian: apt-get install octave)")
@pytest.mark.parametrize("method", ["gradual", "stacked"])
def test_octave_reconstructs_as_medalpy(tmp_path, images, method):
    """The .m function in GNU Octave against medalpy's float64 reconstruction (clean input):
    a decoder head (gradual) and a mirror head (stacked)."""
    path = _model(tmp_path, images, method, "float64")
    export_mat(path, tmp_path / "m.mat")
    X = images[300:350]
    scipy.io.savemat(tmp_path / "x.mat", {"X": X})  # uint8, as images are stored
    script = (f"addpath('{CONTRIB}'); s = load('{tmp_path / 'm.mat'}'); "
              f"x = load('{tmp_path / 'x.mat'}'); Y = medalpy_reconstruct(s.model, x.X); "
              f"save('-mat7-binary', '{tmp_path / 'y.mat'}', 'Y');")
    subprocess.run(["octave", "--no-gui", "--quiet", "--no-window-system", "--eval", script],
                   check=True, capture_output=True, timeout=120)
    Y_octave = scipy.io.loadmat(tmp_path / "y.mat")["Y"]
    network = checkpoint.load(path)["network"]
    _, Y = reconstruct(get_backend("numpy"), network, X, np.arange(len(X)), 0.0)
    assert Y.shape == Y_octave.shape == (50, 784)
    np.testing.assert_allclose(Y_octave, Y, rtol=0, atol=1e-10)
    assert np.abs(Y - X / 255.0).mean() < 0.5  # a reconstruction, not a constant


def _malformed(tmp_path, **changes):
    """An exported model with some fields of its struct replaced (None: removed)."""
    path = _model(tmp_path, medalpy.load_dataset("mnist-sample").train_images[:400],
                  "gradual", "float32")
    export_mat(path, tmp_path / "good.mat")
    contents = scipy.io.loadmat(tmp_path / "good.mat", struct_as_record=False)
    struct = contents["model"][0, 0]
    fields = {name: getattr(struct, name) for name in struct._fieldnames}
    for name, value in changes.items():
        if value is None:
            fields.pop(name)
        else:
            fields[name] = value
    bad = tmp_path / "bad.mat"
    scipy.io.savemat(bad, {"model": fields})
    return bad


@pytest.mark.parametrize("changes,message", [
    ({"format": "something-else"}, "format is 'something-else'"),
    ({"encoders": None}, "no field 'encoders'"),
    ({"arch": np.array([[784.0, 31, 20]])}, "arch does not match"),
    ({"config_json": "{not json"}, "not JSON"),
    ({"decoder": {"W": np.zeros((784, 7)), "b": np.zeros((784, 1)),
                  "trainable": np.array([[1]])}}, "decoder: arrays are float64"),
])
def test_malformed_mat_is_one_line_error(tmp_path, changes, message):
    bad = _malformed(tmp_path, **changes)
    with pytest.raises(CheckpointError, match=message) as caught:
        from_mat(bad)
    assert str(bad) in str(caught.value) and "\n" not in str(caught.value)


def test_cli_export_import_errors_without_traceback(tmp_path):
    """The real command line: a file that is not a .mat, a .mat without a model, an export
    over an existing file: one line on stderr, exit 2, nothing written."""
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"not a mat file at all")
    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"W": np.eye(3)})
    exists = tmp_path / "exists.mat"
    exists.write_bytes(b"keep me")
    cases = [(["import", str(junk), "--out", str(tmp_path / "a")], "not a readable .mat"),
             (["import", str(other), "--out", str(tmp_path / "b")], "no variable 'model'"),
             (["export", str(junk), str(exists)], "exists; choose another file")]
    for args, message in cases:
        done = subprocess.run([sys.executable, "-m", "medalpy", *args], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert exists.read_bytes() == b"keep me"
