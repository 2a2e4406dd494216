"""The NumPy reference backend: readable kernels that define what every backend computes.

This module is the oracle the fast backends are tested against, and the place to read how
backpropagation through a stack of sigmoid layers really works. Every function takes arrays
and scalars, writes its result into ``out`` (or into an argument it names as modified in
place) and returns at most a scalar, so that a backend which keeps its arrays on a device
(``cuda``) can offer the very same names.

Notation (rows are samples, as in MEDAL): a batch ``X`` of shape (B, D_in); a layer with
weights ``W`` (D_in, D_out) and bias ``b`` (D_out,); pre-activation ``Z = X W + b``;
activation ``H = sigma(Z)`` with ``sigma(z) = 1 / (1 + exp(-z))``.

One training step of a chain of layers 1..L, as the trainer strings these kernels together:

    forward    Z_l = H_{l-1} W_l + b_l,   H_l = sigma(Z_l)          (matmul, add_bias_sigmoid)
    loss       E = (1/B) sum_n CE(T_n, Y_n),  Y = sigma(Z_L)        (sigmoid_cross_entropy)
    output     delta_L = dE/dZ_L = (Y - T) / B                      (same kernel)
    backward   dW_l = H_{l-1}^T delta_l,  db_l = sum_n delta_l      (matmul_tn, column_sum)
               delta_{l-1} = (delta_l W_l^T) * H_{l-1} (1 - H_{l-1})  (matmul_nt, sigmoid_backward)
    update     V = m V + lr (g + lam W),  W = W - V                 (sgd_update)

The cross-entropy is computed from the pre-activation ``Z`` (softplus form), never from the
log of a clipped sigmoid, and the output delta never divides by ``y (1 - y)``: both stay
finite and exact for pre-activations of +-100.
"""

import contextlib

import numpy as np

from medalpy.config import (
    NOISE_BITS,
    SPLITMIX_GAMMA,
    SPLITMIX_M1,
    SPLITMIX_M2,
    noise_threshold,
)

NAME = "numpy"

# ----------------------------------------------------------------------------------------
# Arrays: a device backend allocates and copies here; on the CPU these are trivial.
# ----------------------------------------------------------------------------------------


def session():
    """A context for a block of computations (a training run, an evaluation): nothing to set
    up here; the cpu backend turns its lanes on inside it and restores the thread counts
    after."""
    return contextlib.nullcontext()


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
# Counter-based noise: a mask bit is a pure function of (seed, epoch, sample, feature).
# ----------------------------------------------------------------------------------------

_U64 = np.uint64


def splitmix64(z):
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic).

    Parameters
    ----------
    z : ndarray of uint64 or np.uint64

    Returns
    -------
    ndarray of uint64, a well-mixed bijection of ``z``.
    """
    with np.errstate(over="ignore"):
        z = (np.asarray(z, dtype=_U64) + _U64(SPLITMIX_GAMMA)).astype(_U64)
        z = (z ^ (z >> _U64(30))) * _U64(SPLITMIX_M1)
        z = (z ^ (z >> _U64(27))) * _U64(SPLITMIX_M2)
        return z ^ (z >> _U64(31))


def noise_row_keys(seed, epoch, rows):
    """Per-sample keys ``k = mix(mix(mix(seed) ^ epoch) ^ row)``, shape (B,) uint64."""
    k = splitmix64(_U64(seed))
    k = splitmix64(k ^ _U64(epoch))
    return splitmix64(k ^ np.asarray(rows, dtype=_U64))


def unit_hashes(seed, epoch, rows, n_features):
    """(B, n_features) uint64: ``mix(row_key_i ^ j)``, the hash of unit j of sample
    ``rows[i]``. Every kind of noise draws from it (and, where it needs a second draw, from
    ``mix`` of it), so the noise of a unit depends only on (seed, epoch, sample, unit)."""
    keys = noise_row_keys(seed, epoch, rows)[:, None]
    return splitmix64(keys ^ np.arange(n_features, dtype=_U64)[None, :])


def unit_uniforms(hashes):
    """Uniform draws in (0, 1), float64, from the top 53 bits of ``hashes``: ``(u + 1/2) /
    2**53`` (never 0, so the logarithm of Gaussian noise is finite)."""
    return ((hashes >> _U64(64 - NOISE_BITS)).astype(np.float64) + 0.5) * 2.0 ** -NOISE_BITS


def keep_mask(seed, epoch, rows, n_features, rate):
    """Boolean (B, n_features): True where a unit survives masking noise of ``rate``.

    Unit j of sample ``rows[i]`` is dropped when the top 53 bits of
    ``mix(row_key_i ^ j)`` fall below ``rate * 2**53``: a Bernoulli(rate) draw that does not
    depend on the batch it sits in, on the thread count or on the backend.
    """
    bits = unit_hashes(seed, epoch, rows, n_features) >> _U64(64 - NOISE_BITS)
    return bits >= _U64(noise_threshold(rate))


# ----------------------------------------------------------------------------------------
# Batch formation: datasets live as uint8; batches are scaled (and corrupted) as gathered.
# ----------------------------------------------------------------------------------------


def gather(X, rows, out):
    """``out = X[rows]``, scaled by 1/255 when ``X`` is uint8.

    Parameters
    ----------
    X : (N, D) uint8 or float array, the dataset (or cached codes).
    rows : (B,) int64, sample indices into ``X``, each in [0, N) (negative indices are not
        wrapped: the noise key of a sample is its index; the cpu backend raises on them).
    out : (B, D) float array, modified in place.
    """
    if X.dtype == np.uint8:
        np.multiply(X[rows], out.dtype.type(1.0 / 255.0), out=out)
    else:
        out[...] = X[rows]


def gather_masked(X, rows, rate, seed, epoch, out):
    """``out = X[rows] * keep``: a gathered batch with masking noise applied.

    Same arguments as :func:`gather`; the mask is :func:`keep_mask` (seed, epoch, rows).
    Masked units are set to 0 without rescaling the survivors (the paper's masking noise).
    """
    gather(X, rows, out)
    out *= keep_mask(seed, epoch, rows, out.shape[1], rate)


def gather_salt_pepper(X, rows, rate, seed, epoch, out):
    """A gathered batch with salt-and-pepper noise: each unit is, with probability ``rate``,
    set to 0 or 1, equally likely (Vincent et al. 2010).

    Same arguments as :func:`gather_masked`. Unit j of sample i is hit when it would be
    masked (:func:`keep_mask` is False: the top 53 bits of its hash below ``rate * 2**53``),
    and then becomes the lowest bit of the same hash (bits the hit test does not read).
    """
    gather(X, rows, out)
    hashes = unit_hashes(seed, epoch, rows, out.shape[1])
    hit = (hashes >> _U64(64 - NOISE_BITS)) < _U64(noise_threshold(rate))
    out[hit] = (hashes & _U64(1)).astype(out.dtype)[hit]


def gaussian_noise(seed, epoch, rows, n_features, sigma):
    """(B, n_features) float64 ``sigma * z``, z standard normal by the Box-Muller transform of
    two uniforms of :func:`unit_uniforms`: one from the unit's hash, one from ``mix`` of it."""
    hashes = unit_hashes(seed, epoch, rows, n_features)
    u1, u2 = unit_uniforms(hashes), unit_uniforms(splitmix64(hashes))
    return sigma * (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2))


def gather_gaussian(X, rows, sigma, seed, epoch, out):
    """A gathered batch with additive Gaussian noise, clipped to [0, 1] so that the corrupted
    input stays in the cross-entropy's target space: ``out = clip(x + n, 0, 1)``, ``n`` from
    :func:`gaussian_noise` rounded to ``out``'s dtype. Same arguments as :func:`gather_masked`,
    with ``sigma`` (the standard deviation) as the noise level."""
    gather(X, rows, out)
    out += gaussian_noise(seed, epoch, rows, out.shape[1], sigma).astype(out.dtype)
    np.clip(out, 0, 1, out=out)


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


def sigmoid(Z):
    """``1 / (1 + exp(-Z))`` computed without overflow for any finite ``Z`` (returns a new array)."""
    # exp(-|z|) never overflows; the two branches are the same function rearranged.
    e = np.exp(-np.abs(Z))
    return np.where(Z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(Z.dtype, copy=False)


def add_bias_sigmoid(Z, b, out):
    """Add the bias and squash: ``Z += b``; ``out = sigma(Z)``.

    Parameters
    ----------
    Z : (B, D) float, pre-activation without bias; modified in place to hold ``Z + b``.
    b : (D,) float.
    out : (B, D) float, modified in place; may be ``Z`` itself when ``Z`` is not needed later.
    """
    Z += b
    out[...] = sigmoid(Z)


def softplus(Z):
    """``log(1 + exp(Z))`` computed stably: ``max(Z, 0) + log1p(exp(-|Z|))``."""
    return np.maximum(Z, 0) + np.log1p(np.exp(-np.abs(Z)))


def sigmoid_cross_entropy(Z, T, delta):
    """Cross-entropy of sigmoid outputs and its gradient, from pre-activations.

    With ``Y = sigma(Z)``, ``CE(t, y) = -sum_j [t_j log y_j + (1 - t_j) log(1 - y_j)]``
    equals ``sum_j [softplus(z_j) - t_j z_j]``, which is finite for any finite ``z``.
    Its derivative with respect to ``z_j`` is ``y_j - t_j``: the sigmoid's slope cancels, so
    nothing is ever divided by ``y (1 - y)``.

    Parameters
    ----------
    Z : (B, D) float, output pre-activations (bias included).
    T : (B, D) float in [0, 1], targets.
    delta : (B, D) float, modified in place: ``(sigma(Z) - T) / B``, the gradient of the
        batch-mean loss with respect to ``Z``.

    Returns
    -------
    float, the batch mean of CE summed over output units.
    """
    B = Z.shape[0]
    loss = float(np.sum(softplus(Z) - T * Z, dtype=np.float64)) / B
    delta[...] = (sigmoid(Z) - T) / B
    return loss


def softmax_cross_entropy(Z, labels, delta):
    """Negative log-likelihood of a softmax classifier and its gradient.

    ``p = softmax(z)``; ``NLL = -log p_y = logsumexp(z) - z_y``; ``dNLL/dz = p - onehot(y)``.
    The maximum is subtracted before exponentiating, so large logits cannot overflow.

    Parameters
    ----------
    Z : (B, C) float, logits.
    labels : (B,) integer class indices, each in [0, C) (not wrapped; the cpu backend raises
        on others).
    delta : (B, C) float, modified in place: ``(softmax(Z) - onehot(labels)) / B``.

    Returns
    -------
    float, the batch-mean NLL.
    """
    B = Z.shape[0]
    shifted = Z - Z.max(axis=1, keepdims=True)
    log_norm = np.log(np.sum(np.exp(shifted), axis=1))
    picked = shifted[np.arange(B), labels]
    loss = float(np.sum(log_norm - picked, dtype=np.float64)) / B
    delta[...] = np.exp(shifted - log_norm[:, None])
    delta[np.arange(B), labels] -= 1.0
    delta /= B
    return loss


def softmax_predict(Z, out):
    """``out[n] = argmax_c Z[n, c]``: predicted classes, ``out`` (B,) int64 modified in place."""
    out[...] = np.argmax(Z, axis=1)


def sigmoid_backward(dH, H, out):
    """Through the sigmoid: ``out = dH * H * (1 - H)`` (``out`` may be ``dH``).

    ``dH`` (B, D) is ``dE/dH``; since ``sigma'(z) = sigma(z)(1 - sigma(z)) = H (1 - H)``, the
    result is ``dE/dZ``, the delta of the layer below.
    """
    out[...] = dH * H * (1.0 - H)


def column_sum(delta, out):
    """The bias gradient ``db = sum_n delta[n, :]``; ``out`` (D,) modified in place."""
    np.sum(delta, axis=0, out=out)


# ----------------------------------------------------------------------------------------
# Optimiser.
# ----------------------------------------------------------------------------------------


def sum_of_squares(G):
    """``sum(G ** 2)`` as a float, accumulated in float64 (for gradient normalisation)."""
    return float(np.sum(np.square(G, dtype=np.float64)))


def product_sq_norm(A, delta):
    """``||A.T @ delta||_F^2``, the squared norm of a weight gradient, without forming it.

    With ``G = A^T delta`` ((k, m), large) and the two (n, n) Gram matrices of the batch,

        ||G||_F^2 = trace(delta^T A A^T delta) = trace((A A^T)(delta delta^T))
                  = sum_ij (A A^T)_ij (delta delta^T)_ij,

    which costs n^2 (k + m) multiply-adds instead of n k m: less for a small batch n. Here in
    float64, as the oracle.

    Parameters
    ----------
    A : (n, k) float, the activations below the layer.
    delta : (n, m) float, the layer's error.
    """
    if A.shape[0] != delta.shape[0]:
        raise ValueError(f"product_sq_norm: A has {A.shape[0]} rows but delta {delta.shape[0]}")
    A64, d64 = A.astype(np.float64), delta.astype(np.float64)
    return float(np.sum((A64 @ A64.T) * (d64 @ d64.T)))


def sgd_update(P, G, V, lr, momentum, decay, scale):
    """MEDAL's SGD step with momentum and weight decay, in place on ``P`` and ``V``.

        V = momentum * V + lr * (scale * G + decay * P)
        P = P - V

    Parameters
    ----------
    P : float array, the parameter (weights or bias); modified in place.
    G : float array of P's shape, its gradient.
    V : float array of P's shape, the velocity; modified in place.
    lr, momentum, decay : Python floats, applied in P's dtype; ``decay`` is 0 for biases
        (MEDAL decays weights only).
    scale : float, multiplies the gradient: ``1 / ||[dW; db]||`` under MEDAL's normGrad, else 1.
    """
    V *= momentum
    V += lr * (scale * G + decay * P)
    P -= V


def sgd_update_product(A, delta, P, V, lr, momentum, decay, scale):
    """:func:`sgd_update` of a weight matrix whose gradient is the product ``G = A.T @ delta``.

    Parameters
    ----------
    A : (n, k) float, the activations below the layer (its input).
    delta : (n, m) float, the layer's error.
    P, V : (k, m) float, the weights and their velocity; modified in place.
    lr, momentum, decay, scale : as for :func:`sgd_update`.

    The result is that of ``matmul_tn`` followed by ``sgd_update``; the fast backends compute
    ``G`` a few rows at a time and apply each block at once, so that it never reaches memory.
    """
    G = A.T @ delta
    if not G.shape == P.shape == V.shape:
        raise ValueError(f"sgd_update_product: gradient {G.shape}, weights {P.shape}, "
                         f"velocity {V.shape}")
    sgd_update(P, G, V, lr, momentum, decay, scale)
