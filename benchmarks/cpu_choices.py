"""The measurements behind the cpu backend's design choices, A/B in one process.

Each row times two or three ways of doing the same work of gradual phase 2 (784-1000-1000-784,
float32) at batch 20, interleaved, and reports the median milliseconds per call:

1. ``products``: the 8 matrix products of one step, on lanes (single-threaded OpenBLAS per
   Numba thread, the cpu backend's way; here without the dot-product kernel of row 4) against
   ``np.matmul`` with OpenBLAS's own threads (2, and 1).
2. ``gradient+update``: the three layers' ``dW = A^T delta`` and SGD update, fused
   (``sgd_update_product``) against ``matmul_tn`` into a stored ``dW`` then ``sgd_update``.
3. ``bias+sigmoid in place``: the one-array kernel the backend calls when ``out is Z``,
   against the two-array kernel given ``out = Z``.
4. ``back-propagated errors``: the step's two ``delta W^T`` products as dot products along
   rows (``_matmul_nt_f32_lanes``, what ``matmul_nt`` does for batches up to
   ``NT_DOTS_MAX_ROWS``) against OpenBLAS on lanes; then one ``delta W^T`` of a 1000 x 1000
   layer whose weights come from memory (8 layers taken in turn), at 10 to 64 rows, for the
   cut-off.
5. ``gradient norms``: ``||A^T delta||^2`` of the three layers from the batch's Gram matrices,
   by ``product_sq_norm`` (float64 dot products of row pairs) against three narrow OpenBLAS
   products and a trace (the earlier way).
6. ``products in parts``: the 8 products on two lanes with each product cut into
   ``PRODUCT_PARTS`` = 4 parts (two BLAS calls a lane) against 2 (one a lane), at batch 20
   and 128: the fixed split that keeps results independent of the lanes costs a second
   packing of the batch's rows per lane.
7. ``step``: one whole training step (gather, forward, loss, backward, normGrad update) as the
   trainer runs it now (``Pass.train_step`` on lanes) against the earlier design
   (``Pass.backward`` + ``SGD.update``, ``np.matmul`` on OpenBLAS's 2 threads; its norms
   by ``product_sq_norm`` too).

Every lane runs every product here: the lanes' governor (which moves a product to one lane
while another process slows a lane, ``medalpy bench --contention``) is off. Interleaved with
rounds on OpenBLAS's own threads, whose threads still spin when a round on lanes begins, it
took the lanes' first calls for contention and kept the step on one lane for the rest of the
run (the step row read 6.24 against 5.82 ms that way; ``--governor`` keeps it on).

    python benchmarks/cpu_choices.py [--json PATH] [--repeat 7] [--governor]

The machine is shared and noisy: compare the columns of one run.
"""

import argparse
import json
import statistics
import time

import numpy as np

from medalpy.backprop import Pass
from medalpy.bench import machine
from medalpy import config
from medalpy.kernels import blas, cpu
from medalpy.kernels import lanes as cpu_lanes
from medalpy.network import Network
from medalpy.optim import SGD

B, WIDTHS = 20, (784, 1000, 1000, 784)


NT_DOTS_MAX_ROWS, PRODUCT_PARTS = config.NT_DOTS_MAX_ROWS, config.PRODUCT_PARTS


def lanes():
    cpu.use_threads(2)
    config.NT_DOTS_MAX_ROWS = NT_DOTS_MAX_ROWS
    config.PRODUCT_PARTS = PRODUCT_PARTS


def parts(n):
    def enter():
        lanes()
        config.PRODUCT_PARTS = n
    return enter


def lanes_without_dots():
    lanes()
    config.NT_DOTS_MAX_ROWS = 0  # every matmul_nt through OpenBLAS


def openblas(threads):
    def enter():
        cpu_lanes.READY = False  # np.matmul, nothing parallel in Numba
        config.NT_DOTS_MAX_ROWS = 0
        blas.set_threads(threads)
    return enter


def timed(cases, repeat, calls):
    """{name: median ms per call} over ``repeat`` interleaved rounds of ``calls`` calls."""
    rounds = {name: [] for name in cases}
    for enter, fn in cases.values():
        enter()
        fn()
    for _ in range(repeat):
        for name, (enter, fn) in cases.items():
            enter()
            fn()
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            rounds[name].append((time.perf_counter() - t0) / calls * 1e3)
    return {name: statistics.median(r) for name, r in rounds.items()}


def products(rng, batch=B):
    f = np.float32
    X, A, D = (rng.random((batch, n), dtype=f) for n in (784, 1000, 1000))
    D3 = rng.random((batch, 784), dtype=f)
    W0, W1, Wd = (rng.random(s, dtype=f) for s in ((784, 1000), (1000, 1000), (1000, 784)))
    Z1, Z3 = np.empty((batch, 1000), f), np.empty((batch, 784), f)
    G0, G1, Gd = np.empty((784, 1000), f), np.empty((1000, 1000), f), np.empty((1000, 784), f)

    def step():
        cpu.matmul(X, W0, Z1)
        cpu.matmul(A, W1, Z1)
        cpu.matmul(A, Wd, Z3)
        cpu.matmul_nt(D3, Wd, Z1)
        cpu.matmul_nt(D, W1, Z1)
        cpu.matmul_tn(A, D3, Gd)
        cpu.matmul_tn(A, D, G1)
        cpu.matmul_tn(X, D, G0)
    return step


def back_errors(rng):
    f = np.float32
    D3, D = rng.normal(size=(B, 784)).astype(f), rng.normal(size=(B, 1000)).astype(f)
    W1, Wd = rng.random((1000, 1000), dtype=f), rng.random((1000, 784), dtype=f)
    out = np.empty((B, 1000), f)

    def step():
        cpu.matmul_nt(D3, Wd, out)
        cpu.matmul_nt(D, W1, out)
    return step


def back_error_from_memory(rng, rows, dots):
    f = np.float32
    D = rng.normal(size=(rows, 1000)).astype(f)
    Ws = [rng.random((1000, 1000), dtype=f) for _ in range(8)]
    out = np.empty((rows, 1000), f)
    state = {"i": 0}

    def step():
        W = Ws[state["i"]]
        state["i"] = (state["i"] + 1) % len(Ws)
        if dots:
            cpu_lanes._matmul_nt_f32_lanes(D, W, out, 2)
        else:
            cpu_lanes._gemm_lanes(D, W, out, False, True, 2, config.PRODUCT_PARTS)
    return step


def gradient_norms(rng, grams):
    f = np.float32
    A = [rng.random((B, a), dtype=f) for a in (784, 1000, 1000)]
    D = [rng.normal(size=(B, b)).astype(f) for b in (1000, 1000, 784)]
    G_a, G_d, M = (np.empty((B, B), f) for _ in range(3))

    def step():
        for a, d in zip(A, D):
            if grams:
                cpu.matmul_nt(a, a, G_a)
                cpu.matmul_nt(d, d, G_d)
                cpu.matmul(G_a, G_d, M)
                float(np.trace(M, dtype=np.float64))
            else:
                cpu.product_sq_norm(a, d)
    return step


def gradient_update(rng, fused):
    f = np.float32
    shapes = ((784, 1000), (1000, 1000), (1000, 784))
    A = [rng.random((B, a), dtype=f) for a, _ in shapes]
    D = [rng.normal(size=(B, b)).astype(f) for _, b in shapes]
    P = [rng.normal(size=s).astype(f) for s in shapes]
    V = [0.01 * rng.normal(size=s).astype(f) for s in shapes]
    G = np.empty(1000 * 1000, f)

    def step():
        for a, d, p, v in zip(A, D, P, V):
            if fused:
                cpu.sgd_update_product(a, d, p, v, 0.1, 0.9, 1e-3, 0.5)
            else:
                g = G[:p.size].reshape(p.shape)
                cpu.matmul_tn(a, d, g)
                cpu.sgd_update(p, g, v, 0.1, 0.9, 1e-3, 0.5)
    return step


def bias_sigmoid(rng, one_array):
    Z = rng.normal(size=(B, 1000)).astype(np.float32)
    b = rng.normal(size=1000).astype(np.float32)
    if one_array:
        return lambda: cpu._bias_sigmoid_inplace_kernel(Z, b)
    return lambda: cpu._bias_sigmoid_kernel(Z, b, Z)


def training_step(rng, fused):
    net = Network(WIDTHS[0])
    for width in WIDTHS[1:-1]:
        net.add_encoder(width, rng)
    net.attach_decoder(rng)
    p = Pass(cpu, net.path(), B, net.head, np.float32)
    opt = SGD(0.1, 0.9, 1e-3, True)
    data = rng.integers(0, 256, size=(60000, WIDTHS[0]), dtype=np.uint8)
    X_in, X_target = np.empty((B, WIDTHS[0]), np.float32), np.empty((B, WIDTHS[0]), np.float32)
    order = rng.permutation(len(data))
    state = {"start": 0}

    def step():
        rows = order[state["start"]:state["start"] + B]
        state["start"] = (state["start"] + B) % (len(data) - B)
        cpu.gather_masked(data, rows, 0.15, 1, 0, X_in)
        cpu.gather(data, rows, X_target)
        if fused:
            p.train_step(X_in, X_target, opt)
        else:
            p.backward(X_in, X_target)
            opt.update(cpu, p)
    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="benchmarks/results/cpu_choices.json")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--governor", action="store_true",
                        help="keep the lanes' governor on (see the module docstring)")
    args = parser.parse_args(argv)
    cpu_lanes.GOVERNOR.enabled = args.governor
    rng = np.random.default_rng(0)
    rows = {
        "products": timed({"lanes": (lanes_without_dots, products(rng)),
                           "np.matmul, OpenBLAS 2 threads": (openblas(2), products(rng)),
                           "np.matmul, OpenBLAS 1 thread": (openblas(1), products(rng))},
                          args.repeat, 100),
        "gradient+update": timed({"fused": (lanes, gradient_update(rng, True)),
                                  "stored dW": (lanes, gradient_update(rng, False))},
                                 args.repeat, 50),
        "bias+sigmoid in place": timed({"one array": (lanes, bias_sigmoid(rng, True)),
                                        "two arrays": (lanes, bias_sigmoid(rng, False))},
                                       args.repeat, 2000),
        "back-propagated errors": timed({"dot products": (lanes, back_errors(rng)),
                                         "OpenBLAS on lanes":
                                             (lanes_without_dots, back_errors(rng))},
                                        args.repeat, 100),
        **{f"delta W^T, {rows} rows, weights from memory": timed(
            {"dot products": (lanes, back_error_from_memory(rng, rows, True)),
             "OpenBLAS on lanes": (lanes, back_error_from_memory(rng, rows, False))},
            args.repeat, 40) for rows in (10, 20, 32, 48, 64)},
        "gradient norms": timed({"product_sq_norm": (lanes, gradient_norms(rng, False)),
                                 "Gram products + trace":
                                     (lanes_without_dots, gradient_norms(rng, True))},
                                args.repeat, 200),
        **{f"products in parts, batch {batch}": timed(
            {"4 parts": (parts(4), products(rng, batch)),
             "2 parts": (parts(2), products(rng, batch))}, args.repeat, 100 if batch == B else 20)
           for batch in (B, 128)},
        "step": timed({"train_step on lanes": (lanes, training_step(rng, True)),
                       "backward + update, np.matmul 2 threads":
                           (openblas(2), training_step(rng, False))},
                      args.repeat, 100),
    }
    lanes()
    print("| work (gradual phase 2, B = 20, float32) | way | ms per call (median) |")
    print("| --- | --- | --- |")
    for work, result in rows.items():
        for way, ms in result.items():
            print(f"| {work} | {way} | {ms:.3f} |")
    info = machine()
    print(f"\nCPU: {info.get('cpu')} ({info.get('cpu_family_model')}, {info.get('simd')}), "
          f"load average {info.get('load_average')}")
    with open(args.json, "w") as f:
        json.dump({"machine": info, "batch": B, "widths": WIDTHS, "repeat": args.repeat,
                   "ms_per_call": rows}, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
