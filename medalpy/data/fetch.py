"""Download datasets from their canonical sources, checked against published md5s.

Each file is streamed into a temporary file beside its destination and renamed into place
only once its md5 matches; any failure (network, checksum, Ctrl-C) removes the temporary
file, and a destination directory this module created is removed again if it stays empty.
The connection timeout is short, so an offline machine gives up within seconds.
"""

import hashlib
import os
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from medalpy.errors import DataError

#: Seconds to wait for a connection (and for each read) before giving up.
TIMEOUT = 5.0
_CHUNK = 1 << 16


class DownloadError(DataError):
    """A download failed; nothing was left behind."""


class SourceUnreachable(DownloadError):
    """No source of a dataset could be reached (offline, DNS, refused, timed out)."""


def download(url, dest, md5, *, timeout=TIMEOUT, progress=None):
    """Fetch ``url`` to ``dest`` atomically, checking ``md5``.

    Parameters
    ----------
    url : str
    dest : path-like
        Final path; written only once the checksum holds.
    md5 : str or None
        Expected hex md5 (``None`` skips the check; medalpy always passes one).
    timeout : float
        Connection and read timeout in seconds.
    progress : callable, optional
        ``progress(done_bytes, total_bytes_or_None)``, called as data arrives.

    Raises
    ------
    SourceUnreachable
        The server could not be reached.
    DownloadError
        The transfer failed or the checksum did not match.
    """
    dest = Path(dest)
    try:
        response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - fixed URLs
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(exc, urllib.error.HTTPError):
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        raise SourceUnreachable(f"{url}: cannot connect ({reason})") from None
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        h = hashlib.md5(usedforsecurity=False)
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        done = 0
        with response, os.fdopen(fd, "wb") as out:
            while True:
                try:
                    block = response.read(_CHUNK)
                except (socket.timeout, OSError) as exc:
                    raise DownloadError(f"{url}: transfer interrupted ({exc})") from None
                if not block:
                    break
                out.write(block)
                h.update(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
        if total is not None and done != total:
            raise DownloadError(f"{url}: transfer interrupted ({done} of {total} bytes)")
        got = h.hexdigest()
        if md5 is not None and got != md5:
            raise DownloadError(f"{url}: checksum mismatch (md5 {got}, published {md5})")
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return dest


def _ensure_dir(directory):
    """Create ``directory``; return the topmost folder created (to undo), or ``None``."""
    directory = Path(directory)
    created = None
    for parent in reversed([directory, *directory.parents]):
        if not parent.exists():
            created = created or parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{directory}: cannot create download directory ({exc.strerror})") from None
    if not os.access(directory, os.W_OK):
        raise DataError(f"{directory}: download directory is not writable")
    return created


def _cleanup(created):
    if created is None:
        return
    for d in sorted(Path(created).glob("**/"), key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            return


def fetch(spec, target, *, timeout=TIMEOUT, progress=None):
    """Download every file of ``spec`` into directory ``target``.

    For IDX datasets the four files are tried at each base URL in turn; for CIFAR the
    canonical python-version tarball. ``progress(filename, done_bytes, total_or_None)`` is
    called as data arrives. Returns ``target``.

    Raises
    ------
    SourceUnreachable
        No source answered; the message lists every URL tried.
    DownloadError
        A file failed its checksum or its transfer broke; nothing is left behind.
    """
    if not spec.urls:
        raise DataError(f"dataset {spec.name!r} has no download source")
    target = Path(target)
    created = _ensure_dir(target)
    written = []
    try:
        if spec.format == "idx":
            jobs = [(fn, [base + fn for base in spec.urls]) for fn in spec.files.values()]
        else:
            jobs = [(url.rsplit("/", 1)[1], [url]) for url in spec.urls]
        for filename, urls in jobs:
            dest = target / filename
            if dest.exists():
                continue
            failures = []
            for url in urls:
                try:
                    cb = None if progress is None else (
                        lambda d, t, _f=filename: progress(_f, d, t)
                    )
                    download(url, dest, spec.md5.get(filename), timeout=timeout, progress=cb)
                    written.append(dest)
                    break
                except SourceUnreachable as exc:
                    failures.append(exc)
                except DownloadError as exc:
                    failures.append(exc)
            else:
                text = f"cannot download {spec.name}: " + "; ".join(str(e) for e in failures)
                if all(isinstance(e, SourceUnreachable) for e in failures):
                    raise SourceUnreachable(text)
                raise DownloadError(text)
    except BaseException:
        for path in written:
            try:
                path.unlink()
            except OSError:
                pass
        _cleanup(created)
        raise
    return target
