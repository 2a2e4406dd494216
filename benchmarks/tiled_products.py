"""Large batches on the cpu backend: the register-tiled products and the split element-wise
passes, on and off.

Times the step `medalpy bench` times (:func:`medalpy.bench.steps.medalpy_step`, without
normGrad) in four variants, interleaved round by round in one process, for each phase and
batch size:

- ``openblas``: every product through OpenBLAS on lanes, the element-wise passes serial (the
  cpu backend below both thresholds);
- ``tiled``: float32 products through :mod:`medalpy.kernels.tiles` (AVX-512 only);
- ``sigmoid lanes``: the row-by-row element-wise passes (bias + sigmoid, the sigmoid
  cross-entropy, the gathers) split over the lanes;
- ``both``.

and prints steps/s (median of rounds) with each variant's ratio to ``openblas``. The
thresholds :data:`medalpy.config.TILED_MIN_ROWS`, ``TILED_MAX_ROWS`` and
``ELEMENTWISE_LANES_MIN_ROWS`` are where these ratios say the two changes pay. (Below
:data:`medalpy.config.TILED_NT_MIN_ROWS` rows, ``matmul_nt`` uses its dot-product kernel
whatever the variant.)

    python benchmarks/tiled_products.py [--phase gradual] [--batch-size 128] \
        [--rounds 5] [--steps 100] [--json benchmarks/results/tiled_products.json]

Run it on a quiet machine; the ratios, not the absolute rates, are what carries over.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import medalpy.kernels as kernels
from medalpy import config
from medalpy.bench.machine import machine
from medalpy.bench.steps import PHASES, medalpy_step
from medalpy.kernels import lanes, tiles

VARIANTS = {"openblas": (False, False), "tiled": (True, False),
            "sigmoid lanes": (False, True), "both": (True, True)}


def _use(tiled, sigmoid_lanes):
    # Each threshold at 1 (on at every batch size) or out of reach (off).
    config.TILED_MIN_ROWS, config.TILED_MAX_ROWS = (1, 1 << 30) if tiled else (1 << 30, 0)
    config.ELEMENTWISE_LANES_MIN_ROWS = 1 if sigmoid_lanes else 1 << 30
    lanes.GOVERNOR.reset()


def measure(phase, batch, rounds, steps):
    """{variant: median steps/s} for one phase and batch size (inside a session)."""
    step = medalpy_step("cpu", phase, batch, normalise_gradients=False)
    rates = {name: [] for name in VARIANTS}
    for r in range(rounds + 1):
        for name, flags in VARIANTS.items():
            _use(*flags)
            for _ in range(steps // 4):  # the governor settles on the variant's kernels
                step()
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            if r:  # round 0 compiles and warms up
                rates[name].append(steps / (time.perf_counter() - t0))
    return {name: statistics.median(v) for name, v in rates.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phase", action="append", choices=PHASES)
    parser.add_argument("--batch-size", type=int, action="append")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    phases = args.phase or list(PHASES)
    batches = args.batch_size or [20, 32, 48, 64, 128, 256]
    cpu = kernels.get_backend("cpu")
    saved = config.TILED_MIN_ROWS, config.TILED_MAX_ROWS, config.ELEMENTWISE_LANES_MIN_ROWS
    rows = []
    with cpu.session():
        if not tiles.available():
            print("this CPU has no AVX-512: 'tiled' and 'both' run OpenBLAS's products")
        try:
            for phase in phases:
                for batch in batches:
                    rates = measure(phase, batch, args.rounds, args.steps)
                    rows.append({"phase": phase, "batch": batch, "steps_per_s": rates})
                    print(phase, batch, {k: round(v, 1) for k, v in rates.items()}, flush=True)
        finally:
            config.TILED_MIN_ROWS, config.TILED_MAX_ROWS, config.ELEMENTWISE_LANES_MIN_ROWS = saved
    names = list(VARIANTS)
    print("\n| phase | batch | " + " | ".join(f"{n} steps/s" for n in names)
          + " | " + " | ".join(f"{n} / openblas" for n in names[1:]) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in names + names[1:]) + " |")
    for row in rows:
        r = row["steps_per_s"]
        print(f"| {row['phase']} | {row['batch']} | "
              + " | ".join(f"{r[n]:.1f}" for n in names) + " | "
              + " | ".join(f"{r[n] / r['openblas']:.3f}" for n in names[1:]) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": machine(), "avx512": tiles.available(), "rounds": args.rounds,
            "steps": args.steps, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
