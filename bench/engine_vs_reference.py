"""kdflow's training engine against the loop KD projects use today, side by side in one process.

    .venv/bin/python -m bench.engine_vs_reference            # 5 pairs x 3 repetitions, ~4 min
    .venv/bin/python -m bench.engine_vs_reference --quick    # 2 pairs x 1 repetition

The reference loop (`bench.common.reference_fit`) is written the way the official TAKD script and
RepDistiller train a student: a DataLoader over a TensorDataset (batch 128, shuffled), the frozen
teacher's forward pass on every batch, a KL loss, `loss.item()` every step, and a DataLoader pass
over the validation split each epoch. kdflow's engine trains the same student with the same
optimizer, schedule, batch size, epochs and seed, from teacher logits computed once (that pass is
included in its time). Both run single-threaded (`torch.set_num_threads(1)`, as a Snakemake job
with threads: 1 does). Prints samples/s (training samples x epochs / wall seconds) min/median/max
over repetitions, the ratio of medians, and each loop's final validation accuracy.

A third variant bounds what any eager engine could reach: the student's own training steps and
nothing else (forward, KD loss against teacher logits, backward, optimizer step, on batches sliced
in advance; no teacher pass, no shuffling, no metrics, no validation). Its ratio to the reference,
"bound", is the speed-up an engine would get if everything but those steps cost nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from bench.common import ALPHA, T, mmm, mnist1d_splits, reference_fit
from kdflow.engine import TrainConfig, fit, kd_objective, make_optimizer, predict_logits, scratch_objective
from kdflow.flat import FlatParameters
from kdflow.losses import kd_loss
from kdflow.models import build_model, count_parameters

PAIRS = [  # (teacher spec, student spec)
    ({"family": "cnn1d", "channels": 64, "layers": 3}, {"family": "cnn1d", "channels": 8, "layers": 2}),
    ({"family": "cnn1d", "channels": 64, "layers": 3}, {"family": "cnn1d", "channels": 16, "layers": 2}),
    ({"family": "cnn1d", "channels": 16, "layers": 2}, {"family": "cnn1d", "channels": 8, "layers": 2}),
    ({"family": "cnn1d", "channels": 128, "layers": 4}, {"family": "mlp", "hidden": [64]}),
    ({"family": "mlp", "hidden": [512, 512]}, {"family": "mlp", "hidden": [32]}),
]


def kdflow_fit(student, teacher, train, val, cfg: TrainConfig) -> float:
    logits = predict_logits(teacher, train.x)  # the cached teacher pass, timed with the fit
    result = fit(student, train, val, cfg, kd_objective(logits, T, ALPHA))
    return result.history[-1]["val_acc"]


def student_steps_only(student, teacher, train, val, cfg: TrainConfig) -> float:
    logits = predict_logits(teacher, train.x)  # not timed separately: it is ~1 % of the run
    flat = FlatParameters(student)
    opt = make_optimizer([flat.param], cfg)
    bs = cfg.batch_size
    starts = range(0, len(train), bs)
    batches = [(train.x[i : i + bs], train.y[i : i + bs], logits[i : i + bs]) for i in starts]
    student.train()
    for _ in range(cfg.epochs):
        for x, y, t in batches:
            loss = kd_loss(student(x), t, y, T, ALPHA)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            flat.collect_grads()
            opt.step()
    return float("nan")  # nothing validated


def timed(fn, spec, teacher, train, val, cfg) -> tuple[float, float]:
    torch.manual_seed(cfg.seed)
    student = build_model(spec, (40,), 10)
    start = time.perf_counter()
    acc = fn(student, teacher, train, val, cfg)
    return time.perf_counter() - start, acc


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    pairs, reps = (PAIRS[:2], 1) if args.quick else (PAIRS, args.reps)
    torch.set_num_threads(1)

    train, val = mnist1d_splits()
    cfg = TrainConfig(epochs=args.epochs, batch_size=128, seed=0)
    samples = len(train) * cfg.epochs

    print(f"{cfg.epochs} epochs x {len(train)} samples, batch {cfg.batch_size}, {reps} repetitions, 1 thread")
    header = "teacher (params) -> student (params)"
    print(
        f"| {header} | reference samples/s | kdflow samples/s | ratio | student steps alone samples/s "
        "| bound | val acc ref / kdflow |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    ratios, bounds = [], []
    for t_spec, s_spec in pairs:
        torch.manual_seed(0)
        teacher = build_model(t_spec, (40,), 10)
        fit(teacher, train, val, TrainConfig(epochs=15, seed=0), scratch_objective())  # a real teacher
        runs = {"ref": [], "kdflow": [], "steps": []}
        for _ in range(reps):  # interleaved, so drifts in machine load hit all alike
            runs["ref"].append(timed(reference_fit, s_spec, teacher, train, val, cfg))
            runs["kdflow"].append(timed(kdflow_fit, s_spec, teacher, train, val, cfg))
            runs["steps"].append(timed(student_steps_only, s_spec, teacher, train, val, cfg))
        rate = {k: sorted(samples / t for t, _ in v) for k, v in runs.items()}
        med = {k: statistics.median(v) for k, v in rate.items()}
        ratios.append(med["kdflow"] / med["ref"])
        bounds.append(med["steps"] / med["ref"])
        name = (
            f"{_name(t_spec)} ({count_parameters(teacher):,}) -> "
            f"{_name(s_spec)} ({count_parameters(build_model(s_spec, (40,), 10)):,})"
        )
        print(
            f"| {name} | {mmm(rate['ref'])} | {mmm(rate['kdflow'])} | {ratios[-1]:.2f}x "
            f"| {mmm(rate['steps'])} | {bounds[-1]:.2f}x "
            f"| {runs['ref'][-1][1]:.3f} / {runs['kdflow'][-1][1]:.3f} |",
            flush=True,
        )
    geo = torch.tensor(ratios).log().mean().exp().item()
    bound = torch.tensor(bounds).log().mean().exp().item()
    print(f"\ngeometric-mean ratio (kdflow / reference samples/s): {geo:.2f}x")
    print(f"geometric-mean bound (student steps alone / reference samples/s): {bound:.2f}x")
    return 0


def _name(spec: dict) -> str:
    if spec["family"] == "mlp":
        return "mlp" + "x".join(map(str, spec["hidden"]))
    return f"cnn1d c{spec['channels']} l{spec['layers']}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
