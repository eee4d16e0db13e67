"""Wall time of one edge's Optuna study run by 1, 2, ... worker processes on one journal.

    .venv/bin/python -m bench.tuning_workers                 # 16 trials x 60 epochs, 1 and 2 workers, 3 reps
    .venv/bin/python -m bench.tuning_workers --quick         # 4 trials x 10 epochs, 1 rep

What the pipeline's `tune_worker` jobs do (kdflow.tuning.run_study with worker=k, n_workers=W),
without Snakemake's job start-up: W processes, each one thread, claim trials of one study under the
journal's lock and train them as stacked students (at most ceil(n_trials / W) at a time, as the job
does). Same edge as bench.tuning_cost (teacher cnn1d c64 l3 -> student cnn1d c8 l2), same seed and
trial count. Prints wall time min/median/max per worker count, the speed-up against one worker, the
number of finished trials (always n_trials) and the best validation accuracy.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

from bench.common import kd_trial_context, mmm, mnist1d_splits, study_parser, study_size, trained_teacher
from kdflow.engine import TrainConfig, predict_logits
from kdflow.trials import stacked_trainer
from kdflow.tuning import KD_SPACE, PrunerConfig, best_params, count_finished, open_study, run_study

STACK = 8  # the pipeline's default tuning.parallel_trials


def worker(logits_file: str, journal: str, n_trials: int, epochs: int, k: int, n_workers: int, go) -> None:
    torch.set_num_threads(1)
    train, val = mnist1d_splits()
    logits = torch.load(logits_file, weights_only=True)
    cfg = TrainConfig(epochs=epochs, seed=0)
    ctx = kd_trial_context(logits, train, val, cfg, journal)
    pruner = PrunerConfig(n_startup_trials=4, n_warmup_steps=epochs // 2)
    batch = min(STACK, math.ceil(n_trials / n_workers))
    go.wait()  # start together, after the imports and data loading (a job's start-up is not timed)
    run_study(Path(journal), "e", KD_SPACE, n_trials, 0, pruner, stacked_trainer(ctx), batch, k, n_workers)


def study(logits_file: str, n_trials: int, epochs: int, n_workers: int) -> tuple[float, int, float]:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        journal = str(Path(tmp) / "s.journal")
        pruner = PrunerConfig(n_startup_trials=4, n_warmup_steps=epochs // 2)
        open_study(Path(journal), "e", 0, pruner)  # created up front, as tune_start does
        go = ctx.Barrier(n_workers + 1)
        args = (logits_file, journal, n_trials, epochs)
        procs = [ctx.Process(target=worker, args=(*args, k, n_workers, go)) for k in range(n_workers)]
        for p in procs:
            p.start()
        go.wait()
        start = time.perf_counter()
        for p in procs:
            p.join()
            assert p.exitcode == 0, p.exitcode
        wall = time.perf_counter() - start
        s = open_study(Path(journal), "e", 0, pruner)
        return wall, count_finished(s), best_params(s)["val_acc"]


def main(argv: list[str]) -> int:
    ap = study_parser(__doc__.splitlines()[0], trials=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args(argv)
    trials, epochs, reps = study_size(args, quick_epochs=10)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    train, val = mnist1d_splits()
    teacher = trained_teacher(train, val)
    with tempfile.TemporaryDirectory() as tmp:
        logits_file = str(Path(tmp) / "logits.pt")
        torch.save(predict_logits(teacher, train.x), logits_file)
        runs = {w: [] for w in args.workers}
        for _ in range(reps):  # interleaved, so drifts in machine load hit every variant alike
            for w in args.workers:
                runs[w].append(study(logits_file, trials, epochs, w))
    print(f"one edge, {trials} trials x {epochs} epochs, stacks of <= {STACK}, {reps} repetitions")
    print("| workers | wall s median (min-max) | speed-up vs 1 | finished trials | best val acc |")
    print("|---:|---:|---:|---:|---:|")
    base = statistics.median(t for t, _, _ in runs[args.workers[0]])
    for w, values in runs.items():
        times = [t for t, _, _ in values]
        finished = sorted({n for _, n, _ in values})
        accs = ", ".join(f"{a:.4f}" for _, _, a in values)
        print(f"| {w} | {mmm(times, '.1f')} | {base / statistics.median(times):.2f}x | {finished} | {accs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
