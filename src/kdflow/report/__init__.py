"""The experiment report: pairs x methods, mean ± std over seeds, paired differences from kd, plots.

    from kdflow.report import write_report
    write_report(metric_files=[...test_metrics.json], trial_files=[...trials.parquet],
                 pairs=["big__small", "big__mid__small"], methods=["kd", "dkd"], ...)

kdflow.report.tables turns the metric and trial files into frames and markdown (what a row is, and
where trial files are found, is written there); kdflow.report.plots draws the figures from those
frames; write_report, here, writes summary.parquet, the markdown report and the three plots, and
logs them to the tracker. Every public name of both modules is importable from kdflow.report.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kdflow.atomic import atomic_write
from kdflow.report.plots import plot_accuracy, plot_deltas, plot_sweep, plot_tuning
from kdflow.report.tables import (
    BASELINE,
    METRICS,
    SCRATCH,
    STUDENT,
    TEACHER,
    TRIAL_COLUMNS,
    accuracy_markdown,
    cell_rows,
    deltas_markdown,
    load_rows,
    load_trials,
    methods_markdown,
    metrics_markdown,
    model_summary,
    pair_label,
    paired_deltas,
    parquet_safe,
    published_markdown,
    summarize,
    sweep_markdown,
    sweep_table,
    t_cdf_two_sided,
    t_quantile,
    tuned_columns,
    tuning_markdown,
)
from kdflow.tracking import TrackingSpec, open_run

__all__ = [
    "BASELINE",
    "METRICS",
    "SCRATCH",
    "STUDENT",
    "TEACHER",
    "TRIAL_COLUMNS",
    "accuracy_markdown",
    "cell_rows",
    "deltas_markdown",
    "load_rows",
    "load_trials",
    "methods_markdown",
    "metrics_markdown",
    "plot_sweep",
    "sweep_markdown",
    "sweep_table",
    "model_summary",
    "pair_label",
    "paired_deltas",
    "published_markdown",
    "parquet_safe",
    "plot_accuracy",
    "plot_deltas",
    "plot_tuning",
    "summarize",
    "t_cdf_two_sided",
    "t_quantile",
    "tuned_columns",
    "tuning_markdown",
    "write_report",
]


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
    method_rows: list[dict] = (),
    sweeps: list[dict] = (),
    sweep_plots: list[Path] = (),
    published: dict | None = None,
) -> pd.DataFrame:
    """The report; `method_rows` (kdflow.pipeline.smk.method_rows) says where each method row comes
    from; `published` ({"values": {pair: {row: %}}, "sources": {row: str}, "note": str}: the
    numbers a config quotes from papers, kdflow.pipeline.smk.published) are printed beside ours."""
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
    sweep_text = []
    for sweep, plot in zip(sweeps, sweep_plots, strict=True):
        sweep_rows = sweep_table(rows, sweep["student"], list(sweep["teachers"]), methods)
        # a row restricted to one pair (dml, which reads no teacher) has no curve to draw
        curves = [m for m in methods if (sweep_rows[f"{m}_n"] > 0).sum() >= 2]
        plot_sweep(sweep_rows, sweep["student"], curves, plot)
        sweep_text += [
            sweep_markdown(sweep_rows, sweep["student"], curves),
            f"![capacity gap of {sweep['student']}]({plot.relative_to(markdown.parent)})",
        ]
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
            *(_published_section(table, published) if published and published["values"] else []),
            *(["## Methods", methods_markdown(list(method_rows))] if method_rows else []),
            *(["## Capacity gap", *sweep_text] if sweep_text else []),
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
        for p in (markdown, summary, accuracy_plot, deltas_plot, tuning_plot, *sweep_plots):
            run.log_artifact(p)
    return table


def _published_section(table: pd.DataFrame, published: dict) -> list[str]:
    note = published.get("note") or ""
    return [
        "## Published numbers beside ours",
        "Test accuracy (%) measured here (mean ± std over the seeds) and as published. "
        "The protocols differ: kdflow selects the epoch on its validation split and never on test. " + note,
        published_markdown(table, published["values"], published.get("sources", {})),
    ]
