"""Fixtures for the data-layer tests: where the shared datasets are, and an isolated cache."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test sees an empty user cache and no $MEDALPY_DATA."""
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("MEDALPY_DATA", raising=False)
    return cache / "medalpy"


@pytest.fixture
def shared_data():
    """``../shared/data`` beside the checkout; skipped on a user's fresh clone."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(
            f"full MNIST not available: {SHARED_DATA / 'mnist'} does not exist (it exists in CI; "
            "on a fresh clone this test has nothing to check)"
        )
    return SHARED_DATA


@pytest.fixture
def fashion_dir():
    if not FASHION_DIR.is_dir():
        pytest.skip(f"{FASHION_DIR} absent: install Debian's dataset-fashion-mnist (CI does)")
    return FASHION_DIR


@pytest.fixture
def offline(monkeypatch):
    """Make every download attempt fail at once, as on a machine without network."""
    import urllib.error

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled by the test")

    monkeypatch.setattr("urllib.request.urlopen", refuse)
