"""The paper's experiments at the smoke scale on the bundled real MNIST sample: cells,
resume after a real interruption, reports and figures."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from medalpy.cli import main
from medalpy.experiments import run_experiment
from medalpy.experiments.cells import Cell, run_cells


@pytest.mark.parametrize("name", ["fsweep", "trainsize", "ablation"])
def test_experiment_cells_report_and_figure(tmp_path, name):
    record = run_experiment(name, "mnist-sample", tmp_path, scale="smoke", splits=2)
    assert record["failed_cells"] == {}
    cells = record["cells"]
    # Layer 1 trained once per split and shared by every schedule of the split.
    assert sorted(k for k in cells if k.endswith("layer1")) == ["split0/layer1", "split1/layer1"]
    assert all(c["status"] == "done" for c in cells.values())
    report = (tmp_path / "report.md").read_text()
    assert f"# medalpy experiment: {name}" in report and "± " in report
    assert json.loads((tmp_path / "results.json").read_text())["summary"] == record["summary"]
    pytest.importorskip("matplotlib")
    assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_fsweep_cells_spend_equal_budgets(tmp_path):
    record = run_experiment("fsweep", "mnist-sample", tmp_path, scale="smoke", splits=1)
    spent = {k: c["budget_units_spent"] for k, c in record["cells"].items()
             if "/f" in k and not k.endswith("-tuned")}
    assert len(spent) == 5 and len(set(spent.values())) == 1
    rows = record["summary"]["rows"]
    assert [r["f"] for r in rows] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(r["relative_ce"]["mean"] > 0 and r["tuned_relative_ce"]["mean"] > 0 for r in rows)


def test_trainsize_reports_three_initialisations(tmp_path):
    record = run_experiment("trainsize", "mnist-sample", tmp_path, scale="smoke", splits=2)
    row = record["summary"]["rows"][0]
    assert row["size"] == 100
    for init in ("gradual", "stacked", "random"):
        assert row[init]["n"] == 2 and 0 <= row[init]["mean"] <= 1
    assert row["gradual_vs_stacked"]["n"] == 2


def test_a_failing_cell_is_recorded_and_its_dependants_skipped(tmp_path):
    cells = [Cell("a", "layer1", {"dataset": "no-such-dataset"}),
             Cell("b", "pretrain", {}, needs=("a",)),
             Cell("c", "classify", {"dataset": "also-missing"})]
    results = run_cells(cells, tmp_path)
    assert results["a"]["status"] == "error" and "unknown dataset" in results["a"]["error"]
    assert results["b"]["status"] == "skipped" and "needs failed cell(s) a" in results["b"]["error"]
    assert results["c"]["status"] == "error"
    assert json.loads((tmp_path / "cells" / "b.json").read_text())["status"] == "skipped"


@pytest.mark.slow
def test_interrupted_experiment_resumes_without_recomputing(tmp_path):
    args = [sys.executable, "-m", "medalpy", "experiment", "fsweep", "--dataset", "mnist-sample",
            "--scale", "smoke", "--splits", "2", "--workers", "0", "--out", str(tmp_path)]
    run = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cells_dir = tmp_path / "cells" / "split0"
    deadline = time.time() + 120
    while time.time() < deadline and run.poll() is None:
        if cells_dir.exists() and len(list(cells_dir.glob("f*.json"))) >= 2:
            break
        time.sleep(0.01)
    assert run.poll() is None, "the experiment finished before it could be interrupted"
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    done_before = {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").rglob("*.json")}
    assert 3 <= len(done_before) < 22 and not (tmp_path / "results.json").exists()
    result = CliRunner().invoke(main, args[3:])
    assert result.exit_code == 0, result.output
    assert f"{len(done_before)} of 22 cells already done; resuming" in result.output
    for path, mtime in done_before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was recomputed"
    assert len(list((tmp_path / "cells").rglob("*.json"))) == 22  # 2 x (layer 1, 5 f, 5 tuned)


def test_other_experiment_in_the_same_directory_is_refused(tmp_path):
    run_experiment("fsweep", "mnist-sample", tmp_path, scale="smoke", splits=1)
    result = CliRunner().invoke(main, ["experiment", "fsweep", "--dataset", "mnist-sample",
                                       "--scale", "smoke", "--splits", "2",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 2 and "holds a different experiment" in result.output


def test_experiment_list_measures_costs():
    result = CliRunner().invoke(main, ["experiment", "list", "--dataset", "mnist-sample"])
    assert result.exit_code == 0, result.output
    assert "fsweep" in result.output and "step times (ms, batch 20): layer1 784-250-784" in \
        result.output
    assert "gradual 784-1000-1000-784" in result.output  # medium and paper time their own net


@pytest.mark.slow
def test_experiment_cells_on_worker_processes_equal_the_serial_run_bit_for_bit(tmp_path):
    """The same experiment here (products on two lanes), on a local Dask cluster and on
    plain worker processes (one lane each) gives the same numbers, bit for bit: a cell's
    result depends on its settings, not on where it ran."""
    pytest.importorskip("distributed")
    from medalpy.cluster import Processes, default_workers

    args = ["experiment", "ablation", "--dataset", "mnist-sample", "--scale", "smoke",
            "--splits", "1"]
    serial = CliRunner().invoke(main, [*args, "--workers", "0", "--out",
                                       str(tmp_path / "serial")])
    assert serial.exit_code == 0, serial.output
    # By default cells go to one single-threaded worker per core (here a Dask cluster).
    dask = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "dask")])
    assert dask.exit_code == 0, dask.output
    if default_workers() > 1:
        assert f"local cluster of {default_workers()} single-threaded worker" in dask.output
    pool = Processes(2)
    try:
        run_experiment("ablation", "mnist-sample", tmp_path / "processes", scale="smoke",
                       splits=1, executor=pool)
    finally:
        pool.close()
    runs = [json.loads((tmp_path / name / "results.json").read_text())["cells"]
            for name in ("serial", "dask", "processes")]
    assert runs[0].keys() == runs[1].keys() == runs[2].keys()
    compared = 0
    for key in runs[0]:
        for field in ("relative_ce", "test_error"):
            if field in runs[0][key]:
                assert runs[0][key][field] == runs[1][key][field] == runs[2][key][field], \
                    (key, field)
                compared += 1
    assert compared >= 3


def test_cells_run_one_at_a_time_here_each_recorded_before_the_next_starts(tmp_path):
    """Here runs a cell only when the one before it has been written: a kill loses at most
    the cell that was running."""
    cells = [Cell(f"c{i}", "tests.test_experiments.count_recorded", {}) for i in range(3)]
    results = run_cells(cells, tmp_path)
    assert [results[f"c{i}"]["recorded_before"] for i in range(3)] == [0, 1, 2]


def test_the_runner_lets_go_of_a_cell_once_it_is_recorded(tmp_path):
    """A finished future still referenced makes a Dask cluster keep the cell's result, and
    compute the cell again (for nothing: it is on disk) when the worker holding it is lost.
    So no finished future may still be alive while the runner waits for the next."""
    import weakref

    from medalpy.cluster import Here

    class Watched(Here):
        def __init__(self):
            self.finished, self.alive_while_waiting = [], []

        def wait_any(self, futures):
            self.alive_while_waiting += [ref for ref in self.finished if ref() is not None]
            done = super().wait_any(futures)
            self.finished += [weakref.ref(future) for future in done]
            return done

    executor = Watched()
    cells = [Cell(f"c{i}", "tests.test_experiments.count_recorded", {}) for i in range(3)]
    results = run_cells(cells, tmp_path, executor=executor)
    assert all(r["status"] == "done" for r in results.values())
    assert len(executor.finished) == 3 and executor.alive_while_waiting == []


def count_recorded(params, work, out_dir):
    """A cell step: how many cells had been recorded when this one started."""
    return {"recorded_before": len(list((Path(out_dir) / "cells").glob("*.json")))}


def test_a_chain_of_failed_needs_and_an_unknown_need_are_recorded_as_skipped(tmp_path):
    cells = [Cell("a", "layer1", {"dataset": "no-such-dataset"}),
             Cell("c", "tests.test_experiments.count_recorded", {}, needs=("b",)),
             Cell("b", "tests.test_experiments.count_recorded", {}, needs=("a",)),
             Cell("d", "tests.test_experiments.count_recorded", {}, needs=("nowhere",))]
    results = run_cells(cells, tmp_path)
    assert [results[k]["status"] for k in "abcd"] == ["error", "skipped", "skipped", "skipped"]
    assert "never ran: nowhere" in results["d"]["error"]
    assert len(list((tmp_path / "cells").glob("*.json"))) == 4


def die(params, work, out_dir):
    """A cell step whose worker process dies (as one killed for memory would)."""
    os._exit(1)


def test_a_dead_worker_fails_its_cell_and_the_pool_starts_again(tmp_path):
    """A worker that dies fails the cell it ran (and those that need it); the next cells
    given to the same pool (a search's next rung) run on a pool started again."""
    from medalpy.cluster import Processes

    pool = Processes(1)
    try:
        first = run_cells([Cell("a", "tests.test_experiments.die", {}),
                           Cell("b", "tests.test_experiments.count_recorded", {},
                                needs=("a",))], tmp_path, executor=pool)
        second = run_cells([Cell("c", "tests.test_experiments.count_recorded", {})],
                           tmp_path, executor=pool)
    finally:
        pool.close()
    assert first["a"]["status"] == "error" and "BrokenProcessPool" in first["a"]["error"]
    assert first["b"]["status"] == "skipped"
    assert second["c"]["status"] == "done" and second["c"]["recorded_before"] == 2


def environment_variable(name):
    return os.environ.get(name)


def test_worker_processes_hold_their_thread_pools_to_one_thread_and_report_errors(tmp_path):
    from medalpy.cluster import SINGLE_THREAD_ENV, Processes

    before = {name: os.environ.get(name) for name in SINGLE_THREAD_ENV}
    pool = Processes(2)
    try:
        assert {name: os.environ.get(name) for name in SINGLE_THREAD_ENV} == before
        env = pool.submit(environment_variable, "NUMBA_NUM_THREADS").result()
        assert env == "1"
        cells = [Cell("a", "layer1", {"dataset": "no-such-dataset"}),
                 Cell("b", "tests.test_experiments.count_recorded", {}, needs=("a",)),
                 Cell("c", "tests.test_experiments.count_recorded", {})]
        results = run_cells(cells, tmp_path, executor=pool)
    finally:
        pool.close()
    assert results["a"]["status"] == "error" and results["b"]["status"] == "skipped"
    assert results["c"]["status"] == "done"


def test_failed_cells_run_again_on_the_next_run(tmp_path):
    run_experiment("ablation", "mnist-sample", tmp_path, scale="smoke", splits=1)
    path = tmp_path / "cells" / "split0" / "gradual.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "status": "error", "error": "simulated"}))
    lines = []
    again = run_experiment("ablation", "mnist-sample", tmp_path, scale="smoke", splits=1,
                           echo=lines.append)
    assert "running again 1 cell(s) that failed or were skipped before" in lines
    assert again["cells"]["split0/gradual"]["status"] == "done"
    assert again["cells"]["split0/gradual"]["relative_ce"] == record["relative_ce"]


def test_a_fresh_clone_recomputes_absent_models_from_the_seed(tmp_path):
    """Only the cells' JSON records travel in git: a classifier cell whose encoders' model
    file is absent reruns the pretraining (and its layer 1) and says so, with the hash of
    the weights it used."""
    first = run_experiment("trainsize", "mnist-sample", tmp_path, scale="smoke", splits=1)
    for model in (tmp_path / "cells").rglob("*.h5"):
        model.unlink()
    (tmp_path / "cells" / "split0" / "classify-stacked-n100.json").unlink()
    again = run_experiment("trainsize", "mnist-sample", tmp_path, scale="smoke", splits=1)
    cell = again["cells"]["split0/classify-stacked-n100"]
    assert cell["encoders_recomputed"] is True
    assert cell["encoders_sha"] == first["cells"]["split0/stacked"]["weights_sha"]
    assert cell["test_error"] == first["cells"]["split0/classify-stacked-n100"]["test_error"]
    assert (tmp_path / "cells" / "split0" / "layer1" / "model.h5").exists()
    assert again["summary"]["recomputed_weights"] == [
        {"cell": "split0/classify-stacked-n100", "from": "split0/stacked",
         "same_weights": True}]
    assert "recomputed the weights of split0/stacked from the seed (the same" in \
        (tmp_path / "report.md").read_text()


def test_the_ablation_runs_both_readings_of_equal_budget(tmp_path):
    record = run_experiment("ablation", "mnist-sample", tmp_path, scale="smoke", splits=1)
    cells = record["cells"]
    epochs = {k: [p["epochs_run"] for p in cells[f"split0/{k}"]["phases"]]
              for k in ("gradual", "frozen_lower", "frozen_lower-epochs")}
    assert epochs == {"gradual": [1], "frozen_lower": [2], "frozen_lower-epochs": [1]}
    assert cells["split0/frozen_lower"]["budget_units_spent"] == 1 + 2
    assert cells["split0/frozen_lower-epochs"]["budget_units_spent"] == 1 + 1
    report = (tmp_path / "report.md").read_text()
    assert "frozen lower, equal updates" in report and "frozen lower, equal epochs" in report
    assert "| split0/layer1 | 1:layer | 1 |" in report  # the per-phase budget-rule table


def test_experiment_settings_are_recorded_and_bad_ones_refused_before_writing(tmp_path):
    record = run_experiment("trainsize", "mnist-sample", tmp_path / "ok", scale="smoke",
                            splits=1, noise=0.3, sizes=[50], classifier={"lr": 0.05})
    assert record["noise"] == 0.3 and record["sizes"] == [50]
    assert record["classifier"]["lr"] == 0.05 and record["classifier"]["epochs"] == 3
    cell = record["cells"]["split0/classify-random-n50"]
    assert cell["params"]["classifier"]["lr"] == 0.05 and cell["n_train"] == 50
    assert record["cells"]["split0/layer1"]["params"]["noise"] == 0.3
    base = ["experiment", "trainsize", "--dataset", "mnist-sample", "--scale", "smoke",
            "--splits", "1"]
    for bad, message in ((["--classifier-lr", "-1"], "--classifier-lr must be positive"),
                         (["--classifier-momentum", "5"], "--classifier-momentum must be in"),
                         (["--classifier-weight-decay", "inf"], "--classifier-weight-decay"),
                         (["--sizes", "5"], "--sizes: 5 is not between the 10 classes"),
                         (["--sizes", "100000"], "--sizes: 100000 is not between"),
                         (["--preset", "nope"], "Invalid value for '--preset'"),
                         (["--noise", "1.0"], "noise (masking: the probability of setting a unit to 0) must be"),
                         (["--workers", "-2"], "--workers must be 0 or more")):
        out = tmp_path / "bad"
        result = CliRunner().invoke(main, [*base, *bad, "--out", str(out)])
        assert result.exit_code == 2 and message in result.output, (bad, result.output)
        assert not out.exists(), bad


def test_reproduce_classifies_from_the_f0_and_f1_encoders_of_the_fsweep(tmp_path):
    record = run_experiment("reproduce", "mnist-sample", tmp_path, scale="smoke", splits=1,
                            sizes=[100])
    cells = record["cells"]
    assert sorted(k for k in cells if "/f" in k) == ["split0/f0", "split0/f0-tuned", "split0/f1",
                                                      "split0/f1-tuned"]
    assert cells["split0/classify-gradual-n100"]["params"]["encoders"] == "split0/f0"
    assert cells["split0/classify-stacked-n100"]["params"]["encoders"] == "split0/f1"
    assert cells["split0/classify-stacked-n100"]["encoders_sha"] == \
        cells["split0/f1"]["weights_sha"]
    assert "tuned_relative_ce" in cells["split0/f1-tuned"]
    assert cells["split0/f1-tuned"]["pretrained_sha"] == cells["split0/f1"]["weights_sha"]
    summary = record["summary"]
    assert [r["f"] for r in summary["fsweep"]["rows"]] == [0.0, 1.0]
    assert summary["trainsize"]["rows"][0]["random"]["n"] == 1
    report = (tmp_path / "report.md").read_text()
    assert "## Reconstruction (fsweep)" in report and "## Classification" in report
    with pytest.raises(Exception, match="fractions 0 \\(gradual\\) and 1"):
        run_experiment("reproduce", "mnist-sample", tmp_path / "x", scale="smoke", splits=1,
                       fractions=[0.5, 1.0])
    assert not (tmp_path / "x").exists()


def test_lrsched_runs_the_family_at_equal_budget(tmp_path):
    """Every member but the ablation (gradual, stacked and the m(t) family) spends the same
    budget; the equal-epochs ablation (m = 0 by its weights) counts only its top layer's
    units; mean multipliers run from 0 (ablation) to 1 (gradual); the ablation and
    m = 0 agree; the report has one row per member and a figure."""
    record = run_experiment("lrsched", "mnist-sample", tmp_path, scale="smoke", splits=1)
    assert record["failed_cells"] == {}
    cells = record["cells"]
    members = [k.split("/")[1] for k in cells if "/" in k and "classify" not in k
               and not k.endswith("layer1") and not k.endswith("-tuned")]
    assert members == ["gradual", "stacked", "frozen_lower-epochs", "lower-const0.5",
                       "lower-linear", "lower-cosine", "lower-invtime0.125", "lower-invtime0.5"]
    spent = {m: cells[f"split0/{m}"]["budget_units_spent"] for m in members}
    ablation = spent.pop("frozen_lower-epochs")
    assert set(spent.values()) == {3} and ablation == 2, spent  # layer 1 + 2 units, + 1 unit
    rows = {r["member"]: r for r in record["summary"]["rows"]}
    assert rows["gradual"]["mean_multiplier"] == 1.0
    assert rows["frozen_lower-epochs"]["mean_multiplier"] == 0.0
    assert rows["lower-const0.5"]["mean_multiplier"] == 0.5
    assert rows["stacked"]["mean_multiplier"] is None
    assert 0 < rows["lower-invtime0.125"]["mean_multiplier"] < rows["lower-invtime0.5"][
        "mean_multiplier"] < 1
    assert record["sizes"] == [1000]  # lrsched's default sizes that fit the sample
    assert all(r["classification"][0]["test_error"]["n"] == 1 for r in rows.values())
    assert all(r["tuned_relative_ce"]["mean"] > 0 for r in rows.values())
    report = (tmp_path / "report.md").read_text()
    assert report.count("| lower-") == 5 and "mean m" in report
    pytest.importorskip("matplotlib")
    assert (tmp_path / "lrsched.png").stat().st_size > 1000


def test_classifier_settings_may_change_only_before_any_classifier_ran(tmp_path):
    """They are chosen on the experiment's own encoders, so they may be given once those
    exist; once a classifier has finished, other settings would mix two protocols."""
    run_experiment("reproduce", "mnist-sample", tmp_path / "f", scale="smoke", splits=1,
                   sizes=[], classifier={"lr": 0.1})
    assert not list((tmp_path / "f" / "cells").glob("*/classify-*"))
    notes = []
    record = run_experiment("reproduce", "mnist-sample", tmp_path / "f", scale="smoke",
                            splits=1, classifier={"lr": 0.05}, echo=notes.append)
    assert any("classifier settings changed" in n for n in notes)
    spec = json.loads((tmp_path / "f" / "experiment.json").read_text())
    assert spec["classifier"]["lr"] == 0.05 and spec["sizes"] == [100]
    assert record["cells"]["split0/classify-gradual-n100"]["params"]["classifier"]["lr"] == 0.05


def test_resuming_with_the_same_settings_reports_no_change(tmp_path):
    run_experiment("reproduce", "mnist-sample", tmp_path, scale="smoke", splits=1, sizes=[])
    notes = []
    run_experiment("reproduce", "mnist-sample", tmp_path, scale="smoke", splits=1, sizes=[],
                   echo=notes.append)
    assert not any("changed" in n for n in notes), notes
    run_experiment("trainsize", "mnist-sample", tmp_path / "t", scale="smoke", splits=1)
    with pytest.raises(Exception, match="holds a different experiment"):
        run_experiment("trainsize", "mnist-sample", tmp_path / "t", scale="smoke", splits=1,
                       classifier={"lr": 0.05})


class _Interrupt(Exception):
    pass


def test_a_cell_interrupted_in_full_tuning_continues_from_its_checkpoint(tmp_path, monkeypatch):
    """An fsweep tuning cell stopped right after a checkpoint fails (recorded); the rerun
    continues it from that checkpoint and every cell ends as in an uninterrupted experiment,
    bit for bit."""
    from medalpy.callbacks import Checkpointer

    original, tuning_saves = Checkpointer.on_epoch_end, []

    def tuning(checkpointer):
        return checkpointer.path.parent.name.endswith("-tuned")

    def counted(self, trainer, record):
        original(self, trainer, record)
        if tuning(self):
            tuning_saves.append(self.path.parent.name)

    monkeypatch.setattr(Checkpointer, "on_epoch_end", counted)
    whole = run_experiment("fsweep", "mnist-sample", tmp_path / "whole", scale="smoke",
                           splits=1)
    per_cell = len(tuning_saves) // len(set(tuning_saves))

    def stop_in_tuning(self, trainer, record):
        original(self, trainer, record)
        if tuning(self):
            raise _Interrupt("stopped")

    monkeypatch.setattr(Checkpointer, "on_epoch_end", stop_in_tuning)
    cut = run_experiment("fsweep", "mnist-sample", tmp_path / "cut", scale="smoke", splits=1)
    failed = [k for k, r in cut["cells"].items() if r["status"] == "error"]
    assert failed and all(k.endswith("-tuned") for k in failed)
    assert all((tmp_path / "cut" / "cells" / k / "checkpoint.h5").exists() for k in failed)
    tuning_saves.clear()
    monkeypatch.setattr(Checkpointer, "on_epoch_end", counted)
    again = run_experiment("fsweep", "mnist-sample", tmp_path / "cut", scale="smoke",
                           splits=1)
    # Each failed cell tuned only the epochs after its checkpoint.
    assert len(tuning_saves) == len(failed) * (per_cell - 1)
    compared = 0
    for key, cell in whole["cells"].items():
        for field in ("relative_ce", "tuned_relative_ce", "test_error", "weights_sha"):
            if field in cell:
                assert again["cells"][key][field] == cell[field], (key, field)
                compared += 1
    assert compared >= 2 * len(failed)


def test_a_tuning_cell_on_a_fresh_clone_recomputes_the_pretrained_network(tmp_path):
    """Full tuning is a cell of its own (cells stay short at the paper's scale); where the
    pretraining cell's model file is absent it reruns that pretraining from the seed, says
    so, and tunes to the same numbers."""
    first = run_experiment("reproduce", "mnist-sample", tmp_path, scale="smoke", splits=1,
                           sizes=[])
    tuned = first["cells"]["split0/f1-tuned"]
    assert tuned["params"]["finetune_epochs"] == 1 and tuned["pretrained_recomputed"] is False
    assert first["cells"]["split0/f1"]["params"]["finetune_epochs"] == 0
    for model in (tmp_path / "cells").rglob("*.h5"):
        model.unlink()
    (tmp_path / "cells" / "split0" / "f1-tuned.json").unlink()
    again = run_experiment("reproduce", "mnist-sample", tmp_path, scale="smoke", splits=1,
                           sizes=[])
    cell = again["cells"]["split0/f1-tuned"]
    assert cell["pretrained_recomputed"] is True
    assert cell["pretrained_sha"] == first["cells"]["split0/f1"]["weights_sha"]
    assert cell["tuned_relative_ce"] == tuned["tuned_relative_ce"]
    assert {"cell": "split0/f1-tuned", "from": "split0/f1", "same_weights": True} in \
        again["summary"]["recomputed_weights"]


def test_report_p_values_below_a_thousandth_and_a_reproduction_without_classifiers():
    from medalpy.experiments.report import _fmt_p, markdown

    assert [_fmt_p(None), _fmt_p(0.00027), _fmt_p(0.012)] == ["n/a", "< 0.001", "0.012"]
    ms = {"mean": 1.0, "sd": 0.1, "n": 3}
    row = {"f": 0.0, "relative_ce": ms, "relative_ce_clean": ms, "tuned_relative_ce": ms,
           "vs_gradual": {"mean_diff": 0.0, "p_value": None, "n": 3},
           "tuned_vs_gradual": {"mean_diff": 0.0, "p_value": None, "n": 3}}
    text = markdown("reproduce", {"fsweep": {"rows": [row]}, "trainsize": {"rows": []}}, [])
    assert "No classifiers yet" in text and "| training images |" not in text


def test_a_searched_preset_brings_its_classifier_settings():
    """The classifier settings searched on a preset's encoders are that preset's
    experiments' defaults; other presets keep the plain defaults, and explicit settings and
    the scale's epochs and patience win."""
    from medalpy.experiments.definitions import base_params
    from medalpy.supervised import CLASSIFIER_DEFAULTS, CLASSIFIER_PRESETS

    searched = CLASSIFIER_PRESETS["paper-mnist"]
    assert searched != {k: CLASSIFIER_DEFAULTS[k] for k in searched}  # something to see
    paper = base_params("mnist-sample", "smoke", None, "cpu", 0, 1000, preset="paper-mnist")
    assert {k: paper["classifier"][k] for k in searched} == searched
    assert paper["classifier"]["epochs"] == 3  # the smoke scale's
    medal = base_params("mnist-sample", "smoke", None, "cpu", 0, 1000, preset="medal")
    assert {k: medal["classifier"][k] for k in searched} == \
        {k: CLASSIFIER_DEFAULTS[k] for k in searched}
    given = base_params("mnist-sample", "smoke", None, "cpu", 0, 1000, preset="paper-mnist",
                        classifier={"lr": 0.3})
    assert given["classifier"]["lr"] == 0.3
