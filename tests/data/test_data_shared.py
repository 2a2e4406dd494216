"""The real datasets: full MNIST from ../shared/data (CI) and Debian's Fashion-MNIST."""

import hashlib

import numpy as np
import pytest
from click.testing import CliRunner

from medalpy.cli import main
from medalpy.data import load

MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]

pytestmark = pytest.mark.shared_data


def test_full_mnist_files_md5(shared_data):
    for name, md5 in MNIST_MD5.items():
        assert hashlib.md5((shared_data / "mnist" / name).read_bytes()).hexdigest() == md5


def test_full_mnist_through_data_dir_option(shared_data, monkeypatch):
    monkeypatch.setenv("MEDALPY_DATA", str(shared_data))  # what --data-dir / the env set
    ds = load("mnist", download=False)
    assert ds.source["kind"] == "full" and ds.source["files"] == MNIST_MD5
    assert ds.train_images.shape == (60000, 784) and ds.test_images.shape == (10000, 784)
    assert ds.train_images.dtype == np.uint8 and ds.train_images.nbytes == 47_040_000
    assert np.bincount(ds.train_labels).tolist() == MNIST_TRAIN_COUNTS
    assert ds.test_labels.shape == (10000,) and ds.n_classes == 10


def test_cli_verify_full_mnist(shared_data):
    result = CliRunner().invoke(main, ["data", "verify", "mnist", "--data-dir", str(shared_data)])
    assert result.exit_code == 0, result.output
    assert result.output.count("good  ") == 4 and "all 4 files of mnist are good" in result.output


def test_fashion_mnist_from_debian(fashion_dir):
    ds = load("fashion-mnist", download=False)
    assert ds.source["location"] == str(fashion_dir) and ds.source["found_in"] == "system"
    assert ds.train_images.shape == (60000, 784) and ds.test_images.shape == (10000, 784)
    assert (np.bincount(ds.train_labels) == 6000).all()
    assert (np.bincount(ds.test_labels) == 1000).all()
    result = CliRunner().invoke(main, ["data", "verify", "fashion-mnist"])
    assert result.exit_code == 0 and result.output.count("good  ") == 4
