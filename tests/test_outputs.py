"""Nothing lost or overwritten: every command that writes results checks its output folder
before any work, refuses another command's results or a finished one unless --overwrite,
locks the folder while it runs, and clears temporary files that killed writers left."""

import json
import os

import pytest
from click.testing import CliRunner

from medalpy import outputs
from medalpy.cli import main
from medalpy.errors import ConfigError

TINY = ["mnist-sample", "--layers", "20,10", "--epochs-layer1", "1", "--budget", "1",
        "--train-size", "200", "--val-size", "100", "--quiet"]


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "train"
    result = _cli("train", *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_classify_refuses_a_training_runs_folder_and_loses_nothing(finished_run):
    before = _snapshot(finished_run)
    result = _cli("classify", finished_run / "model.h5", "mnist-sample", "--train-size", "100",
                  "--epochs", "1", "--out", finished_run)
    assert result.exit_code == 2 and "holds the results of `medalpy train`" in result.output
    assert _snapshot(finished_run) == before


def test_a_finished_run_is_refused_even_without_its_checkpoint(finished_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished_run, out)
    (out / "checkpoint.h5").unlink()
    before = _snapshot(out)
    result = _cli("train", *TINY, "--out", out)
    assert result.exit_code == 2 and "finished `medalpy train` result" in result.output
    assert _snapshot(out) == before
    result = _cli("train", *TINY, "--out", out, "--resume")
    assert result.exit_code == 2 and "no checkpoint.h5 to resume" in result.output
    result = _cli("train", *TINY, "--seed", "5", "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["config"]["seed"] == 5


def test_a_second_run_into_a_locked_folder_stops_at_once(tmp_path):
    with outputs.claim(tmp_path / "busy", "train"):
        result = _cli("train", *TINY, "--out", tmp_path / "busy")
        assert result.exit_code == 2
        assert "another medalpy run is writing there now" in result.output
        assert not (tmp_path / "busy" / "model.h5").exists()
    with outputs.claim(tmp_path / "busy", "train"):  # released when the first one ended
        pass


def test_temporary_files_of_killed_writers_are_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    stale = out / f".checkpoint.h5.tmp{dead.pid}"
    stale.write_bytes(b"half a file")
    mine = out / f".metrics.json.tmp{os.getpid()}"  # a live writer's: kept
    mine.write_bytes(b"")
    (out / "cells" / "r0" / "config" / "fold0").mkdir(parents=True)  # a search's trial
    deep = out / "cells" / "r0" / "config" / "fold0" / f".checkpoint.h5.tmp{dead.pid}"
    deep.write_bytes(b"half a file")
    with outputs.claim(out, "train"):
        assert not stale.exists() and not deep.exists() and mine.exists()


@pytest.mark.parametrize("command", ["train", "classify", "show", "bench"])
def test_an_unwritable_output_is_one_line_before_any_work(finished_run, tmp_path, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    where = blocker / "sub"
    args = {"train": ["train", *TINY, "--out", where],
            "classify": ["classify", finished_run / "model.h5", "mnist-sample",
                         "--train-size", "100", "--out", where],
            "show": ["show", finished_run / "model.h5", "--out", where],
            "bench": ["bench", "--phase", "layer1", "--batch-size", "20", "--no-memory",
                      "--output", where / "bench.json"]}[command]
    result = _cli(*args)
    assert result.exit_code == 2, result.output
    assert str(blocker) in result.output and len(result.output.strip().splitlines()) == 1


def test_other_commands_folders_and_existing_files_are_refused(finished_run, tmp_path):
    result = _cli("experiment", "fsweep", "--dataset", "mnist-sample", "--scale", "smoke",
                  "--splits", "1", "--out", finished_run)
    assert result.exit_code == 2 and "holds the results of `medalpy train`" in result.output
    out = tmp_path / "shown"
    assert _cli("show", finished_run / "model.h5", "--out", out).exit_code == 0
    again = _cli("show", finished_run / "model.h5", "--out", out)
    assert again.exit_code == 2 and "finished `medalpy show`" in again.output
    assert _cli("show", finished_run / "model.h5", "--out", out, "--overwrite").exit_code == 0
    existing = tmp_path / "bench.json"
    existing.write_text("{}")
    result = _cli("bench", "--phase", "layer1", "--batch-size", "20", "--no-memory",
                  "--output", existing)
    assert result.exit_code == 2 and "exists; choose another file" in result.output
    assert existing.read_text() == "{}"


def test_owner_tells_the_commands_apart(tmp_path):
    for command, (done, others) in outputs.MARKERS.items():
        folder = tmp_path / command
        folder.mkdir()
        (folder / (others[0] if command in outputs.RESUMABLE else done)).write_text("")
        assert outputs.owner(folder) == command
    with pytest.raises(ConfigError, match="holds the results of `medalpy search`"):
        outputs.check(tmp_path / "search", "experiment")
    outputs.check(tmp_path / "experiment", "experiment")  # resumes in its own folder
