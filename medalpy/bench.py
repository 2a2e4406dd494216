"""Benchmarks: one full SGD training step, medalpy against PyTorch and the machine's GEMM peak.

A *step* is the trainer's own per-minibatch step (``Trainer.prepare(p).step``, on synthetic
images):

    gather_masked(source, rows, ...)   corrupted input, from uint8 (or cached float codes)
    gather(source, rows, ...)          clean target (labels for the supervised phase)
    Pass.train_step(X_in, X_target, optimiser)
                                       forward through the chain, objective, backward; each
                                       layer updated (normGrad, momentum, decay) as soon as
                                       its gradient is final
PyTorch, when installed, runs the code a user would write: ``nn.Linear`` + ``nn.Sigmoid``,
``nn.BCELoss`` summed over units and averaged over the batch (``nn.CrossEntropyLoss`` for
the supervised phase), ``torch.optim.SGD(momentum, weight_decay)``, masking noise as
``x * (torch.rand_like(x) > rate)``.

Phases (the paper's MNIST networks):

``layer1``      784-1000-784, phase 1, input from uint8
``stacked``     1000-1000-1000, stacked phase 2 on cached float codes
``gradual``     784-1000-1000-784, gradual phase 2, all layers trained
``supervised``  784-1000-1000-10, supervised fine-tuning with a softmax head

Repetitions are interleaved (every implementation runs one repetition before any runs the
next), so a slow patch of a shared machine hits all columns alike; compare within one run.
FLOP counts are those of the GEMMs only: ``2 B n_in n_out`` per forward product, per weight
gradient of a trainable layer and per back-propagated error above the lowest trainable layer.
"""

import os
import platform
import statistics
import time

import numpy as np

PHASES = {
    # name: (layer widths from input to output, index of the first trainable layer,
    #        source kind, head)
    "layer1": ([784, 1000, 784], 0, "uint8", "decoder"),
    "stacked": ([1000, 1000, 1000], 0, "codes", "decoder"),
    "gradual": ([784, 1000, 1000, 784], 0, "uint8", "decoder"),
    "supervised": ([784, 1000, 1000, 10], 0, "uint8", "classifier"),
}
BATCH_SIZES = (10, 20, 128)
IMPLEMENTATIONS = ("cpu", "numpy", "torch")
N_SAMPLES = 6000  # synthetic dataset rows: enough that batches come from all over memory
GEMM_N = 2048


# ----------------------------------------------------------------------------------------
# Work counts and the GEMM ceiling.
# ----------------------------------------------------------------------------------------


def step_flops(phase, batch_size):
    """GEMM FLOPs of one training step of ``phase`` at ``batch_size``."""
    widths, lowest, _, _ = PHASES[phase]
    total = 0
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        product = 2 * batch_size * n_in * n_out
        total += product  # forward
        if i >= lowest:
            total += product  # weight gradient
        if i > lowest:
            total += product  # error to the layer below
    return total


def gemm_peak(n=GEMM_N, repeats=5, use_torch=False):
    """Best float32 GFLOP/s of an ``n x n x n`` matrix product (NumPy's BLAS or torch's)."""
    rng = np.random.default_rng(0)
    A = rng.random((n, n), dtype=np.float32)
    B = rng.random((n, n), dtype=np.float32)
    if use_torch:
        import torch

        A, B = torch.from_numpy(A), torch.from_numpy(B)
        C = torch.empty(n, n)
        mm = lambda: torch.matmul(A, B, out=C)  # noqa: E731
    else:
        C = np.empty((n, n), np.float32)
        mm = lambda: np.matmul(A, B, out=C)  # noqa: E731
    mm()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


# ----------------------------------------------------------------------------------------
# Steps.
# ----------------------------------------------------------------------------------------


def _synthetic(phase, rng):
    """(source, labels): uint8 images or float32 codes in [0, 1], and 10-class labels."""
    widths, _, kind, _ = PHASES[phase]
    if kind == "uint8":
        source = rng.integers(0, 256, size=(N_SAMPLES, widths[0]), dtype=np.uint8)
    else:
        source = rng.random((N_SAMPLES, widths[0]), dtype=np.float32)
    return source, rng.integers(0, 10, size=N_SAMPLES).astype(np.int64)


def _batches(rng, batch_size):
    """An endless cycle of shuffled row batches, as an epoch's permutation gives them."""
    order = rng.permutation(N_SAMPLES)
    starts = range(0, N_SAMPLES - batch_size + 1, batch_size)
    while True:
        for start in starts:
            yield order[start:start + batch_size]


def medalpy_step(backend_name, phase, batch_size, lr=0.1, momentum=0.9, weight_decay=1e-3,
                 normalise_gradients=True, noise=0.15, seed=0, threads=None):
    """A closure running one training step of ``phase`` per call: the trainer's own step
    (:meth:`medalpy.trainer.Trainer.prepare` and ``PhaseRun.step``) on synthetic images.

    ``step.enter()`` sets the threads it runs with (``threads``; default: as found): the
    numpy backend gives them to NumPy's BLAS; the cpu backend runs that many lanes of a
    single-threaded BLAS (:func:`medalpy.kernels.lanes.use_threads`).
    """
    from medalpy.kernels import get_backend
    from medalpy.network import Network
    from medalpy.schedules import build_schedule, classifier_schedule
    from medalpy.trainer import Hyper, Trainer

    k = get_backend(backend_name)
    widths, _, _, head = PHASES[phase]
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(N_SAMPLES, 784), dtype=np.uint8)
    labels = rng.integers(0, 10, size=N_SAMPLES).astype(np.int64)
    # The phase of a real schedule whose chain has the widths of PHASES[phase].
    phases, p = {"layer1": (build_schedule("gradual", 1, 1, 0)[0], 0),
                 "stacked": (build_schedule("stacked", 2, 1, 1)[0], 1),
                 "gradual": (build_schedule("gradual", 2, 1, 1)[0], 1),
                 "supervised": (classifier_schedule(2, 1), 0)}[phase]
    hyper = Hyper(lr=lr, momentum=momentum, weight_decay=weight_decay,
                  normalise_gradients=normalise_gradients, batch_size=batch_size, noise=noise)
    supervised = head == "classifier"
    trainer = Trainer(k, Network(784, "float32"), phases, hyper, X, X[:100], [1000, 1000],
                      seed, labels=(labels, labels[:100]) if supervised else None,
                      n_classes=10 if supervised else None)
    run = trainer.prepare(p)
    chain = trainer.network.path(phases[p].input_level)
    assert [chain[0][1].n_in] + [layer.n_out for _, layer in chain] == widths
    batches = _batches(rng, batch_size)

    def step():
        return run.step(next(batches), 0, trainer.optimiser)

    step.layers = [layer for _, layer in chain]  # for tests: the parameters it trains
    if threads is not None:
        if backend_name == "cpu":
            step.enter = lambda: k.use_threads(threads)
        else:
            from medalpy.kernels import blas

            step.enter = lambda: blas.set_threads(threads)
    return step


def torch_step(phase, batch_size, lr=0.1, momentum=0.9, weight_decay=1e-3, noise=0.15,
               seed=0):
    """A closure running one training step written the standard PyTorch way."""
    import torch
    from torch import nn

    widths, _, kind, head = PHASES[phase]
    rng = np.random.default_rng(seed)
    source, labels = _synthetic(phase, rng)
    torch.manual_seed(seed)
    data = torch.from_numpy(source.astype(np.float32) / 255.0 if kind == "uint8" else source)
    targets = torch.from_numpy(labels)
    modules = []
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        modules.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2 or head != "classifier":
            modules.append(nn.Sigmoid())
    model = nn.Sequential(*modules)
    if head == "classifier":
        criterion = nn.CrossEntropyLoss()
    else:
        bce = nn.BCELoss(reduction="sum")
        criterion = lambda y, t: bce(y, t) / t.shape[0]  # noqa: E731  (sum units, mean batch)
    optimiser = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                                weight_decay=weight_decay)
    batches = _batches(rng, batch_size)

    def step():
        rows = torch.from_numpy(next(batches))
        x = data[rows]
        x_noisy = x * (torch.rand_like(x) > noise)
        optimiser.zero_grad()
        loss = criterion(model(x_noisy), targets[rows] if head == "classifier" else x)
        loss.backward()
        optimiser.step()
        return loss.item()

    return step


def _have_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------------------
# The benchmark.
# ----------------------------------------------------------------------------------------


def _run_block(step, n):
    enter = getattr(step, "enter", None)
    if enter is not None:  # the thread settings this implementation runs with
        enter()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - t0)


def bench_cell(steps, repeats, seconds):
    """Interleaved repetitions over ``steps`` ({impl: closure}); returns {impl: [steps/s]}.

    Each closure is warmed up (JIT compiled, caches and BLAS threads started), then the
    number of steps per repetition is chosen so that one repetition lasts about ``seconds``.
    """
    counts = {}
    for name, step in steps.items():
        for _ in range(3):
            step()
        rate = _run_block(step, 3)
        counts[name] = max(2, int(round(rate * seconds)))
    rates = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            rates[name].append(_run_block(step, counts[name]))
    return rates


def machine():
    """What ran the benchmark: CPU, cores, load, library versions."""
    import numba

    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "numpy": np.__version__, "numba": numba.__version__}
    try:
        with open("/proc/cpuinfo") as f:
            fields = {}
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
        info["cpu"] = fields.get("model name")
        info["cpu_family_model"] = f"{fields.get('cpu family')}/{fields.get('model')}"
        flags = fields.get("flags", "").split()
        # The widest vector units: what the BLAS kernels can use (AVX-512 or not matters).
        info["simd"] = next((f for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags),
                            None)
        info["cache"] = fields.get("cache size")
    except OSError:
        pass
    try:
        from medalpy.kernels import blas

        info["openblas_core"] = blas.core_name()
    except Exception:  # informational only
        pass
    try:
        info["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    if _have_torch():
        import torch

        info["torch"] = torch.__version__
    return info


def run_bench(phases=tuple(PHASES), batch_sizes=BATCH_SIZES, implementations=None,
              repeats=5, seconds=0.25, threads=2, normalise_gradients=True, progress=None):
    """Time every (phase, batch size) for every implementation; returns a JSON-able dict.

    Parameters
    ----------
    implementations : names among ``cpu``, ``numpy``, ``torch``; default all available.
    repeats : interleaved repetitions per cell (median, min and max are reported).
    seconds : about how long one repetition of one implementation lasts.
    threads : BLAS (and torch) threads.
    progress : optional callable receiving one line of text per finished cell.
    """
    if implementations is None:
        implementations = [name for name in IMPLEMENTATIONS
                           if name != "torch" or _have_torch()]
    implementations = list(implementations)
    from medalpy.kernels import blas

    if "torch" in implementations:
        import torch

        torch.set_num_threads(int(threads))  # left as set: torch has no "previous" to keep
    previous = blas.get_threads()
    try:
        return _run_bench(phases, batch_sizes, implementations, repeats, seconds, threads,
                          normalise_gradients, progress, sorted(previous))
    finally:
        blas.restore_threads(previous)


def _run_bench(phases, batch_sizes, implementations, repeats, seconds, threads,
               normalise_gradients, progress, blas_libraries):
    from medalpy.kernels import blas

    blas.set_threads(threads)
    peak = gemm_peak()
    result = {
        "machine": machine(), "threads": int(threads), "blas_libraries": blas_libraries,
        "dtype": "float32", "repeats": int(repeats),
        "settings": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3, "noise": 0.15,
                     "normalise_gradients": bool(normalise_gradients)},
        "gemm_peak_gflops": peak, "gemm_size": GEMM_N, "rows": [],
    }
    if "torch" in implementations:
        result["torch_gemm_peak_gflops"] = gemm_peak(use_torch=True)
    for phase in phases:
        for B in batch_sizes:
            steps = {}
            for name in implementations:
                if name == "torch":
                    steps[name] = torch_step(phase, B)
                else:
                    steps[name] = medalpy_step(name, phase, B, threads=threads,
                                               normalise_gradients=normalise_gradients)
            rates = bench_cell(steps, repeats, seconds)
            flops = step_flops(phase, B)
            for name in implementations:
                r = rates[name]
                median = statistics.median(r)
                gflops = median * flops / 1e9
                result["rows"].append({
                    "phase": phase, "batch_size": B, "implementation": name,
                    "steps_per_s": median, "steps_per_s_min": min(r),
                    "steps_per_s_max": max(r), "samples_per_s": median * B,
                    "gflops": gflops, "fraction_of_peak": gflops / peak,
                    "mflop_per_step": flops / 1e6,
                })
            if progress is not None:
                progress(format_cell(result["rows"][-len(implementations):]))
    return result


def speedups(result, over="torch", of="cpu"):
    """{(phase, batch): median steps/s of ``of`` / that of ``over``} where both ran."""
    by = {(r["phase"], r["batch_size"], r["implementation"]): r["steps_per_s"]
          for r in result["rows"]}
    return {(p, b): by[(p, b, of)] / by[(p, b, over)]
            for (p, b, impl) in by if impl == of and (p, b, over) in by}


def format_cell(rows):
    """One progress line for one (phase, batch) cell."""
    first = rows[0]
    parts = [f"{r['implementation']} {r['steps_per_s']:.0f}/s" for r in rows]
    return f"{first['phase']:<10} B={first['batch_size']:<4} " + ", ".join(parts)


def format_table(result):
    """A Markdown table of a :func:`run_bench` result."""
    impls = []
    for row in result["rows"]:
        if row["implementation"] not in impls:
            impls.append(row["implementation"])
    by = {(r["phase"], r["batch_size"], r["implementation"]): r for r in result["rows"]}
    cells = sorted({(r["phase"], r["batch_size"]) for r in result["rows"]},
                   key=lambda c: (list(PHASES).index(c[0]), c[1]))
    head = ["phase", "batch"]
    for name in impls:
        head += [f"{name} steps/s (min-max)", f"{name} GFLOP/s (% peak)"]
    if "torch" in impls and "cpu" in impls:
        head.append("cpu / torch")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for phase, B in cells:
        line = [phase, str(B)]
        for name in impls:
            r = by.get((phase, B, name))
            if r is None:
                line += ["", ""]
                continue
            line.append(f"{r['steps_per_s']:.0f} ({r['steps_per_s_min']:.0f}-"
                        f"{r['steps_per_s_max']:.0f})")
            line.append(f"{r['gflops']:.0f} ({100 * r['fraction_of_peak']:.0f}%)")
        if "torch" in impls and "cpu" in impls:
            ratio = by[(phase, B, "cpu")]["steps_per_s"] / by[(phase, B, "torch")]["steps_per_s"]
            line.append(f"{ratio:.2f}x")
        lines.append("| " + " | ".join(line) + " |")
    notes = [f"float32, {result['threads']} threads; GEMM peak ({result['gemm_size']}^3, "
             f"NumPy's BLAS) {result['gemm_peak_gflops']:.0f} GFLOP/s"]
    if "torch_gemm_peak_gflops" in result:
        notes[0] += f", torch {result['torch_gemm_peak_gflops']:.0f} GFLOP/s"
    m = result["machine"]
    if m.get("cpu"):
        notes.append(f"CPU: {m['cpu']} (family/model {m.get('cpu_family_model')}, "
                     f"{m.get('cpus')} cores, {m.get('simd')}, OpenBLAS kernel "
                     f"{m.get('openblas_core')})")
    load = m.get("load_average")
    if load:
        notes.append(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    memory = result.get("memory")
    if memory:
        notes.append(format_memory(memory))
    return "\n".join(lines) + "\n\n" + "\n".join(notes)


# ----------------------------------------------------------------------------------------
# Peak memory (and the epoch time) of a real training run on full MNIST.
# ----------------------------------------------------------------------------------------


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
