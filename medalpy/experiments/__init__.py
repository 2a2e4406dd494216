"""The paper's experiments: cells on disk, summaries, reports and figures.

>>> from medalpy.experiments import run_experiment
>>> run_experiment("fsweep", "mnist", "runs/fsweep", scale="quick")   # doctest: +SKIP
"""

import json
import time

from medalpy import outputs
from medalpy.atomic import write_json_atomic, write_text_atomic
from medalpy.errors import ConfigError
from medalpy.experiments.cells import forget_failed, run_cells
from medalpy.experiments.definitions import (
    DEFAULT_SIZES,
    EXPERIMENTS,
    FRACTIONS,
    SCALES,
    base_params,
    sizes_for,
)
from medalpy.experiments.report import figures, markdown, summarise

__all__ = ["EXPERIMENTS", "SCALES", "run_experiment"]


def run_experiment(name, dataset, out_dir, scale="quick", splits=3, data_dir=None,
                   backend="cpu", seed=0, fractions=None, executor=None, echo=None,
                   preset=None, noise=None, classifier=None, sizes=None,
                   noise_type="masking", overwrite=False):
    """Run (or resume) experiment ``name``; writes results.json, report.md and figures.

    ``fractions``: the stacked fractions of fsweep (default all five) and reproduce
    (default 0 and 1). ``preset``, ``noise`` and ``noise_type`` set the pretraining (see :func:`definitions.base_params`),
    ``classifier`` the classifier's settings, ``sizes`` the training-set sizes of the
    classifiers (default: the scale's).

    The output folder is claimed first (:func:`medalpy.outputs.claim`): rerun into its own
    folder, an experiment resumes; a folder holding another command's results is refused
    unless ``overwrite``, and a second run into the same folder stops at once.

    Returns the results dict written to ``results.json``.
    """
    from medalpy.experiments.steps import _dataset

    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    if splits < 1:
        raise ConfigError(f"splits must be at least 1, got {splits}")
    if fractions is None:
        fractions = (0.0, 1.0) if name == "reproduce" else FRACTIONS
    fractions = tuple(float(f) for f in fractions)
    if not fractions or not all(0.0 <= f <= 1.0 for f in fractions):
        raise ConfigError(f"--fractions must be numbers in [0, 1], got {list(fractions)}")
    if name == "reproduce" and not {0.0, 1.0} <= set(fractions):
        raise ConfigError("--fractions: reproduce needs the fractions 0 (gradual) and 1 "
                          "(stacked)")
    ds = _dataset(dataset, data_dir)
    n_images = ds.train_images.shape[0]
    params = base_params(dataset, scale, data_dir, backend, seed, n_images, preset=preset,
                         noise=noise, classifier=classifier, noise_type=noise_type)
    if sizes is None and name in DEFAULT_SIZES:
        fits = [n for n in DEFAULT_SIZES[name] if n <= n_images - params["n_val"]]
        sizes = fits or None
    sizes = sizes_for(params, n_images, sizes, ds.n_classes)
    preset = params["preset"]
    spec = {"experiment": name, "dataset": dataset, "scale": scale, "splits": splits,
            "seed": seed, "fractions": list(fractions), "sizes": sizes, "preset": preset,
            "noise": params["noise"], "classifier": params["classifier"]}
    if noise_type != "masking":  # (experiments made before other kinds existed resume)
        spec["noise_type"] = noise_type
    with outputs.claim(out_dir, "experiment", overwrite=overwrite) as out:  # settings checked
        return _run(name, out, ds, params, sizes, spec, splits, fractions, executor, echo)


def _classified(out):
    """Whether any classifier cell of the experiment in ``out`` has finished."""
    for path in (out / "cells").glob("*/classify-*.json"):
        if json.loads(path.read_text()).get("status") == "done":
            return True
    return False


def _run(name, out, ds, params, sizes, spec, splits, fractions, executor, echo):
    dataset, scale, seed, preset = spec["dataset"], spec["scale"], spec["seed"], spec["preset"]
    n_images = ds.train_images.shape[0]
    spec_path = out / "experiment.json"
    if spec_path.exists():
        previous = json.loads(spec_path.read_text())
        differ = {k for k in set(previous) | set(spec) if previous.get(k) != spec.get(k)}
        # The classifiers' settings and sizes may still change while no classifier has
        # finished (the settings are chosen on the experiment's own pretrained encoders:
        # docs/reproduction.md).
        if differ and differ <= {"classifier", "sizes"} and not _classified(out):
            (echo or print)(f"classifier settings changed before any classifier ran: "
                            f"{previous['classifier']}, sizes {previous['sizes']} -> "
                            f"{spec['classifier']}, sizes {spec['sizes']}")
            write_json_atomic(spec_path, spec)
        elif differ:
            raise ConfigError(f"{out} holds a different experiment ({previous}); choose "
                              "another --out")
    else:
        write_json_atomic(spec_path, spec)
    build, _ = EXPERIMENTS[name]
    cells = build(params, splits, fractions=fractions, sizes=sizes)
    t0 = time.perf_counter()
    if n := forget_failed(out, cells):
        (echo or print)(f"running again {n} cell(s) that failed or were skipped before")
    results = run_cells(cells, out, executor=executor, echo=echo)
    summary = summarise(name, results, splits, fractions=fractions, sizes=sizes)
    failed = {k: r["error"] for k, r in results.items() if r.get("status") != "done"}
    record = {**spec, "data": ds.source, "params": params, "summary": summary,
              "failed_cells": failed,
              "cell_seconds": sum(r.get("seconds", 0.0) for r in results.values()),
              "wall_seconds_this_session": time.perf_counter() - t0,
              "cells": results}
    write_json_atomic(out / "results.json", record)
    opt = ", ".join(f"{k} {params[k]}" for k in ("lr", "momentum", "weight_decay",
                                                   "normalise_gradients", "batch_size"))
    clf = ", ".join(f"{k} {v}" for k, v in params["classifier"].items())
    header = [f"Dataset {dataset} ({ds.source['kind']}, {n_images} training images), scale "
              f"{scale}, {splits} splits, seed {seed}; layers {params['layers']}, layer 1 "
              f"{params['epochs_layer1']} epochs, budget {params['budget']} gradual epochs per "
              f"deeper layer, full tuning {params['finetune_epochs']} epochs.",
              f"Pretraining: preset {preset} ({opt}), {params['noise_type']} noise {params['noise']}. "
              f"Classifiers: {clf}.",
              f"Compute: {record['cell_seconds'] / 60:.1f} min summed over cells."]
    if failed:
        header.append(f"FAILED CELLS: {failed}")
    write_text_atomic(out / "report.md", markdown(name, summary, header))
    record["figures"] = figures(name, summary, str(out))
    return record
