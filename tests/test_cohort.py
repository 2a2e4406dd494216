"""Cohorts (medalpy.cohort, cluster.Cohorts): cells trained together equal cells trained one
by one; epochs whose steps match are grouped; a member's failure stays its own.

The batched step itself is the cuda backend's (tests/kernels/cuda_sim_cases.py checks it on
the simulator); here a backend whose ``CohortStep`` runs each member's epoch by itself and
records the groups it was given checks the coordinator: who is grouped with whom, in what
order, and that nothing is lost when members stop at different times.
"""

import types

import numpy as np
import pytest

from medalpy import cohort as cohorts
from medalpy.cluster import Cohorts
from medalpy.kernels import get_backend
from medalpy.network import Network
from medalpy.schedules import build_schedule
from medalpy.trainer import Hyper, Trainer


def _data(seed, n=120, d=12):
    rng = np.random.default_rng(seed)
    protos = rng.uniform(size=(3, d)) > 0.5
    X = protos[rng.integers(0, 3, n)] ^ (rng.uniform(size=(n, d)) < 0.05)
    return (X * 255).astype(np.uint8)


def _recording_backend(groups):
    """The numpy backend with a ``CohortStep`` that records each group's size and phase."""
    base = get_backend("numpy")

    class CohortStep:
        def __init__(self, runs):
            self.runs = runs

        def epoch(self, requests):
            groups.append((len(self.runs), self.runs[0].train_pass.names[-1],
                           sorted({r[1] for r in requests})))
            return [run.epoch(*request) for run, request in zip(self.runs, requests)]

    backend = types.ModuleType("recording_numpy")
    backend.__dict__.update({k: v for k, v in vars(base).items() if not k.startswith("__")})
    backend.CohortStep = CohortStep
    return backend


def _cell(backend, method, seed, patience=None, fail=False, lower_lr=None):
    """A cell: a short two-layer schedule on its own data; returns history and weights."""
    def run():
        X = _data(seed)
        phases, _ = build_schedule(method, 2, 2, 2, lower_lr=lower_lr)
        net = Network(X.shape[1], dtype="float64")
        trainer = Trainer(backend, net, phases, Hyper(lr=0.05, batch_size=16, patience=patience,
                                                      normalise_gradients=False),
                          X[:100], X[100:], [8, 6], seed=seed)
        if fail:
            raise_at = trainer.phases[1]
            original = trainer._train_phase

            def broken(p, phase, settings):
                if phase is raise_at:
                    raise RuntimeError("a member's own error")
                return original(p, phase, settings)

            trainer._train_phase = broken
        trainer.run()
        return trainer.history, {k: v.copy() for k, v in net.parameters().items()}
    return run


def _run_all(executor, cells):
    futures = [executor.submit(cell) for cell in cells]
    pending = list(futures)
    while pending:
        for done in executor.wait_any(pending):
            pending.remove(done)
    return futures


def _same(a, b):
    (h0, p0), (h1, p1) = a, b
    assert [r["train_loss"] for r in h0] == [r["train_loss"] for r in h1]
    assert [r["val_loss"] for r in h0] == [r["val_loss"] for r in h1]
    assert sorted(p0) == sorted(p1)
    for key in p0:
        np.testing.assert_array_equal(p0[key], p1[key])


def test_a_cohort_equals_its_cells_trained_one_by_one_and_groups_matching_epochs():
    groups = []
    backend = _recording_backend(groups)
    specs = [("gradual", 1), ("gradual", 2), ("stacked", 3)]
    alone = [_cell(get_backend("numpy"), m, s)() for m, s in specs]
    together = _run_all(Cohorts(), [_cell(backend, m, s) for m, s in specs])
    for a, future in zip(alone, together):
        _same(a, future.result())
    # Phase 1 (layer 1, 2 epochs) is the same step for all three: one group of 3 per epoch.
    # Phase 2: the two gradual members share a step; the stacked one trains a different
    # chain (frozen layer 1, its input the codes) and so runs by itself, not in a group.
    assert [g for g in groups if g[1] == "decoder" and g[0] == 3] == [(3, "decoder", [0]),
                                                                    (3, "decoder", [1])]
    assert sum(1 for g in groups if g[0] == 2) == 2  # the gradual pair, two epochs
    assert all(g[0] >= 2 for g in groups)  # a member alone is never handed to CohortStep


def test_cohort_members_keep_their_own_lower_layer_multipliers():
    """Gradual members with different m(t) (``--lower-lr``) trained together each end as
    when trained alone."""
    backend = _recording_backend([])
    specs = [(1, None), (2, "linear"), (3, "const:0.25")]
    alone = [_cell(get_backend("numpy"), "gradual", s, lower_lr=m)() for s, m in specs]
    together = _run_all(Cohorts(), [_cell(backend, "gradual", s, lower_lr=m) for s, m in specs])
    for a, future in zip(alone, together):
        _same(a, future.result())


def test_members_that_stop_early_leave_the_others_batched():
    groups = []
    backend = _recording_backend(groups)
    specs = [("gradual", 4, 1), ("gradual", 5, None), ("gradual", 6, None)]
    alone = [_cell(get_backend("numpy"), m, s, patience=p)() for m, s, p in specs]
    cells = [_cell(backend, m, s, patience=p) for m, s, p in specs]
    for a, future in zip(alone, _run_all(Cohorts(), cells)):
        _same(a, future.result())
    assert groups, "nothing was batched"


def test_a_members_error_is_its_own_and_the_others_finish():
    backend = _recording_backend([])
    futures = _run_all(Cohorts(), [_cell(backend, "gradual", 7),
                                   _cell(backend, "gradual", 8, fail=True),
                                   _cell(backend, "gradual", 9)])
    with pytest.raises(RuntimeError, match="a member's own error"):
        futures[1].result()
    _same(futures[0].result(), _cell(get_backend("numpy"), "gradual", 7)())
    _same(futures[2].result(), _cell(get_backend("numpy"), "gradual", 9)())


def test_outside_a_cohort_a_trainer_runs_its_epochs_itself():
    assert cohorts.current.get() is None
    history, _ = _cell(get_backend("numpy"), "gradual", 1)()
    assert len(history) == 4


def test_an_experiment_run_as_a_cohort_equals_its_serial_run(tmp_path):
    """The experiment runner with the Cohorts executor (cells as threads taking turns; on the
    cpu backend, which has no batched step, each epoch runs by itself) records the serial
    run's numbers, bit for bit."""
    import json

    from medalpy.cluster import Here
    from medalpy.experiments import run_experiment

    runs = []
    for name, executor in (("serial", Here()), ("cohort", Cohorts())):
        run_experiment("ablation", "mnist-sample", tmp_path / name, scale="smoke", splits=1,
                       executor=executor)
        runs.append(json.loads((tmp_path / name / "results.json").read_text())["cells"])
    assert runs[0].keys() == runs[1].keys()
    compared = 0
    for key, cell in runs[0].items():
        for field in ("relative_ce", "test_error"):
            if field in cell:
                assert runs[1][key][field] == cell[field], (key, field)
                compared += 1
    assert compared >= 3
