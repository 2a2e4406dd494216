"""What a search is: the grid, its configurations, rungs and the checked specification."""

import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from medalpy.errors import ConfigError

STEP = "medalpy.search.steps.fold"

#: The paper's grid (sec. 4). ``seed`` is the initialisation seed; ``normalise_gradients``
#: is MEDAL's normGrad (on by MEDAL's default; the paper does not say it searched it).
PAPER_GRID = {
    "units": [1000, 1500, 2000, 2500],
    "lr": [1e-1, 1e-2, 1e-3, 5e-4, 1e-4, 5e-5, 1e-5],
    "batch_size": [10, 20],
    "momentum": [0.9, 0.7],
    "weight_decay": [1e-3, 1e-4, 1e-5],
    "normalise_gradients": [True],
    "seed": [0],
}
SPACE = tuple(PAPER_GRID)
_INTS = {"units", "batch_size", "seed"}
_BOOLS = {"normalise_gradients"}
#: What one rung of ``plan`` may set.
PLAN_KEYS = ("subset", "eval_folds", "epochs_layer1", "budget", "classifier_epochs")
OBJECTIVES = {"pretrain": "validation reconstruction cross-entropy (nats per image)",
              "classify": "validation classification error",
              "classifier": "validation classification error of a classifier on given "
                            "encoders (its own settings searched)"}




@dataclass
class SearchSpec:
    """Everything that defines a search (what ``search.json`` records).

    ``space`` maps each name of :data:`SPACE` to the values to try; the other fields are held
    fixed over the search and written into ``best.toml`` (TrainConfig names).

    With ``objective = "classifier"`` the trials train only a classifier, from the encoders of
    the model file ``encoders`` (fixed: ``units`` is their width), with the configuration's
    optimiser settings; ``best.toml`` then holds the classifier's settings
    (:data:`medalpy.settings.CLASSIFIER` names).
    """

    dataset: str = "mnist"
    data_dir: str = None
    objective: str = "pretrain"
    space: dict = field(default_factory=lambda: {k: list(v) for k, v in PAPER_GRID.items()})
    n_trials: int = None  # random search: this many configurations drawn from the grid
    folds: int = None  # default: the dataset's protocol (10 for MNIST, 5 for CIFAR)
    subset: int = None  # class-balanced subset of the training images (default: all)
    data_seed: int = 0  # subset, folds and random draws
    methods: list = field(default_factory=lambda: ["gradual"])
    fraction: float = None
    n_layers: int = 2
    noise: float = None  # default: the dataset's protocol (0.15 for MNIST, 0.10 for CIFAR)
    noise_type: str = "masking"  # medalpy.corruption
    epochs_layer1: int = 10
    budget: int = 10
    patience: int = None
    classifier_epochs: int = 30
    encoders: str = None  # classifier objective: the model file whose encoders are used
    eta: int = None  # successive halving: keep the best 1/eta after each rung
    rungs: int = 3
    plan: list = None  # one dict per rung (PLAN_KEYS); sets rungs
    backend: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self):
        from medalpy.protocols import protocol_for

        protocol = protocol_for(self.dataset)
        if self.folds is None:
            self.folds = protocol.folds
        if self.noise is None:
            self.noise = protocol.noise
        self.space = {**{k: list(v) for k, v in PAPER_GRID.items()}, **self.space}
        if self.objective == "classifier":
            self.space["units"] = [_encoders_width(self.encoders)]
        if isinstance(self.methods, str):
            self.methods = [self.methods]
        self.methods = list(self.methods)
        if self.plan is not None:
            self.plan = [dict(rung) for rung in self.plan]
            self.rungs = len(self.plan)
        self.check()

    def check(self):
        def need(ok, message):
            if not ok:
                raise ConfigError(message)

        unknown = sorted(set(self.space) - set(SPACE))
        need(not unknown, f"unknown search parameter(s) {', '.join(unknown)}; "
                          f"known: {', '.join(SPACE)}")
        for name, values in self.space.items():
            need(isinstance(values, (list, tuple)) and len(values) >= 1,
                 f"{name}: give a non-empty list of values")
            if name in _INTS:
                need(all(isinstance(v, int) and not isinstance(v, bool) for v in values),
                     f"{name} values must be integers, got {values}")
            elif name in _BOOLS:
                need(all(isinstance(v, bool) for v in values),
                     f"{name} values must be true or false, got {values}")
            else:
                need(all(isinstance(v, (int, float)) and not isinstance(v, bool)
                         for v in values), f"{name} values must be numbers, got {values}")
            need(len(set(values)) == len(values), f"{name}: repeated values {values}")
        need(all(v >= 1 for v in self.space["units"]), "units must be at least 1")
        from medalpy.settings import TRAIN_SETTINGS

        for name in ("lr", "batch_size", "momentum", "weight_decay", "seed"):
            for value in self.space[name]:
                TRAIN_SETTINGS[name].check(value, where="search ")
        need(self.objective in OBJECTIVES,
             f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        need(self.folds >= 3, f"folds must be at least 3 (nested: one to score, one to stop "
                              f"on, the rest to train), got {self.folds}")
        need(self.n_trials is None or self.n_trials >= 1, "n_trials must be at least 1")
        need(self.subset is None or self.subset >= self.folds,
             "subset must hold at least one image per fold")
        need(self.plan is None or (len(self.plan) >= 1 and self.eta is not None),
             "plan needs eta (how many configurations each rung keeps) and at least one rung")
        for r, rung in enumerate(self.plan or ()):
            unknown = sorted(set(rung) - set(PLAN_KEYS))
            need(not unknown, f"plan rung {r}: unknown key(s) {', '.join(unknown)}; known: "
                              f"{', '.join(PLAN_KEYS)}")
            need(all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                     for v in rung.values()), f"plan rung {r}: values must be integers >= 1")
            need(rung.get("eval_folds", 1) <= self.folds,
                 f"plan rung {r}: eval_folds must be at most folds ({self.folds})")
            need(rung.get("subset", self.folds) >= self.folds,
                 f"plan rung {r}: subset must hold at least one image per fold")
        need(len(self.methods) >= 1 and len(set(self.methods)) == len(self.methods),
             f"methods must be a list of distinct schedules, got {self.methods}")
        need(self.n_layers >= 1, "n_layers must be at least 1")
        need(self.epochs_layer1 >= 1 and self.budget >= 0,
             "epochs_layer1 must be >= 1 and budget >= 0")
        need(self.patience is None or self.patience >= 1, "patience must be at least 1")
        need(self.classifier_epochs >= 1, "classifier_epochs must be at least 1")
        need((self.objective == "classifier") == (self.encoders is not None),
             "encoders (a model file) go with the classifier objective, and only with it")
        need(self.eta is None or self.eta >= 2, "eta (successive halving) must be at least 2")
        need(self.rungs >= 1, "rungs must be at least 1")
        from medalpy.corruption import check_level

        check_level(self.noise_type, self.noise)
        from medalpy.schedules import build_schedule

        for method in self.methods:
            build_schedule(method, self.n_layers, 1, self.budget,
                           self.fraction if method == "hybrid" else None)

    def to_dict(self):
        return asdict(self)


def _encoders_width(path):
    """The top width of a model file's encoders (the classifier objective's fixed units)."""
    from medalpy import checkpoint

    if path is None:
        raise ConfigError("the classifier objective needs encoders (a model file)")
    network = checkpoint.load(path)["network"]
    if network.depth < 1:
        raise ConfigError(f"{path}: the model has no encoder layer")
    return network.width(network.depth)


def read_grid(path):
    """A TOML grid file: lists for the :data:`SPACE` names, scalars for fixed settings.

    Returns ``(space, fixed)``; unknown keys are refused, naming the file.
    """
    from medalpy.run import load_toml

    path = Path(path)
    values = load_toml(path, "grid file")
    fixed_names = {f for f in SearchSpec.__dataclass_fields__ if f != "space"}
    unknown = sorted(set(values) - set(SPACE) - fixed_names)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; search parameters: "
                          f"{', '.join(SPACE)}; fixed settings: {', '.join(sorted(fixed_names))}")
    space = {k: (v if isinstance(v, list) else [v]) for k, v in values.items() if k in SPACE}
    fixed = {k: v for k, v in values.items() if k not in SPACE}
    return space, fixed


# -- configurations, rungs and cells -----------------------------------------------------------


def configurations(spec):
    """The configurations to try: the whole grid, or ``n_trials`` drawn from it by the seed."""
    grid = [dict(zip(SPACE, values)) for values in
            itertools.product(*(spec.space[name] for name in SPACE))]
    if spec.n_trials is not None and spec.n_trials < len(grid):
        pick = np.random.default_rng([spec.data_seed, 11]).choice(
            len(grid), size=spec.n_trials, replace=False)
        grid = [grid[i] for i in sorted(pick)]
    return grid


def config_id(config):
    """A readable, stable name: ``u1000-lr0.01-b20-m0.9-wd0.001-ng1-s0``."""
    return (f"u{config['units']}-lr{config['lr']:g}-b{config['batch_size']}"
            f"-m{config['momentum']:g}-wd{config['weight_decay']:g}"
            f"-ng{int(config['normalise_gradients'])}-s{config['seed']}")


def rung_settings(spec, rung):
    """The sizes of a rung: ``subset``, ``eval_folds``, ``epochs_layer1``, ``budget`` and
    ``classifier_epochs`` (from ``plan``, or the epochs scaled by ``eta``)."""
    base = {"subset": spec.subset, "eval_folds": spec.folds,
            "epochs_layer1": spec.epochs_layer1, "budget": spec.budget,
            "classifier_epochs": spec.classifier_epochs}
    if spec.plan is not None:
        return {**base, **spec.plan[rung]}
    if spec.eta is None:
        return base
    factor = float(spec.eta) ** (rung - (spec.rungs - 1))

    def scaled(n, least):
        return max(least, int(round(n * factor))) if n > 0 else 0

    return {**base, "epochs_layer1": scaled(spec.epochs_layer1, 1),
            "budget": scaled(spec.budget, 1),
            "classifier_epochs": scaled(spec.classifier_epochs, 1)}


#: The epochs each objective trains (a rung's other epochs are unused by its trials).
EPOCHS_USED = {"pretrain": ("epochs_layer1", "budget"),
               "classify": ("epochs_layer1", "budget", "classifier_epochs"),
               "classifier": ("classifier_epochs",)}


def epochs_used(spec, rung):
    """``{name: epochs}`` of a rung, only those the search's objective trains."""
    r = rung_settings(spec, rung)
    return {name: r[name] for name in EPOCHS_USED[spec.objective]}


def rung_epochs(spec, rung):
    """(epochs_layer1, budget, classifier_epochs) of a rung."""
    r = rung_settings(spec, rung)
    return r["epochs_layer1"], r["budget"], r["classifier_epochs"]
