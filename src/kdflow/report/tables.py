"""The report's tables: rows from the metric files, summaries over seeds, paired differences, markdown.

    rows = load_rows(metric_files)             # one row per trained model and seed
    table = summarize(rows, pairs, methods)    # (pair, row) -> n_seeds, <metric>_mean, <metric>_std
    deltas = paired_deltas(rows, pairs, methods)
    print(accuracy_markdown(table, pairs, methods, n_seeds), deltas_markdown(deltas, pairs))

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
from kdflow.atomic import read_json

SCRATCH = "scratch"  # the method of a model trained from labels alone
BASELINE = "kd"  # the method every other is compared with, seed by seed
TEACHER, STUDENT = "teacher", "student (scratch)"  # the two fixed rows of a pair's column
METRICS = ["test_acc", "test_nll", "test_ece", "teacher_agreement", "throughput", "num_params"]
TRIAL_COLUMNS = {"trial", "state", "val_acc", "val_nll", "epochs_run", "pruned_reason", "method", "edge"}


def load_rows(metric_files: list[Path], metrics: list[str] = METRICS) -> pd.DataFrame:
    """One row per metric file, each of `metrics` a float column (NaN where a file lacks it)."""
    rows = pd.DataFrame([read_json(p) for p in metric_files])
    for m in metrics:
        if m not in rows:
            rows[m] = float("nan")
    rows[metrics] = rows[metrics].astype(float)  # teacher_agreement is None for scratch rows
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


def summarize(
    rows: pd.DataFrame, pairs: list[str], methods: list[str], metrics: list[str] = METRICS
) -> pd.DataFrame:
    """One line per (pair, row): seeds and each of `metrics`' mean and std, in config order."""
    lines = []
    for pair in pairs:
        for row in [TEACHER, STUDENT, *methods]:
            cell = cell_rows(rows, pair, row)
            line = {"pair": pair, "row": row, "model": cell.model.iloc[0] if len(cell) else None}
            line["n_seeds"] = cell.seed.nunique()
            for m in metrics:
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


def published_markdown(table: pd.DataFrame, published: dict, sources: dict) -> str:
    """Measured test accuracy beside the published one, for each (pair, row) the config gives a
    published number: `published` is {pair lineage: {row: %}}, its rows teacher, student or a
    method row; `sources` {row: where its numbers come from}."""
    cells = {(r.pair, r.row): r for r in table.itertuples()}
    lines = [
        "| pair | row | measured | published | measured − published | source |",
        "|---|---|---:|---:|---:|---|",
    ]
    for pair, values in published.items():
        for row, value in values.items():
            r = cells.get((pair, STUDENT if row == "student" else row))
            measured = "-" if r is None else _pm(r.test_acc_mean, r.test_acc_std, 100)
            diff = "-" if r is None or pd.isna(r.test_acc_mean) else f"{100 * r.test_acc_mean - value:+.2f}"
            label, source = STUDENT if row == "student" else row, sources.get(row, "-")
            lines.append(f"| {pair_label(pair)} | {label} | {measured} | {value:.2f} | {diff} | {source} |")
    return "\n".join(lines)


def methods_markdown(rows: list[dict]) -> str:
    """Where each row's method comes from: {row, method, paper, source, params, reconstruction};
    a method rebuilt from an incomplete description says so, and which parts are whose, below."""
    lines = ["| row | method | paper | defaults from | set in the config |", "|---|---|---|---|---|"]
    notes = {}
    for r in rows:
        fixed = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        lines.append(f"| {r['row']} | {r['method']} | {r['paper']} | {r['source']} | {fixed} |")
        if r["reconstruction"]:
            notes[r["method"]] = r["reconstruction"]
    for method, text in notes.items():
        lines += ["", f"**{method} is a reconstruction.** {text}"]
    return "\n".join(lines)


def metrics_markdown(table: pd.DataFrame) -> str:
    lines = [
        "| pair | row | model | NLL | ECE % | agreement % | samples/s | params | seeds |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table.itertuples():
        if not r.n_seeds:  # a row restricted to other pairs (`pairs:` in its methods entry)
            continue
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


def paired_deltas(
    rows: pd.DataFrame,
    pairs: list[str],
    methods: list[str],
    baseline: str = BASELINE,
    metric: str = "test_acc",
    scale: float = 100.0,
):
    """Each method's `metric` minus the baseline's, per pair, over the seeds both have: the mean
    and a 95% t interval of the per-seed differences, times `scale` (test accuracy in percentage
    points by default; None without two seeds). Pairing by seed removes what the seed does to
    both (split, init, teacher)."""
    lines = []
    for pair in pairs:
        base = cell_rows(rows, pair, baseline).set_index("seed")[metric]
        for m in methods:
            if m == baseline:
                continue
            diff = scale * (cell_rows(rows, pair, m).set_index("seed")[metric] - base).dropna()
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


def tuning_markdown(
    trials: pd.DataFrame,
    value: str = "val_acc",
    label: str = "best val acc %",
    scale: float = 100.0,
    lowest: bool = False,
) -> str:
    """Per (method, edge) study: its trial counts, the best complete trial's tuned values and its
    `value` (times `scale`): the highest, or with `lowest` the lowest (an NLL, task generative)."""
    if trials.empty:
        return "Tuning was off: every method used its fixed hyperparameters."
    lines = [
        f"| method | edge | trials (complete / pruned / failed) | best tuned values | {label} |",
        "|---|---|---|---|---:|",
    ]
    for (method, edge), t in trials.groupby(["method", "edge"], sort=False):
        counts = " / ".join(str((t.state == s).sum()) for s in ("COMPLETE", "PRUNED", "FAIL"))
        done = t[t.state == "COMPLETE"].dropna(subset=[value])
        if done.empty:
            lines.append(f"| {method} | {pair_label(edge)} | {counts} | - | - |")
            continue
        best = done.loc[done[value].idxmin() if lowest else done[value].idxmax()]
        values = ", ".join(f"{c}={_value(best[c])}" for c in tuned_columns(t)) or "-"
        lines.append(f"| {method} | {pair_label(edge)} | {counts} | {values} | {scale * best[value]:.2f} |")
    return "\n".join(lines)


def sweep_table(rows: pd.DataFrame, student: str, teachers: list[str], methods: list[str]) -> pd.DataFrame:
    """A capacity-gap sweep: per teacher (by parameter count), its params and test accuracy, and
    the student's test accuracy distilled from it by each method; mean and std over seeds."""
    lines = []
    for t in teachers:
        pair = plan.SEP.join([t, student])
        line = {"teacher": t}
        for name, row in [("teacher", TEACHER), *((m, m) for m in methods)]:
            cell = cell_rows(rows, pair, row)
            line[f"{name}_mean"], line[f"{name}_std"], line[f"{name}_n"] = (
                cell.test_acc.mean(),
                cell.test_acc.std(),
                cell.seed.nunique(),
            )
            if row == TEACHER:
                line["params"] = cell.num_params.mean()
        lines.append(line)
    scratch = cell_rows(rows, plan.SEP.join([teachers[0], student]), STUDENT)
    out = pd.DataFrame(lines).sort_values("params", kind="stable").reset_index(drop=True)
    out.attrs["scratch"] = (scratch.test_acc.mean(), scratch.test_acc.std())
    return out


def sweep_markdown(table: pd.DataFrame, student: str, methods: list[str]) -> str:
    mean, std = table.attrs["scratch"]
    lines = [
        f"Student `{student}` alone (scratch): {_pm(mean, std, 100)}. "
        "Test accuracy (%), mean ± std over seeds.",
        "",
        "| teacher | params | teacher | " + " | ".join(methods) + " |",
        "|---|---:|---:|" + "---:|" * len(methods),
    ]
    for r in table.to_dict("records"):
        cells = [_pm(r[f"{m}_mean"], r[f"{m}_std"], 100) for m in ["teacher", *methods]]
        params = "-" if pd.isna(r["params"]) else f"{r['params']:,.0f}"
        lines.append(f"| {r['teacher']} | {params} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of test accuracy per trained model (model, method, lineage), assistants too;
    models ordered by size."""
    g = rows.groupby(["model", "method", "lineage"], sort=False)
    out = g.test_acc.agg(["mean", "std"]).join(g.num_params.first()).reset_index()
    return out.sort_values("num_params", kind="stable").reset_index(drop=True)
