"""The experiment report: pairs x methods, mean ± std over seeds, paired differences from kd, plots.

    write_report(metric_files=[...test_metrics.json], trial_files=[...trials.parquet],
                 pairs=["big__small", "big__mid__small"], methods=["kd", "dkd"], ...)

Rows come from each model's test_metrics.json (one per trained model and seed): `model`, `method`
("scratch" when trained from labels), `lineage` (kdflow.plan), `seed`, the test metrics, and the
method's hyperparameters. A pair's column holds its teacher's and its student's scratch rows, then
one row per method: the student distilled by that method along the pair's lineage. Trial files are
found by their place in the tree, `.../<method>/<lineage>/trials.parquet`; nothing else here knows it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from kdflow import plan
from kdflow.atomic import atomic_write, read_json
from kdflow.tracking import TrackingSpec, open_run

SCRATCH = "scratch"  # the method of a model trained from labels alone
BASELINE = "kd"  # the method every other is compared with, seed by seed
TEACHER, STUDENT = "teacher", "student (scratch)"  # the two fixed rows of a pair's column
METRICS = ["test_acc", "test_nll", "test_ece", "teacher_agreement", "throughput", "num_params"]
TRIAL_COLUMNS = {"trial", "state", "val_acc", "epochs_run", "pruned_reason", "method", "edge"}


def load_rows(metric_files: list[Path]) -> pd.DataFrame:
    rows = pd.DataFrame([read_json(p) for p in metric_files])
    for m in METRICS:
        if m not in rows:
            rows[m] = float("nan")
    rows[METRICS] = rows[METRICS].astype(float)  # teacher_agreement is None for scratch rows
    return rows


def parquet_safe(rows: pd.DataFrame) -> pd.DataFrame:
    """Hyperparameter columns shared by methods can mix types (a float here, a list there): such a
    column is written as text, JSON for lists and dicts, so summary.parquet keeps every row."""
    out = rows.copy()
    for c in [c for c in out.columns if pd.api.types.is_object_dtype(out[c])]:
        kinds = {type(v) for v in out[c] if not _missing(v)}
        if len(kinds) > 1 or kinds & {list, dict, tuple}:
            out[c] = [
                None if _missing(v) else json.dumps(v) if isinstance(v, list | dict | tuple) else str(v)
                for v in out[c]
            ]
    return out


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def pair_label(lineage: str) -> str:
    return plan.ARROW.join(plan.split(lineage))


def cell_rows(rows: pd.DataFrame, pair: str, row: str) -> pd.DataFrame:
    """The seeds of one cell: a pair's teacher or scratch student, or its student by a method."""
    chain = plan.split(pair)
    if row in (TEACHER, STUDENT):
        model = chain[0] if row == TEACHER else chain[-1]
        return rows[(rows.method == SCRATCH) & (rows.model == model)]
    return rows[(rows.method == row) & (rows.lineage == pair)]


def summarize(rows: pd.DataFrame, pairs: list[str], methods: list[str]) -> pd.DataFrame:
    """One line per (pair, row): seeds and each metric's mean and std, in config order."""
    lines = []
    for pair in pairs:
        for row in [TEACHER, STUDENT, *methods]:
            cell = cell_rows(rows, pair, row)
            line = {"pair": pair, "row": row, "model": cell.model.iloc[0] if len(cell) else None}
            line["n_seeds"] = cell.seed.nunique()
            for m in METRICS:
                line[f"{m}_mean"], line[f"{m}_std"] = cell[m].mean(), cell[m].std()
            lines.append(line)
    return pd.DataFrame(lines)


def _pm(mean: float, std: float, scale: float = 1.0, digits: int = 2) -> str:
    if pd.isna(mean):
        return "-"
    std_s = "" if pd.isna(std) else f" ± {std * scale:,.{digits}f}"
    return f"{mean * scale:,.{digits}f}{std_s}"


def accuracy_markdown(table: pd.DataFrame, pairs: list[str], methods: list[str], n_seeds: int) -> str:
    """The paper's table: rows teacher, scratch student, methods; a column per pair; test accuracy
    in %; (n=k) where a cell has fewer than `n_seeds` seeds; the best method of a column in bold."""
    lines = ["| | " + " | ".join(pair_label(p) for p in pairs) + " |", "|---|" + "---:|" * len(pairs)]
    cells = {(r.pair, r.row): r for r in table.itertuples()}
    best = {}
    for p in pairs:
        means = [round(100 * cells[p, m].test_acc_mean, 2) for m in methods if cells[p, m].n_seeds]
        best[p] = max(means, default=None)
    for row in [TEACHER, STUDENT, *methods]:
        out = []
        for p in pairs:
            r = cells[p, row]
            text = _pm(r.test_acc_mean, r.test_acc_std, 100)
            if 0 < r.n_seeds < n_seeds:
                text += f" (n={r.n_seeds})"
            if row in methods and r.n_seeds and round(100 * r.test_acc_mean, 2) == best[p]:
                text = f"**{text}**"
            out.append(text)
        lines.append(f"| {row} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def metrics_markdown(table: pd.DataFrame) -> str:
    lines = [
        "| pair | row | model | NLL | ECE % | agreement % | samples/s | params | seeds |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table.itertuples():
        params = "-" if pd.isna(r.num_params_mean) else f"{r.num_params_mean:,.0f}"
        if r.num_params_std > 0:
            params += f" ± {r.num_params_std:,.0f}"
        lines.append(
            f"| {pair_label(r.pair)} | {r.row} | {r.model or '-'} "
            f"| {_pm(r.test_nll_mean, r.test_nll_std, 1, 3)} | {_pm(r.test_ece_mean, r.test_ece_std, 100)} "
            f"| {_pm(r.teacher_agreement_mean, r.teacher_agreement_std, 100, 1)} "
            f"| {_pm(r.throughput_mean, r.throughput_std, 1, 0)} | {params} | {r.n_seeds} |"
        )
    return "\n".join(lines)


def t_cdf_two_sided(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer df (Abramowitz & Stegun 26.7.3-4, exact sums)."""
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:
        term = total = 1.0
        for j in range(1, (df - 2) // 2 + 1):
            term *= (2 * j - 1) / (2 * j) * c2
            total += term
        return s * total
    term = total = math.cos(theta) if df > 1 else 0.0
    for j in range(1, (df - 3) // 2 + 1):
        term *= (2 * j) / (2 * j + 1) * c2
        total += term
    return 2 / math.pi * (theta + s * total)


def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 0.5) of Student's t with df degrees of freedom, by bisection on the CDF:
    no scipy needed. t_quantile(0.975, 2) = 4.303."""
    target, lo, hi = 2 * p - 1, 0.0, 1.0
    while t_cdf_two_sided(hi, df) < target:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf_two_sided(mid, df) < target else (lo, mid)
    return (lo + hi) / 2


def paired_deltas(rows: pd.DataFrame, pairs: list[str], methods: list[str], baseline: str = BASELINE):
    """Each method's test accuracy minus the baseline's, per pair, over the seeds both have: the
    mean and a 95% t interval of the per-seed differences, in percentage points (None without
    two seeds). Pairing by seed removes what the seed does to both (split, init, teacher)."""
    lines = []
    for pair in pairs:
        base = cell_rows(rows, pair, baseline).set_index("seed").test_acc
        for m in methods:
            if m == baseline:
                continue
            diff = 100 * (cell_rows(rows, pair, m).set_index("seed").test_acc - base).dropna()
            n, mean = len(diff), diff.mean()
            half = t_quantile(0.975, n - 1) * diff.std() / math.sqrt(n) if n >= 2 else float("nan")
            lines.append(
                {"pair": pair, "method": m, "n": n, "mean": mean, "lo": mean - half, "hi": mean + half}
            )
    return pd.DataFrame(lines, columns=["pair", "method", "n", "mean", "lo", "hi"])


def deltas_markdown(deltas: pd.DataFrame, pairs: list[str], baseline: str = BASELINE) -> str:
    lines = ["| method | " + " | ".join(pair_label(p) for p in pairs) + " |", "|---|" + "---:|" * len(pairs)]
    cells = {(r.pair, r.method): r for r in deltas.itertuples()}
    for m in dict.fromkeys(deltas.method):
        out = []
        for p in pairs:
            r = cells[p, m]
            if r.n == 0:
                out.append("-")
            elif pd.isna(r.lo):
                out.append(f"{r.mean:+.2f} (n={r.n})")
            else:
                out.append(f"{r.mean:+.2f} [{r.lo:+.2f}, {r.hi:+.2f}] (n={r.n})")
        lines.append(f"| {m} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def load_trials(trial_files: list[Path]) -> pd.DataFrame:
    frames = [pd.read_parquet(p).assign(method=p.parent.parent.name, edge=p.parent.name) for p in trial_files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def tuned_columns(study: pd.DataFrame) -> list[str]:
    """One study's tuned hyperparameters: what is neither bookkeeping nor another method's column."""
    return [c for c in study.columns if c not in TRIAL_COLUMNS and study[c].notna().any()]


def _value(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def tuning_markdown(trials: pd.DataFrame) -> str:
    if trials.empty:
        return "Tuning was off: every method used its fixed hyperparameters."
    lines = [
        "| method | edge | trials (complete / pruned / failed) | best tuned values | best val acc % |",
        "|---|---|---|---|---:|",
    ]
    for (method, edge), t in trials.groupby(["method", "edge"], sort=False):
        counts = " / ".join(str((t.state == s).sum()) for s in ("COMPLETE", "PRUNED", "FAIL"))
        done = t[t.state == "COMPLETE"].dropna(subset=["val_acc"])
        if done.empty:
            lines.append(f"| {method} | {pair_label(edge)} | {counts} | - | - |")
            continue
        best = done.loc[done.val_acc.idxmax()]
        values = ", ".join(f"{c}={_value(best[c])}" for c in tuned_columns(t)) or "-"
        lines.append(f"| {method} | {pair_label(edge)} | {counts} | {values} | {100 * best.val_acc:.2f} |")
    return "\n".join(lines)


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


def model_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of test accuracy per trained model (model, method, lineage), assistants too;
    models ordered by size."""
    g = rows.groupby(["model", "method", "lineage"], sort=False)
    out = g.test_acc.agg(["mean", "std"]).join(g.num_params.first()).reset_index()
    return out.sort_values("num_params", kind="stable").reset_index(drop=True)


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


def write_report(
    *,
    metric_files: list[Path],
    trial_files: list[Path],
    pairs: list[str],
    methods: list[str],
    summary: Path,
    markdown: Path,
    accuracy_plot: Path,
    deltas_plot: Path,
    tuning_plot: Path,
    experiment: str,
    tracking: TrackingSpec,
) -> pd.DataFrame:
    rows = load_rows(metric_files)
    table = summarize(rows, pairs, methods)
    n_seeds = rows.seed.nunique()
    deltas = paired_deltas(rows, pairs, methods if BASELINE in methods else [])
    trials = load_trials(trial_files)
    with atomic_write(summary) as tmp:
        parquet_safe(rows).to_parquet(tmp, index=False)
    plot_accuracy(model_summary(rows), methods, accuracy_plot)
    plot_deltas(deltas, pairs, deltas_plot)
    plot_tuning(trials, tuning_plot)
    if deltas.empty:
        delta_text = [
            f"No paired differences: `{BASELINE}`, the method the others are compared with, is not "
            "among this experiment's methods (or it is the only one)."
        ]
    else:
        delta_text = [
            f"Each method's test accuracy minus `{BASELINE}`'s, in percentage points, paired by seed "
            "(the same split, initialisation and teacher): mean [95% t interval] over the seeds both have.",
            deltas_markdown(deltas, pairs),
            f"![difference from {BASELINE}]({deltas_plot.relative_to(markdown.parent)})",
        ]
    text = "\n\n".join(
        [
            f"# kdflow report: {experiment}",
            "## Test accuracy (%)",
            f"Mean ± std over {n_seeds} seed(s); (n=k) where a cell has fewer. Teacher and student "
            "(scratch): trained from labels alone. Bold: the best method of each pair. Models were "
            "selected (best epoch) and tuned on the validation split only.",
            accuracy_markdown(table, pairs, methods, n_seeds),
            f"## Difference from {BASELINE}",
            *delta_text,
            "## Calibration, agreement and cost",
            "Agreement: top-1 agreement on the test set with the model it was distilled from.",
            metrics_markdown(table),
            f"![accuracy by model]({accuracy_plot.relative_to(markdown.parent)})",
            "## Tuning (validation split)",
            tuning_markdown(trials),
            f"![tuning]({tuning_plot.relative_to(markdown.parent)})",
        ]
    )
    with atomic_write(markdown) as tmp:
        tmp.write_text(text + "\n")
    tags = {"role": "report", "method": "none"}
    with open_run(tracking, "report", tags, {"n_models": len(rows)}, output=str(markdown.parent)) as run:
        for p in (markdown, summary, accuracy_plot, deltas_plot, tuning_plot):
            run.log_artifact(p)
    return table
