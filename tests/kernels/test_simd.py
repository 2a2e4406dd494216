"""The eight-lane float32 vector type the cpu backend's tiled kernels are written with."""

import numba
import numpy as np

from medalpy.kernels import simd


@numba.njit
def _dot(a, b):
    acc = simd.zeros()
    for k in range(0, a.size, simd.WIDTH):
        acc = simd.muladd(simd.load(a, k), simd.load(b, k), acc)
    return simd.hsum(acc)


@numba.njit
def _lane_sum(a, offset):
    return simd.hsum(simd.load(a, offset))


def test_hsum_adds_lanes_0_and_4_first():
    # (v0 + v4) + (v2 + v6) and (v1 + v5) + (v3 + v7): with 1e8 in lane 0 and -1e8 in lane 4
    # the 1s survive only if those two meet first.
    v = np.array([1e8, 1, 1, 1, -1e8, 1, 1, 1], np.float32)
    assert _lane_sum(v, 0) == np.float32(6)
    w = np.arange(1, 17, dtype=np.float32)
    assert _lane_sum(w, 8) == np.float32(w[8:].sum())  # an offset into the data


def test_vector_dot_product_matches_numpy():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(2, 64)).astype(np.float32)
    exact = float(a.astype(np.float64) @ b.astype(np.float64))
    bound = 64 * np.finfo(np.float32).eps * float(np.abs(a) @ np.abs(b))
    assert abs(float(_dot(a, b)) - exact) <= bound
    assert _dot(np.ones(16, np.float32), np.full(16, 2, np.float32)) == np.float32(32)


@numba.njit
def _lanewise(a, b, c, d, out):
    # out = a * b + c - d, each operation rounded on its own, sixteen lanes at a time.
    for i in range(0, a.size, simd.WIDE):
        s = simd.add(simd.mul(simd.load16(a, i), simd.load16(b, i)), simd.load16(c, i))
        simd.store(out, i, simd.sub(s, simd.load16(d, i)))


def test_lanewise_add_sub_mul_round_each_operation_as_numpy_does():
    # With c = -(a * b rounded), a * b + c is 0 when the product is rounded first and the
    # product's rounding error when fused: the tiles' SGD step must give NumPy's bits.
    rng = np.random.default_rng(6)
    a, b, d = rng.normal(size=(3, 64)).astype(np.float32)
    c = -(a * b)
    out = np.empty(64, np.float32)
    _lanewise(a, b, c, d, out)
    np.testing.assert_array_equal(out, a * b + c - d)
    fused = (a.astype(np.float64) * b + c).astype(np.float32) - d
    assert not np.array_equal(out, fused)  # the check can tell the two apart
