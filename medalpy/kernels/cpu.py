"""The ``cpu`` backend: BLAS for matrix products, fused serial Numba passes for the rest.

Every public function has the name, signature and semantics of its twin in
:mod:`medalpy.kernels.reference` (the oracle; read it for the equations). What differs is how
the work is done:

- Matrix products go to BLAS through ``np.matmul(..., out=)``: no temporaries, no copies of
  weight-sized arrays.
- Each element-wise step is one pass over memory in a module-level ``@njit(cache=True)``
  function: bias + sigmoid; cross-entropy loss and output delta together, from the
  pre-activations; softmax + NLL + delta; the hidden delta through the sigmoid; the column
  sum; the whole SGD step (momentum, decay, gradient scale) over ``P``, ``G``, ``V`` at once;
  the gather of a uint8 batch with its 1/255 scaling and its masking noise.
- The kernels are serial. On these 2-core machines Numba's ``parallel=True`` beside a
  multi-threaded OpenBLAS was 10-15x slower (see ``shared/PERF-NOTES.md``).
- Arithmetic is done in the dtype of the output array, with the same operations in the same
  order as the reference, so float64 results agree to a few ulps and float32 results to the
  difference between NumPy's and libm's ``exp``/``log1p`` (about 1 ulp each).
- Masking noise is the reference's counter-based splitmix64 hash, evaluated inline:
  a unit's mask bit depends only on (seed, epoch, sample index, feature index).

No kernel allocates an array; the caller allocates workspaces once per phase.
"""

import math

import numba
import numpy as np

from medalpy.config import (
    NOISE_BITS,
    SPLITMIX_GAMMA,
    SPLITMIX_M1,
    SPLITMIX_M2,
    noise_threshold,
)

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
_MASK64 = (1 << 64) - 1

_jit = numba.njit(cache=True, nogil=True)

# ----------------------------------------------------------------------------------------
# Arrays: host memory, as in the reference.
# ----------------------------------------------------------------------------------------


def empty(shape, dtype):
    """A new uninitialised array of ``shape`` resident where this backend computes."""
    return np.empty(shape, dtype=dtype)


def zeros(shape, dtype):
    """A new zero array of ``shape`` resident where this backend computes."""
    return np.zeros(shape, dtype=dtype)


def to_device(a):
    """``a`` as an array this backend computes on (no copy when it already is one)."""
    return np.ascontiguousarray(a)


def to_host(a):
    """``a`` as a NumPy array in host memory."""
    return np.asarray(a)


# ----------------------------------------------------------------------------------------
# Counter-based noise.
# ----------------------------------------------------------------------------------------


@numba.njit(inline="always")
def _mix(z):
    """splitmix64 finaliser on a uint64 scalar (wrapping arithmetic)."""
    z = z + _GAMMA
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def _mix_int(z):
    """splitmix64 on a Python int, for the per-call part of the key (no Numba dispatch)."""
    z = (z + SPLITMIX_GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * SPLITMIX_M1) & _MASK64
    z = ((z ^ (z >> 27)) * SPLITMIX_M2) & _MASK64
    return z ^ (z >> 31)


def _epoch_key(seed, epoch):
    """``mix(mix(seed) ^ epoch)`` as np.uint64: the part of every row key shared by a batch."""
    return np.uint64(_mix_int(_mix_int(int(seed) & _MASK64) ^ (int(epoch) & _MASK64)))


# ----------------------------------------------------------------------------------------
# Batch formation.
# ----------------------------------------------------------------------------------------


@_jit
def _gather_kernel(X, rows, scale, use_mask, epoch_key, threshold, out):
    # One pass: load, convert to out's dtype, scale, mask. ``scale`` has out's dtype, so the
    # product is rounded exactly as NumPy's ``X[rows] * dtype(1/255)``.
    B, D = out.shape
    for i in range(B):
        r = rows[i]
        if use_mask:
            key = _mix(epoch_key ^ np.uint64(r))
            for j in range(D):
                v = out.dtype.type(X[r, j]) * scale
                bits = _mix(key ^ np.uint64(j)) >> _SHIFT
                out[i, j] = v if bits >= threshold else v * out.dtype.type(0)
        else:
            for j in range(D):
                out[i, j] = out.dtype.type(X[r, j]) * scale


def _gather(X, rows, out, use_mask, epoch_key, threshold):
    scale = out.dtype.type(1.0 / 255.0) if X.dtype == np.uint8 else out.dtype.type(1.0)
    rows = np.asarray(rows)
    if rows.dtype != np.int64:
        rows = rows.astype(np.int64)
    _gather_kernel(X, rows, scale, use_mask, epoch_key, threshold, out)


def gather(X, rows, out):
    """``out = X[rows]``, scaled by 1/255 when ``X`` is uint8.

    Parameters
    ----------
    X : (N, D) uint8 or float array, the dataset (or cached codes).
    rows : (B,) int64, sample indices into ``X``.
    out : (B, D) float array, modified in place.
    """
    _gather(X, rows, out, False, np.uint64(0), np.uint64(0))


def gather_masked(X, rows, rate, seed, epoch, out):
    """``out = X[rows] * keep``: a gathered batch with masking noise applied.

    Same arguments as :func:`gather`; the mask is ``reference.keep_mask(seed, epoch, rows)``,
    computed inline. Masked units are set to 0 without rescaling the survivors.
    """
    threshold = np.uint64(noise_threshold(rate))
    _gather(X, rows, out, True, _epoch_key(seed, epoch), threshold)


# ----------------------------------------------------------------------------------------
# Dense layers.
# ----------------------------------------------------------------------------------------


def matmul(A, B, out):
    """``out = A @ B``: the forward product, (n, k) @ (k, m) -> (n, m)."""
    np.matmul(A, B, out=out)


def matmul_tn(A, B, out):
    """``out = A.T @ B``: the weight gradient ``H_{l-1}^T delta_l``, (n, k)^T (n, m) -> (k, m)."""
    np.matmul(A.T, B, out=out)


def matmul_nt(A, B, out):
    """``out = A @ B.T``: the back-propagated error ``delta_l W_l^T``, (n, m) (k, m)^T -> (n, k)."""
    np.matmul(A, B.T, out=out)


@numba.njit(inline="always")
def _sigmoid(z, one):
    # The reference's two-branch form: exp(-|z|) never overflows.
    e = math.exp(-abs(z))
    return one / (one + e) if z >= 0 else e / (one + e)


@_jit
def _bias_sigmoid_kernel(Z, b, out):
    one = out.dtype.type(1)
    n, d = Z.shape
    for i in range(n):
        for j in range(d):
            z = Z[i, j] + b[j]
            Z[i, j] = z
            out[i, j] = _sigmoid(z, one)


def add_bias_sigmoid(Z, b, out):
    """Add the bias and squash: ``Z += b``; ``out = sigma(Z)``.

    Parameters
    ----------
    Z : (B, D) float, pre-activation without bias; modified in place to hold ``Z + b``.
    b : (D,) float.
    out : (B, D) float, modified in place; may be ``Z`` itself.
    """
    _bias_sigmoid_kernel(Z, b, out)


@_jit
def _sigmoid_ce_kernel(Z, T, delta):
    one = delta.dtype.type(1)
    zero = delta.dtype.type(0)
    n, d = Z.shape
    Bf = delta.dtype.type(n)
    loss = 0.0
    for i in range(n):
        for j in range(d):
            z = Z[i, j]
            t = T[i, j]
            e = math.exp(-abs(z))
            # softplus(z) - t z, in the array's dtype as the reference; summed in float64.
            loss += (max(z, zero) + math.log1p(e)) - t * z
            y = one / (one + e) if z >= 0 else e / (one + e)
            delta[i, j] = (y - t) / Bf
    return loss / n


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
    return float(_sigmoid_ce_kernel(Z, T, delta))


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
            s += math.exp(Z[i, k] - m)
        log_norm = math.log(s)
        y = labels[i]
        loss += log_norm - (Z[i, y] - m)
        for k in range(c):
            # exp(shifted - log_norm) as the reference, not exp(shifted) / s: p - 1 at the
            # true class cancels, so the two roundings would differ visibly there.
            p = math.exp((Z[i, k] - m) - log_norm)
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


def sigmoid_backward(dH, H, out):
    """Through the sigmoid: ``out = dH * H * (1 - H)`` (``out`` may be ``dH``)."""
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


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _sum_of_squares_kernel(g):
    # Squares of float32 are exact in float64; reassociation only changes the summation
    # order (lets LLVM vectorise), which float64 accumulation makes harmless.
    s = 0.0
    for i in range(g.size):
        x = np.float64(g[i])
        s += x * x
    return s


def _flat(a):
    """A 1-D view of ``a`` that shares its memory, or None when no such view exists."""
    if a.flags.c_contiguous:
        return a.reshape(-1)
    return None


def sum_of_squares(G):
    """``sum(G ** 2)`` as a float, accumulated in float64 (for gradient normalisation)."""
    g = _flat(G)
    if g is None:
        g = np.ascontiguousarray(G).reshape(-1)
    return float(_sum_of_squares_kernel(g))


@_jit
def _sgd_kernel(p, g, v, lr, momentum, decay, scale):
    # One pass over P, G, V, with the reference's operations in the reference's order.
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
    t = P.dtype.type
    p, g, v = _flat(P), _flat(G), _flat(V)
    if p is None or g is None or v is None:
        # A strided parameter has no flat view to update in place: do it in NumPy.
        V *= t(momentum)
        V += t(lr) * (t(scale) * G + t(decay) * P)
        P -= V
        return
    _sgd_kernel(p, g, v, t(lr), t(momentum), t(decay), t(scale))
