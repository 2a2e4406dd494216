"""The benchmark's peers compute the maths medalpy's step computes: their steps from given
weights against a plain NumPy computation of the same SGD, and a noisy run that learns."""

import numpy as np
import pytest

from medalpy.bench import peers
from medalpy.bench.steps import PHASES, _batches, _synthetic

LIBRARY = {"torch": "torch", "torch-compile": "torch", "jax": "jax"}
LR, MOMENTUM, DECAY = 0.1, 0.9, 1e-3


def _peer(name):
    pytest.importorskip(LIBRARY[name])
    return peers.PEERS[name]


def _init(widths, seed=1, out_bias=0.0):
    """[(W, b)] in float32, uniform in +-1/sqrt(n_in) (nn.Linear's default), the output
    layer's biases shifted by ``out_bias``."""
    rng = np.random.default_rng(seed)
    layers = []
    for n_in, n_out in zip(widths, widths[1:]):
        bound = 1 / np.sqrt(n_in)
        layers.append((rng.uniform(-bound, bound, (n_in, n_out)).astype(np.float32),
                       rng.uniform(-bound, bound, n_out).astype(np.float32)))
    W, b = layers[-1]
    layers[-1] = (W, (b + out_bias).astype(np.float32))
    return layers


def numpy_sgd(phase, batch_size, init, n_steps, seed=0):
    """(losses, [(W, b)]) of ``n_steps`` noise-free steps from ``init``, in float64: the
    peers' batches, loss and ``torch.optim.SGD`` update, written out by hand."""
    widths, _, kind, head = PHASES[phase]
    rng = np.random.default_rng(seed)
    source, labels = _synthetic(phase, rng)
    data = source.astype(np.float32) / 255.0 if kind == "uint8" else source
    batches = _batches(rng, batch_size)
    params = [(W.astype(np.float64), b.astype(np.float64)) for W, b in init]
    velocities = [(np.zeros_like(W), np.zeros_like(b)) for W, b in params]
    losses = []
    for _ in range(n_steps):
        rows = next(batches)
        x = data[rows].astype(np.float64)
        levels = [x]  # each layer's input, then the output
        for i, (W, b) in enumerate(params):
            z = levels[-1] @ W + b
            last = i == len(params) - 1
            levels.append(z if last and head == "classifier" else 1 / (1 + np.exp(-z)))
        out = levels[-1]
        if head == "classifier":
            shifted = out - out.max(axis=1, keepdims=True)
            log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            losses.append(-log_p[np.arange(batch_size), labels[rows]].mean())
            delta = np.exp(log_p)
            delta[np.arange(batch_size), labels[rows]] -= 1
            delta /= batch_size  # d loss / d logits
        else:
            losses.append(-(x * np.log(out) + (1 - x) * np.log(1 - out)).sum() / batch_size)
            delta = (out - x) / batch_size  # d loss / d logits, sigmoid and BCE together
        grads = [None] * len(params)
        for i in reversed(range(len(params))):
            W, _ = params[i]
            grads[i] = (levels[i].T @ delta, delta.sum(axis=0))
            delta = (delta @ W.T) * levels[i] * (1 - levels[i])
        velocities = [(MOMENTUM * vW + gW + DECAY * W, MOMENTUM * vb + gb + DECAY * b)
                      for (vW, vb), (gW, gb), (W, b) in zip(velocities, grads, params)]
        params = [(W - LR * vW, b - LR * vb) for (W, b), (vW, vb) in zip(params, velocities)]
    return losses, params


@pytest.mark.parametrize("phase", ["gradual", "supervised"])
@pytest.mark.parametrize("name", list(peers.PEERS))
def test_a_peer_computes_the_numpy_sgd_steps(name, phase):
    # Two steps, so that the second runs on the first's update and momentum enters.
    init = _init(PHASES[phase][0])
    step = _peer(name)(phase, 4, lr=LR, momentum=MOMENTUM, weight_decay=DECAY, noise=0.0,
                       init=init)
    losses = [step(), step()]
    want_losses, want = numpy_sgd(phase, 4, init, 2)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    for (W, b), (want_W, want_b), (W0, b0) in zip(step.weights(), want, init):
        assert W.shape == W0.shape and b.shape == b0.shape
        # Against the largest update, so the check is on the steps, not on the weights.
        scale = max(np.abs(want_W - W0).max(), np.abs(want_b - b0).max())
        np.testing.assert_allclose(W, want_W, rtol=0, atol=1e-4 * scale)
        np.testing.assert_allclose(b, want_b, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize("name", list(peers.PEERS))
def test_a_noisy_peer_learns(name):
    # Outputs started near 0 (biases -4) against targets uniform in [0, 1]: the loss falls
    # as they rise towards 1/2, through the masking noise.
    init = _init(PHASES["layer1"][0], out_bias=-4.0)
    step = _peer(name)("layer1", 4, lr=1e-4, init=init)
    losses = [step() for _ in range(20)]
    assert np.all(np.isfinite(losses))
    assert max(losses[-5:]) < min(losses[:5])


def test_available_peers_are_the_installed_ones():
    have = {name for name in peers.PEERS if _installed(LIBRARY[name])}
    assert set(peers.available_peers()) == have


def _installed(library):
    try:
        __import__(library)
    except ImportError:
        return False
    return True
