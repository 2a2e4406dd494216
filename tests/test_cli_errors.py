"""Every user mistake the command line knows of, through a real ``python -m medalpy`` process:
exit code 2, one line on stderr naming the option, file or folder, no traceback, and nothing
written or changed."""

import os
import subprocess
import sys

import pytest

TINY = ["mnist-sample", "--layers", "20,10", "--epochs-layer1", "1", "--budget", "1",
        "--train-size", "200", "--val-size", "100", "--quiet"]


def _medalpy(*args, cwd):
    env = {**os.environ, "MEDALPY_DATA": ""}
    return subprocess.run([sys.executable, "-m", "medalpy", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)


def _files(folder):
    """Every file under ``folder`` with its bytes (what must not change)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".medalpy.lock"}


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A working folder with a finished run (``run/``, its checkpoint removed), a file where
    a folder would go (``blocker``), and config files that are wrong in various ways."""
    root = tmp_path_factory.mktemp("cli-errors")
    done = _medalpy("train", *TINY, "--out", "run", cwd=root)
    assert done.returncode == 0, done.stderr
    (root / "run" / "checkpoint.h5").unlink(missing_ok=True)
    (root / "blocker").write_text("a file, not a folder")
    (root / "latin1.toml").write_bytes("# caf\xe9\nlr = 0.1\n".encode("latin-1"))
    for name, text in {"scale": "scale = [1]", "preset": "preset = {}", "dataset": "dataset = []",
                       "init": "init = []", "data_dir": "data_dir = 5"}.items():
        (root / f"{name}.toml").write_text(text + "\n")
    return root


MODEL = "run/model.h5"
CASES = {
    # results that would be lost
    "classify into a training run": (["classify", MODEL, "mnist-sample", "--train-size",
                                      "100", "--out", "run"], "holds the results of"),
    "train over a finished run": (["train", *TINY, "--out", "run"], "finished `medalpy train`"),
    "export over an existing file": (["export", MODEL, MODEL], "exists; choose another"),
    # outputs that cannot be written
    "train --out under a file": (["train", *TINY, "--out", "blocker/out"], "blocker"),
    "classify --out under a file": (["classify", MODEL, "mnist-sample", "--train-size", "100",
                                     "--out", "blocker/out"], "blocker"),
    "show --out under a file": (["show", MODEL, "--out", "blocker/out"], "blocker"),
    "bench --output under a file": (["bench", "--phase", "layer1", "--batch-size", "20",
                                     "--no-memory", "--output", "blocker/b.json"], "blocker"),
    "import --out under a file": (["import", "latin1.toml", "--out", "blocker/out"],
                                  "latin1.toml"),
    "data fetch into a file": (["data", "fetch", "mnist", "--data-dir", "blocker/d"],
                               "blocker"),
    # config files
    "train --config not UTF-8": (["train", *TINY, "--config", "latin1.toml", "--out", "o"],
                                 "latin1.toml"),
    "search --grid not UTF-8": (["search", "--grid", "latin1.toml", "--out", "o"],
                                "latin1.toml"),
    **{f"TOML {name} of the wrong type": (["train", *TINY[1:], "--config", f"{name}.toml",
                                           "--out", "o"], name)
       for name in ("scale", "preset", "dataset", "init", "data_dir")},
    # options
    "two schedules": (["train", *TINY, "--gradual", "--stacked", "--out", "o"], "--stacked"),
    "an empty layer width": (["train", "mnist-sample", "--layers", "40,,30", "--out", "o"],
                             "40,,30"),
    "a layer too large for memory": (["train", "mnist-sample", "--layers", "4000000000",
                                      "--train-size", "200", "--val-size", "100", "--out", "o"],
                                     "memory"),
    "classify --lr -1": (["classify", MODEL, "mnist-sample", "--lr", "-1", "--out", "o"],
                         "--lr"),
    "classify --momentum 5": (["classify", MODEL, "mnist-sample", "--momentum", "5",
                               "--out", "o"], "--momentum"),
    "experiment --workers -1": (["experiment", "fsweep", "--dataset", "mnist-sample",
                                 "--scale", "smoke", "--workers", "-1", "--out", "o"],
                                "--workers"),
    "experiment --workers and --scheduler": (["experiment", "fsweep", "--dataset",
                                              "mnist-sample", "--scale", "smoke", "--workers",
                                              "2", "--scheduler", "tcp://127.0.0.1:1",
                                              "--out", "o"], "--scheduler"),
    "bench --threads 999": (["bench", "--threads", "999", "--no-memory"], "--threads 999"),
    "search --workers -1": (["search", "mnist-sample", "--workers", "-1", "--out", "o"],
                            "--workers"),
    "train --lr inf": (["train", *TINY, "--lr", "inf", "--out", "o"], "lr"),
    "train --weight-decay inf": (["train", *TINY, "--weight-decay", "inf", "--out", "o"],
                                 "weight_decay"),
    "a --data-dir that does not exist": (["train", "mnist", "--data-dir", "no-such-dir",
                                          "--out", "o"], "no-such-dir"),
    "--lower-lr with --stacked": (["train", *TINY, "--stacked", "--lower-lr", "linear",
                                   "--out", "o"], "lower_lr"),
    "--val-size 0 keeping the best": (["train", *TINY[:-3], "--val-size", "0", "--out", "o"],
                                      "val_size 0"),
    "--init-from a missing file": (["train", *TINY, "--init-from", "nothing.h5", "--out",
                                    "o"], "nothing.h5"),
    "import a file that is not .mat": (["import", "latin1.toml", "--out", "o"],
                                       "latin1.toml"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_mistake_is_one_line_exit_2_and_nothing_written(place, case):
    args, names = CASES[case]
    before = _files(place)
    done = _medalpy(*args, cwd=place)
    written = (place / "o").exists()
    if written:  # (so that one failure does not fail the cases after it)
        import shutil

        shutil.rmtree(place / "o")
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    # the error is the one line starting "Error:" (a run may have said what data it read)
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and names in errors[0], done.stderr
    assert done.stderr.strip().splitlines()[-1] == errors[0]
    assert _files(place) == before and not written
