"""How many rows of the weight gradient the fused update should form per BLAS call.

``sgd_update_product`` (the cpu backend's gradient + SGD update) forms ``G = A^T delta`` a
block of rows at a time and applies each block at once. Each block is one OpenBLAS call,
which packs the whole ``(batch, m)`` delta again: at small batches that is cheap and small
blocks keep the weights, velocities and gradient block in cache; at large batches the
packing dominates unless the blocks are larger. This times the update of gradual phase 2's
three layers (784x1000, 1000x1000, 1000x784, float32) on the lanes, for several block sizes
at each batch size, interleaved, and checks that every block size gives the same bits.

    python benchmarks/update_blocks.py [--batch-size 20 --batch-size 128 ...] \
        [--blocks 32,64,128,256] [--rounds 7] [--json benchmarks/results/update_blocks.json]

The chosen rule is :func:`medalpy.kernels.cpu.product_block_rows`.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from medalpy import config
from medalpy.bench.machine import machine
from medalpy.kernels import cpu

SHAPES = [(784, 1000), (1000, 1000), (1000, 784)]


def time_blocks(batch, blocks, rounds, calls=40):
    """{layer: {block: median ms per update}} and whether every block gave the same bits."""
    rng = np.random.default_rng(batch)
    result, same = {}, True
    saved = config.PRODUCT_BLOCK_ROWS, config.PRODUCT_BLOCK_ROWS_LARGE_BATCH
    try:
        for k, m in SHAPES:
            A = rng.uniform(size=(batch, k)).astype(np.float32)
            delta = (rng.normal(size=(batch, m)) * 0.01).astype(np.float32)
            P0 = (rng.normal(size=(k, m)) * 0.1).astype(np.float32)
            V0 = np.zeros_like(P0)
            seconds, weights = {b: [] for b in blocks}, {}
            for r in range(rounds + 1):
                for b in blocks:
                    config.PRODUCT_BLOCK_ROWS = config.PRODUCT_BLOCK_ROWS_LARGE_BATCH = b
                    P, V = P0.copy(), V0.copy()
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        cpu.sgd_update_product(A, delta, P, V, 0.1, 0.9, 1e-5, 1.0)
                    if r:  # round 0 warms up (compilation, the lanes' governor)
                        seconds[b].append((time.perf_counter() - t0) / calls)
                    else:
                        weights[b] = P
            same &= all(np.array_equal(weights[b], weights[blocks[0]]) for b in blocks)
            result[f"{k}x{m}"] = {b: 1e3 * statistics.median(seconds[b]) for b in blocks}
    finally:
        config.PRODUCT_BLOCK_ROWS, config.PRODUCT_BLOCK_ROWS_LARGE_BATCH = saved
    return result, same


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, action="append")
    parser.add_argument("--blocks", default="32,64,128,256")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    batches = args.batch_size or [10, 20, 64, 128, 256]
    blocks = [int(b) for b in args.blocks.split(",")]
    rows = []
    with cpu.session():
        for batch in batches:
            times, same = time_blocks(batch, blocks, args.rounds)
            rows.append({"batch": batch, "ms": times, "bit_identical": same,
                         "chosen": cpu.product_block_rows(batch)})
    print("| batch | layer | " + " | ".join(f"{b} rows ms" for b in blocks) + " | chosen |")
    print("| --- | --- | " + " | ".join("---" for _ in blocks) + " | --- |")
    for row in rows:
        for layer, ms in row["ms"].items():
            print(f"| {row['batch']} | {layer} | "
                  + " | ".join(f"{ms[b]:.3f}" for b in blocks) + f" | {row['chosen']} |")
    print("every block size gave the same bits:", all(r["bit_identical"] for r in rows))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "blocks": blocks, "rows": rows},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
