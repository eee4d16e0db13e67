"""The engine on a CIFAR-sized synthetic workload on a GPU: samples/s and achieved TFLOP/s.

    .venv/bin/python -m bench.gpu                         # on a CUDA machine (~4 min on one H100)
    .venv/bin/python -m bench.gpu --device cpu --quick    # the same code path, tiny, on CPU
    PYTHONPATH=src python3 -m bench.gpu --json out.json   # where kdflow is not installed; raw numbers too

Workload: random 32x32x3 inputs with random labels of 10 classes (fixed seed; they carry no signal,
so no accuracy is reported), 40,960 training and 2,048 validation samples, 2 epochs per fit; a CIFAR
ResNet-56 teacher and a ResNet-20 student (kdflow.models' resnet family). At batch 256 and 1024:
  kdflow     `fit` with `kd_objective`: the teacher's logits computed once per fit (timed with it),
             data copied to the device once and batched by index; fp32 or bf16 autocast, each eager
             and with torch.compile (kdflow's `compile: true`, default mode)
  reference  `bench.common.reference_fit`: a DataLoader over host tensors, each batch copied to the
             device, the teacher's forward on every batch, `loss.item()` every step; fp32, eager
Each variant first runs a one-step fit on a fresh student (its wall time, compilation included, is
the compile table's "seconds to first step"), then the timed fit; repetitions interleave the
variants. samples/s = training samples x epochs / wall seconds of the fit, validation passes
included. Achieved TFLOP/s counts the student's training FLOPs (its forward and backward, as
torch's FlopCounterMode counts them) per second, against peaks measured here on random data: bf16
rows against the bf16 matmul peak, fp32 rows against the TF32 one (cuDNN runs fp32 convolutions on
TF32 tensor cores by default, `torch.backends.cudnn.allow_tf32`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import ALPHA, T, mmm, reference_fit
from kdflow.data import Split
from kdflow.engine import TrainConfig, fit, kd_objective, predict_logits
from kdflow.models import build_model, count_parameters

SHAPE, CLASSES = (3, 32, 32), 10
VARIANTS = [("kdflow", p, c) for c in (False, True) for p in ("fp32", "bf16")] + [
    ("reference", "fp32", False)
]


@dataclass(frozen=True)
class Workload:
    n_train: int  # a multiple of every batch: no short last batch, so compiled shapes stay static
    n_val: int
    epochs: int
    batches: tuple[int, ...]
    teacher: dict
    student: dict
    matmul_n: int  # side of the square matmuls that measure the peaks
    copy_bytes: int


# ResNet-20: ~41 M multiply-adds per 32x32 image forward; ResNet-56: ~125 M.
FULL = Workload(
    40960, 2048, 2, (256, 1024), {"family": "resnet", "depth": 56}, {"family": "resnet", "depth": 20},
    8192, 2**30,
)  # fmt: skip
TINY = {"family": "resnet", "depth": 8, "width": 4}
QUICK = Workload(512, 128, 1, (128,), {**TINY, "width": 8}, TINY, 256, 2**24)


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def seconds(fn, device: str) -> float:
    """Wall seconds of fn(), the device's queued work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def matmul_peak(device: str, dtype: torch.dtype, n: int, tf32: bool = False) -> float:
    """TFLOP/s of n x n x n products on random data: median of 5 timings of 10 products, after warm-up."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))

        def ten():
            for _ in range(10):
                a @ b

        ten()
        times = [seconds(ten, device) for _ in range(5)]
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return 10 * 2 * n**3 / statistics.median(times) / 1e12


def copy_bandwidth(device: str, nbytes: int) -> float:
    """GB/s of a device-to-device copy, bytes read plus bytes written."""
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = [seconds(lambda: dst.copy_(src), device) for _ in range(5)]
    return 2 * nbytes / statistics.median(times) / 1e9


def flops_per_sample(model, x: torch.Tensor, backward: bool) -> float:
    with FlopCounterMode(display=False) as counter:
        out = model(x)
        if backward:
            out.sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(x)


def fit_once(loop: str, student, teacher, train: Split, val: Split, cfg: TrainConfig) -> None:
    if loop == "reference":
        reference_fit(student, teacher, train, val, cfg)
        return
    train = train.to(cfg.device)
    logits = predict_logits(teacher, train.x)  # the cached teacher pass, paid once per fit
    fit(student, train, val, cfg, kd_objective(logits, T, ALPHA))


def run_variant(variant, batch: int, wl: Workload, teacher, train, val, device: str) -> tuple[float, float]:
    """(seconds to the first step of a fresh student, samples/s of its full fit)."""
    loop, precision, compiled = variant
    cfg = TrainConfig(
        epochs=wl.epochs, batch_size=batch, precision=precision, compile=compiled, device=device
    )
    torch.manual_seed(0)
    student = build_model(wl.student, SHAPE, CLASSES)
    one = Split(train.x[:batch], train.y[:batch])
    first = seconds(lambda: fit_once(loop, student, teacher, one, one, replace(cfg, epochs=1)), device)
    elapsed = seconds(lambda: fit_once(loop, student, teacher, train, val, cfg), device)
    return first, wl.n_train * wl.epochs / elapsed


def print_tables(rows: list[str], compile_rows: list[str]) -> None:
    print("\n| batch | loop | precision | compile | samples/s median (min-max) | ms/step | TFLOP/s "
          "| % of peak | x reference |")  # fmt: skip
    print("|---:|---|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print("\nseconds to the first step of a fresh student (one-step fit; compilation included)")
    print("| batch | precision | compile | rep 1 | later reps, median |")
    print("|---:|---|---|---:|---:|")
    print("\n".join(compile_rows), flush=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument(
        "--quick", action="store_true", help="a tiny workload, 1 repetition: checks the code path"
    )
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", help="also write every measurement to this file")
    args = ap.parse_args(argv)
    device = args.device
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu --quick to check the code path")
        return 2
    wl, reps = (QUICK, 1) if args.quick else (FULL, args.reps)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(wl.n_train + wl.n_val, *SHAPE, generator=g)
    y = torch.randint(0, CLASSES, (wl.n_train + wl.n_val,), generator=g)
    train, val = Split(x[: wl.n_train], y[: wl.n_train]), Split(x[wl.n_train :], y[wl.n_train :])
    torch.manual_seed(0)
    teacher = build_model(wl.teacher, SHAPE, CLASSES).to(device).eval()
    student = build_model(wl.student, SHAPE, CLASSES).to(device)
    probe = train.x[:256].to(device)
    student_flops = flops_per_sample(student, probe, backward=True)
    with torch.no_grad():
        teacher_flops = flops_per_sample(teacher, probe, backward=False)

    peak = {
        "bf16": matmul_peak(device, torch.bfloat16, wl.matmul_n),
        "tf32": matmul_peak(device, torch.float32, wl.matmul_n, tf32=True),
        "fp32": matmul_peak(device, torch.float32, wl.matmul_n),
    }
    name = torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
          f"{torch.backends.cudnn.version()}; cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
          f"cudnn.benchmark={torch.backends.cudnn.benchmark}")  # fmt: skip
    print(
        f"measured peaks ({wl.matmul_n}^3 matmul, random data): bf16 {peak['bf16']:.0f}, tf32 "
        f"{peak['tf32']:.0f}, fp32 {peak['fp32']:.1f} TFLOP/s; device copy "
        f"{copy_bandwidth(device, wl.copy_bytes):,.0f} GB/s (read + write)"
    )
    print(
        f"student {wl.student} ({count_parameters(student):,} params): {student_flops / 1e6:.0f} MFLOP "
        f"per training sample (forward + backward); teacher {wl.teacher} "
        f"({count_parameters(teacher):,} params): {teacher_flops / 1e6:.0f} MFLOP per forward"
    )
    print(f"{wl.n_train:,} samples x {wl.epochs} epochs per fit, {wl.n_val:,} val, {reps} repetitions\n")
    del student, probe

    rows, compile_rows, raw = [], [], []
    for batch in wl.batches:
        torch._dynamo.reset()  # each batch size compiles from scratch: its compile cost is its own
        few = Split(train.x[: 4 * batch], train.y[: 4 * batch])
        for loop in ("kdflow", "reference"):  # untimed: CUDA context, cuDNN and cuBLAS handles
            student = build_model(wl.student, SHAPE, CLASSES)
            fit_once(loop, student, teacher, few, few, TrainConfig(epochs=1, batch_size=batch, device=device))
        runs = {v: [] for v in VARIANTS}
        for rep in range(1, reps + 1):  # interleaved, so drifts in the machine's state hit all alike
            for v in VARIANTS:
                first, rate = run_variant(v, batch, wl, teacher, train, val, device)
                runs[v].append((first, rate))
                raw.append({"batch": batch, "variant": v, "rep": rep, "first_step_s": first, "rate": rate})
                what = " ".join(map(str, v))
                print(
                    f"batch {batch} rep {rep} {what}: first step {first:.2f} s, {rate:,.0f} samples/s",
                    flush=True,
                )
        ref = statistics.median(r for _, r in runs[VARIANTS[-1]])
        for (loop, precision, compiled), values in runs.items():
            rates = [r for _, r in values]
            med = statistics.median(rates)
            tflops = med * student_flops / 1e12
            pct = 100 * tflops / peak["bf16" if precision == "bf16" else "tf32"]
            rows.append(
                f"| {batch} | {loop} | {precision} | {'yes' if compiled else 'no'} | {mmm(rates)} "
                f"| {1000 * batch / med:.2f} | {tflops:.1f} | {pct:.1f} | {med / ref:.2f}x |"
            )
            if loop == "kdflow":
                firsts = [f for f, _ in values]
                later = f"{statistics.median(firsts[1:]):.2f}" if len(firsts) > 1 else "-"
                compile_rows.append(
                    f"| {batch} | {precision} | {'yes' if compiled else 'no'} | {firsts[0]:.2f} | {later} |"
                )
        print_tables(rows, compile_rows)  # after each batch size: a run cut short keeps what it measured
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"peaks": peak, "student_flops": student_flops, "runs": raw}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
