"""The ``cpu`` backend: BLAS for matrix products, fused Numba passes for the rest.

Every public function has the name, signature and semantics of its twin in
:mod:`medalpy.kernels.reference` (the oracle; read it for the equations). What differs is how
the work is done:

- Matrix products call NumPy's own OpenBLAS directly from Numba (:mod:`medalpy.kernels.blas`)
  on *lanes*: the output's columns are split into one block per Numba thread, and each
  thread makes one single-threaded BLAS call on its block. At the paper's batch sizes the
  products are skinny (10-20 rows), and a 2-threaded OpenBLAS splits them worse than this
  (docs/performance.md). OpenBLAS is set to one thread while the backend is loaded
  (:func:`use_threads`); no temporaries, no copies of weight-sized arrays.
- The back-propagated error ``delta W^T`` of a small float32 batch is computed as dot products
  between rows (:func:`matmul_nt`, :func:`_matmul_nt_f32_lanes`), with explicit 8-lane vectors
  (:mod:`medalpy.kernels.simd`): each weight row is streamed once, where OpenBLAS first packs
  the weights transposed.
- The weight gradient of a layer is never stored whole in a training step:
  :func:`sgd_update_product` forms it a block of rows at a time into a small scratch on
  each lane and applies the SGD step to that block at once, so the weights and velocities
  are read and written once and the gradient is used right after it is formed (about a
  third less time than storing it first: ``benchmarks/cpu_choices.py``, docs/performance.md).
- Each element-wise step is one pass over memory in a module-level ``@njit(cache=True)``
  function: bias + sigmoid; cross-entropy loss and output delta together, from the
  pre-activations; softmax + NLL + delta; the hidden delta through the sigmoid; the column
  sum; the whole SGD step (momentum, decay, gradient scale) over ``P``, ``G``, ``V`` at once;
  the gradient's squared norm from the batch's Gram matrices (:func:`product_sq_norm`);
  the gather of a uint8 batch with its 1/255 scaling and its masking noise. These are
  serial: they are short, and the one long one (the SGD pass) ran no faster on two threads.
- Without a usable OpenBLAS (a NumPy built on another BLAS), products go to ``np.matmul``
  with NumPy's own threads and nothing runs in parallel in Numba: Numba threads beside a
  multi-threaded OpenBLAS's spinning ones were 10-15x slower (see ``shared/PERF-NOTES.md``).
- Arithmetic is done in the dtype of the output array, with the same operations in the same
  order as the reference, so float64 results agree to a few ulps and float32 results to the
  difference between NumPy's and libm's ``exp``/``log1p`` (about 1 ulp each) and, in
  products, to the order of the sums (within the usual ``k eps |A||B|`` bound).
- Masking noise is the reference's counter-based splitmix64 hash, evaluated inline:
  a unit's mask bit depends only on (seed, epoch, sample index, feature index).

No kernel allocates an array in a training step; the caller allocates workspaces once per
phase, and the few scratch buffers here are made once per thread and reused.
"""

import math
import threading

import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic, overload

from medalpy.config import (
    NOISE_BITS,
    SPLITMIX_GAMMA,
    SPLITMIX_M1,
    SPLITMIX_M2,
    noise_epoch_key,
    noise_threshold,
)
from medalpy.kernels import blas, simd

NAME = "cpu"

# Numba types a bare Python int above 2**63 unpredictably and promotes int64 (op) uint64 to
# float64, so every constant of the hash is a typed np.uint64 global.
_GAMMA = np.uint64(SPLITMIX_GAMMA)
_M1 = np.uint64(SPLITMIX_M1)
_M2 = np.uint64(SPLITMIX_M2)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_SHIFT = np.uint64(64 - NOISE_BITS)

# error_model="numpy": a float division by zero gives inf/nan instead of raising, which
# removes a branch per element and lets LLVM vectorise the loops.
_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_inline = numba.njit(error_model="numpy")

# ----------------------------------------------------------------------------------------
# Arrays: host memory, as in the reference.
# ----------------------------------------------------------------------------------------

from medalpy.kernels.reference import empty, to_device, to_host, zeros  # noqa: E402,F401


# ----------------------------------------------------------------------------------------
# Counter-based noise.
# ----------------------------------------------------------------------------------------


@_inline
def _mix(z):
    """splitmix64 finaliser on a uint64 scalar (wrapping arithmetic)."""
    z = z + _GAMMA
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


# ----------------------------------------------------------------------------------------
# exp and log1p that vectorise. Numba has no vector math library here, so math.exp and
# math.log1p are scalar libm calls: ~6 ns and ~19 ns per float32 element on these machines,
# against ~1 ns for the polynomial forms below once LLVM vectorises them (see
# benchmarks/kernels_micro.py). Each form is accurate to < 2 eps (measured against long
# double: exp 0.83 eps in float32 and 0.78 in float64; log1p 1.8 eps in both).
# ----------------------------------------------------------------------------------------


@intrinsic
def _bits_as_float(typingctx, bits):
    """Reinterpret int32 bits as float32 (int64 as float64): builds 2**k in the exponent."""
    if bits == types.int32:
        ret = types.float32
    elif bits == types.int64:
        ret = types.float64
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(ret))

    return ret(bits), codegen


_F32 = np.float32
# Cody-Waite split of ln 2 (the high part has trailing zero bits, so k * hi is exact); the
# round-to-nearest trick adds and subtracts 1.5 * 2**(mantissa bits).
_LOG2E_32 = _F32(1.4426950408889634)
_LN2HI_32, _LN2LO_32 = _F32(0.693145751953125), _F32(1.4286068203094172e-06)
_ROUND_32, _XMIN_32 = _F32(12582912.0), _F32(-104.0)
_LOG2E_64 = 1.4426950408889634
_LN2HI_64, _LN2LO_64 = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_ROUND_64, _XMIN_64 = 6755399441055744.0, -746.0
# Taylor coefficients 1/k! of exp on |r| <= ln(2)/2, and 1/(2k+1) of the atanh series.
_E32 = tuple(_F32(1.0 / math.factorial(k)) for k in range(8))
_E64 = tuple(1.0 / math.factorial(k) for k in range(14))
_A32 = tuple(_F32(1.0 / (2 * k + 1)) for k in range(8))
_A64 = tuple(1.0 / (2 * k + 1) for k in range(17))


@_inline
def _exp_nonpos_32(x):
    # exp(x) = 2**k exp(r), x = k ln2 + r. Below -104 the result is 0 in float32 anyway; a NaN
    # passes the clamp and propagates through r. 2**k is applied as two halves so that
    # subnormal results (exp(-100) ~ 3.7e-44) come out right.
    x = _XMIN_32 if x < _XMIN_32 else x
    kf = (x * _LOG2E_32 + _ROUND_32) - _ROUND_32
    k = np.int32(kf)
    r = (x - kf * _LN2HI_32) - kf * _LN2LO_32
    p = _E32[7]
    p = p * r + _E32[6]
    p = p * r + _E32[5]
    p = p * r + _E32[4]
    p = p * r + _E32[3]
    p = p * r + _E32[2]
    p = p * r + _E32[1]
    p = p * r + _E32[0]
    k1 = k >> 1
    k2 = k - k1
    s1 = _bits_as_float(np.int32((k1 + 127) << 23))
    s2 = _bits_as_float(np.int32((k2 + 127) << 23))
    return p * s1 * s2


@_inline
def _exp_nonpos_64(x):
    x = _XMIN_64 if x < _XMIN_64 else x
    kf = (x * _LOG2E_64 + _ROUND_64) - _ROUND_64
    k = np.int64(kf)
    r = (x - kf * _LN2HI_64) - kf * _LN2LO_64
    p = _E64[13]
    p = p * r + _E64[12]
    p = p * r + _E64[11]
    p = p * r + _E64[10]
    p = p * r + _E64[9]
    p = p * r + _E64[8]
    p = p * r + _E64[7]
    p = p * r + _E64[6]
    p = p * r + _E64[5]
    p = p * r + _E64[4]
    p = p * r + _E64[3]
    p = p * r + _E64[2]
    p = p * r + _E64[1]
    p = p * r + _E64[0]
    k1 = k >> 1
    k2 = k - k1
    s1 = _bits_as_float(np.int64((k1 + 1023) << 52))
    s2 = _bits_as_float(np.int64((k2 + 1023) << 52))
    return p * s1 * s2


@_inline
def _log1p_unit_32(e):
    # log(1 + e) = 2 atanh(s), s = e / (2 + e) in [0, 1/3] for e in [0, 1]: no range
    # reduction needed, and relative accuracy holds down to tiny e.
    s = e / (_F32(2.0) + e)
    s2 = s * s
    p = _A32[7]
    p = p * s2 + _A32[6]
    p = p * s2 + _A32[5]
    p = p * s2 + _A32[4]
    p = p * s2 + _A32[3]
    p = p * s2 + _A32[2]
    p = p * s2 + _A32[1]
    p = p * s2 + _A32[0]
    return _F32(2.0) * s * p


@_inline
def _log1p_unit_64(e):
    s = e / (2.0 + e)
    s2 = s * s
    p = _A64[16]
    p = p * s2 + _A64[15]
    p = p * s2 + _A64[14]
    p = p * s2 + _A64[13]
    p = p * s2 + _A64[12]
    p = p * s2 + _A64[11]
    p = p * s2 + _A64[10]
    p = p * s2 + _A64[9]
    p = p * s2 + _A64[8]
    p = p * s2 + _A64[7]
    p = p * s2 + _A64[6]
    p = p * s2 + _A64[5]
    p = p * s2 + _A64[4]
    p = p * s2 + _A64[3]
    p = p * s2 + _A64[2]
    p = p * s2 + _A64[1]
    p = p * s2 + _A64[0]
    return 2.0 * s * p


def _exp_nonpos(x):
    """``exp(x)`` for ``x <= 0`` in the dtype of ``x`` (Numba only; dispatches on the type)."""
    raise NotImplementedError("called from Numba-compiled code only")


def _log1p_unit(e):
    """``log(1 + e)`` for ``0 <= e <= 1`` in the dtype of ``e`` (Numba only)."""
    raise NotImplementedError("called from Numba-compiled code only")


@overload(_exp_nonpos)
def _exp_nonpos_typed(x):
    if x == types.float32:
        return lambda x: _exp_nonpos_32(x)
    if x == types.float64:
        return lambda x: _exp_nonpos_64(x)
    return None


@overload(_log1p_unit)
def _log1p_unit_typed(e):
    if e == types.float32:
        return lambda e: _log1p_unit_32(e)
    if e == types.float64:
        return lambda e: _log1p_unit_64(e)
    return None


# ----------------------------------------------------------------------------------------
# Batch formation.
# ----------------------------------------------------------------------------------------


#: Kinds of :func:`_gather_kernel` (the noise types of ``medalpy.corruption``).
CLEAN, MASKING, SALT_PEPPER, GAUSSIAN = 0, 1, 2, 3
_TWO_PI = 2.0 * math.pi
_UNIFORM_SCALE = 2.0 ** -NOISE_BITS


@_inline
def _uniform(h):
    """The reference's ``unit_uniforms``: a float64 in (0, 1) from the top 53 bits."""
    return (float(h >> _SHIFT) + 0.5) * _UNIFORM_SCALE


@_jit
def _gather_kernel(X, rows, scale, kind, epoch_key, threshold, sigma, out):
    # One pass: load, convert to out's dtype, scale, corrupt. ``scale`` is rounded to out's
    # dtype first, so the product is rounded exactly as NumPy's ``X[rows] * dtype(1/255)``.
    # Each kind is the reference's gather_<kind>, unit by unit, from the same hash.
    B, D = out.shape
    s = out.dtype.type(scale)
    zero, one = out.dtype.type(0), out.dtype.type(1)
    for i in range(B):
        r = rows[i]
        if r < 0 or r >= X.shape[0]:
            # No bounds checks in compiled code: without this a bad index reads stray memory.
            raise IndexError("gather: row index out of range [0, N)")
        key = _mix(epoch_key ^ np.uint64(r))
        if kind == MASKING:
            for j in range(D):
                v = out.dtype.type(X[r, j]) * s
                bits = _mix(key ^ np.uint64(j)) >> _SHIFT
                out[i, j] = v if bits >= threshold else v * zero
        elif kind == SALT_PEPPER:
            for j in range(D):
                v = out.dtype.type(X[r, j]) * s
                h = _mix(key ^ np.uint64(j))
                out[i, j] = v if (h >> _SHIFT) >= threshold else out.dtype.type(h & np.uint64(1))
        elif kind == GAUSSIAN:
            for j in range(D):
                v = out.dtype.type(X[r, j]) * s
                h = _mix(key ^ np.uint64(j))
                u1, u2 = _uniform(h), _uniform(_mix(h))
                n = sigma * (math.sqrt(-2.0 * math.log(u1)) * math.cos(_TWO_PI * u2))
                out[i, j] = min(max(v + out.dtype.type(n), zero), one)
        else:
            for j in range(D):
                out[i, j] = out.dtype.type(X[r, j]) * s


_NO_KEY = np.uint64(0)
_keys = {}  # (seed, epoch, rate) -> (epoch key, threshold) as np.uint64: hashing once per epoch


def _noise_key(seed, epoch, rate):
    found = _keys.get((seed, epoch, rate))
    if found is None:
        if len(_keys) > 4096:
            _keys.clear()
        found = _keys[(seed, epoch, rate)] = (noise_epoch_key(seed, epoch),
                                             np.uint64(noise_threshold(rate)))
    return found


def _gather(X, rows, out, kind, epoch_key, threshold, sigma=0.0):
    # Python floats and cached np.uint64 keys: NumPy scalars built per call cost more than
    # the gather of a small batch itself.
    scale = 1.0 / 255.0 if X.dtype.char == "B" else 1.0
    if type(rows) is not np.ndarray or rows.dtype.char != "l" or rows.dtype.itemsize != 8:
        rows = np.asarray(rows).astype(np.int64)
    _gather_kernel(X, rows, scale, kind, epoch_key, threshold, sigma, out)


def gather(X, rows, out):
    """``out = X[rows]``, scaled by 1/255 when ``X`` is uint8.

    Parameters
    ----------
    X : (N, D) uint8 or float array, the dataset (or cached codes).
    rows : (B,) int64, sample indices into ``X``.
    out : (B, D) float array, modified in place.
    """
    _gather(X, rows, out, CLEAN, _NO_KEY, _NO_KEY)


def gather_masked(X, rows, rate, seed, epoch, out):
    """``out = X[rows] * keep``: a gathered batch with masking noise applied.

    Same arguments as :func:`gather`; the mask is ``reference.keep_mask(seed, epoch, rows)``,
    computed inline. Masked units are set to 0 without rescaling the survivors.
    """
    key, threshold = _noise_key(seed, epoch, rate)
    _gather(X, rows, out, MASKING, key, threshold)


def gather_salt_pepper(X, rows, rate, seed, epoch, out):
    """A gathered batch with salt-and-pepper noise (``reference.gather_salt_pepper``)."""
    key, threshold = _noise_key(seed, epoch, rate)
    _gather(X, rows, out, SALT_PEPPER, key, threshold)


def gather_gaussian(X, rows, sigma, seed, epoch, out):
    """A gathered batch with clipped additive Gaussian noise (``reference.gather_gaussian``)."""
    key, _ = _noise_key(seed, epoch, 0.0)
    _gather(X, rows, out, GAUSSIAN, key, _NO_KEY, float(sigma))


# ----------------------------------------------------------------------------------------
# Dense layers.
# ----------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True, parallel=True)
def _gemm_lanes(A, B, C, trans_a, trans_b, lanes):
    # C = op(A) op(B), row-major, split by columns into ``lanes`` blocks (multiples of 16
    # columns, 64 bytes), each one single-threaded BLAS call on its own thread. Leading
    # dimensions come from the row strides, so row slices of workspaces need no copy.
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    size = C.itemsize
    lda, ldb, ldc = A.strides[0] // size, B.strides[0] // size, C.strides[0] // size
    ta = blas.TRANS if trans_a else blas.NO_TRANS
    tb = blas.TRANS if trans_b else blas.NO_TRANS
    width = ((n + lanes - 1) // lanes + 15) // 16 * 16
    a = A.ctypes.data
    for lane in numba.prange(lanes):
        j0 = lane * width
        if j0 < n:
            cols = min(width, n - j0)
            # Column j0 of op(B) starts at row j0 of B when B is transposed.
            b = B.ctypes.data + size * (j0 * ldb if trans_b else j0)
            c = C.ctypes.data + size * j0
            if size == 4:
                blas.sgemm(blas.ROW_MAJOR, ta, tb, m, cols, k, np.float32(1.0), a, lda, b,
                           ldb, np.float32(0.0), c, ldc)
            else:
                blas.dgemm(blas.ROW_MAJOR, ta, tb, m, cols, k, 1.0, a, lda, b, ldb, 0.0, c,
                           ldc)


@numba.njit(error_model="numpy", inline="always")
def _dots_4x3(D, W, C, i, j, M, j_stop, K):
    # C[i:i+4, j:j+3] = D[i:i+4] . W[j:j+3]: 12 dot products along the rows, 8 columns per
    # step, in 12 vector accumulators (with the 3 + 1 loaded vectors, 16 AVX registers; LLVM
    # spills none). K is a multiple of 8. Rows of D from M on, and of W from j_stop on (the
    # end of the caller's range), are clamped to the last one before them: the tile computes
    # and stores that row's results again, bit for bit the same, instead of branching
    # (conditional stores here made the kernel 30% slower).
    i1, i2, i3 = min(i + 1, M - 1), min(i + 2, M - 1), min(i + 3, M - 1)
    j1, j2 = min(j + 1, j_stop - 1), min(j + 2, j_stop - 1)
    drow0, drow1, drow2, drow3 = D[i], D[i1], D[i2], D[i3]
    wrow0, wrow1, wrow2 = W[j], W[j1], W[j2]
    a0, a1, a2 = simd.zeros(), simd.zeros(), simd.zeros()
    b0, b1, b2 = simd.zeros(), simd.zeros(), simd.zeros()
    c0, c1, c2 = simd.zeros(), simd.zeros(), simd.zeros()
    e0, e1, e2 = simd.zeros(), simd.zeros(), simd.zeros()
    for k in range(0, K, simd.WIDTH):
        w0, w1, w2 = simd.load(wrow0, k), simd.load(wrow1, k), simd.load(wrow2, k)
        d = simd.load(drow0, k)
        a0, a1, a2 = simd.muladd(d, w0, a0), simd.muladd(d, w1, a1), simd.muladd(d, w2, a2)
        d = simd.load(drow1, k)
        b0, b1, b2 = simd.muladd(d, w0, b0), simd.muladd(d, w1, b1), simd.muladd(d, w2, b2)
        d = simd.load(drow2, k)
        c0, c1, c2 = simd.muladd(d, w0, c0), simd.muladd(d, w1, c1), simd.muladd(d, w2, c2)
        d = simd.load(drow3, k)
        e0, e1, e2 = simd.muladd(d, w0, e0), simd.muladd(d, w1, e1), simd.muladd(d, w2, e2)
    C[i, j], C[i, j1], C[i, j2] = simd.hsum(a0), simd.hsum(a1), simd.hsum(a2)
    C[i1, j], C[i1, j1], C[i1, j2] = simd.hsum(b0), simd.hsum(b1), simd.hsum(b2)
    C[i2, j], C[i2, j1], C[i2, j2] = simd.hsum(c0), simd.hsum(c1), simd.hsum(c2)
    C[i3, j], C[i3, j1], C[i3, j2] = simd.hsum(e0), simd.hsum(e1), simd.hsum(e2)


@_jit
def _matmul_nt_f32_columns(D, W, C, j_start, j_stop):
    # C[:, j_start:j_stop] = D @ W[j_start:j_stop].T, float32: W's rows (C's columns) in
    # tiles of 3, and for each all of D's rows in tiles of 4. W's rows are read whole and in
    # order (streamed from memory once, then from L1 for D's other row tiles); OpenBLAS first
    # packs W transposed, which made this product slower than the forward one.
    M, K = D.shape
    for j in range(j_start, j_stop, 3):
        for i in range(0, M, 4):
            _dots_4x3(D, W, C, i, j, M, j_stop, K)


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _matmul_nt_f32_lanes(D, W, C, lanes):
    # C = D @ W.T, each lane a range of C's columns (a multiple of 3 wide).
    N = W.shape[0]
    per_lane = ((N + lanes - 1) // lanes + 2) // 3 * 3
    for lane in numba.prange(lanes):
        _matmul_nt_f32_columns(D, W, C, lane * per_lane, min(N, (lane + 1) * per_lane))


def _rows_contiguous(a):
    """Row-major with unit column stride (a row slice of a C array is), non-empty."""
    return a.strides[1] == a.itemsize and a.strides[0] >= a.shape[1] * a.itemsize > 0


def _check_shapes(name, A, B, out, trans_a, trans_b):
    # The compiled paths index by these shapes without bounds checks: a mismatch must stop
    # here, as np.matmul would stop it, not read or write past an array.
    n, k = (A.shape[1], A.shape[0]) if trans_a else A.shape
    k_b, m = (B.shape[1], B.shape[0]) if trans_b else B.shape
    if k != k_b or out.shape != (n, m):
        a = f"{A.shape}{'^T' if trans_a else ''}"
        b = f"{B.shape}{'^T' if trans_b else ''}"
        raise ValueError(f"{name}: cannot multiply {a} by {b} into {out.shape}")


def _gemm(A, B, out, trans_a, trans_b):
    # Narrow outputs (a 10-class classifier's) are not worth a second thread: one call, on
    # the caller's thread.
    if (_LANES_READY and out.shape[1] >= _LANES_MIN_COLUMNS and out.dtype == A.dtype == B.dtype
            and out.dtype in _GEMM_DTYPES and A.size and _rows_contiguous(A)
            and _rows_contiguous(B) and _rows_contiguous(out)):
        _gemm_lanes(A, B, out, trans_a, trans_b, _LANES)
    else:
        np.matmul(A.T if trans_a else A, B.T if trans_b else B, out=out)


def use_threads(n):
    """Run the cpu backend's products on ``n`` lanes (Numba threads), each calling a
    single-threaded OpenBLAS. Called on import with Numba's thread count (the cores, or
    ``NUMBA_NUM_THREADS``). Sets NumPy's OpenBLAS to one thread for the whole process: a
    multi-threaded BLAS inside each lane would oversubscribe the cores."""
    global _LANES, _LANES_READY
    numba.set_num_threads(int(n))
    _LANES, _LANES_READY = int(n), blas.AVAILABLE
    if blas.AVAILABLE:
        blas.set_threads(1)


_GEMM_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_LANES_MIN_COLUMNS = 64
# _LANES: use_threads's count, kept in a global (numba.get_num_threads() took 1.4% of the
# samples in a py-spy profile of medalpy train). _LANES_READY: OpenBLAS is single-threaded,
# so parallel kernels may run; every parallel path checks it first (Numba threads beside a
# multi-threaded OpenBLAS's spinning ones were 10-15x slower).
_LANES, _LANES_READY = 1, False
use_threads(numba.get_num_threads())


def matmul(A, B, out):
    """``out = A @ B``: the forward product, (n, k) @ (k, m) -> (n, m)."""
    _check_shapes("matmul", A, B, out, False, False)
    _gemm(A, B, out, False, False)


def matmul_tn(A, B, out):
    """``out = A.T @ B``: the weight gradient ``H_{l-1}^T delta_l``, (n, k)^T (n, m) -> (k, m)."""
    _check_shapes("matmul_tn", A, B, out, True, False)
    _gemm(A, B, out, True, False)


#: Most rows of ``A`` (the batch) for which :func:`matmul_nt` computes float32 products as
#: dot products along the rows (:func:`_matmul_nt_f32_lanes`) instead of calling OpenBLAS.
#: For a 1000 x 1000 ``B`` from memory (``benchmarks/cpu_choices.py``): 0.37 ms against
#: OpenBLAS's 0.58 at 10 rows, 0.48 / 0.68 at 20, 0.69 / 0.80 at 32, a tie at 48 and 64; at
#: 128 rows 4.2 ms against OpenBLAS's 3.3.
NT_DOTS_MAX_ROWS = 32


def matmul_nt(A, B, out):
    """``out = A @ B.T``: the back-propagated error ``delta_l W_l^T``, (n, m) (k, m)^T -> (n, k)."""
    _check_shapes("matmul_nt", A, B, out, False, True)
    if (A.dtype == B.dtype == out.dtype == np.float32 and 0 < A.shape[0] <= NT_DOTS_MAX_ROWS
            and A.shape[1] % simd.WIDTH == 0 and _rows_contiguous(A) and _rows_contiguous(B)
            and _rows_contiguous(out)):
        if _LANES_READY:
            _matmul_nt_f32_lanes(A, B, out, _LANES)
        else:  # no parallel region beside a BLAS that runs its own threads
            _matmul_nt_f32_columns(A, B, out, 0, B.shape[0])
        return
    _gemm(A, B, out, False, True)


@_inline
def _sigmoid(z, one):
    # The reference's two-branch form, 1 / (1 + e) or e / (1 + e) with e = exp(-|z|) <= 1,
    # as one division: nothing overflows, and the roundings are the reference's.
    e = _exp_nonpos(-abs(z))
    return (one if z >= 0 else e) / (one + e)


@_jit
def _bias_sigmoid_kernel(Z, b, out):
    one = out.dtype.type(1)
    n, d = Z.shape
    for i in range(n):
        for j in range(d):
            z = Z[i, j] + b[j]
            Z[i, j] = z
            out[i, j] = _sigmoid(z, one)


@_jit
def _bias_sigmoid_inplace_kernel(Z, b):
    # The same as _bias_sigmoid_kernel with out = Z, written with one array: given two, LLVM
    # checks at run time whether they overlap and, when they do, runs its scalar loop
    # (0.16-0.20 ms against 0.03 ms for 20 x 1000 float32: benchmarks/cpu_choices.py).
    one = Z.dtype.type(1)
    n, d = Z.shape
    for i in range(n):
        for j in range(d):
            Z[i, j] = _sigmoid(Z[i, j] + b[j], one)


def add_bias_sigmoid(Z, b, out):
    """Add the bias and squash: ``Z += b``; ``out = sigma(Z)``.

    Parameters
    ----------
    Z : (B, D) float, pre-activation without bias; modified in place to hold ``Z + b``.
    b : (D,) float.
    out : (B, D) float, modified in place; may be ``Z`` itself.
    """
    if out is Z:
        _bias_sigmoid_inplace_kernel(Z, b)
    else:
        _bias_sigmoid_kernel(Z, b, out)


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def _sum_f64(a):
    # The only reassociated loop: float64 accumulation of one row of loss terms, so that
    # LLVM may keep several partial sums and vectorise it.
    s = 0.0
    for i in range(a.size):
        s += np.float64(a[i])
    return s


@_jit
def _sigmoid_ce_kernel(Z, T, delta, terms):
    # One pass per row computes the loss terms and the delta (vectorised: a running float64
    # sum inside that loop would serialise it); the row's terms, parked in the scratch row
    # ``terms``, are then summed in float64. ``delta`` may alias ``Z`` or ``T``.
    one = delta.dtype.type(1)
    zero = delta.dtype.type(0)
    n, d = Z.shape
    Bf = delta.dtype.type(n)
    row = terms[:d]
    loss = 0.0
    for i in range(n):
        for j in range(d):
            z = Z[i, j]
            t = T[i, j]
            e = _exp_nonpos(-abs(z))
            # softplus(z) - t z in the array's dtype, as the reference forms it.
            row[j] = ((z if z > zero else zero) + _log1p_unit(e)) - t * z
            y = (one if z >= 0 else e) / (one + e)
            delta[i, j] = (y - t) / Bf
        loss += _sum_f64(row)
    return loss / n


_scratch = threading.local()


def _scratch_array(name, size, dtype):
    """A per-thread scratch vector of at least ``size`` elements, by name, allocated once
    (and again only to grow) and reused."""
    name = f"{name}_{np.dtype(dtype).char}"
    buf = getattr(_scratch, name, None)
    if buf is None or buf.size < size:
        buf = np.empty(max(size, 1024), dtype)
        setattr(_scratch, name, buf)
    return buf


def sigmoid_cross_entropy(Z, T, delta):
    """Cross-entropy of sigmoid outputs and its gradient, from pre-activations, in one pass.

    Parameters
    ----------
    Z : (B, D) float, output pre-activations (bias included).
    T : (B, D) float in [0, 1], targets.
    delta : (B, D) float, modified in place: ``(sigma(Z) - T) / B``.

    Returns
    -------
    float, the batch mean of CE summed over output units.
    """
    return float(_sigmoid_ce_kernel(Z, T, delta, _scratch_array("row", Z.shape[1], delta.dtype)))


@_jit
def _softmax_ce_kernel(Z, labels, delta):
    n, c = Z.shape
    Bf = delta.dtype.type(n)
    one = delta.dtype.type(1)
    loss = 0.0
    for i in range(n):
        m = Z[i, 0]
        for k in range(1, c):
            if Z[i, k] > m:
                m = Z[i, k]
        s = delta.dtype.type(0)
        for k in range(c):
            s += _exp_nonpos(Z[i, k] - m)
        log_norm = math.log(s)
        y = labels[i]
        if y < 0 or y >= c:
            raise IndexError("softmax_cross_entropy: label out of range [0, C)")
        loss += log_norm - (Z[i, y] - m)
        for k in range(c):
            # exp(shifted - log_norm) as the reference, not exp(shifted) / s: p - 1 at the
            # true class cancels, so the two roundings would differ visibly there.
            p = _exp_nonpos((Z[i, k] - m) - log_norm)
            if k == y:
                p -= one
            delta[i, k] = p / Bf
    return loss / n


def softmax_cross_entropy(Z, labels, delta):
    """Negative log-likelihood of a softmax classifier and its gradient, in one pass.

    Parameters
    ----------
    Z : (B, C) float, logits.
    labels : (B,) integer class indices in [0, C).
    delta : (B, C) float, modified in place: ``(softmax(Z) - onehot(labels)) / B``.

    Returns
    -------
    float, the batch-mean NLL.
    """
    return float(_softmax_ce_kernel(Z, labels, delta))


@_jit
def _argmax_rows_kernel(Z, out):
    n, c = Z.shape
    for i in range(n):
        best = 0
        m = Z[i, 0]
        if m == m:
            for k in range(1, c):
                v = Z[i, k]
                if v != v:  # np.argmax returns the first NaN
                    best = k
                    break
                if v > m:
                    m = v
                    best = k
        out[i] = best


def softmax_predict(Z, out):
    """``out[n] = argmax_c Z[n, c]``: predicted classes, ``out`` (B,) int64 modified in place."""
    _argmax_rows_kernel(Z, out)


@_jit
def _sigmoid_backward_kernel(dH, H, out):
    one = out.dtype.type(1)
    n, d = H.shape
    for i in range(n):
        for j in range(d):
            h = H[i, j]
            out[i, j] = dH[i, j] * h * (one - h)


@_jit
def _sigmoid_backward_inplace_kernel(dH, H):
    # out = dH with one array, for the reason given at _bias_sigmoid_inplace_kernel.
    one = dH.dtype.type(1)
    n, d = H.shape
    for i in range(n):
        for j in range(d):
            h = H[i, j]
            dH[i, j] = dH[i, j] * h * (one - h)


def sigmoid_backward(dH, H, out):
    """Through the sigmoid: ``out = dH * H * (1 - H)`` (``out`` may be ``dH``)."""
    if out is dH:
        _sigmoid_backward_inplace_kernel(dH, H)
    else:
        _sigmoid_backward_kernel(dH, H, out)


@_jit
def _column_sum_kernel(delta, out):
    # Row after row, as NumPy reduces axis 0 of a C-ordered array: the same roundings.
    n, d = delta.shape
    for j in range(d):
        out[j] = delta[0, j]
    for i in range(1, n):
        for j in range(d):
            out[j] += delta[i, j]


def column_sum(delta, out):
    """The bias gradient ``db = sum_n delta[n, :]``; ``out`` (D,) modified in place."""
    if delta.shape[0] == 0:
        out[...] = 0
        return
    _column_sum_kernel(delta, out)


# ----------------------------------------------------------------------------------------
# Optimiser. Both kernels see parameters as flat 1-D views (weights and biases alike), so
# each dtype compiles once.
# ----------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def _sum_of_squares_kernel(G):
    # Squares of float32 are exact in float64; reassociation only changes the summation
    # order (lets LLVM vectorise), which float64 accumulation makes harmless.
    g = G.reshape(-1)
    s = 0.0
    for i in range(g.size):
        x = np.float64(g[i])
        s += x * x
    return s


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _product_sq_norm_kernel(A, D):
    # sum_ij (a_i . a_j)(d_i . d_j) over the rows of A and D, each pair once (the Grams are
    # symmetric); float64 dot products, which reassociation lets LLVM vectorise.
    n = A.shape[0]
    s = 0.0
    for i in range(n):
        for j in range(i + 1):
            ga = 0.0
            for c in range(A.shape[1]):
                ga += np.float64(A[i, c]) * np.float64(A[j, c])
            gd = 0.0
            for c in range(D.shape[1]):
                gd += np.float64(D[i, c]) * np.float64(D[j, c])
            s += ga * gd if i == j else 2.0 * (ga * gd)
    return s


def product_sq_norm(A, delta):
    """``||A.T @ delta||_F^2`` from the batch's Gram matrices (see the reference), accumulated
    in float64 without storing them: n (n + 1) / 2 pairs of dot products."""
    if A.shape[0] != delta.shape[0]:
        raise ValueError(f"product_sq_norm: A has {A.shape[0]} rows but delta {delta.shape[0]}")
    return float(_product_sq_norm_kernel(A, delta))


def _contiguous(*arrays):
    for a in arrays:
        if not a.flags.c_contiguous:
            return False
    return True


def sum_of_squares(G):
    """``sum(G ** 2)`` as a float, accumulated in float64 (for gradient normalisation)."""
    if not G.flags.c_contiguous:
        G = np.ascontiguousarray(G)
    return float(_sum_of_squares_kernel(G))


@_jit
def _sgd_kernel(P, G, V, lr, momentum, decay, scale):
    # One pass over P, G, V, with the reference's operations in the reference's order. The
    # scalars arrive as Python floats (cheap to dispatch) and are rounded to the arrays'
    # dtype here, as NumPy rounds a Python scalar operand. Serial: split over two threads
    # it ran no faster here (docs/performance.md).
    t = P.dtype.type
    lr, momentum, decay, scale = t(lr), t(momentum), t(decay), t(scale)
    p, g, v = P.reshape(-1), G.reshape(-1), V.reshape(-1)
    for i in range(p.size):
        vi = momentum * v[i] + lr * (scale * g[i] + decay * p[i])
        v[i] = vi
        p[i] = p[i] - vi


def sgd_update(P, G, V, lr, momentum, decay, scale):
    """MEDAL's SGD step with momentum and weight decay, in place on ``P`` and ``V``.

        V = momentum * V + lr * (scale * G + decay * P)
        P = P - V

    Parameters
    ----------
    P : float array, the parameter (weights or bias); modified in place.
    G : float array of P's shape, its gradient.
    V : float array of P's shape, the velocity; modified in place.
    lr, momentum, decay, scale : float, as in :func:`medalpy.kernels.reference.sgd_update`.
    """
    if _contiguous(P, G, V) and P.dtype == G.dtype == V.dtype:
        _sgd_kernel(P, G, V, float(lr), float(momentum), float(decay), float(scale))
        return
    # A strided parameter cannot be walked as one flat run: do it in NumPy.
    t = P.dtype.type
    V *= t(momentum)
    V += t(lr) * (t(scale) * G + t(decay) * P)
    P -= V


#: Rows of the weight gradient computed per block by :func:`sgd_update_product`: a block of
#: (32, 1000) float32 is 128 KB, a quarter of a core's 512 KB L2 cache here. 16 and 64 timed
#: the same within the noise (one-off timings of a training step).
PRODUCT_BLOCK_ROWS = 32


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _sgd_product_kernel(A, delta, P, V, lr, momentum, decay, scale, scratch, block, lanes):
    # G = A^T delta, PRODUCT_BLOCK_ROWS rows at a time, each block written by a
    # single-threaded BLAS call into this lane's scratch and applied to P and V at once:
    # P and V are read and written once, and G never leaves the cache. Lanes take
    # contiguous row ranges of P.
    n, k = A.shape
    m = delta.shape[1]
    t = P.dtype.type
    lr, momentum, decay, scale = t(lr), t(momentum), t(decay), t(scale)
    size = P.itemsize
    lda, ldd = A.strides[0] // size, delta.strides[0] // size
    per_lane = (k + lanes - 1) // lanes
    for lane in numba.prange(lanes):
        g = scratch[lane]
        stop = min(k, (lane + 1) * per_lane)
        for r0 in range(lane * per_lane, stop, block):
            rows = min(block, stop - r0)
            a = A.ctypes.data + size * r0  # column r0 of A is row r0 of A^T
            if size == 4:
                blas.sgemm(blas.ROW_MAJOR, blas.TRANS, blas.NO_TRANS, rows, m, n,
                           np.float32(1.0), a, lda, delta.ctypes.data, ldd, np.float32(0.0),
                           g.ctypes.data, m)
            else:
                blas.dgemm(blas.ROW_MAJOR, blas.TRANS, blas.NO_TRANS, rows, m, n, 1.0, a, lda,
                           delta.ctypes.data, ldd, 0.0, g.ctypes.data, m)
            for i in range(rows):
                p = P[r0 + i]
                v = V[r0 + i]
                for j in range(m):
                    vj = momentum * v[j] + lr * (scale * g[i * m + j] + decay * p[j])
                    v[j] = vj
                    p[j] = p[j] - vj


def sgd_update_product(A, delta, P, V, lr, momentum, decay, scale):
    """:func:`sgd_update` with the weight gradient ``G = A.T @ delta`` (see the reference).

    With NumPy's OpenBLAS callable (:mod:`medalpy.kernels.blas`), ``G`` is computed
    :data:`PRODUCT_BLOCK_ROWS` rows at a time on each lane and each block applied at once:
    the weight-sized gradient is never written to memory, and the pass over ``P`` and ``V``
    (memory-bound) overlaps the products. Otherwise ``matmul_tn`` into a scratch matrix,
    then :func:`sgd_update`.
    """
    _check_shapes("sgd_update_product", A, delta, P, True, False)
    if V.shape != P.shape:
        raise ValueError(f"sgd_update_product: velocity {V.shape} for weights {P.shape}")
    if (_LANES_READY and A.dtype == delta.dtype == P.dtype == V.dtype
            and P.dtype in _GEMM_DTYPES and A.size and delta.size
            and _rows_contiguous(A) and _rows_contiguous(delta)
            and P.flags.c_contiguous and V.flags.c_contiguous):
        lanes, size = _LANES, PRODUCT_BLOCK_ROWS * P.shape[1]
        scratch = _scratch_array("blocks", lanes * size, P.dtype)[:lanes * size]
        _sgd_product_kernel(A, delta, P, V, float(lr), float(momentum), float(decay),
                            float(scale), scratch.reshape(lanes, size), PRODUCT_BLOCK_ROWS,
                            lanes)
        return
    G = _scratch_array("gradient", P.size, P.dtype)[:P.size].reshape(P.shape)
    matmul_tn(A, delta, G)
    sgd_update(P, G, V, lr, momentum, decay, scale)
