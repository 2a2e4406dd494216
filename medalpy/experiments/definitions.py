"""The paper's experiments as lists of cells, and how their results are summarised.

``fsweep``     test relative cross-entropy against the stacked fraction f of the hybrid
               (f = 0 is gradual, f = 1 stacked) under one budget, with and without full tuning.
``trainsize``  test classification error against the training-set size, for classifiers
               initialised from gradual and stacked encoders and from random weights.
``ablation``   gradual against "input noise, frozen lower layers", in reconstruction and
               classification.

Each runs ``splits`` train/validation splits (3, as the paper); layer 1 is trained once per
split and shared by every schedule of that split.
"""

from medalpy.errors import ConfigError
from medalpy.experiments.cells import Cell

#: Experiment scales. ``smoke`` runs the whole pipeline in seconds (its numbers mean
#: nothing); ``quick`` takes minutes; ``medium`` is the paper's network on 20,000 images with
#: a tenth of its epochs (fsweep took 71 min of compute here; trainsize is estimated at
#: up to 2.3 h by ``medalpy experiment list``); ``paper`` is the paper's MNIST
#: protocol. In ``sizes``, None stands for the whole
#: training part of a split.
SCALES = {
    "smoke": {"layers": [16, 8], "epochs_layer1": 1, "budget": 1, "finetune_epochs": 1,
              "pretrain_size": 300, "n_val": 100, "sizes": [100],
              "classifier": {"epochs": 3, "patience": 2}},
    "quick": {"layers": [250, 250], "epochs_layer1": 3, "budget": 4, "finetune_epochs": 3,
              "pretrain_size": 10000, "n_val": 2000, "sizes": [1000, 3000, 10000, None],
              "classifier": {"epochs": 30, "patience": 5}},
    "medium": {"layers": [1000, 1000], "epochs_layer1": 5, "budget": 8, "finetune_epochs": 8,
               "pretrain_size": 20000, "n_val": 10000, "sizes": [1000, 3000, 10000, None],
               "classifier": {"epochs": 50, "patience": 10}},
    "paper": {"layers": [1000, 1000], "epochs_layer1": 50, "budget": 80, "finetune_epochs": 80,
              "pretrain_size": None, "n_val": 10000,
              "sizes": [1000, 2000, 5000, 10000, 20000, None],
              "classifier": {"epochs": 1000, "patience": 35}},
}

#: Optimiser settings shared by all scales (MEDAL's conventions, see medalpy.run).
OPTIMISER = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3, "normalise_gradients": True,
             "batch_size": 20, "noise": 0.15}
CLASSIFIER = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-5, "batch_size": 20}
FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


def base_params(dataset, scale, data_dir=None, backend="cpu", seed=0, n_train_images=None):
    """Parameters every cell of an experiment shares (the seed is set per split).

    ``n_train_images`` (the dataset's training-set size) caps the validation set at a sixth
    of it and the pretraining set at what is left, so small datasets work at any scale.
    """
    if scale not in SCALES:
        raise ConfigError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    s = SCALES[scale]
    params = {"dataset": dataset, "data_dir": data_dir, "backend": backend, "scale": scale,
              "base_seed": seed, **OPTIMISER,
              **{k: s[k] for k in ("layers", "epochs_layer1", "budget", "finetune_epochs",
                                   "pretrain_size", "n_val")},
              "classifier": {**CLASSIFIER, **s["classifier"]}}
    if n_train_images is not None:
        params["n_val"] = min(params["n_val"], n_train_images // 6)
        if params["pretrain_size"] is not None:
            params["pretrain_size"] = min(params["pretrain_size"],
                                          n_train_images - params["n_val"])
    return params


def _split(params, s):
    return {**params, "seed": params["base_seed"] + s}


def _layer1_cell(params, s):
    return Cell(f"split{s}/layer1", "layer1", _split(params, s))


def _pretrain_cell(params, s, name, method, fraction=None, finetune=False):
    p = {**_split(params, s), "method": method, "fraction": fraction,
         "layer1": f"split{s}/layer1"}
    if not finetune:
        p["finetune_epochs"] = 0
    return Cell(f"split{s}/{name}", "pretrain", p, needs=(f"split{s}/layer1",))


def _classify_cell(params, s, init, size, encoders=None):
    p = {**_split(params, s), "train_size": size, "encoders": encoders}
    return Cell(f"split{s}/classify-{init}-n{size}", "classify", p,
                needs=(encoders,) if encoders else ())


def sizes_for(params, n_train_images):
    """The scale's training-set sizes that fit the dataset (None: all of a split's training
    part)."""
    available = n_train_images - params["n_val"]
    wanted = SCALES[params["scale"]]["sizes"]
    sizes = [n for n in wanted if n is not None and n < available]
    return sizes + [available] if None in wanted else sizes


def fsweep_cells(params, splits, fractions=FRACTIONS, **_):
    cells = []
    for s in range(splits):
        cells.append(_layer1_cell(params, s))
        for f in fractions:
            cells.append(_pretrain_cell(params, s, f"f{f:g}", "hybrid", fraction=float(f),
                                        finetune=True))
    return cells


def trainsize_cells(params, splits, sizes, **_):
    cells = []
    for s in range(splits):
        cells.append(_layer1_cell(params, s))
        cells.append(_pretrain_cell(params, s, "gradual", "gradual"))
        cells.append(_pretrain_cell(params, s, "stacked", "stacked"))
        for n in sizes:
            cells.append(_classify_cell(params, s, "gradual", n, f"split{s}/gradual"))
            cells.append(_classify_cell(params, s, "stacked", n, f"split{s}/stacked"))
            cells.append(_classify_cell(params, s, "random", n))
    return cells


def ablation_cells(params, splits, sizes, **_):
    cells = []
    for s in range(splits):
        cells.append(_layer1_cell(params, s))
        cells.append(_pretrain_cell(params, s, "gradual", "gradual"))
        cells.append(_pretrain_cell(params, s, "frozen_lower", "frozen_lower"))
        for n in sizes[:2]:
            cells.append(_classify_cell(params, s, "gradual", n, f"split{s}/gradual"))
            cells.append(_classify_cell(params, s, "frozen_lower", n, f"split{s}/frozen_lower"))
    return cells


EXPERIMENTS = {
    "fsweep": (fsweep_cells, "relative reconstruction cross-entropy vs stacked fraction f, "
                             "with and without full tuning"),
    "trainsize": (trainsize_cells, "classification error vs training-set size: gradual, "
                                   "stacked and random initialisation"),
    "ablation": (ablation_cells, "gradual vs input noise with frozen lower layers, in "
                                 "reconstruction and classification"),
}
