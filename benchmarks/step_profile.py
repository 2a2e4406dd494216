"""Where a training step's time goes: each kernel of the cpu backend, per phase and batch.

Runs the step `medalpy bench` times (:func:`medalpy.bench.steps.medalpy_step`, without
normGrad, as the peers) with every backend call timed by ``time.perf_counter``, and prints,
for every phase and batch size, the step's median time and each kernel's share of it
(median over rounds of its time per step); "python" is what is left: the step's own code
between the calls. The calls are synchronous (the lanes' parallel regions and OpenBLAS return
when done), so the sums are the step. Writes the table as JSON.

    python benchmarks/step_profile.py [--phase gradual] [--batch-size 20] \
        [--rounds 7] [--steps 200] [--json benchmarks/results/step_profile.json]

Timing each call adds well under a microsecond to calls of tens of microseconds and more;
the step's total is timed without the wrappers too, and both are reported. Run it on a quiet
machine: the shares, not the absolute times, are what carries over.
"""

import argparse
import json
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path

import medalpy.kernels as kernels
from medalpy.bench.machine import machine
from medalpy.bench.steps import BATCH_SIZES, PHASES, medalpy_step


class Timed:
    """A backend whose every function call adds its seconds to ``seconds[name]``."""

    def __init__(self, backend):
        self._backend = backend
        self.seconds = defaultdict(float)

    def __getattr__(self, name):
        value = getattr(self._backend, name)
        if not callable(value) or name in ("session", "use_threads"):
            return value
        seconds = self.seconds

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - t0

        return timed


def _step(phase, batch_size, threads, backend):
    """The bench's step of ``phase`` built on ``backend`` (a cpu module or a Timed one)."""
    real = kernels.get_backend
    kernels.get_backend = lambda name: backend
    try:
        return medalpy_step("cpu", phase, batch_size, normalise_gradients=False,
                            threads=threads)
    finally:
        kernels.get_backend = real


def profile(phase, batch_size, rounds, steps, threads):
    cpu = kernels.get_backend("cpu")
    timed = Timed(cpu)
    plain, profiled = _step(phase, batch_size, threads, cpu), _step(phase, batch_size,
                                                                    threads, timed)
    per_kernel, totals, bare = defaultdict(list), [], []
    with cpu.session():
        for step in (plain, profiled):  # compile, warm the caches and the lanes' governor
            step.enter()
            for _ in range(steps):
                step()
        for _ in range(rounds):
            plain.enter()
            t0 = time.perf_counter()
            for _ in range(steps):
                plain()
            bare.append((time.perf_counter() - t0) / steps)
            profiled.enter()
            timed.seconds.clear()
            t0 = time.perf_counter()
            for _ in range(steps):
                profiled()
            total = (time.perf_counter() - t0) / steps
            totals.append(total)
            for name, s in timed.seconds.items():
                per_kernel[name].append(s / steps)
            per_kernel["python"].append(total - sum(timed.seconds.values()) / steps)
    step_s = statistics.median(totals)
    kernels_ms = {name: 1e3 * statistics.median(v) for name, v in per_kernel.items()}
    return {"phase": phase, "batch_size": batch_size, "step_ms": 1e3 * step_s,
            "step_ms_unwrapped": 1e3 * statistics.median(bare),
            "kernels_ms": dict(sorted(kernels_ms.items(), key=lambda kv: -kv[1]))}


def table(rows):
    lines = ["| phase | batch | step ms (unwrapped) | kernels, ms (share of the step) |",
             "| --- | --- | --- | --- |"]
    for r in rows:
        parts = ", ".join(f"{name} {ms:.3f} ({ms / r['step_ms']:.0%})"
                          for name, ms in r["kernels_ms"].items()
                          if ms / r["step_ms"] >= 0.01)
        lines.append(f"| {r['phase']} | {r['batch_size']} | {r['step_ms']:.2f} "
                     f"({r['step_ms_unwrapped']:.2f}) | {parts} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", action="append", choices=list(PHASES))
    parser.add_argument("--batch-size", action="append", type=int)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = [profile(phase, b, args.rounds, args.steps, args.threads)
            for phase in args.phase or list(PHASES)
            for b in args.batch_size or BATCH_SIZES]
    print(table(rows))
    if args.json:
        info = {"machine": machine(), "python": platform.python_version(),
                "threads": args.threads, "rounds": args.rounds, "steps": args.steps}
        args.json.write_text(json.dumps({**info, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
