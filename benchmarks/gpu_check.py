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
   as a CUDA graph (what launch overhead costs). Also the step as the trainer now runs it
   (``DeviceStep``: recorded launches that read everything per step from device memory,
   captured as a CUDA graph where capture works; ``K_STEPS`` steps per timed call).
2b. cohorts: gradual phase 2 for 1, 3 and 15 networks in one step (the cohorts'
   ``CohortStep``) against PyTorch's ``stack_module_state`` + ``vmap`` step under a CUDA
   graph, in steps/s and model-steps/s.
3. if time remains: stacked vs gradual with an equal budget on full MNIST at the paper's scale
   (2 x 1000 units, layer 1 50 epochs, layer-2 budget 80 gradual epochs), epochs scaled down
   to fit the time left (the scale is reported), no early stopping.

Before part 1 a preflight launches a probe kernel and checks the cuBLAS and cupy.matmul paths
against NumPy. When the probe fails because NVVM writes PTX newer than the driver (or
nvJitLink) accepts, the PTX ``.version`` header is lowered to what they accept and the probe
retried; the JSON says so (``preflight.ptx_clamp``).

Writes JSON (``--out``, rewritten after each part, so a run cut short keeps what it measured)
and prints a table. Without a GPU it says so and exits with status 0 (2 with
``--require-gpu``). Usage on the GPU machine (MNIST's four .gz files in DIR/mnist/), from the
repository root, nothing installed::

    PYTHONPATH=$PWD python benchmarks/gpu_check.py --data-dir DIR --require-gpu

``benchmarks/run_gpu_check.sh`` wraps that with version reports and time limits.
``--tiny`` shrinks every part to a few units and samples, so that the whole script runs on
numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``; PyTorch on the CPU) as a dry run.
"""

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np

if not hasattr(np, "row_stack"):  # numba-cuda 0.30.4 on NumPy 2.5: see medalpy/kernels/cuda.py
    np.row_stack = np.vstack

ROOT = Path(__file__).resolve().parents[1]
# Sizes that --tiny shrinks: input width, hidden width, rows of each timing cell's source.
SIZES = {"D": 784, "H": 1000, "n_source": 20000}
# The medalpy GEMM path of the timed steps: "cublas"; main sets "host" on the simulator and
# "cupy" where the preflight found cuBLAS broken and cupy.matmul working.
GEMM = {"default": "cublas"}
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


def phase_widths(phase):
    """The layer widths of ``phase`` at the current SIZES (784 -> D, 1000 -> H)."""
    widths, kind = PHASES[phase]
    return [SIZES["D"] if w == 784 else SIZES["H"] for w in widths], kind


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
    p.add_argument("--phases", nargs="+", choices=list(PHASES), default=list(PHASES),
                   help="phases of the speed table (part 2)")
    p.add_argument("--cohort-sizes", type=int, nargs="+", default=[1, 3, 15],
                   help="networks per step in the cohort timings (part 2b)")
    p.add_argument("--skip-mnist", action="store_true", help="skip part 3")
    p.add_argument("--require-gpu", action="store_true",
                   help="exit with status 2 (not 0) when no usable CUDA GPU is found")
    p.add_argument("--tiny", action="store_true",
                   help="a dry run at toy sizes, also on numba's CUDA simulator "
                        "(NUMBA_ENABLE_CUDASIM=1), PyTorch on the CPU when it has no CUDA")
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
    X_in, T = k.empty((batch_size, D), np.float32), k.empty((batch_size, D), np.float32)
    N = source.shape[0]
    for epoch in range(first_epoch, first_epoch + epochs):
        order = np.random.default_rng([seed, epoch]).permutation(N)
        for start in range(0, N, batch_size):
            rows = order[start:start + batch_size]
            n = len(rows)
            k.gather_masked(source, rows, NOISE, seed, epoch, X_in[:n])
            k.gather(source, rows, T[:n])
            p.train_step(X_in[:n], T[:n], opt)  # what the trainer runs


def relative_ce(k, chain, X_test):
    """Mean over test images of CE(x, y) - CE(x, x), y reconstructed from a fixed corruption."""
    from medalpy.backprop import Pass
    from medalpy.objectives import entropy
    N, D = X_test.shape
    B = min(500, N)
    p = Pass(k, chain, B, "decoder", np.float32, train=False)
    X_in, T = k.empty((B, D), np.float32), k.empty((B, D), np.float32)
    total = 0.0
    for start in range(0, N, B):
        rows = np.arange(start, min(start + B, N))
        k.gather_masked(X_test, rows, NOISE, TEST_SEED, 0, X_in[:len(rows)])
        k.gather(X_test, rows, T[:len(rows)])
        total += p.loss(X_in[:len(rows)], T[:len(rows)]) * len(rows)
    host = k.to_host(X_test) if not isinstance(X_test, np.ndarray) else X_test
    return total / N - float(np.mean(entropy(host.astype(np.float64) / 255.0)))


def parity(train, test, n_train=5000, widths=(784, 500, 500), epochs=2, batch_size=20,
           n_test=2000):
    """Part 1: the same short run on cpu and cuda; relative test CE and weight differences."""
    from medalpy.kernels import get_backend
    out = {}
    weights = {}
    for name in ("cpu", "cuda"):
        k = get_backend(name)
        rng = np.random.default_rng(7)
        X, Xt = k.to_device(train[:n_train]), k.to_device(test[:n_test])
        # Distinct names: the optimiser keys velocities by name.
        enc1, dec1 = make_chain(k, [widths[0], widths[1], widths[0]], rng,
                                ["encoder.0", "decoder.1"])
        train_epochs(k, [enc1, dec1], X, epochs, batch_size, 11, True)
        enc2, dec2 = make_chain(k, [widths[1], widths[2], widths[0]], rng,
                                ["encoder.1", "decoder.2"])
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


def _gemm_callable(k, kind):
    """The backend's GEMM callable for path ``kind``, leaving the backend's current path alone.

    ``set_gemm`` switches one module-wide path; a closure that must keep its own (cuBLAS or
    cupy.matmul, timed side by side in one cell) installs its callable before each step.
    """
    previous = k.set_gemm(kind)
    impl = k._gemm_impl
    k._gemm_impl = previous
    return impl


def medalpy_step(phase, batch_size, train, normalise=False, gemm=None):
    """A closure: one medalpy cuda training step of ``phase`` per call, everything on the GPU.

    ``gemm``: the matrix-product path ("cublas", "cupy"; the simulator's "host"), installed
    at every call; None: GEMM["default"].
    """
    from medalpy.backprop import Pass
    from medalpy.kernels import get_backend
    from medalpy.optim import SGD
    k = get_backend("cuda")
    impl = _gemm_callable(k, gemm or GEMM["default"])
    widths, kind = phase_widths(phase)
    rng = np.random.default_rng(0)
    n_source = SIZES["n_source"]
    if kind == "uint8":
        source = k.to_device(train[:n_source])
    else:
        source = k.to_device(rng.random((n_source, widths[0]), dtype=np.float32))
    chain = make_chain(k, widths, rng)
    p = Pass(k, chain, batch_size, "decoder", np.float32)
    opt = SGD(normalise_gradients=normalise, **MEDAL)
    X_in = k.empty((batch_size, widths[0]), np.float32)
    T = k.empty((batch_size, widths[0]), np.float32)
    N = source.shape[0]
    state = {"order": rng.permutation(N), "start": 0, "epoch": 0}

    def step():
        k._gemm_impl = impl
        if state["start"] + batch_size > N:
            state.update(order=rng.permutation(N), start=0, epoch=state["epoch"] + 1)
        rows = state["order"][state["start"]:state["start"] + batch_size]
        state["start"] += batch_size
        k.gather_masked(source, rows, NOISE, 1, state["epoch"], X_in)
        k.gather(source, rows, T)
        return p.train_step(X_in, T, opt)  # what the trainer runs

    return step


#: Steps per call of the closures that run recorded steps (their rates are steps/s still);
#: --tiny takes 2.
K_STEPS = {"per_call": 50}


def medalpy_cohort(phase, batch_size, train, models=1, normalise=False):
    """A closure running ``K_STEPS`` steps of ``models`` networks of ``phase`` per call, the
    way the trainer runs a phase on the cuda backend: one network through
    ``DeviceStep`` (recorded steps, replayed as a CUDA graph where capture works), several
    through the cohorts' ``CohortStep`` (one batched step for all). ``closure.models``:
    networks per step."""
    from types import SimpleNamespace

    from medalpy.backprop import Pass
    from medalpy.kernels import get_backend
    from medalpy.optim import SGD
    k = get_backend("cuda")
    widths, kind = phase_widths(phase)
    n_source = SIZES["n_source"]
    runs, optimisers = [], []
    for q in range(models):
        rng = np.random.default_rng(q)
        if kind == "uint8":
            source = k.to_device(train[:n_source])
        else:
            source = k.to_device(rng.random((n_source, widths[0]), dtype=np.float32))
        p = Pass(k, make_chain(k, widths, rng), batch_size, "decoder", np.float32)
        runs.append(SimpleNamespace(backend=k, train_pass=p, source=source, labels=None,
                                    noise_kernel="gather_masked", rate=NOISE, seed=q + 1,
                                    X_in=k.empty((batch_size, widths[0]), np.float32),
                                    X_target=k.empty((batch_size, widths[0]), np.float32)))
        optimisers.append(SGD(normalise_gradients=normalise, **MEDAL))
    if models == 1:
        r = runs[0]
        device = k.DeviceStep(r.train_pass, r.source, r.X_in, r.X_target, None,
                              r.noise_kernel, r.rate, r.seed)
    else:
        device = k.CohortStep(runs)
    state = {"epoch": 0}

    def steps():
        state["epoch"] += 1
        batches = [np.random.default_rng([q, state["epoch"]]).integers(
            0, n_source, (K_STEPS["per_call"], batch_size))
            for q in range(models)]
        if models == 1:
            return device.epoch(list(batches[0]), state["epoch"], optimisers[0])
        return device.epoch([(list(b), state["epoch"], opt, None)
                             for b, opt in zip(batches, optimisers)])

    steps.steps, steps.models = K_STEPS["per_call"], models
    return steps


# ----------------------------------------------------------------------------------------
# Standard PyTorch CUDA eager code, and the same step as a CUDA graph.
# ----------------------------------------------------------------------------------------


def torch_step(phase, batch_size, train, graph=False, device="cuda"):
    import torch
    from torch import nn
    dev = torch.device(device)
    widths, kind = phase_widths(phase)
    torch.manual_seed(0)
    n_source = SIZES["n_source"]
    if kind == "uint8":
        data = torch.from_numpy(np.ascontiguousarray(train[:n_source])).to(dev)
    else:
        data = torch.rand(n_source, widths[0], device=dev)
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
    from numba import cuda as numba_cuda
    # No cuMemFree from numba's deferred deallocations (a garbage collection of medalpy's
    # arrays) while the stream captures: that would invalidate the capture.
    with numba_cuda.defer_cleanup(), torch.cuda.graph(g):
        static_loss = bce(model(static_x * (torch.rand_like(static_x) > NOISE)),
                          static_x) / batch_size
        static_loss.backward()
        optimiser.step()

    def replay():
        static_x.copy_(batch())
        g.replay()
        return static_loss.item()

    return replay


def torch_cohort(phase, batch_size, train, models, device="cuda", graph=True):
    """The fair many-model peer: ``models`` networks' parameters stacked with
    ``torch.func.stack_module_state``, one step for all through ``vmap`` of a functional
    loss and gradient, SGD with momentum and decay on the stacked tensors; captured as a CUDA
    graph (``graph``). ``K_STEPS`` steps per call, as :func:`medalpy_cohort`."""
    import copy

    import torch
    from torch import nn
    from torch.func import functional_call, grad_and_value, stack_module_state, vmap
    dev = torch.device(device)
    widths, kind = phase_widths(phase)
    torch.manual_seed(0)
    nets = []
    for _ in range(models):
        modules = []
        for n_in, n_out in zip(widths, widths[1:]):
            modules += [nn.Linear(n_in, n_out), nn.Sigmoid()]
        nets.append(nn.Sequential(*modules).to(dev))
    params, _ = stack_module_state(nets)
    base = copy.deepcopy(nets[0]).to("meta")
    n_source = SIZES["n_source"]
    if kind == "uint8":
        data = torch.from_numpy(np.ascontiguousarray(train[:n_source])).to(dev).float() / 255
    else:
        data = torch.rand(n_source, widths[0], device=dev)
    velocity = {name: torch.zeros_like(p) for name, p in params.items()}
    lr, momentum, decay = MEDAL["lr"], MEDAL["momentum"], MEDAL["weight_decay"]

    def loss_fn(p, x, t):
        y = functional_call(base, p, (x,))
        return nn.functional.binary_cross_entropy(y, t, reduction="sum") / x.shape[0]

    step_grad = vmap(grad_and_value(loss_fn))
    rows = torch.randint(0, n_source, (models, batch_size), device=dev)

    def one_step():
        x = data[rows]
        grads, loss = step_grad(params, x * (torch.rand_like(x) > NOISE), x)
        with torch.no_grad():
            for name, p in params.items():
                g = grads[name] + (decay * p if name.endswith("weight") else 0)
                velocity[name].mul_(momentum).add_(g, alpha=lr)
                p.sub_(velocity[name])
        return loss

    def draw():
        rows.copy_(torch.randint(0, n_source, (models, batch_size), device=dev))

    if graph:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                one_step()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        from numba import cuda as numba_cuda
        with numba_cuda.defer_cleanup(), torch.cuda.graph(g):
            static_loss = one_step()

        def steps():
            for _ in range(K_STEPS["per_call"]):
                draw()
                g.replay()
            return static_loss.sum().item()
    else:
        def steps():
            for _ in range(K_STEPS["per_call"]):
                draw()
                loss = one_step()
            return loss.sum().item()

    steps.steps, steps.models = K_STEPS["per_call"], models
    return steps


# ----------------------------------------------------------------------------------------
# Timing.
# ----------------------------------------------------------------------------------------


_TORCH_CUDA = False  # set by main: PyTorch runs on the GPU, so timings synchronise it too


def _sync():
    from numba import cuda
    cuda.synchronize()
    if _TORCH_CUDA:
        import torch
        torch.cuda.synchronize()


def _rate(step, n):
    """Steps per second of ``n`` calls of ``step`` (each call is ``step.steps`` steps)."""
    _sync()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    _sync()
    return n * getattr(step, "steps", 1) / (time.perf_counter() - t0)


def _error(exc):
    return f"{type(exc).__name__}: {exc}"[-600:]


def time_cell(steps, repeats, seconds, errors=None):
    """Interleaved repetitions over ``steps`` ({impl: closure}): median steps/s per impl.

    An impl that raises while warming up is dropped, its error kept in ``errors``.
    """
    counts = {}
    for name, step in list(steps.items()):
        try:
            for _ in range(5):
                step()  # JIT, cuBLAS handles, caching allocators
            counts[name] = max(5, int(_rate(step, 10) * seconds / getattr(step, "steps", 1)))
        except Exception as exc:  # noqa: BLE001
            if errors is None:
                raise
            errors[name] = _error(exc)
            del steps[name]
    rates = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            rates[name].append(_rate(step, counts[name]))
    return {name: float(np.median(r)) for name, r in rates.items()}


def make_and_time(makers, repeats, seconds):
    """Build each step of ``makers`` ({impl: maker}) and time them (:func:`time_cell`);
    returns ``(rates, errors)``, an impl that fails to build or to warm up in ``errors``."""
    steps, errors = {}, {}
    for name, make in makers.items():
        try:
            steps[name] = make()
        except Exception as exc:  # noqa: BLE001
            errors[name] = _error(exc)
    return time_cell(steps, repeats, seconds, errors), errors


def speed(train, batch_sizes, repeats, seconds, torch_device, on_save=None, cupy_ok=True,
          phases=tuple(PHASES)):
    """Part 2; ``torch_device``: "cuda", "cpu" (a --tiny dry run) or None (no PyTorch).

    An implementation that fails is left out of its cell; the row's "errors" says why.
    """
    from medalpy.kernels import get_backend
    k = get_backend("cuda")
    rows = []
    for phase in phases:
        for B in batch_sizes:
            makers = {"medalpy_cuda": lambda: medalpy_step(phase, B, train),
                      "medalpy_cuda_graph": lambda: medalpy_cohort(phase, B, train)}
            if phase == "gradual":
                makers["medalpy_cuda_graph_normgrad"] = lambda: medalpy_cohort(
                    phase, B, train, normalise=True)
                makers["medalpy_cuda_normgrad"] = lambda: medalpy_step(phase, B, train,
                                                                       normalise=True)
                if cupy_ok and not k.SIMULATOR and GEMM["default"] != "cupy":
                    makers["medalpy_cuda_cupy_matmul"] = lambda: medalpy_step(phase, B, train,
                                                                              gemm="cupy")
            if torch_device:
                makers["torch_eager"] = lambda: torch_step(phase, B, train, device=torch_device)
                if phase == "gradual" and torch_device == "cuda":
                    makers["torch_cuda_graph"] = lambda: torch_step(phase, B, train, graph=True)
            rates, errors = make_and_time(makers, repeats, seconds)
            k.set_gemm(GEMM["default"])
            row = {"phase": phase, "batch": B, **rates}
            if "torch_eager" in rates and "medalpy_cuda" in rates:
                row["ratio_vs_torch"] = rates["medalpy_cuda"] / rates["torch_eager"]
            if "torch_cuda_graph" in rates and "medalpy_cuda_graph" in rates:
                row["graph_ratio_vs_torch_graph"] = (rates["medalpy_cuda_graph"]
                                                     / rates["torch_cuda_graph"])
            if errors:
                row["errors"] = errors
            rows.append(row)
            print(_fmt_row(row), flush=True)
            if on_save:
                on_save(rows)
    return rows


def cohorts(train, sizes, repeats, seconds, torch_device, batch_size=20):
    """Part 2b: gradual phase 2 at ``batch_size`` for cohorts of each size in ``sizes``:
    medalpy's batched step against the vmapped PyTorch step under a CUDA graph (eager on a
    --tiny dry run). Rows give steps/s and model-steps/s."""
    rows = []
    for models in sizes:
        makers = {"medalpy_cohort": lambda: medalpy_cohort("gradual", batch_size, train, models)}
        if torch_device:  # under a CUDA graph on a GPU; eager (torch_vmap) in a dry run
            graph = torch_device == "cuda"
            makers["torch_vmap_graph" if graph else "torch_vmap"] = lambda: torch_cohort(
                "gradual", batch_size, train, models, device=torch_device, graph=graph)
        rates, errors = make_and_time(makers, repeats, seconds)
        row = {"phase": "gradual", "batch": batch_size, "models": models}
        for name, rate in rates.items():
            row[name] = rate
            row[f"{name}_model_steps"] = rate * models
        if "torch_vmap_graph" in rates and "medalpy_cohort" in rates:
            row["ratio_vs_torch_vmap"] = rates["medalpy_cohort"] / rates["torch_vmap_graph"]
        if errors:
            row["errors"] = errors
        rows.append(row)
        print(f"cohort of {models}: " + _fmt_row(row), flush=True)
    return rows


def _fmt_row(row):
    cols = [f"{row['phase']:>9} B={row['batch']:<4}"]
    for key, value in row.items():
        if key in ("phase", "batch", "errors"):
            continue
        cols.append(f"{key}={value:,.2f}" if "ratio" in key else f"{key}={value:,.0f}")
    for key, value in row.get("errors", {}).items():
        cols.append(f"\n    {key} FAILED: {value}")
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
    D, H = SIZES["D"], SIZES["H"]
    enc1, dec1 = make_chain(k, [D, H, D], rng, ["encoder.0", "decoder.0"])
    train_epochs(k, [enc1, dec1], X, e1, batch_size, 1, True)
    W1, b1 = k.to_host(enc1[1].W), k.to_host(enc1[1].b)
    results = {"scale": scale, "epochs_layer1": e1, "budget_epochs": e2,
               "predicted_full_scale_s": full}
    # stacked: 2 e2 epochs of layer 2 on clean codes; evaluated through the mirror decoders
    codes = encode(k, [enc1[1]], X)
    enc2, dec2 = make_chain(k, [H, H, H], rng, ["encoder.1", "decoder.1"])
    train_epochs(k, [enc2, dec2], codes, 2 * e2, batch_size, 2, True)
    results["stacked"] = relative_ce(k, [enc1, enc2, dec2, dec1], Xt)
    # gradual: the same layer 1, e2 epochs of both layers and a direct decoder
    enc1[1].W, enc1[1].b = k.to_device(W1), k.to_device(b1)
    enc2g, dec2g = make_chain(k, [H, H, D], np.random.default_rng(2016),
                              ["encoder.1", "decoder"])
    train_epochs(k, [enc1, enc2g, dec2g], X, e2, batch_size, 3, True)
    results["gradual"] = relative_ce(k, [enc1, enc2g, dec2g], Xt)
    results["seconds"] = time.perf_counter() - t0
    return results


# ----------------------------------------------------------------------------------------
# Preflight: one probe kernel, the GEMM paths, and the PTX version fallback.
# ----------------------------------------------------------------------------------------

_PTX_VERSION = re.compile(r"^(\s*\.version\s+)(\d+)\.(\d+)", re.MULTILINE)
_CLAMP = {}  # install_ptx_clamp's target and the versions it lowered


def _ptx_isa(cuda_version):
    """The newest PTX ISA that a CUDA (major, minor) driver or nvJitLink accepts."""
    major, minor = cuda_version
    if major >= 13:
        return (9, minor)  # 13.0: 9.0, 13.1: 9.1, 13.2: 9.2
    if major == 12:
        return {0: (8, 0), 1: (8, 1), 2: (8, 2), 3: (8, 3), 4: (8, 4), 5: (8, 5),
                6: (8, 5), 8: (8, 7), 9: (8, 8)}.get(minor, (8, min(minor, 8)))
    return (7, minor)  # 11.x: 7.x


_cuda = None  # numba.cuda once _make_probe ran: a global, as numba and its simulator want


def _probe_template(a):
    i = _cuda.grid(1)
    if i < a.shape[0]:
        a[i] = 2 * i + 1


def _make_probe():
    """A new Python function each call (so a new numba dispatcher): ``a[i] = 2 i + 1``."""
    global _cuda
    import types

    from numba import cuda
    _cuda = cuda
    return types.FunctionType(_probe_template.__code__, globals(), "probe")


def toolchain_versions():
    """CUDA versions of the driver, NVVM (the PTX it writes) and nvJitLink, where found."""
    out = {}
    try:
        from numba.cuda.cudadrv.driver import driver
        out["driver_cuda"] = list(driver.get_version())
    except Exception as exc:  # noqa: BLE001
        out["driver_cuda"] = f"{type(exc).__name__}: {exc}"
    try:  # NVVM's release and the PTX ISA it writes, from the probe's PTX for sm_90
        from numba import cuda
        from numba import types as nt
        ptx, _ = cuda.compile_ptx(_make_probe(), (nt.float32[::1],), cc=(9, 0))
        release = re.search(r"Cuda compilation tools, release ([\d.]+)", ptx)
        version = _PTX_VERSION.search(ptx)
        out["nvvm_release"] = release.group(1) if release else "?"
        out["nvvm_ptx_isa"] = f"{version.group(2)}.{version.group(3)}" if version else "?"
    except Exception as exc:  # noqa: BLE001
        out["nvvm"] = f"{type(exc).__name__}: {exc}"[-600:]
    try:
        from cuda.bindings import nvjitlink
        out["nvjitlink"] = list(nvjitlink.version())
    except Exception as exc:  # noqa: BLE001
        out["nvjitlink"] = f"not used ({type(exc).__name__}: {exc})"
    return out


def install_ptx_clamp(target):
    """Lower the ``.version`` header of every PTX numba writes from now on to ``target``.

    For an NVVM newer than the driver or nvJitLink that links its PTX (a CUDA 13.x toolkit
    wheel on a 13.0 driver): the PTX of these kernels uses nothing newer than sm_90 needs, but
    its header names the NVVM's own ISA version, which older linkers refuse
    (CUDA_ERROR_UNSUPPORTED_PTX_VERSION). Returns a description of the change.
    """
    from numba.cuda import codegen
    cls = codegen.CUDACodeLibrary
    original = getattr(cls.get_asm_strs, "_medalpy_original", cls.get_asm_strs)
    target = tuple(target)
    _CLAMP.update(target=target)
    seen = _CLAMP.setdefault("seen", set())

    def clamp(ptx):
        def sub(m):
            version = (int(m.group(2)), int(m.group(3)))
            if version <= _CLAMP["target"]:
                return m.group(0)
            seen.add(version)
            return f"{m.group(1)}{_CLAMP['target'][0]}.{_CLAMP['target'][1]}"
        return _PTX_VERSION.sub(sub, ptx, count=1)

    def get_asm_strs(self, cc=None):
        return [clamp(ptx) for ptx in original(self, cc=cc)]

    get_asm_strs._medalpy_original = original
    cls.get_asm_strs = get_asm_strs
    return {"target": f"{target[0]}.{target[1]}", "seen": seen}


def _probe_kernel_once():
    """Compile and launch a fresh kernel (a new dispatcher each call) and check its result."""
    from numba import cuda
    probe = cuda.jit(_make_probe())
    d = cuda.device_array(64, np.float32)
    probe[2, 32](d)
    got = d.copy_to_host()
    want = 2 * np.arange(64, dtype=np.float32) + 1
    if not np.array_equal(got, want):
        raise RuntimeError(f"probe kernel wrote wrong values: {got[:8]} ...")


def probe_kernels():
    """Launch a probe kernel; if that fails, clamp the PTX version and try once more."""
    result = {"toolchain": toolchain_versions()}
    try:
        _probe_kernel_once()
        result["kernel"] = "ok"
        return result
    except Exception as exc:  # noqa: BLE001
        first = f"{type(exc).__name__}: {exc}"
        result["kernel_first_error"] = first[-2000:]
        print(f"preflight: the probe kernel failed: {first[-2000:]}", flush=True)
    versions = [v for key in ("driver_cuda", "nvjitlink")
                if isinstance(v := result["toolchain"].get(key), list)]
    m = re.search(r"current version is '(\d+)\.(\d+)'", first)
    if m:
        target = (int(m.group(1)), int(m.group(2)))
    elif versions:
        target = _ptx_isa(min(tuple(v) for v in versions))
    else:
        raise RuntimeError(f"the probe kernel failed and no CUDA version is known: {first}")
    clamp = install_ptx_clamp(target)
    print(f"preflight: retrying with PTX .version lowered to {clamp['target']}", flush=True)
    try:
        _probe_kernel_once()
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(f"the probe kernel failed, also with the PTX version lowered to "
                           f"{clamp['target']}: {type(exc).__name__}: {exc}\n"
                           f"first error: {first}") from exc
    result["kernel"] = "ok after lowering the PTX version"
    result["ptx_clamp"] = {"target": clamp["target"],
                           "from": sorted(f"{a}.{b}" for a, b in clamp["seen"])}
    return result


def check_gemm_paths(k):
    """Each GEMM path (and the backend's kernels) on a small problem against NumPy."""
    kinds = ["host"] if k.SIMULATOR else ["cublas", "cupy"]
    rng = np.random.default_rng(1)
    out = {}
    for kind in kinds:
        try:
            impl = _gemm_callable(k, kind)
            saved, k._gemm_impl = k._gemm_impl, impl
            try:
                worst = 0.0
                for dtype in (np.float32, np.float64):
                    A = rng.normal(size=(33, 17)).astype(dtype)
                    B = rng.normal(size=(17, 9)).astype(dtype)
                    G = rng.normal(size=(33, 9)).astype(dtype)
                    for fn, a, b, want in ((k.matmul, A, B, A @ B), (k.matmul_tn, A, G, A.T @ G),
                                           (k.matmul_nt, G, B, G @ B.T)):
                        res = k.empty(want.shape, dtype)
                        fn(k.to_device(a), k.to_device(b), res)
                        err = np.max(np.abs(k.to_host(res) - want)) / np.max(np.abs(want))
                        worst = max(worst, float(err))
                out[kind] = {"ok": worst < 1e-5, "max_relative_error": worst}
            finally:
                k._gemm_impl = saved
        except Exception as exc:  # noqa: BLE001
            out[kind] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[-1500:]}
    # The backend's own kernels once: zeros, gather_masked, fused loss.
    z = k.zeros((3, 5), np.float32)
    X = k.to_device(rng.integers(0, 256, (6, 5), dtype=np.uint8))
    k.gather_masked(X, np.array([1, 4, 2]), NOISE, 3, 0, z)
    loss = k.sigmoid_cross_entropy(z, k.zeros((3, 5), np.float32), k.empty((3, 5), np.float32))
    out["kernels"] = {"ok": bool(np.isfinite(loss)), "loss": float(loss)}
    return out


def gpu_or_reason(allow_simulator=False):
    """None when the cuda backend works here, else the reason it does not."""
    try:
        from medalpy.kernels import get_backend
        k = get_backend("cuda")
        if k.SIMULATOR and not allow_simulator:
            return "NUMBA_ENABLE_CUDASIM is set: this script measures a real GPU only (or --tiny)"
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None


def _save(report, out):
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(out)


def main(argv=None):
    global _TORCH_CUDA
    args = parse_args(argv)
    reason = gpu_or_reason(allow_simulator=args.tiny)
    if reason:
        print(f"gpu_check: no usable CUDA GPU, nothing measured ({reason})")
        return 2 if args.require_gpu else 0
    t_start = time.perf_counter()
    from numba import cuda

    from medalpy.kernels import get_backend
    k = get_backend("cuda")
    device = cuda.get_current_device()
    name = getattr(device, "name", "?")
    name = name.decode() if isinstance(name, bytes) else str(name)
    if k.SIMULATOR:
        name = "numba CUDA simulator"
    try:
        import torch
        torch_version = torch.__version__
        torch_device = ("cuda" if torch.cuda.is_available()
                        else "cpu" if args.tiny else None)
    except ImportError:
        torch_device, torch_version = None, None
    _TORCH_CUDA = torch_device == "cuda"
    train, test, data_desc = load_data(args.data_dir)
    report = {"gpu": name, "torch": torch_version, "torch_device": torch_device,
              "data": data_desc, "tiny": args.tiny, "argv": sys.argv[1:]}
    if args.tiny:
        # A few units and samples: the simulator runs every GPU thread as a Python thread.
        SIZES.update(D=16, H=8, n_source=100)
        K_STEPS.update(per_call=2)
        train = np.ascontiguousarray(train[:100, 400:416])
        test = np.ascontiguousarray(test[:40, 400:416])
    print(f"GPU: {name}; torch {torch_version} on {torch_device}; data: {data_desc}", flush=True)

    pre = report["preflight"] = {}
    _save(report, args.out)
    try:
        if not k.SIMULATOR:
            pre.update(probe_kernels())
        pre["gemm"] = check_gemm_paths(k)
    except Exception as exc:  # noqa: BLE001  (report it, with the versions, and stop)
        import traceback
        traceback.print_exc()
        pre.setdefault("toolchain", toolchain_versions())
        pre["error"] = f"{type(exc).__name__}: {exc}"[-4000:]
        _save(report, args.out)
        print(f"gpu_check: FAILED in the preflight: {pre['error']}", flush=True)
        return 3
    print(f"preflight: {json.dumps(pre, default=str)}", flush=True)
    if k.SIMULATOR:
        GEMM["default"] = "host"
    elif not pre["gemm"]["cublas"]["ok"]:
        if not pre["gemm"]["cupy"]["ok"]:
            _save(report, args.out)
            print("gpu_check: FAILED: neither cuBLAS nor cupy.matmul gives correct products")
            return 3
        GEMM["default"] = "cupy"
        print("gpu_check: cuBLAS path broken; medalpy timings below use cupy.matmul", flush=True)
    k.set_gemm(GEMM["default"])
    report["gemm_default"] = GEMM["default"]
    _save(report, args.out)

    if args.tiny:
        report["parity"] = parity(train, test, n_train=60, widths=(16, 8, 8), epochs=1,
                                  batch_size=20, n_test=40)
    else:
        report["parity"] = parity(train, test)
    print(f"parity: relative CE cpu {report['parity']['cpu']:.4f}, cuda "
          f"{report['parity']['cuda']:.4f}, difference "
          f"{100 * report['parity']['relative_difference']:.3f}% "
          f"({'PASS' if report['parity']['pass'] else 'FAIL'} at 1%); max |W_cpu - W_cuda| "
          f"{report['parity']['max_abs_weight_difference']:.2e}", flush=True)
    _save(report, args.out)

    def save_speed(rows):
        report["speed"] = rows
        _save(report, args.out)

    report["speed"] = speed(train, args.batch_sizes, args.repeats, args.seconds_per_cell,
                            torch_device, on_save=save_speed,
                            cupy_ok=pre["gemm"].get("cupy", {}).get("ok", False),
                            phases=args.phases)
    try:
        report["cohorts"] = cohorts(train, args.cohort_sizes, args.repeats,
                                    args.seconds_per_cell, torch_device,
                                    batch_size=min(args.batch_sizes))
    except Exception as exc:  # noqa: BLE001  (keep what was measured)
        import traceback
        traceback.print_exc()
        report["cohorts"] = {"error": _error(exc)}
    from medalpy.kernels import cuda_step
    report["capture"] = cuda_step.capture_status() or "captured as CUDA graphs"
    _save(report, args.out)
    left = args.budget_s - (time.perf_counter() - t_start)
    mnist_batch = 20 if 20 in args.batch_sizes else (min(args.batch_sizes) if args.tiny
                                                      else None)
    if not args.skip_mnist and left > 30 and mnist_batch:
        try:
            report["mnist"] = mnist_comparison(train, test, left - 10, report["speed"],
                                               batch_size=mnist_batch)
            m = report["mnist"]
            print(f"MNIST equal budget (scale {m['scale']:.2f}: layer 1 {m['epochs_layer1']} "
                  f"epochs, budget {m['budget_epochs']}): relative CE stacked "
                  f"{m['stacked']:.3f}, gradual {m['gradual']:.3f} ({m['seconds']:.0f} s)",
                  flush=True)
        except Exception as exc:  # noqa: BLE001  (keep parts 1 and 2)
            import traceback
            traceback.print_exc()
            report["mnist"] = {"error": _error(exc)}
    else:
        report["mnist"] = {"skipped": f"{left:.0f} s left"}
    report["seconds"] = time.perf_counter() - t_start

    print("\n| phase | batch | medalpy host-driven | medalpy recorded step | PyTorch eager | "
          "PyTorch CUDA graph |  (steps/s)")
    print("| --- | --- | --- | --- | --- | --- |")
    nan = float("nan")
    for row in report["speed"]:
        print(f"| {row['phase']} | {row['batch']} | {row.get('medalpy_cuda', nan):,.0f} | "
              f"{row.get('medalpy_cuda_graph', nan):,.0f} | {row.get('torch_eager', nan):,.0f} "
              f"| {row.get('torch_cuda_graph', nan):,.0f} |")
    if isinstance(report["cohorts"], list):
        print("\n| models | medalpy (model-steps/s) | PyTorch vmap + graph (model-steps/s) |")
        print("| --- | --- | --- |")
        for row in report["cohorts"]:
            print(f"| {row['models']} | {row.get('medalpy_cohort_model_steps', nan):,.0f} | "
                  f"{row.get('torch_vmap_graph_model_steps', nan):,.0f} |")
    _save(report, args.out)
    print(f"wrote {args.out} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
