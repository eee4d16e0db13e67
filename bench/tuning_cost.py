"""Wall time of one edge's Optuna study: kdflow's tuning against the usual way, in one process.

    .venv/bin/python -m bench.tuning_cost            # 8 trials x 60 epochs, 3 repetitions, ~6 min
    .venv/bin/python -m bench.tuning_cost --quick    # 4 trials x 20 epochs, 1 repetition

Same edge (the default teacher cnn1d c64 l3 -> student cnn1d c8 l2, teacher trained here first),
same search space, same trial count, same TPE seed, same training hyperparameters. Variants:
  usual       teacher forward on every batch of every trial, no pruning, one trial at a time
  +cache      teacher logits computed once and reused by every trial
  +prune      ... and median pruning (kdflow's default warmup: half the epochs)
  kdflow      ... and trials trained 8 at a time as one stacked student (the pipeline default)
Prints wall time min/median/max, the ratio to `usual`, and each study's best validation accuracy.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import kd_trial_context, mmm, mnist1d_splits, study_parser, study_size, trained_teacher
from kdflow.engine import TrainConfig, fit, live_kd_objective, predict_logits
from kdflow.trials import TrialContext, sequential_trainer, stacked_trainer
from kdflow.tuning import KD_SPACE, PrunerConfig, best_params, run_study

NO_PRUNING = PrunerConfig(n_startup_trials=10**6, n_warmup_steps=10**6)


def usual_trainer(teacher, ctx: TrialContext):
    """One trial at a time, the teacher evaluated on every batch, no pruning."""

    def train_batch(trials, params):
        out = []
        for p in params:
            objective = live_kd_objective(teacher, p["temperature"], p["alpha"])
            result = fit(ctx.new_distiller(p).student, ctx.train, ctx.val, ctx.cfg, objective)
            out.append(result.best_val_acc)
        return out

    return train_batch


def main(argv: list[str]) -> int:
    args = study_parser(__doc__.splitlines()[0], trials=8).parse_args(argv)
    trials, epochs, reps = study_size(args, quick_epochs=20)
    torch.set_num_threads(1)
    train, val = mnist1d_splits()
    teacher = trained_teacher(train, val)
    cfg = TrainConfig(epochs=epochs, seed=0)
    prune = PrunerConfig(n_startup_trials=4, n_warmup_steps=epochs // 2)

    def study(trainer, pruner, batch, make_logits):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            logits = make_logits()  # the cached variants pay for their one teacher pass here
            ctx = kd_trial_context(logits, train, val, cfg)
            s = run_study(Path(tmp) / "s.journal", "e", KD_SPACE, trials, 0, pruner, trainer(ctx), batch)
            return time.perf_counter() - start, best_params(s)["val_acc"]

    cached = lambda: predict_logits(teacher, train.x)  # noqa: E731
    variants = {
        "usual": lambda: study(lambda ctx: usual_trainer(teacher, ctx), NO_PRUNING, 1, lambda: None),
        "+cache": lambda: study(sequential_trainer, NO_PRUNING, 1, cached),
        "+prune": lambda: study(sequential_trainer, prune, 1, cached),
        "kdflow": lambda: study(stacked_trainer, prune, 8, cached),
    }
    runs = {name: [] for name in variants}
    for _ in range(reps):  # interleaved, so drifts in machine load hit every variant alike
        for name, run in variants.items():
            runs[name].append(run())
    print(f"one edge, {trials} trials x {epochs} epochs, TPE seed 0, {reps} repetitions, 1 thread")
    print("| variant | wall s median (min-max) | speed-up vs usual | best val acc |")
    print("|---|---:|---:|---:|")
    base = statistics.median(t for t, _ in runs["usual"])
    for name, values in runs.items():
        times = [t for t, _ in values]
        med = statistics.median(times)
        print(f"| {name} | {mmm(times, '.1f')} | {base / med:.2f}x | {values[-1][1]:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
