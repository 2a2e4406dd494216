"""IDX reader: round trips, and every kind of bad input gives one DataError naming the file."""

import gzip
import os

import numpy as np
import pytest

from medalpy.data.idx import idx_bytes, parse_idx, read_idx, write_idx
from medalpy.errors import DataError


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_round_trip_plain_and_gzip(tmp_path, images, name):
    path = tmp_path / name
    write_idx(path, images)
    assert path.read_bytes().startswith(b"\x1f\x8b") == name.endswith(".gz")
    out, sums = read_idx(path, with_checksums=True)
    assert out.dtype == np.uint8 and out.shape == (5, 28, 28)
    np.testing.assert_array_equal(out, images)
    assert sums["content_md5"] != sums["md5"] or not name.endswith(".gz")


def test_gzip_detected_by_content_not_name(tmp_path, images):
    path = tmp_path / "misnamed"
    path.write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(read_idx(path), images)


def test_big_endian_other_types(tmp_path):
    a = np.arange(6, dtype=np.int32).reshape(2, 3) - 3
    write_idx(tmp_path / "a", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), a)


def _bad_inputs(images):
    good = idx_bytes(images)
    labels = idx_bytes(np.arange(5, dtype=np.uint8))
    return {
        "empty file": (b"", "empty file"),
        "truncated header": (good[:3], "truncated IDX header"),
        "truncated dims": (good[:9], "truncated IDX header"),
        "truncated data": (good[:-10], "truncated"),
        "trailing bytes": (good + b"\0\0", "unexpected bytes"),
        "wrong magic": (b"\x01\x02" + good[2:], "wrong magic number"),
        "unknown type": (good[:2] + b"\x07" + good[3:], "unknown IDX type code"),
        "zero dims": (b"\0\0\x08\0", "0 dimensions"),
        "wrong dimensions in header": (good[:3] + b"\x02" + good[4:], "unexpected bytes"),
        "corrupt gzip": (gzip.compress(good)[:20] + b"\xff" * 50 + gzip.compress(good)[70:],
                         "gzip"),
        "truncated gzip": (gzip.compress(good)[:-30], "truncated gzip stream"),
        "gzip of nothing": (gzip.compress(b""), "empty after gzip"),
        "labels ok": (labels, None),
    }


@pytest.mark.parametrize(
    "case", list(_bad_inputs(np.zeros((5, 28, 28), np.uint8))), ids=str
)
def test_bad_bytes_give_one_clear_error(tmp_path, images, case):
    raw, fragment = _bad_inputs(images)[case]
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(raw)
    if fragment is None:
        read_idx(path)
        return
    with pytest.raises(DataError) as info:
        read_idx(path)
    msg = str(info.value)
    assert str(path) in msg and fragment in msg and "\n" not in msg


def test_missing_directory_unreadable(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope")
    (tmp_path / "dir").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        read_idx(tmp_path / "dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path, images):
    path = tmp_path / "x"
    write_idx(path, images)
    path.chmod(0)
    with pytest.raises(DataError, match="permission denied"):
        read_idx(path)


def test_unreadable_file_via_os_error(tmp_path, monkeypatch):
    """Root can read mode-000 files, so simulate the failure open() would give a user."""
    import builtins

    real_open = builtins.open

    def deny(path, *a, **k):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", deny)
    with pytest.raises(DataError, match=r"locked: cannot be read \(permission denied\)"):
        read_idx(tmp_path / "locked")


def test_fuzz_mutations_raise_only_data_error(tmp_path):
    """Hundreds of randomly mutated or truncated files: only DataError ever escapes."""
    rng = np.random.default_rng(1234)
    arrays = [
        rng.integers(0, 256, size=(6, 7, 5), dtype=np.uint8),
        rng.integers(0, 10, size=(9,), dtype=np.uint8),
    ]
    seeds = [idx_bytes(a) for a in arrays]
    seeds += [gzip.compress(s, mtime=0) for s in seeds]
    outcomes = {"ok": 0, "error": 0}
    path = tmp_path / "fuzz.gz"
    for trial in range(600):
        raw = bytearray(seeds[trial % len(seeds)])
        op = rng.integers(0, 4)
        if op == 0:  # truncate
            raw = raw[: rng.integers(0, len(raw))]
        elif op == 1:  # flip bytes
            for _ in range(rng.integers(1, 4)):
                raw[rng.integers(0, len(raw))] = rng.integers(0, 256)
        elif op == 2:  # mutate the header only
            raw[rng.integers(0, min(16, len(raw)))] = rng.integers(0, 256)
        else:  # insert junk
            at = rng.integers(0, len(raw))
            raw[at:at] = rng.integers(0, 256, size=rng.integers(1, 8), dtype=np.uint8).tobytes()
        path.write_bytes(bytes(raw))
        try:
            out = read_idx(path)
            assert isinstance(out, np.ndarray)
            outcomes["ok"] += 1
        except DataError as exc:
            assert str(path) in str(exc)
            outcomes["error"] += 1
    assert outcomes["error"] > 300


def test_parse_idx_never_allocates_from_a_lying_header():
    raw = b"\0\0\x08\x03" + (2**31).to_bytes(4, "big") * 3
    with pytest.raises(DataError, match="truncated"):
        parse_idx(raw, "lie")
