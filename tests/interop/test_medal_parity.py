"""MEDAL parity, against a run of the original MEDAL toolbox under GNU Octave.

``$MEDALPY_MEDAL_DATA`` (``.ci/run`` sets it to ``../shared/medal``) holds MEDAL's data, its
initial and trained weights of a 784-200-784 denoising autoencoder (2 epochs, noise 0, lr 0.1,
momentum 0.9, decay 1e-3, normGrad, batch 20) and its per-epoch training cost. With MEDAL's
batch order, no validation set, the last epoch kept and MEDAL's initial weights, medalpy must
land on MEDAL's weights. MEDAL stores W as (fan_out, fan_in); medalpy as (fan_in, fan_out).
"""

import os
from pathlib import Path

import numpy as np
import pytest

import medalpy
from medalpy.trainer import minibatches

MEDAL = Path(os.environ.get("MEDALPY_MEDAL_DATA", "/nonexistent"))
GOLDEN = MEDAL / "golden_h200_e2_s3_noise0.mat"

needs_medal = pytest.mark.skipif(
    not GOLDEN.is_file(),
    reason="MEDAL's reference run is absent: set MEDALPY_MEDAL_DATA to ../shared/medal")

PARITY = {"layers": [200], "epochs_layer1": 2, "noise": 0.0, "lr": 0.1, "momentum": 0.9,
          "weight_decay": 1e-3, "normalise_gradients": True, "batch_size": 20,
          "batch_order": "medal", "keep": "last", "val_size": 0, "dtype": "float64"}


@pytest.fixture(scope="module")
def medal_run():
    from scipy.io import loadmat

    return loadmat(GOLDEN), loadmat(MEDAL / "mnist_small.mat")["trainData"]


def _train(golden, X, backend, **changes):
    cfg = medalpy.make_config({**PARITY, "backend": backend, **changes})
    initial = {"encoder.0.W": golden["W1_0"].T, "encoder.0.b": golden["b1_0"].ravel(),
               "decoder.W": golden["W2_0"].T, "decoder.b": golden["b2_0"].ravel()}
    trainer = medalpy.build_trainer(cfg, X, X[:0], initial=initial)
    trainer.run()
    return trainer


@needs_medal
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_lands_on_medal_weights_and_cost(medal_run, backend):
    golden, X = medal_run
    trainer = _train(golden, X, backend)
    params = trainer.network.parameters()
    for ours, theirs in (("encoder.0.W", golden["W1"].T), ("encoder.0.b", golden["b1"].ravel()),
                         ("decoder.W", golden["W2"].T), ("decoder.b", golden["b2"].ravel())):
        np.testing.assert_allclose(params[ours], theirs, rtol=0, atol=1e-10, err_msg=ours)
    np.testing.assert_allclose([r["train_loss"] for r in trainer.history],
                               golden["trainCost"].ravel(), rtol=1e-12)


@needs_medal
def test_shuffled_order_does_not_match(medal_run):
    """The batch order is what parity hinges on: medalpy's own shuffled order lands elsewhere."""
    golden, X = medal_run
    trainer = _train(golden, X, "numpy", batch_order="shuffle")
    assert np.abs(trainer.network.parameters()["encoder.0.W"] - golden["W1"].T).max() > 1e-4


def test_medal_blocks_are_matlabs():
    """MATLAB's ``round(linspace(1, N + 1, ceil(N / B) + 1))``, halves away from zero, as
    0-based blocks: N = 45, B = 20 gives edges 1, 16, 31, 46 (blocks of 15)."""
    blocks = minibatches("medal", 45, 20, seed=0, p=0, epoch=0)
    assert [(b[0], b[-1]) for b in blocks] == [(0, 14), (15, 29), (30, 44)]
    # index arrays that NumPy can gather with (the numpy backend's X[rows]): every row once
    X = np.arange(45)[:, None]
    assert np.concatenate([X[b] for b in blocks]).ravel().tolist() == list(range(45))
    # N = 50, B = 20: linspace(1, 51, 4) = 1, 17.67, 34.33, 51 -> 1, 18, 34, 51.
    assert [len(b) for b in minibatches("medal", 50, 20, 0, 0, 0)] == [17, 16, 17]
    # ties: N = 6, B = 4: linspace(1, 7, 3) = 1, 4, 7 (none); N = 3, B = 2: 1, 2.5, 4 -> 3
    assert [len(b) for b in minibatches("medal", 3, 2, 0, 0, 0)] == [2, 1]
    # the same every epoch, unlike the shuffled order
    assert all(np.array_equal(a, b) for a, b in zip(minibatches("medal", 50, 20, 0, 0, 0),
                                                    minibatches("medal", 50, 20, 0, 0, 5)))
