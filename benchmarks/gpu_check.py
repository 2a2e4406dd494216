"""GPU check of the ``cuda`` backend: parity with the CPU, speed against PyTorch, one MNIST run.

One script for one GPU (about 5 minutes on an H100), in three parts:

1. parity: the same short training run (phase 1, then gradual phase 2; MEDAL settings with
   normGrad) with the ``cpu`` and the ``cuda`` backends from the same initial weights and the
   same counter-based masks; the relative test cross-entropies must agree within 1%.
2. speed: steps/s of one full SGD step (gather + mask, forward, loss, backward, update) at
   batch 20 and 128 for phase 1 (784-1000-784), stacked phase 2 (1000-1000-1000 on cached
   codes), gradual phase 2 (784-1000-1000-784) and full tuning through the mirror decoder
   (784-1000-1000-1000-784): medalpy's cuda backend (cuBLAS; also through cupy.matmul, and
   with normGrad) against standard PyTorch CUDA eager code (nn.Linear, nn.Sigmoid, BCELoss,
   optim.SGD, loss.item() per step) and, for gradual phase 2, the same PyTorch step replayed
   as a CUDA graph (what launch overhead costs).
3. if time remains: stacked vs gradual with an equal budget on full MNIST at the paper's scale
   (2 x 1000 units, layer 1 50 epochs, layer-2 budget 80 gradual epochs), epochs scaled down
   to fit the time left (the scale is reported), no early stopping.

Writes JSON (``--out``) and prints a table. Without a GPU it says so and exits with status 0.
Usage on the GPU machine (MNIST's four .gz files copied beside the code)::

    pip install --no-deps -e . && python benchmarks/gpu_check.py --data-dir ../shared/data
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHASES = {
    # name: (widths from input to output, source)
    "layer1": ([784, 1000, 784], "uint8"),
    "stacked": ([1000, 1000, 1000], "codes"),
    "gradual": ([784, 1000, 1000, 784], "uint8"),
    "finetune": ([784, 1000, 1000, 1000, 784], "uint8"),
}
MEDAL = dict(lr=0.1, momentum=0.9, weight_decay=1e-3)
NOISE = 0.15
TEST_SEED = 20150101


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"),
                   help="directory holding mnist/ with MNIST's four IDX .gz files")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    p.add_argument("--budget-s", type=float, default=280.0, help="wall-clock budget, seconds")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[20, 128])
    p.add_argument("--seconds-per-cell", type=float, default=1.5,
                   help="time per repetition of one timing cell")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-mnist", action="store_true", help="skip part 3")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------
# Data.
# ----------------------------------------------------------------------------------------


def load_data(data_dir):
    """(train uint8 (N, 784), test uint8, description); synthetic digits-like if MNIST is absent.

    The description says when medalpy fell back to its bundled 4,000-image sample.
    """
    try:
        import warnings

        from medalpy.data.datasets import load
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = load("mnist", data_dir=data_dir, download=False)
        kind = ds.source.get("kind")
        where = ds.source.get("location")
        return ds.train_images, ds.test_images, f"{ds.source.get('dataset')} ({kind}) from {where}"
    except Exception as exc:  # noqa: BLE001  (any failure: fall back, and say why)
        rng = np.random.default_rng(0)
        protos = rng.random((10, 784)) > 0.7
        X = protos[rng.integers(0, 10, 70000)] ^ (rng.random((70000, 784)) < 0.05)
        X = (X * 255).astype(np.uint8)
        return X[:60000], X[60000:], f"synthetic ({type(exc).__name__}: {exc})"


# ----------------------------------------------------------------------------------------
# medalpy, written with the kernel API on device arrays.
# ----------------------------------------------------------------------------------------


def make_chain(k, widths, rng, names=None):
    from medalpy.network import Layer, init_medal
    names = names or [f"layer.{i}" for i in range(len(widths) - 1)]
    return [(name, Layer(k.to_device(init_medal(a, b, rng, np.float32)),
                         k.zeros((b,), np.float32)))
            for name, a, b in zip(names, widths, widths[1:])]


def train_epochs(k, chain, source, epochs, batch_size, seed, normalise, first_epoch=0):
    """Plain epochs of SGD on ``chain`` (reconstruct the clean source from its masked copy)."""
    from medalpy.backprop import Pass
    from medalpy.optim import SGD
    D = source.shape[1]
    p = Pass(k, chain, batch_size, "decoder", np.float32)
    opt = SGD(normalise_gradients=normalise, **MEDAL)
    named = p.named_gradients()
    X_in, T = k.empty((batch_size, D), np.float32), k.empty((batch_size, D), np.float32)
    N = source.shape[0]
    for epoch in range(first_epoch, first_epoch + epochs):
        order = np.random.default_rng([seed, epoch]).permutation(N)
        for start in range(0, N, batch_size):
            rows = order[start:start + batch_size]
            n = len(rows)
            k.gather_masked(source, rows, NOISE, seed, epoch, X_in[:n])
            k.gather(source, rows, T[:n])
            p.backward(X_in[:n], T[:n])
            opt.step(k, named)


def relative_ce(k, chain, X_test):
    """Mean over test images of CE(x, y) - CE(x, x), y reconstructed from a fixed corruption."""
    from medalpy.backprop import Pass
    from medalpy.objectives import entropy
    B, N = 500, X_test.shape[0]
    p = Pass(k, chain, B, "decoder", np.float32, train=False)
    X_in, T = k.empty((B, 784), np.float32), k.empty((B, 784), np.float32)
    total = 0.0
    for start in range(0, N, B):
        rows = np.arange(start, min(start + B, N))
        k.gather_masked(X_test, rows, NOISE, TEST_SEED, 0, X_in[:len(rows)])
        k.gather(X_test, rows, T[:len(rows)])
        total += p.loss(X_in[:len(rows)], T[:len(rows)]) * len(rows)
    host = k.to_host(X_test) if not isinstance(X_test, np.ndarray) else X_test
    return total / N - float(np.mean(entropy(host.astype(np.float64) / 255.0)))


def parity(train, test, n_train=5000, widths=(784, 500, 500), epochs=2, batch_size=20):
    """Part 1: the same short run on cpu and cuda; relative test CE and weight differences."""
    from medalpy.kernels import get_backend
    out = {}
    weights = {}
    for name in ("cpu", "cuda"):
        k = get_backend(name)
        rng = np.random.default_rng(7)
        X, Xt = k.to_device(train[:n_train]), k.to_device(test[:2000])
        enc1, dec1 = make_chain(k, [widths[0], widths[1], widths[0]], rng)
        train_epochs(k, [enc1, dec1], X, epochs, batch_size, 11, True)
        enc2, dec2 = make_chain(k, [widths[1], widths[2], widths[0]], rng)
        gradual = [enc1, enc2, dec2]
        train_epochs(k, gradual, X, epochs, batch_size, 12, True)
        t0 = time.perf_counter()
        out[name] = relative_ce(k, gradual, Xt)
        out[f"{name}_eval_s"] = time.perf_counter() - t0
        weights[name] = [k.to_host(layer.W) for _, layer in gradual]
    out["relative_difference"] = abs(out["cuda"] - out["cpu"]) / abs(out["cpu"])
    out["max_abs_weight_difference"] = max(float(np.max(np.abs(a - b)))
                                           for a, b in zip(weights["cpu"], weights["cuda"]))
    out["pass"] = out["relative_difference"] <= 0.01
    return out


def medalpy_step(phase, batch_size, train, normalise=False, gemm="cublas"):
    """A closure: one medalpy cuda training step of ``phase`` per call, everything on the GPU."""
    from medalpy.backprop import Pass
    from medalpy.kernels import get_backend
    from medalpy.optim import SGD
    k = get_backend("cuda")
    k.set_gemm(gemm)
    widths, kind = PHASES[phase]
    rng = np.random.default_rng(0)
    if kind == "uint8":
        source = k.to_device(train[:20000])
    else:
        source = k.to_device(rng.random((20000, widths[0]), dtype=np.float32))
    chain = make_chain(k, widths, rng)
    p = Pass(k, chain, batch_size, "decoder", np.float32)
    opt = SGD(normalise_gradients=normalise, **MEDAL)
    named = p.named_gradients()
    X_in = k.empty((batch_size, widths[0]), np.float32)
    T = k.empty((batch_size, widths[0]), np.float32)
    N = source.shape[0]
    state = {"order": rng.permutation(N), "start": 0, "epoch": 0}

    def step():
        if state["start"] + batch_size > N:
            state.update(order=rng.permutation(N), start=0, epoch=state["epoch"] + 1)
        rows = state["order"][state["start"]:state["start"] + batch_size]
        state["start"] += batch_size
        k.gather_masked(source, rows, NOISE, 1, state["epoch"], X_in)
        k.gather(source, rows, T)
        loss = p.backward(X_in, T)
        opt.step(k, named)
        return loss

    return step


# ----------------------------------------------------------------------------------------
# Standard PyTorch CUDA eager code, and the same step as a CUDA graph.
# ----------------------------------------------------------------------------------------


def torch_step(phase, batch_size, train, graph=False):
    import torch
    from torch import nn
    dev = torch.device("cuda")
    widths, kind = PHASES[phase]
    torch.manual_seed(0)
    if kind == "uint8":
        data = torch.from_numpy(train[:20000]).to(dev)
    else:
        data = torch.rand(20000, widths[0], device=dev)
    modules = []
    for n_in, n_out in zip(widths, widths[1:]):
        modules += [nn.Linear(n_in, n_out), nn.Sigmoid()]
    model = nn.Sequential(*modules).to(dev)
    bce = nn.BCELoss(reduction="sum")
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    optimiser = torch.optim.SGD([{"params": decay, "weight_decay": MEDAL["weight_decay"]},
                                 {"params": rest, "weight_decay": 0.0}],
                                lr=MEDAL["lr"], momentum=MEDAL["momentum"])
    N = data.shape[0]
    state = {"order": torch.randperm(N, device=dev), "start": 0}

    def batch():
        if state["start"] + batch_size > N:
            state.update(order=torch.randperm(N, device=dev), start=0)
        rows = state["order"][state["start"]:state["start"] + batch_size]
        state["start"] += batch_size
        x = data[rows]
        return x.float() / 255.0 if kind == "uint8" else x

    def eager():
        x = batch()
        x_noisy = x * (torch.rand_like(x) > NOISE)
        optimiser.zero_grad()
        loss = bce(model(x_noisy), x) / batch_size
        loss.backward()
        optimiser.step()
        return loss.item()

    if not graph:
        return eager
    static_x = batch()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm up on a side stream before capture, as the docs ask
        for _ in range(3):
            optimiser.zero_grad(set_to_none=True)
            loss = bce(model(static_x * (torch.rand_like(static_x) > NOISE)), static_x)
            loss.backward()
            optimiser.step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    optimiser.zero_grad(set_to_none=True)
    with torch.cuda.graph(g):
        static_loss = bce(model(static_x * (torch.rand_like(static_x) > NOISE)),
                          static_x) / batch_size
        static_loss.backward()
        optimiser.step()

    def replay():
        static_x.copy_(batch())
        g.replay()
        return static_loss.item()

    return replay


# ----------------------------------------------------------------------------------------
# Timing.
# ----------------------------------------------------------------------------------------


def _sync():
    from numba import cuda
    cuda.synchronize()
    try:
        import torch
        torch.cuda.synchronize()
    except ImportError:
        pass


def _rate(step, n):
    _sync()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    _sync()
    return n / (time.perf_counter() - t0)


def time_cell(steps, repeats, seconds):
    """Interleaved repetitions over ``steps`` ({impl: closure}): median steps/s per impl."""
    counts = {}
    for name, step in steps.items():
        for _ in range(5):
            step()  # JIT, cuBLAS handles, caching allocators
        counts[name] = max(5, int(_rate(step, 10) * seconds))
    rates = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            rates[name].append(_rate(step, counts[name]))
    return {name: float(np.median(r)) for name, r in rates.items()}


def speed(train, batch_sizes, repeats, seconds, have_torch):
    rows = []
    for phase in PHASES:
        for B in batch_sizes:
            steps = {"medalpy_cuda": medalpy_step(phase, B, train)}
            if phase == "gradual":
                steps["medalpy_cuda_normgrad"] = medalpy_step(phase, B, train, normalise=True)
                steps["medalpy_cuda_cupy_matmul"] = medalpy_step(phase, B, train, gemm="cupy")
            if have_torch:
                steps["torch_eager"] = torch_step(phase, B, train)
                if phase == "gradual":
                    steps["torch_cuda_graph"] = torch_step(phase, B, train, graph=True)
            rates = time_cell(steps, repeats, seconds)
            from medalpy.kernels import get_backend
            get_backend("cuda").set_gemm("cublas")
            row = {"phase": phase, "batch": B, **rates}
            if "torch_eager" in rates:
                row["ratio_vs_torch"] = rates["medalpy_cuda"] / rates["torch_eager"]
            rows.append(row)
            print(_fmt_row(row), flush=True)
    return rows


def _fmt_row(row):
    cols = [f"{row['phase']:>9} B={row['batch']:<4}"]
    for key, value in row.items():
        if key not in ("phase", "batch"):
            cols.append(f"{key}={value:,.2f}" if key == "ratio_vs_torch" else f"{key}={value:,.0f}")
    return "  ".join(cols)


# ----------------------------------------------------------------------------------------
# Part 3: stacked vs gradual on full MNIST, equal budget.
# ----------------------------------------------------------------------------------------


def mnist_comparison(train, test, seconds_left, rates, batch_size=20,
                     epochs_layer1=50, budget=80):
    """Equal-budget stacked vs gradual (2 x 1000), epochs scaled to ``seconds_left``."""
    from medalpy.backprop import encode
    from medalpy.kernels import get_backend
    k = get_backend("cuda")
    steps_per_epoch = math.ceil(train.shape[0] / batch_size)
    r = {(row["phase"]): row["medalpy_cuda"] for row in rates if row["batch"] == batch_size}
    full = steps_per_epoch * (epochs_layer1 / r["layer1"] + 2 * budget / r["stacked"]
                              + budget / r["gradual"])
    scale = min(1.0, 0.85 * seconds_left / full)
    e1 = max(1, round(epochs_layer1 * scale))
    e2 = max(1, round(budget * scale))
    X, Xt = k.to_device(train), k.to_device(test)
    rng = np.random.default_rng(2015)
    t0 = time.perf_counter()
    enc1, dec1 = make_chain(k, [784, 1000, 784], rng, ["encoder.0", "decoder.0"])
    train_epochs(k, [enc1, dec1], X, e1, batch_size, 1, True)
    W1, b1 = k.to_host(enc1[1].W), k.to_host(enc1[1].b)
    results = {"scale": scale, "epochs_layer1": e1, "budget_epochs": e2,
               "predicted_full_scale_s": full}
    # stacked: 2 e2 epochs of layer 2 on clean codes; evaluated through the mirror decoders
    codes = encode(k, [enc1[1]], X)
    enc2, dec2 = make_chain(k, [1000, 1000, 1000], rng, ["encoder.1", "decoder.1"])
    train_epochs(k, [enc2, dec2], codes, 2 * e2, batch_size, 2, True)
    results["stacked"] = relative_ce(k, [enc1, enc2, dec2, dec1], Xt)
    # gradual: the same layer 1, e2 epochs of both layers and a direct decoder
    enc1[1].W, enc1[1].b = k.to_device(W1), k.to_device(b1)
    enc2g, dec2g = make_chain(k, [1000, 1000, 784], np.random.default_rng(2016),
                              ["encoder.1", "decoder"])
    train_epochs(k, [enc1, enc2g, dec2g], X, e2, batch_size, 3, True)
    results["gradual"] = relative_ce(k, [enc1, enc2g, dec2g], Xt)
    results["seconds"] = time.perf_counter() - t0
    return results


# ----------------------------------------------------------------------------------------


def gpu_or_reason():
    """None when the cuda backend works here, else the reason it does not."""
    try:
        from medalpy.kernels import get_backend
        k = get_backend("cuda")
        if k.SIMULATOR:
            return "NUMBA_ENABLE_CUDASIM is set: this script measures a real GPU only"
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None


def main(argv=None):
    args = parse_args(argv)
    reason = gpu_or_reason()
    if reason:
        print(f"gpu_check: no usable CUDA GPU, nothing measured ({reason})")
        return 0
    t_start = time.perf_counter()
    from numba import cuda
    device = cuda.get_current_device()
    name = device.name.decode() if isinstance(device.name, bytes) else str(device.name)
    try:
        import torch
        have_torch = torch.cuda.is_available()
        torch_version = torch.__version__
    except ImportError:
        have_torch, torch_version = False, None
    train, test, data_desc = load_data(args.data_dir)
    report = {"gpu": name, "torch": torch_version, "data": data_desc}
    print(f"GPU: {name}; torch {torch_version}; data: {data_desc}", flush=True)

    report["parity"] = parity(train, test)
    print(f"parity: relative CE cpu {report['parity']['cpu']:.4f}, cuda "
          f"{report['parity']['cuda']:.4f}, difference "
          f"{100 * report['parity']['relative_difference']:.3f}% "
          f"({'PASS' if report['parity']['pass'] else 'FAIL'} at 1%)", flush=True)

    report["speed"] = speed(train, args.batch_sizes, args.repeats, args.seconds_per_cell,
                            have_torch)
    left = args.budget_s - (time.perf_counter() - t_start)
    if not args.skip_mnist and left > 30 and 20 in args.batch_sizes:
        report["mnist"] = mnist_comparison(train, test, left - 10, report["speed"])
        m = report["mnist"]
        print(f"MNIST equal budget (scale {m['scale']:.2f}: layer 1 {m['epochs_layer1']} "
              f"epochs, budget {m['budget_epochs']}): relative CE stacked {m['stacked']:.3f}, "
              f"gradual {m['gradual']:.3f} ({m['seconds']:.0f} s)", flush=True)
    else:
        report["mnist"] = {"skipped": f"{left:.0f} s left"}
    report["seconds"] = time.perf_counter() - t_start

    print("\n| phase | batch | medalpy cuda (steps/s) | PyTorch eager (steps/s) | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for row in report["speed"]:
        print(f"| {row['phase']} | {row['batch']} | {row['medalpy_cuda']:,.0f} | "
              f"{row.get('torch_eager', float('nan')):,.0f} | "
              f"{row.get('ratio_vs_torch', float('nan')):.2f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
