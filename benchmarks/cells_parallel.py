"""Two experiment cells on a 2-core machine: one after another on two lanes each, or both at
once on one core each? ``medalpy experiment``'s default way of running cells follows this.

Each cell is a real, shortened training run on full MNIST (``medalpy train mnist --gradual
--scale medium --epochs-layer1 E --budget E``); the two ways alternate ``--repeats`` times
and the wall time of the pair is reported. With one core each, the worker's thread pools
are held to one thread, as ``--workers`` does (:data:`medalpy.cluster.SINGLE_THREAD_ENV`).

    python benchmarks/cells_parallel.py --data-dir DIR [--epochs 1] [--repeats 2]
        [--json benchmarks/results/cells_parallel.json]

Run it on a quiet machine: another process on the cores makes both figures meaningless.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medalpy.bench.machine import machine
from medalpy.cluster import SINGLE_THREAD_ENV


def _command(data_dir, epochs, out):
    return [sys.executable, "-m", "medalpy", "train", "mnist", "--gradual", "--scale",
            "medium", "--epochs-layer1", str(epochs), "--budget", str(epochs), "--quiet",
            "--data-dir", data_dir, "--out", out]


def pair(data_dir, epochs, parallel, work):
    """Wall seconds of two cells, at once on one core each or one after another."""
    outs = [tempfile.mkdtemp(dir=work) + "/run" for _ in range(2)]
    env = dict(os.environ, **SINGLE_THREAD_ENV) if parallel else dict(os.environ)
    t0 = time.perf_counter()
    if parallel:
        children = [subprocess.Popen(_command(data_dir, epochs, out), env=env) for out in outs]
        codes = [child.wait() for child in children]
    else:
        codes = [subprocess.call(_command(data_dir, epochs, out), env=env) for out in outs]
    if any(codes):
        raise SystemExit(f"a training run failed: exit codes {codes}")
    return time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" /
                                              "cells_parallel.json"))
    args = parser.parse_args(argv)
    times = {"one after another, 2 lanes": [], "at once, 1 core each": []}
    with tempfile.TemporaryDirectory(prefix="medalpy-cells-") as work:
        for _ in range(args.repeats):
            for name in times:
                times[name].append(pair(args.data_dir, args.epochs, name.startswith("at once"),
                                        work))
                print(f"{name}: {times[name][-1]:.1f} s", file=sys.stderr)
    medians = {name: statistics.median(t) for name, t in times.items()}
    result = {"machine": machine(), "epochs": args.epochs, "repeats": args.repeats,
              "command": " ".join(_command("DIR", args.epochs, "OUT")), "seconds": times,
              "median_seconds": medians,
              "faster": min(medians, key=medians.get)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print("| two cells | wall s (median) |\n| --- | --- |")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.1f} |")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
