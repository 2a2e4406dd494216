"""A gradual epoch with the cores shared: how much longer it takes when another process keeps
one core busy, with the lanes' governor (the default) and with the lanes held fixed.

The other process is started here, one of two kinds: ``compute`` (an interpreter loop doing
integer arithmetic: a core's time, no memory traffic) and ``memory`` (NumPy copying 256 MB
back and forth: memory bandwidth, little arithmetic). The epoch is ``steps`` steps of
gradual phase 2 (784-1000-1000-784, batch 20, normGrad on, as the trainer runs it); 3,000
steps is one pass over MNIST's 60,000 training images.
"""

import os
import subprocess
import sys
import time

from medalpy.bench.steps import medalpy_step

LOADS = (None, "compute", "memory")
MODES = ("governor", "all lanes", "one lane")
_LOAD_CODE = {
    "compute": "x = 1\nwhile True:\n    x = (x * 1103515245 + 12345) & 0xFFFFFFFF\n",
    "memory": ("import numpy as np\na = np.ones(1 << 26, np.float32)\nb = np.empty_like(a)\n"
               "while True:\n    np.copyto(b, a)\n    np.copyto(a, b)\n"),
}


def start_load(kind):
    """A child process keeping one core busy with ``kind`` work (see the module's doc)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-c", _LOAD_CODE[kind]], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # started and at work (NumPy imported, arrays touched)
    return child


def _epoch(step, steps, mode, threads):
    from medalpy.kernels import lanes

    lanes.use_threads(1 if mode == "one lane" else threads)
    lanes.GOVERNOR.enabled = mode == "governor"
    try:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return time.perf_counter() - t0
    finally:
        lanes.GOVERNOR.enabled = True


def run_contention(steps=3000, threads=2, progress=None):
    """Seconds of a gradual epoch for each load (none, compute, memory) and each way of
    running the lanes; returns {"steps", "threads", "rows": [{load, mode, seconds,
    ratio}]}, the ratio against the quiet epoch with the governor. The lanes, thread
    counts and governor are as they were afterwards."""
    from medalpy.kernels import lanes

    with lanes.threads(threads):
        step = medalpy_step("cpu", "gradual", 20)
        for _ in range(20):  # compiled and warm
            step()
        rows = []
        for load in LOADS:
            child = None
            try:
                child = start_load(load) if load else None
                for mode in MODES:
                    seconds = _epoch(step, steps, mode, threads)
                    rows.append({"load": load or "none", "mode": mode, "seconds": seconds})
                    if progress is not None:
                        progress(f"contention: load {load or 'none'}, {mode}: {seconds:.1f} s")
            finally:
                if child is not None:
                    child.kill()
                    child.wait()
    quiet = next(r["seconds"] for r in rows if r["load"] == "none" and r["mode"] == "governor")
    for row in rows:
        row["ratio"] = row["seconds"] / quiet
    return {"steps": int(steps), "threads": int(threads), "batch_size": 20,
            "phase": "gradual", "rows": rows}


def format_contention(result):
    """A Markdown table: seconds per epoch (and times the quiet epoch) by load and mode."""
    head = ["other process"] + [f"{mode} s (x quiet)" for mode in MODES]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    by = {(r["load"], r["mode"]): r for r in result["rows"]}
    for load in LOADS:
        name = load or "none"
        cells = [f"{by[(name, mode)]['seconds']:.1f} ({by[(name, mode)]['ratio']:.2f}x)"
                 for mode in MODES]
        lines.append("| " + " | ".join([name] + cells) + " |")
    return ("\n".join(lines) + f"\n\ngradual phase 2, batch 20, {result['steps']} steps per "
            f"epoch, {result['threads']} lanes; x quiet: against the quiet epoch with the "
            "governor")
