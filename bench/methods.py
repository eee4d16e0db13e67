"""Training cost per epoch of every registered method against kd's, on one pair, in one run.

    .venv/bin/python -m bench.methods             # 10 epochs, 3 repetitions, teachers 20 epochs
    .venv/bin/python -m bench.methods --quick     # 2 epochs, 1 repetition, teachers 2 epochs
    .venv/bin/python -m bench.methods --methods kd crd --reps 5   # some methods (kd is always in)

The pair: the default teacher cnn1d c64 l3 -> student cnn1d c8 l2 (bench.common, MNIST-1D, CPU,
one thread as a Snakemake job with `threads: 1`). FSP needs equal widths on both sides, so fsp
distils the same student from a deeper teacher of its width, cnn1d c8 l4 kernel 9 (the methods
example's pair 1); its row says so. The teachers' weights do not change the cost (their logits
and features are inputs), so they are trained briefly.

Per method, as the pipeline's jobs do it (kdflow.pipeline.jobs.train / pretrain): DistillSetup.build with
the authors' defaults (method.resolve()), timed: the teacher's feature pass over the training
split, the one-off cost; for a method with a pre-training stage (ab, ft, fsp), `fit` of
setup.stage_module(d) with the stage's loss (its epochs validate nothing); then `fit` of the distiller with
the method's loss, from the stage's output. Seconds per epoch: the fit's epochs (training and
validation) from its first hook to its last epoch's end, over the epoch count; the teacher's
logits are cached before, as the `cache_logits` job does. Reference rows: kd through
`engine.kd_objective` (the direct path, without the method machinery) and CE alone (scratch).
One warm-up fit of one epoch per row is excluded; repetitions are interleaved (rep 1: every
row, rep 2: every row, ...) so that drifts in machine load hit every row alike. Prints a markdown
table: median (min-max) over repetitions and the ratio of medians to kd's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from bench.common import STUDENT, TEACHER, mmm, mnist1d_splits, trained_teacher
from kdflow.callbacks import Callback
from kdflow.data import Split
from kdflow.distillation import DistillSetup
from kdflow.engine import TrainConfig, fit, kd_objective, predict_logits, scratch_objective
from kdflow.methods import METHODS
from kdflow.methods.base import Method
from kdflow.models import build_model, count_parameters

SHAPE, CLASSES = (40,), 10
FSP_TEACHER = {"family": "cnn1d", "channels": 8, "layers": 4, "kernel": 9}  # the student's width
DIRECT = "kd via engine.kd_objective (no method machinery)"
TARGET = 2.0  # every method within 2x of kd's epoch time (CRD's published ImageNet logs: 7.7x)


class _Clock(Callback):
    """Seconds per epoch of one fit: from its start hook to the last epoch's end."""

    def on_fit_start(self, start_epoch, epochs):
        self.start, self.epochs = time.perf_counter(), epochs - start_epoch

    def on_epoch_end(self, epoch, metrics):
        self.end = time.perf_counter()

    def per_epoch(self) -> float:
        return (self.end - self.start) / self.epochs


def epoch_seconds(model, train: Split, val: Split | None, cfg: TrainConfig, objective) -> float:
    clock = _Clock()
    fit(model, train, val, cfg, objective, callbacks=[clock])
    return clock.per_epoch()


@dataclass(frozen=True)
class Teacher:
    model: torch.nn.Module
    logits: torch.Tensor  # (N, C) on the training split, as the cache_logits job writes them


@dataclass(frozen=True)
class Row:
    label: str
    method: Method | None  # None: a reference row without the method machinery
    hp: dict
    teacher: Teacher


def measure(row: Row, train: Split, val: Split, cfg: TrainConfig) -> dict:
    """One repetition of one row: {"setup": s, "pretrain": s/epoch or None, "epoch": s/epoch}."""
    m, hp, t = row.method, row.hp, row.teacher
    if m is None:  # the direct paths: kd through engine.kd_objective, or CE alone
        torch.manual_seed(cfg.seed)
        student = build_model(STUDENT, SHAPE, CLASSES)
        objective = kd_objective(t.logits, **hp) if hp else scratch_objective()
        return {"setup": None, "pretrain": None, "epoch": epoch_seconds(student, train, val, cfg, objective)}
    start = time.perf_counter()
    # As kdflow.pipeline.jobs.distill_setup: the teacher model only for methods that read its features.
    teacher_model = t.model if m.feature_kind else None
    setup = DistillSetup.build(m, hp, STUDENT, SHAPE, CLASSES, teacher_model, train, t.logits)
    out = {"setup": time.perf_counter() - start, "pretrain": None}
    pretrained = None
    if m.pretrain is not None:
        d = setup.distiller(hp, cfg.seed, len(train))
        stage = setup.objective(hp, pretrain_of=d)
        out["pretrain"] = epoch_seconds(setup.stage_module(d), train, None, cfg, stage)
        pretrained = d.state_dict()
    d = setup.distiller(hp, cfg.seed, len(train), pretrained)
    out["epoch"] = epoch_seconds(d, train, val, cfg, setup.objective(hp))
    trained = sum(p.numel() for p in d.extra.parameters() if p.requires_grad)
    total = count_parameters(d.extra)
    out["added"] = f"{total:,}" + (f" ({trained:,} trained)" if trained != total else "")
    out["reads"] = ", ".join(setup.s_layers) or "logits"
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 epochs, 1 repetition, teachers 2 epochs")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--teacher-epochs", type=int, default=20)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = ap.parse_args(argv)
    epochs, reps, t_epochs = (2, 1, 2) if args.quick else (args.epochs, args.reps, args.teacher_epochs)
    torch.set_num_threads(1)
    train, val = mnist1d_splits()

    def teacher(spec: dict) -> Teacher:
        model = trained_teacher(train, val, spec, t_epochs)
        return Teacher(model, predict_logits(model, train.x))

    default = teacher(TEACHER)
    start = time.perf_counter()
    predict_logits(default.model, train.x)
    logits_s = time.perf_counter() - start
    fsp_teacher = teacher(FSP_TEACHER) if "fsp" in args.methods else None

    def row(name: str, overrides: dict | None = None, label: str = "") -> Row:
        m, hp = METHODS[name], METHODS[name].resolve(overrides)
        if name == "fsp":
            return Row(label or "fsp (teacher cnn1d c8 l4 k9)", m, hp, fsp_teacher)
        return Row(label or name, m, hp, default)

    kd = METHODS["kd"].resolve()
    direct = {"temperature": kd["temperature"], "alpha": kd["alpha"]}
    rows = [row(n) for n in ["kd", *(n for n in args.methods if n != "kd")]]
    rows += [
        row("kd", {"logit_std": True}, "kd, logit_std"),
        Row(DIRECT, None, direct, default),
        Row("CE alone (scratch, no teacher)", None, {}, default),
    ]

    for r in rows:  # warm-up: one epoch of every row (and stage), excluded
        measure(r, train, val, TrainConfig(epochs=1, seed=0))
    cfg = TrainConfig(epochs=epochs, seed=0)
    runs: dict[str, list[dict]] = {r.label: [] for r in rows}
    for _ in range(reps):  # interleaved, so drifts in machine load hit every row alike
        for r in rows:
            runs[r.label].append(measure(r, train, val, cfg))

    def size(spec: dict) -> str:
        return f"{count_parameters(build_model(spec, SHAPE, CLASSES)):,} params"

    print(
        f"MNIST-1D ({len(train):,} train / {len(val):,} val), teacher cnn1d c64 l3 ({size(TEACHER)}) -> "
        f"student cnn1d c8 l2 ({size(STUDENT)}); fsp: teacher cnn1d c8 l4 kernel 9 ({size(FSP_TEACHER)}), "
        "the same student"
    )
    print(
        f"{epochs} epochs per fit (batch 128, AdamW, validation every epoch), {reps} repetition(s) "
        f"interleaved, 1 thread, torch {torch.__version__}; teachers trained {t_epochs} epochs; "
        f"the teacher's logits pass (cached once, not in any row): {logits_s:.3f} s"
    )
    print(
        "| method | reads | added params (main stage) | setup s (teacher features) "
        "| pre-training stage s/epoch | s/epoch median (min-max) | x kd |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    base = statistics.median(v["epoch"] for v in runs["kd"])
    over = []
    for r in rows:
        values = runs[r.label]
        med = statistics.median(v["epoch"] for v in values)
        setup = [v["setup"] for v in values if v["setup"] is not None]
        pre = [v["pretrain"] for v in values if v["pretrain"] is not None]
        cells = [
            r.label,
            values[0].get("reads", "logits" if r.hp else "-"),
            values[0].get("added", "-"),
            mmm(setup, ".3f") if setup else "-",
            mmm(pre, ".3f") if pre else "-",
            mmm([v["epoch"] for v in values], ".3f"),
            f"{med / base:.2f}x",
        ]
        print("| " + " | ".join(cells) + " |")
        if r.method is not None and med / base > TARGET:
            over.append(f"{r.label} {med / base:.2f}x")
    verdict = "met" if not over else "not met: " + ", ".join(over)
    print(f"\nTarget (every method within {TARGET:g}x of kd's s/epoch): {verdict}")
    direct_med = statistics.median(v["epoch"] for v in runs[DIRECT])
    print(
        f"The method machinery on kd (DistillSetup / engine.kd_objective, s/epoch): {base / direct_med:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
