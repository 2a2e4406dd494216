"""The kernel tests call the cpu backend's kernels directly, as the trainer does inside its
backend session: they run inside one, so that products take the lanes they take in
training (a few tests turn the lanes off on purpose to check the other path)."""

import pytest

from medalpy.kernels import cpu


@pytest.fixture(autouse=True)
def cpu_session():
    with cpu.session():
        yield
