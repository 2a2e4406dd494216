"""Finite-difference checks of backprop through whole networks, every parameter by name."""

import numpy as np
import pytest

from gradcheck import check_gradients
from medalpy.kernels import get_backend
from medalpy.network import Network

# Central differences in float64 with eps = 1e-4: truncation error ~eps^2 (~1e-9 absolute
# here) and round-off ~1e-16 * loss / eps (~1e-11); the lowest layers of the deepest chains
# have gradients of only ~1e-4, where eps = 1e-5 was already round-off bound (5e-7 relative).
# Measured errors are 5e-10 to 6e-8; a relative error of 1e-6 is far below any real bug.
TOL = 1e-6
BACKENDS = ["numpy", "cpu"]


def _dae(widths, rng, n_inputs=7):
    net = Network(n_inputs, dtype=np.float64)
    for w in widths:
        net.add_encoder(w, rng)
    # Non-zero biases, so their gradients are exercised away from the symmetric point.
    for layer in net.encoders:
        layer.b[:] = rng.normal(0, 0.5, layer.b.shape)
    return net


def _inputs(rng, n=5, d=7):
    X = rng.uniform(0, 1, (n, d))
    X[rng.uniform(size=X.shape) < 0.2] = 0.0  # a corrupted input
    T = rng.uniform(0, 1, (n, d))  # any target in [0, 1]
    return X, T


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("widths", [[4], [5, 4], [5, 4, 3]])
def test_direct_decoder(backend, widths):
    rng = np.random.default_rng(1)
    net = _dae(widths, rng)
    net.attach_decoder(rng, target_level=0)
    X, T = _inputs(rng)
    errors = check_gradients(get_backend(backend), net, X, T)
    assert set(errors) == set(net.parameters())
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("widths", [[4], [5, 4], [5, 4, 3]])
def test_mirror_decoder(backend, widths):
    rng = np.random.default_rng(2)
    net = _dae(widths, rng)
    for i in range(len(widths)):
        net.mirror[i] = _dae([net.width(i)], rng, n_inputs=net.width(i + 1)).encoders[0]
    net.use_mirror()
    X, T = _inputs(rng)
    errors = check_gradients(get_backend(backend), net, X, T)
    assert set(errors) == set(net.parameters())
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("backend", BACKENDS)
def test_frozen_lower_layers_pass_gradient_only_to_trainable(backend):
    """Ablation shape: encoder.0 frozen, encoder.1 and the decoder trained."""
    rng = np.random.default_rng(3)
    net = _dae([5, 4], rng)
    net.attach_decoder(rng)
    net.freeze(0)
    X, T = _inputs(rng)
    errors = check_gradients(get_backend(backend), net, X, T)
    assert set(errors) == {"encoder.1.W", "encoder.1.b", "decoder.W", "decoder.b"}
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("backend", BACKENDS)
def test_frozen_middle_layer_still_passes_gradient_down(backend):
    """A frozen layer between trainable ones must back-propagate through itself."""
    rng = np.random.default_rng(4)
    net = _dae([5, 4, 3], rng)
    net.attach_decoder(rng)
    net.freeze(1)
    X, T = _inputs(rng)
    errors = check_gradients(get_backend(backend), net, X, T)
    assert "encoder.0.W" in errors and "encoder.1.W" not in errors
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("backend", BACKENDS)
def test_stacked_phase_on_codes(backend):
    """A stacked phase: the chain starts at the top code of frozen layers."""
    rng = np.random.default_rng(5)
    net = _dae([5, 4], rng)
    net.freeze(0)
    net.attach_decoder(rng, target_level=1)
    codes = rng.uniform(0, 1, (6, 5))
    errors = check_gradients(get_backend(backend), net, codes, codes, start_level=1)
    assert set(errors) == {"encoder.1.W", "encoder.1.b", "decoder.W", "decoder.b"}
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("backend", BACKENDS)
def test_classifier(backend):
    rng = np.random.default_rng(6)
    net = _dae([5, 4], rng)
    net.attach_classifier(3, rng)
    X, _ = _inputs(rng)
    labels = np.array([0, 2, 1, 2, 0])
    errors = check_gradients(get_backend(backend), net, X, labels)
    assert set(errors) == set(net.parameters())
    assert max(errors.values()) < TOL, errors


def test_gradient_check_detects_a_wrong_gradient():
    """The checker itself can fail: a sign error in one kernel is caught."""
    import types

    from medalpy.kernels import reference

    broken = types.SimpleNamespace(**{k: getattr(reference, k) for k in dir(reference)
                                      if not k.startswith("_")})
    broken.column_sum = lambda delta, out: np.sum(-delta, axis=0, out=out)
    rng = np.random.default_rng(7)
    net = _dae([4], rng)
    net.attach_decoder(rng)
    X, T = _inputs(rng)
    errors = check_gradients(broken, net, X, T)
    assert errors["decoder.b"] > 0.5 and errors["decoder.W"] < TOL


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_workspace_of_a_pass_is_in_the_networks_dtype(backend, dtype):
    """Gradients, deltas and activations are held in the network's dtype: a float64 buffer
    in a float32 run would change its round-off and double that buffer's memory."""
    from medalpy.backprop import Pass
    from medalpy.optim import SGD

    rng = np.random.default_rng(0)
    net = Network(7, dtype=dtype)
    net.add_encoder(5, rng)
    net.add_encoder(4, rng)
    net.attach_decoder(rng)
    k = get_backend(backend)
    p = Pass(k, net.path(), 6, net.head, dtype)
    X, T = (a.astype(dtype) for a in _inputs(rng, n=6))
    p.backward(X, T)
    p.train_step(X, T, SGD(0.1))
    buffers = [*p.deltas.values(), *p.bias_grads.values(),
               *(dW for _, _, dW, _ in p.named_gradients()),
               *p._shared_weight_grads_views().values()]
    assert len(buffers) == 3 + 3 + 3 + 3
    assert {np.asarray(b).dtype for b in buffers} == {np.dtype(dtype)}
