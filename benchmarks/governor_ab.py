"""The bench's gradual phase-2 step at batch 20, medalpy against the jitted JAX step, with
the lanes' governor on and off in turn (two rounds of each, one process):

    python benchmarks/governor_ab.py

It showed the governor, misled in the bench's interleaved runs, costing medalpy a fifth to a
third of its batch-20 speed (docs/performance.md).
"""
from medalpy import bench as b
from medalpy.kernels import lanes
for gov in (True, False, True, False):
    lanes.GOVERNOR.enabled = gov; lanes.GOVERNOR.reset()
    r = b.run_bench(phases=("gradual",), batch_sizes=(20,), implementations=["cpu", "jax"])
    print("governor", gov, [(x["implementation"], round(x["steps_per_s"])) for x in r["rows"]], flush=True)
