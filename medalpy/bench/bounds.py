"""What the machine allows a training step: bytes moved, FLOPs, and the time they take at the
bandwidth and GEMM peak measured in the same run (a roofline bound).

Bytes are those medalpy's cpu step must move, per trainable layer ``n_in -> n_out`` with
``s`` bytes per element and a batch of ``B`` rows:

    weights   s n_in n_out x (1 forward read
                              + 1 read for the back-propagated error, above the lowest
                                trainable layer
                              + 4: the update reads and writes P and V once; the
                                weight gradient is formed in cache, never stored
                              + 2 with normGrad above config.GRAM_MAX_BATCH rows: the
                                gradient written, then read by the update and its norm)
    biases    s n_out x the same count
    levels    s B n_out x 3 (written by the forward pass, read for the weight gradient
                             and for the error below)

plus the input batch (read as uint8 or float codes, written as floats). The step's time
can be no lower than ``max(bytes / bandwidth, FLOPs / GEMM peak)``; the bandwidth is that of
a pass of the same form as the update (two arrays read and written) over as many bytes as
the step's weights and velocities, on the same threads, so caches help it as they help
the step.
"""

import time

import numpy as np

from medalpy.bench.machine import PEAK_MIN_SECONDS, best_seconds
from medalpy.bench.steps import PHASES, step_flops


def step_bytes(phase, batch_size, itemsize=4, normalise_gradients=False):
    """Bytes one training step of ``phase`` moves to and from memory (the model above)."""
    from medalpy import config

    widths, lowest, kind, _ = PHASES[phase]
    stored = normalise_gradients and batch_size > config.GRAM_MAX_BATCH
    update = 6 if stored else 4
    total = batch_size * widths[0] * ((1 if kind == "uint8" else itemsize) + itemsize)
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        passes = 1 + (i > lowest) + (update if i >= lowest else 0)
        total += itemsize * (n_in * n_out + n_out) * passes
        total += itemsize * batch_size * n_out * 3
    return total


def parameter_bytes(phase, itemsize=4):
    """Bytes of the phase's weights, biases and their velocities."""
    widths = PHASES[phase][0]
    return 2 * itemsize * sum(n_in * n_out + n_out for n_in, n_out in zip(widths, widths[1:]))


def _stream_kernel():
    import numba

    @numba.njit(parallel=True, nogil=True, cache=True)
    def stream(P, V, momentum, step, parts):
        # V = momentum V + step P; P -= V: the update's access pattern, in ``parts`` blocks.
        n = P.size
        for part in numba.prange(parts):
            for i in range(part * n // parts, (part + 1) * n // parts):
                v = momentum * V[i] + step * P[i]
                V[i] = v
                P[i] = P[i] - v

    return stream


def bandwidth(nbytes, threads, repeats=7, min_seconds=0.02, total_seconds=PEAK_MIN_SECONDS):
    """Best bytes/s of the update's pattern (two float32 arrays of ``nbytes / 2`` each,
    read and written) on ``threads`` Numba threads: blocks of passes lasting about
    ``min_seconds``, at least ``repeats`` of them over at least ``total_seconds``
    (:func:`medalpy.bench.machine.best_seconds`)."""
    import numba

    n = max(1024, int(nbytes) // 8)
    P = np.full(n, 1.0, np.float32)
    V = np.zeros(n, np.float32)
    stream = _stream_kernel()
    before = numba.get_num_threads()
    numba.set_num_threads(int(threads))
    try:
        stream(P, V, np.float32(0.5), np.float32(1e-7), int(threads))
        t0 = time.perf_counter()
        stream(P, V, np.float32(0.5), np.float32(1e-7), int(threads))
        passes = max(1, int(min_seconds / max(time.perf_counter() - t0, 1e-9)))

        def block():
            for _ in range(passes):
                stream(P, V, np.float32(0.5), np.float32(1e-7), int(threads))

        best = best_seconds(block, repeats, total_seconds) / passes
    finally:
        numba.set_num_threads(before)
    return 4 * P.nbytes / best


def bound(phase, batch_size, bytes_per_s, gemm_flops_per_s, itemsize=4):
    """{bytes, flops, seconds_memory, seconds_compute, bound_steps_per_s} of one step."""
    nbytes, flops = step_bytes(phase, batch_size, itemsize), step_flops(phase, batch_size)
    memory, compute = nbytes / bytes_per_s, flops / gemm_flops_per_s
    return {"bytes_per_step": nbytes, "seconds_memory": memory, "seconds_compute": compute,
            "bound_steps_per_s": 1.0 / max(memory, compute)}
