"""The paper's experiments as lists of cells, and how their results are summarised.

``fsweep``     test relative cross-entropy against the stacked fraction f of the hybrid
               (f = 0 is gradual, f = 1 stacked) under one budget, with and without full tuning.
``trainsize``  test classification error against the training-set size, for classifiers
               initialised from gradual and stacked encoders and from random weights.
``ablation``   gradual against "input noise, frozen lower layers", in reconstruction and
               classification.
``lrsched``    the schedules between the extremes that the paper left open: the lower layers'
               learning rate times m(t) in gradual phases (:class:`medalpy.schedules.LowerLR`),
               against gradual (m = 1), the equal-epochs ablation (m = 0) and stacked.

Each runs ``splits`` train/validation splits (3, as the paper); layer 1 is trained once per
split and shared by every schedule of that split.
"""

from medalpy.errors import ConfigError
from medalpy.experiments.cells import Cell

#: Experiment scales. ``smoke`` runs the whole pipeline in seconds (its numbers mean
#: nothing); ``quick`` takes minutes; ``medium`` is the paper's MNIST network on 20,000 images
#: with a tenth of its epochs; ``paper`` is the dataset's protocol (:mod:`medalpy.protocols`:
#: network, epochs of layer 1, budget, full tuning) on all its training images. In ``sizes``,
#: None stands for the whole training part of a split. ``medalpy experiment list`` estimates
#: what each costs on the machine it runs on.
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
    "paper": {"pretrain_size": None, "n_val": 10000,
              "sizes": [1000, 2000, 5000, 10000, 20000, None],
              "classifier": {"epochs": 1000, "patience": 35}},
}

#: The pretraining settings an experiment takes from a preset of :mod:`medalpy.run` (with the
#: defaults of ``medalpy train`` for those the preset leaves open).
OPTIMISER_FIELDS = ("lr", "momentum", "weight_decay", "normalise_gradients", "batch_size",
                    "init")
FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: The suffix of a full-tuning cell's key (``split0/f0`` -> ``split0/f0-tuned``).
TUNED = "-tuned"
#: Classifier training-set sizes an experiment takes when ``--sizes`` is not given (those
#: that fit the dataset), instead of its scale's.
DEFAULT_SIZES = {"lrsched": (1000, 10000)}


def base_params(dataset, scale, data_dir=None, backend="cpu", seed=0, n_train_images=None,
                preset=None, noise=None, classifier=None, noise_type="masking"):
    """Parameters every cell of an experiment shares (the seed is set per split).

    Parameters
    ----------
    dataset : a dataset of the registry; its protocol gives the noise rate and, at the
        ``paper`` scale, the network and epochs (``protocol`` names another one).
    preset : a preset of :data:`medalpy.run.PRESETS`: the pretraining optimiser (default:
        :func:`medalpy.run.default_preset`, the protocol's searched one at the paper scale).
    noise : the noise level (default: the protocol's); ``noise_type`` its kind.
    classifier : dict of classifier settings overriding
        :func:`medalpy.supervised.classifier_defaults` (the preset's searched settings, if
        it has any) and the scale's epochs and patience.
    n_train_images : the dataset's training-set size: caps the validation set at a sixth of
        it and the pretraining set at what is left, so small datasets work at any scale.
    """
    from medalpy.protocols import protocol_for
    from medalpy.run import default_preset, make_config
    from medalpy.supervised import check_classifier_settings, classifier_defaults

    if scale not in SCALES:
        raise ConfigError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    proto = protocol_for(dataset)
    s = {**SCALES[scale], **(proto.scale() if scale == "paper" else {})}
    preset = preset or default_preset("paper" if scale == "paper" else "quick", dataset)
    optimiser = make_config({"dataset": dataset, "preset": preset,
                             "noise": proto.noise if noise is None else noise,
                             "noise_type": noise_type})
    clf = {**classifier_defaults(preset), **s["classifier"], **(classifier or {})}
    check_classifier_settings(clf)
    params = {"dataset": dataset, "data_dir": data_dir, "backend": backend, "scale": scale,
              "base_seed": seed, "preset": preset, "protocol": proto.name,
              **{k: getattr(optimiser, k) for k in OPTIMISER_FIELDS},
              "noise": optimiser.noise, "noise_type": optimiser.noise_type,
              **{k: s[k] for k in ("layers", "epochs_layer1", "budget", "finetune_epochs",
                                   "pretrain_size", "n_val")},
              "classifier": clf}
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


def _pretrain_cell(params, s, name, method, fraction=None, **extra):
    p = {**_split(params, s), "method": method, "fraction": fraction,
         "layer1": f"split{s}/layer1", **extra, "finetune_epochs": 0}
    return Cell(f"split{s}/{name}", "pretrain", p, needs=(f"split{s}/layer1",))


def _tune_cell(params, pre):
    """Full tuning of pretraining cell ``pre``'s network, a cell of its own (``KEY-tuned``;
    the pretraining cell's parameters go along, to recompute its model when absent)."""
    p = {**pre.params, "finetune_epochs": params["finetune_epochs"], "pretrained": pre.key,
         "pretrained_params": pre.params}
    return Cell(f"{pre.key}{TUNED}", "tune", p, needs=(pre.key,))


def _classify_cell(params, s, init, size, encoders=None):
    """``encoders``: the pretraining cell whose encoders start the classifier (its
    parameters go along, to recompute its model when the model file is absent)."""
    p = {**_split(params, s), "train_size": size, "encoders": encoders and encoders.key,
         "encoders_params": encoders and encoders.params}
    return Cell(f"split{s}/classify-{init}-n{size}", "classify", p,
                needs=(encoders.key,) if encoders else ())


def sizes_for(params, n_train_images, sizes=None, n_classes=10):
    """The classifiers' training-set sizes: ``sizes`` when given (None standing for all of a
    split's training part), else the scale's, less those that do not fit the dataset."""
    available = n_train_images - params["n_val"]
    if sizes is not None:
        for n in sizes:
            if n is not None and not n_classes <= n <= available:
                raise ConfigError(f"--sizes: {n} is not between the {n_classes} classes and "
                                  f"the {available} training images of a split")
        wanted = list(sizes)
        chosen = [n for n in wanted if n is not None]
    else:
        wanted = SCALES[params["scale"]]["sizes"]
        chosen = [n for n in wanted if n is not None and n < available]
    return chosen + [available] if None in wanted else chosen


def fsweep_cells(params, splits, fractions=FRACTIONS, **_):
    cells = []
    for s in range(splits):
        cells.append(_layer1_cell(params, s))
        for f in fractions:
            pre = _pretrain_cell(params, s, f"f{f:g}", "hybrid", fraction=float(f))
            cells += [pre, _tune_cell(params, pre)]
    return cells


def trainsize_cells(params, splits, sizes, **_):
    cells = []
    for s in range(splits):
        cells.append(_layer1_cell(params, s))
        pre = {m: _pretrain_cell(params, s, m, m) for m in ("gradual", "stacked")}
        cells += pre.values()
        for n in sizes:
            cells.append(_classify_cell(params, s, "gradual", n, pre["gradual"]))
            cells.append(_classify_cell(params, s, "stacked", n, pre["stacked"]))
            cells.append(_classify_cell(params, s, "random", n))
    return cells


#: The ablation's two readings of "equal budget" (cell name, ``ablation_budget``): gradual's
#: weight updates (k n epochs of the top layer) and gradual's epochs (n).
ABLATION_READINGS = (("frozen_lower", "updates"), ("frozen_lower-epochs", "epochs"))


def ablation_cells(params, splits, sizes, **_):
    cells = []
    for s in range(splits):
        cells.append(_layer1_cell(params, s))
        pre = {"gradual": _pretrain_cell(params, s, "gradual", "gradual")}
        for name, reading in ABLATION_READINGS:
            pre[name] = _pretrain_cell(params, s, name, "frozen_lower", ablation_budget=reading)
        cells += pre.values()
        for n in sizes[:2]:
            for name, cell in pre.items():
                cells.append(_classify_cell(params, s, name, n, cell))
    return cells


def lrsched_members(budget):
    """(cell name, method, extra parameters) of the lrsched experiment: gradual (m = 1),
    stacked, the ablation under its equal-epochs reading (m = 0, the family's other end) and
    the family: constant 0.5, linear and cosine to 0, inverse-time with tau an eighth and half
    of the phase (tau = budget / 8 and budget / 2 epochs; mean multipliers about 0.27 and 0.55)."""
    specs = ["const:0.5", "linear", "cosine", f"invtime:{budget / 8:g}",
             f"invtime:{budget / 2:g}"]
    return ([("gradual", "gradual", {}), ("stacked", "stacked", {}),
             ("frozen_lower-epochs", "frozen_lower", {"ablation_budget": "epochs"})]
            + [(f"lower-{spec.replace(':', '')}", "gradual", {"lower_lr": spec})
               for spec in specs])


def lrsched_cells(params, splits, sizes, **_):
    """Every member pretrained and fully tuned (relative cross-entropy before and after), and
    classifiers from its pretrained encoders on the first two ``sizes``."""
    cells = []
    for s in range(splits):
        cells.append(_layer1_cell(params, s))
        for name, method, extra in lrsched_members(params["budget"]):
            pre = _pretrain_cell(params, s, name, method, **extra)
            cells += [pre, _tune_cell(params, pre)]
            cells += [_classify_cell(params, s, name, n, pre) for n in sizes[:2]]
    return cells


def reproduce_cells(params, splits, fractions=(0.0, 1.0), sizes=(), **_):
    """The paper's two results from one set of encoders: fsweep's cells (pretraining of
    each f, then full tuning), and classifiers on ``sizes`` labelled images initialised from
    the pretrained f = 0 (gradual) and f = 1 (stacked) encoders, and from random weights."""
    cells = fsweep_cells(params, splits, fractions)
    by_key = {cell.key: cell for cell in cells}
    for s in range(splits):
        for n in sizes:
            cells.append(_classify_cell(params, s, "gradual", n, by_key[f"split{s}/f0"]))
            cells.append(_classify_cell(params, s, "stacked", n, by_key[f"split{s}/f1"]))
            cells.append(_classify_cell(params, s, "random", n))
    return cells


EXPERIMENTS = {
    "fsweep": (fsweep_cells, "relative reconstruction cross-entropy vs stacked fraction f, "
                             "with and without full tuning"),
    "trainsize": (trainsize_cells, "classification error vs training-set size: gradual, "
                                   "stacked and random initialisation"),
    "reproduce": (reproduce_cells, "the paper's result from one set of encoders: fsweep at "
                                   "the chosen fractions (0 and 1 at least) with full tuning, "
                                   "and trainsize's classifiers from the f = 0 and f = 1 "
                                   "encoders"),
    "ablation": (ablation_cells, "gradual vs input noise with frozen lower layers, in "
                                 "reconstruction and classification"),
    "lrsched": (lrsched_cells, "schedules between stacked and gradual: the lower layers' "
                               "learning rate decayed during gradual phases, at equal budget"),
}
