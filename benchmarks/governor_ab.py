"""The bench's gradual phase-2 step at batch 20, medalpy against the jitted JAX step, with
the lanes' governor on and off in turn (two rounds of each, one process):

    python benchmarks/governor_ab.py [--json benchmarks/results/governor_ab.json]

It showed the governor, misled in the bench's interleaved runs, costing medalpy a fifth to a
third of its batch-20 speed, and then its backed-off probes undoing that
(docs/performance.md).
"""
import argparse
import json

from medalpy import bench
from medalpy.bench.machine import machine
from medalpy.kernels import lanes

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--json")
args = parser.parse_args()
rounds = []
for governor in (True, False, True, False):
    lanes.GOVERNOR.enabled = governor
    lanes.GOVERNOR.reset()
    result = bench.run_bench(phases=("gradual",), batch_sizes=(20,),
                             implementations=["cpu", "jax"])
    rounds.append({"governor": governor, **{r["implementation"]: r["steps_per_s"]
                                            for r in result["rows"]}})
    print(f"governor {'on ' if governor else 'off'}: medalpy {rounds[-1]['cpu']:.0f} steps/s, "
          f"JAX {rounds[-1]['jax']:.0f}", flush=True)
lanes.GOVERNOR.enabled = True
if args.json:
    with open(args.json, "w") as f:
        json.dump({"machine": machine(), "rounds": rounds}, f, indent=1)
