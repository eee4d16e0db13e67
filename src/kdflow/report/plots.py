"""The report's figures, written as PNG (matplotlib, Agg backend), each a rule output that always exists.

    plot_accuracy(model_summary(rows), methods, path)   # test accuracy by model, smallest first
    plot_deltas(paired_deltas(rows, pairs, methods), pairs, path)
    plot_tuning(load_trials(trial_files), path)

The frames are those of kdflow.report.tables; a plot with nothing to show says why in place of a chart.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from kdflow import plan
from kdflow.atomic import atomic_write
from kdflow.report.tables import BASELINE, SCRATCH, pair_label, tuned_columns


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)


def _note(path: Path, text: str) -> None:
    """A plot with nothing to show still exists (it is a rule output), and says why."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 1.5), layout="constrained")
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    _save(fig, path)


def _method_colors(methods: list[str]) -> dict:
    plt = _plt()
    if len(methods) <= 10:
        palette = plt.get_cmap("tab10").colors
    else:  # tab20's dark shades first, then the light ones: neighbours in the legend differ more
        palette = plt.get_cmap("tab20").colors[0::2] + plt.get_cmap("tab20").colors[1::2]
    return {SCRATCH: "black", **{m: palette[i % len(palette)] for i, m in enumerate(methods)}}


def plot_accuracy(models: pd.DataFrame, methods: list[str], path: Path) -> None:
    """Test accuracy by model, models left to right by size (the tick names the parameter count):
    inside a model's slot one point per (method, lineage), side by side, colour = method, marker =
    the chain it was distilled through. A category axis: no crowded log ticks, no hidden points."""
    plt = _plt()
    from matplotlib.lines import Line2D

    colors = _method_colors(methods)
    routes = list(dict.fromkeys(plan.teacher_lineage(x) for x in models.lineage if plan.SEP in x))
    markers = dict(zip(routes, "o^Dv<>PXh*" * 3))
    names = list(dict.fromkeys(models.model))
    width = max(6.5, 1.0 + 0.35 * len(models))
    fig, ax = plt.subplots(figsize=(min(width, 16), 4.8), layout="constrained")
    for i, name in enumerate(names):
        slot = models[models.model == name]
        offsets = [0.0] if len(slot) == 1 else [(k / (len(slot) - 1) - 0.5) * 0.7 for k in range(len(slot))]
        for dx, r in zip(offsets, slot.itertuples()):
            route = plan.teacher_lineage(r.lineage) if plan.SEP in r.lineage else None
            ax.errorbar(
                i + dx,
                100 * r.mean,
                yerr=0 if pd.isna(r.std) else 100 * r.std,
                fmt=markers.get(route, "s"),
                color=colors.get(r.method, "grey"),
                capsize=2,
                markersize=6,
            )
    ax.set_xticks(range(len(names)))
    params = models.drop_duplicates("model").set_index("model").num_params
    ax.set_xticklabels([f"{n}\n{params[n]:,.0f} params" for n in names], fontsize=8)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy by model, smallest first (mean ± std over seeds)")
    ax.grid(axis="y", alpha=0.3)
    shown = [m for m in [SCRATCH, *methods] if m in set(models.method)]
    by_method = [Line2D([], [], ls="", marker="s", color=colors[m], label=m) for m in shown]
    by_route = [
        Line2D([], [], ls="", marker=markers[r], color="grey", label=f"from {pair_label(r)}") for r in routes
    ]
    first = ax.legend(
        handles=by_method, title="method", fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1)
    )
    ax.add_artist(first)
    if by_route:
        ax.legend(handles=by_route, title="distilled", fontsize=7, loc="lower left", bbox_to_anchor=(1.01, 0))
    _save(fig, path)


def plot_deltas(deltas: pd.DataFrame, pairs: list[str], path: Path, baseline: str = BASELINE) -> None:
    """One panel per pair: a horizontal bar per method, its mean difference from the baseline with
    the 95% interval; method names on the y axis stay readable for many methods."""
    if deltas.empty:
        _note(path, f"No paired differences: `{baseline}` is not among the methods, or it is the only one.")
        return
    plt = _plt()
    methods = list(dict.fromkeys(deltas.method))
    cols = min(len(pairs), 3)
    n_rows = math.ceil(len(pairs) / cols)
    height = n_rows * max(2.2, 0.8 + 0.28 * len(methods))
    fig, axes = plt.subplots(
        n_rows, cols, figsize=(4.2 * cols + 1, height), sharey=True, squeeze=False, layout="constrained"
    )
    y = range(len(methods))
    for ax, pair in zip(axes.flat, pairs):
        d = deltas[deltas.pair == pair].set_index("method").reindex(methods)
        err = [(d["mean"] - d.lo).fillna(0), (d.hi - d["mean"]).fillna(0)]
        color = ["tab:green" if v > 0 else "tab:red" for v in d["mean"].fillna(0)]
        ax.barh(y, d["mean"].fillna(0), xerr=err, color=color, alpha=0.7, capsize=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(pair_label(pair), fontsize=9)
        ax.set_xlabel(f"test acc − {baseline} (points)")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(list(y), methods)
    axes[0][0].invert_yaxis()  # config order, top down
    for ax in list(axes.flat)[len(pairs) :]:
        ax.axis("off")
    fig.suptitle(f"Difference from {baseline}, paired by seed (mean, 95% t interval)")
    _save(fig, path)


def plot_tuning(trials: pd.DataFrame, path: Path) -> None:
    """One small panel per (method, edge, tuned hyperparameter), in one wrapped grid: validation
    accuracy of each trial against the value, the best complete trial starred."""
    if trials.empty:
        _note(path, "Tuning was off.")
        return
    plt = _plt()
    from matplotlib.ticker import LogLocator, NullFormatter

    panels = [
        (method, edge, c, t)
        for (method, edge), t in trials.groupby(["method", "edge"], sort=False)
        for c in tuned_columns(t)
    ]
    if not panels:
        _note(path, "No tuned hyperparameters in the trial files.")
        return
    cols = min(len(panels), 4 if len(panels) <= 16 else 6)
    n_rows = math.ceil(len(panels) / cols)
    size = (3.2 * cols, 2.4 * n_rows)
    fig, axes = plt.subplots(n_rows, cols, figsize=size, squeeze=False, layout="constrained")
    for ax, (method, edge, c, t) in zip(axes.flat, panels):
        for state, marker, color in (("COMPLETE", "o", "tab:blue"), ("PRUNED", "x", "grey")):
            s = t[t.state == state]
            ax.scatter(s[c], 100 * s.val_acc, marker=marker, color=color, s=14, label=state.lower())
        done = t[t.state == "COMPLETE"].dropna(subset=["val_acc"])
        if len(done):
            best = done.loc[done.val_acc.idxmax()]
            ax.scatter([best[c]], [100 * best.val_acc], marker="*", color="gold", edgecolor="black", s=90)
        values = pd.to_numeric(t[c], errors="coerce").dropna()
        if len(values) and values.min() > 0 and values.max() / values.min() > 100:  # a log-uniform search
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(numticks=4))
            ax.xaxis.set_minor_formatter(NullFormatter())  # 2x10^0, 3x10^0, ... would overlap
        ax.set_title(f"{method} · {pair_label(edge)}", fontsize=8)
        ax.set_xlabel(c, fontsize=8)
        ax.set_ylabel("val acc (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("Optuna trials: validation accuracy against each tuned value (★ best)")
    _save(fig, path)


def plot_sweep(table: pd.DataFrame, student: str, methods: list[str], path: Path) -> None:
    """Student test accuracy against teacher size (Mirzadeh et al. 2020, Figure 2): a line per
    method, the teachers' own accuracy dashed, the student alone as a horizontal band."""
    if table.params.isna().all():
        _note(path, f"capacity-gap sweep of {student}: no evaluated teacher yet")
        return
    plt = _plt()
    colors = _method_colors(methods)
    fig, ax = plt.subplots(figsize=(6.5, 4.5), layout="constrained")
    x = table.params
    ax.errorbar(x, 100 * table.teacher_mean, yerr=100 * table.teacher_std.fillna(0), fmt="k--o",
                capsize=2, label="teacher itself")  # fmt: skip
    for m in methods:
        ax.errorbar(x, 100 * table[f"{m}_mean"], yerr=100 * table[f"{m}_std"].fillna(0), fmt="-o",
                    color=colors[m], capsize=2, label=f"student by {m}")  # fmt: skip
    mean, std = table.attrs["scratch"]
    if not pd.isna(mean):
        ax.axhline(100 * mean, color="grey", lw=1, label="student alone")
        if not pd.isna(std):
            ax.axhspan(100 * (mean - std), 100 * (mean + std), color="grey", alpha=0.15)
    ax.set_xscale("log")
    ax.set_xticks(list(x))
    ax.set_xticklabels([f"{t}\n{p:,.0f}" for t, p in zip(table.teacher, x)], fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("teacher (parameters)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Capacity gap: {student} against teacher size (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
