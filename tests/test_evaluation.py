"""The reconstruction metric and its mean-image baseline, recomputed in plain float64 NumPy.

Every figure medalpy reports as a result is one of these numbers, so each is checked here
against an independent computation, over several evaluation batches with a short last one,
for uint8 and float inputs, with and without noise.
"""

import warnings

import numpy as np
import pytest

from medalpy import config
from medalpy.errors import ConfigError
from medalpy.evaluation import (TEST_NOISE_SEED, mean_image_relative_ce, reconstruct,
                                reconstruction_metrics)
from medalpy.kernels import get_backend
from medalpy.kernels.reference import keep_mask
from medalpy.network import Layer, Network
from medalpy.objectives import entropy

D = 30


@pytest.fixture(autouse=True)
def small_batches(monkeypatch):
    """Three evaluation batches of 16 and a last one of 5 for the 53 test images."""
    monkeypatch.setattr(config, "EVAL_BATCH", 16)


def _images(seed, n=53):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(n, D)).astype(np.uint8)
    X[rng.uniform(size=X.shape) < 0.3] = 0      # exact zeros and ones, as in MNIST
    X[rng.uniform(size=X.shape) < 0.1] = 255
    return X


def _network(head):
    rng = np.random.default_rng(1)
    net = Network(D, dtype=np.float64)
    net.add_encoder(12, rng)
    net.add_encoder(8, rng)
    if head == "decoder":
        net.attach_decoder(rng, 0)
    else:
        for level in (0, 1):
            net.mirror[level] = Layer(np.zeros((net.width(level + 1), net.width(level))),
                                      np.zeros(net.width(level)))
        net.use_mirror()
    for layer in net.layers().values():  # weights large enough for the output to react
        layer.W[...] = rng.normal(0, 0.5, layer.W.shape)
        layer.b[...] = rng.normal(0, 0.5, layer.b.shape)
    return net


def _forward(net, A):
    for _, layer in net.path(0):
        A = 1.0 / (1.0 + np.exp(-(A @ layer.W + layer.b)))
    return A


def _plain_numpy(net, X, rate, seed=TEST_NOISE_SEED):
    """(relative CE, clean relative CE, CE, clean CE, entropy), means per image, float64."""
    T = X.astype(np.float64) / 255.0
    rows = np.arange(len(X))
    noisy = T * keep_mask(seed, 0, rows, D, rate) if rate else T

    def ce_of(inp):
        A = _forward(net, inp)
        return -(T * np.log(A) + (1 - T) * np.log(1 - A)).sum(axis=1).mean()

    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.nan_to_num(T * np.log(T) + (1 - T) * np.log(1 - T)).sum(axis=1).mean()
    ce, ce_clean = ce_of(noisy), ce_of(T)
    return ce - ent, ce_clean - ent, ce, ce_clean, ent


KEYS = ("relative_ce", "relative_ce_clean", "ce", "ce_clean", "entropy")


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("head", ["decoder", "mirror"])
def test_every_reported_figure_equals_plain_numpy(backend, head):
    net, X = _network(head), _images(0)
    got = reconstruction_metrics(get_backend(backend), net, X, 0.25)
    want = _plain_numpy(net, X, 0.25)
    for key, value in zip(KEYS, want):
        assert got[key] == pytest.approx(value, rel=1e-9), key
    assert got["relative_ce"] > got["relative_ce_clean"] > 0  # noise costs; nothing beats x


def test_float_inputs_in_0_1_score_as_their_uint8_originals():
    net, X = _network("decoder"), _images(2)
    as_uint8 = reconstruction_metrics(get_backend("numpy"), net, X, 0.25)
    as_float = reconstruction_metrics(get_backend("numpy"), net, X / 255.0, 0.25)
    assert as_float == pytest.approx(as_uint8, rel=1e-12)


def test_the_corrupted_test_set_is_drawn_from_the_given_seed_and_level():
    net, X, numpy = _network("decoder"), _images(3), get_backend("numpy")
    other_seed = reconstruction_metrics(numpy, net, X, 0.25, noise_seed=7)
    assert other_seed["relative_ce"] == pytest.approx(_plain_numpy(net, X, 0.25, seed=7)[0],
                                                      rel=1e-9)
    assert other_seed["relative_ce"] != pytest.approx(_plain_numpy(net, X, 0.25)[0], rel=1e-6)
    clean = reconstruction_metrics(numpy, net, X, 0.0)
    assert clean["relative_ce"] == pytest.approx(clean["relative_ce_clean"], rel=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_reconstruct_shows_the_metrics_corrupted_inputs_and_outputs(backend):
    """What ``medalpy show`` draws: the rows' inputs corrupted as the metric corrupts them
    (same seed, level and epoch 0) and the network's reconstructions of them."""
    net, X, rows = _network("mirror"), _images(7), np.array([4, 0, 17])
    corrupted, output = reconstruct(get_backend(backend), net, X, rows, 0.25)
    T = X[rows] / 255.0
    want = T * keep_mask(TEST_NOISE_SEED, 0, rows, D, 0.25)
    np.testing.assert_allclose(corrupted, want, rtol=1e-15)
    np.testing.assert_allclose(output, _forward(net, want), rtol=1e-12)
    assert np.any(corrupted != T)


def test_a_network_that_does_not_reconstruct_its_input_is_refused():
    rng = np.random.default_rng(0)
    numpy, X = get_backend("numpy"), _images(0)
    to_level_1 = Network(D, dtype=np.float64)
    to_level_1.add_encoder(12, rng)
    to_level_1.add_encoder(8, rng)
    to_level_1.attach_decoder(rng, 1)
    classifier = Network(D, dtype=np.float64)
    classifier.add_encoder(12, rng)
    classifier.attach_classifier(10, rng)
    for net in (to_level_1, classifier):
        with pytest.raises(ConfigError, match="^the network has no decoder back to the input to evaluate$"):
            reconstruction_metrics(numpy, net, X, 0.25)
        with pytest.raises(ConfigError, match="^the network has no decoder back to the input to evaluate$"):
            reconstruct(numpy, net, X, [0], 0.25)
    with pytest.raises(ConfigError, match=f"takes {D} inputs, the data has {D - 1}"):
        reconstruction_metrics(numpy, _network("decoder"), X[:, 1:], 0.25)


def _mean_image_plain(X_train, X_test):
    m = np.clip(X_train.astype(np.float64).mean(axis=0) / 255.0, 1e-6, 1 - 1e-6)
    T = X_test.astype(np.float64) / 255.0
    ce = -(T * np.log(m) + (1 - T) * np.log(1 - m)).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.nan_to_num(T * np.log(T) + (1 - T) * np.log(1 - T)).sum(axis=1)
    return (ce - ent).mean()


def test_the_mean_image_baseline_equals_plain_numpy_with_its_clipping():
    X_train, X_test = _images(4, n=200), _images(5)
    X_train[:, 0] = 0      # never lit in training, lit in some test images: clipped to 1e-6
    X_train[:, 1] = 255    # always lit in training: clipped to 1 - 1e-6
    X_test[:3, 0], X_test[3:6, 1] = 200, 0
    want = _mean_image_plain(X_train, X_test)
    assert mean_image_relative_ce(X_train, X_test) == pytest.approx(want, rel=1e-12)
    assert mean_image_relative_ce(X_train / 255.0, X_test / 255.0) == pytest.approx(want,
                                                                                    rel=1e-12)
    # the clipping's cost is what keeps it finite: three images pay -log(1e-6) at pixel 0
    assert np.isfinite(want) and want > 3 * 0.78 * -np.log(1e-6) / len(X_test)


def test_the_baseline_is_the_best_constant_prediction():
    """Predicting the test set's own mean image is the best constant, so a training mean from
    the same distribution scores close to it and any other constant scores worse."""
    X = _images(6, n=400)
    best = mean_image_relative_ce(X, X)
    shifted = np.clip(X.astype(np.int64) + 40, 0, 255).astype(np.uint8)
    assert mean_image_relative_ce(shifted, X) > best
    assert mean_image_relative_ce(X[:200], X[200:]) > 0


@pytest.mark.parametrize("t, h", [(0.0, 0.0), (1.0, 0.0), (0.5, np.log(2.0)),
                                  (0.2, -(0.2 * np.log(0.2) + 0.8 * np.log(0.8)))])
def test_entropy_of_a_pixel(t, h):
    T = np.array([[t, t, 0.0], [1.0, 0.0, t]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 log 0 is 0, quietly
        assert entropy(T) == pytest.approx([2 * h, h], abs=1e-15)
    assert entropy(T).dtype == np.float64 and entropy(T.astype(np.float32)).dtype == np.float64
