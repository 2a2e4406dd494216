"""One SGD step worked out by hand pins MEDAL's update rule."""

import numpy as np
import pytest

from medalpy.kernels import get_backend
from medalpy.network import Layer
from medalpy.optim import SGD


def _layer():
    return Layer(np.array([[1.0], [-2.0]]), np.array([0.5]))


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_one_step_with_momentum_decay_and_normalisation(backend):
    layer = _layer()
    dW, db = np.array([[3.0], [0.0]]), np.array([4.0])
    opt = SGD(lr=0.1, momentum=0.9, weight_decay=0.01, normalise_gradients=True,
              velocity={"l.W": np.array([[1.0], [1.0]]), "l.b": np.array([2.0])})
    opt.step(get_backend(backend), [("l", layer, dW, db)])
    # ||[dW; db]|| = ||(3, 0, 4)|| = 5, so the gradient is scaled by 1/5.
    # V_W = 0.9 * 1 + 0.1 * (0.2 * 3 + 0.01 * 1)    = 0.961  -> W = 1 - 0.961    = 0.039
    # V_W = 0.9 * 1 + 0.1 * (0.2 * 0 + 0.01 * -2)   = 0.898  -> W = -2 - 0.898   = -2.898
    # V_b = 0.9 * 2 + 0.1 * (0.2 * 4)  (no decay)    = 1.88   -> b = 0.5 - 1.88   = -1.38
    np.testing.assert_allclose(opt.velocity["l.W"], [[0.961], [0.898]], rtol=1e-12)
    np.testing.assert_allclose(layer.W, [[0.039], [-2.898]], rtol=1e-12)
    np.testing.assert_allclose(opt.velocity["l.b"], [1.88], rtol=1e-12)
    np.testing.assert_allclose(layer.b, [-1.38], rtol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_first_step_without_normalisation_starts_from_zero_velocity(backend):
    layer = _layer()
    dW, db = np.array([[3.0], [0.0]]), np.array([4.0])
    opt = SGD(lr=0.1, momentum=0.9, weight_decay=0.01)
    opt.step(get_backend(backend), [("l", layer, dW, db)])
    # V_W = 0.1 * (3 + 0.01 * 1) = 0.301, 0.1 * (0 + 0.01 * -2) = -0.002; V_b = 0.1 * 4 = 0.4
    np.testing.assert_allclose(layer.W, [[1 - 0.301], [-2 + 0.002]], rtol=1e-12)
    np.testing.assert_allclose(layer.b, [0.5 - 0.4], rtol=1e-12)
    assert set(opt.velocity) == {"l.W", "l.b"}


def test_normalisation_scales_a_small_gradient_up_to_unit_norm():
    """normGrad divides by the norm whatever its size: ||(0.3, 0, 0.4)|| = 0.5 doubles it."""
    layer = _layer()
    opt = SGD(lr=0.1, momentum=0.0, normalise_gradients=True)
    opt.step(get_backend("numpy"), [("l", layer, np.array([[0.3], [0.0]]), np.array([0.4]))])
    # W = (1, -2) - 0.1 * 2 * (0.3, 0) = (0.94, -2); b = 0.5 - 0.1 * 2 * 0.4 = 0.42
    np.testing.assert_allclose(layer.W, [[0.94], [-2.0]], rtol=1e-12)
    np.testing.assert_allclose(layer.b, [0.42], rtol=1e-12)


def test_zero_gradient_with_normalisation_does_not_divide_by_zero():
    layer = _layer()
    opt = SGD(lr=0.1, momentum=0.0, normalise_gradients=True)
    opt.step(get_backend("numpy"), [("l", layer, np.zeros((2, 1)), np.zeros(1))])
    np.testing.assert_array_equal(layer.W, _layer().W)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("n", [3, 40])  # Gram route (n <= 32) and the direct sum of squares
def test_gradient_norms_from_the_pass_equal_the_direct_ones(backend, n):
    from medalpy.backprop import Pass
    from medalpy.config import GRAM_MAX_BATCH
    from medalpy.network import Network

    assert 3 <= GRAM_MAX_BATCH < 40
    k = get_backend(backend)
    rng = np.random.default_rng(0)
    net = Network(9, dtype="float64")
    net.add_encoder(7, rng)
    net.add_encoder(5, rng)
    net.attach_decoder(rng)
    net.freeze(0)
    p = Pass(k, net.path(), 40, net.head, np.float64)
    p.backward(rng.uniform(size=(n, 9)), rng.uniform(size=(n, 9)))
    direct = [k.sum_of_squares(dW) + k.sum_of_squares(db) for _, _, dW, db in
              p.named_gradients()]
    assert len(direct) == 2
    np.testing.assert_allclose(p.gradient_sq_norms(), direct, rtol=1e-12)


def _both_forms(k, nets, dtype, normalise, batches, rel):
    """Train nets[0] with backward() + SGD.update() and nets[1] with Pass.train_step on the
    same batches, checking the losses agree to ``rel``; returns the two optimisers."""
    from medalpy.backprop import Pass

    passes = [Pass(k, net.path(), 40, net.head, dtype) for net in nets]
    optimisers = [SGD(0.1, 0.9, 1e-3, normalise) for _ in nets]
    for X, T in batches:
        loss_a = passes[0].backward(X, T)
        optimisers[0].update(k, passes[0])
        loss_b = passes[1].train_step(X, T, optimisers[1])
        assert loss_b == pytest.approx(loss_a, rel=rel)
    return optimisers


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("normalise", [True, False])
@pytest.mark.parametrize("n", [5, 32, 40])  # the Gram-matrix norm (up to 32 rows), the direct one
@pytest.mark.parametrize("frozen", [False, True])
def test_train_step_equals_backward_then_update(backend, normalise, n, frozen):
    """Pass.train_step updates each layer as soon as its gradient is final, through one
    shared gradient buffer; three steps of it must equal backward() + SGD.update()."""
    from medalpy.config import GRAM_MAX_BATCH
    from medalpy.network import Network

    assert 5 <= GRAM_MAX_BATCH < 40  # so the two batch sizes take the two norm paths
    k = get_backend(backend)
    rng = np.random.default_rng(1)
    nets = []
    for _ in range(2):
        net = Network(9, dtype="float64")
        net.add_encoder(7, np.random.default_rng(2))
        net.add_encoder(6, np.random.default_rng(3))
        net.attach_decoder(np.random.default_rng(4))
        if frozen:
            net.freeze(0)
        nets.append(net)
    batches = [(rng.uniform(size=(n, 9)), rng.uniform(size=(n, 9))) for _ in range(3)]
    optimisers = _both_forms(k, nets, np.float64, normalise, batches, rel=1e-12)
    start = Network(9, dtype="float64")
    start.add_encoder(7, np.random.default_rng(2))
    params = [net.parameters() for net in nets]
    for name, value in params[0].items():
        np.testing.assert_allclose(params[1][name], value, rtol=1e-12, atol=1e-15)
    # The frozen encoder did not move; a trainable one did.
    assert np.array_equal(params[1]["encoder.0.W"], start.encoders[0].W) == frozen
    assert optimisers[0].velocity.keys() == optimisers[1].velocity.keys()
    assert len(optimisers[0].velocity) == (4 if frozen else 6)
    for name, v in optimisers[0].velocity.items():
        np.testing.assert_allclose(optimisers[1].velocity[name], v, rtol=1e-12, atol=1e-15)
        assert np.any(v != 0)


@pytest.mark.parametrize("n", [1, 20, 33])
@pytest.mark.parametrize("head", ["decoder", "classifier"])
def test_train_step_float32_wide_layers_on_the_cpu_lanes(head, n):
    """The same equality in float32 with layers wide enough (>= 64 columns) that the cpu
    backend's products run on lanes, for both heads and a one-row batch: the two forms may
    differ only by float32 rounding of sums taken in another order."""
    from medalpy.network import Network

    k = get_backend("cpu")
    rng = np.random.default_rng(5)
    nets = []
    for _ in range(2):
        net = Network(90, dtype="float32")
        net.add_encoder(80, np.random.default_rng(6))
        net.add_encoder(70, np.random.default_rng(7))
        if head == "decoder":
            net.attach_decoder(np.random.default_rng(8))
        else:
            net.attach_classifier(10, np.random.default_rng(8))
        nets.append(net)
    batches = [(rng.uniform(size=(n, 90)).astype(np.float32),
                rng.integers(0, 10, size=n) if head == "classifier"
                else rng.uniform(size=(n, 90)).astype(np.float32)) for _ in range(3)]
    _both_forms(k, nets, np.float32, True, batches, rel=1e-5)
    params = [net.parameters() for net in nets]
    for name, value in params[0].items():
        np.testing.assert_allclose(params[1][name], value, rtol=0, atol=1e-5, err_msg=name)


def test_two_layers_sharing_a_name_are_refused_not_updated_past_the_velocity():
    """Velocities are keyed by name and the kernels trust shapes: a second, larger layer of
    the same name must raise, not write past the end of the first layer's velocity."""
    k = get_backend("cpu")
    opt = SGD(0.1, 0.9, 1e-3)
    small = Layer(np.ones((2, 3)), np.zeros(3))
    large = Layer(np.ones((4, 3)), np.zeros(3))
    opt.apply(k, "layer", small, np.ones((2, 3)), np.ones(3))
    with pytest.raises(ValueError, match="share the name 'layer'"):
        opt.apply(k, "layer", large, np.ones((4, 3)), np.ones(3))
    assert np.array_equal(large.W, np.ones((4, 3)))
