"""Readers for CIFAR-10 and CIFAR-100 (Krizhevsky 2009), both canonical versions.

Binary version: fixed-size records of label byte(s) then 3,072 pixel bytes (1,024 red,
1,024 green, 1,024 blue, each row-major 32 x 32). CIFAR-10 records have one label byte
(``data_batch_1.bin`` .. ``data_batch_5.bin``, ``test_batch.bin``), CIFAR-100 records two,
coarse then fine (``train.bin``, ``test.bin``).

Python version: Python 2 pickles of a dict with ``data`` (a uint8 array of shape
(N, 3072), same channel-major layout) and ``labels`` (CIFAR-10) or ``fine_labels`` /
``coarse_labels`` (CIFAR-100); loaded by :mod:`medalpy.data.safe_pickle`, which executes
nothing from the file.

Either version is read from its extracted directory or straight from the canonical
tarball, without extracting it.
"""

import io
import os
import tarfile
import zlib
from dataclasses import dataclass

import numpy as np

from medalpy.data._files import md5_bytes, read_bytes
from medalpy.data.safe_pickle import safe_loads
from medalpy.errors import DataError

N_PIXELS = 3072


@dataclass(frozen=True)
class CifarLayout:
    """Where one canonical CIFAR version keeps its batches."""

    tarball: str
    top: str  # directory inside the tarball / after extraction
    train: tuple
    test: tuple
    version: str  # "binary" | "python"
    label_bytes: int  # binary only: 1 (CIFAR-10) or 2 (CIFAR-100: coarse, fine)
    label_key: bytes  # python only


LAYOUTS = {
    "cifar10": (
        CifarLayout(
            "cifar-10-python.tar.gz", "cifar-10-batches-py",
            tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
            "python", 1, b"labels",
        ),
        CifarLayout(
            "cifar-10-binary.tar.gz", "cifar-10-batches-bin",
            tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",),
            "binary", 1, b"labels",
        ),
    ),
    "cifar100": (
        CifarLayout(
            "cifar-100-python.tar.gz", "cifar-100-python", ("train",), ("test",),
            "python", 2, b"fine_labels",
        ),
        CifarLayout(
            "cifar-100-binary.tar.gz", "cifar-100-binary", ("train.bin",), ("test.bin",),
            "binary", 2, b"fine_labels",
        ),
    ),
}


def parse_binary(raw, path, label_bytes):
    """Parse one binary batch into ``(images (N, 3072) uint8, labels (N,) int64)``.

    For CIFAR-100 (``label_bytes == 2``) the fine label, the second byte, is returned.
    """
    record = label_bytes + N_PIXELS
    if len(raw) == 0:
        raise DataError(f"{path}: empty file")
    if len(raw) % record:
        raise DataError(
            f"{path}: truncated or padded: {len(raw)} bytes is not a whole number of "
            f"{record}-byte records"
        )
    recs = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    return recs[:, label_bytes:], recs[:, label_bytes - 1].astype(np.int64)


def parse_python(raw, path, label_key):
    """Parse one pickled batch into ``(images (N, 3072) uint8, labels (N,) int64)``."""
    obj = safe_loads(raw, path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: a CIFAR batch pickles a dict, found {type(obj).__name__}")
    obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    key = label_key.decode()
    if "data" not in obj or key not in obj:
        raise DataError(f"{path}: CIFAR batch lacks the keys 'data' and '{key}'")
    data, labels = obj["data"], obj[key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise DataError(f"{path}: 'data' is not a uint8 array")
    if data.ndim != 2 or data.shape[1] != N_PIXELS:
        raise DataError(f"{path}: 'data' has shape {data.shape}, expected (N, {N_PIXELS})")
    if isinstance(labels, np.ndarray):
        labels = labels.tolist()
    if not isinstance(labels, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in labels
    ):
        raise DataError(f"{path}: '{key}' is not a list of integers")
    if len(labels) != data.shape[0]:
        raise DataError(
            f"{path}: {data.shape[0]} images but {len(labels)} labels in '{key}'"
        )
    return np.ascontiguousarray(data), np.asarray(labels, dtype=np.int64).reshape(-1)


def _parse(layout, raw, path):
    if layout.version == "binary":
        return parse_binary(raw, path, layout.label_bytes)
    return parse_python(raw, path, layout.label_key)


def find_layout(name, directory):
    """Return ``(layout, kind, path)`` for the CIFAR copy in ``directory``, or ``None``.

    ``kind`` is ``"dir"`` (extracted batches) or ``"tar"`` (the canonical tarball). A
    directory holding the batches directly (without the canonical top folder) also counts.
    """
    for layout in LAYOUTS[name]:
        top = os.path.join(directory, layout.top)
        if os.path.lexists(top):
            return layout, "dir", top
        members = layout.train + layout.test
        if any(os.path.lexists(os.path.join(directory, m)) for m in members):
            return layout, "dir", directory
    for layout in LAYOUTS[name]:
        tar = os.path.join(directory, layout.tarball)
        if os.path.lexists(tar):
            return layout, "tar", tar
    return None


def _read_members_tar(layout, tar_path, names):
    raw_tar = read_bytes(tar_path)
    out = []
    try:
        with tarfile.open(fileobj=io.BytesIO(raw_tar), mode="r:*") as tf:
            for m in names:
                member = f"{layout.top}/{m}"
                try:
                    info = tf.getmember(member)
                except KeyError:
                    raise DataError(f"{tar_path}: member {member} missing from the archive") from None
                if not info.isfile():
                    raise DataError(f"{tar_path}: member {member} is not a regular file")
                fh = tf.extractfile(info)
                out.append((f"{tar_path}:{member}", fh.read()))
    except DataError:
        raise
    except EOFError:
        raise DataError(f"{tar_path}: truncated archive") from None
    except (tarfile.TarError, zlib.error, OSError, ValueError) as exc:
        raise DataError(f"{tar_path}: damaged archive ({exc})") from None
    return out, md5_bytes(raw_tar)


def read_cifar(name, directory):
    """Read CIFAR ``name`` ("cifar10" or "cifar100") from ``directory``.

    Returns
    -------
    dict
        ``train_images``, ``train_labels``, ``test_images``, ``test_labels`` (images
        (N, 3072) uint8 channel-major, labels int64), ``version``, ``location`` and
        ``files`` (file name -> md5).
    """
    found = find_layout(name, directory)
    if found is None:
        raise DataError(f"{directory}: no {name} files in either canonical layout")
    return read_found(*found)


def read_found(layout, kind, where):
    """Read the batches of ``layout`` from ``where``, an extracted directory or a tarball."""
    names = layout.train + layout.test
    parts, files = [], {}
    if kind == "dir":
        for m in names:  # parse as we go, so the first bad file is the one named
            path = os.path.join(where, m)
            raw = read_bytes(path)
            files[m] = md5_bytes(raw)
            parts.append(_parse(layout, raw, path))
    else:
        members, tar_md5 = _read_members_tar(layout, where, names)
        files = {os.path.basename(where): tar_md5}
        parts = [_parse(layout, raw, path) for path, raw in members]
    n_train = len(layout.train)
    train, test = parts[:n_train], parts[n_train:]
    return {
        "train_images": np.concatenate([p[0] for p in train]),
        "train_labels": np.concatenate([p[1] for p in train]),
        "test_images": np.concatenate([p[0] for p in test]),
        "test_labels": np.concatenate([p[1] for p in test]),
        "version": layout.version,
        "location": where,
        "files": files,
    }


#: ITU-R BT.601 luma weights, the usual RGB -> grey conversion.
LUMA = np.array([0.299, 0.587, 0.114])


def to_grayscale(images):
    """Convert (N, 3072) channel-major RGB uint8 rows to (N, 1024) uint8 luma rows."""
    rgb = images.reshape(images.shape[0], 3, 1024)
    out = np.empty((images.shape[0], 1024), dtype=np.uint8)
    step = 4096  # bound the float64 temporary to a few MB
    for s in range(0, images.shape[0], step):
        grey = np.einsum("nck,c->nk", rgb[s : s + step], LUMA)
        np.rint(grey, out=grey)
        out[s : s + step] = grey
    return out
