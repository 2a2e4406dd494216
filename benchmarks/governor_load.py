"""Where the lanes' governor spends a gradual epoch when another process keeps a core busy.

For each load (none, and the bench's ``compute`` and ``memory`` processes) it runs the
bench's gradual phase-2 step at batch 20 (normGrad on, as the trainer runs it) for
``--steps`` steps with the governor and with one lane throughout, ``--rounds`` times
alternating, and counts the governor's products by the lanes they ran on and the seconds
they took:

    python benchmarks/governor_load.py [--steps 1500] [--rounds 2]
        [--json benchmarks/results/governor_load.json]

Run it on an otherwise quiet machine.
"""

import argparse
import collections
import json
import statistics
import time

from medalpy.bench.contention import start_load
from medalpy.bench.machine import machine
from medalpy.bench.steps import medalpy_step
from medalpy.kernels import lanes


def _epoch(step, steps, one_lane):
    """Seconds of ``steps`` steps, and {lanes: [calls, seconds]} of the governor's products."""
    spent = collections.defaultdict(lambda: [0, 0.0])
    record = lanes.GOVERNOR.record

    def counted(key, n, seconds):
        spent[n][0] += 1
        spent[n][1] += seconds
        record(key, n, seconds)

    lanes.use_threads(1 if one_lane else 2)
    lanes.GOVERNOR.reset()
    lanes.GOVERNOR.record = counted
    try:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return time.perf_counter() - t0, {n: v for n, v in spent.items()}
    finally:
        del lanes.GOVERNOR.record  # the class's method again


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    with lanes.threads(2):
        step = medalpy_step("cpu", "gradual", 20)
        for _ in range(20):  # compiled and warm
            step()
        for load in (None, "compute", "memory"):
            child = start_load(load) if load else None
            try:
                governor_s, one_lane_s = [], []
                calls, seconds = collections.Counter(), collections.Counter()  # by lanes
                for _ in range(args.rounds):
                    t, spent = _epoch(step, args.steps, one_lane=False)
                    governor_s.append(t)
                    for n, (c, s) in spent.items():
                        calls[n] += c
                        seconds[n] += s
                    one_lane_s.append(_epoch(step, args.steps, one_lane=True)[0])
            finally:
                if child is not None:
                    child.kill()
                    child.wait()
            rows.append({"load": load or "none", "governor_s": governor_s,
                         "one_lane_s": one_lane_s,
                         "two_lane_share": calls[2] / max(1, calls[1] + calls[2]),
                         "two_lane_s": seconds[2] / args.rounds,
                         "one_lane_calls_s": seconds[1] / args.rounds})
            r = rows[-1]
            print(f"{r['load']:8s} governor {statistics.median(r['governor_s']):6.2f} s, one "
                  f"lane {statistics.median(r['one_lane_s']):6.2f} s; governor's products on "
                  f"two lanes {100 * r['two_lane_share']:.1f}%, taking {r['two_lane_s']:.2f} s "
                  f"of the epoch (one-lane products {r['one_lane_calls_s']:.2f} s)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"steps": args.steps, "rounds": args.rounds, "machine": machine(),
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
