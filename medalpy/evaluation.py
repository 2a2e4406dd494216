"""The paper's reconstruction metric, and the baseline it is read against.

Relative reconstruction cross-entropy: the mean over test images of ``CE(x, y) - CE(x, x)``,
where ``y`` is the network's reconstruction and ``CE(x, x)`` the entropy of the clean image,
the least any reconstruction can score. ``y`` is computed from a corrupted copy of ``x``
drawn with :data:`TEST_NOISE_SEED`, the same for every run and method, so all methods see the
same corrupted test set (corrupted by the run's own kind and level of noise); the clean-input
value is reported beside it.
"""

import numpy as np

from medalpy import config
from medalpy.backprop import Pass
from medalpy.corruption import DEFAULT, corrupter
from medalpy.errors import ConfigError
from medalpy.objectives import entropy

#: Noise seed of the corrupted test set (fixed, so every method sees the same corruption).
TEST_NOISE_SEED = 20150412


def _scaled(X, rows):
    Xr = X[rows]
    return Xr.astype(np.float64) / 255.0 if X.dtype == np.uint8 else Xr.astype(np.float64)


def reconstruction_metrics(backend, network, X, noise, noise_seed=TEST_NOISE_SEED,
                           noise_type=DEFAULT):
    """Relative cross-entropy of a network's reconstructions of ``X``.

    Parameters
    ----------
    backend : kernel module.
    network : Network with a decoder or mirror head reconstructing the input.
    X : (N, D) uint8 or float array of test inputs.
    noise : float, the noise level of the corrupted test set.
    noise_type : str, its kind (:mod:`medalpy.corruption`).

    Returns
    -------
    dict with ``relative_ce`` (corrupted inputs), ``relative_ce_clean``, ``ce``, ``ce_clean``
    and ``entropy`` (each a mean per image, in nats).
    """
    net, N = network, X.shape[0]
    _check_reconstructs_input(net, X)
    net.place(backend.to_device)
    X_host, X = X, backend.to_device(X)
    p = Pass(backend, net.path(0), config.EVAL_BATCH, net.head, net.dtype, train=False)
    X_in = backend.empty((config.EVAL_BATCH, X.shape[1]), net.dtype)
    X_target = backend.empty((config.EVAL_BATCH, X.shape[1]), net.dtype)
    corrupt = corrupter(backend, noise_type)
    ce = ce_clean = ent = 0.0
    with backend.session():
        for start in range(0, N, config.EVAL_BATCH):
            rows = np.arange(start, min(start + config.EVAL_BATCH, N))
            n = len(rows)
            backend.gather(X, rows, X_target[:n])
            corrupt(X, rows, noise, noise_seed, 0, X_in[:n])
            ce += p.loss(X_in[:n], X_target[:n]) * n
            ce_clean += p.loss(X_target[:n], X_target[:n]) * n
            ent += float(entropy(_scaled(X_host, rows)).sum())
    net.place(backend.to_host)
    return {"relative_ce": (ce - ent) / N, "relative_ce_clean": (ce_clean - ent) / N,
            "ce": ce / N, "ce_clean": ce_clean / N, "entropy": ent / N}


def _check_reconstructs_input(net, X):
    if net.head not in ("decoder", "mirror") or (net.head == "decoder"
                                                 and net.decoder_target != 0):
        raise ConfigError("the network has no decoder back to the input to evaluate")
    if X.shape[1] != net.n_inputs:
        raise ConfigError(f"the network takes {net.n_inputs} inputs, the data has {X.shape[1]}")


def mean_image_relative_ce(X_train, X_test):
    """Relative CE of always predicting the mean training image (a model that learnt nothing).

    The mean is clipped to [1e-6, 1 - 1e-6] so that pixels never lit in training cost a
    finite amount.
    """
    m = np.clip(X_train.mean(axis=0, dtype=np.float64) / (255.0 if X_train.dtype == np.uint8
                                                            else 1.0), 1e-6, 1 - 1e-6)
    total = 0.0
    for start in range(0, X_test.shape[0], config.EVAL_BATCH):
        T = _scaled(X_test, np.arange(start, min(start + config.EVAL_BATCH, X_test.shape[0])))
        ce = -(T * np.log(m) + (1 - T) * np.log1p(-m)).sum(axis=1)
        total += float((ce - entropy(T)).sum())
    return total / X_test.shape[0]


def reconstruct(backend, network, X, rows, noise, noise_seed=TEST_NOISE_SEED,
                noise_type=DEFAULT):
    """Corrupted inputs and their reconstructions for ``rows`` of ``X`` (host float arrays)."""
    net, n = network, len(rows)
    _check_reconstructs_input(net, X)
    net.place(backend.to_device)
    p = Pass(backend, net.path(0), n, net.head, net.dtype, train=False)
    X_in = backend.empty((n, X.shape[1]), net.dtype)
    with backend.session():
        corrupter(backend, noise_type)(backend.to_device(X), np.asarray(rows), noise,
                                       noise_seed, 0, X_in)
        p.forward(X_in)
    result = np.array(backend.to_host(X_in)), np.array(backend.to_host(p.output[:n]))
    net.place(backend.to_host)
    return result
