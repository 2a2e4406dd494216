"""What each experiment costs at each scale, measured on this machine when asked.

The estimate times a few real SGD steps of every chain shape an experiment trains (on random
data, batch 20, the configured backend) and multiplies by the number of steps its cells take.
Classifier cells stop early; their cost is given for the full epoch limit, an upper bound.
"""

import time

import numpy as np

from medalpy.experiments.definitions import FRACTIONS, SCALES, base_params, sizes_for


def step_seconds(widths_in_out, head="decoder", batch=20, steps=20, backend="cpu"):
    """Mean seconds of one SGD step (forward, backward, update) through a chain of widths."""
    from medalpy.backprop import Pass
    from medalpy.kernels import get_backend
    from medalpy.network import new_layer

    k = get_backend(backend)
    rng = np.random.default_rng(0)
    chain = [(f"l{i}", new_layer(a, b, rng, np.float32)) for i, (a, b) in
             enumerate(zip(widths_in_out, widths_in_out[1:]))]
    p = Pass(k, chain, batch, head, np.float32)
    with k.session():
        return _timed_steps(p, widths_in_out, head, batch, steps, rng)


def _timed_steps(p, widths_in_out, head, batch, steps, rng):
    from medalpy.optim import SGD

    X = rng.uniform(size=(batch, widths_in_out[0])).astype(np.float32)
    T = (rng.integers(0, widths_in_out[-1], batch) if head == "classifier"
         else rng.uniform(size=(batch, widths_in_out[-1])).astype(np.float32))
    opt = SGD(0.01, 0.9, 1e-3)
    for _ in range(3):
        p.train_step(X, T, opt)
    t0 = time.perf_counter()
    for _ in range(steps):
        p.train_step(X, T, opt)
    return (time.perf_counter() - t0) / steps


def estimate(name, scale, n_images, n_classes=10, splits=3, measured=None, dataset="mnist"):
    """Estimated seconds of experiment ``name`` at ``scale`` for a training set of n_images."""
    params = base_params(dataset, scale, n_train_images=n_images)
    D, (w1, w2) = 784, params["layers"][:2]
    measured = {} if measured is None else measured

    def t(name, widths, head="decoder"):
        key = f"{name} {'-'.join(map(str, widths))}"  # each scale has its own widths
        if key not in measured:
            measured[key] = step_seconds(widths, head)
        return measured[key]

    n_pre = params["pretrain_size"] or (n_images - params["n_val"])
    steps = lambda n: -(-n // params["batch_size"])  # noqa: E731
    e1, n = params["epochs_layer1"], params["budget"]
    layer1 = e1 * steps(n_pre) * t("layer1", [D, w1, D])
    gradual = n * steps(n_pre) * t("gradual", [D, w1, w2, D])
    stacked = 2 * n * steps(n_pre) * t("stacked", [w1, w2, w1])
    # Full tuning runs through the schedule's decoder: direct after a gradual part, the
    # mirror (D-w1-w2-w1-D) after a stacked one.
    tune = params["finetune_epochs"] * steps(n_pre) * t("gradual", [D, w1, w2, D])
    tune_mirror = params["finetune_epochs"] * steps(n_pre) * t("tune", [D, w1, w2, w1, D])
    sizes = sizes_for(params, n_images)
    c = params["classifier"]
    classify = sum(c["epochs"] * steps(s) for s in sizes) * t("classifier", [D, w1, w2, 10],
                                                               "classifier")
    cl2 = sum(c["epochs"] * steps(s) for s in sizes[:2]) * t(
        "classifier", [D, w1, w2, 10], "classifier")
    if name == "fsweep":
        per_split = layer1 + sum((1 - f) * gradual + f * stacked
                                 + (tune_mirror if f == 1 else tune) for f in FRACTIONS)
    elif name == "trainsize":
        per_split = layer1 + gradual + stacked + 3 * classify
    elif name == "reproduce":  # f = 0 and f = 1 with full tuning, three classifier kinds
        per_split = layer1 + gradual + stacked + tune + tune_mirror + 3 * classify
    elif name == "lrsched":  # 6 gradual-shaped members, stacked, the ablation; all tuned
        per_split = layer1 + 7 * gradual + stacked + 7 * tune + tune_mirror + 8 * cl2
    else:
        # gradual, then the ablation under both readings (2n and n epochs of gradual's chain)
        per_split = layer1 + gradual + 3 * n * steps(n_pre) * t("gradual", [D, w1, w2, D]) \
            + 3 * cl2
    return splits * per_split


def describe(dataset="mnist", data_dir=None):
    """The text of ``medalpy experiment list``."""
    from medalpy.experiments.definitions import EXPERIMENTS
    from medalpy.experiments.steps import _dataset

    ds = _dataset(dataset, data_dir)
    n_images = ds.train_images.shape[0]
    lines = [f"Experiments on {dataset} ({ds.source['kind']}, {n_images} training images); "
             "cost for 3 splits, from SGD steps timed just now on this machine (classifier "
             "cells counted at their epoch limit: an upper bound):", ""]
    measured = {}
    scales = [s for s in SCALES if s != "smoke"]
    header = f"{'experiment':<11}" + "".join(f"{s:>12}" for s in scales)
    lines += [header, "-" * len(header)]
    for name, (_, what) in EXPERIMENTS.items():
        costs = [estimate(name, s, n_images, measured=measured, dataset=dataset)
                 for s in scales]
        lines.append(f"{name:<11}" + "".join(f"{c / 3600:>11.1f}h" for c in costs))
    lines += [""] + [f"{name}: {what}" for name, (_, what) in EXPERIMENTS.items()]
    lines += ["", "step times (ms, batch 20): " + ", ".join(
        f"{k} {v * 1e3:.2f}" for k, v in measured.items())]
    return "\n".join(lines)
