"""``medalpy search``: cross-validated trials as cells on a real Dask ``LocalCluster`` on
loopback, on the bundled real MNIST sample cut down to a few hundred images."""

import json
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("distributed")

from medalpy.cli import main  # noqa: E402
from medalpy.errors import ConfigError  # noqa: E402
from medalpy.search import (  # noqa: E402
    SearchSpec,
    configurations,
    read_grid,
    rung_epochs,
    run_search,
    trial_cells,
)
from medalpy.cluster import Dask, local_cluster  # noqa: E402

TINY = dict(dataset="mnist-sample", folds=3, subset=240, plan=[{"eval_folds": 2}], eta=2,
            epochs_layer1=1, budget=1,
            space={"units": [16], "lr": [0.1, 0.01], "batch_size": [20], "momentum": [0.9],
                   "weight_decay": [1e-3], "seed": [0]})


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    with local_cluster(2) as cluster, Client(cluster) as c:
        yield c


def _cells(out):
    return sorted(p for p in (out / "cells").rglob("*.json"))


def test_a_tiny_grid_runs_every_trial_on_the_cluster(tmp_path, client):
    messages = []
    record = run_search(SearchSpec(**TINY), tmp_path, executor=Dask(client), echo=messages.append)
    assert record["trials"] == record["done"] == 4 and record["error"] == 0
    assert len(_cells(tmp_path)) == 4
    cell = json.loads((tmp_path / "cells/r0/u16-lr0.1-b20-m0.9-wd0.001-ng1-s0/fold1.json")
                      .read_text())
    assert cell["status"] == "done" and cell["n_train"] + cell["n_stop"] + cell["n_score"] == 240
    assert cell["n_stop"] == cell["n_score"] == 80
    assert cell["objective"] == cell["val_ce"] > cell["val_relative_ce"] > 0
    rows = record["table"]
    assert [r["folds_done"] for r in rows] == [2, 2]
    assert rows[0]["mean"] <= rows[1]["mean"] and record["best"] == rows[0]
    csv_lines = (tmp_path / "trials.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("rung,config,units,lr")
    assert rows[0]["config"] in (tmp_path / "trials.md").read_text()
    assert (tmp_path / "best.toml").exists() and (tmp_path / "search.png").exists()
    assert sum("done in" in m for m in messages) == 4


def test_resume_skips_finished_trials_and_refuses_other_settings(tmp_path, client):
    spec = SearchSpec(**TINY)
    run_search(spec, tmp_path, executor=Dask(client))
    stamps = {p: p.stat().st_mtime_ns for p in _cells(tmp_path)}
    lost = tmp_path / "cells/r0/u16-lr0.01-b20-m0.9-wd0.001-ng1-s0/fold0.json"
    lost.unlink()
    messages = []
    record = run_search(spec, tmp_path, executor=Dask(client), echo=messages.append)
    assert "3 of 4 cells already done; resuming" in messages
    assert sum("done in" in m for m in messages) == 1 and record["done"] == 4
    for path, stamp in stamps.items():
        if path != lost:
            assert path.stat().st_mtime_ns == stamp, path
    with pytest.raises(ConfigError, match="budget differ"):
        run_search(SearchSpec(**{**TINY, "budget": 2}), tmp_path, executor=Dask(client))


def test_a_trial_that_raises_is_recorded_and_the_search_goes_on(tmp_path, client):
    # 1e30 without normGrad overflows float32
    space = {**TINY["space"], "lr": [0.1, 1e30], "normalise_gradients": [False]}
    record = run_search(SearchSpec(**{**TINY, "space": space}), tmp_path, executor=Dask(client))
    assert record["done"] == 2 and record["error"] == 2
    bad = [r for r in record["table"] if r["lr"] == 1e30][0]
    assert bad["folds_failed"] == 2 and "TrainingDiverged" in bad["error"]
    assert record["best"]["lr"] == 0.1
    cell = json.loads((tmp_path / "cells/r0/u16-lr1e+30-b20-m0.9-wd0.001-ng0-s0/fold0.json")
                      .read_text())
    assert cell["status"] == "error" and "loss became" in cell["error"]
    assert "TrainingDiverged" in (tmp_path / "trials.md").read_text()


def test_successive_halving_keeps_the_best_half_for_the_longer_rung(tmp_path, client):
    space = {**TINY["space"], "lr": [0.3, 0.1, 0.01, 0.001]}
    plan = [{"eval_folds": 2}, {"eval_folds": 3, "epochs_layer1": 2, "budget": 2}]
    spec = SearchSpec(**{**TINY, "space": space, "plan": plan})
    assert spec.rungs == 2 and rung_epochs(spec, 0)[:2] == (1, 1)
    assert rung_epochs(spec, 1)[:2] == (2, 2)
    scaled = SearchSpec(**{**TINY, "plan": None, "epochs_layer1": 4, "budget": 4, "rungs": 2})
    assert rung_epochs(scaled, 0)[:2] == (2, 2) and rung_epochs(scaled, 1)[:2] == (4, 4)
    record = run_search(spec, tmp_path, executor=Dask(client))
    first = [r for r in record["table"] if r["rung"] == 0]
    second = [r for r in record["table"] if r["rung"] == 1]
    assert len(first) == 4 and len(second) == 2 and record["trials"] == 4 * 2 + 2 * 3
    assert {r["config"] for r in second} == {r["config"] for r in first[:2]}
    assert record["best"]["rung"] == 1 and record["best"]["epochs_layer1"] == 2
    agreement = record["rank_agreement"]
    assert agreement[0]["configs"] == 2 and agreement[0]["spearman"] is None
    assert agreement[0]["previous_leader"] == first[0]["config"]
    assert "Spearman" in (tmp_path / "trials.md").read_text()


def test_nested_folds_never_score_on_images_that_chose_the_parameters():
    from medalpy.search.steps import fold_rows

    labels = np.repeat(np.arange(10), 50)
    seen_scores = []
    for f in range(5):
        params = {"folds": 5, "fold": f, "data_seed": 4, "subset": 400}
        train, stop, score = fold_rows(labels, params)
        assert len(np.intersect1d(train, stop)) == len(np.intersect1d(train, score)) == 0
        assert len(np.intersect1d(stop, score)) == 0
        assert len(train) + len(stop) + len(score) == 400
        assert np.bincount(labels[score]).tolist() == [8] * 10  # stratified
        seen_scores.append(score)
    assert len(np.unique(np.concatenate(seen_scores))) == 400  # every image scores once


def test_the_pretrain_objective_averages_the_schedules_sharing_layer_1(tmp_path):
    space = {**TINY["space"], "lr": [0.1]}
    spec = SearchSpec(**{**TINY, "space": space, "methods": ["gradual", "stacked"],
                         "plan": [{"eval_folds": 1}]})
    record = run_search(spec, tmp_path)
    cell = json.loads((tmp_path / "cells/r0/u16-lr0.1-b20-m0.9-wd0.001-ng1-s0/fold0.json")
                      .read_text())
    gradual, stacked = cell["methods"]["gradual"], cell["methods"]["stacked"]
    assert gradual["eval_decoder"] == "direct" and stacked["eval_decoder"] == "mirror"
    assert gradual["val_ce"] != stacked["val_ce"]
    assert cell["objective"] == pytest.approx((gradual["val_ce"] + stacked["val_ce"]) / 2)
    assert record["table"][0]["mean_stacked"] == stacked["val_ce"]
    # Stacked alone reproduces its half: layer 1 is shared, not retrained differently.
    alone = run_search(SearchSpec(**{**TINY, "space": space, "methods": ["stacked"],
                                     "plan": [{"eval_folds": 1}]}), tmp_path / "alone")
    assert alone["best"]["mean"] == stacked["val_ce"]


def test_the_exported_best_configuration_trains(tmp_path, client):
    run_search(SearchSpec(**TINY), tmp_path / "search", executor=Dask(client))
    result = CliRunner().invoke(main, [
        "train", "--config", str(tmp_path / "search" / "best.toml"), "--train-size", "300",
        "--val-size", "100", "--quiet", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["config"]["layers"] == [16, 16] and metrics["config"]["lr"] == 0.1


def test_the_cli_submits_to_an_existing_scheduler(tmp_path, client):
    grid = tmp_path / "grid.toml"
    grid.write_text('dataset = "mnist-sample"\nunits = [16]\nlr = [0.1]\nbatch_size = 20\n'
                    "momentum = [0.9]\nweight_decay = [1e-3]\nfolds = 3\nsubset = 240\n"
                    "epochs_layer1 = 1\nbudget = 1\n")
    args = ["search", "--grid", str(grid), "--batch-size", "10,20", "--scheduler",
            client.scheduler.address, "--out", str(tmp_path / "s")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "6 trials: 6 done, 0 failed" in result.output
    assert "best: u16-lr0.1-b" in result.output and (tmp_path / "s/best.toml").exists()


def test_without_dask_trials_run_on_plain_processes_and_a_scheduler_needs_it(monkeypatch,
                                                                          tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)
    grid = tmp_path / "grid.toml"
    grid.write_text('dataset = "mnist-sample"\nfolds = 3\nsubset = 240\nepochs_layer1 = 1\n'
                    'budget = 1\nunits = [16]\nlr = [0.1]\nbatch_size = [20]\n'
                    'momentum = [0.9]\nweight_decay = [1e-3]\nseed = [0]\neta = 2\n'
                    '[[plan]]\neval_folds = 2\n')
    args = ["search", "--grid", str(grid)]
    result = CliRunner().invoke(main, [*args, "--workers", "2", "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert "2 single-threaded worker process(es) (Dask is not installed)" in result.output
    assert "2 trials: 2 done, 0 failed" in result.output
    result = CliRunner().invoke(main, [*args, "--scheduler", "tcp://127.0.0.1:1",
                                       "--out", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "pip install 'medalpy[dask]'" in result.output


def test_grid_files_random_draws_and_bad_settings(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text("lr = [0.1, 0.01]\nfolds = 3\n")
    assert read_grid(grid) == ({"lr": [0.1, 0.01]}, {"folds": 3})
    grid.write_text("learning_rate = [0.1]\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        read_grid(grid)
    spec = SearchSpec(n_trials=5, data_seed=3)
    assert spec.folds == 10 and len(configurations(SearchSpec())) == 4 * 7 * 2 * 2 * 3
    drawn = configurations(spec)
    assert len(drawn) == 5 and drawn == configurations(SearchSpec(n_trials=5, data_seed=3))
    assert SearchSpec(dataset="cifar10").folds == 5
    for bad in ({"space": {"momentum": [1.0]}}, {"space": {"units": [0]}}, {"folds": 1},
                {"space": {"lr": []}}, {"eta": 1}, {"space": {"dropout": [0.5]}}):
        with pytest.raises(ConfigError):
            SearchSpec(**bad)


@pytest.mark.slow
def test_a_search_survives_a_killed_worker_and_resumes(tmp_path):
    from distributed import Client

    space = {**TINY["space"], "units": [64], "lr": [0.1, 0.05, 0.01]}
    spec = SearchSpec(**{**TINY, "space": space, "subset": 2000, "epochs_layer1": 4,
                         "budget": 3})
    with local_cluster(2) as cluster, Client(cluster) as client:
        outcome = {}
        search = threading.Thread(
            target=lambda: outcome.update(record=run_search(spec, tmp_path, executor=Dask(client))))
        search.start()
        deadline = time.monotonic() + 120
        # Wait until trials are running on a worker (after the first trial finished, so that
        # the kill lands mid-search), then kill that worker's process outright.
        victim = None
        while victim is None and time.monotonic() < deadline:
            busy = [w for w, tasks in client.processing().items() if tasks]
            if busy and _cells(tmp_path):
                victim = busy[0]
            time.sleep(0.05)
        assert victim is not None, "no trial started"
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        search.join(timeout=240)
        assert not search.is_alive()
        record = outcome["record"]
        assert record["trials"] == 6 == record["done"] + record["error"]
        for path in _cells(tmp_path):
            cell = json.loads(path.read_text())
            assert cell["status"] == "done" or cell["error"], cell
        assert len(_cells(tmp_path)) == 6
        assert pid not in client.run(os.getpid).values()  # the nanny started a new one
        stamps = {p: p.stat().st_mtime_ns for p in _cells(tmp_path)}
        messages = []
        again = run_search(spec, tmp_path, executor=Dask(client), retry_errors=True,
                           echo=messages.append)
        assert again["done"] == 6
        untouched = [p for p in stamps if p.stat().st_mtime_ns == stamps[p]]
        assert len(untouched) == record["done"]
        assert sum("done in" in m for m in messages) == record["error"]


def test_the_classifier_objective_is_the_held_out_fold_error(tmp_path, client):
    space = {**TINY["space"], "lr": [0.1]}
    spec = SearchSpec(**{**TINY, "space": space, "objective": "classify",
                         "classifier_epochs": 10})
    record = run_search(spec, tmp_path, executor=Dask(client))
    assert record["done"] == 2
    cell = json.loads((tmp_path / "cells/r0/u16-lr0.1-b20-m0.9-wd0.001-ng1-s0/fold0.json")
                      .read_text())
    assert cell["objective"] == cell["val_error"] and cell["val_error"] < 0.8  # chance: 0.9
    assert "classification error" in (tmp_path / "trials.md").read_text()


def test_without_a_client_trials_run_here_and_the_plot_is_optional(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    space = {**TINY["space"], "lr": [0.1]}
    record = run_search(SearchSpec(**{**TINY, "space": space}), tmp_path)
    assert record["done"] == 2 and record["plot"] is None
    assert not (tmp_path / "search.png").exists() and (tmp_path / "best.toml").exists()


@pytest.mark.slow
def test_an_interrupted_search_resumes_without_redoing_finished_trials(tmp_path, client):
    import subprocess

    args = ["search", "mnist-sample", "--units", "64", "--lr", "0.1,0.05,0.01",
            "--batch-size", "20", "--momentum", "0.9", "--weight-decay", "1e-3",
            "--folds", "3", "--subset", "2000", "--epochs-layer1", "4", "--budget", "3",
            "--out", str(tmp_path / "s")]
    # Ctrl-C as in a terminal: a suite started in the background by a shell without job
    # control inherits SIGINT ignored, and so would the search (which then never stops).
    proc = subprocess.Popen([sys.executable, "-m", "medalpy", *args, "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not _cells(tmp_path / "s") and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    finished = len(_cells(tmp_path / "s"))
    assert 1 <= finished < 9
    result = CliRunner().invoke(main, [*args, "--scheduler", client.scheduler.address])
    assert result.exit_code == 0, result.output
    assert f"{finished} of 9 cells already done; resuming" in result.output
    assert result.output.count("done in") == 9 - finished


def test_the_classifier_settings_search_on_given_encoders(tmp_path, client):
    """objective = classifier: no pretraining; every trial starts from the same encoders and
    only the classifier's settings differ; a useless learning rate loses; best.toml holds
    classifier settings that `classify` accepts."""
    import medalpy
    from medalpy import checkpoint
    from medalpy.supervised import check_classifier_settings

    ds = medalpy.load_dataset("mnist-sample")
    cfg = medalpy.make_config({"layers": [24], "epochs_layer1": 2, "backend": "numpy"})
    trainer = medalpy.build_trainer(cfg, ds.train_images[:600], ds.train_images[600:800])
    trainer.run()
    model = tmp_path / "encoders.h5"
    checkpoint.save(model, trainer.network, cfg.to_dict())
    spec = SearchSpec(**{**TINY, "objective": "classifier", "encoders": str(model),
                         "classifier_epochs": 20, "subset": 900,
                         "space": {"lr": [0.1, 1e-5], "batch_size": [20], "momentum": [0.9],
                                   "weight_decay": [1e-5], "seed": [0]}})
    assert spec.space["units"] == [24]  # the encoders' width, not searched
    record = run_search(spec, tmp_path / "search", executor=Dask(client))
    assert record["done"] == 4 and record["best"]["lr"] == 0.1
    cell = json.loads((tmp_path / "search/cells/r0/u24-lr0.1-b20-m0.9-wd1e-05-ng1-s0/fold0.json")
                      .read_text())
    assert cell["objective"] == cell["val_error"] < 0.8 and "layer1_kept_epoch" not in cell  # chance 0.9
    from medalpy.experiments.steps import weights_hash

    assert cell["encoders_sha"] == weights_hash(trainer.network)
    best = read_toml_table(tmp_path / "search" / "best.toml")
    assert best["lr"] == 0.1 and best["epochs"] == 20
    check_classifier_settings(best)
    report = (tmp_path / "search" / "trials.md").read_text()
    assert f"a classifier on the encoders of {model}" in report  # not a pretraining schedule
    assert "| rung | pool | folds | classifier epochs |\n" in report  # only the epochs it trains
    assert "| 0 | 900 | 2 | 20 |\n" in report
    with pytest.raises(ConfigError, match="encoders"):
        SearchSpec(**{**TINY, "encoders": str(model)})  # encoders without the objective


def read_toml_table(path):
    import tomllib

    return tomllib.loads(path.read_text())


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_an_interrupted_trial_continues_where_it_stopped_bit_for_bit(tmp_path, monkeypatch,
                                                                     where):
    """A trial killed mid-way (here: stopped right after a checkpoint: its first, one in the
    middle, its last but one) and run again on the same machine skips its finished stages,
    continues its current one from the last epoch, and ends with exactly the result of an
    uninterrupted trial."""
    from medalpy.callbacks import Checkpointer
    from medalpy.search.steps import fold

    spec = SearchSpec(**{**TINY, "epochs_layer1": 2, "budget": 2,
                         "methods": ["gradual", "stacked"]})
    cell = trial_cells(spec, configurations(spec), 0)[0]
    saves, original = [], Checkpointer.on_epoch_end

    def counted(self, trainer, record):
        original(self, trainer, record)
        saves.append(trainer.phases[trainer.position.phase].name)
        if len(saves) == stop_at:
            raise _Interrupt

    monkeypatch.setattr(Checkpointer, "on_epoch_end", counted)
    stop_at = None
    (tmp_path / "whole").mkdir()
    whole = fold(cell.params, tmp_path / "whole", tmp_path)
    total, saves[:] = len(saves), []
    assert total >= 4
    stop_at = {"first": 1, "middle": total // 2 + 1, "last": total - 1}[where]
    (tmp_path / "cut").mkdir()
    with pytest.raises(_Interrupt):
        fold(cell.params, tmp_path / "cut", tmp_path)
    assert (tmp_path / "cut" / "checkpoint.h5").exists()
    done_before, stop_at, saves[:] = stop_at, None, []
    again = fold(cell.params, tmp_path / "cut", tmp_path)
    assert again == whole
    assert not (tmp_path / "cut" / "checkpoint.h5").exists()
    assert len(saves) == total - done_before  # no finished stage or epoch was run again


@pytest.mark.parametrize("left_behind", ["damaged", "other settings"])
def test_a_checkpoint_that_is_damaged_or_of_other_settings_is_not_resumed(tmp_path, monkeypatch,
                                                                         left_behind):
    """A trial's folder holding an unreadable checkpoint, or one saved by a trial of other
    settings (here: another learning rate), starts afresh and ends as an uninterrupted
    trial."""
    from medalpy.callbacks import Checkpointer
    from medalpy.search.steps import fold

    spec = SearchSpec(**{**TINY, "epochs_layer1": 2, "budget": 2})
    cell = trial_cells(spec, configurations(spec), 0)[0]
    (tmp_path / "whole").mkdir()
    whole = fold(cell.params, tmp_path / "whole", tmp_path)
    cut = tmp_path / "cut"
    cut.mkdir()
    if left_behind == "damaged":
        (cut / "checkpoint.h5").write_bytes(b"not an HDF5 file")
    else:
        original = Checkpointer.on_epoch_end

        def stop(self, trainer, record):
            original(self, trainer, record)
            raise _Interrupt

        monkeypatch.setattr(Checkpointer, "on_epoch_end", stop)
        with pytest.raises(_Interrupt):
            fold({**cell.params, "lr": 0.5}, cut, tmp_path)
        monkeypatch.setattr(Checkpointer, "on_epoch_end", original)
    assert (cut / "checkpoint.h5").exists()
    assert fold(cell.params, cut, tmp_path) == whole
