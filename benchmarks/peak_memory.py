"""Peak memory (and epoch times) of a real ``medalpy train mnist --gradual`` run on full MNIST.

Runs the command in a child process (the paper's network, ``--scale medium``, shortened to
``--epochs-layer1 1 --budget 1`` by default) and reads the child's peak resident set size from
``/proc/PID/status`` (VmHWM, polled). The run's own log gives the seconds of each epoch, among them the gradual phase-2
epoch at batch 20 that the performance targets name.

    python benchmarks/peak_memory.py --data-dir ../shared/data [--json PATH]
"""

import argparse
import json
from pathlib import Path

from medalpy import bench


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--epochs-layer1", type=int, default=1)
    parser.add_argument("--budget", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" /
                                              "peak_memory.json"))
    args = parser.parse_args(argv)
    result = bench.memory_run(data_dir=args.data_dir, epochs_layer1=args.epochs_layer1,
                              budget=args.budget, threads=args.threads)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(bench.format_memory(result))
    for epoch in result.get("epochs", []):
        print(f"  {epoch['phase']} epoch {epoch['epoch']}: {epoch['seconds']:.1f} s")


if __name__ == "__main__":
    main()
