"""Oracle tests: every kernel of the Numba ``cpu`` backend against the NumPy reference.

Inputs are random (explicit ``default_rng`` seeds) plus the edge rows that break naive code:
all-zero rows and pre-activations of +-40 and +-100, where ``sigma`` saturates, ``exp(-|z|)``
is subnormal in float32 (exp(-100) ~ 3.7e-44) and a loss written as ``log(clip(y))`` or a
delta written as ``dE/dy * y (1 - y)`` would be wrong.

Tolerances. Both backends do the same operations in the same order and in the same dtype;
they differ only where one calls NumPy's SIMD ``exp``/``log``/``log1p`` and the other the C
library's scalar ones, each accurate to about 1 ulp, and in the summation order of float64
reductions. Hence:

- float64: ``rtol = 1e-13`` (a few hundred ulps of headroom over the ~1 ulp seen; the
  issue asks for ~1e-12).
- float32: ``rtol = 4 * eps32`` (~4.8e-7) on sigmoid outputs: a 1-ulp error in ``e = exp(-|z|)``
  moves ``1 / (1 + e)`` by at most a quarter ulp and ``e / (1 + e)`` by about 1 ulp, plus 1 ulp
  of rounding of each division. Deltas ``(y - t) / B`` are then off by a few ulps *of y*,
  not of the (possibly cancelled) difference, hence an absolute tolerance of
  ``4 * eps32 / B``. Subnormal sigmoids (z = -100) carry an absolute error of a few
  subnormal spacings, far below any of these.
- float32 losses: each element's ``softplus(z) - t z`` is formed in float32 (as the reference
  does) and summed in float64, so the two losses can differ by at most a couple of ulps per
  element: the test computes that bound, ``sum 4 eps32 (|softplus| + |t z|) / B``, from the data.
- Kernels without transcendental functions (gather, masks, products, sigmoid_backward,
  column_sum, sgd_update, argmax) must agree exactly.
"""

import os

import numpy as np
import pytest

from medalpy import config
from medalpy.kernels import cpu, lanes
from medalpy.kernels import reference as ref

DTYPES = [np.float32, np.float64]
EDGE = [0.0, 40.0, -40.0, 100.0, -100.0]


def _rtol(dtype):
    return 1e-13 if dtype == np.float64 else 4 * float(np.finfo(np.float32).eps)


def _preacts(rng, B, D, dtype):
    """Random pre-activations with edge rows: all zeros, +-40, +-100, and all of them mixed."""
    Z = rng.normal(0.0, 6.0, size=(B, D))
    Z[0] = 0.0
    Z[1] = 40.0
    Z[2] = -40.0
    Z[3] = 100.0
    Z[4] = -100.0
    Z[5] = np.resize(EDGE, D)
    return Z.astype(dtype)


def _targets(rng, B, D, dtype):
    """Targets in [0, 1] with exact 0s and 1s (binary pixels), and a row of zeros."""
    T = rng.random((B, D))
    T[rng.random((B, D)) < 0.3] = 0.0
    T[rng.random((B, D)) < 0.2] = 1.0
    T[6] = 0.0
    return T.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_array_helpers(dtype):
    a = cpu.empty((3, 4), dtype)
    assert a.shape == (3, 4) and a.dtype == dtype
    z = cpu.zeros((5,), dtype)
    assert z.dtype == dtype and not z.any()
    x = np.arange(12, dtype=dtype).reshape(3, 4)
    assert cpu.to_device(x) is x
    assert cpu.to_device(x.T).flags.c_contiguous
    assert cpu.to_host(x) is x


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather(dtype):
    rng = np.random.default_rng(101)
    X = rng.integers(0, 256, size=(50, 37), dtype=np.uint8)
    X[3] = 0
    X[4] = 255
    rows = np.array([3, 4, 0, 49, 4, 17], dtype=np.int64)
    got, want = np.empty((6, 37), dtype), np.empty((6, 37), dtype)
    cpu.gather(X, rows, got)
    ref.gather(X, rows, want)
    np.testing.assert_array_equal(got, want)
    # Cached float codes are copied unscaled.
    C = rng.random((50, 11)).astype(dtype)
    got, want = np.empty((6, 11), dtype), np.empty((6, 11), dtype)
    cpu.gather(C, rows, got)
    ref.gather(C, rows, want)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rate", [0.0, 0.15, 0.5])
def test_gather_masked(dtype, rate):
    rng = np.random.default_rng(102)
    X = rng.integers(0, 256, size=(200, 784), dtype=np.uint8)
    X[7] = 0
    rows = rng.permutation(200)[:20].astype(np.int64)
    rows[0] = 7
    got, want = np.empty((20, 784), dtype), np.empty((20, 784), dtype)
    cpu.gather_masked(X, rows, rate, 1234, 5, got)
    ref.gather_masked(X, rows, rate, 1234, 5, want)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, k, m", [(20, 78, 100), (3, 5, 7), (1, 1, 1), (33, 17, 1001),
                                     (20, 1000, 784), (10, 13, 64), (1, 2, 8), (32, 100, 16)])
def test_matmuls(dtype, n, k, m):
    """The cpu backend's products (BLAS called per column block, see kernels/blas.py, or dot
    products for matmul_nt) against the reference's ``np.matmul``. Sums in another order
    differ by rounding only: each element within the standard bound ``k eps (|A| |B|)``.
    Outputs are the top-left corners of larger workspaces, and the inputs have padded rows,
    so every leading dimension differs from the width; nothing may be written outside."""
    rng = np.random.default_rng(103)
    H = rng.random((n, k + 3)).astype(dtype)[:, :k]
    W = rng.normal(size=(k, m + 1)).astype(dtype)[:, :m]
    delta = rng.normal(size=(n, m + 2)).astype(dtype)[:, :m]
    eps = np.finfo(dtype).eps
    for fn, A, Bm, shape, bound in [
        ("matmul", H, W, (n, m), np.abs(H) @ np.abs(W)),
        ("matmul_tn", H, delta, (k, m), np.abs(H).T @ np.abs(delta)),
        ("matmul_nt", delta, W, (n, k), np.abs(delta) @ np.abs(W).T),
    ]:
        workspace = np.full((shape[0] + 2, shape[1] + 3), np.nan, dtype)
        got, want = workspace[:shape[0], :shape[1]], np.empty(shape, dtype)
        getattr(cpu, fn)(A, Bm, got)
        getattr(ref, fn)(A, Bm, want)
        inner = Bm.shape[0] if fn != "matmul_nt" else Bm.shape[1]
        assert np.all(np.abs(got - want) <= inner * eps * bound), fn
        assert np.isnan(workspace[shape[0]:]).all(), f"{fn} wrote below its rows"
        assert np.isnan(workspace[:, shape[1]:]).all(), f"{fn} wrote past its columns"


@pytest.mark.parametrize("n_lanes", [1, 2, 3])
@pytest.mark.parametrize("n, k, m", [(20, 1000, 784), (10, 13, 64), (1, 1, 8), (7, 5, 24),
                                     (32, 100, 16)])
def test_matmul_nt_dot_products(n_lanes, n, k, m, monkeypatch):
    """The float32 back-propagated error as dot products along rows (the kernel matmul_nt
    takes for batches up to NT_DOTS_MAX_ROWS when m is a multiple of 8, on AVX-512 below
    TILED_NT_MIN_ROWS): whichever rows and
    columns end a tile or a lane, within ``m eps (|A| |B|^T)`` of the reference, on inputs
    and an output with padded rows, nothing written outside the output; matmul_nt takes it
    on lanes and, without lanes, on the caller's thread (each element's sums are the same
    whatever the lanes, so the results are identical)."""
    rng = np.random.default_rng(n * k + m)
    delta = rng.normal(size=(n + 1, m + 5)).astype(np.float32)[:n, :m]
    W = rng.normal(size=(k, m + 3)).astype(np.float32)[:, :m]
    want = np.empty((n, k), np.float32)
    ref.matmul_nt(delta, W, want)
    bound = m * np.finfo(np.float32).eps * (np.abs(delta) @ np.abs(W).T)
    workspace = np.full((n + 2, k + 5), np.nan, np.float32)
    lanes._matmul_nt_f32_lanes(delta, W, workspace[:n, :k], n_lanes)
    assert np.all(np.abs(workspace[:n, :k] - want) <= bound)
    assert np.isnan(workspace[n:]).all() and np.isnan(workspace[:, k:]).all()
    assert n <= config.NT_DOTS_MAX_ROWS and m % 8 == 0
    got = np.full((n, k), np.nan, np.float32)
    # On AVX-512 the tiled kernel takes TILED_NT_MIN_ROWS rows and more (test_tiles.py):
    # raised past n here, so that the dots' dispatch is checked at every n on any CPU.
    monkeypatch.setattr(config, "TILED_NT_MIN_ROWS", n + 1)
    cpu.matmul_nt(delta, W, got)
    np.testing.assert_array_equal(got, workspace[:n, :k])
    monkeypatch.setattr(lanes, "READY", False)
    got[...] = np.nan
    cpu.matmul_nt(delta, W, got)
    np.testing.assert_array_equal(got, workspace[:n, :k])


@pytest.mark.parametrize("backend", [ref, cpu], ids=["reference", "cpu"])
def test_mismatched_shapes_raise(backend):
    """The compiled paths index without bounds checks: shapes that do not fit must raise,
    as np.matmul does, before anything is read or written past an array."""
    f = np.float32
    D, W, out = np.ones((4, 16), f), np.ones((3, 8), f), np.empty((4, 3), f)
    with pytest.raises(ValueError):
        backend.matmul_nt(D, W, out)  # inner dimensions 16 and 8
    with pytest.raises(ValueError):
        backend.matmul_nt(D, np.ones((3, 16), f), np.empty((2, 3), f))  # 4 rows into 2
    with pytest.raises(ValueError):
        backend.matmul(np.ones((20, 64), f), np.ones((65, 100), f), np.empty((20, 100), f))
    with pytest.raises(ValueError):
        backend.matmul_tn(np.ones((20, 64), f), np.ones((21, 100), f), np.empty((64, 100), f))
    with pytest.raises(ValueError):
        backend.product_sq_norm(np.ones((1, 8), f), np.ones((3, 8), f))
    A, delta = np.ones((20, 64), f), np.ones((20, 96), f)
    for P, V in [(np.ones((65, 96), f), np.ones((65, 96), f)),   # weights of another layer
                 (np.ones((64, 96), f), np.ones((63, 96), f))]:  # a velocity of another shape
        with pytest.raises(ValueError):
            backend.sgd_update_product(A, delta, P, V, 0.1, 0.9, 1e-3, 1.0)
        assert (P == 1).all() and (V == 1).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_bias_sigmoid(dtype):
    rng = np.random.default_rng(104)
    Z = _preacts(rng, 20, 300, dtype)
    b = rng.normal(size=300).astype(dtype)
    b[: len(EDGE)] = 0.0  # keep some edge values exact after the bias
    Zc, Zr = Z.copy(), Z.copy()
    Hc, Hr = np.empty_like(Z), np.empty_like(Z)
    cpu.add_bias_sigmoid(Zc, b, Hc)
    ref.add_bias_sigmoid(Zr, b, Hr)
    np.testing.assert_array_equal(Zc, Zr)  # Z += b is exact in both
    tiny = float(np.finfo(dtype).smallest_subnormal) * 4
    np.testing.assert_allclose(Hc, Hr, rtol=_rtol(dtype), atol=tiny)
    assert np.all(np.isfinite(Hc)) and np.all((Hc >= 0) & (Hc <= 1))
    # In place (out is Z) gives the same.
    Zi = Z.copy()
    cpu.add_bias_sigmoid(Zi, b, Zi)
    np.testing.assert_array_equal(Zi, Hc)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_cross_entropy(dtype):
    rng = np.random.default_rng(105)
    B, D = 20, 300
    Z = _preacts(rng, B, D, dtype)
    T = _targets(rng, B, D, dtype)
    dc, dr = np.empty_like(Z), np.empty_like(Z)
    lc = cpu.sigmoid_cross_entropy(Z, T, dc)
    lr = ref.sigmoid_cross_entropy(Z, T, dr)
    assert isinstance(lc, float) and np.isfinite(lc)
    assert np.all(np.isfinite(dc))
    if dtype == np.float64:
        assert abs(lc - lr) <= 1e-13 * abs(lr)
        np.testing.assert_allclose(dc, dr, rtol=1e-13, atol=1e-16 / B)
    else:
        Z64, T64 = Z.astype(np.float64), T.astype(np.float64)
        sp = np.maximum(Z64, 0) + np.log1p(np.exp(-np.abs(Z64)))
        bound = 4 * float(np.finfo(np.float32).eps) * np.sum(sp + np.abs(T64 * Z64)) / B
        assert abs(lc - lr) <= bound, (lc, lr, bound)
        eps = float(np.finfo(np.float32).eps)
        np.testing.assert_allclose(dc, dr, rtol=4 * eps, atol=4 * eps / B)
    # Exact values at saturation: y = 1 or 0 to the last bit.
    Zs = np.array([[100.0, -100.0, 100.0, -100.0]], dtype)
    Ts = np.array([[1.0, 0.0, 0.0, 1.0]], dtype)
    ds = np.empty_like(Zs)
    loss = cpu.sigmoid_cross_entropy(Zs, Ts, ds)
    np.testing.assert_allclose(loss, 200.0, rtol=_rtol(dtype))
    # sigma(-100) = exp(-100) / (1 + exp(-100)) ~ 3.7e-44: a normal float64, not 0; in
    # float32 a denormal, which the backend's session flushes to 0 (kernels/denormals.py).
    want = np.array([0.0, np.exp(-100.0) if dtype == np.float64 else 0.0, 1.0, -1.0])
    tiny = float(np.finfo(dtype).smallest_subnormal) * 4
    np.testing.assert_allclose(ds[0], want, rtol=_rtol(dtype), atol=tiny)
    assert ds[0, 0] == 0.0 and ds[0, 2] == 1.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax(dtype):
    rng = np.random.default_rng(106)
    B, C = 20, 10
    Z = (rng.normal(size=(B, C)) * 5).astype(dtype)
    Z[0] = 0.0
    Z[1] = np.resize(EDGE, C)
    Z[2, :] = -100.0
    Z[2, 3] = 100.0
    Z[3, :] = 40.0  # all tied: argmax must be the first
    Z[4, [2, 7]] = 60.0  # tie between two
    labels = rng.integers(0, C, size=B)
    labels[2] = 3
    labels[3] = 9
    dc, dr = np.empty_like(Z), np.empty_like(Z)
    lc = cpu.softmax_cross_entropy(Z, labels, dc)
    lr = ref.softmax_cross_entropy(Z, labels, dr)
    eps = float(np.finfo(dtype).eps)
    # The loss is a sum of float-rounded logsumexp terms: a few ulps of the largest term each.
    assert abs(lc - lr) <= 8 * eps * max(1.0, float(np.max(np.abs(Z)))), (lc, lr)
    # p - onehot cancels at the true class, so compare absolutely, in ulps of 1 / B.
    np.testing.assert_allclose(dc, dr, rtol=_rtol(dtype), atol=4 * eps / B)
    pc, pr = np.empty(B, np.int64), np.empty(B, np.int64)
    cpu.softmax_predict(Z, pc)
    ref.softmax_predict(Z, pr)
    np.testing.assert_array_equal(pc, pr)
    assert pc[3] == 0 and pc[4] == 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_backward(dtype):
    rng = np.random.default_rng(107)
    dH = rng.normal(size=(20, 300)).astype(dtype)
    dH[0] = 0.0
    H = rng.random((20, 300)).astype(dtype)
    H[1] = 0.0
    H[2] = 1.0
    got, want = np.empty_like(H), np.empty_like(H)
    cpu.sigmoid_backward(dH, H, got)
    ref.sigmoid_backward(dH, H, want)
    np.testing.assert_array_equal(got, want)
    inplace = dH.copy()
    cpu.sigmoid_backward(inplace, H, inplace)
    np.testing.assert_array_equal(inplace, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [1, 20])
def test_column_sum(dtype, B):
    rng = np.random.default_rng(108)
    delta = rng.normal(size=(B, 300)).astype(dtype)
    delta[0, :50] = 0.0
    got, want = np.empty(300, dtype), np.empty(300, dtype)
    cpu.column_sum(delta, got)
    ref.column_sum(delta, want)
    np.testing.assert_allclose(got, want, rtol=_rtol(dtype), atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_of_squares(dtype):
    rng = np.random.default_rng(109)
    for G in [
        rng.normal(size=(784, 100)).astype(dtype),
        rng.normal(size=1000).astype(dtype),
        np.zeros((3, 4), dtype),
        rng.normal(size=(40, 30)).astype(dtype)[:, ::2],  # strided
    ]:
        got, want = cpu.sum_of_squares(G), ref.sum_of_squares(G)
        assert isinstance(got, float)
        # float64 accumulation of exact squares: only the summation order differs.
        assert abs(got - want) <= 1e-13 * want


def _gram_magnitude(A, delta):
    """sum_ij |(A A^T)_ij (delta delta^T)_ij|: the scale of the terms product_sq_norm adds."""
    A64, d64 = A.astype(np.float64), delta.astype(np.float64)
    return float(np.sum(np.abs(A64 @ A64.T) * np.abs(d64 @ d64.T)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, k, m", [(20, 1000, 1000), (1, 5, 3), (32, 784, 10), (7, 13, 1)])
def test_product_sq_norm(dtype, n, k, m):
    """||A^T delta||^2 from Gram matrices equals the norm of the formed gradient; the cpu
    kernel's float64 dot products differ from the reference's only in summation order."""
    rng = np.random.default_rng(n * k + m)
    A = rng.random((n, k + 3)).astype(dtype)[:, :k]  # padded rows
    delta = rng.normal(size=(n, m)).astype(dtype)
    exact = float(np.sum((A.astype(np.float64).T @ delta.astype(np.float64)) ** 2))
    bound = 1e-12 * _gram_magnitude(A, delta)
    want = ref.product_sq_norm(A, delta)
    got = cpu.product_sq_norm(A, delta)
    assert isinstance(got, float)
    assert abs(want - exact) <= bound
    assert abs(got - want) <= bound


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape, decay, scale",
    # (784, 100) and (257, 511) are split over two threads, the second in unequal blocks.
    [((784, 100), 1e-3, 1.0), ((257, 511), 1e-3, 0.5), ((100,), 0.0, 0.37),
     ((30, 40), 1e-3, 2.5)],
)
def test_sgd_update(dtype, shape, decay, scale):
    rng = np.random.default_rng(110)
    P, G, V = (rng.normal(size=shape).astype(dtype) for _ in range(3))
    Pc, Vc, Pr, Vr = P.copy(), V.copy(), P.copy(), V.copy()
    for _ in range(3):  # a few steps, so V carries momentum
        cpu.sgd_update(Pc, G, Vc, 0.1, 0.9, decay, scale)
        ref.sgd_update(Pr, G, Vr, 0.1, 0.9, decay, scale)
    np.testing.assert_array_equal(Pc, Pr)
    np.testing.assert_array_equal(Vc, Vr)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_update_strided_views_update_in_place(dtype):
    rng = np.random.default_rng(111)
    big = [rng.normal(size=(30, 40)).astype(dtype) for _ in range(3)]
    Pc, Vc = big[0].copy(), big[2].copy()
    Pr, Vr = big[0].copy(), big[2].copy()
    G = big[1][:, ::2]
    cpu.sgd_update(Pc[:, ::2], G, Vc[:, ::2], 0.1, 0.9, 1e-3, 1.0)
    ref.sgd_update(Pr[:, ::2], G, Vr[:, ::2], 0.1, 0.9, 1e-3, 1.0)
    np.testing.assert_array_equal(Pc, Pr)
    np.testing.assert_array_equal(Vc, Vr)
    assert not np.array_equal(Pc, big[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_and_loss_dense_sweep(dtype):
    """Every binade of exp(-|z|) the polynomial exp and log1p meet, normal and subnormal."""
    zmax = 110.0 if dtype == np.float32 else 800.0
    Z = np.linspace(-zmax, zmax, 40001).astype(dtype).reshape(1, -1)
    T = np.random.default_rng(112).random(Z.shape).astype(dtype)
    b = np.zeros(Z.shape[1], dtype)
    Hc, Hr = np.empty_like(Z), np.empty_like(Z)
    cpu.add_bias_sigmoid(Z.copy(), b, Hc)
    ref.add_bias_sigmoid(Z.copy(), b, Hr)
    tiny = float(np.finfo(dtype).smallest_subnormal) * 4
    np.testing.assert_allclose(Hc, Hr, rtol=_rtol(dtype), atol=tiny)
    dc, dr = np.empty_like(Z), np.empty_like(Z)
    lc = cpu.sigmoid_cross_entropy(Z, T, dc)
    lr = ref.sigmoid_cross_entropy(Z, T, dr)
    # y - t cancels: compare in ulps of y (B = 1 here), as in test_sigmoid_cross_entropy.
    np.testing.assert_allclose(dc, dr, rtol=_rtol(dtype), atol=4 * float(np.finfo(dtype).eps))
    Z64, T64 = Z.astype(np.float64), T.astype(np.float64)
    sp = np.maximum(Z64, 0) + np.log1p(np.exp(-np.abs(Z64)))
    eps = float(np.finfo(dtype).eps)
    assert abs(lc - lr) <= 4 * eps * np.sum(sp + np.abs(T64 * Z64)), (lc, lr)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates(dtype):
    """A diverged pre-activation must show up as NaN, not be clamped into a plausible value."""
    Z = np.array([[np.nan, 1.0]], dtype)
    H = np.empty_like(Z)
    cpu.add_bias_sigmoid(Z, np.zeros(2, dtype), H)
    assert np.isnan(H[0, 0]) and np.isfinite(H[0, 1])
    delta = np.empty_like(Z)
    assert np.isnan(cpu.sigmoid_cross_entropy(Z, np.zeros_like(Z), delta))
    assert np.isnan(delta[0, 0])


def test_out_of_range_indices_raise():
    """Compiled code has no bounds checks; the kernels check indices themselves."""
    X = np.zeros((5, 4), np.uint8)
    out = np.empty((2, 4), np.float32)
    with pytest.raises(IndexError):
        cpu.gather(X, np.array([0, 5]), out)
    with pytest.raises(IndexError):
        cpu.gather_masked(X, np.array([-1, 0]), 0.1, 0, 0, out)
    Z = np.zeros((2, 3), np.float32)
    with pytest.raises(IndexError):
        cpu.softmax_cross_entropy(Z, np.array([0, 3]), np.empty_like(Z))


def test_products_call_numpys_openblas_on_lanes_unless_told_not_to():
    """NumPy's wheels bundle an ILP64 OpenBLAS; the cpu backend must find it (else every
    product silently takes the np.matmul path), and MEDALPY_CPU_GEMM=numpy must turn it off
    with the same results."""
    import subprocess
    import sys

    from medalpy.kernels import blas

    assert blas.available() and lanes.READY  # this module's tests run inside a session
    assert all(n == 1 for name, n in blas.get_threads().items() if "scipy_openblas64" in name)
    # In a fresh interpreter: importing the backend changes no thread count; a session turns
    # the lanes on with a single-threaded OpenBLAS, sessions nest, and the end of the
    # outermost one restores everything.
    code = ("import numba, numpy as np; from medalpy.kernels import blas, cpu, lanes; "
            "np.ones((2, 2)) @ np.ones((2, 2)); before = blas.get_threads(); "
            "assert not lanes.READY and max(before.values()) > 1, before\n"
            "with cpu.session():\n"
            "    assert lanes.READY and lanes.LANES == numba.config.NUMBA_NUM_THREADS\n"
            "    assert set(blas.get_threads().values()) == {1}\n"
            "    with cpu.session():\n"
            "        assert lanes.READY\n"
            "    assert lanes.READY and set(blas.get_threads().values()) == {1}\n"
            "after = blas.get_threads()\n"
            # Numba's first compilation may load SciPy's BLAS as well: left as it was found.
            "assert not lanes.READY and {k: after[k] for k in before} == before\n"
            "assert all(v > 1 for k, v in after.items() if k not in before), after\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(
        os.environ, OPENBLAS_NUM_THREADS="2"))
    code = ("import numpy as np; from medalpy.kernels import blas, cpu; "
            "A = np.arange(12.).reshape(3, 4); B = np.ones((4, 5)); C = np.empty((3, 5)); "
            "cpu.matmul(A, B, C); assert (C == A @ B).all(); print(blas.available())")
    env = dict(os.environ, MEDALPY_CPU_GEMM="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, k, m", [(20, 784, 100), (3, 5, 7), (40, 70, 33), (1, 65, 130)])
def test_sgd_update_product(dtype, n, k, m):
    """The fused weight-gradient + SGD kernel (G = A^T delta formed block by block and never
    stored) against the reference's matmul + sgd_update, over a few steps; row slices of
    workspaces as inputs. float64 agrees to rounding; float32 within a few ulps of the
    gradient's scale times lr (the blocks' products may sum in another order)."""
    rng = np.random.default_rng(113)
    A = rng.random((n + 2, k)).astype(dtype)[:n]
    delta = rng.normal(size=(n + 1, m)).astype(dtype)[:n]
    P, V = rng.normal(size=(k, m)).astype(dtype), 0.1 * rng.normal(size=(k, m)).astype(dtype)
    Pc, Vc, Pr, Vr = P.copy(), V.copy(), P.copy(), V.copy()
    for _ in range(3):
        cpu.sgd_update_product(A, delta, Pc, Vc, 0.1, 0.9, 1e-3, 0.7)
        ref.sgd_update_product(A, delta, Pr, Vr, 0.1, 0.9, 1e-3, 0.7)
    bound = n * np.finfo(dtype).eps * float((np.abs(A).T @ np.abs(delta)).max()) * 0.1 * 0.7
    tol = 3 * (bound + np.finfo(dtype).eps * max(np.abs(Pr).max(), 1.0))
    assert np.abs(Pc - Pr).max() <= tol
    assert np.abs(Vc - Vr).max() <= tol
    assert not np.array_equal(Pc, P)
