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


def test_zero_gradient_with_normalisation_does_not_divide_by_zero():
    layer = _layer()
    opt = SGD(lr=0.1, momentum=0.0, normalise_gradients=True)
    opt.step(get_backend("numpy"), [("l", layer, np.zeros((2, 1)), np.zeros(1))])
    np.testing.assert_array_equal(layer.W, _layer().W)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("n", [3, 40])  # Gram route (n <= 32) and the direct sum of squares
def test_gradient_norms_from_the_pass_equal_the_direct_ones(backend, n):
    from medalpy.backprop import GRAM_MAX_BATCH, Pass
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
