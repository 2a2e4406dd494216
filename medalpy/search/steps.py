"""The step a search trial runs: one hyper-parameter configuration on one cross-validation fold.

``fold(params, work_dir, out_dir)`` follows the cell contract of
:mod:`medalpy.experiments.cells`. It is a pure function of its parameters: the class-balanced
pool, the stratified folds, the initialisation and the noise all come from seeds in
``params``, so a trial computes the same numbers on whichever worker runs it. The dataset is
read on the worker (``data_dir``: a directory every worker sees) and cached per process.

Nested folds (:func:`fold_rows`): trial ``f`` trains on every fold but ``f`` and ``f + 1``,
keeps its best parameters (and stops early) on fold ``f + 1`` (mod k), and is scored on fold
``f``, which chose nothing.

Objectives (lower is better):

* ``pretrain``: layer 1 is trained once, then every schedule of ``methods`` continues from it
  (as the experiments share layer 1); each schedule's score is the mean reconstruction
  cross-entropy of the scoring fold's images from their masked copies (nats per image,
  through the schedule's evaluation decoder); the objective is the mean over schedules.
  Relative forms (minus the images' entropy) are recorded too.
* ``classify``: the first schedule's encoders, then a classifier (a softmax layer on them,
  all trained with the trial's optimiser settings) that keeps its best parameters on the
  stopping fold; the objective is its error on the scoring fold.
* ``classifier``: no pretraining: a classifier from the encoders of the model file
  ``encoders``, trained with the trial's settings (the classifier's own search); the
  objective is its error on the scoring fold.
"""

import copy
from pathlib import Path

import numpy as np


def fold_rows(labels, params):
    """(train_rows, stop_rows, score_rows) of trial ``params["fold"]``: disjoint index arrays
    into ``labels`` (the dataset's training labels)."""
    from medalpy.data.splits import balanced_subset, stratified_kfold

    subset = params.get("subset")
    if subset is not None and subset < len(labels):
        pool = balanced_subset(labels, subset, params["data_seed"])
    else:
        pool = np.arange(len(labels), dtype=np.int64)
    k, f = params["folds"], params["fold"]
    folds = stratified_kfold(labels[pool], k, params["data_seed"])
    score, stop = folds[f][1], folds[(f + 1) % k][1]
    train = np.setdiff1d(np.arange(len(pool)), np.concatenate([score, stop]))
    return pool[train], pool[stop], pool[score]


def fold(params, work_dir, out_dir):
    """Train configuration ``params`` on one fold; returns the objective and its companions."""
    from medalpy import checkpoint
    from medalpy.evaluation import reconstruction_metrics
    from medalpy.experiments.steps import (
        _dataset,
        _identity,
        continue_from_layer1,
        saved_by,
        train_layer1,
    )
    from medalpy.kernels import get_backend
    from medalpy.network import Network
    from medalpy.trainer import Hyper

    ds = _dataset(params["dataset"], params.get("data_dir"))
    train_rows, stop_rows, score_rows = fold_rows(ds.train_labels, params)
    X_train, X_stop = ds.train_images[train_rows], ds.train_images[stop_rows]
    X_score = ds.train_images[score_rows]
    backend = get_backend(params["backend"])
    if params["objective"] == "classifier":
        return _classifier(params, backend, ds, train_rows, stop_rows, score_rows)
    widths = [params["units"]] * params["n_layers"]
    hyper = Hyper.from_settings(params)
    # Each stage's network and result is kept in work_dir while the trial runs (model
    # files are not in git), so a trial interrupted on this machine continues from its last
    # finished stage, and from the last epoch of the stage it was in (run_resumable): the
    # same result, bit for bit. The files go when the trial ends.
    work = Path(work_dir)
    identity = _identity(params, ds)
    stages = [work / "stage-layer1.h5"] + [work / f"stage-{m}.h5" for m in params["methods"]]
    kept = saved_by(stages[0], identity)
    if kept is not None:
        net, layer1_kept = kept["network"], kept["extra"]["kept_epoch"]
    else:
        layer1 = train_layer1(backend, Network(ds.n_features, params.get("dtype", "float32")),
                              hyper, X_train, X_stop, widths, params["seed"],
                              params["epochs_layer1"], checkpoint_path=work / "checkpoint.h5",
                              identity=identity)
        layer1_kept, net = layer1.phase_log[0]["kept_epoch"], layer1.network
        checkpoint.save(stages[0], net, identity, extra={"kept_epoch": layer1_kept})
    methods, first = {}, None
    for method, stage in zip(params["methods"], stages[1:]):
        kept = saved_by(stage, identity)
        if kept is not None:
            net_m, methods[method] = kept["network"], kept["extra"]
            first = first or net_m
            continue
        fraction = params.get("fraction") if method == "hybrid" else None
        trainer, eval_decoder = continue_from_layer1(
            backend, copy.deepcopy(net), hyper, X_train, X_stop, widths, params["seed"],
            method, params["epochs_layer1"], params["budget"], fraction,
            checkpoint_path=work / "checkpoint.h5", identity=identity)
        net_m = trainer.network
        rec = reconstruction_metrics(backend, net_m, X_score, params["noise"],
                                     noise_type=params.get("noise_type", "masking"))
        methods[method] = {"val_ce": rec["ce"], "val_relative_ce": rec["relative_ce"],
                           "eval_decoder": eval_decoder,
                           "kept_epochs": [s["kept_epoch"] for s in trainer.phase_log]}
        checkpoint.save(stage, net_m, identity, extra=methods[method])
        first = first or net_m
    result = {"methods": methods,
              "val_ce": float(np.mean([m["val_ce"] for m in methods.values()])),
              "val_relative_ce": float(np.mean([m["val_relative_ce"]
                                                for m in methods.values()])),
              "layer1_kept_epoch": layer1_kept,
              "n_train": int(len(train_rows)), "n_stop": int(len(stop_rows)),
              "n_score": int(len(score_rows)), "data": ds.source["kind"]}
    if params["objective"] == "classify":
        result.update(_classify(params, backend, ds, first, train_rows, stop_rows, score_rows))
    result["objective"] = result["val_error" if params["objective"] == "classify" else "val_ce"]
    for stage in stages:
        stage.unlink(missing_ok=True)
    return result


def classifier_settings(params):
    """The classifier's settings of a trial: its optimiser settings, its rung's epochs."""
    return {"epochs": params["classifier_epochs"],
            "patience": params.get("patience") or params["classifier_epochs"],
            "lr": params["lr"], "momentum": params["momentum"],
            "weight_decay": params["weight_decay"], "batch_size": params["batch_size"],
            "normalise_gradients": params["normalise_gradients"]}


def _classify(params, backend, ds, encoders, train_rows, stop_rows, score_rows):
    from medalpy.supervised import train_classifier

    X, y = ds.train_images, ds.train_labels
    clf = train_classifier(backend, encoders, X[train_rows], y[train_rows], X[stop_rows],
                           y[stop_rows], X[score_rows], y[score_rows], ds.n_classes,
                           params["seed"], **classifier_settings(params))
    return {"val_error": clf["test_error"], "stop_error": clf["val_error"],
            "classifier_epochs_run": clf["epochs_run"], "kept_epoch": clf["kept_epoch"]}


def _classifier(params, backend, ds, train_rows, stop_rows, score_rows):
    from medalpy import checkpoint
    from medalpy.experiments.steps import weights_hash

    encoders = checkpoint.load(params["encoders"])["network"]
    result = _classify(params, backend, ds, encoders, train_rows, stop_rows, score_rows)
    return {**result, "objective": result["val_error"], "encoders_sha": weights_hash(encoders),
            "n_train": int(len(train_rows)), "n_stop": int(len(stop_rows)),
            "n_score": int(len(score_rows)), "data": ds.source["kind"]}
