"""Writers of small files in the exact canonical CIFAR layouts, for the reader tests.

The python version is written opcode by opcode as Python 2's cPickle wrote it (protocol 2,
``str`` as SHORT_BINSTRING / BINSTRING, the array through ``numpy.core.multiarray``), not by
this interpreter's pickle module, which would write other opcodes.
"""

import io
import os
import struct
import tarfile

import numpy as np


def _str(b):
    if isinstance(b, str):
        b = b.encode("latin1")
    if len(b) < 256:
        return b"U" + bytes([len(b)]) + b
    return b"T" + struct.pack("<i", len(b)) + b


def _int(n):
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if 0 <= n < 65536:
        return b"M" + struct.pack("<H", n)
    return b"J" + struct.pack("<i", n)


def _global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _ndarray(a):
    a = np.ascontiguousarray(a, dtype=np.uint8)
    dtype = (
        _global("numpy", "dtype") + _str("u1") + b"\x89\x88\x87R"
        + b"(" + _int(3) + _str("|") + b"NNN" + b"J\xff\xff\xff\xffJ\xff\xff\xff\xff" + _int(0)
        + b"tb"
    )
    return (
        _global("numpy.core.multiarray", "_reconstruct") + _global("numpy", "ndarray")
        + _int(0) + b"\x85" + _str("b") + b"\x87R"
        + b"(" + _int(1) + b"(" + b"".join(_int(n) for n in a.shape) + b"t"
        + dtype + b"\x89" + _str(a.tobytes()) + b"tb"
    )


def _value(v):
    if isinstance(v, np.ndarray):
        return _ndarray(v)
    if isinstance(v, (bytes, str)):
        return _str(v)
    if isinstance(v, int):
        return _int(v)
    if isinstance(v, list):
        return b"](" + b"".join(_value(x) for x in v) + b"e" if v else b"]"
    raise TypeError(type(v))


def py2_pickle(d):
    """Bytes of ``d`` (a dict of str -> bytes/str/int/list/uint8 array) as Python 2 wrote it."""
    body = b"".join(_value(k) + _value(v) for k, v in d.items())
    return b"\x80\x02}(" + body + b"u."


def random_cifar(n, n_classes, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = rng.integers(0, n_classes, size=n)
    return images, labels


def write_cifar10_python(top, parts):
    """``parts``: member name -> (images, labels), e.g. data_batch_1 .. test_batch."""
    os.makedirs(top, exist_ok=True)
    for member, (images, labels) in parts.items():
        d = {
            "batch_label": f"training batch of {member}",
            "labels": [int(v) for v in labels],
            "data": images,
            "filenames": [f"img_{i}.png" for i in range(len(labels))],
        }
        with open(os.path.join(top, member), "wb") as fh:
            fh.write(py2_pickle(d))
    with open(os.path.join(top, "batches.meta"), "wb") as fh:
        fh.write(py2_pickle({"num_cases_per_batch": 10000, "label_names": ["airplane"] * 10,
                             "num_vis": 3072}))


def write_cifar100_python(top, parts):
    """``parts``: "train"/"test" -> (images, fine_labels)."""
    os.makedirs(top, exist_ok=True)
    for member, (images, labels) in parts.items():
        d = {
            "filenames": [f"img_{i}.png" for i in range(len(labels))],
            "batch_label": f"{member}ing batch 1 of 1",
            "fine_labels": [int(v) for v in labels],
            "coarse_labels": [int(v) // 5 for v in labels],
            "data": images,
        }
        with open(os.path.join(top, member), "wb") as fh:
            fh.write(py2_pickle(d))


def write_cifar10_binary(top, parts):
    os.makedirs(top, exist_ok=True)
    for member, (images, labels) in parts.items():
        recs = np.concatenate([np.asarray(labels, np.uint8)[:, None], images], axis=1)
        with open(os.path.join(top, member), "wb") as fh:
            fh.write(recs.tobytes())
    with open(os.path.join(top, "batches.meta.txt"), "w") as fh:
        fh.write("airplane\n" * 10)


def write_cifar100_binary(top, parts):
    os.makedirs(top, exist_ok=True)
    for member, (images, labels) in parts.items():
        labels = np.asarray(labels, np.uint8)
        recs = np.concatenate([(labels // 5)[:, None], labels[:, None], images], axis=1)
        with open(os.path.join(top, member), "wb") as fh:
            fh.write(recs.tobytes())


def make_tarball(src_dir, tar_path):
    """Pack ``src_dir`` (e.g. .../cifar-10-batches-py) as the canonical tarball does."""
    with tarfile.open(tar_path, "w:gz") as tf:
        tf.add(src_dir, arcname=os.path.basename(src_dir))
    return tar_path


LAYOUT_WRITERS = {
    ("cifar10", "python"): ("cifar-10-batches-py", write_cifar10_python,
                            [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
    ("cifar10", "binary"): ("cifar-10-batches-bin", write_cifar10_binary,
                            [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"]),
    ("cifar100", "python"): ("cifar-100-python", write_cifar100_python, ["train"], ["test"]),
    ("cifar100", "binary"): ("cifar-100-binary", write_cifar100_binary,
                             ["train.bin"], ["test.bin"]),
}


def write_layout(root, name, version, n_per_file=7, seed=0):
    """Write a small ``name`` dataset in ``version`` under ``root``; return (top, arrays)."""
    top_name, writer, train, test = LAYOUT_WRITERS[(name, version)]
    n_classes = 10 if name == "cifar10" else 100
    parts = {}
    for i, member in enumerate(train + test):
        parts[member] = random_cifar(n_per_file, n_classes, seed + i)
    top = os.path.join(root, top_name)
    writer(top, parts)
    tr = [parts[m] for m in train]
    te = [parts[m] for m in test]
    arrays = {
        "train_images": np.concatenate([p[0] for p in tr]),
        "train_labels": np.concatenate([p[1] for p in tr]),
        "test_images": np.concatenate([p[0] for p in te]),
        "test_labels": np.concatenate([p[1] for p in te]),
    }
    return top, arrays
