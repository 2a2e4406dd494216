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

import csv
import io
import itertools
import json
import math
import time
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
              "classify": "validation classification error"}




@dataclass
class SearchSpec:
    """Everything that defines a search (what ``search.json`` records).

    ``space`` maps each name of :data:`SPACE` to the values to try; the other fields are held
    fixed over the search and written into ``best.toml`` (TrainConfig names).
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


def read_grid(path):
    """A TOML grid file: lists for the :data:`SPACE` names, scalars for fixed settings.

    Returns ``(space, fixed)``; unknown keys are refused, naming the file.
    """
    import tomllib

    path = Path(path)
    try:
        values = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read grid file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
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


def rung_epochs(spec, rung):
    """(epochs_layer1, budget, classifier_epochs) of a rung."""
    r = rung_settings(spec, rung)
    return r["epochs_layer1"], r["budget"], r["classifier_epochs"]


def trial_cells(spec, configs, rung):
    """One cell per configuration and evaluated fold of a rung."""
    from medalpy.experiments.cells import Cell

    settings = rung_settings(spec, rung)
    fixed = {k: getattr(spec, k) for k in (
        "dataset", "data_dir", "objective", "folds", "data_seed", "methods", "fraction",
        "n_layers", "noise", "noise_type", "patience", "backend", "dtype")}
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
            **({"classifier_epochs": clf_epochs} if spec.objective == "classify" else {}),
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


def run_search(spec, out_dir, client=None, retry_errors=False, echo=None):
    """Run (or resume) a search; writes every trial as it finishes, then the summaries.

    Parameters
    ----------
    spec : :class:`SearchSpec`.
    out_dir : the search's directory.
    client : optional ``dask.distributed.Client``; without one, trials run here in turn.
    retry_errors : run again the trials recorded with an error (a lost worker, say).
    echo : optional function receiving one-line progress messages.

    Returns
    -------
    dict, the record written to ``results.json`` (``best`` is None when no configuration
    finished every fold).
    """
    from medalpy.atomic import write_json_atomic
    from medalpy.experiments.cells import forget_failed, run_cells

    echo = echo or (lambda message: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(out, spec)
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
             f"folds = {len(cells)} trials (pool {r['subset'] or 'all'}, epochs layer 1: "
             f"{r['epochs_layer1']}, budget: {r['budget']})")
        results = run_cells(cells, out, client=client, echo=echo)
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


# -- outputs -------------------------------------------------------------------------------------


def best_config(spec, config):
    """The TrainConfig settings of a configuration (what ``best.toml`` holds)."""
    method = spec.methods[0]
    values = {"dataset": spec.dataset, "method": method,
              "fraction": spec.fraction if method == "hybrid" else None,
              "layers": [config["units"]] * spec.n_layers, "noise": spec.noise, "noise_type": spec.noise_type,
              "epochs_layer1": spec.epochs_layer1, "budget": spec.budget,
              "lr": config["lr"], "batch_size": config["batch_size"],
              "momentum": config["momentum"], "weight_decay": config["weight_decay"],
              "normalise_gradients": config["normalise_gradients"], "patience": spec.patience,
              "seed": config["seed"], "backend": spec.backend, "dtype": spec.dtype,
              "data_dir": spec.data_dir}
    return {k: v for k, v in values.items() if v is not None}


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def toml_text(settings, comments=()):
    lines = [f"# {c}" for c in comments] + [f"{k} = {_toml_value(v)}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def _atomic_text(path, text):
    import os

    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


COLUMNS = ("rung", "config", *SPACE, "subset", "eval_folds", "epochs_layer1", "budget",
           "folds_done", "folds_failed", "mean", "std", "min", "max", "seconds", "error")


def write_outputs(out, spec, record):
    """trials.csv, trials.md, best.toml (checked to load as a TrainConfig), search.png."""
    table = record["table"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    _atomic_text(out / "trials.csv", buffer.getvalue())
    _atomic_text(out / "trials.md", markdown(spec, record))
    best_path = out / "best.toml"
    if record["best_config"] is not None:
        best = record["best"]
        _atomic_text(best_path, toml_text(record["best_config"], (
            f"medalpy search: best of {len(configurations(spec))} configuration(s), "
            f"{spec.folds}-fold nested cross-validation on {spec.dataset} "
            f"({', '.join(spec.methods)})",
            f"objective: {OBJECTIVES[spec.objective]}, mean +- sd over folds: "
            f"{best['mean']:.4f} +- {best['std']:.4f}",
            "train it: medalpy train --config best.toml")))
        from medalpy.run import make_config

        make_config(config_file=best_path)  # the file must be one `medalpy train` accepts
    elif best_path.exists():
        best_path.unlink()
    record["plot"] = plot(out / "search.png", spec, table)


def _fmt(value, digits=4):
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def markdown(spec, record):
    lines = [f"# medalpy search: {spec.dataset}, {spec.folds}-fold nested cross-validation",
             "",
             f"Objective: {record['objective']} of the scoring fold ({', '.join(spec.methods)}"
             f"{'; the mean over the schedules' if len(spec.methods) > 1 else ''}); lower is "
             f"better; each trial kept its best parameters on another fold. Mean and sample "
             f"standard deviation over folds. Trials: {record['trials']} ({record['done']} "
             f"done, {record['error']} failed).", ""]
    if spec.eta is not None:
        lines += [f"Successive halving: {spec.rungs} rungs, the best 1/{spec.eta} go on.", ""]
        lines += ["| rung | pool | folds | epochs layer 1 | budget |", "|---|---|---|---|---|"]
        for r in range(spec.rungs):
            rs = rung_settings(spec, r)
            lines.append(f"| {r} | {rs['subset'] or 'all'} | {rs['eval_folds']} | "
                         f"{rs['epochs_layer1']} | {rs['budget']} |")
        lines.append("")
        for a in record.get("rank_agreement", ()):
            rho = "-" if a["spearman"] is None else f"{a['spearman']:.2f}"
            lines.append(f"Rung {a['rung']}: Spearman {rho} against rung {a['rung'] - 1} over "
                         f"{a['configs']} configurations; rung {a['rung'] - 1}'s leader "
                         f"({a['previous_leader']}) placed {a['previous_leader_place']}.")
        lines.append("")
    methods = [m for m in spec.methods if len(spec.methods) > 1]
    head = ["rung", "config", "mean", "std", "min", "max", *methods, "folds", "seconds",
            "error"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in sorted(record["table"], key=lambda r: (-r["rung"], r["mean"], r["config"])):
        error = row["error"].replace("|", "/")[:80]
        extra = "".join(f" {_fmt(row.get(f'mean_{m}', math.nan))} |" for m in methods)
        lines.append(f"| {row['rung']} | {row['config']} | {_fmt(row['mean'])} | "
                     f"{_fmt(row['std'])} | {_fmt(row['min'])} | {_fmt(row['max'])} |{extra} "
                     f"{row['folds_done']}/{row['eval_folds']} | {row['seconds']:.0f} | "
                     f"{error} |")
    best = record["best"]
    lines += ["", f"Best: {best['config']}, {_fmt(best['mean'])} +- {_fmt(best['std'])} "
                  "(best.toml)" if best else "No configuration finished every fold."]
    return "\n".join(lines) + "\n"


def plot(path, spec, table):
    """The objective against each searched hyper-parameter (last rung reached by each
    configuration); returns the path, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    last = {}
    for row in table:  # rows come rung by rung: keep each configuration's last rung
        last[row["config"]] = row
    rows = [r for r in last.values() if math.isfinite(r["mean"])]
    names = [n for n in SPACE if len(spec.space[n]) > 1] or ["lr"]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
    for ax, name in zip(axes[0], names):
        x = [r[name] for r in rows]
        ax.errorbar(x, [r["mean"] for r in rows], yerr=[r["std"] for r in rows], fmt="o",
                    alpha=0.7, capsize=2)
        if name in ("lr", "weight_decay") and all(v > 0 for v in spec.space[name]):
            ax.set_xscale("log")
        else:
            ax.set_xticks(sorted(spec.space[name]))
        ax.set_xlabel(name)
    axes[0][0].set_ylabel("validation " + ("error" if spec.objective == "classify" else "CE"))
    fig.suptitle(f"{spec.dataset}: {spec.folds}-fold CV", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)
