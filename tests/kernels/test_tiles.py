"""The register-tiled float32 products (medalpy.kernels.tiles) and where the cpu backend uses
them.

The kernels are plain LLVM vector code: on a CPU without AVX-512 a 16-lane vector is two
8-lane ones, so these tests check the arithmetic on any x86-64 machine; only the dispatch
test needs AVX-512. Shapes end in every kind of remainder: rows not a multiple of the tile's
8 (the last tile moves up and overlaps the one before, or has 4 rows), columns not a
multiple of the 48 of a panel (the last panel is padded with zeros, and its tile has fewer
vectors), a batch of more than one panel of 48.
"""

import numba
import numpy as np
import pytest

from medalpy import config
from medalpy.kernels import blas, cpu, lanes, tiles

# (rows, inner, columns): last panels of 1, 2 and 3 vectors for rows (matmul_nt's panels
# are over the batch) and for columns; up to 32 rows (the forward reads B in place), a last
# row tile of 4 rows where 2 or 4 rows are left (10; 20 and 28) or of 8 moved up where 5 are
# (13).
SHAPES = [(8, 1, 1), (13, 20, 50), (64, 100, 48), (100, 37, 97), (130, 33, 161),
          (9, 16, 47), (75, 20, 60), (24, 40, 100), (10, 30, 100), (20, 17, 97), (28, 5, 144)]
LANES = [1, 2, 3]  # 3 shares tiles out unevenly over the two cores


def _data(m, k, n, seed=0):
    rng = np.random.default_rng(seed + m + k + n)
    return (rng.normal(size=(m, k)).astype(np.float32),
            rng.normal(size=(k, n)).astype(np.float32))


def _within_bound(got, A, B):
    """|got - A B| <= k eps |A| |B|, A B and the bound in float64."""
    A64, B64 = A.astype(np.float64), B.astype(np.float64)
    bound = A.shape[1] * np.finfo(np.float32).eps * (np.abs(A64) @ np.abs(B64))
    return np.all(np.abs(got - A64 @ B64) <= bound)


def _matmul(A, B, n_lanes):
    C = np.full((A.shape[0], B.shape[1]), np.nan, np.float32)
    tiles.matmul(A, B, C, np.zeros((n_lanes, tiles.matmul_scratch_size(A.shape[1])),
                                   np.float32), n_lanes)
    return C


def _matmul_nt(D, W, n_lanes):
    C = np.full((D.shape[0], W.shape[0]), np.nan, np.float32)
    packed = np.zeros((tiles.panels(D.shape[0]), D.shape[1] * tiles.PANEL), np.float32)
    edges = np.zeros((n_lanes, tiles.TILE_ROWS * tiles.PANEL), np.float32)
    tiles.matmul_nt(D, W, C, packed, edges, n_lanes)
    return C


def _update(A, delta, P0, V0, args, n_lanes):
    P, V = P0.copy(), V0.copy()
    packed = np.zeros((tiles.panels(P.shape[1]), A.shape[0] * tiles.PANEL), np.float32)
    g = np.zeros((n_lanes, tiles.update_scratch_size(A.shape[0], P.shape[1])), np.float32)
    tiles.sgd_update_product(A, delta, P, V, *args, packed, g, n_lanes)
    return P, V


@pytest.mark.parametrize("m, k, n", SHAPES)
def test_tiled_products_are_within_the_rounding_bound(m, k, n):
    """C = A B and C = D W^T, every element within k eps |A||B| of the float64 product, on
    any number of lanes with the same bits."""
    A, B = _data(m, k, n)
    first = _matmul(A, B, 1)
    assert _within_bound(first, A, B)
    for n_lanes in LANES[1:]:
        np.testing.assert_array_equal(_matmul(A, B, n_lanes), first)
    D, W = A, np.ascontiguousarray(B.T)  # W (n, k): C = D W^T is (m, n) again
    if n >= tiles.TILE_ROWS:
        first_nt = _matmul_nt(D, W, 1)
        assert _within_bound(first_nt, D, B)
        for n_lanes in LANES[1:]:
            np.testing.assert_array_equal(_matmul_nt(D, W, n_lanes), first_nt)


# Batches below tiles.STEP_IN_TILE_MIN_ROWS (13, 8, 31) store G and step along rows; from it
# (32, 33, 40, 130) each tile steps from its registers: last panels of 1, 2 and 3 full
# vectors and of 1, 2 and 3 partial ones, weights' rows a multiple of 8 or not.
@pytest.mark.parametrize("m, k, n", [(13, 20, 50), (130, 33, 161), (8, 9, 48), (31, 17, 80),
                                     (32, 20, 112), (40, 24, 80), (33, 12, 55), (40, 24, 90)])
def test_the_tiled_update_is_the_sgd_step_of_the_tiled_gradient(m, k, n):
    """The fused update leaves exactly the weights and velocities of the SGD step
    (cpu.sgd_update) with G = A^T delta from the tiled forward product, on any lanes: each
    G element is the same chain of multiply-adds, the step's operations are the same in the
    same order, and each row is updated once even where the last row tile overlaps the one
    before."""
    rng = np.random.default_rng(m + k + n)
    A = rng.uniform(size=(m, k)).astype(np.float32)  # (batch, inputs): P is (k, n)
    delta = rng.normal(size=(m, n)).astype(np.float32)
    P0 = rng.normal(size=(k, n)).astype(np.float32)
    V0 = (rng.normal(size=(k, n)) * 0.01).astype(np.float32)
    args = (0.1, 0.9, 1e-3, 0.5)
    G = _matmul(np.ascontiguousarray(A.T), delta, 1)
    assert _within_bound(G, A.T, delta)
    P_want, V_want = P0.copy(), V0.copy()
    cpu.sgd_update(P_want, G, V_want, *args)
    for n_lanes in LANES:
        P, V = _update(A, delta, P0, V0, args, n_lanes)
        np.testing.assert_array_equal(P, P_want, err_msg=f"{n_lanes} lanes")
        np.testing.assert_array_equal(V, V_want, err_msg=f"{n_lanes} lanes")


def test_any_split_of_the_tiles_gives_the_same_bits():
    """The lanes' kernels called directly on skewed ranges of tiles (one tile, all but one)
    write what one call over every tile writes."""
    A, B = _data(61, 70, 150, seed=3)  # 8 row tiles, 4 panels: 32 tiles
    T = tiles.row_tiles(61) * tiles.panels(150)
    panel = np.zeros(tiles.matmul_scratch_size(70), np.float32)
    whole = np.full((61, 150), np.nan, np.float32)
    tiles._matmul_panels(A, B, whole, panel[:70 * tiles.PANEL], panel[70 * tiles.PANEL:], 0, T)
    for cut in (1, 7, T // 2, T - 1):
        split = np.full((61, 150), np.nan, np.float32)
        for first, stop in ((0, cut), (cut, T)):
            tiles._matmul_panels(A, B, split, panel[:70 * tiles.PANEL],
                                 panel[70 * tiles.PANEL:], first, stop)
        np.testing.assert_array_equal(split, whole, err_msg=f"cut at tile {cut}")


@pytest.mark.skipif(not (tiles.available() and blas.available()),
                    reason="needs AVX-512 and NumPy's OpenBLAS")
def test_large_float32_batches_go_to_the_tiles_inside_a_session():
    """On an AVX-512 CPU the cpu backend's products of TILED_MIN_ROWS to TILED_MAX_ROWS rows
    are the tiled kernels' (same bits); outside that range, and in float64, they are not."""
    assert lanes.TILED
    m = max(config.TILED_MIN_ROWS, config.TILED_NT_MIN_ROWS)  # below: matmul_nt's dots
    A, B = _data(m, 300, 200)
    got = np.empty((m, 200), np.float32)
    lanes.matmul(A, B, got)
    np.testing.assert_array_equal(got, _matmul(A, B, 1))
    W = B  # (300, 200): the error D W^T of a 300-to-200 layer
    D = _data(m, 200, 1)[0]
    got_nt = np.empty((m, 300), np.float32)
    lanes.matmul_nt(D, W, got_nt)
    np.testing.assert_array_equal(got_nt, _matmul_nt(D, W, 1))
    P0, V0 = _data(300, 200, 0, seed=1)[0], np.zeros((300, 200), np.float32)
    delta = _data(m, 200, 0, seed=2)[0]
    P, V = P0.copy(), V0.copy()
    cpu.sgd_update_product(A, delta, P, V, 0.1, 0.9, 1e-3, 1.0)
    np.testing.assert_array_equal(P, _update(A, delta, P0, V0, (0.1, 0.9, 1e-3, 1.0), 1)[0])
    assert lanes.tiled(A[:config.TILED_MIN_ROWS], B)
    assert not lanes.tiled(A[:config.TILED_MIN_ROWS - 1], B)
    assert not lanes.tiled(np.zeros((config.TILED_MAX_ROWS + 1, 300), np.float32), B)
    assert not lanes.tiled(A.astype(np.float64), B.astype(np.float64))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two Numba threads")
def test_the_split_bias_sigmoid_is_the_serial_one():
    """Bias + sigmoid with its rows split over lanes (large batches) gives the serial
    kernel's bits, for any split."""
    rng = np.random.default_rng(4)
    Z0 = (rng.normal(size=(67, 90)) * 8).astype(np.float32)
    b = rng.normal(size=90).astype(np.float32)
    want = Z0.copy()
    cpu._bias_sigmoid_inplace_kernel(want, b)
    for n_lanes in (2, 3):
        Z = Z0.copy()
        cpu._bias_sigmoid_inplace_lanes(Z, b, n_lanes)
        np.testing.assert_array_equal(Z, want, err_msg=f"{n_lanes} lanes")
    Z = Z0.copy()
    cpu.add_bias_sigmoid(Z, b, Z)  # the session's path at 67 rows
    np.testing.assert_array_equal(Z, want)
