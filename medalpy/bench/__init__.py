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

Modules: :mod:`.steps` (the phases and medalpy's step), :mod:`.peers` (the steps it is timed
against), :mod:`.machine` (CPU, GEMM peak), :mod:`.memory` (peak RSS of a real run).
"""

import statistics
import time

from medalpy.bench import bounds, contention, peers  # noqa: F401  (contention: re-exported)
from medalpy.bench.machine import GEMM_N, gemm_peak, machine  # noqa: F401
from medalpy.bench.memory import format_memory, memory_run  # noqa: F401  (re-exported)
from medalpy.bench.steps import (  # noqa: F401
    BATCH_SIZES,
    IMPLEMENTATIONS,
    PHASES,
    medalpy_step,
    step_flops,
)


def _run_block(step, n):
    enter = getattr(step, "enter", None)
    if enter is not None:  # the thread settings this implementation runs with
        enter()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - t0)


#: How long each implementation runs before it is timed, in repetitions' lengths (12 x the
#: default 0.25 s: 3 s): JIT compilation, caches, thread pools, and the cpu lanes' governor,
#: which times each product shape on one lane and on all before it settles (a 1 s warm-up
#: was too short after the bench's 2-thread GEMM peak: docs/performance.md).
WARMUP_REPETITIONS = 12


def bench_cell(steps, repeats, seconds, warmup=None):
    """Interleaved repetitions over ``steps`` ({impl: closure}); returns {impl: [steps/s]}.

    Each closure is warmed up for about ``warmup`` seconds (default
    ``WARMUP_REPETITIONS * seconds``), then the number of steps per repetition is chosen so
    that one repetition lasts about ``seconds``.
    """
    warmup = WARMUP_REPETITIONS * seconds if warmup is None else warmup
    counts = {}
    for name, step in steps.items():
        for _ in range(3):
            step()
        rate = _run_block(step, 3)
        rate = _run_block(step, max(3, int(round(rate * warmup))))
        counts[name] = max(2, int(round(rate * seconds)))
    rates = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            rates[name].append(_run_block(step, counts[name]))
    return rates


def implementation_step(name, phase, batch_size, threads):
    """The step closure of implementation ``name`` (see :data:`IMPLEMENTATIONS`)."""
    if name in ("cpu", "cpu-normgrad", "numpy"):
        return medalpy_step("cpu" if name.startswith("cpu") else "numpy", phase, batch_size,
                            threads=threads, normalise_gradients=name == "cpu-normgrad")
    return peers.PEERS[name](phase, batch_size, threads=threads)


def available_implementations():
    """medalpy's own steps and every peer whose library is installed, in table order."""
    return [name for name in IMPLEMENTATIONS if name not in peers.PEERS
            or name in peers.available_peers()]


def run_bench(phases=tuple(PHASES), batch_sizes=BATCH_SIZES, implementations=None,
              repeats=5, seconds=0.25, threads=2, progress=None):
    """Time every (phase, batch size) for every implementation; returns a JSON-able dict.

    Parameters
    ----------
    implementations : names among :data:`IMPLEMENTATIONS`; default all available.
    repeats : interleaved repetitions per cell (median, min and max are reported).
    seconds : about how long one repetition of one implementation lasts.
    threads : BLAS, lanes and peer threads.
    progress : optional callable receiving one line of text per finished cell.
    """
    implementations = list(implementations or available_implementations())
    from medalpy.kernels import blas, lanes

    # Every thread count (Numba's, each OpenBLAS's) and the lanes are as they were
    # afterwards: the steps set them.
    with lanes.threads(threads):
        return _run_bench(phases, batch_sizes, implementations, repeats, seconds, threads,
                          progress, sorted(blas.get_threads()))


def _run_bench(phases, batch_sizes, implementations, repeats, seconds, threads, progress,
               blas_libraries):
    from medalpy.kernels import blas

    blas.set_threads(threads)
    peak = gemm_peak()
    result = {
        "machine": machine(), "threads": int(threads), "blas_libraries": blas_libraries,
        "dtype": "float32", "repeats": int(repeats),
        "settings": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3, "noise": 0.15,
                     "normalise_gradients": {name: name == "cpu-normgrad"
                                             for name in implementations}},
        "gemm_peak_gflops": peak, "gemm_size": GEMM_N, "rows": [],
    }
    if "torch" in implementations:
        result["torch_gemm_peak_gflops"] = gemm_peak(use_torch=True, threads=threads)
    result["bandwidth_gb_s"] = {}
    for phase in phases:
        # What the machine allows this phase (bounds.py): its update's memory pattern over
        # the phase's own weights and velocities, on the benchmark's threads.
        bytes_per_s = bounds.bandwidth(bounds.parameter_bytes(phase), threads)
        result["bandwidth_gb_s"][phase] = bytes_per_s / 1e9
        for B in batch_sizes:
            steps = {}
            for name in implementations:
                steps[name] = implementation_step(name, phase, B, threads)
            rates = bench_cell(steps, repeats, seconds)
            flops = step_flops(phase, B)
            limit = bounds.bound(phase, B, bytes_per_s, peak * 1e9)
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
                    "mb_per_step": limit["bytes_per_step"] / 1e6,
                    "bound_steps_per_s": limit["bound_steps_per_s"],
                    "fraction_of_bound": median / limit["bound_steps_per_s"],
                })
            if progress is not None:
                progress(format_cell(result["rows"][-len(implementations):]))
    return result


def format_cell(rows):
    """One progress line for one (phase, batch) cell."""
    first = rows[0]
    parts = [f"{r['implementation']} {r['steps_per_s']:.0f}/s" for r in rows]
    return f"{first['phase']:<10} B={first['batch_size']:<4} " + ", ".join(parts)


def format_table(result):
    """A Markdown table of a :func:`run_bench` result: each implementation's steps/s, the
    bound (:mod:`.bounds`) and medalpy's share of it, and medalpy against every peer."""
    impls = []
    for row in result["rows"]:
        if row["implementation"] not in impls:
            impls.append(row["implementation"])
    by = {(r["phase"], r["batch_size"], r["implementation"]): r for r in result["rows"]}
    cells = sorted({(r["phase"], r["batch_size"]) for r in result["rows"]},
                   key=lambda c: (list(PHASES).index(c[0]), c[1]))
    ours = "cpu" if "cpu" in impls else None
    others = [name for name in impls if name in peers.PEERS]
    head = ["phase", "batch", "MFLOP", "MB", "bound steps/s"]
    head += [f"{name} steps/s (min-max)" for name in impls]
    if ours:
        head.append("cpu % of bound")
        head += [f"cpu / {name}" for name in others]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for phase, B in cells:
        any_row = next(by[(phase, B, name)] for name in impls if (phase, B, name) in by)
        line = [phase, str(B), f"{any_row['mflop_per_step']:.0f}",
                f"{any_row['mb_per_step']:.0f}", f"{any_row['bound_steps_per_s']:.0f}"]
        for name in impls:
            r = by.get((phase, B, name))
            line.append("" if r is None else f"{r['steps_per_s']:.0f} "
                        f"({r['steps_per_s_min']:.0f}-{r['steps_per_s_max']:.0f})")
        if ours:
            mine = by.get((phase, B, ours))
            line.append("" if mine is None else f"{100 * mine['fraction_of_bound']:.0f}%")
            for name in others:
                theirs = by.get((phase, B, name))
                line.append("" if mine is None or theirs is None
                            else f"{mine['steps_per_s'] / theirs['steps_per_s']:.2f}x")
        lines.append("| " + " | ".join(line) + " |")
    notes = [f"float32, {result['threads']} threads; GEMM peak ({result['gemm_size']}^3, "
             f"NumPy's BLAS) {result['gemm_peak_gflops']:.0f} GFLOP/s"]
    bandwidth = result.get("bandwidth_gb_s", {})
    if bandwidth:
        notes.append("bandwidth of the update's pattern over each phase's weights and "
                     "velocities: " + ", ".join(f"{phase} {gb:.0f} GB/s"
                                                for phase, gb in bandwidth.items()))
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
    if "contention" in result:
        from medalpy.bench.contention import format_contention

        notes.append("\n" + format_contention(result["contention"]))
    return "\n".join(lines) + "\n\n" + "\n".join(notes)

