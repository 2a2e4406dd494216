"""Schedule invariants observed on real training runs, best-parameter restore, early stop."""

import copy

import numpy as np
import pytest

from medalpy.backprop import Pass
from medalpy.errors import ConfigError, TrainingDiverged
from medalpy.run import make_config
from medalpy.kernels import get_backend
from medalpy.network import Network
from medalpy.schedules import build_schedule
from medalpy.trainer import Hyper, Trainer


def _data(seed=0, n=240, d=24):
    """Binary images with structure: a random mix of 4 prototypes with pixel noise."""
    rng = np.random.default_rng(seed)
    protos = rng.uniform(size=(4, d)) > 0.5
    X = protos[rng.integers(0, 4, n)] ^ (rng.uniform(size=(n, d)) < 0.05)
    return (X * 255).astype(np.uint8)


class Snapshots:
    """Copies of every parameter at the start and end of each phase and each epoch's end."""

    def __init__(self):
        self.phase_start, self.phase_end, self.epochs = {}, {}, []

    def on_phase_start(self, trainer, index, phase):
        self.phase_start[phase.name] = {k: v.copy()
                                        for k, v in trainer.network.parameters().items()}

    def on_phase_end(self, trainer, index, phase):
        self.phase_end[phase.name] = {k: v.copy() for k, v in trainer.network.parameters().items()}

    def on_epoch_end(self, trainer, record):
        params = {k: v.copy() for k, v in trainer.network.parameters().items()}
        self.epochs.append((record, params))


def _run(method, n_layers=2, fraction=None, hyper=None, callbacks=(), backend="cpu", **kw):
    X = _data()
    phases, _ = build_schedule(method, n_layers, 3, 2, fraction=fraction, **kw)
    snaps = Snapshots()
    net = Network(X.shape[1])
    trainer = Trainer(get_backend(backend), net, phases, hyper or Hyper(lr=0.05), X[:200],
                      X[200:], [16, 12, 8][:n_layers], seed=3, callbacks=[snaps, *callbacks])
    trainer.run()
    return trainer, snaps


def _moved(before, after, name):
    return not np.array_equal(before[name], after[name])


@pytest.mark.parametrize("n_layers", [2, 3])
def test_stacked_phase_leaves_frozen_layers_bit_identical(n_layers):
    trainer, snaps = _run("stacked", n_layers)
    for k in range(2, n_layers + 1):
        before = snaps.phase_end["1:layer" if k == 2 else f"{k - 1}:stacked"]
        after = snaps.phase_end[f"{k}:stacked"]
        for i in range(k - 1):
            for part in "Wb":
                assert np.array_equal(before[f"encoder.{i}.{part}"], after[f"encoder.{i}.{part}"])
        # The new layer trained: its weights at the phase's end differ from its start's.
        start = snaps.phase_start[f"{k}:stacked"]
        assert _moved(start, after, f"encoder.{k-1}.W") and _moved(start, after,
                                                                   f"encoder.{k-1}.b")
    assert trainer.network.head == "mirror" and sorted(trainer.network.mirror) == list(
        range(n_layers))


@pytest.mark.parametrize("n_layers", [2, 3])
def test_gradual_phase_moves_every_active_layer(n_layers):
    trainer, snaps = _run("gradual", n_layers)
    for k in range(2, n_layers + 1):
        before = snaps.phase_end["1:layer" if k == 2 else f"{k - 1}:gradual"]
        after = snaps.phase_end[f"{k}:gradual"]
        for i in range(k - 1):
            assert _moved(before, after, f"encoder.{i}.W") and _moved(before, after,
                                                                      f"encoder.{i}.b")
    assert trainer.network.head == "decoder" and trainer.network.decoder_target == 0


def test_ablation_freezes_exactly_the_lower_layers():
    _, snaps = _run("frozen_lower", 3)
    before, after = snaps.phase_end["2:frozen_lower"], snaps.phase_end["3:frozen_lower"]
    for part in "Wb":
        assert np.array_equal(before[f"encoder.0.{part}"], after[f"encoder.0.{part}"])
        assert np.array_equal(before[f"encoder.1.{part}"], after[f"encoder.1.{part}"])
    start = snaps.phase_start["3:frozen_lower"]
    assert _moved(start, after, "encoder.2.W") and _moved(start, after, "encoder.2.b")


def test_hybrid_discards_the_stacked_decoder_and_spends_the_budget():
    trainer, snaps = _run("hybrid", 2, fraction=0.5)
    assert [r["phase"] for r in trainer.history].count("2:stacked") == 2
    assert [r["phase"] for r in trainer.history].count("2:gradual") == 1
    assert trainer.units_spent == 3 + 2 * 2
    assert "mirror.1.W" not in snaps.phase_end["2:stacked"]
    assert "decoder.W" not in snaps.phase_end["2:stacked"]  # its decoder to codes discarded
    assert trainer.best is None and trainer.start_val is None  # nothing left of the last phase


def test_each_phase_ends_with_its_best_validation_parameters():
    trainer, snaps = _run("gradual", 2, hyper=Hyper(lr=0.5))
    for summary in trainer.phase_log:
        name, end = summary["phase"], snaps.phase_end[summary["phase"]]
        records = [(r, p) for r, p in snaps.epochs if r["phase"] == name]
        best_record, best_params = min(records, key=lambda rp: rp[0]["val_loss"])
        assert summary["kept_epoch"] == best_record["epoch"] > 0  # these phases all improve
        assert summary["best_val"] == best_record["val_loss"] < summary["start_val"]
        for key in best_params:
            if key in end:
                np.testing.assert_array_equal(end[key], best_params[key], err_msg=key)


def test_a_phase_that_never_improves_ends_exactly_where_it_began():
    """The start is a candidate: full tuning at a ruinous learning rate changes nothing."""
    hyper = Hyper(lr=0.05, overrides={"finetune": {"lr": 40.0, "normalise_gradients": False}})
    trainer, snaps = _run("gradual", 2, hyper=hyper, finetune_epochs=3)
    summary = trainer.phase_log[-1]
    tuning = [r for r in trainer.history if r["phase"] == "finetune"]
    assert len(tuning) == 3 and all(r["val_loss"] > summary["start_val"] for r in tuning)
    assert summary["kept_epoch"] == 0 and summary["best_val"] == summary["start_val"]
    start, end = snaps.phase_start["finetune"], snaps.phase_end["finetune"]
    assert start.keys() == end.keys()
    for key in start:
        np.testing.assert_array_equal(end[key], start[key], err_msg=key)
    # The start's score is the same validation loss the epochs report: evaluated again on
    # the restored parameters, it matches.
    net = trainer.network
    val_pass = Pass(trainer.backend, net.path(0), 1000, net.head, net.dtype, train=False)
    assert summary["start_val"] == pytest.approx(
        trainer._validation_loss(val_pass, _data()[200:], 0.15), rel=1e-6)


def test_the_budget_rule_is_the_best_scores_relative_gain_over_the_last_10_epochs():
    X = _data()
    phases, _ = build_schedule("gradual", 2, 12, 4)
    trainer = Trainer(get_backend("cpu"), Network(X.shape[1]), phases, Hyper(lr=0.05),
                      X[:200], X[200:], [16, 12], seed=2)
    trainer.run()
    layer1, gradual = trainer.phase_log
    best = [r["best_val_loss"] for r in trainer.history if r["phase"] == "1:layer"]
    expected = (best[-11] - best[-1]) / best[-11]
    assert layer1["last10_improvement"] == pytest.approx(expected, rel=1e-12)
    assert layer1["budget_rule"] == (expected <= 0.005)
    assert gradual["epochs_run"] == 4 and gradual["budget_rule"] is None
    assert gradual["last10_improvement"] is None and set(gradual) == set(layer1)


def test_patience_stops_a_phase_early_and_budget_runs_do_not():
    hyper = Hyper(lr=0.05, patience=1)
    X = _data()
    phases, _ = build_schedule("gradual", 1, 40, 0)
    trainer = Trainer(get_backend("cpu"), Network(X.shape[1]), phases, hyper, X[:200], X[200:],
                      [16], seed=1)
    trainer.run()
    assert len(trainer.history) < 40
    kept = trainer.phase_log[0]["kept_epoch"]
    assert trainer.history[-1]["epoch"] - kept == 1
    assert kept == 0 or trainer.history[kept - 1]["val_loss"] == trainer.phase_log[0]["best_val"]
    trainer, _ = _run("gradual", 2)
    assert len(trainer.history) == 3 + 2


def test_training_reduces_the_loss_on_both_backends_identically_in_float64():
    results = []
    for backend in ("numpy", "cpu"):
        X = _data()
        phases, _ = build_schedule("gradual", 2, 3, 2)
        net = Network(X.shape[1], dtype="float64")
        t = Trainer(get_backend(backend), net, phases, Hyper(lr=0.05), X[:200], X[200:],
                    [16, 12], seed=3)
        t.run()
        results.append((t.history, net.parameters()))
    (h0, p0), (h1, p1) = results
    assert h0[0]["val_loss"] > h0[2]["val_loss"]
    for a, b in zip(h0, h1):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-10)
    for key in p0:
        np.testing.assert_allclose(p0[key], p1[key], rtol=1e-9, atol=1e-12)


def test_divergence_stops_the_run_with_a_clear_message():
    class Explode:
        def on_epoch_end(self, trainer, record):
            trainer.optimiser.lr = 1e38
            trainer.optimiser.normalise_gradients = False

    with pytest.raises(TrainingDiverged, match="phase 1:layer, epoch 2.*lower the learning"):
        _run("gradual", 2, callbacks=[Explode()])


@pytest.mark.parametrize("method, eval_decoder, head", [("stacked", "direct", "decoder"),
                                                        ("gradual", "mirror", "mirror")])
def test_other_evaluation_decoder_is_fitted_on_frozen_encoders(method, eval_decoder, head):
    trainer, snaps = _run(method, 2, eval_decoder=eval_decoder)
    net = trainer.network
    assert net.head == head and (head != "decoder" or net.decoder_target == 0)
    before, after = snaps.phase_end[f"2:{method}"], snaps.phase_end["fit_decoder"]
    for i in range(2):
        assert np.array_equal(before[f"encoder.{i}.W"], after[f"encoder.{i}.W"])
    assert trainer.units_spent == 3 + 2 * 2  # the decoder fit is not counted
    from medalpy.evaluation import reconstruction_metrics

    X = _data()
    metrics = reconstruction_metrics(trainer.backend, net, X[200:], 0.15)
    assert metrics["relative_ce"] > 0


def test_finetune_trains_every_encoder_and_the_evaluation_decoder():
    trainer, snaps = _run("stacked", 2, finetune_epochs=2)
    before, after = snaps.phase_end["2:stacked"], snaps.phase_end["finetune"]
    for name in ("encoder.0.W", "encoder.1.W", "mirror.0.W", "mirror.1.W"):
        assert _moved(before, after, name), name
    assert trainer.network.head == "mirror"


def test_per_phase_overrides_reach_the_optimiser_and_the_batches():
    seen = {}

    class Spy:
        def on_epoch_end(self, trainer, record):
            seen[record["phase"]] = (trainer.optimiser.lr, trainer.optimiser.momentum)

    hyper = Hyper(lr=0.05, overrides={"gradual": {"lr": 0.01}, "1:layer": {"momentum": 0.5}})
    _run("gradual", 2, hyper=hyper, callbacks=[Spy()])
    assert seen == {"1:layer": (0.05, 0.5), "2:gradual": (0.01, 0.9)}


def test_callbacks_hear_each_phase_start_and_end_with_its_index_then_the_run_end():
    events = []

    class Events:
        def on_phase_start(self, trainer, index, phase):
            events.append(("start", index, phase.name))

        def on_phase_end(self, trainer, index, phase):
            events.append(("end", index, phase.name))

        def on_run_end(self, trainer):
            events.append(("run end",))

    _run("gradual", 3, callbacks=[Events()])
    assert events == [("start", 0, "1:layer"), ("end", 0, "1:layer"),
                      ("start", 1, "2:gradual"), ("end", 1, "2:gradual"),
                      ("start", 2, "3:gradual"), ("end", 2, "3:gradual"), ("run end",)]


def test_each_epoch_record_says_where_the_run_is_and_what_it_spent():
    """Phase 1 (one layer, 3 epochs) then gradual phase 2 (two layers, 2 epochs): units
    spent 1, 2, 3, 5, 7; ``improved`` when the validation loss beat the best so far (the
    phase's start included); ``seconds`` the epoch's own wall time."""
    import time

    t0 = time.perf_counter()
    trainer, _ = _run("gradual")
    wall = time.perf_counter() - t0
    records = trainer.history
    assert [set(r) for r in records] == [{"phase", "phase_index", "epoch", "epochs", "train_loss",
                                          "val_loss", "best_val_loss", "improved",
                                          "units_spent", "seconds"}] * 5
    assert [(r["phase_index"], r["epoch"], r["epochs"]) for r in records] == \
        [(0, 1, 3), (0, 2, 3), (0, 3, 3), (1, 1, 2), (1, 2, 2)]
    assert [r["units_spent"] for r in records] == [1, 2, 3, 5, 7]
    for summary in trainer.phase_log:
        best = summary["start_val"]
        for r in (r for r in records if r["phase"] == summary["phase"]):
            assert r["improved"] == (r["val_loss"] < best)
            best = min(best, r["val_loss"])
            assert r["best_val_loss"] == best
    assert all(0 <= r["seconds"] <= wall for r in records)
    assert sum(r["seconds"] for r in records) <= wall


def test_the_train_loss_is_the_mean_over_the_epochs_rows_in_plain_numpy():
    """With a learning rate of 0 nothing moves, so each epoch's ``train_loss`` is the
    cross-entropy of the initial network's reconstructions averaged over all 200 training
    images (noise 0), however the rows were batched (batches of 20, 20, ..., the last of
    8 with 188 rows)."""
    X = _data()
    phases, _ = build_schedule("gradual", 1, 2, 0)
    hyper = Hyper(lr=0.0, weight_decay=0.0, noise=0.0, normalise_gradients=False, batch_size=20)
    for n in (200, 188):
        net = Network(X.shape[1], dtype=np.float64)
        trainer = Trainer(get_backend("numpy"), net, phases, hyper, X[:n], X[200:], [12],
                          seed=3)
        trainer.run()
        T = X[:n] / 255.0
        enc, dec = net.encoders[0], net.decoder
        z = (1.0 / (1.0 + np.exp(-(T @ enc.W + enc.b)))) @ dec.W + dec.b
        expected = (np.logaddexp(0, z) - T * z).sum(axis=1).mean()
        assert [r["train_loss"] for r in trainer.history] == \
            pytest.approx([expected] * 2, rel=1e-12)


def test_random_streams_never_share_a_seed_sequence():
    """Orders, initialisations and noise of phases 0-3 and epochs 0-3, validation noise and
    the data splits' default_rng(seed) are all different generators (NumPy pads keys with
    zeros, so [s, p] and [s, p, 0] would be the same one)."""
    from medalpy.trainer import INIT, NOISE, ORDER, VAL_NOISE

    seed = 0
    keys = [[seed]] + [[seed, VAL_NOISE]]
    keys += [[seed, ORDER, p, e] for p in range(4) for e in range(4)]
    keys += [[seed, INIT, p] for p in range(4)] + [[seed, NOISE, p] for p in range(4)]
    states = {tuple(np.random.SeedSequence(k).generate_state(4)) for k in keys}
    assert len(states) == len(keys)


def test_each_phase_corrupts_with_its_own_noise_stream_of_the_runs_seed():
    """Phase p's training noise: ``noise_seed(seed, NOISE, p)``, the first 64-bit word of
    that seed sequence halved to a non-negative int64; streams differ by seed and by phase."""
    from medalpy.trainer import NOISE, noise_seed

    X = _data()
    phases, _ = build_schedule("gradual", 2, 1, 1)
    seeds = {}
    for seed in (0, 1):
        for p in (0, 1):
            trainer = Trainer(get_backend("numpy"), Network(24), phases, Hyper(), X[:200],
                              X[200:], [16, 12], seed)
            seeds[seed, p] = trainer.prepare(p).seed
            word = np.random.SeedSequence([seed, NOISE, p]).generate_state(1, np.uint64)[0]
            assert seeds[seed, p] == noise_seed(seed, NOISE, p) == int(word) // 2
            assert 0 <= seeds[seed, p] < 2 ** 63
    assert len(set(seeds.values())) == 4


def test_shuffled_minibatches_cut_a_fresh_permutation_of_the_rows():
    """Epoch e of phase p: ``default_rng([seed, ORDER, p, e]).permutation(N)`` cut into
    batches of B, the last one shorter, every row exactly once."""
    from medalpy.trainer import ORDER, minibatches

    N, B, seed, p, epoch = 47, 10, 3, 1, 2
    batches = minibatches("shuffle", N, B, seed, p, epoch)
    order = np.random.default_rng([seed, ORDER, p, epoch]).permutation(N)
    assert [len(b) for b in batches] == [10, 10, 10, 10, 7]
    np.testing.assert_array_equal(np.concatenate(batches), order)
    assert not np.array_equal(np.concatenate(minibatches("shuffle", N, B, seed, p, epoch + 1)),
                              order)


@pytest.mark.parametrize("method, p, level", [("gradual", 1, 0), ("stacked", 1, 1),
                                              ("gradual", 0, 0)])
def test_noise_enters_where_the_phase_says_at_its_rate(method, p, level):
    """Gradual phases corrupt the input images, stacked ones the clean codes of the layer
    below; masking zeroes each unit with probability `noise` (and the target stays clean)."""
    rng = np.random.default_rng(5)
    X = rng.integers(1, 256, size=(400, 30), dtype=np.uint8)  # no zero pixel to begin with
    phases, _ = build_schedule(method, 2, 1, 1)
    trainer = Trainer(get_backend("cpu"), Network(30), phases, Hyper(lr=0.05, noise=0.3,
                                                                      batch_size=400),
                      X, X[:50], [20, 10], seed=4)
    run = trainer.prepare(p)
    assert (trainer.position.phase, trainer.position.epoch) == (p, -1)  # as run() starts it
    assert trainer.units_spent == sum(phase.units for phase in phases[:p])
    assert phases[p].input_level == level and run.source.shape[1] == (30 if level == 0 else 20)
    assert np.all(np.asarray(run.source) > 0)  # images without zeros; codes of a sigmoid
    run.step(np.arange(400), 0, trainer.optimiser)
    masked = np.asarray(run.X_in) == 0
    assert abs(masked.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / masked.size)
    clean = np.asarray(run.source, dtype=np.float64)
    clean = clean / 255 if level == 0 else clean
    kept = ~masked
    np.testing.assert_allclose(np.asarray(run.X_in)[kept], clean[kept], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(run.X_target), clean, rtol=1e-6)


def _last_epoch_params(snaps, phase_name):
    return [p for r, p in snaps.epochs if r["phase"] == phase_name][-1]


def test_keep_last_ends_each_phase_on_its_last_epoch_not_its_best():
    """MEDAL's rule (keep = last): no best network restored. The same run with keep = best
    ends phase 1 on its second epoch, so the two rules are told apart."""
    best, best_snaps = _run("gradual", hyper=Hyper(lr=0.5, normalise_gradients=False))
    assert best.phase_log[0]["kept_epoch"] == 2
    assert _moved(_last_epoch_params(best_snaps, "1:layer"), best_snaps.phase_end["1:layer"],
                  "encoder.0.W")
    last, snaps = _run("gradual", hyper=Hyper(lr=0.5, normalise_gradients=False, keep="last"))
    assert [p["kept_epoch"] for p in last.phase_log] == [3, 2]
    for phase in ("1:layer", "2:gradual"):
        final = snaps.phase_end[phase]
        for name, array in _last_epoch_params(snaps, phase).items():
            assert np.array_equal(final[name], array), (phase, name)


def test_no_validation_images_need_keep_last_and_then_score_nothing():
    X = _data()
    phases, _ = build_schedule("gradual", 2, 2, 1)
    with pytest.raises(ConfigError, match="keep = last"):
        Trainer(get_backend("numpy"), Network(X.shape[1]), phases, Hyper(), X, X[:0], [16, 12], 0)
    trainer = Trainer(get_backend("numpy"), Network(X.shape[1]), phases, Hyper(keep="last"),
                      X, X[:0], [16, 12], 0)
    trainer.run()
    assert [r["val_loss"] for r in trainer.history] == [None] * 3
    assert [r["improved"] for r in trainer.history] == [False] * 3
    assert all(np.isfinite(r["train_loss"]) for r in trainer.history)
    with pytest.raises(ConfigError, match="val_size 0"):
        make_config({"val_size": 0})
    assert make_config({"val_size": 0, "keep": "last"}).val_size == 0


def test_initial_arrays_start_the_first_phase_only():
    """Given arrays replace the fresh layers of phase 1 (encoder.0 and its decoder); the
    decoder phase 2 creates is fresh even when a 'decoder' is given."""
    X = _data()
    rng = np.random.default_rng(7)
    initial = {"encoder.0.W": rng.uniform(-0.1, 0.1, (24, 16)), "encoder.0.b": rng.normal(size=16),
               "decoder.W": rng.uniform(-0.1, 0.1, (16, 24)), "decoder.b": rng.normal(size=24)}
    snaps = Snapshots()
    phases, _ = build_schedule("gradual", 2, 2, 1)
    Trainer(get_backend("numpy"), Network(24, "float64"), phases, Hyper(), X[:200], X[200:],
            [16, 12], 0, [snaps], initial=initial).run()
    start = snaps.phase_start["1:layer"]
    for name, array in initial.items():
        assert np.array_equal(start[name], array), name
    assert snaps.phase_start["2:gradual"]["decoder.W"].shape == (12, 24)
    fresh = Snapshots()
    Trainer(get_backend("numpy"), Network(24, "float64"), phases, Hyper(), X[:200], X[200:],
            [16, 12], 0, [fresh]).run()
    assert _moved(fresh.phase_start["1:layer"], start, "encoder.0.W")
    wrong = {**initial, "encoder.0.W": initial["encoder.0.W"][:, :5]}
    with pytest.raises(ConfigError, match=r"initial encoder.0.W is \(24, 5\)"):
        Trainer(get_backend("numpy"), Network(24, "float64"), phases, Hyper(), X[:200],
                X[200:], [16, 12], 0, initial=wrong).run()
    half = {k: v for k, v in initial.items() if k != "encoder.0.b"}
    with pytest.raises(ConfigError, match=r"initial arrays: encoder.0.W is given but not "
                                          r"encoder.0.b"):
        Trainer(get_backend("numpy"), Network(24, "float64"), phases, Hyper(), X[:200],
                X[200:], [16, 12], 0, initial=half).run()


def test_initial_arrays_replace_fresh_layers_not_given_ones():
    """A trainer handed pretrained encoders (the Python API allows it) applies initial
    arrays to the layers its first phase creates, here the classifier, and leaves the
    encoders it was given as they are, even when the arrays name them too."""
    from medalpy.schedules import classifier_schedule
    from medalpy.supervised import random_encoders

    X = _data()
    y = np.arange(240) % 3
    rng = np.random.default_rng(3)
    net = random_encoders(24, [16], seed=0, dtype="float64")
    pretrained = net.encoders[0].W.copy()
    initial = {"classifier.W": rng.normal(size=(16, 3)), "classifier.b": rng.normal(size=3),
               "encoder.0.W": rng.normal(size=(24, 16)), "encoder.0.b": rng.normal(size=16)}
    snaps = Snapshots()
    Trainer(get_backend("numpy"), net, classifier_schedule(1, 1), Hyper(), X[:200], X[200:],
            [16], 0, [snaps], labels=(y[:200], y[200:]), n_classes=3, initial=initial).run()
    start = snaps.phase_start["classify"]
    assert np.array_equal(start["classifier.W"], initial["classifier.W"])
    assert np.array_equal(start["classifier.b"], initial["classifier.b"])
    assert np.array_equal(start["encoder.0.W"], pretrained)


def test_the_runs_initialiser_makes_every_fresh_layer():
    """``Hyper.init`` reaches each layer a phase creates: encoders and direct decoders, a
    mirror stack and a classifier (with ``zeros`` they are exactly the all-zero weights at
    the phase's start; trained weights never are)."""
    from medalpy.schedules import classifier_schedule
    from medalpy.supervised import random_encoders

    def fresh_at_each_phase_start(trainer):
        zero = {}

        class Zeros:
            def on_phase_start(self, trainer, index, phase):
                zero[phase.name] = {name for name, layer in trainer.network.layers().items()
                                    if not np.any(layer.W)}

        trainer.callbacks.append(Zeros())
        trainer.run()
        return zero

    X = _data()
    hyper = Hyper(lr=0.05, init="zeros")
    phases, _ = build_schedule("gradual", 2, 1, 1, eval_decoder="mirror")
    trainer = Trainer(get_backend("numpy"), Network(24, "float64"), phases, hyper, X[:200],
                      X[200:], [16, 12], 0)
    assert fresh_at_each_phase_start(trainer) == {
        "1:layer": {"encoder.0", "decoder"}, "2:gradual": {"encoder.1", "decoder"},
        "fit_decoder": {"mirror.0", "mirror.1"}}
    y = np.arange(240) % 3
    net = random_encoders(24, [16, 12], seed=0, dtype="float64")
    trainer = Trainer(get_backend("numpy"), net, classifier_schedule(2, 1), hyper, X[:200],
                      X[200:], [16, 12], 0, labels=(y[:200], y[200:]), n_classes=3)
    assert fresh_at_each_phase_start(trainer) == {"classify": {"classifier"}}
    with pytest.raises(ConfigError, match="a supervised phase needs labels and n_classes"):
        Trainer(get_backend("numpy"), net, classifier_schedule(2, 1), hyper, X[:200], X[200:],
                [16, 12], 0, labels=(y[:200], y[200:]))


def test_init_from_a_model_file(tmp_path):
    """``init_from``: a saved model's arrays start the first phase of a new run."""
    from medalpy import checkpoint
    from medalpy.run import build_trainer

    X = _data()
    cfg = make_config({"layers": [16], "epochs_layer1": 1, "backend": "numpy"})
    first = build_trainer(cfg, X[:200], X[200:])
    first.run()
    checkpoint.save(tmp_path / "m.h5", first.network, cfg.to_dict())
    snaps = Snapshots()
    cfg2 = make_config({"layers": [16, 12], "epochs_layer1": 1, "budget": 1,
                        "backend": "numpy", "init_from": str(tmp_path / "m.h5"), "seed": 5})
    build_trainer(cfg2, X[:200], X[200:], callbacks=[snaps]).run()
    for name, array in first.network.parameters().items():
        assert np.array_equal(snaps.phase_start["1:layer"][name], array), name
    with pytest.raises(ConfigError, match="init_from: no such model file"):
        make_config({"init_from": str(tmp_path / "absent.h5")})


class StopAfter:
    """Keeps a deep copy of the trainer's state and network at the end of one epoch."""

    def __init__(self, phase, epoch):
        self.at, self.saved = (phase, epoch), None

    def on_epoch_end(self, trainer, record):
        if (record["phase"], record["epoch"]) == self.at:
            self.saved = copy.deepcopy((trainer.state(), trainer.network))


@pytest.mark.parametrize("method, p, epoch, patience", [
    ("gradual", 1, 1, None), ("stacked", 1, 1, None),
    ("gradual", 0, 2, None),  # not a phase's first epoch: the position says which
    ("gradual", 0, 1, 0)])  # a phase stopped by patience stays stopped
def test_a_run_restored_mid_phase_ends_bit_identical_to_one_never_stopped(method, p, epoch,
                                                                          patience):
    """What a checkpoint holds is enough: the position, the best parameters and the
    momentum velocities (a restored run without them would take other steps)."""
    X, hyper = _data(), Hyper(lr=0.05, momentum=0.9, patience=patience)
    phases, _ = build_schedule(method, 2, 3, 2)

    def trainer(net, callbacks=()):
        return Trainer(get_backend("cpu"), net, phases, hyper, X[:200], X[200:], [16, 12],
                       seed=3, callbacks=list(callbacks))

    stop = StopAfter(phases[p].name, epoch)
    whole = trainer(Network(X.shape[1]), [stop])
    whole.run()
    state, net = stop.saved
    assert state["velocity"] and any(np.any(v != 0) for v in state["velocity"].values())
    resumed = trainer(net)
    resumed.restore(state)
    resumed.run()
    final, again = whole.network.parameters(), resumed.network.parameters()
    assert final.keys() == again.keys()
    assert all(np.array_equal(final[k], again[k]) for k in final)
    untimed = [[{k: v for k, v in r.items() if k != "seconds"} for r in t.history]
               for t in (whole, resumed)]
    assert untimed[0] == untimed[1]
    # the phases' summaries too: the start's score, the best kept, the budget rule
    assert len(whole.phase_log) == 2 and whole.phase_log == resumed.phase_log


def test_a_trainer_that_has_not_run_has_no_velocity_to_save():
    X = _data()
    phases, _ = build_schedule("gradual", 2, 1, 1)
    trainer = Trainer(get_backend("cpu"), Network(X.shape[1]), phases, Hyper(), X[:200],
                      X[200:], [16, 12], seed=3)
    assert trainer.state()["velocity"] == {} and trainer.state()["units_spent"] == 0


@pytest.mark.parametrize("method", ["gradual", "stacked"])
def test_a_run_started_at_phase_2_from_phase_1s_result_is_the_whole_run(method):
    """What the experiments do with a shared layer-1 cell: ``start_at(1)`` on a network
    holding phase 1's result ends bit-identical to the run that did both, with the budget of
    phase 1 counted."""
    X = _data()
    phases, _ = build_schedule(method, 2, 2, 2)

    def trainer(net, ph):
        return Trainer(get_backend("cpu"), net, ph, Hyper(lr=0.05), X[:200], X[200:], [16, 12],
                       seed=3)

    whole = trainer(Network(X.shape[1]), phases)
    whole.run()
    first = trainer(Network(X.shape[1]), phases[:1])
    first.run()
    rest = trainer(first.network, phases)
    rest.start_at(1)
    assert rest.units_spent == phases[0].units
    rest.run()
    final, again = whole.network.parameters(), rest.network.parameters()
    assert final.keys() == again.keys()
    assert all(np.array_equal(final[k], again[k]) for k in final)
    assert rest.units_spent == whole.units_spent
    assert [r["phase"] for r in rest.history] == [phases[1].name] * phases[1].epochs


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_the_validation_loss_equals_plain_numpy_over_several_batches(monkeypatch, backend):
    """The score every phase keeps its best parameters by: the mean over validation images of
    the cross-entropy of the reconstruction of the image corrupted by the fixed validation
    noise stream of the run's seed; batches of 16, 16 and 8 rows."""
    from medalpy import config
    from medalpy.kernels.reference import keep_mask
    from medalpy.trainer import VAL_NOISE, noise_seed

    monkeypatch.setattr(config, "EVAL_BATCH", 16)
    X = _data()
    X_val = X[200:]  # 40 rows
    rng = np.random.default_rng(5)
    net = Network(X.shape[1], dtype=np.float64)
    net.add_encoder(12, rng)
    net.attach_decoder(rng, 0)
    for layer in net.layers().values():  # weights large enough for the output to react
        layer.W[...] = rng.normal(0, 0.5, layer.W.shape)
        layer.b[...] = rng.normal(0, 0.5, layer.b.shape)
    k = get_backend(backend)
    phases, _ = build_schedule("gradual", 1, 1, 0)
    trainer = Trainer(k, net, phases, Hyper(), X[:200], X_val, [12], seed=3)
    val_pass = Pass(k, net.path(0), config.EVAL_BATCH, net.head, net.dtype, train=False)
    got = trainer._validation_loss(val_pass, k.to_device(X_val), 0.3)

    T = X_val / 255.0
    A = T * keep_mask(noise_seed(3, VAL_NOISE), 0, np.arange(len(X_val)), X.shape[1], 0.3)
    path = [layer for _, layer in net.path(0)]
    for layer in path[:-1]:
        A = 1.0 / (1.0 + np.exp(-(A @ layer.W + layer.b)))
    z = A @ path[-1].W + path[-1].b
    expected = (np.logaddexp(0, z) - T * z).sum(axis=1).mean()
    assert got == pytest.approx(expected, rel=1e-12)


def test_a_phase_of_no_epochs_is_summarised_without_scores():
    """The frozen-lower ablation with a budget of 0: phase 2 runs no epoch, keeps nothing
    and has no budget-rule figure (and does not crash)."""
    X = _data()
    phases, _ = build_schedule("frozen_lower", 2, 1, 0)
    trainer = Trainer(get_backend("numpy"), Network(X.shape[1]), phases, Hyper(lr=0.05),
                      X[:200], X[200:], [16, 12], seed=0)
    trainer.run()
    assert trainer.phase_log[1] == {"phase": "2:frozen_lower", "epochs_run": 0,
                                    "start_val": None, "best_val": None, "kept_epoch": None,
                                    "last10_improvement": None, "budget_rule": None}


@pytest.mark.parametrize("start, last, gain, rule", [
    (0.0, 0.0, 0.0, True),  # a classifier at no validation error ten epochs before the end
    (200 / 256, 199 / 256, 0.005, True),  # a gain of exactly 0.5% still meets the rule
    (1.0, 0.99, 0.01, False),  # 1%: it does not
])
def test_the_budget_rule_at_its_edges(start, last, gain, rule):
    """The rule compares the best score ten epochs before the phase's end (here the start)
    with the last: a relative gain of at most 0.5% holds, a zero score gains nothing."""
    X = _data()
    phases, _ = build_schedule("gradual", 1, 10, 0)
    trainer = Trainer(get_backend("numpy"), Network(X.shape[1]), phases, Hyper(), X[:200],
                      X[200:], [16], seed=0)
    trainer.history = [{"phase_index": 0, "best_val_loss": last} for _ in range(10)]
    trainer.best, trainer.start_val = {"val": last, "epoch": 9}, start
    summary = trainer._summary(0, phases[0])
    assert summary["budget_rule"] is rule
    assert summary["last10_improvement"] == pytest.approx(gain, abs=1e-15)


def test_a_phase_is_scored_under_the_runs_own_noise():
    """The validation score corrupts with the run's noise type and rate (Gaussian here),
    not masking's."""
    X = _data()
    phases, _ = build_schedule("gradual", 1, 1, 0)
    hyper = Hyper(noise=0.3, noise_type="gaussian")
    trainer = Trainer(get_backend("numpy"), Network(X.shape[1]), phases, hyper, X[:200],
                      X[200:], [16], seed=0)
    run = trainer.prepare(0)
    settings = hyper.for_phase(phases[0])
    score = trainer._score(phases[0], settings, run)
    assert score == trainer._validation_loss(run.val_pass, run.val_source, 0.3, "gaussian")
    assert score != trainer._validation_loss(run.val_pass, run.val_source, 0.3, "masking")
