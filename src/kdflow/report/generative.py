"""The report of a `task: generative` experiment (kdflow.dgm): test NLL per pair x method.

    write_generative_report(metric_files=[...], trial_files=[...], pairs=[...], methods=[...], ...)

Rows come from each model's test_metrics.json (kdflow.dgm.jobs.evaluate) and are the
classification report's (kdflow.report.tables: a pair's column holds its teacher, its student
trained alone on the real data, then one row per method); the metric is the test negative
log-likelihood in nats per example, lower is better. Beside it: paired differences from kd4dgm,
the importance weights' effective sample size (how far to trust an estimate), the samples' MMD and
classifier-feature Fréchet distance to the test split, the tuning, and one sample grid per pair.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from kdflow.atomic import atomic_write, read_json
from kdflow.report.plots import _method_colors, _plt, _save
from kdflow.report.tables import (
    STUDENT,
    TEACHER,
    _pm,
    cell_rows,
    deltas_markdown,
    load_rows,
    load_trials,
    methods_markdown,
    pair_label,
    paired_deltas,
    parquet_safe,
    summarize,
    tuning_markdown,
)
from kdflow.tracking import TrackingSpec, open_run

BASELINE = "kd4dgm"  # the paper's method: every other row is compared with it, seed by seed
GEN_METRICS = ["test_nll", "ess_median", "ess_below_10", "mmd2", "fd_clf", "num_params"]
REAL = "student (real data)"  # the scratch student: trained alone by its ELBO on the training split


def _label(row: str) -> str:
    return REAL if row == STUDENT else row


def metric_markdown(table: pd.DataFrame, pairs: list[str], methods: list[str], metric: str, digits: int = 2,
                    bold_lowest: bool = True) -> str:  # fmt: skip
    """Rows teacher, real-data student, methods; a column per pair; mean ± std; the lowest method bold."""
    lines = ["| | " + " | ".join(pair_label(p) for p in pairs) + " |", "|---|" + "---:|" * len(pairs)]
    cells = {(r.pair, r.row): r for r in table.itertuples()}
    best = {}
    for p in pairs:
        means = [
            round(getattr(cells[p, m], f"{metric}_mean"), digits) for m in methods if cells[p, m].n_seeds
        ]
        best[p] = min((v for v in means if not math.isnan(v)), default=None)
    for row in [TEACHER, STUDENT, *methods]:
        out = []
        for p in pairs:
            r = cells[p, row]
            mean, std = getattr(r, f"{metric}_mean"), getattr(r, f"{metric}_std")
            text = _pm(mean, std, 1, digits)
            if bold_lowest and row in methods and r.n_seeds and round(mean, digits) == best[p]:
                text = f"**{text}**"
            out.append(text)
        lines.append(f"| {_label(row)} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def plot_nll(table: pd.DataFrame, pairs: list[str], methods: list[str], path: Path) -> None:
    """Test NLL per pair: one point per row (teacher, real-data student, methods) with its std."""
    plt = _plt()
    rows = [TEACHER, STUDENT, *methods]
    colors = {
        TEACHER: "black",
        STUDENT: "grey",
        **{m: c for m, c in _method_colors(methods).items() if m in methods},
    }
    fig, ax = plt.subplots(figsize=(1.2 + 1.4 * len(pairs), 3.6), layout="constrained")
    cells = {(r.pair, r.row): r for r in table.itertuples()}
    width = 0.8 / len(rows)
    for j, row in enumerate(rows):
        xs, ys, es = [], [], []
        for i, p in enumerate(pairs):
            r = cells[p, row]
            if r.n_seeds:
                xs.append(i - 0.4 + (j + 0.5) * width)
                ys.append(r.test_nll_mean)
                es.append(0 if pd.isna(r.test_nll_std) else r.test_nll_std)
        ax.errorbar(xs, ys, yerr=es, fmt="o", color=colors[row], label=_label(row), ms=4, capsize=2)
    ax.set_xticks(range(len(pairs)), [pair_label(p) for p in pairs], fontsize=7, rotation=15)
    ax.set_ylabel("test NLL (nats, lower is better)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)


def plot_samples(grids: list[tuple[str, np.ndarray]], path: Path, title: str, per_row: int = 16) -> None:
    """One row of samples per model: images as pictures, 2-D points as a scatter, signals as curves."""
    plt = _plt()
    kind = "image" if grids[0][1].ndim == 4 else "points" if grids[0][1].shape[-1] == 2 else "signal"
    cols = 1 if kind == "points" else per_row
    fig, axes = plt.subplots(len(grids), cols, figsize=(0.7 * cols + 1.5, 0.8 * len(grids) + 0.6),
                             squeeze=False, layout="constrained")  # fmt: skip
    for (label, x), row in zip(grids, axes):
        for k, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if kind == "image":
                ax.imshow(x[k].transpose(1, 2, 0).squeeze(-1), cmap="gray")
            elif kind == "points":
                ax.scatter(x[:, 0], x[:, 1], s=4)
            else:
                ax.plot(x[k], lw=0.8)
        row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def _grids(pair: str, methods: list[str], rows: pd.DataFrame) -> list:
    """(label, first samples) of each row of a pair, at the smallest seed it has."""
    out = []
    for row in [TEACHER, STUDENT, *methods]:
        cell = cell_rows(rows, pair, row)
        if not len(cell):
            continue
        first = cell.sort_values("seed").iloc[0]
        out.append((f"{_label(row)} (seed {first.seed})", np.load(Path(first["_dir"]) / "samples.npy")))
    return out


def continual_section(files: list[Path]) -> list[str]:
    """The continual-learning table (kdflow.dgm.continual) over the seeds' result files."""
    from kdflow.dgm.continual import ARMS, markdown_table, summarise

    runs = [read_json(p) for p in files]
    order = ("step1", *ARMS, "joint")  # the JSON's keys are sorted
    first, second = runs[0]["tasks"]
    return [
        "## Continual learning",
        f"A class-conditional ladder VAE learns task 1 (digits {first}), then task 2 (digits {second}). "
        "step1: after task 1. naive: step1 fine-tuned on task 2's real data alone. kd4dgm: the same plus "
        "KD4DGM against a frozen copy of step1 on its own samples of task 1's classes (no task-1 data). "
        "joint: trained on both tasks' data (a reference). Test NLL (nats per example, importance "
        "sampled) on each task after step 2; mean ± std over seeds; the last epoch of each phase kept.",
        markdown_table(summarise([{k: r["models"][k] for k in order} for r in runs]), len(runs)),
    ]


def _n_test(rows: pd.DataFrame) -> str:
    n = sorted({int(v) for v in rows.get("n_test", pd.Series(dtype=float)).dropna()})
    return "/".join(map(str, n)) or "the"


def write_generative_report(
    *,
    metric_files: list[Path],
    trial_files: list[Path],
    pairs: list[str],
    methods: list[str],
    summary: Path,
    markdown: Path,
    nll_plot: Path,
    grid_plots: list[Path],
    experiment: str,
    tracking: TrackingSpec,
    method_rows: list[dict] = (),
    dataset: str = "",
    continual_files: list[Path] = (),
) -> pd.DataFrame:
    rows = load_rows(metric_files, GEN_METRICS)
    rows["_dir"] = [str(p.parent) for p in metric_files]
    table = summarize(rows, pairs, methods, GEN_METRICS)
    n_seeds = rows.seed.nunique()
    vs_real = paired_deltas(rows, pairs, methods, STUDENT, "test_nll", 1.0)
    others = [m for m in methods if m != BASELINE] if BASELINE in methods else []
    vs_kd = paired_deltas(rows, pairs, [BASELINE, *others] if others else [], BASELINE, "test_nll", 1.0)
    trials = load_trials(trial_files)
    with atomic_write(summary) as tmp:
        parquet_safe(rows.drop(columns="_dir")).to_parquet(tmp, index=False)
    plot_nll(table, pairs, methods, nll_plot)
    for pair, path in zip(pairs, grid_plots, strict=True):
        plot_samples(_grids(pair, methods, rows), path, f"samples · {pair_label(pair)}")
    estimator = rows.nll_estimator.dropna().unique() if "nll_estimator" in rows else []
    paired = (
        "in nats (positive: worse), paired by seed (the same split, teacher and initialisation): mean "
        "[95% t interval] over the seeds both have."
    )
    delta_text = [
        f"Each method's test NLL minus that of the student trained on real data, {paired}",
        deltas_markdown(vs_real, pairs, REAL),
    ]
    if not vs_kd.empty:
        delta_text += [
            f"Each other method's test NLL minus `{BASELINE}`'s, the same way:",
            deltas_markdown(vs_kd, pairs, BASELINE),
        ]
    grids = [
        f"![samples, {pair_label(p)}]({g.relative_to(markdown.parent)})" for p, g in zip(pairs, grid_plots)
    ]
    text = "\n\n".join(
        [
            f"# kdflow report: {experiment} (generative)",
            "## Test negative log-likelihood (nats per example, lower is better)",
            f"Mean ± std over {n_seeds} seed(s), on {_n_test(rows)} test examples of {dataset} (inputs "
            "standardised by the training split). Teacher and student (real data): trained alone on the "
            "training split (by the ELBO; the Helmholtz machine by wake-sleep), the epoch chosen by the "
            "validation NLL (its bound; exact for the Helmholtz machine). Method rows: the student "
            "distilled from the teacher without data, its last epoch kept. Bold: the lowest method of each "
            "pair. Estimator: " + "; ".join(estimator) + ".",
            metric_markdown(table, pairs, methods, "test_nll"),
            f"![test NLL]({nll_plot.relative_to(markdown.parent)})",
            *(["## Methods", methods_markdown(list(method_rows))] if method_rows else []),
            "## Paired differences",
            *delta_text,
            "## How far to trust the NLL estimates",
            "Median effective sample size of the importance weights (Kish; of K proposal draws per test "
            "example); an ESS near 1 means one draw dominates and the estimate is loose (an NLL upper "
            "bound in expectation). The exact NLL (Helmholtz machine) has none.",
            metric_markdown(table, pairs, methods, "ess_median", 1, bold_lowest=False),
            "## Sample quality",
            "MMD² (unbiased, Gaussian kernels at 0.5/1/2 × the test split's median distance) between the "
            "model's samples and test examples:",
            metric_markdown(table, pairs, methods, "mmd2", 4),
            "Fréchet distance in the penultimate features of a small classifier trained on the training "
            "split (FD-clf; not FID):",
            metric_markdown(table, pairs, methods, "fd_clf", 2),
            *grids,
            "## Tuning (validation split)",
            tuning_markdown(trials, "val_nll", "best val NLL", 1.0, lowest=True),
            *(continual_section(continual_files) if continual_files else []),
        ]
    )
    with atomic_write(markdown) as tmp:
        tmp.write_text(text + "\n")
    tags = {"role": "report", "method": "none"}
    with open_run(tracking, "report", tags, {"n_models": len(rows)}, output=str(markdown.parent)) as run:
        for p in (markdown, summary, nll_plot, *grid_plots):
            run.log_artifact(p)
    return table
