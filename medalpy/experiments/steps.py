"""The step functions experiment cells run: layer 1, the rest of a schedule, a classifier.

Each takes ``(params, work_dir, out_dir)``, reads what it needs from disk (the dataset, the
models of the cells it depends on), writes its own models into ``work_dir`` and returns a
JSON-serialisable dict. Everything is a pure function of the parameters and seeds, so a cell
computes the same result wherever it runs.

Within split ``s`` (seed ``base_seed + s``) the training images are cut once into a training
part and a validation part; layer 1 is trained once on them and shared by every schedule the
experiment compares, exactly as each schedule's own phase 1 would have trained it (same
seed, same phase index).
"""

import functools
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from medalpy import __version__


@functools.lru_cache(maxsize=2)
def _dataset(name, data_dir):
    from medalpy.data import load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sample fallback is recorded in ds.source
        return load(name, data_dir)


def weights_hash(network):
    """A short SHA-256 of every parameter's name and bytes: which weights a cell used."""
    h = hashlib.sha256()
    for name, array in sorted(network.parameters().items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


def needed_model(out_dir, key, params, step):
    """The network another cell (``key``, run by ``step`` with ``params``) saved; when its
    file is absent (a fresh clone holds only the cells' JSON records), the cell's step is run
    again here from its seed first. Returns ``(network, recomputed)``."""
    from medalpy import checkpoint
    from medalpy.experiments.cells import work_dir

    path = Path(out_dir) / "cells" / key / "model.h5"
    recomputed = not path.exists()
    if recomputed:
        step(params, work_dir(out_dir, key), out_dir)
    return checkpoint.load(path)["network"], recomputed


def split_rows(params):
    """(train_rows, val_rows) of the split: stratified, then a class-balanced pretraining set."""
    from medalpy.data.splits import balanced_subset, train_val_split

    ds = _dataset(params["dataset"], params.get("data_dir"))
    train_rows, val_rows = train_val_split(ds.train_labels, params["n_val"], params["seed"])
    size = params.get("pretrain_size")
    if size is not None and size < len(train_rows):
        pick = balanced_subset(ds.train_labels[train_rows], size, params["seed"])
        train_rows = train_rows[np.sort(pick)]
    return ds, train_rows, val_rows


def _schedule(params, finetune):
    from medalpy.schedules import build_schedule

    return build_schedule(params["method"], len(params["layers"]), params["epochs_layer1"],
                          params["budget"], params.get("fraction"),
                          finetune_epochs=params["finetune_epochs"] if finetune else 0,
                          ablation_budget=params.get("ablation_budget", "updates"),
                          lower_lr=params.get("lower_lr"))


def _hyper(params):
    from medalpy.trainer import Hyper

    return Hyper.from_settings(params, patience=None)


def _trainer(params, network, phases, ds, train_rows, val_rows):
    from medalpy.kernels import get_backend
    from medalpy.trainer import Trainer

    return Trainer(get_backend(params["backend"]), network, phases, _hyper(params),
                   ds.train_images[train_rows], ds.train_images[val_rows], params["layers"],
                   params["seed"])


def run_resumable(trainer, path=None, identity=None):
    """Run ``trainer`` to the end of its schedule; returns it. With ``path``, its state is
    saved there after every epoch, and a state found there (the cell was interrupted, on
    this machine) is where it continues, bit for bit as if it had not stopped; the file
    goes when the run ends. A state saved for another ``identity`` (a JSON-able record of
    what the run is: the cell's settings and data), or one that cannot be read, is
    discarded and the run starts afresh. Afterwards ``trainer.network`` is the trained
    network (the restored one when it continued), not necessarily the object it was built
    on."""
    if path is None:
        trainer.run()
        return trainer
    from medalpy.callbacks import Checkpointer

    path = Path(path)
    saved = saved_by(path, identity)
    if saved is not None and "trainer" in saved:
        trainer.network = saved["network"]
        trainer.restore(saved["trainer"])
    trainer.callbacks.append(Checkpointer(path, identity or {}))
    trainer.run()
    path.unlink(missing_ok=True)
    return trainer


def saved_by(path, identity):
    """``checkpoint.load(path)`` when that file is there, readable, and was saved by a run of
    ``identity`` (its ``config``); None otherwise (a damaged file: a crash of the machine
    while it was written)."""
    from medalpy import checkpoint
    from medalpy.errors import CheckpointError

    if not Path(path).exists():
        return None
    try:
        saved = checkpoint.load(path)
    except CheckpointError:
        return None
    return saved if saved["config"] == json.loads(json.dumps(identity or {})) else None


def _identity(params, ds):
    """What a cell's training is, for :func:`run_resumable`: its settings and its data."""
    return {"params": params, "data": ds.source, "medalpy": __version__}


def train_layer1(backend, network, hyper, X_train, X_val, widths, seed, epochs,
                 checkpoint_path=None, identity=None):
    """Phase 1 of every schedule on an empty ``network``; its decoder is kept in the mirror
    (for schedules evaluated through it) and the network is left without a head. Returns
    the trainer; ``trainer.network`` is the trained network (:func:`run_resumable`, which
    ``checkpoint_path`` is for)."""
    from medalpy.schedules import build_schedule
    from medalpy.trainer import Trainer

    phases, _ = build_schedule("stacked", 1, epochs, 0)
    trainer = Trainer(backend, network, phases, hyper, X_train, X_val, widths, seed)
    run_resumable(trainer, checkpoint_path, identity)
    trainer.network.discard_head()  # each schedule attaches its own
    return trainer


def continue_from_layer1(backend, network, hyper, X_train, X_val, widths, seed, method,
                         epochs_layer1, budget, fraction=None, ablation_budget="updates",
                         lower_lr=None, checkpoint_path=None, identity=None):
    """The rest of schedule ``method`` (full tuning excluded) on a network from
    :func:`train_layer1`, exactly as the schedule's own run would continue after its phase 1.

    Returns
    -------
    (trainer, eval_decoder); ``trainer.network`` is the trained network
    (:func:`run_resumable`, which ``checkpoint_path`` is for).
    """
    from medalpy.schedules import build_schedule
    from medalpy.trainer import Trainer

    phases, eval_decoder = build_schedule(method, len(widths), epochs_layer1, budget, fraction,
                                          ablation_budget=ablation_budget, lower_lr=lower_lr)
    if eval_decoder != "mirror":
        network.discard_mirror()  # only the mirror needs the kept layer-1 decoder
    trainer = Trainer(backend, network, phases, hyper, X_train, X_val, widths, seed)
    trainer.start_at(1)
    run_resumable(trainer, checkpoint_path, identity)
    return trainer, eval_decoder


def layer1(params, work_dir, out_dir):
    """Phase 1 of every schedule (its decoder kept, for schedules that evaluate the mirror)."""
    from medalpy import checkpoint
    from medalpy.kernels import get_backend
    from medalpy.network import Network

    ds, train_rows, val_rows = split_rows(params)
    net = Network(ds.n_features, params.get("dtype", "float32"))
    trainer = train_layer1(get_backend(params["backend"]), net, _hyper(params),
                           ds.train_images[train_rows], ds.train_images[val_rows],
                           params["layers"], params["seed"], params["epochs_layer1"],
                           checkpoint_path=Path(work_dir) / "checkpoint.h5",
                           identity=_identity(params, ds))
    net = trainer.network
    checkpoint.save(Path(work_dir) / "model.h5", net, params)
    return {"val_loss": trainer.phase_log[-1]["best_val"], "phases": trainer.phase_log,
            "weights_sha": weights_hash(net),
            "data": ds.source["kind"], "n_train": int(len(train_rows)),
            "n_val": int(len(val_rows))}


def pretrain(params, work_dir, out_dir):
    """The rest of one schedule after the shared layer 1.

    Returns test relative cross-entropies (corrupted and clean input) of the pretrained
    network; its full tuning is a cell of its own (:func:`tune`).
    """
    from medalpy import checkpoint
    from medalpy.evaluation import reconstruction_metrics
    from medalpy.kernels import get_backend
    from medalpy.schedules import budget_units

    ds, train_rows, val_rows = split_rows(params)
    net, recomputed = needed_model(out_dir, params["layer1"], params, layer1)
    layer1_sha = weights_hash(net)
    backend = get_backend(params["backend"])
    phases, _ = _schedule(params, False)
    trainer, eval_decoder = continue_from_layer1(
        backend, net, _hyper(params), ds.train_images[train_rows], ds.train_images[val_rows],
        params["layers"], params["seed"], params["method"], params["epochs_layer1"],
        params["budget"], params.get("fraction"), params.get("ablation_budget", "updates"),
        params.get("lower_lr"), checkpoint_path=Path(work_dir) / "checkpoint.h5",
        identity=_identity(params, ds))
    net = trainer.network
    test = reconstruction_metrics(backend, net, ds.test_images, params["noise"],
                                  noise_type=params.get("noise_type", "masking"))
    checkpoint.save(Path(work_dir) / "model.h5", net, params)
    return {"eval_decoder": eval_decoder, "budget_units": budget_units(phases),
            "budget_units_spent": trainer.units_spent,
            "relative_ce": test["relative_ce"], "relative_ce_clean": test["relative_ce_clean"],
            "phases": trainer.phase_log, "layer1_sha": layer1_sha,
            "layer1_recomputed": recomputed, "weights_sha": weights_hash(net)}


def tune(params, work_dir, out_dir):
    """Full tuning of a pretrained cell's network (``params["pretrained"]``, recomputed from
    its seed when its model file is absent): the schedule's last phase, ``finetune_epochs``
    epochs of every layer. A cell of its own so that no cell runs much over an hour at the
    paper's scale. Returns the tuned network's test relative cross-entropies."""
    from medalpy import checkpoint
    from medalpy.evaluation import reconstruction_metrics
    from medalpy.kernels import get_backend

    ds, train_rows, val_rows = split_rows(params)
    pretrained = params["pretrained_params"]
    net, recomputed = needed_model(out_dir, params["pretrained"], pretrained, pretrain)
    pretrained_sha = weights_hash(net)
    phases, _ = _schedule(params, True)
    tuner = _trainer(params, net, phases, ds, train_rows, val_rows)
    tuner.start_at(len(phases) - 1)
    net = run_resumable(tuner, Path(work_dir) / "checkpoint.h5", _identity(params, ds)).network
    tuned = reconstruction_metrics(get_backend(params["backend"]), net, ds.test_images,
                                   params["noise"],
                                   noise_type=params.get("noise_type", "masking"))
    checkpoint.save(Path(work_dir) / "model.h5", net, params)
    return {"tuned_relative_ce": tuned["relative_ce"],
            "tuned_relative_ce_clean": tuned["relative_ce_clean"], "phases": tuner.phase_log,
            "pretrained_sha": pretrained_sha, "pretrained_recomputed": recomputed,
            "weights_sha": weights_hash(net)}


def classify(params, work_dir, out_dir):
    """A classifier from a pretrained cell's encoders (or random ones) on a balanced subset."""
    from medalpy.data.splits import balanced_subset
    from medalpy.kernels import get_backend
    from medalpy.supervised import random_encoders, train_classifier

    ds, pool, val_rows = split_rows({**params, "pretrain_size": None})
    labels = ds.train_labels
    size = params["train_size"]
    rows = pool if size >= len(pool) else pool[np.sort(
        balanced_subset(labels[pool], size, params["seed"]))]
    # Validation: a fifth of the training size (at least 100), class-balanced, from the
    # split's (stratified) validation part; all of it when that is not larger.
    n_val = min(max(size // 5, 100), len(val_rows))
    per_class = np.bincount(labels[val_rows]).min() * ds.n_classes
    vrows = val_rows if n_val >= len(val_rows) else val_rows[np.sort(balanced_subset(
        labels[val_rows], min(n_val, per_class), params["seed"]))]
    recomputed = False
    if params.get("encoders"):
        enc, recomputed = needed_model(out_dir, params["encoders"], params["encoders_params"],
                                       pretrain)
    else:
        enc = random_encoders(ds.n_features, params["layers"], params["seed"])
    result = train_classifier(
        get_backend(params["backend"]), enc, ds.train_images[rows], labels[rows],
        ds.train_images[vrows], labels[vrows], ds.test_images, ds.test_labels, ds.n_classes,
        params["seed"], **params["classifier"])
    return {"test_error": result["test_error"], "val_error": result["val_error"],
            "kept_epoch": result["kept_epoch"], "epochs_run": result["epochs_run"],
            "encoders_sha": weights_hash(enc), "encoders_recomputed": recomputed, "n_train": int(len(rows)),
            "n_val": int(len(vrows))}
