"""CIFAR readers on files written in the exact canonical layouts; the safe unpickler."""

import os
import pickle
import shutil

import numpy as np
import pytest
from data_canonical import make_tarball, py2_pickle, write_layout

import medalpy.data.registry as registry
from medalpy.data import load
from medalpy.data.cifar import read_cifar, to_grayscale
from medalpy.data.safe_pickle import safe_loads
from medalpy.errors import DataError

LAYOUTS = [("cifar10", "python"), ("cifar10", "binary"), ("cifar100", "python"),
           ("cifar100", "binary")]


@pytest.mark.parametrize("name,version", LAYOUTS)
@pytest.mark.parametrize("packed", [False, True], ids=["extracted", "tarball"])
def test_reads_canonical_layouts(tmp_path, name, version, packed):
    src = tmp_path / "src"
    top, want = write_layout(str(src), name, version)
    root = tmp_path / name
    root.mkdir()
    if packed:
        tarname = registry.DATASETS[name].urls[0].rsplit("/", 1)[1]
        if version == "binary":
            tarname = tarname.replace("python", "binary")
        make_tarball(top, root / tarname)
    else:
        shutil.move(top, root / os.path.basename(top))
    got = read_cifar(name, str(root))
    assert got["version"] == version
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value)
        assert got[key].dtype == (np.uint8 if "images" in key else np.int64)


@pytest.mark.parametrize("name,version", LAYOUTS)
def test_load_through_registry(tmp_path, monkeypatch, name, version):
    # small files: tell the registry the counts the test wrote
    n_train = 5 * 7 if name == "cifar10" else 7
    spec = registry.DATASETS[name]
    monkeypatch.setitem(registry.DATASETS, name,
                        registry.DatasetSpec(**{**spec.__dict__, "n_train": n_train,
                                                "n_test": 7}))
    _, want = write_layout(str(tmp_path / name), name, version)
    ds = load(name, tmp_path, download=False)
    assert ds.train_images.shape == (n_train, 3072) and ds.image_shape == (3, 32, 32)
    np.testing.assert_array_equal(ds.train_labels, want["train_labels"])
    assert ds.source["kind"] == "full" and ds.source["format"] == version
    grey = load(name, tmp_path, download=False, grayscale=True)
    assert grey.n_features == 1024 and grey.image_shape == (32, 32)
    assert grey.train_images.dtype == np.uint8


def test_count_mismatch_against_canonical_sizes(tmp_path):
    write_layout(str(tmp_path / "cifar10"), "cifar10", "binary")
    with pytest.raises(DataError, match="35 train images, cifar10 has 50000"):
        load("cifar10", tmp_path, download=False)


def test_tarball_checksum_is_checked(tmp_path):
    top, _ = write_layout(str(tmp_path / "src"), "cifar10", "python")
    (tmp_path / "cifar10").mkdir()
    make_tarball(top, tmp_path / "cifar10" / "cifar-10-python.tar.gz")
    with pytest.raises(DataError, match="checksum mismatch"):
        load("cifar10", tmp_path, download=False)


def test_grayscale_luma():
    rgb = np.zeros((2, 3072), np.uint8)
    rgb[0, :1024] = 255  # pure red
    rgb[1, :] = 200  # grey stays grey
    g = to_grayscale(rgb)
    assert g.shape == (2, 1024)
    assert (g[0] == 76).all() and (g[1] == 200).all()


def test_binary_truncated_and_empty(tmp_path):
    top, _ = write_layout(str(tmp_path), "cifar10", "binary")
    path = os.path.join(top, "data_batch_3.bin")
    with open(path, "r+b") as fh:
        fh.truncate(3073 * 2 + 100)
    with pytest.raises(DataError, match="data_batch_3.bin: truncated or padded"):
        read_cifar("cifar10", str(tmp_path))
    open(path, "wb").close()
    with pytest.raises(DataError, match="data_batch_3.bin: empty file"):
        read_cifar("cifar10", str(tmp_path))
    os.remove(path)
    with pytest.raises(DataError, match="data_batch_3.bin: file not found"):
        read_cifar("cifar10", str(tmp_path))


def test_python_count_mismatch_and_missing_key(tmp_path):
    top = tmp_path / "cifar-100-python"
    top.mkdir()
    imgs = np.zeros((3, 3072), np.uint8)
    (top / "train").write_bytes(py2_pickle({"data": imgs, "fine_labels": [1, 2]}))
    (top / "test").write_bytes(py2_pickle({"data": imgs, "labels": [1, 2, 3]}))
    with pytest.raises(DataError, match="train: 3 images but 2 labels"):
        read_cifar("cifar100", str(tmp_path))
    (top / "train").write_bytes(py2_pickle({"data": imgs, "fine_labels": [1, 2, 3]}))
    with pytest.raises(DataError, match="test: CIFAR batch lacks the keys"):
        read_cifar("cifar100", str(tmp_path))


def test_wrong_array_dimensions(tmp_path):
    top = tmp_path / "cifar-100-python"
    top.mkdir()
    for m in ("train", "test"):
        (top / m).write_bytes(py2_pickle({"data": np.zeros((2, 1024), np.uint8),
                                          "fine_labels": [0, 1]}))
    with pytest.raises(DataError, match=r"has shape \(2, 1024\), expected \(N, 3072\)"):
        read_cifar("cifar100", str(tmp_path))


def test_damaged_tarball(tmp_path):
    top, _ = write_layout(str(tmp_path / "src"), "cifar100", "python")
    tar = make_tarball(top, tmp_path / "cifar-100-python.tar.gz")
    raw = tar.read_bytes()
    tar.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cifar-100-python.tar.gz: (truncated|damaged)"):
        read_cifar("cifar100", str(tmp_path))


# -- the safe unpickler -------------------------------------------------------------------


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_executing_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"data": _Payload(marker), "labels": [1]}, protocol=2)
    # the payload really executes with the standard unpickler ...
    top = tmp_path / "cifar-10-batches-py"
    top.mkdir()
    (top / "data_batch_1").write_bytes(evil)
    with pytest.raises(DataError) as info:
        read_cifar("cifar10", str(tmp_path))
    msg = str(info.value)
    assert "data_batch_1" in msg and "refused" in msg and "system" in msg
    assert not marker.exists()
    pickle.loads(evil)  # ... which this control shows
    assert marker.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("subprocess", "Popen"),
                                         ("numpy", "load"), ("copyreg", "_reconstructor"),
                                         ("numpy.core.multiarray", "scalar")])
def test_every_other_global_is_refused(module, name):
    raw = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n)R."
    with pytest.raises(DataError, match=f"refused to load.*{module}.{name}"):
        safe_loads(raw, "evil.pkl")


def test_non_numeric_dtype_is_refused():
    raw = py2_pickle({"data": np.zeros((1, 2), np.uint8)}).replace(b"U\x02u1", b"U\x02O8")
    with pytest.raises(DataError, match="not a plain numeric type"):
        safe_loads(raw, "obj.pkl")


def test_array_size_must_match_its_bytes():
    raw = py2_pickle({"data": np.zeros((2, 3), np.uint8)}).replace(b"K\x02K\x03t", b"K\x09K\x03t")
    with pytest.raises(DataError, match="needs 27 bytes, the pickle holds 6"):
        safe_loads(raw, "size.pkl")


def test_fuzz_cifar_python_and_binary(tmp_path):
    """Mutated and truncated canonical batches: only DataError escapes."""
    rng = np.random.default_rng(99)
    top, _ = write_layout(str(tmp_path / "seed"), "cifar100", "python", n_per_file=3)
    pick = open(os.path.join(top, "train"), "rb").read()
    binary = np.zeros((2, 3074), np.uint8).tobytes()
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    shutil.copy(os.path.join(top, "test"), d / "test")
    errors = 0
    for trial in range(300):
        raw = bytearray(pick if trial % 3 else binary)
        if rng.random() < 0.5:
            raw = raw[: rng.integers(0, len(raw))]
        else:
            for _ in range(rng.integers(1, 4)):
                raw[rng.integers(0, min(len(raw), 200))] = rng.integers(0, 256)
        (d / "train").write_bytes(bytes(raw))
        try:
            read_cifar("cifar100", str(tmp_path))
        except DataError as exc:
            assert "train" in str(exc)
            errors += 1
    assert errors > 150
