"""Reader and writer for the IDX format of MNIST and Fashion-MNIST (gzipped or not).

IDX layout (LeCun & Cortes): two zero bytes, one type code, one byte ``ndim``, then ``ndim``
big-endian uint32 sizes, then the data in C order, big-endian. MNIST images are
``(N, 28, 28)`` uint8 (type 0x08), labels ``(N,)`` uint8.

Every structural check (magic, type code, sizes against the file length, trailing bytes) is
made before anything is allocated, and each failure raises one :class:`DataError` naming the
file and the problem.
"""

import gzip
import os

import numpy as np

from medalpy.data._files import maybe_gunzip, md5_bytes, read_bytes
from medalpy.errors import DataError

#: IDX type code -> big-endian NumPy dtype.
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}


def parse_idx(raw, path="<bytes>"):
    """Parse decompressed IDX bytes into an array in native byte order.

    Parameters
    ----------
    raw : bytes
        The whole (decompressed) file.
    path : str
        Named in error messages.

    Returns
    -------
    numpy.ndarray
        Shape given by the header; uint8 data is returned without a copy of the file.
    """
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, need at least 4)")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{path}: wrong magic number 0x{raw[:4].hex()} (IDX files start with two zero bytes)"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_TYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{code:02x} in magic 0x{raw[:4].hex()}")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header (declares {ndim} dimensions)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_TYPES[code]
    expected = header + dtype.itemsize * int(np.prod(shape, dtype=object))
    if len(raw) < expected:
        raise DataError(
            f"{path}: truncated: header declares shape {shape} ({expected} bytes), "
            f"file has {len(raw)} bytes"
        )
    if len(raw) > expected:
        raise DataError(
            f"{path}: {len(raw) - expected} unexpected bytes after the data of shape {shape}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path, *, with_checksums=False):
    """Read an IDX file, gzipped (detected by its magic bytes) or not.

    Parameters
    ----------
    path : str or os.PathLike
    with_checksums : bool
        Also return ``{"md5": md5 of the file, "content_md5": md5 of the decompressed bytes}``.

    Returns
    -------
    numpy.ndarray, or (numpy.ndarray, dict) when ``with_checksums``
    """
    path = os.fspath(path)
    raw = read_bytes(path)
    content = maybe_gunzip(raw, path)
    array = parse_idx(content, path)
    if with_checksums:
        return array, {"md5": md5_bytes(raw), "content_md5": md5_bytes(content)}
    return array


def idx_bytes(array):
    """Serialise ``array`` to IDX bytes (big-endian, C order)."""
    array = np.asarray(array)
    code = _CODE_OF.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"IDX cannot hold dtype {array.dtype}")
    head = bytes([0, 0, code, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    return head + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()


def write_idx(path, array, *, compress=None):
    """Write ``array`` as IDX; gzip it when ``compress`` is true or the name ends in ``.gz``.

    The gzip header carries no file name and a zero timestamp, so the output is byte-for-byte
    reproducible.
    """
    path = os.fspath(path)
    data = idx_bytes(array)
    if compress is None:
        compress = path.endswith(".gz")
    if compress:
        data = gzip.compress(data, compresslevel=9, mtime=0)
    with open(path, "wb") as fh:
        fh.write(data)
