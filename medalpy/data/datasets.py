"""Load a dataset by name: resolve, fetch if allowed, read, check, and say what was used.

Images are held as uint8 rows, ``(N, D)``; :func:`scale_batch` turns a batch into floats in
[0, 1] when it is formed. MNIST's training set is 47 MB this way, 188 MB as float32.
"""

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medalpy.data import cifar
from medalpy.data.fetch import DownloadError, fetch
from medalpy.data.idx import read_idx
from medalpy.data.registry import DATASETS, cache_dir, get_spec
from medalpy.data.resolve import candidates, explicit_data_dir, inspect_place, locate
from medalpy.errors import DataError


class SampleDataWarning(UserWarning):
    """The full dataset was not available, so the bundled sample is used instead."""


@dataclass
class Dataset:
    """A dataset in memory: uint8 image rows, int64 labels, and where they came from.

    Attributes
    ----------
    name : str
    train_images : ndarray, shape (N, D), uint8
        Flattened images; CIFAR RGB rows are channel-major (1024 R, 1024 G, 1024 B).
    train_labels : ndarray, shape (N,), int64
    test_images : ndarray, shape (M, D), uint8
    test_labels : ndarray, shape (M,), int64
    n_classes : int
    image_shape : tuple
        (28, 28), (3, 32, 32) or (32, 32) for grayscale CIFAR.
    source : dict
        JSON-serialisable record: ``kind`` ("full" or "sample"), ``location``, ``files``
        (file name -> md5), ``description``, and more; results files copy it.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    n_classes: int
    image_shape: tuple
    source: dict = field(default_factory=dict)

    @property
    def n_features(self):
        """Number of inputs D (pixels per image, all channels)."""
        return int(self.train_images.shape[1])


def scale_batch(images, out=None, dtype=np.float32):
    """Scale uint8 rows to [0, 1] (``x / 255``) into ``out`` (allocated if ``None``)."""
    if out is None:
        out = np.empty(images.shape, dtype=dtype)
    np.multiply(images, out.dtype.type(1.0 / 255.0), out=out, casting="unsafe")
    return out


def check_file_checksum(spec, filename, path, sums):
    """Return "published", "content" or "unchecked"; raise if a known checksum fails."""
    published = spec.md5.get(filename)
    content = spec.content_md5.get(filename)
    if published is None and content is None:
        return "unchecked"
    if sums["md5"] == published:
        return "published"
    if sums.get("content_md5") is not None and sums["content_md5"] == content:
        return "content"
    raise DataError(
        f"{path}: checksum mismatch: md5 {sums['md5']} matches neither the published md5 "
        f"{published} nor the md5 of the canonical decompressed content {content}"
    )


def _read_idx_dataset(spec, files):
    """Read the four IDX files of ``spec`` (``files``: role -> Path); check everything."""
    arrays, record, checks, pending = {}, {}, {}, []
    for role in ("train_images", "train_labels", "test_images", "test_labels"):
        path = files[role]
        array, sums = read_idx(path, with_checksums=True)
        want_ndim = 3 if role.endswith("images") else 1
        if array.dtype != np.uint8:
            raise DataError(f"{path}: holds {array.dtype} values, expected unsigned bytes")
        if array.ndim != want_ndim or (want_ndim == 3 and array.shape[1:] != spec.image_shape):
            want = "(N, 28, 28) images" if want_ndim == 3 else "(N,) labels"
            raise DataError(f"{path}: wrong dimensions {array.shape}, expected {want}")
        arrays[role] = array
        record[path.name] = sums["md5"]
        pending.append((role, path, sums))
    for part in ("train", "test"):
        n_img = arrays[f"{part}_images"].shape[0]
        n_lab = arrays[f"{part}_labels"].shape[0]
        if n_img != n_lab:
            raise DataError(
                f"{files[f'{part}_labels']}: {n_lab} labels for {n_img} images in "
                f"{files[f'{part}_images'].name}"
            )
        want = spec.n_train if part == "train" else spec.n_test
        if n_img != want:
            raise DataError(
                f"{files[f'{part}_images']}: {n_img} images, {spec.name} has {want}"
            )
        labels = arrays[f"{part}_labels"]
        if labels.size and labels.max() >= spec.n_classes:
            raise DataError(
                f"{files[f'{part}_labels']}: label {int(labels.max())} out of range "
                f"0..{spec.n_classes - 1}"
            )
    # structure and counts first (the more telling message), then the checksums
    for role, path, sums in pending:
        checks[path.name] = check_file_checksum(spec, spec.files[role], path, sums)
    out = {
        role: (a.reshape(a.shape[0], -1) if role.endswith("images") else a.astype(np.int64))
        for role, a in arrays.items()
    }
    return out, record, checks


def _read_cifar_dataset(spec, contents):
    got = cifar.read_found(contents["layout"], contents["kind"], str(contents["path"]))
    checks = {}
    for fname, md5 in got["files"].items():
        published = spec.md5.get(fname)
        if published is None:
            checks[fname] = "unchecked"
        elif md5 != published:
            raise DataError(
                f"{got['location']}: checksum mismatch: md5 {md5}, published {published}"
            )
        else:
            checks[fname] = "published"
    for part, want in (("train", spec.n_train), ("test", spec.n_test)):
        n = got[f"{part}_images"].shape[0]
        if n != want:
            raise DataError(f"{got['location']}: {n} {part} images, {spec.name} has {want}")
        labels = got[f"{part}_labels"]
        if labels.size and (labels.min() < 0 or labels.max() >= spec.n_classes):
            raise DataError(
                f"{got['location']}: {part} label out of range 0..{spec.n_classes - 1}"
            )
    arrays = {k: got[k] for k in ("train_images", "train_labels", "test_images", "test_labels")}
    return arrays, got["files"], checks, got["version"]


def _download_target(spec, data_dir):
    explicit = explicit_data_dir(data_dir)
    return (explicit if explicit is not None else cache_dir()) / spec.name


def _not_found(spec, tried):
    fix = (
        f"put the canonical files in DIR/{spec.name}/ and pass --data-dir DIR "
        f"(or set MEDALPY_DATA=DIR)"
    )
    if spec.urls:
        fix += f", or run 'medalpy data fetch {spec.name}' where the network is reachable"
    return f"dataset {spec.name!r} not found; tried: {'; '.join(tried)}. To fix: {fix}"


def load(name, data_dir=None, *, download=True, grayscale=False, progress=None):
    """Load dataset ``name`` into memory.

    Parameters
    ----------
    name : str
        One of :func:`dataset_names`.
    data_dir : str or path-like, optional
        Directory holding ``NAME/`` folders; defaults to ``$MEDALPY_DATA``.
    download : bool
        Fetch from the canonical source when not found on disk.
    grayscale : bool
        CIFAR only: convert RGB (3,072 inputs) to luma (1,024 inputs).
    progress : callable, optional
        ``progress(filename, done_bytes, total_or_None)`` while downloading.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        Not found anywhere (one message listing every place tried), or found but damaged.

    Warns
    -----
    SampleDataWarning
        ``mnist`` could not be found or fetched, so the bundled sample was loaded.
    """
    spec = get_spec(name)
    if grayscale and spec.format == "idx":
        raise DataError(f"dataset {name!r} is already grayscale; drop the grayscale option")
    tried = []
    hit = locate(spec, data_dir, tried)
    if hit is None and spec.urls:
        target = _download_target(spec, data_dir)
        if not download:
            tried.append("download (disabled)")
        else:
            try:
                fetch(spec, target, progress=progress)
                hit = ("download", target, inspect_place(spec, target))
            except DownloadError as exc:
                tried.append(f"download into {target} (failed: {exc})")
    if hit is None:
        message = _not_found(spec, tried)
        if spec.fallback:
            warnings.warn(
                f"USING THE BUNDLED SAMPLE {spec.fallback!r} INSTEAD OF FULL {name!r}: "
                f"{message}",
                SampleDataWarning,
                stacklevel=2,
            )
            ds = load(spec.fallback, data_dir, download=False, grayscale=grayscale)
            ds.source["requested"] = name
            ds.source["fallback_reason"] = message
            return ds
        raise DataError(message)
    label, place, contents = hit
    if spec.format == "idx":
        arrays, files, checks = _read_idx_dataset(spec, contents["files"])
        location, version = place, "idx"
    else:
        arrays, files, checks, version = _read_cifar_dataset(spec, contents)
        location = contents["path"]
    image_shape = tuple(spec.image_shape)
    if grayscale:
        arrays["train_images"] = cifar.to_grayscale(arrays["train_images"])
        arrays["test_images"] = cifar.to_grayscale(arrays["test_images"])
        image_shape = image_shape[1:]
    source = {
        "kind": "sample" if spec.bundled else "full",
        "dataset": spec.name,
        "location": str(Path(location).resolve()),
        "found_in": label,
        "files": files,
        "checksums": checks,
        "format": version,
        "description": spec.description,
        "licence": spec.licence,
        "grayscale": bool(grayscale),
    }
    return Dataset(
        name=spec.name,
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"].astype(np.int64, copy=False),
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"].astype(np.int64, copy=False),
        n_classes=spec.n_classes,
        image_shape=image_shape,
        source=source,
    )


def find(name, data_dir=None):
    """Return ``(label, directory)`` where ``name`` resolves on disk, or raise DataError."""
    spec = get_spec(name)
    tried = []
    hit = locate(spec, data_dir, tried)
    if hit is None:
        raise DataError(_not_found(spec, tried))
    label, place, contents = hit
    path = contents.get("path", place)
    return label, Path(path)


def verify(name, data_dir=None):
    """Check every file of ``name`` found on disk; never downloads.

    Returns
    -------
    list of dict
        One row per file: ``file``, ``ok`` (bool), ``detail`` (checksum and shape, or the
        problem). A dataset not found raises :class:`DataError`.
    """
    spec = get_spec(name)
    tried = []
    hit = locate(spec, data_dir, tried)
    if hit is None:
        raise DataError(_not_found(spec, tried))
    _, _, contents = hit
    rows = []
    if spec.format == "idx":
        for role, path in contents["files"].items():
            try:
                array, sums = read_idx(path, with_checksums=True)
                want_n = spec.n_train if role.startswith("train") else spec.n_test
                want = (want_n, *spec.image_shape) if role.endswith("images") else (want_n,)
                if array.shape != want or array.dtype != np.uint8:
                    raise DataError(
                        f"{path}: shape {array.shape} {array.dtype}, expected {want} uint8"
                    )
                how = check_file_checksum(spec, spec.files[role], path, sums)
                note = {
                    "published": "md5 matches the published checksum",
                    "content": "decompressed md5 matches the canonical content",
                    "unchecked": "no published checksum",
                }[how]
                rows.append({"file": str(path), "ok": True,
                             "detail": f"{note}; shape {array.shape}"})
            except DataError as exc:
                rows.append({"file": str(path), "ok": False, "detail": _without(path, exc)})
    else:
        try:
            arrays, files, checks, version = _read_cifar_dataset(spec, contents)
            for fname in files:
                rows.append({
                    "file": str(Path(contents["path"]) / fname)
                    if contents["kind"] == "dir" else str(contents["path"]),
                    "ok": True,
                    "detail": f"{version} version, md5 {checks[fname]}; train "
                              f"{arrays['train_images'].shape}, test {arrays['test_images'].shape}",
                })
        except DataError as exc:
            rows.append({"file": str(contents["path"]), "ok": False,
                         "detail": _without(contents["path"], exc)})
    return rows


def _without(path, exc):
    """The message of ``exc`` without a leading ``path: `` (the row already names it)."""
    msg, prefix = str(exc), f"{path}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg


def info(name, data_dir=None):
    """A JSON-serialisable description of dataset ``name`` and where it resolves."""
    spec = get_spec(name)
    try:
        label, where = find(name, data_dir)
        found = f"{where} ({label})"
    except DataError:
        found = None
    return {
        "name": spec.name,
        "description": spec.description,
        "n_classes": spec.n_classes,
        "image_shape": list(spec.image_shape),
        "n_train": spec.n_train,
        "n_test": spec.n_test,
        "files": {fn: spec.md5.get(fn) for fn in (spec.files.values() or spec.md5)}
        if spec.files else dict(spec.md5),
        "sources": list(spec.urls),
        "searched": [f"{lab}: {p}" for lab, p in candidates(spec, data_dir)],
        "found": found,
        "fallback": spec.fallback or None,
        "licence": spec.licence,
        "homepage": spec.homepage,
    }


def dataset_names():
    """Names of every dataset medalpy knows."""
    return list(DATASETS)
