"""The experiment report: a row per model and seed, a table of mean +/- std over seeds, plots.

    write_report(metric_files=[...test_metrics.json], trial_files=[...trials.parquet], ...)

Rows come from each model's test_metrics.json; nothing here knows the results-tree layout.
Students appear once per method (scratch / kd / takd), beside the teacher and the assistants.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kdflow.atomic import atomic_write, read_json
from kdflow.tracking import TrackingSpec, open_run

ROLE_ORDER = {"teacher": 0, "assistant": 1, "student": 2}
METHOD_ORDER = {"scratch": 0, "kd": 1, "takd": 2}
METRICS = ["test_acc", "test_nll", "test_ece", "teacher_agreement", "throughput"]


def load_rows(metric_files: list[Path]) -> pd.DataFrame:
    rows = pd.DataFrame([read_json(p) for p in metric_files])
    rows["label"] = [f"{r.model} ({r.method})" if r.role == "student" else r.model for r in rows.itertuples()]
    return rows


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (role, model, method), in chain order."""
    rows = rows.copy()
    for m in METRICS:
        if m not in rows:
            rows[m] = float("nan")
    first_seen = {m: i for i, m in enumerate(dict.fromkeys(rows["model"]))}
    g = rows.groupby(["role", "model", "method", "label"], sort=False)
    out = g[METRICS].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["num_params"] = g["num_params"].first()
    out["n_seeds"] = g["seed"].nunique()
    out = out.reset_index()
    out["_order"] = [
        (ROLE_ORDER[r.role], first_seen[r.model], METHOD_ORDER.get(r.method, 9)) for r in out.itertuples()
    ]
    return out.sort_values("_order").drop(columns="_order").reset_index(drop=True)


def _pm(mean: float, std: float, scale: float = 1.0, digits: int = 2) -> str:
    if pd.isna(mean):
        return "-"
    std_s = "" if pd.isna(std) else f" ± {std * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f}{std_s}"


def markdown_table(table: pd.DataFrame) -> str:
    lines = [
        "| model | role | method | params | test acc % | NLL | ECE % | agreement % | samples/s | seeds |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.model} | {r.role} | {r.method} | {r.num_params:,} "
            f"| {_pm(r.test_acc_mean, r.test_acc_std, 100)} | {_pm(r.test_nll_mean, r.test_nll_std, 1, 3)} "
            f"| {_pm(r.test_ece_mean, r.test_ece_std, 100)} "
            f"| {_pm(r.teacher_agreement_mean, r.teacher_agreement_std, 100, 1)} "
            f"| {r.throughput_mean:,.0f} | {r.n_seeds} |"
        )
    return "\n".join(lines)


def load_trials(trial_files: list[Path]) -> pd.DataFrame:
    frames = [pd.read_parquet(p).assign(edge=p.parent.name) for p in trial_files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def tuning_markdown(trials: pd.DataFrame) -> str:
    if trials.empty:
        return "Tuning was off: every edge used the fixed `kd.temperature` and `kd.alpha`."
    lines = [
        "| edge | trials (complete / pruned / failed) | best T | best alpha | best val acc % |",
        "|---|---|---:|---:|---:|",
    ]
    for edge, t in trials.groupby("edge", sort=False):
        done = t[t.state == "COMPLETE"]
        best = done.loc[done.val_acc.idxmax()] if len(done) else None
        counts = " / ".join(str((t.state == s).sum()) for s in ("COMPLETE", "PRUNED", "FAIL"))
        if best is None:
            lines.append(f"| {edge} | {counts} | - | - | - |")
        else:
            lines.append(
                f"| {edge} | {counts} | {best.temperature:.2f} | {best.alpha:.2f} "
                f"| {100 * best.val_acc:.2f} |"
            )
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(table: pd.DataFrame, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in table.itertuples():
        ax.errorbar(
            r.num_params,
            100 * r.test_acc_mean,
            yerr=0 if pd.isna(r.test_acc_std) else 100 * r.test_acc_std,
            fmt="o",
            capsize=3,
            label=r.label,
        )
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy against size (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_tuning(trials: pd.DataFrame, path: Path) -> None:
    plt = _plt()
    edges = list(dict.fromkeys(trials["edge"])) if not trials.empty else []
    fig, axes = plt.subplots(max(1, len(edges)), 2, figsize=(9, 3 * max(1, len(edges))), squeeze=False)
    for row, edge in zip(axes, edges):
        t = trials[trials.edge == edge]
        for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
            s = t[t.state == state]
            row[0].scatter(s.temperature, 100 * s.val_acc, marker=marker, label=state.lower())
            row[1].scatter(s.alpha, 100 * s.val_acc, marker=marker, label=state.lower())
        row[0].set_xscale("log")
        row[0].set_xlabel("temperature T")
        row[1].set_xlabel("alpha")
        for ax in row:
            ax.set_ylabel("val acc (%)")
            ax.set_title(edge, fontsize=9)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=8)
    if not edges:
        axes[0][0].text(0.5, 0.5, "tuning off", ha="center")
    fig.suptitle("Optuna trials: validation accuracy against T and alpha")
    _save(fig, path)


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)


def write_report(
    *,
    metric_files: list[Path],
    trial_files: list[Path],
    summary: Path,
    markdown: Path,
    accuracy_plot: Path,
    tuning_plot: Path,
    experiment: str,
    tracking: TrackingSpec,
) -> pd.DataFrame:
    rows = load_rows(metric_files)
    table = summarize(rows)
    trials = load_trials(trial_files)
    with atomic_write(summary) as tmp:
        rows.to_parquet(tmp, index=False)
    plot_accuracy(table, accuracy_plot)
    plot_tuning(trials, tuning_plot)
    text = "\n\n".join(
        [
            f"# kdflow report: {experiment}",
            "Test-set metrics, mean ± std over seeds. Models were selected (best epoch) and tuned "
            "(T, alpha) on the validation split only. Agreement: top-1 agreement with the model it "
            "was distilled from.",
            markdown_table(table),
            "## Tuning (validation split)",
            tuning_markdown(trials),
            f"![accuracy against parameters]({accuracy_plot.relative_to(markdown.parent)})",
            f"![tuning]({tuning_plot.relative_to(markdown.parent)})",
        ]
    )
    with atomic_write(markdown) as tmp:
        tmp.write_text(text + "\n")
    tags = {"role": "report", "method": "none"}
    with open_run(tracking, "report", tags, {"n_models": len(table)}, output=str(markdown.parent)) as run:
        for p in (markdown, summary, accuracy_plot, tuning_plot):
            run.log_artifact(p)
    return table
