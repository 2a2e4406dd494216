"""Masking noise: a pure function of (seed, epoch, sample, feature), the same on every backend.

The mask of a sample must not depend on the batch it is gathered in (size or order), on the
backend, or on the dtype; over a large draw the dropped fraction must match the rate within
binomial noise.
"""

import numpy as np
import pytest

from medalpy.kernels import cpu
from medalpy.kernels import reference as ref

BACKENDS = [ref, cpu]
D = 784
N = 300


def _ones_dataset():
    """All-255 uint8 images: after gathering, a unit is 1 where kept and 0 where dropped."""
    return np.full((N, D), 255, dtype=np.uint8)


def _masks(backend, rows, rate, seed, epoch, dtype=np.float32):
    out = np.empty((len(rows), D), dtype)
    backend.gather_masked(_ones_dataset(), np.asarray(rows, np.int64), rate, seed, epoch, out)
    return out != 0


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.NAME)
def test_mask_is_reference_keep_mask(backend):
    rows = np.random.default_rng(201).permutation(N)[:20]
    for rate, seed, epoch in [(0.15, 0, 0), (0.1, 2**64 - 1, 79), (0.5, 987654321, 3)]:
        want = ref.keep_mask(seed, epoch, rows, D, rate)
        np.testing.assert_array_equal(_masks(backend, rows, rate, seed, epoch), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_sample_same_mask_in_any_batch(dtype):
    rng = np.random.default_rng(202)
    rate, seed, epoch = 0.15, 42, 7
    everyone = np.arange(N)
    full = _masks(ref, everyone, rate, seed, epoch, dtype)
    for backend in BACKENDS:
        for batch in (1, 7, 64):
            order = rng.permutation(N)
            for start in range(0, N - batch + 1, max(batch, 50)):
                rows = order[start : start + batch]
                np.testing.assert_array_equal(
                    _masks(backend, rows, rate, seed, epoch, dtype), full[rows]
                )
    # A sample repeated inside one batch gets one mask.
    rows = np.array([5, 9, 5, 5])
    m = _masks(cpu, rows, rate, seed, epoch, dtype)
    np.testing.assert_array_equal(m[0], m[2])
    np.testing.assert_array_equal(m[0], m[3])


def test_masks_change_with_epoch_and_seed():
    rows = np.arange(64)
    base = _masks(cpu, rows, 0.5, 1, 0)
    for other in (_masks(cpu, rows, 0.5, 1, 1), _masks(cpu, rows, 0.5, 2, 0)):
        agree = np.mean(base == other)
        # Independent Bernoulli(0.5) masks agree half the time; 64*784 draws: sigma ~ 0.002.
        assert abs(agree - 0.5) < 0.01


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.15, 0.5, 0.9])
def test_masked_fraction_is_binomial(rate):
    # Every row of a 300-sample dataset, over 10 epochs: 2.35 M Bernoulli draws.
    rows = np.arange(N)
    dropped = 0
    n = 0
    for epoch in range(10):
        m = _masks(cpu, rows, rate, 2015, epoch)
        dropped += int(np.count_nonzero(~m))
        n += m.size
    if rate == 0.0:
        assert dropped == 0
        return
    sigma = np.sqrt(n * rate * (1 - rate))
    assert abs(dropped - n * rate) < 5 * sigma, (dropped / n, rate)


def test_zero_rate_equals_plain_gather():
    rng = np.random.default_rng(203)
    X = rng.integers(0, 256, size=(N, D), dtype=np.uint8)
    rows = rng.integers(0, N, size=20)
    a, b = np.empty((20, D), np.float32), np.empty((20, D), np.float32)
    cpu.gather_masked(X, rows, 0.0, 7, 3, a)
    cpu.gather(X, rows, b)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_invalid_rate_raises(rate):
    out = np.empty((2, D), np.float32)
    with pytest.raises(ValueError, match="corruption rate"):
        cpu.gather_masked(_ones_dataset(), np.array([0, 1]), rate, 0, 0, out)


@pytest.mark.parametrize("seed, epoch", [(-1, 0), (0, -1), (2**64, 0)])
def test_seed_and_epoch_out_of_uint64_range_raise_like_reference(seed, epoch):
    out = np.empty((2, D), np.float32)
    rows = np.array([0, 1])
    for backend in BACKENDS:
        with pytest.raises(OverflowError):
            backend.gather_masked(_ones_dataset(), rows, 0.1, seed, epoch, out)


# -- the other kinds of corruption: salt-and-pepper and clipped Gaussian -----------------------

KINDS = [("gather_salt_pepper", 0.3), ("gather_gaussian", 0.2)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel, level", KINDS)
def test_cpu_noise_kinds_equal_the_reference(dtype, kernel, level):
    rng = np.random.default_rng(203)
    X = rng.integers(0, 256, size=(N, D), dtype=np.uint8)
    rows = rng.permutation(N)[:33]
    for seed, epoch in [(0, 0), (2**64 - 1, 79), (987654321, 3)]:
        want, got = (np.empty((33, D), dtype) for _ in range(2))
        getattr(ref, kernel)(X, rows, level, seed, epoch, want)
        getattr(cpu, kernel)(X, rows, level, seed, epoch, got)
        if kernel == "gather_salt_pepper":
            np.testing.assert_array_equal(got, want)
        else:  # libm's log and cos against NumPy's: the noise may differ in its last bit
            np.testing.assert_allclose(got, want, rtol=0, atol=4 * np.finfo(dtype).eps)
        # The same sample gets the same noise alone in its batch.
        one = np.empty((1, D), dtype)
        getattr(cpu, kernel)(X, rows[7:8], level, seed, epoch, one)
        np.testing.assert_array_equal(one[0], got[7])


def test_salt_and_pepper_hits_at_its_rate_with_zeros_and_ones_alike():
    grey = np.full((N, D), 128, np.uint8)  # 128/255: neither 0 nor 1
    out = np.empty((N, D), np.float64)
    cpu.gather_salt_pepper(grey, np.arange(N), 0.2, 5, 1, out)
    hit = out != 128 / 255
    n = hit.size
    assert abs(hit.mean() - 0.2) < 4 * np.sqrt(0.2 * 0.8 / n)
    assert set(np.unique(out[hit])) == {0.0, 1.0}
    assert abs((out[hit] == 1).mean() - 0.5) < 4 * np.sqrt(0.25 / hit.sum())
    masked = np.empty_like(out)
    cpu.gather_masked(grey, np.arange(N), 0.2, 5, 1, masked)
    np.testing.assert_array_equal(hit, masked == 0)  # the same units are hit as masked


def test_gaussian_noise_has_its_standard_deviation_and_stays_in_the_unit_interval():
    grey = np.full((N, D), 128, np.uint8)
    out = np.empty((N, D), np.float64)
    cpu.gather_gaussian(grey, np.arange(N), 0.1, 5, 1, out)
    noise = out - 128 / 255  # 0.5 +- 5 sigma: clipping is negligible here
    assert abs(noise.mean()) < 4 * 0.1 / np.sqrt(noise.size)
    assert abs(noise.std() - 0.1) < 0.002
    assert abs(np.mean(np.abs(noise) < 0.1) - 0.6827) < 0.01  # normal, not uniform
    white = np.full((N, D), 255, np.uint8)
    cpu.gather_gaussian(white, np.arange(N), 0.5, 5, 1, out)
    assert out.max() == 1.0 and out.min() >= 0.0 and (out == 1.0).mean() > 0.4
    cpu.gather_gaussian(grey, np.arange(N), 0.0, 5, 1, out)
    np.testing.assert_array_equal(out, np.full((N, D), 128 / 255))
