"""Cross-validated hyper-parameter search, run as cells on Dask.

The paper chose its hyper-parameters by 10-fold (MNIST) or 5-fold (CIFAR) stratified
cross-validation over :data:`PAPER_GRID`, a second level of cross-validation separate from
the early stopping inside each run. A *configuration* is one point of the grid; a *trial* is
one configuration on one fold, and is one cell of :mod:`medalpy.experiments.cells` (step
:func:`medalpy.search.steps.fold`): it is written atomically to
``OUT/cells/r{rung}/{config}/fold{f}.json`` as soon as it finishes, a rerun skips it, and one
that raised is recorded with its error.

Nested folds: the pool of images is cut into ``folds`` stratified folds; trial ``f`` scores
on fold ``f``, keeps its best parameters (and stops early) on fold ``f + 1`` (mod ``folds``)
and trains on the rest, so no image that chose a trial's parameters also scores it.

Successive halving (``eta``): the search runs in ``rungs``; only the best
``max(1, n // eta)`` configurations of a rung, ranked by their mean objective over its folds,
go on to the next. A rung's size comes from ``plan`` (one table per rung: ``subset``,
``eval_folds``, ``epochs_layer1``, ``budget``, ``classifier_epochs``, each optional), or,
without one, from scaling the epochs by ``eta ** (r - rungs + 1)`` (at least 1 each; the last
rung gets the full epochs). Without ``eta`` there is one rung. How well the ranking held from
rung to rung is reported as Spearman's rank correlation between consecutive rungs.

The ``pretrain`` objective of a trial is the mean, over the schedules in ``methods``, of the
reconstruction cross-entropy of the scoring fold; the schedules share their layer 1.

Outputs: ``trials.csv`` and ``trials.md`` (one row per configuration and rung: mean, standard
deviation, min and max over folds, errors), ``best.toml`` (a TrainConfig file that
``medalpy train --config`` accepts), ``search.json`` (the search's settings, checked on
resume), ``results.json`` and, when matplotlib is installed, ``search.png``.
"""
from medalpy.search.report import best_config, markdown, write_outputs
from medalpy.search.runner import rank_agreement, run_search, summarise, survivors, trial_cells
from medalpy.search.spec import (
    OBJECTIVES,
    PAPER_GRID,
    PLAN_KEYS,
    SPACE,
    STEP,
    SearchSpec,
    config_id,
    configurations,
    epochs_used,
    read_grid,
    rung_epochs,
    rung_settings,
)

__all__ = ["OBJECTIVES", "PAPER_GRID", "PLAN_KEYS", "SPACE", "STEP", "SearchSpec",
           "best_config", "config_id", "configurations", "markdown", "rank_agreement",
           "epochs_used", "read_grid", "rung_epochs", "rung_settings", "run_search", "summarise",
           "survivors", "trial_cells", "write_outputs"]
