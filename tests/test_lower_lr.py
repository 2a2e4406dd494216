"""Schedules between stacked and gradual: a multiplier m(t) on the lower layers' learning rate
in gradual phases (``lower_lr``)."""

import math
import re
import subprocess
import sys

import numpy as np
import pytest

from medalpy.errors import ConfigError
from medalpy.kernels import get_backend
from medalpy.network import Layer
from medalpy.optim import SGD
from medalpy.run import build_trainer, make_config
from medalpy.schedules import LowerLR, build_schedule


def _data(n=240, d=24, seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.uniform(size=(4, d)) > 0.5
    X = protos[rng.integers(0, 4, n)] ^ (rng.uniform(size=(n, d)) < 0.05)
    return (X * 255).astype(np.uint8)


def _run(backend="cpu", **options):
    X = _data()
    cfg = make_config({"layers": [16, 12, 8], "epochs_layer1": 2, "budget": 3, "lr": 0.05,
                       "backend": backend, "seed": 4, **options})
    trainer = build_trainer(cfg, X[:200], X[200:])
    trainer.run()
    return trainer


def _same_weights(a, b):
    pa, pb = a.network.parameters(), b.network.parameters()
    assert list(pa) == list(pb)
    return all(np.array_equal(pa[k], pb[k]) for k in pa)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_multiplier_one_is_gradual_bit_for_bit(backend):
    assert _same_weights(_run(backend, lower_lr="const:1"), _run(backend))


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_multiplier_zero_is_the_equal_epochs_ablation_bit_for_bit(backend):
    zero = _run(backend, lower_lr="const:0")
    ablation = _run(backend, method="frozen_lower", ablation_budget="epochs")
    assert _same_weights(zero, ablation)
    # and a multiplier in between is neither
    half = _run(backend, lower_lr="const:0.5")
    assert not _same_weights(half, zero) and not _same_weights(half, _run(backend))


def test_every_member_spends_what_gradual_spends():
    spent = {spec: _run("numpy", lower_lr=spec).units_spent
             for spec in (None, "const:0", "const:0.5", "linear", "cosine", "exp:1",
                          "invtime:0.5")}
    assert len(set(spent.values())) == 1 and spent[None] == 2 * 1 + 3 * 2 + 3 * 3


def test_the_multiplier_at_known_example_counts():
    N, T = 200, 600
    assert LowerLR.parse("linear").multiplier(300, T, N, 1, 1) == 0.5
    assert LowerLR.parse("cosine").multiplier(150, T, N, 1, 1) == pytest.approx(
        (1 + math.cos(math.pi / 4)) / 2)
    assert LowerLR.parse("exp:2").multiplier(400, T, N, 1, 1) == 0.5
    assert LowerLR.parse("invtime:0.5").multiplier(100, T, N, 1, 1) == 0.5
    assert LowerLR.parse("const:0.25").multiplier(599, T, N, 1, 1) == 0.25
    # the mean over a phase: linear's is (1 + 1/n_batches) / 2 for one epoch of n batches
    assert LowerLR.parse("linear").mean(200, 20, 1, 1) == pytest.approx((1 + 1 / 10) / 2)


def test_the_depth_schedules_at_known_example_counts():
    """disc:F is F^-depth at every t; freezeout:T0 anneals each lower layer by a cosine to 0
    at s_d T, s_d = T0 + (1 - T0) (L - d) / L: the lowest layer (d = L) first."""
    N, T = 200, 600
    disc = LowerLR.parse("disc:2.5")
    assert [disc.multiplier(t, T, N, d, 3) for t, d in ((0, 1), (300, 2), (599, 3))] == [
        2.5 ** -1, 2.5 ** -2, 2.5 ** -3]
    freeze = LowerLR.parse("freezeout:0.5")
    # L = 2: depth 2 stops at T/2, depth 1 at 3T/4.
    assert freeze.multiplier(0, T, N, 2, 2) == 1.0
    assert freeze.multiplier(150, T, N, 2, 2) == pytest.approx(0.5)
    assert freeze.multiplier(300, T, N, 2, 2) == 0.0
    assert freeze.multiplier(225, T, N, 1, 2) == pytest.approx(0.5)
    assert freeze.multiplier(449, T, N, 1, 2) > 0 and freeze.multiplier(450, T, N, 1, 2) == 0
    # One lower layer: freezeout:1 is cosine; the mean covers every lower layer.
    assert LowerLR.parse("freezeout:1").multiplier(150, T, N, 1, 1) == \
        LowerLR.parse("cosine").multiplier(150, T, N, 1, 1)
    assert disc.mean(200, 20, 1, lower=2) == pytest.approx((2.5 ** -1 + 2.5 ** -2) / 2)
    # a layer stays frozen once its cosine has reached 0 (it does not rise again)
    assert [freeze.multiplier(t, T, N, 1, 2) for t in (500, 599)] == [0.0, 0.0]


@pytest.mark.parametrize("spec, lower", [("linear", 1), ("freezeout:0.5", 2), ("exp:0.5", 1)])
def test_the_mean_multiplier_weighs_each_example_by_its_minibatch_m(spec, lower):
    """Per example: the m of the minibatch it is presented in, over 2 epochs of N = 210
    examples in batches of 20 (the last one short), averaged over the lower layers."""
    N, B, epochs, sched = 210, 20, 2, LowerLR.parse(spec)
    T = N * epochs
    per_example = [sched.multiplier(e * N + B * (i // B), T, N, d, lower)
                   for d in range(1, lower + 1) for e in range(epochs) for i in range(N)]
    assert sched.mean(N, B, epochs, lower) == pytest.approx(np.mean(per_example), rel=1e-12)


@pytest.mark.parametrize("spec", ["const:0", "const:1", "disc:1", "freezeout:1", "exp:1e-3",
                                  "invtime:2.5", "linear", "cosine"])
def test_specs_at_the_edges_of_their_ranges_are_accepted(spec):
    assert LowerLR.parse(spec).kind == spec.partition(":")[0]


def test_disc_in_a_two_layer_network_is_the_constant_one_over_f_bit_for_bit():
    """With one lower layer (depth 1), disc:F scales it by 1/F throughout: const:1/F."""
    two = {"layers": [16, 12]}
    assert _same_weights(_run("numpy", lower_lr="disc:2", **two),
                         _run("numpy", lower_lr="const:0.5", **two))
    assert not _same_weights(_run("numpy", lower_lr="disc:2"),  # three layers: 1/2 and 1/4
                             _run("numpy", lower_lr="const:0.5"))


def _phase3_multipliers(lower_lr, budget):
    """(the lower layers' lr_scale at the end of each epoch of phase 3, the trainer) of a
    3-layer gradual run on the numpy backend, 200 training examples, batch 20."""
    seen = []

    class Spy:
        def on_epoch_end(self, trainer, record):
            if record["phase"] == "3:gradual":
                seen.append(dict(trainer.optimiser.lr_scale))

    X = _data()
    cfg = make_config({"layers": [16, 12, 8], "epochs_layer1": 1, "budget": budget,
                       "backend": "numpy", "lower_lr": lower_lr})
    trainer = build_trainer(cfg, X[:200], X[200:], callbacks=[Spy()])
    trainer.run()
    return seen, trainer


def test_the_trainer_gives_each_lower_layer_its_depths_multiplier():
    """Phase 3 of a 3-layer gradual run with disc:2: encoder 1 (depth 1) at 1/2, encoder 0
    (depth 2) at 1/4, at every batch."""
    seen, trainer = _phase3_multipliers("disc:2", budget=2)
    assert seen == [{"encoder.0": 0.25, "encoder.1": 0.5}] * 2
    assert trainer.phase_log[2]["mean_multiplier"] == pytest.approx(0.375)


def test_the_trainer_applies_m_to_the_lower_layers_only():
    """At the end of each epoch of phase 3 (3 epochs of 200 examples, batch 20), the last
    batch started at t = 200 e + 180: linear's m = 1 - t / 600 on encoders 0 and 1."""
    seen, trainer = _phase3_multipliers("linear", budget=3)
    assert seen == [{"encoder.0": 1 - t / 600, "encoder.1": 1 - t / 600}
                    for t in (180, 380, 580)]
    summary = trainer.phase_log[2]
    assert summary["lower_lr"] == "linear"
    assert summary["mean_multiplier"] == pytest.approx((1 + 1 / 30) / 2)


def test_the_trainer_anneals_freezeouts_lower_layers_one_after_another():
    """freezeout:0.5 in phase 3 (600 examples, last batch of epoch e at t = 200 e + 180):
    encoder 0 (depth 2 of 2 lower layers) anneals to 0 at t = 300, encoder 1 at t = 450."""
    seen, _ = _phase3_multipliers("freezeout:0.5", budget=3)
    cos = lambda t, stop: 0.5 * (1 + math.cos(math.pi * t / stop)) if t < stop else 0.0  # noqa
    assert seen == [pytest.approx({"encoder.0": cos(t, 300), "encoder.1": cos(t, 450)},
                                  rel=1e-12) for t in (180, 380, 580)]
    assert seen[1]["encoder.0"] == 0.0 < seen[1]["encoder.1"]


def test_a_scaled_layer_takes_exactly_the_scaled_step():
    k = get_backend("numpy")
    rng = np.random.default_rng(0)
    W, dW, b, db = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), rng.normal(size=3), \
        rng.normal(size=3)
    scaled, plain = Layer(W.copy(), b.copy()), Layer(W.copy(), b.copy())
    SGD(0.1, 0.9, 1e-3, lr_scale={"encoder.0": 0.25}).apply(k, "encoder.0", scaled, dW, db)
    SGD(0.025, 0.9, 1e-3).apply(k, "encoder.0", plain, dW, db)
    assert np.array_equal(scaled.W, plain.W) and np.array_equal(scaled.b, plain.b)


@pytest.mark.parametrize("spec", ["const:1.5", "const:-0.1", "exp:0", "invtime:-2", "linear:3",
                                  "const", "sideways", "exp:nan", "disc:0.5", "freezeout:0",
                                  "freezeout:1.5", "disc", "const:abc"])
def test_malformed_specs_are_refused(spec):
    usage = (r"^lower_lr must be const:C \(C in \[0, 1\]\), linear, cosine, exp:H or "
             r"invtime:TAU \(H, TAU in epochs, positive\), disc:F \(F >= 1\) or freezeout:T0 "
             r"\(T0 in \(0, 1\]\), got ")
    with pytest.raises(ConfigError, match=usage + re.escape(repr(spec)) + "$"):
        make_config({"lower_lr": spec})


@pytest.mark.parametrize("method", ["stacked", "frozen_lower"])
def test_only_schedules_with_gradual_phases_take_it(method):
    with pytest.raises(ConfigError, match=f"lower_lr is for the gradual phases.*{method}"):
        build_schedule(method, 2, 1, 1, lower_lr="linear")


def test_hybrid_gradual_part_carries_it():
    phases, _ = build_schedule("hybrid", 2, 1, 4, fraction=0.5, lower_lr="cosine")
    assert [(p.kind, p.lower_lr) for p in phases] == [("layer1", None), ("stacked", None),
                                                        ("gradual", "cosine")]


def test_cli_errors_are_one_line():
    for args, message in ((["--lower-lr", "const:2"], "lower_lr must be"),
                          (["--stacked", "--lower-lr", "linear"], "not stacked")):
        done = subprocess.run([sys.executable, "-m", "medalpy", "train", "mnist-sample",
                               *args, "--out", "/nonexistent/never"], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
