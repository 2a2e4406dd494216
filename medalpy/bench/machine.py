"""What ran a benchmark, and what its hardware allows: the CPU, library versions, load, and
the float32 GEMM peak measured in the same run."""

import os
import platform
import time

import numpy as np

from medalpy.bench.peers import _have_torch

GEMM_N = 2048
#: The least time over which a peak (GEMM rate, bandwidth) is measured: another library's
#: threads may still be spinning after their last call (OpenBLAS's for about a tenth of a
#: second after the GEMM peak's products), and a bandwidth measured within that window
#: came out at a sixth of the machine's (a bound below the speed of the step it bounds).
PEAK_MIN_SECONDS = 0.5


def best_seconds(call, repeats=5, min_seconds=PEAK_MIN_SECONDS):
    """The shortest time of ``call()``, timed at least ``repeats`` times and for at least
    ``min_seconds`` in all: a peak, so a transient slowdown must not set it."""
    best, start, n = float("inf"), time.perf_counter(), 0
    while n < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
        n += 1
    return best


def gemm_peak(n=GEMM_N, repeats=5, use_torch=False, threads=None):
    """Best float32 GFLOP/s of an ``n x n x n`` matrix product: NumPy's BLAS (on the threads
    it is set to), or torch's on ``threads``."""
    rng = np.random.default_rng(0)
    A = rng.random((n, n), dtype=np.float32)
    B = rng.random((n, n), dtype=np.float32)
    if use_torch:
        import torch

        if threads is not None:
            torch.set_num_threads(int(threads))
        A, B = torch.from_numpy(A), torch.from_numpy(B)
        C = torch.empty(n, n)
        mm = lambda: torch.matmul(A, B, out=C)  # noqa: E731
    else:
        C = np.empty((n, n), np.float32)
        mm = lambda: np.matmul(A, B, out=C)  # noqa: E731
    mm()
    return 2.0 * n ** 3 / best_seconds(mm, repeats) / 1e9



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
