"""The layered network: structure, names, heads, freezing, initialisation."""

import numpy as np
import pytest

from medalpy.errors import ConfigError
from medalpy.network import Network


def test_names_are_stable_as_layers_are_added_and_heads_change():
    rng = np.random.default_rng(0)
    net = Network(784)
    net.add_encoder(30, rng)
    net.attach_decoder(rng)
    assert list(net.parameters()) == ["encoder.0.W", "encoder.0.b", "decoder.W", "decoder.b"]
    net.discard_head()
    net.add_encoder(20, rng)
    net.attach_decoder(rng, target_level=1)
    assert net.decoder.W.shape == (20, 30)
    net.keep_decoder_as_mirror()
    assert "mirror.1.W" in net.parameters() and "decoder.W" not in net.parameters()
    net.attach_classifier(10, rng)
    assert [n for n, _ in net.path()] == ["encoder.0", "encoder.1", "classifier"]
    assert net.parameters()["encoder.0.W"].shape == (784, 30)


def test_one_head_at_a_time():
    rng = np.random.default_rng(0)
    net = Network(5)
    net.add_encoder(3, rng)
    net.attach_decoder(rng)
    with pytest.raises(ConfigError, match="already has a decoder"):
        net.attach_classifier(2, rng)


def test_mirror_path_runs_top_down_and_needs_every_level():
    rng = np.random.default_rng(0)
    net = Network(6)
    net.add_encoder(4, rng)
    net.attach_decoder(rng, target_level=0)
    net.keep_decoder_as_mirror()
    net.add_encoder(3, rng)
    with pytest.raises(ConfigError, match="levels \\[1\\]"):
        net.use_mirror()
    net.attach_decoder(rng, target_level=1)
    net.keep_decoder_as_mirror()
    net.use_mirror()
    assert [n for n, _ in net.path()] == ["encoder.0", "encoder.1", "mirror.1", "mirror.0"]
    assert [n for n, _ in net.path(1)] == ["encoder.1", "mirror.1", "mirror.0"]


def test_medal_initialisation_range_dtype_and_zero_bias():
    rng = np.random.default_rng(0)
    net = Network(784)
    layer = net.add_encoder(1000, rng)
    bound = np.sqrt(6.0 / (784 + 1000))
    assert layer.W.dtype == np.float32 and layer.b.dtype == np.float32
    assert np.abs(layer.W).max() <= bound and np.abs(layer.W).max() > 0.99 * bound
    assert abs(layer.W.mean()) < 1e-3 and not layer.b.any()
    assert Network(3, dtype="float64").add_encoder(2, rng).W.dtype == np.float64


def test_unknown_initialiser_and_dtype_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="unknown initialisation 'glorot'"):
        Network(3).add_encoder(2, rng, init="glorot")
    with pytest.raises(ValueError, match="float32 or float64"):
        Network(3, dtype="int32")


def test_freeze_flips_only_the_flag():
    rng = np.random.default_rng(0)
    net = Network(4)
    net.add_encoder(3, rng)
    W = net.encoders[0].W
    net.freeze(0)
    assert not net.encoders[0].trainable and net.encoders[0].W is W
    net.unfreeze(0)
    assert net.encoders[0].trainable


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_encode_gives_every_rows_clean_code_in_the_weights_dtype(backend, dtype):
    """``backprop.encode`` in batches of 7 over 30 rows (a short last batch) equals the
    sigmoid chain in plain float64 NumPy, and is computed in the encoders' dtype."""
    from medalpy.backprop import encode
    from medalpy.kernels import get_backend

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(30, 12)).astype(np.uint8)
    net = Network(12, dtype=dtype)
    net.add_encoder(9, rng)
    net.add_encoder(5, rng)
    for layer in net.encoders:
        layer.W[...] = rng.normal(0, 0.5, layer.W.shape)
    codes = encode(get_backend(backend), net.encoders, X, batch_size=7)
    A = X / 255.0
    for layer in net.encoders:
        A = 1.0 / (1.0 + np.exp(-(A @ layer.W.astype(np.float64) + layer.b)))
    assert codes.dtype == dtype and codes.shape == (30, 5)
    np.testing.assert_allclose(codes, A, rtol=1e-5 if dtype == np.float32 else 1e-12)
