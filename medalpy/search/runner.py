"""Running a search: one cell per configuration and fold of each rung, summaries, halving."""

import json
import math
import time

import numpy as np

from medalpy.errors import ConfigError
from medalpy.search.report import best_config, write_outputs
from medalpy.search.spec import (
    OBJECTIVES,
    STEP,
    SearchSpec,
    config_id,
    configurations,
    epochs_used,
    rung_epochs,
    rung_settings,
)

def trial_cells(spec, configs, rung):
    """One cell per configuration and evaluated fold of a rung."""
    from medalpy.experiments.cells import Cell

    settings = rung_settings(spec, rung)
    fixed = {k: getattr(spec, k) for k in (
        "dataset", "data_dir", "objective", "folds", "data_seed", "methods", "fraction",
        "n_layers", "noise", "noise_type", "patience", "backend", "dtype", "encoders")}
    cells = []
    for config in configs:
        for f in range(settings["eval_folds"]):
            params = {**fixed, **config, **settings, "fold": f, "rung": rung}
            cells.append(Cell(f"r{rung}/{config_id(config)}/fold{f}", STEP, params))
    return cells


def summarise(spec, configs, rung, results):
    """One row per configuration of a rung: the objective's mean and spread over folds."""
    settings = rung_settings(spec, rung)
    e1, budget, clf_epochs = rung_epochs(spec, rung)
    n_folds = settings["eval_folds"]
    rows = []
    for config in configs:
        cid = config_id(config)
        records = [results.get(f"r{rung}/{cid}/fold{f}") for f in range(n_folds)]
        done = [r["objective"] for r in records if r and r.get("status") == "done"]
        errors = [r["error"] for r in records if r and r.get("status") != "done"]
        complete = len(done) == n_folds
        values = np.array(done, dtype=float)
        per_method = {}
        if complete and spec.objective == "pretrain":
            for m in spec.methods:
                per_method[f"mean_{m}"] = float(np.mean(
                    [r["methods"][m]["val_ce"] for r in records]))
        rows.append({
            "rung": rung, "config": cid, **config, "epochs_layer1": e1, "budget": budget,
            "subset": settings["subset"], "eval_folds": n_folds, **per_method,
            **({"classifier_epochs": clf_epochs}
               if spec.objective in ("classify", "classifier") else {}),
            "folds_done": len(done), "folds_failed": len(errors),
            "mean": float(values.mean()) if complete else math.inf,
            "std": float(values.std(ddof=1)) if complete and len(done) > 1 else
            (0.0 if complete else math.nan),
            "min": float(values.min()) if done else math.nan,
            "max": float(values.max()) if done else math.nan,
            "seconds": float(sum(r.get("seconds", 0.0) for r in records if r)),
            "error": errors[0] if errors else "",
        })
    rows.sort(key=lambda row: (row["mean"], row["config"]))
    return rows


def survivors(spec, rows):
    """The configurations that go on to the next rung: the best ``max(1, n // eta)``."""
    keep = max(1, len(rows) // spec.eta)
    finished = [row for row in rows if math.isfinite(row["mean"])]
    return [row["config"] for row in finished[:keep]]


def rank_agreement(table):
    """For each rung after the first, Spearman's rank correlation between the means its
    configurations had in the rung before and in this one (None with fewer than 3), and
    where the previous rung's leader finished."""
    by_rung = {}
    for row in table:
        by_rung.setdefault(row["rung"], {})[row["config"]] = row["mean"]
    out = []
    for rung in sorted(by_rung)[1:]:
        now = {c: m for c, m in by_rung[rung].items() if math.isfinite(m)}
        before = by_rung[rung - 1]
        common = [c for c in now if math.isfinite(before.get(c, math.inf))]
        rho = None
        if len(common) >= 3:
            a = np.argsort(np.argsort([before[c] for c in common]))
            b = np.argsort(np.argsort([now[c] for c in common]))
            rho = float(np.corrcoef(a, b)[0, 1])
        leader = min(common, key=lambda c: (before[c], c)) if common else None
        order = sorted(now, key=lambda c: (now[c], c))
        out.append({"rung": rung, "configs": len(common), "spearman": rho,
                    "previous_leader": leader,
                    "previous_leader_place": order.index(leader) + 1 if leader else None})
    return out


# -- the search ----------------------------------------------------------------------------------


def _check_resume(out, spec):
    path = out / "search.json"
    saved = json.loads(path.read_text()) if path.exists() else None
    current = json.loads(json.dumps(spec.to_dict()))
    if saved is not None:
        # Where the data lies is not what the search is: a clone elsewhere resumes it. A
        # setting added since the search began is taken to have had its default value.
        defaults = {name: f.default for name, f in SearchSpec.__dataclass_fields__.items()}
        differ = sorted(k for k in set(saved) | set(current)
                        if k != "data_dir" and saved.get(k, defaults.get(k)) != current.get(k))
        if differ:
            raise ConfigError(f"{path}: this directory holds a search with other settings "
                              f"({', '.join(differ)} differ); give the same options to resume "
                              "it, or choose another --out")
    else:
        from medalpy.atomic import write_json_atomic

        write_json_atomic(path, current)


def run_search(spec, out_dir, executor=None, retry_errors=False, echo=None, overwrite=False):
    """Run (or resume) a search; writes every trial as it finishes, then the summaries.

    Parameters
    ----------
    spec : :class:`SearchSpec`.
    out_dir : the search's directory.
    executor : where trials run (:mod:`medalpy.cluster`); default here, one at a time.
    retry_errors : run again the trials recorded with an error (a lost worker, say).
    echo : optional function receiving one-line progress messages.

    Returns
    -------
    dict, the record written to ``results.json`` (``best`` is None when no configuration
    finished every fold).

    The output folder is claimed first (:func:`medalpy.outputs.claim`): a search resumes in
    its own folder, refuses another command's unless ``overwrite``, and a second search into
    the same folder stops at once.
    """
    from medalpy import outputs

    echo = echo or (lambda message: None)
    with outputs.claim(out_dir, "search", overwrite=overwrite) as out:
        _check_resume(out, spec)
        return _run_search(spec, out, executor, retry_errors, echo)


def _run_search(spec, out, executor, retry_errors, echo):
    from medalpy.atomic import write_json_atomic
    from medalpy.experiments.cells import forget_failed, run_cells

    t0 = time.perf_counter()
    configs = configurations(spec)
    by_id = {config_id(c): c for c in configs}
    n_rungs = spec.rungs if spec.eta is not None else 1
    table, trials, status = [], 0, {"done": 0, "error": 0}
    for rung in range(n_rungs):
        cells = trial_cells(spec, configs, rung)
        if retry_errors:
            if n := forget_failed(out, cells):
                echo(f"retrying {n} trial(s) recorded with an error")
        r = rung_settings(spec, rung)
        echo(f"rung {rung + 1}/{n_rungs}: {len(configs)} configuration(s) x {r['eval_folds']} "
             f"folds = {len(cells)} trials (pool {r['subset'] or 'all'}, " + ", ".join(
                 f"{name.replace('_', ' ')}: {n}" for name, n in epochs_used(spec, rung).items())
             + ")")
        results = run_cells(cells, out, executor=executor, echo=echo)
        trials += len(cells)
        for cell in cells:
            state = results[cell.key]["status"]
            status["done" if state == "done" else "error"] += 1
        rows = summarise(spec, configs, rung, results)
        table.extend(rows)
        if rung + 1 < n_rungs:
            keep = survivors(spec, rows)
            if not keep:
                echo(f"rung {rung + 1}: no configuration finished every fold; stopping")
                break
            configs = [by_id[cid] for cid in keep]
    final = [row for row in rows if math.isfinite(row["mean"])]
    best = final[0] if final else None
    record = {"spec": json.loads(json.dumps(spec.to_dict())),
              "objective": OBJECTIVES[spec.objective], "trials": trials, **status,
              "best": best, "best_config": best_config(spec, by_id[best["config"]])
              if best else None, "table": table, "rank_agreement": rank_agreement(table),
              "wall_seconds": time.perf_counter() - t0}
    write_outputs(out, spec, record)
    write_json_atomic(out / "results.json", _finite(record))
    return record


def _finite(value):
    """JSON has no infinities: write them (and NaN) as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
