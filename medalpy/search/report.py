"""What a search writes: trials.csv, trials.md, best.toml and search.png."""

import csv
import io
import json
import math

from medalpy.search.spec import OBJECTIVES, SPACE, configurations, epochs_used, rung_settings

# -- outputs -------------------------------------------------------------------------------------


def best_config(spec, config):
    """The TrainConfig settings of a configuration (what ``best.toml`` holds); for the
    classifier objective, the classifier's settings."""
    if spec.objective == "classifier":
        from medalpy.search.steps import classifier_settings

        return classifier_settings({**config, "classifier_epochs": spec.classifier_epochs,
                                    "patience": spec.patience})
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
        classifier = spec.objective == "classifier"
        _atomic_text(best_path, toml_text(record["best_config"], (
            f"medalpy search: best of {len(configurations(spec))} configuration(s), "
            f"{spec.folds}-fold nested cross-validation on {spec.dataset} "
            f"({trained(spec)})",
            f"objective: {OBJECTIVES[spec.objective]}, mean +- sd over folds: "
            f"{best['mean']:.4f} +- {best['std']:.4f}",
            "the classifier's settings: medalpy classify --lr ... or experiment "
            "--classifier-lr ..." if classifier else
            "train it: medalpy train --config best.toml")))
        if classifier:  # the classifier's own settings, checked as classify checks them
            from medalpy.supervised import check_classifier_settings

            check_classifier_settings(record["best_config"])
        else:
            from medalpy.run import make_config

            make_config(config_file=best_path)  # a file `medalpy train` accepts
    elif best_path.exists():
        best_path.unlink()
    record["plot"] = plot(out / "search.png", spec, table)


def _fmt(value, digits=4):
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def trained(spec):
    """What a trial trains, in words."""
    if spec.objective == "classifier":
        return f"a classifier on the encoders of {spec.encoders}"
    mean = "; the mean over the schedules" if len(spec.methods) > 1 else ""
    return ", ".join(spec.methods) + mean


def markdown(spec, record):
    lines = [f"# medalpy search: {spec.dataset}, {spec.folds}-fold nested cross-validation",
             "",
             f"Objective: {record['objective']} of the scoring fold ({trained(spec)}); lower is "
             f"better; each trial kept its best parameters on another fold. Mean and sample "
             f"standard deviation over folds. Trials: {record['trials']} ({record['done']} "
             f"done, {record['error']} failed).", ""]
    if spec.eta is not None:
        lines += [f"Successive halving: {spec.rungs} rungs, the best 1/{spec.eta} go on.", ""]
        names = [name.replace("_", " ") for name in epochs_used(spec, 0)]
        lines += ["| rung | pool | folds | " + " | ".join(names) + " |",
                  "|---|---|---|" + "---|" * len(names)]
        for r in range(spec.rungs):
            rs = rung_settings(spec, r)
            lines.append(f"| {r} | {rs['subset'] or 'all'} | {rs['eval_folds']} | "
                         + " | ".join(str(n) for n in epochs_used(spec, r).values()) + " |")
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
    axes[0][0].set_ylabel("validation " + ("CE" if spec.objective == "pretrain" else "error"))
    fig.suptitle(f"{spec.dataset}: {spec.folds}-fold CV", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)
