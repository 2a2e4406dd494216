"""The step a search trial runs: one hyper-parameter configuration on one cross-validation fold.

``fold(params, work_dir, out_dir)`` follows the cell contract of
:mod:`medalpy.experiments.cells`. It is a pure function of its parameters: the class-balanced
pool, the stratified folds, the initialisation and the noise all come from seeds in
``params``, so a trial computes the same numbers on whichever worker runs it. The dataset is
read on the worker (``data_dir``: a directory every worker sees) and cached per process.

Objectives (lower is better):

* ``pretrain``: the DAE schedule is trained on the fold's training part, early-stopped on the
  held-out fold (``patience``); the objective is the mean reconstruction cross-entropy of the
  held-out fold's images from their masked copies (``val_ce``, nats per image, through the
  schedule's evaluation decoder). Its relative form (minus the images' entropy) is recorded.
* ``classify``: the same pretraining, then a classifier (the encoders plus a softmax layer,
  all trained with the trial's optimiser settings) early-stopped on the held-out fold; the
  objective is its error on that fold (``val_error``).
"""

import functools
import warnings

import numpy as np


@functools.lru_cache(maxsize=2)
def _dataset(name, data_dir):
    from medalpy.data import load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a sample fallback is recorded in ds.source
        return load(name, data_dir)


def fold_rows(ds, params):
    """(train_rows, val_rows) of fold ``params["fold"]`` of the (sub)set the search uses."""
    from medalpy.data.splits import balanced_subset, stratified_kfold

    labels = ds.train_labels
    subset = params.get("subset")
    if subset is not None and subset < len(labels):
        pool = balanced_subset(labels, subset, params["data_seed"])
    else:
        pool = np.arange(len(labels), dtype=np.int64)
    train, val = stratified_kfold(labels[pool], params["folds"], params["data_seed"])[
        params["fold"]]
    return pool[train], pool[val]


def fold(params, work_dir, out_dir):
    """Train configuration ``params`` on one fold; returns the objective and its companions."""
    from medalpy.evaluation import reconstruction_metrics
    from medalpy.kernels import get_backend
    from medalpy.network import Network
    from medalpy.schedules import build_schedule
    from medalpy.supervised import train_classifier
    from medalpy.trainer import Hyper, Trainer

    ds = _dataset(params["dataset"], params.get("data_dir"))
    train_rows, val_rows = fold_rows(ds, params)
    X_train, X_val = ds.train_images[train_rows], ds.train_images[val_rows]
    backend = get_backend(params["backend"])
    widths = [params["units"]] * params["n_layers"]
    phases, eval_decoder = build_schedule(params["method"], params["n_layers"],
                                          params["epochs_layer1"], params["budget"],
                                          params.get("fraction"))
    hyper = Hyper(lr=params["lr"], momentum=params["momentum"],
                  weight_decay=params["weight_decay"],
                  normalise_gradients=params["normalise_gradients"],
                  batch_size=params["batch_size"], noise=params["noise"],
                  patience=params.get("patience"))
    net = Network(ds.n_features, params.get("dtype", "float32"))
    trainer = Trainer(backend, net, phases, hyper, X_train, X_val, widths, params["seed"])
    trainer.run()
    rec = reconstruction_metrics(backend, net, X_val, params["noise"])
    result = {"val_ce": rec["ce"], "val_relative_ce": rec["relative_ce"],
              "eval_decoder": eval_decoder, "epochs_run": len(trainer.history),
              "n_train": int(len(train_rows)), "n_val": int(len(val_rows)),
              "data": ds.source["kind"]}
    if params["objective"] == "classify":
        y = ds.train_labels
        clf = train_classifier(
            backend, net, X_train, y[train_rows], X_val, y[val_rows], X_val, y[val_rows],
            ds.n_classes, params["seed"], epochs=params["classifier_epochs"],
            patience=params.get("patience") or params["classifier_epochs"], lr=params["lr"],
            momentum=params["momentum"], weight_decay=params["weight_decay"],
            batch_size=params["batch_size"], normalise_gradients=params["normalise_gradients"])
        result.update(val_error=clf["val_error"], classifier_epochs_run=clf["epochs_run"])
    result["objective"] = result["val_error" if params["objective"] == "classify" else "val_ce"]
    return result
