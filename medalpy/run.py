"""One pretraining run, configured, resumable and recorded: what ``medalpy train`` does.

Configuration precedence, lowest first: built-in defaults, the ``scale`` (sizes and epochs),
the ``preset`` (optimiser conventions), a TOML ``--config`` file, explicit options. Every key
is checked: unknown names and out-of-range values are errors that name the key.
"""

import dataclasses
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medalpy.atomic import write_json_atomic
from medalpy.corruption import check_level
from medalpy.errors import ConfigError
from medalpy.protocols import PROTOCOLS, protocol_for

METHOD_FLAGS = ("stacked", "gradual", "hybrid", "frozen_lower")

#: Sizes and epochs. ``quick`` runs in seconds on the bundled sample; ``medium`` is the
#: paper's MNIST network with a fifth of its epochs; ``paper`` is the dataset's own protocol
#: (:mod:`medalpy.protocols`, full tuning included).
SCALES = {
    "quick": {"layers": [500, 500], "epochs_layer1": 10, "budget": 10, "finetune_epochs": 0},
    "medium": {"layers": [1000, 1000], "epochs_layer1": 10, "budget": 16, "finetune_epochs": 0},
    "paper": None,
}


def scale_settings(scale, dataset):
    """The sizes and epochs a scale sets for a dataset."""
    from medalpy.protocols import protocol_for

    if scale not in SCALES:
        raise ConfigError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    return protocol_for(dataset).scale() if scale == "paper" else dict(SCALES[scale])


#: Optimiser conventions. ``medal``: MEDAL's defaults, which the paper ran on.
PRESETS = {
    "medal": {"batch_size": 20, "momentum": 0.9, "weight_decay": 1e-3,
              "normalise_gradients": True, "init": "medal"},
}


@dataclass
class TrainConfig:
    """Every setting of a pretraining run (the TOML keys and CLI options use these names)."""

    dataset: str = "mnist"
    method: str = "gradual"
    fraction: float = None  # hybrid only
    ablation_budget: str = "updates"  # frozen_lower: equal weight updates or equal epochs
    scale: str = "quick"
    preset: str = "medal"
    layers: list = field(default_factory=lambda: list(SCALES["quick"]["layers"]))
    noise: float = PROTOCOLS["mnist"].noise  # the dataset's protocol when not given
    noise_type: str = "masking"  # medalpy.corruption
    epochs_layer1: int = SCALES["quick"]["epochs_layer1"]
    budget: int = SCALES["quick"]["budget"]
    finetune_epochs: int = 0
    eval_decoder: str = "auto"
    fit_decoder_epochs: int = None
    lr: float = 0.1
    batch_size: int = 20
    momentum: float = 0.9
    weight_decay: float = 1e-3
    normalise_gradients: bool = True
    init: str = "medal"
    patience: int = None
    train_size: int = None
    val_size: int = None  # default: a sixth of the training set (10,000 of MNIST's 60,000)
    seed: int = 0
    backend: str = "cpu"
    dtype: str = "float32"
    data_dir: str = None
    grayscale: bool = False
    #: Per-phase settings, keyed by phase kind or name: ``{"finetune": {"lr": 0.01}}``; in
    #: TOML a table such as ``[phase_settings.finetune]`` with ``lr = 0.01``.
    phase_settings: dict = field(default_factory=dict)

    def to_dict(self):
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


#: The type of every setting that is not a string ("?" marks those that may also be None).
_INTS = {"epochs_layer1": "", "budget": "", "finetune_epochs": "", "fit_decoder_epochs": "?",
         "batch_size": "", "patience": "?", "train_size": "?", "val_size": "?", "seed": ""}
_FLOATS = {"fraction": "?", "noise": "", "lr": "", "momentum": "", "weight_decay": ""}
_BOOLS = {"normalise_gradients": "", "grayscale": ""}

#: Ranges of the settings a phase may also override (see ``phase_settings``).
_RANGES = {
    "lr": (lambda v: v > 0, "positive"),
    "momentum": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    "weight_decay": (lambda v: v >= 0, "not negative"),
    "batch_size": (lambda v: v >= 1, "at least 1"),
    "patience": (lambda v: v is None or v >= 1, "at least 1"),
    "normalise_gradients": (lambda v: True, ""),
}


def _need(ok, message):
    if not ok:
        raise ConfigError(message)


def _check_types(values, where=""):
    """Integers must be integers (not bools), floats numbers, bools true or false."""
    for name, value in values.items():
        optional = (_INTS.get(name) or _FLOATS.get(name) or _BOOLS.get(name)) == "?"
        if value is None and optional:
            continue
        if name in _INTS:
            ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif name in _FLOATS:
            ok, kind = (isinstance(value, (int, float)) and not isinstance(value, bool),
                        "a number")
        elif name in _BOOLS:
            ok, kind = isinstance(value, bool), "true or false"
        else:
            continue
        _need(ok, f"{where}{name} must be {kind}, got {value!r}")


def _check_ranges(values, where=""):
    for name, (ok, rule) in _RANGES.items():
        if name in values:
            _need(ok(values[name]), f"{where}{name} must be {rule}, got {values[name]!r}")


def _check(cfg):
    from medalpy.config import BACKENDS
    from medalpy.schedules import ABLATION_BUDGETS, EVAL_DECODERS, METHODS, build_schedule
    from medalpy.trainer import Hyper

    need = _need
    values = cfg.to_dict()
    _check_types(values)
    need(cfg.method in METHODS, f"method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    need(cfg.scale in SCALES, f"scale must be one of {', '.join(SCALES)}, got {cfg.scale!r}")
    need(cfg.preset in PRESETS, f"preset must be one of {', '.join(PRESETS)}, got {cfg.preset!r}")
    need(cfg.backend in BACKENDS, f"backend must be one of {', '.join(BACKENDS)}")
    need(cfg.dtype in ("float32", "float64"), "dtype must be float32 or float64")
    need(cfg.eval_decoder in EVAL_DECODERS, f"eval_decoder must be one of {EVAL_DECODERS}")
    need(cfg.ablation_budget in ABLATION_BUDGETS,
         f"ablation_budget must be one of {', '.join(ABLATION_BUDGETS)}")
    need(isinstance(cfg.layers, (list, tuple)) and len(cfg.layers) >= 1
         and all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in cfg.layers),
         f"layers must be a list of positive integers, got {cfg.layers!r}")
    _check_ranges(values)
    check_level(cfg.noise_type, cfg.noise)
    need(cfg.epochs_layer1 >= 1, f"epochs_layer1 must be at least 1, got {cfg.epochs_layer1}")
    need(cfg.budget >= 1 or len(cfg.layers) == 1,
         f"budget must be at least 1 to train {len(cfg.layers)} layers, got {cfg.budget}")
    need(cfg.finetune_epochs >= 0, f"finetune_epochs must be >= 0, got {cfg.finetune_epochs}")
    need(cfg.fit_decoder_epochs is None or cfg.fit_decoder_epochs >= 1,
         f"fit_decoder_epochs must be at least 1, got {cfg.fit_decoder_epochs}")
    need(cfg.train_size is None or cfg.train_size >= 1, "train_size must be at least 1")
    need(cfg.val_size is None or cfg.val_size >= 1, "val_size must be at least 1")
    need(cfg.seed >= 0, f"seed must not be negative, got {cfg.seed}")
    if cfg.method == "hybrid":
        need(cfg.fraction is not None and 0.0 <= cfg.fraction <= 1.0,
             "the hybrid method needs a fraction in [0, 1]")
    else:
        need(cfg.fraction is None, f"a fraction is only for the hybrid method, not {cfg.method}")
    # Per-phase settings: keys must name a phase (kind or name) of this very schedule, and
    # values obey the same rules as the run-wide ones, so nothing fails hours into a run.
    need(isinstance(cfg.phase_settings, dict), "phase_settings must be a table")
    phases, _ = schedule(cfg)
    known = sorted({p.kind for p in phases} | {p.name for p in phases})
    for key, overrides in cfg.phase_settings.items():
        where = f"phase_settings.{key}: "
        need(key in known, f"{where}no such phase in this schedule; its phases are "
                           f"{', '.join(known)}")
        need(isinstance(overrides, dict), f"{where}must be a table of settings")
        unknown = sorted(set(overrides) - set(Hyper.FIELDS))
        need(not unknown, f"{where}unknown setting(s) {', '.join(unknown)}; per-phase "
                          f"settings are {', '.join(Hyper.FIELDS)}")
        _check_types(overrides, where)
        _check_ranges(overrides, where)
        check_level(overrides.get("noise_type", cfg.noise_type),
                    overrides.get("noise", cfg.noise), f"{where}noise")


def schedule(cfg):
    """The phase list and evaluation decoder of a configuration."""
    from medalpy.schedules import build_schedule

    return build_schedule(cfg.method, len(cfg.layers), cfg.epochs_layer1, cfg.budget,
                          cfg.fraction, cfg.eval_decoder, cfg.fit_decoder_epochs,
                          cfg.finetune_epochs, cfg.ablation_budget)


def read_toml(path):
    """The settings of a TOML file, with unknown keys refused (naming the file and key)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    unknown = sorted(set(values) - FIELDS)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(FIELDS))}")
    return values


def make_config(options=None, config_file=None):
    """Resolve a :class:`TrainConfig` from defaults, scale, preset, a TOML file and options.

    Parameters
    ----------
    options : dict of explicitly given settings (None values are ignored).
    config_file : optional path of a TOML file with the same names.
    """
    options = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(options) - FIELDS)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}")
    from_file = read_toml(config_file) if config_file else {}
    scale = options.get("scale", from_file.get("scale", "quick"))
    preset = options.get("preset", from_file.get("preset", "medal"))
    dataset = options.get("dataset", from_file.get("dataset", TrainConfig.dataset))
    if not isinstance(scale, str) or scale not in SCALES:
        raise ConfigError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ConfigError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    protocol = protocol_for(dataset)
    values = {"noise": protocol.noise, **scale_settings(scale, dataset), **PRESETS[preset],
              **from_file, **options}
    values["scale"], values["preset"] = scale, preset
    if isinstance(values.get("layers"), str):
        values["layers"] = parse_layers(values["layers"])
    try:
        cfg = TrainConfig(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
    cfg.layers = list(cfg.layers)
    _check(cfg)
    return cfg


def parse_layers(text):
    """``"1000,1000"`` -> ``[1000, 1000]``."""
    try:
        widths = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"layers must be comma-separated integers, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise ConfigError(f"layers must be positive integers, got {text!r}")
    return widths


# ---------------------------------------------------------------------------------------------


def prepare_data(cfg):
    """Load the dataset and cut the training subset and validation set the config asks for.

    Returns
    -------
    (dataset, train_rows, val_rows, notes) where ``notes`` lists warnings to show the user.
    """
    from medalpy.data import load
    from medalpy.data.splits import balanced_subset, train_val_split

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load(cfg.dataset, cfg.data_dir, grayscale=cfg.grayscale)
    notes = [str(w.message) for w in caught]
    N = ds.train_images.shape[0]
    n_val = cfg.val_size if cfg.val_size is not None else N // 6
    train_rows, val_rows = train_val_split(ds.train_labels, n_val, cfg.seed)
    if cfg.train_size is not None:
        if cfg.train_size > len(train_rows):
            raise ConfigError(f"train_size {cfg.train_size} exceeds the {len(train_rows)} "
                              "training images left after the validation split")
        pick = balanced_subset(ds.train_labels[train_rows], cfg.train_size, cfg.seed)
        train_rows = train_rows[np.sort(pick)]
    return ds, train_rows, val_rows, notes


def build_trainer(cfg, X_train, X_val, network=None, callbacks=()):
    """The trainer of a configuration's schedule on in-memory images: what ``medalpy train``
    runs (it adds the data, checkpoints, logs and metrics around it).

    Parameters
    ----------
    cfg : TrainConfig.
    X_train, X_val : (N, D) uint8 images or floats in [0, 1]; the validation images choose
        each phase's best parameters.
    network : the :class:`medalpy.network.Network` to train (default: a new, empty one).
    callbacks : trainer callbacks.

    Returns
    -------
    :class:`medalpy.trainer.Trainer`; call ``run()`` on it.
    """
    from medalpy.kernels import get_backend
    from medalpy.network import Network
    from medalpy.trainer import Hyper, Trainer

    phases, _ = schedule(cfg)
    hyper = Hyper.from_settings(cfg.to_dict(), overrides=cfg.phase_settings)
    network = network if network is not None else Network(X_train.shape[1], cfg.dtype)
    return Trainer(get_backend(cfg.backend), network, phases, hyper, X_train, X_val,
                   cfg.layers, cfg.seed, callbacks)


def train(cfg, out_dir, resume=False, callbacks=(), echo=None):
    """Run (or resume) one pretraining run and write ``model.h5`` and ``metrics.json``.

    Parameters
    ----------
    cfg : TrainConfig.
    out_dir : directory for ``checkpoint.h5``, ``log.jsonl``, ``model.h5``, ``metrics.json``.
    resume : continue from ``out_dir/checkpoint.h5``; its configuration must equal ``cfg``.
    callbacks : extra trainer callbacks (a progress printer...).
    echo : optional function for one-line notes to the user.

    Returns
    -------
    dict, the metrics record written to ``metrics.json``.
    """
    from medalpy import checkpoint
    from medalpy.callbacks import Checkpointer, JsonLinesLog
    from medalpy.evaluation import mean_image_relative_ce, reconstruction_metrics
    from medalpy.kernels import get_backend
    from medalpy.schedules import budget_units

    echo = echo or (lambda message: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.h5"
    config = cfg.to_dict()
    saved = None
    if resume:
        saved = checkpoint.load(ckpt_path)
        if saved["kind"] != "checkpoint" or "trainer" not in saved:
            raise ConfigError(f"{ckpt_path}: not a resumable checkpoint")
        # A setting added to medalpy after the checkpoint was written has its default there.
        before = {**TrainConfig().to_dict(), **saved["config"]}
        differ = sorted(k for k in FIELDS if before.get(k) != config.get(k) and k != "data_dir")
        if differ:
            raise ConfigError(f"--resume: the options {', '.join(differ)} differ from the "
                              f"checkpoint's ({ckpt_path}); give the same options or none")
    elif ckpt_path.exists():
        raise ConfigError(f"{ckpt_path} exists: pass --resume to continue that run, or choose "
                          "another --out")

    backend = get_backend(cfg.backend)  # an unavailable backend fails before data is read
    ds, train_rows, val_rows, notes = prepare_data(cfg)
    for note in notes:
        echo(f"WARNING: {note}")
    echo(f"data: {ds.name} ({ds.source['kind']}) from {ds.source['location']}: "
         f"{len(train_rows)} training, {len(val_rows)} validation, "
         f"{ds.test_images.shape[0]} test images")
    phases, eval_decoder = schedule(cfg)
    X_train, X_val = ds.train_images[train_rows], ds.train_images[val_rows]
    data_record = {**ds.source, "n_train": int(len(train_rows)), "n_val": int(len(val_rows)),
                   "n_test": int(ds.test_images.shape[0])}
    if saved:  # the same data too, or the resumed run would silently train on other images
        before = saved["extra"].get("data", {})
        differ = [k for k in ("dataset", "kind", "files", "n_train", "n_val")
                  if before.get(k) != data_record.get(k)]
        if differ:
            raise ConfigError(f"--resume: the data differs from the checkpoint's ({ckpt_path}) "
                              f"in {', '.join(differ)}: {before.get('dataset')} "
                              f"({before.get('kind')}) from {before.get('location')} before, "
                              f"{data_record.get('dataset')} ({data_record.get('kind')}) from "
                              f"{data_record.get('location')} now")
    history = saved["trainer"]["history"] if saved else []
    wall_before = saved["extra"].get("wall_seconds", 0.0) if saved else 0.0
    checkpointer = Checkpointer(ckpt_path, config, {"data": data_record}, wall_before)
    trainer = build_trainer(cfg, X_train, X_val, saved["network"] if saved else None,
                            [JsonLinesLog(out / "log.jsonl", history), checkpointer, *callbacks])
    network = trainer.network
    if saved:
        trainer.restore(saved["trainer"])
        echo(f"resuming {ckpt_path} at phase {trainer.position.phase + 1}, "
             f"after epoch {trainer.position.epoch + 1}")
    trainer.run()
    train_seconds = checkpointer.wall_seconds()

    test = reconstruction_metrics(backend, network, ds.test_images, cfg.noise,
                                  noise_type=cfg.noise_type)
    baseline = mean_image_relative_ce(X_train, ds.test_images)
    metrics = {
        "config": config,
        "data": data_record,
        "schedule": [p.to_dict() for p in phases],
        "eval_decoder": eval_decoder,
        "budget_units": budget_units(phases),
        "budget_units_spent": trainer.units_spent,
        "test_relative_ce": test["relative_ce"],
        "test_relative_ce_clean": test["relative_ce_clean"],
        "test_ce": test["ce"],
        "test_entropy": test["entropy"],
        "mean_image_relative_ce": baseline,
        "phases": trainer.phase_log,
        "history": trainer.history,
        "wall_seconds": train_seconds,
    }
    checkpoint.save(out / "model.h5", network, config, extra={k: v for k, v in metrics.items()
                                                              if k != "history"})
    write_json_atomic(out / "metrics.json", metrics)
    return metrics
