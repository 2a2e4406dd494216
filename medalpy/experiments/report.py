"""Summaries of experiment cells: tables over splits, paired tests, markdown and figures.

Every number is a mean over the splits with its sample standard deviation; differences
between two schemes are paired by split (same layer 1, same data) and tested with a paired
t-test across splits (scipy.stats.ttest_rel). With three splits the test has two degrees of
freedom: it flags only large, consistent differences.
"""

import math

import numpy as np

from medalpy.experiments.definitions import TUNED


def mean_std(values):
    """``{"mean", "sd", "n"}`` of the values present (sd: sample standard deviation)."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "n": int(v.size)}


def paired(a, b):
    """Mean of ``a - b`` over the splits where both exist, and the paired t-test p-value."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if not pairs:
        return {"mean_diff": None, "p_value": None, "n": 0}
    d = np.array([x - y for x, y in pairs])
    p = None
    if len(d) >= 2 and np.std(d) > 0:
        from scipy.stats import ttest_rel

        p = float(ttest_rel([x for x, _ in pairs], [y for _, y in pairs]).pvalue)
    return {"mean_diff": float(d.mean()), "p_value": p, "n": len(d)}


def _values(results, keys, field):
    out = []
    for key in keys:
        r = results.get(key)
        out.append(r.get(field) if r and r.get("status") == "done" else None)
    return out


def _fmt(ms, digits=3):
    m, s = ms["mean"], ms["sd"]
    return "n/a" if m is None else f"{m:.{digits}f} ± {s:.{digits}f}"


def _fmt_p(p):
    if p is None:
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def budget_rule(results):
    """Per pretraining phase of every finished cell: epochs run, the epoch kept (0: the
    start), and the paper's budget rule (best-so-far validation score improved by at most
    0.5% over the phase's last 10 epochs; None for shorter phases)."""
    rows = []
    for key in sorted(results):
        r = results[key]
        if r.get("status") != "done":
            continue
        for phase in r.get("phases", ()):
            rows.append({"cell": key, "phase": phase["phase"],
                         "epochs": phase["epochs_run"], "kept_epoch": phase["kept_epoch"],
                         "last10_improvement": phase["last10_improvement"],
                         "held": phase["budget_rule"]})
    return rows


def recomputed_weights(results):
    """Cells that recomputed the weights they start from (the model file of the cell they
    need was absent, as on a fresh clone), and whether the weights they used equal those
    the original cell recorded (another CPU kind may round differently)."""
    rows = []
    for key in sorted(results):
        r = results[key]
        if r.get("status") != "done":
            continue
        for flag, sha, source in (("layer1_recomputed", "layer1_sha", "layer1"),
                                  ("encoders_recomputed", "encoders_sha", "encoders"),
                                  ("pretrained_recomputed", "pretrained_sha", "pretrained")):
            if r.get(flag):
                origin = results.get(r["params"][source]) or {}
                rows.append({"cell": key, "from": r["params"][source],
                             "same_weights": origin.get("weights_sha") == r[sha]})
    return rows


def summarise(name, results, splits, fractions=None, sizes=None):
    """The summary dict of one experiment from its cell results."""
    return {**_summary(name, with_tuning(results), splits, fractions, sizes),
            "budget_rule": budget_rule(results),
            "recomputed_weights": recomputed_weights(results)}


def with_tuning(results):
    """``results`` with each finished full-tuning cell's ``tuned_*`` numbers copied into its
    pretraining cell's record (``split0/f0-tuned`` into ``split0/f0``), where the tables
    read them, and the tuning cells themselves left out."""
    merged = {key: r for key, r in results.items() if not key.endswith(TUNED)}
    for key, r in results.items():
        base = key[:-len(TUNED)]
        if key.endswith(TUNED) and r.get("status") == "done" and base in merged:
            merged[base] = {**merged[base],
                            **{k: v for k, v in r.items() if k.startswith("tuned_")}}
    return merged


def _summary(name, results, splits, fractions=None, sizes=None):
    if name == "reproduce":
        return {"fsweep": _summary("fsweep", results, splits, fractions, sizes),
                "trainsize": _summary("trainsize", results, splits, fractions, sizes)}
    S = range(splits)
    if name == "fsweep":
        rows = []
        base = _values(results, [f"split{s}/f0" for s in S], "relative_ce")
        base_t = _values(results, [f"split{s}/f0" for s in S], "tuned_relative_ce")
        for f in fractions:
            keys = [f"split{s}/f{f:g}" for s in S]
            rce, clean = _values(results, keys, "relative_ce"), _values(results, keys,
                                                                        "relative_ce_clean")
            tuned = _values(results, keys, "tuned_relative_ce")
            rows.append({"f": f, "relative_ce": mean_std(rce),
                         "relative_ce_clean": mean_std(clean), "tuned_relative_ce":
                         mean_std(tuned), "vs_gradual": paired(rce, base),
                         "tuned_vs_gradual": paired(tuned, base_t)})
        return {"rows": rows}
    if name == "trainsize":
        rows = []
        for n in sizes:
            err = {init: _values(results, [f"split{s}/classify-{init}-n{n}" for s in S],
                                 "test_error") for init in ("gradual", "stacked", "random")}
            g, st = mean_std(err["gradual"])["mean"], mean_std(err["stacked"])["mean"]
            rows.append({"size": n, **{k: mean_std(v) for k, v in err.items()},
                         "gradual_vs_stacked": paired(err["gradual"], err["stacked"]),
                         "relative_improvement": None if g is None or not st
                         else (st - g) / st})
        return {"rows": rows}
    if name == "lrsched":
        return _lrsched_summary(results, splits, sizes)
    if name == "ablation":
        schemes = ("gradual", "frozen_lower", "frozen_lower-epochs")
        rec = {m: _values(results, [f"split{s}/{m}" for s in S], "relative_ce")
               for m in schemes}
        rows = []
        for n in sizes[:2]:
            err = {m: _values(results, [f"split{s}/classify-{m}-n{n}" for s in S],
                              "test_error") for m in schemes}
            rows.append({"size": n, **{k: mean_std(v) for k, v in err.items()},
                         **{f"gradual_vs_{m}": paired(err["gradual"], err[m])
                            for m in schemes[1:]}})
        return {"reconstruction": {k: mean_std(v) for k, v in rec.items()},
                **{f"reconstruction_gradual_vs_{m}": paired(rec["gradual"], rec[m])
                   for m in schemes[1:]},
                "classification": rows}
    raise ValueError(name)


def _mean_multiplier(result):
    """The mean of m(t) over a member's gradual phases: 1 for gradual, 0 for the ablation
    (its lower layers are frozen), None for stacked (no gradual phase)."""
    method = result["params"]["method"]
    found = [p["mean_multiplier"] for p in result.get("phases", ()) if "mean_multiplier" in p]
    if found:
        return float(np.mean(found))
    return {"gradual": 1.0, "frozen_lower": 0.0}.get(method)


def _lrsched_summary(results, splits, sizes):
    S = range(splits)
    members = list(dict.fromkeys(
        key.split("/", 1)[1] for key in results
        if key.count("/") == 1 and not key.endswith("/layer1") and "/classify-" not in key))
    field = lambda m, f: _values(results, [f"split{s}/{m}" for s in S], f)  # noqa: E731
    error = lambda m, n: _values(  # noqa: E731
        results, [f"split{s}/classify-{m}-n{n}" for s in S], "test_error")
    rows = []
    for m in members:
        done = [results[f"split{s}/{m}"] for s in S
                if results.get(f"split{s}/{m}", {}).get("status") == "done"]
        rce, tuned = field(m, "relative_ce"), field(m, "tuned_relative_ce")
        row = {"member": m,
               "lower_lr": done[0]["params"].get("lower_lr") if done else None,
               "mean_multiplier": _mean_multiplier(done[0]) if done else None,
               "relative_ce": mean_std(rce), "tuned_relative_ce": mean_std(tuned),
               "vs_gradual": paired(rce, field("gradual", "relative_ce")),
               "tuned_vs_gradual": paired(tuned, field("gradual", "tuned_relative_ce")),
               "classification": []}
        for n in sizes[:2]:
            row["classification"].append({"size": n, "test_error": mean_std(error(m, n)),
                                          "vs_gradual": paired(error(m, n),
                                                               error("gradual", n))})
        rows.append(row)
    return {"rows": rows, "sizes": list(sizes[:2])}


def markdown(name, summary, header):
    """The report.md text."""
    lines = [f"# medalpy experiment: {name}", "", *header, ""]
    for r in summary.get("recomputed_weights", []):
        lines.append(f"Cell {r['cell']} recomputed the weights of {r['from']} from the seed "
                     f"({'the same' if r['same_weights'] else 'NOT the same'} weights as that "
                     "cell recorded).")
    if summary.get("recomputed_weights"):
        lines.append("")
    if name == "reproduce":
        lines += ["## Reconstruction (fsweep)", ""] + _body("fsweep", summary["fsweep"])
        lines += ["", "## Classification (trainsize, from the f = 0 and f = 1 encoders)", ""]
        if summary["trainsize"]["rows"]:
            lines += _body("trainsize", summary["trainsize"])
        else:
            lines.append("No classifiers yet (`--sizes none`).")
    else:
        lines += _body(name, summary)
    lines += _budget_rule_lines(summary.get("budget_rule", []))
    return "\n".join(lines) + "\n"


def _body(name, summary):
    """The tables of one experiment's summary."""
    lines = []
    if name == "fsweep":
        lines += ["Test relative reconstruction cross-entropy (nats per image; mean ± sd over "
                  "splits). f is the stacked fraction: f = 0 gradual, f = 1 stacked. The "
                  "difference is paired by split against f = 0.", "",
                  "| f | corrupted input | clean input | vs gradual (p) | after full tuning "
                  "| tuned vs gradual (p) |", "|---|---|---|---|---|---|"]
        for r in summary["rows"]:
            d, dt = r["vs_gradual"], r["tuned_vs_gradual"]
            lines.append(
                f"| {r['f']:g} | {_fmt(r['relative_ce'])} | "
                f"{_fmt(r['relative_ce_clean'])} | "
                f"{'n/a' if d['mean_diff'] is None else format(d['mean_diff'], '+.3f')} "
                f"({_fmt_p(d['p_value'])}) | {_fmt(r['tuned_relative_ce'])} | "
                f"{'n/a' if dt['mean_diff'] is None else format(dt['mean_diff'], '+.3f')} "
                f"({_fmt_p(dt['p_value'])}) |")
    elif name == "trainsize":
        lines += ["Test classification error (mean ± sd over splits). Relative improvement "
                  "of gradual over stacked: (stacked - gradual) / stacked. The difference "
                  "gradual - stacked is paired by split.", "",
                  "| training images | gradual | stacked | random init | gradual - stacked (p) "
                  "| relative improvement |", "|---|---|---|---|---|---|"]
        for r in summary["rows"]:
            d = r["gradual_vs_stacked"]
            rel = r["relative_improvement"]
            lines.append(
                f"| {r['size']} | {_fmt(r['gradual'], 4)} | {_fmt(r['stacked'], 4)} "
                f"| {_fmt(r['random'], 4)} | "
                f"{'n/a' if d['mean_diff'] is None else format(d['mean_diff'], '+.4f')} "
                f"({_fmt_p(d['p_value'])}) | {'n/a' if rel is None else format(rel, '+.1%')} |")
    elif name == "lrsched":
        diff = lambda d, digits: ("n/a" if d["mean_diff"] is None  # noqa: E731
                                  else format(d["mean_diff"], f"+.{digits}f"))
        sizes = summary["sizes"]
        lines += ["Every member spends gradual's budget (a lower layer updated at a reduced "
                  "rate still spends its update), but the ablation, whose frozen lower layers "
                  "spend nothing: it is m = 0 by its weights, gradual's epochs by its count. "
                  "m(t) multiplies the lower layers' learning "
                  "rate in gradual phases; mean m is its average over those phases (gradual "
                  "1, the equal-epochs ablation 0). Test relative reconstruction cross-entropy "
                  "(nats per image) and classification error from the pretrained encoders, "
                  "mean ± sd over splits; differences are the member minus gradual, paired "
                  "by split (p: paired t-test).", "",
                  "| member | m(t) | mean m | relative CE | - gradual (p) | after full tuning "
                  "| - gradual (p) | " + " | ".join(f"error, {n} images | - gradual (p)"
                                                    for n in sizes) + " |",
                  "|---" * (7 + 2 * len(sizes)) + "|"]
        for r in summary["rows"]:
            m = r["mean_multiplier"]
            cells = [r["member"], r["lower_lr"] or "", "n/a" if m is None else f"{m:.2f}",
                     _fmt(r["relative_ce"]),
                     f"{diff(r['vs_gradual'], 3)} ({_fmt_p(r['vs_gradual']['p_value'])})",
                     _fmt(r["tuned_relative_ce"]),
                     f"{diff(r['tuned_vs_gradual'], 3)} "
                     f"({_fmt_p(r['tuned_vs_gradual']['p_value'])})"]
            for c in r["classification"]:
                cells += [_fmt(c["test_error"], 4),
                          f"{diff(c['vs_gradual'], 4)} ({_fmt_p(c['vs_gradual']['p_value'])})"]
            lines.append("| " + " | ".join(cells) + " |")
    elif name == "ablation":
        rec = summary["reconstruction"]
        diff = lambda d, digits: ("n/a" if d["mean_diff"] is None  # noqa: E731
                                  else format(d["mean_diff"], f"+.{digits}f"))
        lines += ["Input noise with frozen lower layers, under the two readings of equal "
                  "budget: equal weight updates (the top layer trained for k n epochs) and "
                  "equal epochs (n epochs, as gradual). Differences are gradual minus the "
                  "ablation, paired by split.", "",
                  "Test relative reconstruction cross-entropy (mean ± sd over splits):", "",
                  "| gradual | frozen lower, equal updates | gradual - it (p) | frozen lower, "
                  "equal epochs | gradual - it (p) |", "|---|---|---|---|---|"]
        du = summary["reconstruction_gradual_vs_frozen_lower"]
        de = summary["reconstruction_gradual_vs_frozen_lower-epochs"]
        lines += [f"| {_fmt(rec['gradual'])} | {_fmt(rec['frozen_lower'])} | {diff(du, 3)} "
                  f"({_fmt_p(du['p_value'])}) | {_fmt(rec['frozen_lower-epochs'])} | "
                  f"{diff(de, 3)} ({_fmt_p(de['p_value'])}) |", "",
                  "Test classification error:", "",
                  "| training images | gradual | frozen lower, equal updates | gradual - it "
                  "(p) | frozen lower, equal epochs | gradual - it (p) |",
                  "|---|---|---|---|---|---|"]
        for r in summary["classification"]:
            du, de = r["gradual_vs_frozen_lower"], r["gradual_vs_frozen_lower-epochs"]
            lines.append(
                f"| {r['size']} | {_fmt(r['gradual'], 4)} | {_fmt(r['frozen_lower'], 4)} | "
                f"{diff(du, 4)} ({_fmt_p(du['p_value'])}) | "
                f"{_fmt(r['frozen_lower-epochs'], 4)} | {diff(de, 4)} "
                f"({_fmt_p(de['p_value'])}) |")
    return lines


def _budget_rule_lines(rule):
    lines = []
    if rule:
        judged = [r for r in rule if r["held"] is not None]
        lines += ["", "## Budget rule and kept epochs", "",
                  f"The paper set its budget so that the validation error improved by at most "
                  f"0.5% over the last 10 epochs. It held in "
                  f"{sum(r['held'] for r in judged)} of {len(judged)} phases of 10 epochs or "
                  "more. Kept epoch: the epoch whose parameters the phase ended with (0: its "
                  "start).", "",
                  "| cell | phase | epochs | kept epoch | last-10 improvement | rule held |",
                  "|---|---|---|---|---|---|"]
        for r in rule:
            gain = "n/a" if r["last10_improvement"] is None else \
                f"{100 * r['last10_improvement']:.2f}%"
            held = "n/a" if r["held"] is None else ("yes" if r["held"] else "no")
            lines.append(f"| {r['cell']} | {r['phase']} | {r['epochs']} | {r['kept_epoch']} | "
                         f"{gain} | {held} |")
    return lines


def figures(name, summary, out_dir):
    """PNG figures in the style of the paper's; returns the paths written ([] without
    matplotlib, which is an optional extra)."""
    if name == "reproduce":
        return (figures("fsweep", summary["fsweep"], out_dir)
                + figures("trainsize", summary["trainsize"], out_dir))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths = []
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    if name == "fsweep":
        rows = summary["rows"]
        f = [r["f"] for r in rows]
        for field, label in (("relative_ce", "pretrained"), ("tuned_relative_ce",
                                                              "after full tuning")):
            m = [r[field]["mean"] for r in rows]
            if any(v is None for v in m):
                continue
            ax.errorbar(f, m, yerr=[r[field]["sd"] for r in rows], marker="o", capsize=3,
                        label=label)
        ax.set_xlabel("stacked fraction f (0 = gradual, 1 = stacked)")
        ax.set_ylabel("test relative cross-entropy")
    elif name == "trainsize":
        rows = summary["rows"]
        n = [r["size"] for r in rows]
        for init in ("gradual", "stacked", "random"):
            m = [r[init]["mean"] for r in rows]
            if any(v is None for v in m):
                continue
            ax.errorbar(n, [100 * v for v in m], yerr=[100 * r[init]["sd"] for r in rows],
                        marker="o", capsize=3, label=init)
        ax.set_xscale("log")
        ax.set_xlabel("training images")
        ax.set_ylabel("test error (%)")
    elif name == "lrsched":
        rows = [r for r in summary["rows"] if r["mean_multiplier"] is not None]
        for field, label, marker in (("relative_ce", "pretrained", "o"),
                                     ("tuned_relative_ce", "after full tuning", "s")):
            pts = [(r["mean_multiplier"], r[field]["mean"], r[field]["sd"], r["member"])
                   for r in rows if r[field]["mean"] is not None]
            if not pts:
                continue
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                        fmt=marker, capsize=3, label=label)
            if field == "relative_ce":
                for x, y, _, member in pts:
                    ax.annotate(member.replace("lower-", ""), (x, y), fontsize=6,
                                textcoords="offset points", xytext=(3, 3))
        stacked = next((r for r in summary["rows"] if r["member"] == "stacked"), None)
        if stacked and stacked["relative_ce"]["mean"] is not None:
            ax.axhline(stacked["relative_ce"]["mean"], ls="--", color="grey",
                       label="stacked, pretrained")
        ax.set_xlabel("mean multiplier of the lower layers' learning rate")
        ax.set_ylabel("test relative cross-entropy")
    else:
        rec = summary["reconstruction"]
        names = ["gradual", "frozen_lower", "frozen_lower-epochs"]
        means = [rec[m]["mean"] if rec[m]["mean"] is not None else math.nan for m in names]
        ax.bar(["gradual", "frozen lower,\nequal updates", "frozen lower,\nequal epochs"],
               means,
               yerr=[rec[m]["sd"] or 0 for m in names], capsize=4)
        ax.set_ylabel("test relative cross-entropy")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    path = f"{out_dir}/{name}.png"
    fig.savefig(path)
    plt.close(fig)
    paths.append(path)
    return paths
