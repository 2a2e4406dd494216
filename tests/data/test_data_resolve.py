"""Name resolution order, checked downloads that leave nothing behind, the MNIST fallback."""

import hashlib
import http.server
import threading
import time

import numpy as np
import pytest

import medalpy.data.registry as registry
from medalpy.data import SampleDataWarning, find, load
from medalpy.data.idx import write_idx
from medalpy.errors import DataError

SAMPLE = registry.bundled_dir() / "mnist-sample"


def _copy_sample(dest):
    dest.mkdir(parents=True)
    for f in SAMPLE.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


def test_sample_loads_class_balanced():
    ds = load("mnist-sample")
    assert ds.train_images.shape == (4000, 784) and ds.test_images.shape == (1000, 784)
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int64
    assert (np.bincount(ds.train_labels) == 400).all()
    assert (np.bincount(ds.test_labels) == 100).all()
    assert ds.source["kind"] == "sample" and ds.n_features == 784
    assert set(ds.source["checksums"].values()) == {"published"}


def test_mnist_falls_back_to_sample_loudly(offline, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.warns(SampleDataWarning, match="BUNDLED SAMPLE"):
        ds = load("mnist", tmp_path / "empty")
    assert ds.source["kind"] == "sample" and ds.source["requested"] == "mnist"
    assert "download" in ds.source["fallback_reason"]


def test_a_data_dir_that_does_not_exist_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    from medalpy.errors import DataError

    with pytest.raises(DataError, match=f"--data-dir {tmp_path / 'typo'}: no such directory"):
        load("mnist", tmp_path / "typo")
    monkeypatch.setenv("MEDALPY_DATA", str(tmp_path / "typo"))
    with pytest.raises(DataError, match="MEDALPY_DATA .*: no such directory"):
        load("mnist")


def test_explicit_dir_before_env_before_cache(tmp_path, monkeypatch, isolated_cache):
    a = _copy_sample(tmp_path / "a" / "mnist-sample")
    b = _copy_sample(tmp_path / "b" / "mnist-sample")
    c = _copy_sample(isolated_cache / "mnist-sample")
    assert find("mnist-sample") == ("user cache", c)
    monkeypatch.setenv("MEDALPY_DATA", str(tmp_path / "b"))
    assert find("mnist-sample") == ("data dir", b)
    assert find("mnist-sample", tmp_path / "a") == ("data dir", a)


def test_uncompressed_copy_is_recognised(tmp_path):
    import gzip

    d = tmp_path / "mnist-sample"
    d.mkdir()
    for f in SAMPLE.iterdir():
        (d / f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
    ds = load("mnist-sample", tmp_path)
    assert ds.source["found_in"] == "data dir"
    assert set(ds.source["checksums"].values()) == {"content"}


def test_damaged_file_is_an_error_not_skipped(tmp_path):
    d = _copy_sample(tmp_path / "mnist-sample")
    raw = (d / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(raw[:-8] + b"\0" * 8)  # bad CRC
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: corrupt gzip"):
        load("mnist-sample", tmp_path)


def test_valid_but_different_file_fails_checksum(tmp_path):
    d = _copy_sample(tmp_path / "mnist-sample")
    labels = np.zeros(1000, np.uint8)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        load("mnist-sample", tmp_path)


def test_count_mismatch_between_images_and_labels(tmp_path, monkeypatch):
    spec = registry.DATASETS["mnist-sample"]
    monkeypatch.setitem(registry.DATASETS, "mnist-sample", registry.DatasetSpec(
        **{**spec.__dict__, "md5": {}, "content_md5": {}}))
    d = _copy_sample(tmp_path / "mnist-sample")
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros(999, np.uint8))
    with pytest.raises(DataError, match="999 labels for 1000 images"):
        load("mnist-sample", tmp_path)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros((1000, 2), np.uint8))
    with pytest.raises(DataError, match=r"wrong dimensions \(1000, 2\)"):
        load("mnist-sample", tmp_path)
    write_idx(d / "t10k-images-idx3-ubyte.gz", np.zeros((1000, 28, 27), np.uint8))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: wrong dimensions"):
        load("mnist-sample", tmp_path)


def test_partial_directory_is_an_error(tmp_path):
    d = _copy_sample(tmp_path / "mnist-sample")
    (d / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="incomplete mnist-sample: missing train-labels"):
        load("mnist-sample", tmp_path)


def test_directory_where_a_file_should_be(tmp_path):
    d = _copy_sample(tmp_path / "mnist-sample")
    (d / "train-labels-idx1-ubyte.gz").unlink()
    (d / "train-labels-idx1-ubyte.gz").mkdir()
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: is a directory"):
        load("mnist-sample", tmp_path)


def test_nothing_found_lists_every_place(offline, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(DataError) as info:
        load("cifar100", tmp_path)
    msg = str(info.value)
    for fragment in ("data dir", "user cache", "system", "download", "--data-dir",
                     "cifar-100-python.tar.gz"):
        assert fragment in msg
    assert "\n" not in msg and time.monotonic() - t0 < 5
    assert not (tmp_path / "cifar100").exists()


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'mnsit'; known datasets: mnist"):
        load("mnsit")


# -- downloads from a local server --------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    files = {}
    lie_about_length = False

    def do_GET(self):  # noqa: N802 - http.server's name
        body = self.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        n = len(body) + (1000 if self.lie_about_length else 0)
        self.send_header("Content-Length", str(n))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.files = {f.name: f.read_bytes() for f in SAMPLE.iterdir()}
    _Handler.lie_about_length = False
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def downloadable_sample(monkeypatch, server):
    """The bundled sample, made downloadable from the local server and not bundled."""
    spec = registry.DATASETS["mnist-sample"]
    monkeypatch.setitem(registry.DATASETS, "mnist-sample", registry.DatasetSpec(
        **{**spec.__dict__, "bundled": False, "urls": ("http://127.0.0.1:1/", server)}))
    return server


def test_download_checked_and_renamed(tmp_path, downloadable_sample):
    seen = []
    ds = load("mnist-sample", tmp_path, progress=lambda f, d, t: seen.append((f, d, t)))
    assert ds.source["found_in"] == "download"
    assert sorted(p.name for p in (tmp_path / "mnist-sample").iterdir()) == sorted(
        _Handler.files)
    assert seen and seen[-1][1] == seen[-1][2]


def test_checksum_failure_leaves_nothing(tmp_path, downloadable_sample):
    _Handler.files["t10k-images-idx3-ubyte.gz"] = b"not the real file"
    with pytest.raises(DataError, match="checksum mismatch"):
        load("mnist-sample", tmp_path)
    assert not (tmp_path / "mnist-sample").exists()


def test_interrupted_transfer_leaves_nothing(tmp_path, downloadable_sample):
    _Handler.lie_about_length = True
    with pytest.raises(DataError, match="transfer interrupted"):
        load("mnist-sample", tmp_path)
    assert not (tmp_path / "mnist-sample").exists()
    assert list(tmp_path.iterdir()) == []


def test_unreachable_source_gives_up_within_seconds(tmp_path, monkeypatch):
    spec = registry.DATASETS["cifar10"]
    monkeypatch.setitem(registry.DATASETS, "cifar10", registry.DatasetSpec(
        **{**spec.__dict__, "urls": ("http://127.0.0.1:1/cifar-10-python.tar.gz",)}))
    t0 = time.monotonic()
    with pytest.raises(DataError, match="cannot download cifar10.*cannot connect"):
        load("cifar10", tmp_path)
    assert time.monotonic() - t0 < 5
    assert not (tmp_path / "cifar10").exists()


def test_published_md5_of_sample_matches_files():
    for name, md5 in registry.DATASETS["mnist-sample"].md5.items():
        assert hashlib.md5((SAMPLE / name).read_bytes()).hexdigest() == md5
