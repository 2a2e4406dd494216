"""Micro-benchmark: each kernel of the ``cpu`` backend against the NumPy reference.

Times one call of every kernel at the paper's shapes, a batch of B = 20 or 128 rows over
1000 units (784 for the input side), and the SGD update over a 1000 x 1000 weight matrix.
Prints a table (median microseconds per call, speed-up) and writes it as JSON.

    python benchmarks/kernels_micro.py [--json PATH] [--dtype float32] [--repeat 7]

Numba compilation is done (or loaded from cache) before timing. The machines are shared and
noisy (medians drift 10-30 % between runs): compare the two columns of one run. On a busy
machine OpenBLAS's threads fight the other processes and the GEMM rows become meaningless;
``OPENBLAS_NUM_THREADS=1`` makes them comparable again (the setting is recorded in the JSON).
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from medalpy.kernels import cpu
from medalpy.kernels import reference as ref

D_IN, D_HID, N_DATA, N_CLASSES = 784, 1000, 10000, 10


def _median_call_seconds(fn, repeat, min_time=0.05):
    """Median over ``repeat`` rounds of the mean time of one call, rounds of >= ``min_time``."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    number = max(1, int(min_time / one))
    rounds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        rounds.append((time.perf_counter() - t0) / number)
    return float(np.median(rounds))


def _cases(B, dtype, rng):
    """(kernel name, shape label, callable(backend)) for one batch size."""
    X = rng.integers(0, 256, size=(N_DATA, D_IN), dtype=np.uint8)
    rows = rng.permutation(N_DATA)[:B].astype(np.int64)
    Xb = np.empty((B, D_IN), dtype)
    W = rng.normal(0, 0.05, size=(D_IN, D_HID)).astype(dtype)
    Z = rng.normal(0, 4, size=(B, D_HID)).astype(dtype)
    Z0 = Z.copy()
    b = rng.normal(size=D_HID).astype(dtype)
    H = np.empty((B, D_HID), dtype)
    T = rng.random((B, D_HID)).astype(dtype)
    delta = np.empty((B, D_HID), dtype)
    dX = np.empty((B, D_IN), dtype)
    dW = np.empty((D_IN, D_HID), dtype)
    db = np.empty(D_HID, dtype)
    logits = rng.normal(size=(B, N_CLASSES)).astype(dtype)
    labels = rng.integers(0, N_CLASSES, size=B)
    dlog = np.empty_like(logits)
    pred = np.empty(B, np.int64)

    def bias_sigmoid(k):
        Z[...] = Z0  # keep Z bounded: the kernel adds b in place
        k.add_bias_sigmoid(Z, b, H)

    return [
        ("gather", f"({B},{D_IN}) u8", lambda k: k.gather(X, rows, Xb)),
        ("gather_masked", f"({B},{D_IN}) u8",
         lambda k: k.gather_masked(X, rows, 0.15, 1, 2, Xb)),
        ("matmul", f"({B},{D_IN})@({D_IN},{D_HID})", lambda k: k.matmul(Xb, W, H)),
        ("matmul_tn", f"({B},{D_IN}).T@({B},{D_HID})", lambda k: k.matmul_tn(Xb, T, dW)),
        ("matmul_nt", f"({B},{D_HID})@({D_IN},{D_HID}).T", lambda k: k.matmul_nt(T, W, dX)),
        ("add_bias_sigmoid*", f"({B},{D_HID})", bias_sigmoid),
        ("sigmoid_cross_entropy", f"({B},{D_HID})",
         lambda k: k.sigmoid_cross_entropy(Z0, T, delta)),
        ("sigmoid_backward", f"({B},{D_HID})", lambda k: k.sigmoid_backward(T, H, delta)),
        ("column_sum", f"({B},{D_HID})", lambda k: k.column_sum(T, db)),
        ("softmax_cross_entropy", f"({B},{N_CLASSES})",
         lambda k: k.softmax_cross_entropy(logits, labels, dlog)),
        ("softmax_predict", f"({B},{N_CLASSES})", lambda k: k.softmax_predict(logits, pred)),
    ]


def _weight_cases(dtype, rng):
    shape = (D_HID, D_HID)
    P, G, V = (rng.normal(0, 0.01, size=shape).astype(dtype) for _ in range(3))
    return [
        ("sgd_update", "(1000,1000)", lambda k: k.sgd_update(P, G, V, 0.01, 0.9, 1e-3, 1.0)),
        ("sum_of_squares", "(1000,1000)", lambda k: k.sum_of_squares(G)),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="benchmarks/results/kernels_micro.json")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--batches", default="20,128")
    args = parser.parse_args(argv)
    dtype = np.dtype(args.dtype).type

    rng = np.random.default_rng(0)
    cases = []
    for B in (int(s) for s in args.batches.split(",")):
        cases += _cases(B, dtype, rng)
    cases += _weight_cases(dtype, rng)

    t0 = time.perf_counter()
    for _, _, fn in cases:  # compile (or load from cache) every specialisation first
        fn(cpu)
    compile_s = time.perf_counter() - t0

    rows = []
    print(f"{'kernel':<24}{'shape':<28}{'numpy us':>10}{'cpu us':>10}{'speed-up':>10}")
    for name, shape, fn in cases:
        t_ref = _median_call_seconds(lambda: fn(ref), args.repeat)
        t_cpu = _median_call_seconds(lambda: fn(cpu), args.repeat)
        rows.append(
            {"kernel": name, "shape": shape, "numpy_us": t_ref * 1e6, "cpu_us": t_cpu * 1e6,
             "speedup": t_ref / t_cpu}
        )
        speedup = t_ref / t_cpu
        print(f"{name:<24}{shape:<28}{t_ref * 1e6:>10.1f}{t_cpu * 1e6:>10.1f}{speedup:>9.2f}x")
    print("* add_bias_sigmoid includes a copy restoring Z (same in both columns).")
    print(f"first cpu calls (Numba compile or cache load): {compile_s:.2f} s")

    result = {
        "benchmark": "kernels_micro",
        "dtype": args.dtype,
        "repeat": args.repeat,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "load_average": os.getloadavg(),
        "numba_first_call_s": compile_s,
        "rows": rows,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
