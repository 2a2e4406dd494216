"""Where a dataset name resolves: data directory, user cache, system directories.

Order (first hit wins):

1. ``data_dir/NAME/`` where ``data_dir`` is the explicit argument (``--data-dir``) or else
   ``$MEDALPY_DATA``;
2. the user's cache, ``$XDG_CACHE_HOME/medalpy/NAME`` or ``~/.cache/medalpy/NAME``;
3. system dataset directories (Debian: ``/usr/share/datasets/fashion-mnist``);
4. for bundled samples, the checkout's ``data/NAME/``.

Downloading (:mod:`medalpy.data.fetch`) comes after all of these. A place that holds some but
not all of a dataset's files is an error, never skipped for the next place.
"""

import os
from pathlib import Path

from medalpy.data.cifar import find_layout
from medalpy.data.registry import bundled_dir, cache_dir
from medalpy.errors import DataError


def explicit_data_dir(data_dir=None):
    """``data_dir`` if given, else ``$MEDALPY_DATA`` if set and non-empty, else ``None``.

    A data directory that was asked for but does not exist is an error (naming it), not a
    reason to fall back to the bundled sample."""
    if data_dir is not None and str(data_dir) != "":
        where, path = "--data-dir", Path(data_dir)
    elif os.environ.get("MEDALPY_DATA"):
        where, path = "$MEDALPY_DATA", Path(os.environ["MEDALPY_DATA"])
    else:
        return None
    if not path.is_dir():
        raise DataError(f"{where} {path}: no such directory")
    return path


def candidates(spec, data_dir=None):
    """The places searched for ``spec``, in order, as ``(label, Path)`` pairs."""
    out = []
    explicit = explicit_data_dir(data_dir)
    if explicit is not None:
        out.append(("data dir", explicit / spec.name))
    out.append(("user cache", cache_dir() / spec.name))
    out.extend(("system", Path(d)) for d in spec.system_dirs)
    if spec.bundled:
        out.append(("bundled", bundled_dir() / spec.name))
    return out


def idx_file(directory, filename):
    """Path of ``filename`` in ``directory``, accepting the name with or without ``.gz``."""
    path = Path(directory) / filename
    if os.path.lexists(path):
        return path
    plain = path.with_suffix("") if path.suffix == ".gz" else path
    if os.path.lexists(plain):
        return plain
    return None


def inspect_place(spec, directory):
    """Return ``None`` if ``directory`` holds nothing of ``spec``, else what it holds.

    Returns
    -------
    None or dict
        For IDX datasets ``{"files": {role: Path}}``; for CIFAR ``{"layout", "kind", "path"}``.

    Raises
    ------
    DataError
        If ``directory`` is not a directory, or holds only part of the dataset.
    """
    directory = Path(directory)
    if not os.path.lexists(directory):
        return None
    if not directory.is_dir():
        raise DataError(f"{directory}: is not a directory (expected the {spec.name} files in it)")
    if spec.format == "idx":
        files = {role: idx_file(directory, fn) for role, fn in spec.files.items()}
        present = {r: p for r, p in files.items() if p is not None}
        if not present:
            return None
        missing = [spec.files[r] for r, p in files.items() if p is None]
        if missing:
            raise DataError(
                f"{directory}: incomplete {spec.name}: missing {', '.join(missing)}"
            )
        return {"files": present}
    found = find_layout(spec.format, str(directory))
    if found is None:
        return None
    layout, kind, path = found
    return {"layout": layout, "kind": kind, "path": Path(path)}


def locate(spec, data_dir=None, tried=None):
    """Find ``spec`` on disk; return ``(label, directory, contents)`` or ``None``.

    ``tried`` (a list) receives a one-phrase note for every place looked at.
    """
    if tried is None:
        tried = []
    for label, place in candidates(spec, data_dir):
        contents = inspect_place(spec, place)
        if contents is not None:
            return label, place, contents
        tried.append(f"{label} {place} (absent)")
    return None
