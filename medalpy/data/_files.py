"""Reading whole files with every operating-system failure turned into one :class:`DataError`.

Every reader in :mod:`medalpy.data` goes through :func:`read_bytes`, so a missing file, a
directory where a file should be, a file we may not read and an empty file all give the same
kind of one-line message that names the path.
"""

import gzip
import hashlib
import zlib

from medalpy.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path, *, allow_empty=False):
    """Return the whole content of ``path`` as bytes, or raise :class:`DataError`."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a file") from None
    except PermissionError:
        raise DataError(f"{path}: cannot be read (permission denied)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not raw and not allow_empty:
        raise DataError(f"{path}: empty file")
    return raw


def md5_bytes(raw):
    """Hex md5 of ``raw`` (checksums only, not security)."""
    return hashlib.md5(raw, usedforsecurity=False).hexdigest()


def md5_file(path, chunk=1 << 20):
    """Hex md5 of the file at ``path``, read in chunks; OS failures become :class:`DataError`."""
    h = hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                h.update(block)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return h.hexdigest()


def maybe_gunzip(raw, path):
    """Decompress ``raw`` if it starts with the gzip magic bytes; name ``path`` on failure."""
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        out = gzip.decompress(raw)
    except EOFError:
        raise DataError(f"{path}: truncated gzip stream") from None
    except (gzip.BadGzipFile, zlib.error, OSError, ValueError) as exc:
        raise DataError(f"{path}: corrupt gzip stream ({exc})") from None
    if not out:
        raise DataError(f"{path}: empty after gzip decompression")
    return out
