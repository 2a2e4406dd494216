"""Peak memory (and the epoch time) of a real training run on full MNIST."""

import os
import time


def memory_run(data_dir=None, out_dir=None, epochs_layer1=1, budget=1, threads=2,
               extra_args=()):
    """Peak RSS of ``medalpy train mnist --gradual --scale medium`` (shortened) in a child.

    Returns a dict with the command, the peak resident set size in MB and the seconds of
    each epoch as the run logged them (the gradual phase-2 epoch is the one the targets
    name), or None when the run failed (e.g. full MNIST is not available).
    """
    import json
    import subprocess
    import sys
    import tempfile

    own_tmp = None
    if out_dir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="medalpy-bench-")
        out_dir = os.path.join(own_tmp.name, "run")
    cmd = [sys.executable, "-m", "medalpy", "train", "mnist", "--gradual", "--scale", "medium",
           "--epochs-layer1", str(epochs_layer1), "--budget", str(budget), "--quiet",
           "--out", out_dir, *extra_args]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    try:
        log_path = os.path.join(os.path.dirname(out_dir) or ".", "bench-train-output.txt")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        t0 = time.perf_counter()
        with open(log_path, "w+") as output:
            child = subprocess.Popen(cmd, env=env, stdout=output, stderr=subprocess.STDOUT)
            # The child's own peak: VmHWM of its address space after exec, polled until it
            # exits. (wait4's ru_maxrss would not do: Linux carries the high-water mark of
            # the forking parent, here this benchmark with torch loaded, across exec.)
            peak_kb = 0
            while child.poll() is None:
                peak_kb = max(peak_kb, _vm_hwm_kb(child.pid))
                time.sleep(0.02)
            wall = time.perf_counter() - t0
            output.seek(0)
            text = output.read()
        if child.returncode != 0:
            why = (f"killed by signal {-child.returncode}" if child.returncode < 0
                   else f"exit status {child.returncode}")
            return {"command": " ".join(cmd), "error": f"{why}: {text.strip()[-500:]}"}
        epochs = []
        log = os.path.join(out_dir, "log.jsonl")
        if os.path.exists(log):
            with open(log) as f:
                for line in f:
                    rec = json.loads(line)
                    if "seconds" in rec:
                        epochs.append({"phase": rec.get("phase"), "epoch": rec.get("epoch"),
                                       "seconds": rec["seconds"]})
        return {"command": " ".join(cmd), "peak_rss_mb": peak_kb / 1024.0,
                "wall_seconds": wall, "epochs": epochs}
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()


def _vm_hwm_kb(pid):
    """Peak resident set size (kB) of a live process's address space, 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def format_memory(memory):
    if "error" in memory:
        return f"peak memory: run failed ({memory['error'].splitlines()[0]})"
    text = f"peak RSS of a full-MNIST `medalpy train mnist --gradual` run: " \
           f"{memory['peak_rss_mb']:.0f} MB"
    gradual = [e for e in memory["epochs"] if str(e["phase"]).endswith("gradual")]
    if gradual:
        text += f"; gradual phase-2 epoch (B = 20): {gradual[-1]['seconds']:.1f} s"
    return text
