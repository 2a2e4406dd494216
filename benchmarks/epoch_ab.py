"""The gradual phase-2 epoch on full MNIST (batch 20) of two git revisions, in alternating runs.

One epoch's time on this shared 2-core machine drifts by 20% or more between runs minutes
apart, so a before/after comparison of separate runs says little. This script checks out
each revision into a temporary git worktree and runs the same shortened ``medalpy train mnist
--gradual`` as ``benchmarks/peak_memory.py`` (``--scale medium --epochs-layer1 1 --budget
1``) from each tree in turn, ``--rounds`` times (before-after, then after-before), reading the
epoch's seconds from the run's log.

    python benchmarks/epoch_ab.py BEFORE AFTER --data-dir ../shared/data [--rounds 3]

Each child imports medalpy from its worktree (an editable install's import hook is
bypassed for it). A fresh worktree has no Numba cache: its kernels compile in the first
round's layer-1 epoch, before the gradual epoch that is timed.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run medalpy's CLI from the tree given as the first argument, not from the installed one.
_BOOT = (
    "import sys; "
    "sys.meta_path[:] = [f for f in sys.meta_path "
    "if 'editable' not in (getattr(f, '__name__', '') + type(f).__name__).lower()]; "
    "sys.path.insert(0, sys.argv.pop(1)); import medalpy; "
    "assert medalpy.__file__.startswith(sys.path[0]), medalpy.__file__; "
    "from medalpy.cli import main; sys.argv[0] = 'medalpy'; main()"
)


def epoch_seconds(tree, data_dir, out):
    cmd = [sys.executable, "-c", _BOOT, str(tree), "train", "mnist", "--gradual", "--scale",
           "medium", "--epochs-layer1", "1", "--budget", "1", "--quiet", "--out", str(out)]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"{tree}: medalpy train failed:\n{run.stderr[-2000:]}")
    with open(Path(out) / "log.jsonl") as log:
        records = [json.loads(line) for line in log]
    gradual = [r["seconds"] for r in records
               if str(r.get("phase", "")).endswith("gradual") and "seconds" in r]
    if not gradual:
        raise SystemExit(f"{tree}: no gradual epoch in {out}/log.jsonl")
    return gradual[-1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--data-dir")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" /
                                              "epoch_ab.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="medalpy-ab-") as tmp:
        trees, commits = {}, {}
        for label, rev in (("before", args.before), ("after", args.after)):
            tree = Path(tmp) / label
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                            str(tree), rev], check=True)
            trees[label] = tree
            commits[label] = subprocess.run(
                ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], check=True,
                capture_output=True, text=True).stdout.strip()
        try:
            seconds = {label: [] for label in trees}
            for r in range(args.rounds):
                # before, after; then after, before: a drift within a round favours neither.
                order = list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]
                for label, tree in order:
                    s = epoch_seconds(tree, args.data_dir, Path(tmp) / f"run-{label}-{r}")
                    seconds[label].append(s)
                    print(f"round {r + 1}: {label} ({commits[label]}) {s:.1f} s", flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(tree)], check=False)
    result = {label: {"revision": args.before if label == "before" else args.after,
                      "commit": commits[label], "seconds": seconds[label],
                      "median": statistics.median(seconds[label])} for label in trees}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    for label, r in result.items():
        runs = ", ".join(f"{s:.1f}" for s in r["seconds"])
        print(f"{label} {r['commit']}: median {r['median']:.1f} s (runs {runs})")


if __name__ == "__main__":
    main()
