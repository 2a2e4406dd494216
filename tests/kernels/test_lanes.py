"""The cpu backend's lanes: the arithmetic never depends on how the work is split over
threads, and the governor moves between one lane and all of them as their timings say.

Reproducibility rests on the first: a cell's result must depend only on its settings, not
on the cores of the machine, the lanes the governor picked while another process was busy,
or the worker (one lane) that ran it.
"""

import numba
import numpy as np
import pytest

from medalpy import config
from medalpy.kernels import blas, cpu, lanes

pytestmark = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2 or not blas.available(),
                                reason="needs two Numba threads and NumPy's OpenBLAS")

SPLITS = [1, 2, 3, 7]  # lanes; 3 and 7 share 4 parts out unevenly, 7 leaves lanes idle


@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, k, n", [(20, 784, 1000), (10, 1000, 784), (128, 100, 200),
                                     (7, 33, 70)])
def test_products_are_bit_identical_on_any_split(m, k, n, trans_a, trans_b, dtype):
    """Every product on 1, 2, 3 or 7 lanes, and on the caller's thread alone, gives the same
    bits: the output's columns are cut into the same parts, whichever lane computes them."""
    rng = np.random.default_rng(m + k + n)
    A = rng.normal(size=(k, m) if trans_a else (m, k)).astype(dtype)
    B = rng.normal(size=(n, k) if trans_b else (k, n)).astype(dtype)
    parts = config.PRODUCT_PARTS
    alone = np.empty((m, n), dtype)
    lanes._gemm_parts(A, B, alone, trans_a, trans_b, 0, parts, parts)
    for n_lanes in SPLITS:
        got = np.full((m, n), np.nan, dtype)
        lanes._gemm_lanes(A, B, got, trans_a, trans_b, n_lanes, parts)
        np.testing.assert_array_equal(got, alone, err_msg=f"{n_lanes} lanes")
    want = (A.T if trans_a else A) @ (B.T if trans_b else B)
    assert np.allclose(alone, want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch, k, m", [(20, 784, 1000), (10, 1000, 784), (32, 70, 90),
                                         (128, 784, 1000), (33, 300, 90)])
def test_the_fused_weight_update_is_bit_identical_on_any_split(batch, k, m, dtype):
    """The weight update with its gradient formed block by block (sgd_update_product's
    kernel) leaves the same weights and velocities on any number of lanes."""
    rng = np.random.default_rng(batch + k + m)
    A = rng.uniform(size=(batch, k)).astype(dtype)
    delta = rng.normal(size=(batch, m)).astype(dtype)
    P0 = rng.normal(size=(k, m)).astype(dtype)
    V0 = rng.normal(size=(k, m)).astype(dtype) * dtype(0.01)
    block = cpu.product_block_rows(batch)
    blocks = -(-k // block)
    scratch = np.empty((max(SPLITS), block * m), dtype)
    P, V = P0.copy(), V0.copy()
    args = (0.1, 0.9, 1e-3, 0.5)
    cpu._sgd_product_blocks(A, delta, P, V, *args, scratch[0], block, 0, blocks)
    for n_lanes in SPLITS:
        P_l, V_l = P0.copy(), V0.copy()
        cpu._sgd_product_kernel(A, delta, P_l, V_l, *args, scratch[:n_lanes], block, n_lanes)
        np.testing.assert_array_equal(P_l, P, err_msg=f"{n_lanes} lanes")
        np.testing.assert_array_equal(V_l, V, err_msg=f"{n_lanes} lanes")
    # And it is the SGD rule (within round-off of a plain NumPy step).
    G = A.astype(np.float64).T @ delta
    V_want = 0.9 * V0 + 0.1 * (0.5 * G + 1e-3 * P0)
    np.testing.assert_allclose(V, V_want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(P, P0 - V_want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_split_cross_entropy_is_the_serial_one(dtype):
    """The sigmoid cross-entropy with its rows split over lanes gives the serial kernel's
    loss and delta bit for bit: the rows' float64 sums are added in row order after."""
    rng = np.random.default_rng(8)
    Z = (rng.normal(size=(67, 90)) * 6).astype(dtype)
    T = rng.uniform(size=(67, 90)).astype(dtype)
    terms, sums = np.empty((max(SPLITS), 90), dtype), np.empty(67)
    want_delta = np.empty_like(Z)
    want = cpu._sigmoid_ce_kernel(Z, T, want_delta, terms[0], sums)
    for n_lanes in SPLITS:
        delta, sums[:] = np.full_like(Z, np.nan), np.nan  # nothing left from the serial call
        assert cpu._sigmoid_ce_lanes(Z, T, delta, terms, sums, n_lanes) == want, n_lanes
        np.testing.assert_array_equal(delta, want_delta, err_msg=f"{n_lanes} lanes")


def test_the_cross_entropy_and_gather_give_their_serial_bits_inside_a_session():
    """From ELEMENTWISE_LANES_MIN_ROWS rows the backend's cross-entropy and gather, called as
    the trainer calls them, on whichever lanes the governor picks call by call (its first
    calls alternate one lane and all), return what they return outside a session."""
    rng = np.random.default_rng(10)
    n = config.ELEMENTWISE_LANES_MIN_ROWS + 3
    Z = (rng.normal(size=(n, 40)) * 6).astype(np.float32)
    T = rng.uniform(size=(n, 40)).astype(np.float32)
    X = rng.integers(0, 256, size=(500, 40), dtype=np.uint8)
    rows = rng.integers(0, 500, size=n)
    want_delta = np.empty_like(Z)
    want_loss = cpu.sigmoid_cross_entropy(Z, T, want_delta)
    want_batch = np.empty((n, 40), np.float32)
    cpu.gather_masked(X, rows, 0.3, 5, 2, want_batch)
    with lanes.threads(2):
        for call in range(6):
            delta, batch = np.full_like(Z, np.nan), np.full((n, 40), np.nan, np.float32)
            assert cpu.sigmoid_cross_entropy(Z, T, delta) == want_loss, call
            np.testing.assert_array_equal(delta, want_delta, err_msg=f"call {call}")
            cpu.gather_masked(X, rows, 0.3, 5, 2, batch)
            np.testing.assert_array_equal(batch, want_batch, err_msg=f"call {call}")


@pytest.mark.parametrize("kind", [cpu.CLEAN, cpu.MASKING, cpu.SALT_PEPPER, cpu.GAUSSIAN])
def test_the_split_gather_is_the_serial_one(kind):
    """A batch gathered with its noise on lanes, rows split, is the serial gather's."""
    rng = np.random.default_rng(9)
    X = rng.integers(0, 256, size=(300, 50), dtype=np.uint8)
    rows = rng.integers(0, 300, size=67)
    key, threshold = cpu._noise_key(4, 2, 0.3)
    want = np.empty((67, 50), np.float32)
    cpu._gather_kernel(X, rows, 1 / 255, kind, key, threshold, 0.2, want)
    for n_lanes in SPLITS:
        got = np.full((67, 50), np.nan, np.float32)
        cpu._gather_lanes(X, rows, 1 / 255, kind, key, threshold, 0.2, got, n_lanes)
        np.testing.assert_array_equal(got, want, err_msg=f"{n_lanes} lanes")
    rows[40] = 300
    with pytest.raises(IndexError, match="gather: row index out of range"):
        cpu._gather_lanes(X, rows, 1 / 255, kind, key, threshold, 0.2, got, 2)


def _train(choose, batch_size=20, n_lanes=2):
    """The weights after a short gradual run on the cpu backend, float32, layers wide enough
    that every product runs on lanes, with ``choose(key)`` picking each call's lanes."""
    from medalpy.sklearn import DenoisingAutoencoder

    X = np.random.default_rng(0).uniform(size=(400, 96))
    model = DenoisingAutoencoder(schedule="gradual", hidden_layer_sizes=(80, 72),
                                 epochs_layer1=1, budget=1, batch_size=batch_size, backend="cpu",
                                 dtype="float32", random_state=0)
    original = lanes.GOVERNOR.lanes
    lanes.GOVERNOR.lanes = choose
    try:
        with lanes.threads(n_lanes):
            model.fit(X)
    finally:
        lanes.GOVERNOR.lanes = original
    return model.coefs_ + model.intercepts_


@pytest.mark.parametrize("batch_size", [20, 64])
def test_training_is_bit_identical_whatever_lanes_the_governor_picks(batch_size):
    """Training on one lane throughout, on two throughout, and with every call's lanes
    picked at random (as a governor reacting to a busy core might) ends with the same bits:
    a run's result depends on its settings, not on what ran beside it. At batch 64 the fused
    update forms larger blocks (the last, short batch smaller ones); on an AVX-512 CPU the
    products are the tiled kernels' and bias + sigmoid, the cross-entropy and the gather are
    split over the lanes."""
    rng = np.random.default_rng(1)
    picks = []

    def at_random(key):
        picks.append(int(rng.integers(1, 3)))
        return picks[-1]

    one = _train(lambda key: 1, batch_size, n_lanes=1)  # as a one-core worker runs cells
    two = _train(lambda key: 2, batch_size)
    mixed = _train(at_random, batch_size)
    assert {1, 2} <= set(picks) and len(picks) > 50  # products did go through the lanes
    for a, b, c in zip(one, two, mixed):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def _simulate(governor, cost, calls, key="product"):
    """Drive ``governor`` for ``calls`` calls of one shape whose duration on n lanes is
    ``cost[n]``; return the lanes it picked."""
    picked = []
    for _ in range(calls):
        n = governor.lanes(key)
        governor.record(key, n, cost[n])
        picked.append(n)
    return np.array(picked)


def test_the_governor_follows_the_faster_lanes_and_comes_back():
    """Quiet: all lanes (faster), with one-lane probes only now and then. A busy core makes
    two lanes slower than one: it moves to one lane within a few calls and stays, probing
    rarely. When the core is free again it returns to all lanes."""
    with lanes.threads(2):
        governor = lanes.Governor()
        quiet = _simulate(governor, {1: 1.0, 2: 0.55}, 2000)
        assert np.mean(quiet[100:] == 2) > 0.99
        busy = _simulate(governor, {1: 1.1, 2: 4.0}, 2000)
        assert np.all(busy[10:] == 1) or np.mean(busy[10:] == 1) > 0.99
        assert np.mean(busy[:10] == 1) >= 0.5  # it reacted at once
        freed = _simulate(governor, {1: 1.0, 2: 0.55}, 4 * governor.probe_far)
        assert np.sum(freed[-governor.probe_far:] == 1) <= 1  # at most its one probe
        # Switched off, it always answers the session's lanes.
        governor.enabled = False
        assert set(_simulate(governor, {1: 0.1, 2: 9.0}, 50)) == {2}


def test_the_governor_undoes_a_brief_burst_of_load_within_tens_of_calls():
    """A few slow two-lane calls (another program's threads still spinning after it ran)
    move it to one lane; the first probe after the burst finds two lanes fast again, and
    confirming probes bring it back without waiting out the stale timings. Steady load is
    still probed only rarely."""
    with lanes.threads(2):
        governor = lanes.Governor()
        _simulate(governor, {1: 1.0, 2: 0.55}, 500)
        burst = _simulate(governor, {1: 1.0, 2: 4.0}, 5)
        assert burst[-1] == 1  # it reacted
        after = _simulate(governor, {1: 1.0, 2: 0.55}, 200)
        back = np.argmax(after == 2)
        assert 0 < back <= 2 * governor.probe_min
        assert np.sum(after[back:] == 1) <= 5  # backed-off probes at 2**k calls
        busy = _simulate(governor, {1: 1.1, 2: 4.0}, 3000)
        assert np.sum(busy[10:] == 2) <= 20  # backed-off probes: 15 in 3,000 calls


def test_the_governor_keeps_all_lanes_when_one_lane_is_barely_faster():
    """Timing noise of a few percent must not move a quiet machine off its lanes: one lane
    is used only when clearly faster (below ``prefer`` times all lanes)."""
    with lanes.threads(2):
        governor = lanes.Governor()
        picked = _simulate(governor, {1: 0.95, 2: 1.0}, 1000)
        assert np.mean(picked[10:] == 2) > 0.95
        picked = _simulate(lanes.Governor(), {1: 0.8, 2: 1.0}, 1000)
        assert np.mean(picked[10:] == 1) > 0.95
