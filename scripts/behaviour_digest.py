"""Fixed-seed runs of every schedule, a classifier and the smoke experiments, reduced to one
digest per run: the SHA-256 of every saved weight and the metrics. Two revisions whose
digests are equal behave identically, bit for bit (the check behind behaviour-neutral
restructuring).

    python scripts/behaviour_digest.py OUT.json            # this checkout
    python scripts/behaviour_digest.py --compare REV       # this checkout against REV

``--compare`` runs this script in a temporary worktree of REV (with this very script, so
old revisions need not have it) and reports every run whose digest differs.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

#: Tiny runs on the bundled MNIST sample: (name, train options).
RUNS = [
    ("gradual", ["--gradual"]),
    ("stacked", ["--stacked"]),
    ("hybrid-0.5", ["--hybrid", "0.5"]),
    ("frozen-lower", ["--frozen-lower"]),
    ("gradual-3-layers-tuned", ["--gradual", "--layers", "40,30,20", "--finetune-epochs", "2",
                                "--lr", "0.02"]),
    ("stacked-direct-decoder", ["--stacked", "--eval-decoder", "direct"]),
    ("gradual-float64-numpy", ["--gradual", "--dtype", "float64", "--backend", "numpy"]),
    ("stacked-no-normgrad-patience", ["--stacked", "--no-normalise-gradients", "--patience",
                                      "1", "--lr", "0.05"]),
]
COMMON = ["mnist-sample", "--layers", "60,40", "--epochs-layer1", "3", "--budget", "2",
          "--train-size", "600", "--val-size", "200", "--seed", "7", "--quiet"]
#: Keys of metrics.json that hold timings, paths or other things that may differ.
VOLATILE = {"wall_seconds", "seconds", "location", "files", "data_dir"}
#: Settings added to the configuration over time, with the value that keeps the old
#: behaviour: dropped when they hold it, so old and new revisions compare.
ADDED = {"ablation_budget": "updates", "noise_type": "masking", "batch_order": "shuffle",
         "keep": "best", "init_from": None, "lower_lr": None}


def _clean(value):
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _weights(path):
    import h5py
    import numpy as np

    digest = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f":
                digest[name] = hashlib.sha256(np.ascontiguousarray(obj[()]).tobytes()).hexdigest()
        f.visititems(visit)
    return digest


def _medalpy(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    result = subprocess.run([sys.executable, "-m", "medalpy", *args], cwd=cwd, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"medalpy {' '.join(args)} failed:\n{result.stdout}{result.stderr}")


def digest(checkout, work):
    out = {}
    for name, options in RUNS:
        run = Path(work) / name
        _medalpy(["train", *COMMON, *options, "--out", str(run)], checkout)
        metrics = json.loads((run / "metrics.json").read_text())
        for key, default in ADDED.items():
            if key in metrics["config"] and metrics["config"][key] == default:
                del metrics["config"][key]
        out[f"train/{name}"] = {"weights": _weights(run / "model.h5"),
                                "metrics": _clean(metrics)}
    clf = Path(work) / "classifier"
    _medalpy(["classify", str(Path(work) / "gradual" / "model.h5"), "mnist-sample",
              "--train-size", "300", "--epochs", "6", "--patience", "3", "--out", str(clf)],
             checkout)
    metrics = json.loads((clf / "metrics.json").read_text())
    metrics.pop("model")  # the path of the pretrained model, in a temporary directory
    out["classify"] = {"weights": _weights(clf / "classifier.h5"), "metrics": _clean(metrics)}
    for experiment in ("fsweep", "trainsize", "ablation"):
        exp = Path(work) / experiment
        _medalpy(["experiment", experiment, "--dataset", "mnist-sample", "--scale", "smoke",
                  "--splits", "1", "--out", str(exp)], checkout)
        results = json.loads((exp / "results.json").read_text())
        cells = {k: _clean({f: v for f, v in c.items() if f not in ("params", "traceback")})
                 for k, c in results["cells"].items()}
        models = {str(p.relative_to(exp)): _weights(p) for p in sorted(exp.rglob("*.h5"))}
        out[f"experiment/{experiment}"] = {"cells": cells, "weights": models}
    return out


def _leaves(value, prefix=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{prefix}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, value


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", help="write this checkout's digest here")
    parser.add_argument("--compare", metavar="REV", help="compare this checkout with REV")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    if args.compare is None:
        with tempfile.TemporaryDirectory() as work:
            result = digest(here, work)
        Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), args.compare],
                       cwd=here, check=True)
        try:
            (tree / "scripts").mkdir(exist_ok=True)
            (tree / "scripts" / "behaviour_digest.py").write_text(Path(__file__).read_text())
            with tempfile.TemporaryDirectory() as work:
                before = digest(tree, work)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=here)
        with tempfile.TemporaryDirectory() as work:
            after = digest(here, work)
    differ = sorted(k for k in before.keys() | after.keys()
                    if json.dumps(before.get(k), sort_keys=True)
                    != json.dumps(after.get(k), sort_keys=True))
    print(f"{len(before)} runs compared with {args.compare}: "
          + ("all bit-identical" if not differ else f"DIFFERENT: {', '.join(differ)}"))
    absent = "(absent)"
    for key in differ:
        a, b = dict(_leaves(before.get(key))), dict(_leaves(after.get(key)))
        for leaf in sorted(k for k in a.keys() | b.keys()
                           if a.get(k, absent) != b.get(k, absent))[:5]:
            print(f"  {key}{leaf}: {a.get(leaf, absent)!r} -> {b.get(leaf, absent)!r}")
    raise SystemExit(1 if differ else 0)


if __name__ == "__main__":
    main()
