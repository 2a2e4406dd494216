"""One pretraining run, configured, resumable and recorded: what ``medalpy train`` does.

Configuration precedence, lowest first: built-in defaults, the ``scale`` (sizes and epochs),
the ``preset`` (optimiser conventions), a TOML ``--config`` file, explicit options. Every key
is checked: unknown names and out-of-range values are errors that name the key.
"""

import copy
import dataclasses
import tomllib
import warnings
from dataclasses import field
from pathlib import Path

import numpy as np

from medalpy import settings
from medalpy.atomic import write_json_atomic
from medalpy.corruption import check_level
from medalpy.errors import ConfigError, TrainingDiverged
from medalpy.protocols import protocol_for

#: Sizes and epochs. ``quick`` runs in seconds on the bundled sample; ``medium`` is the
#: paper's MNIST network with a fifth of its epochs; ``paper`` is the dataset's own protocol
#: (:mod:`medalpy.protocols`, full tuning included).
SCALES = {
    "quick": {"layers": [500, 500], "epochs_layer1": 10, "budget": 10, "finetune_epochs": 0},
    "medium": {"layers": [1000, 1000], "epochs_layer1": 10, "budget": 16, "finetune_epochs": 0},
    "paper": None,
}


def default_preset(scale, dataset):
    """The preset a run takes when none is given: at the ``paper`` scale the one the
    dataset's protocol names (settings searched as the paper searched them), else MEDAL's."""
    if scale == "paper" and protocol_for(dataset).preset:
        return protocol_for(dataset).preset
    return settings.TRAIN_SETTINGS["preset"].default


def scale_settings(scale, dataset):
    """The sizes and epochs a scale sets for a dataset."""
    if scale not in SCALES:
        raise ConfigError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    return protocol_for(dataset).scale() if scale == "paper" else dict(SCALES[scale])


#: Optimiser settings by name. ``medal``: MEDAL's defaults, which the paper ran on (not the
#: settings the paper chose: it searched them). A searched preset records where it came from
#: in :data:`PRESET_NOTES`, and a dataset's protocol may name it for ``--scale paper``.
PRESETS = {
    "medal": {"batch_size": 20, "momentum": 0.9, "weight_decay": 1e-3,
              "normalise_gradients": True, "init": "medal"},
    # The winner of benchmarks/searches/mnist-pretrain.toml (docs/search.md): the paper's grid
    # plus lr 0.05 and normGrad on/off, 192 configurations, nested 10-fold cross-validation on
    # full MNIST, successive halving over four rungs, about 18 core-hours.
    "paper-mnist": {"lr": 0.01, "batch_size": 10, "momentum": 0.9, "weight_decay": 1e-5,
                    "normalise_gradients": False, "init": "medal"},
}


def _train_config():
    """The TrainConfig dataclass, one field per setting of :data:`medalpy.settings.TRAIN`."""
    fields = [(s.name, object, field(default_factory=lambda s=s: copy.deepcopy(s.default)))
              for s in settings.TRAIN]
    # Per-phase settings, keyed by phase kind or name: ``{"finetune": {"lr": 0.01}}``; in
    # TOML a table such as ``[phase_settings.finetune]`` with ``lr = 0.01``.
    fields.append(("phase_settings", dict, field(default_factory=dict)))
    return dataclasses.make_dataclass(
        "TrainConfig", fields, namespace={
            "__doc__": "Every setting of a pretraining run (medalpy.settings.TRAIN); the "
                       "TOML keys and command-line options use these names.",
            "__module__": __name__, "to_dict": lambda self: dataclasses.asdict(self)})


TrainConfig = _train_config()
FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def _need(ok, message):
    if not ok:
        raise ConfigError(message)


def _check(cfg):
    from medalpy.trainer import Hyper

    need = _need
    values = cfg.to_dict()
    settings.check(settings.TRAIN_SETTINGS,
                   {k: v for k, v in values.items() if k != "phase_settings"})
    check_level(cfg.noise_type, cfg.noise)
    need(cfg.init_from is None or Path(cfg.init_from).is_file(),
         f"init_from: no such model file {cfg.init_from}")
    if cfg.val_size == 0:
        need(cfg.keep == "last" and cfg.patience is None,
             "val_size 0 (no validation images) needs keep = last and no patience: without "
             "validation no phase can choose its best epoch or stop early")
    need(cfg.budget >= 1 or len(cfg.layers) == 1,
         f"budget must be at least 1 to train {len(cfg.layers)} layers, got {cfg.budget}")
    if cfg.method == "hybrid":
        need(cfg.fraction is not None, "the hybrid method needs a fraction in [0, 1]")
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
        settings.check(settings.TRAIN_SETTINGS, overrides, where)
        check_level(overrides.get("noise_type", cfg.noise_type),
                    overrides.get("noise", cfg.noise), f"{where}noise")


def schedule(cfg):
    """The phase list and evaluation decoder of a configuration."""
    from medalpy.schedules import build_schedule

    return build_schedule(cfg.method, len(cfg.layers), cfg.epochs_layer1, cfg.budget,
                          cfg.fraction, cfg.eval_decoder, cfg.fit_decoder_epochs,
                          cfg.finetune_epochs, cfg.ablation_budget, cfg.lower_lr)


def load_toml(path, what="config file"):
    """The table of a TOML file; a ConfigError naming the file when it cannot be read or is
    not valid TOML (which is UTF-8)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def read_toml(path):
    """The settings of a TOML file, with unknown keys refused (naming the file and key)."""
    path = Path(path)
    values = load_toml(path)
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
    chosen = {name: options.get(name, from_file.get(name, settings.TRAIN_SETTINGS[name].default))
              for name in ("scale", "dataset")}
    for name, value in chosen.items():  # these choose other defaults: check them first
        settings.TRAIN_SETTINGS[name].check(value)
    protocol = protocol_for(chosen["dataset"])
    chosen["preset"] = options.get("preset", from_file.get("preset", default_preset(
        chosen["scale"], chosen["dataset"])))
    settings.TRAIN_SETTINGS["preset"].check(chosen["preset"])
    values = {"noise": protocol.noise, **scale_settings(chosen["scale"], chosen["dataset"]),
              **PRESETS[chosen["preset"]], **from_file, **options, **chosen}
    if isinstance(values.get("layers"), str):
        values["layers"] = parse_layers(values["layers"])
    cfg = TrainConfig(**values)
    if isinstance(cfg.layers, tuple):
        cfg.layers = list(cfg.layers)
    _check(cfg)
    return cfg


def parse_layers(text):
    """``"1000,1000"`` -> ``[1000, 1000]``; every part must be a positive integer."""
    parts = str(text).split(",")
    try:
        widths = [int(part) for part in parts]
    except ValueError:
        raise ConfigError(f"layers must be comma-separated integers, got {text!r}") from None
    if min(widths) < 1:
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
    if n_val == 0:
        train_rows, val_rows = np.arange(N), np.arange(0)
    else:
        train_rows, val_rows = train_val_split(ds.train_labels, n_val, cfg.seed)
    if cfg.train_size is not None:
        if cfg.train_size > len(train_rows):
            raise ConfigError(f"train_size {cfg.train_size} exceeds the {len(train_rows)} "
                              "training images left after the validation split")
        pick = balanced_subset(ds.train_labels[train_rows], cfg.train_size, cfg.seed)
        train_rows = train_rows[np.sort(pick)]
    return ds, train_rows, val_rows, notes


def build_trainer(cfg, X_train, X_val, network=None, callbacks=(), initial=None):
    """The trainer of a configuration's schedule on in-memory images: what ``medalpy train``
    runs (it adds the data, checkpoints, logs and metrics around it).

    Parameters
    ----------
    cfg : TrainConfig.
    X_train, X_val : (N, D) uint8 images or floats in [0, 1]; the validation images choose
        each phase's best parameters.
    network : the :class:`medalpy.network.Network` to train (default: a new, empty one).
    callbacks : trainer callbacks.
    initial : optional {array name: array} the first phase's new layers start from (see
        :class:`medalpy.trainer.Trainer`); default: those of ``cfg.init_from``, if set.

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
                   cfg.layers, cfg.seed, callbacks,
                   initial=initial if initial is not None else initial_arrays(cfg))


def initial_arrays(cfg):
    """The arrays of the ``init_from`` model file ({name: array}), or None."""
    if cfg.init_from is None:
        return None
    from medalpy import checkpoint

    saved = checkpoint.load(cfg.init_from)
    return {name: np.asarray(array, dtype=cfg.dtype)
            for name, array in saved["network"].parameters().items()}


def train(cfg, out_dir, resume=False, callbacks=(), echo=None, overwrite=False):
    """Run (or resume) one pretraining run and write ``model.h5`` and ``metrics.json``.

    The output folder is claimed first (:func:`medalpy.outputs.claim`): a folder holding
    another command's results or a finished run is refused unless ``overwrite``, an
    unfinished run is continued only with ``resume``, and a second run into the same folder
    stops at once. See :func:`_train` for the parameters and what is returned.
    """
    from medalpy import outputs

    with outputs.claim(out_dir, "train", resume=resume, overwrite=overwrite):
        return _train(cfg, out_dir, resume, callbacks, echo)


def _train(cfg, out_dir, resume=False, callbacks=(), echo=None):
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
    try:
        trainer.run()
    except TrainingDiverged as exc:
        if not ckpt_path.exists():
            raise
        raise TrainingDiverged(f"{exc} (the epochs before it are in {ckpt_path})") from None
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
