"""What a trained network does, on host arrays: encode, decode, reconstruct, evaluate.

These are the library's verbs for a :class:`medalpy.network.Network` (one trained by
:func:`medalpy.run.build_trainer`, or loaded with :func:`medalpy.checkpoint.load`); the
scikit-learn estimators (:mod:`medalpy.sklearn`) are built on them. Inputs are ``(N, D)``
uint8 images (divided by 255) or floats in [0, 1]; outputs are host arrays in the network's
dtype. ``backend`` names a kernel backend (``numpy``, ``cpu``, ``cuda``).
"""

import numpy as np

from medalpy import config
from medalpy.corruption import DEFAULT
from medalpy.errors import ConfigError


def _backend(backend):
    from medalpy.kernels import get_backend

    return get_backend(backend) if isinstance(backend, str) else backend


def _forward(network, chain, head, X, backend, pre_activation=False):
    """Rows of ``X`` through the (name, Layer) ``chain`` ending in ``head``, in batches: the
    output's sigmoid, or its pre-activation."""
    from medalpy.backprop import Pass

    k = _backend(backend)
    X = np.asarray(X)
    N, B = X.shape[0], config.EVAL_BATCH
    network.place(k.to_device)
    try:
        p = Pass(k, chain, B, head, network.dtype, train=False)
        X_dev = k.to_device(X)
        X_in = k.empty((B, X.shape[1]), network.dtype)
        out = np.empty((N, chain[-1][1].n_out), network.dtype)
        with k.session():
            for start in range(0, N, B):
                rows = np.arange(start, min(start + B, N))
                n = len(rows)
                k.gather(X_dev, rows, X_in[:n])
                Z = p.forward(X_in[:n])
                out[rows] = k.to_host(Z if pre_activation else p.output[:n])
    finally:
        network.place(k.to_host)
    return out


def _check_width(X, width, what):
    if np.ndim(X) != 2 or np.shape(X)[1] != width:
        raise ConfigError(f"{what} must be an (N, {width}) array, got shape {np.shape(X)}")


def encode(network, X, backend="cpu"):
    """The top codes ``h_K`` (N, n_K) of the clean rows of ``X`` (N, D)."""
    from medalpy.backprop import encode as encode_rows

    _check_width(X, network.n_inputs, "X")
    if network.depth < 1:
        raise ConfigError("the network has no encoder layer")
    k = _backend(backend)
    network.place(k.to_device)
    try:
        with k.session():
            codes = encode_rows(k, network.encoders, k.to_device(np.asarray(X)))
        return np.array(k.to_host(codes))
    finally:
        network.place(k.to_host)


def _check_decodes(network):
    if network.head not in ("decoder", "mirror") or (network.head == "decoder"
                                                     and network.decoder_target != 0):
        raise ConfigError("the network has no decoder back to the input")


def decode(network, H, backend="cpu"):
    """Reconstructions (N, D) of the inputs whose top codes are ``H`` (N, n_K): the head's
    direct decoder, or the mirror of a stacked run's decoders from the top down."""
    _check_decodes(network)
    _check_width(H, network.width(network.depth), "H")
    return _forward(network, network.path(network.depth), network.head, H, backend)


def reconstruct(network, X, noise=0.0, noise_type=DEFAULT, seed=None, backend="cpu"):
    """Reconstructions (N, D) of the rows of ``X``, corrupted first when ``noise`` > 0 (with
    the fixed test-noise seed unless ``seed`` is given, so calls repeat exactly)."""
    from medalpy.evaluation import TEST_NOISE_SEED
    from medalpy.evaluation import reconstruct as reconstruct_rows

    _check_width(X, network.n_inputs, "X")
    _check_decodes(network)
    if noise == 0:
        return _forward(network, network.path(0), network.head, X, backend)
    seed = TEST_NOISE_SEED if seed is None else seed
    _, Y = reconstruct_rows(_backend(backend), network, np.asarray(X),
                            np.arange(np.shape(X)[0]), noise, seed, noise_type)
    return Y


def evaluate(network, X, noise, noise_type=DEFAULT, backend="cpu"):
    """The paper's metric on ``X``: a dict with ``relative_ce`` (inputs corrupted by
    ``noise`` of ``noise_type`` with the fixed test-noise seed), ``relative_ce_clean``,
    ``ce``, ``ce_clean`` and ``entropy``, each a mean per image in nats
    (:func:`medalpy.evaluation.reconstruction_metrics`)."""
    from medalpy.evaluation import reconstruction_metrics

    _check_width(X, network.n_inputs, "X")
    return reconstruction_metrics(_backend(backend), network, np.asarray(X), noise,
                                  noise_type=noise_type)


def predict_proba(network, X, backend="cpu"):
    """Class probabilities (N, C) of a network with a classifier head: the softmax of its
    output pre-activations."""
    if network.head != "classifier":
        raise ConfigError("the network has no classifier head")
    _check_width(X, network.n_inputs, "X")
    Z = _forward(network, network.path(0), network.head, X, backend, pre_activation=True)
    Z = Z - Z.max(axis=1, keepdims=True)
    P = np.exp(Z)
    return P / P.sum(axis=1, keepdims=True)
