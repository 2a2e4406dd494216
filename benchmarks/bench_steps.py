"""One full SGD training step: medalpy's cpu and numpy backends against standard PyTorch.

The same as ``medalpy bench`` (see :mod:`medalpy.bench` for what a step is and how it is
timed); prints the Markdown table and writes the JSON.

    python benchmarks/bench_steps.py [--json benchmarks/results/bench_steps.json]
        [--phase gradual ...] [--batch-size 20 ...] [--repeats 5] [--threads 2] [--memory]

Compare columns of one run only: repetitions are interleaved, runs on a shared machine are
not comparable with each other.
"""

import argparse
import json
import sys
from pathlib import Path

from medalpy import bench


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" /
                                              "bench_steps.json"))
    parser.add_argument("--phase", action="append", choices=list(bench.PHASES))
    parser.add_argument("--batch-size", action="append", type=int)
    parser.add_argument("--implementation", action="append",
                        choices=list(bench.IMPLEMENTATIONS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-normalise-gradients", action="store_true")
    parser.add_argument("--memory", action="store_true",
                        help="also run the full-MNIST peak-memory measurement")
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    result = bench.run_bench(phases=args.phase or tuple(bench.PHASES),
                             batch_sizes=args.batch_size or bench.BATCH_SIZES,
                             implementations=args.implementation, repeats=args.repeats,
                             seconds=args.seconds, threads=args.threads,
                             normalise_gradients=not args.no_normalise_gradients,
                             progress=lambda line: print(line, file=sys.stderr))
    if args.memory:
        result["memory"] = bench.memory_run(data_dir=args.data_dir, threads=args.threads)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(bench.format_table(result))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
