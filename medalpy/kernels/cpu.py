"""The ``cpu`` backend: BLAS for matrix products, fused Numba passes for the rest.

Every public function has the name, signature and semantics of its twin in
:mod:`medalpy.kernels.reference` (the oracle; read it for the equations). What differs is how
the work is done:

- Matrix products (:mod:`medalpy.kernels.lanes`) call NumPy's own OpenBLAS from Numba on
  *lanes* (one single-threaded BLAS call per Numba thread, on a block of the output's
  columns), small float32 back-propagated errors are dot products along rows with
  explicit 8-lane vectors, and on AVX-512 CPUs float32 products of 10-256 batch rows are
  register-tiled kernels of medalpy's own (:mod:`medalpy.kernels.tiles`); ``exp`` and
  ``log1p`` are polynomial forms that vectorise (:mod:`medalpy.kernels.vecmath`).
- The weight gradient of a layer is never stored whole in a training step:
  :func:`sgd_update_product` forms it a block of rows at a time into a small scratch on
  each lane and applies the SGD step to that block at once, so the weights and velocities
  are read and written once and the gradient is used right after it is formed (about a
  third less time than storing it first: ``benchmarks/cpu_choices.py``, docs/performance.md;
  in the AVX-512 tiles from 32 batch rows each tile of it goes from registers into the step).
- Each element-wise step is one pass over memory in a module-level ``@njit(cache=True)``
  function: bias + sigmoid; cross-entropy loss and output delta together, from the
  pre-activations; softmax + NLL + delta; the hidden delta through the sigmoid; the column
  sum; the whole SGD step (momentum, decay, gradient scale) over ``P``, ``G``, ``V`` at once;
  the gradient's squared norm from the batch's Gram matrices (:func:`product_sq_norm`);
  the gather of a uint8 batch with its 1/255 scaling and its masking noise. These are
  serial: they are short, and the one long one (the SGD pass) ran no faster on two threads.
  The exceptions are bias + sigmoid, the sigmoid cross-entropy and the gathers from
  ``ELEMENTWISE_LANES_MIN_ROWS`` batch rows on, whose rows are split over the lanes.
- Without a usable OpenBLAS (a NumPy built on another BLAS), products go to ``np.matmul``
  with NumPy's own threads and nothing runs in parallel in Numba: Numba threads beside a
  multi-threaded OpenBLAS's spinning ones slow both down many times (docs/performance.md).
- Arithmetic is done in the dtype of the output array, with the same operations in the same
  order as the reference, so float64 results agree to a few ulps and float32 results to the
  difference between NumPy's and libm's ``exp``/``log1p`` (about 1 ulp each) and, in
  products, to the order of the sums (within the usual ``k eps |A||B|`` bound). Inside
  :func:`session` denormals are flushed to zero (:mod:`medalpy.kernels.denormals`): a value
  the reference leaves denormal is 0 here.
- Masking noise is the reference's counter-based splitmix64 hash, evaluated inline:
  a unit's mask bit depends only on (seed, epoch, sample index, feature index).

No kernel allocates an array in a training step; the caller allocates workspaces once per
phase, and the few scratch buffers here are made once per thread and reused.
"""

import math

import numba
import numpy as np

from medalpy import config
from medalpy.config import (
    NOISE_BITS,
    noise_epoch_key,
    noise_threshold,
)
from medalpy.kernels import blas, denormals, lanes, tiles
from medalpy.kernels.lanes import matmul, matmul_nt, matmul_tn, use_threads  # noqa: F401
from medalpy.kernels.vecmath import exp_nonpos, log1p_unit

NAME = "cpu"

# The hash's constants, typed for Numba (config.py says why).
_GAMMA, _M1, _M2 = config.U64_GAMMA, config.U64_M1, config.U64_M2
_S30, _S27, _S31, _SHIFT = config.U64_S30, config.U64_S27, config.U64_S31, config.U64_SHIFT

# error_model="numpy": a float division by zero gives inf/nan instead of raising, which
# removes a branch per element and lets LLVM vectorise the loops.
_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_inline = numba.njit(error_model="numpy")

# ----------------------------------------------------------------------------------------
# Arrays: host memory, as in the reference.
# ----------------------------------------------------------------------------------------

from medalpy.kernels.reference import empty, to_device, to_host, zeros  # noqa: E402,F401


def session():
    """A context for a block of computations: products on lanes, NumPy's OpenBLAS
    single-threaded, Numba's and OpenBLAS's thread counts restored after
    (:func:`medalpy.kernels.lanes.threads`)."""
    return lanes.threads()


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
    if lanes.READY and rows.shape[0] >= config.ELEMENTWISE_LANES_MIN_ROWS:
        lanes.GOVERNOR.run(
            ("gather", kind, X.dtype.char, X.shape[1], rows.shape[0]),
            lambda: _gather_kernel(X, rows, scale, kind, epoch_key, threshold, sigma, out),
            lambda n: _gather_lanes(X, rows, scale, kind, epoch_key, threshold, sigma, out, n))
    else:
        _gather_kernel(X, rows, scale, kind, epoch_key, threshold, sigma, out)


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _gather_lanes(X, rows, scale, kind, epoch_key, threshold, sigma, out, lanes):
    # Rows shared out over ``lanes`` threads: each row's values and noise depend on the row
    # alone, so the split changes no bit. The indices are checked here first, outside the
    # threads, with _gather_kernel's message.
    n = rows.shape[0]
    for i in range(n):
        if rows[i] < 0 or rows[i] >= X.shape[0]:
            raise IndexError("gather: row index out of range [0, N)")
    for lane in numba.prange(lanes):
        before = denormals.flush()  # each lane's thread, as the session's (denormals.py)
        first, stop = lane * n // lanes, (lane + 1) * n // lanes
        _gather_kernel(X, rows[first:stop], scale, kind, epoch_key, threshold, sigma,
                       out[first:stop])
        denormals.restore(before)


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


@_inline
def _sigmoid(z, one):
    # The reference's two-branch form, 1 / (1 + e) or e / (1 + e) with e = exp(-|z|) <= 1,
    # as one division: nothing overflows, and the roundings are the reference's.
    e = exp_nonpos(-abs(z))
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
    # (several times slower: benchmarks/cpu_choices.py times both).
    one = Z.dtype.type(1)
    n, d = Z.shape
    for i in range(n):
        for j in range(d):
            Z[i, j] = _sigmoid(Z[i, j] + b[j], one)


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _bias_sigmoid_inplace_lanes(Z, b, lanes):
    # Rows shared out over ``lanes`` threads; element by element, so the split changes no bit.
    n = Z.shape[0]
    for lane in numba.prange(lanes):
        before = denormals.flush()  # each lane's thread, as the session's (denormals.py)
        _bias_sigmoid_inplace_kernel(Z[lane * n // lanes:(lane + 1) * n // lanes], b)
        denormals.restore(before)


def add_bias_sigmoid(Z, b, out):
    """Add the bias and squash: ``Z += b``; ``out = sigma(Z)``.

    Parameters
    ----------
    Z : (B, D) float, pre-activation without bias; modified in place to hold ``Z + b``.
    b : (D,) float.
    out : (B, D) float, modified in place; may be ``Z`` itself.
    """
    if out is Z:
        if lanes.READY and Z.shape[0] >= config.ELEMENTWISE_LANES_MIN_ROWS:
            lanes.GOVERNOR.run(("bias_sigmoid", Z.shape),
                               lambda: _bias_sigmoid_inplace_kernel(Z, b),
                               lambda n: _bias_sigmoid_inplace_lanes(Z, b, n))
        else:
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
def _sigmoid_ce_rows(Z, T, delta, terms, sums, first, stop, n):
    # Rows ``first`` to ``stop - 1`` of a batch of ``n``: one pass per row computes the loss
    # terms and the delta (vectorised: a running float64 sum inside that loop would
    # serialise it); the row's terms, parked in the scratch row ``terms``, are then summed
    # in float64 into sums[i]. ``delta`` may alias ``Z`` or ``T``.
    one = delta.dtype.type(1)
    zero = delta.dtype.type(0)
    d = Z.shape[1]
    Bf = delta.dtype.type(n)
    row = terms[:d]
    for i in range(first, stop):
        for j in range(d):
            z = Z[i, j]
            t = T[i, j]
            e = exp_nonpos(-abs(z))
            # softplus(z) - t z in the array's dtype, as the reference forms it.
            row[j] = ((z if z > zero else zero) + log1p_unit(e)) - t * z
            y = (one if z >= 0 else e) / (one + e)
            delta[i, j] = (y - t) / Bf
        sums[i] = _sum_f64(row)


@_jit
def _sigmoid_ce_kernel(Z, T, delta, terms, sums):
    n = Z.shape[0]
    _sigmoid_ce_rows(Z, T, delta, terms, sums, 0, n, n)
    return _mean_in_order(sums[:n])


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _sigmoid_ce_lanes(Z, T, delta, terms, sums, lanes):
    # Rows shared out over ``lanes`` threads, a scratch row each; the rows' sums are added
    # in row order after, so the split changes no bit.
    n = Z.shape[0]
    for lane in numba.prange(lanes):
        before = denormals.flush()  # each lane's thread, as the session's (denormals.py)
        _sigmoid_ce_rows(Z, T, delta, terms[lane], sums, lane * n // lanes,
                         (lane + 1) * n // lanes, n)
        denormals.restore(before)
    return _mean_in_order(sums[:n])


@_jit
def _mean_in_order(sums):
    # The batch mean of the rows' float64 sums, added one after another in row order.
    loss = 0.0
    for i in range(sums.size):
        loss += sums[i]
    return loss / sums.size


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
    n, d = Z.shape
    sums = lanes.scratch("row_sums", n, np.float64)
    terms = lanes.scratch("rows", lanes.LANES * d, delta.dtype)[:lanes.LANES * d]
    terms = terms.reshape(lanes.LANES, d)  # a scratch row per lane
    if lanes.READY and n >= config.ELEMENTWISE_LANES_MIN_ROWS:
        return float(lanes.GOVERNOR.run(
            ("sigmoid_ce", Z.shape), lambda: _sigmoid_ce_kernel(Z, T, delta, terms[0], sums),
            lambda k: _sigmoid_ce_lanes(Z, T, delta, terms, sums, k)))
    return float(_sigmoid_ce_kernel(Z, T, delta, terms[0], sums))


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
            s += exp_nonpos(Z[i, k] - m)
        log_norm = math.log(s)
        y = labels[i]
        if y < 0 or y >= c:
            raise IndexError("softmax_cross_entropy: label out of range [0, C)")
        loss += log_norm - (Z[i, y] - m)
        for k in range(c):
            # exp(shifted - log_norm) as the reference, not exp(shifted) / s: p - 1 at the
            # true class cancels, so the two roundings would differ visibly there.
            p = exp_nonpos((Z[i, k] - m) - log_norm)
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


@_jit
def _sgd_product_blocks(A, delta, P, V, lr, momentum, decay, scale, g, block, first, stop):
    # G = A^T delta for row blocks ``first`` to ``stop - 1`` of P (``block`` rows each, the
    # last one shorter), each written by a single-threaded BLAS call into the scratch ``g``
    # and applied to P and V at once: P and V are read and written once, and G never leaves
    # the cache. Block boundaries do not depend on the lanes, so neither does round-off.
    n, k = A.shape
    m = delta.shape[1]
    t = P.dtype.type
    lr, momentum, decay, scale = t(lr), t(momentum), t(decay), t(scale)
    size = P.itemsize
    lda, ldd = A.strides[0] // size, delta.strides[0] // size
    for b in range(first, stop):
        r0 = b * block
        rows = min(block, k - r0)
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


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _sgd_product_kernel(A, delta, P, V, lr, momentum, decay, scale, scratch, block, lanes):
    # The row blocks shared out over ``lanes`` threads, consecutive blocks each.
    blocks = (A.shape[1] + block - 1) // block
    for lane in numba.prange(lanes):
        before = denormals.flush()  # each lane's thread, as the session's (denormals.py)
        _sgd_product_blocks(A, delta, P, V, lr, momentum, decay, scale, scratch[lane], block,
                            lane * blocks // lanes, (lane + 1) * blocks // lanes)
        denormals.restore(before)


def product_block_rows(batch):
    """Rows of ``G`` per block for a batch of ``batch`` rows
    (:data:`medalpy.config.PRODUCT_BLOCK_ROWS`, ``PRODUCT_BLOCK_ROWS_LARGE_BATCH``): a
    function of the batch alone, never of the lanes."""
    if batch <= config.PRODUCT_BLOCK_ROWS:
        return config.PRODUCT_BLOCK_ROWS
    return config.PRODUCT_BLOCK_ROWS_LARGE_BATCH


def sgd_update_product(A, delta, P, V, lr, momentum, decay, scale):
    """:func:`sgd_update` with the weight gradient ``G = A.T @ delta`` (see the reference).

    With NumPy's OpenBLAS callable (:mod:`medalpy.kernels.blas`), ``G`` is computed
    :func:`product_block_rows` rows at a time on each lane and each block applied at once:
    the weight-sized gradient is never written to memory, and the pass over ``P`` and ``V``
    (memory-bound) overlaps the products. Large float32 batches on AVX-512 CPUs go to
    :func:`medalpy.kernels.tiles.sgd_update_product` instead (8 rows of ``G`` at a time, in
    registers). Otherwise ``matmul_tn`` into a scratch matrix, then :func:`sgd_update`.
    """
    lanes.check_shapes("sgd_update_product", A, delta, P, True, False)
    if V.shape != P.shape:
        raise ValueError(f"sgd_update_product: velocity {V.shape} for weights {P.shape}")
    if (P.shape[0] >= tiles.TILE_ROWS and lanes.tiled(A, delta, P, V)
            and P.flags.c_contiguous and V.flags.c_contiguous):
        packed = lanes.scratch_rows("tiled_update_panels", tiles.panels(P.shape[1]),
                                    A.shape[0] * tiles.PANEL)
        g = lanes.scratch_rows("tiled_update_rows", lanes.LANES,
                               tiles.update_scratch_size(A.shape[0], P.shape[1]))
        args = (A, delta, P, V, lr, momentum, decay, scale, packed, g)
        lanes.GOVERNOR.run(("tiled_update", A.shape, delta.shape),
                           lambda: tiles.sgd_update_product(*args, 1),
                           lambda n: tiles.sgd_update_product(*args, n))
        return
    if (lanes.READY and A.dtype == delta.dtype == P.dtype == V.dtype
            and P.dtype in lanes.GEMM_DTYPES and A.size and delta.size
            and lanes.rows_contiguous(A) and lanes.rows_contiguous(delta)
            and P.flags.c_contiguous and V.flags.c_contiguous):
        block = product_block_rows(A.shape[0])
        blocks = -(-P.shape[0] // block)
        size = block * P.shape[1]
        scratch = lanes.scratch("blocks", lanes.LANES * size, P.dtype)[:lanes.LANES * size]
        scratch = scratch.reshape(lanes.LANES, size)
        args = (A, delta, P, V, float(lr), float(momentum), float(decay), float(scale))
        lanes.GOVERNOR.run(("sgd_product", A.shape, delta.shape),
                           lambda: _sgd_product_blocks(*args, scratch[0], block, 0, blocks),
                           lambda n: _sgd_product_kernel(*args, scratch, block, n))
        return
    G = lanes.scratch("gradient", P.size, P.dtype)[:P.size].reshape(P.shape)
    matmul_tn(A, delta, G)
    sgd_update(P, G, V, lr, momentum, decay, scale)
