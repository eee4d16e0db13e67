"""The engine on a CIFAR-sized synthetic workload: samples/s and achieved TFLOP/s on a GPU.

    .venv/bin/python bench/gpu.py                         # on a CUDA machine (~3 min on one H100)
    .venv/bin/python bench/gpu.py --device cpu --quick    # the same code path, tiny, on CPU

Workload: 32x32x3 inputs (random, fixed seed), 10 classes, a CIFAR ResNet-56 teacher (its logits
computed once, as the pipeline caches them) and a ResNet-20 student trained by KD with kdflow's
`fit`: fp32, bf16 autocast, each with and without torch.compile. Also the reference loop (a
DataLoader over a TensorDataset, the teacher on every batch) in fp32. Achieved TFLOP/s counts the
student's training FLOPs (3x its forward FLOPs, counted by torch's FlopCounterMode) per second;
peak is measured on the device itself with a large bf16 (and fp32) matmul. Prints a table; the
reply of a `device` run carries it back.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from kdflow.data import Split
from kdflow.engine import TrainConfig, fit, kd_objective, predict_logits

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from engine_vs_reference import reference_fit  # noqa: E402

from kdflow.models import build_model  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype: torch.dtype, n: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 20
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def forward_flops(model, x) -> int:
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu --quick to check the code path")
        return 2
    n_train, n_val, epochs, batch = (512, 128, 1, 128) if args.quick else (20480, 2048, 3, 256)
    teacher_spec = {"family": "resnet", "depth": 8 if args.quick else 56}
    student_spec = {"family": "resnet", "depth": 8 if args.quick else 20, "width": 8 if args.quick else 16}

    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_val, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n_train + n_val,), generator=g)
    train, val = Split(x[:n_train], y[:n_train]), Split(x[n_train:], y[n_train:])
    torch.manual_seed(0)
    teacher = build_model(teacher_spec, (3, 32, 32), 10).to(device)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    size = 8192 if device.startswith("cuda") else 512
    peaks = {dt: matmul_peak(device, dt, size) for dt in (torch.bfloat16, torch.float32)}
    student = build_model(student_spec, (3, 32, 32), 10).to(device)
    train_flops = 3 * forward_flops(student, train.x[:batch].to(device)) / batch  # per sample

    bf16_peak, fp32_peak = peaks[torch.bfloat16], peaks[torch.float32]
    print(f"device: {name}; measured matmul peak: bf16 {bf16_peak:.1f}, fp32 {fp32_peak:.1f} TFLOP/s")
    print(f"student: {train_flops / 1e9:.3f} GFLOP per training sample (3x forward)")
    print(f"{n_train} samples x {epochs} epochs, batch {batch}")
    print("| loop | precision | compile | samples/s | TFLOP/s | % of bf16 peak |")
    print("|---|---|---|---:|---:|---:|")
    logits = predict_logits(teacher, train.x.to(device))
    variants = [("kdflow", p, c) for p in ("fp32", "bf16") for c in (False, True)]
    variants.append(("reference", "fp32", False))
    for loop, precision, compiled in variants:
        cfg = TrainConfig(
            epochs=epochs, batch_size=batch, precision=precision, compile=compiled, device=device
        )
        torch.manual_seed(0)
        model = build_model(student_spec, (3, 32, 32), 10)
        if compiled:  # compile once before timing: its one-off cost is not throughput
            warm = TrainConfig(epochs=1, batch_size=batch, precision=precision, compile=True, device=device)
            fit(
                model,
                Split(train.x[: 2 * batch], train.y[: 2 * batch]),
                val,
                warm,
                kd_objective(logits, 4.0, 0.9),
            )
        sync(device)
        start = time.perf_counter()
        if loop == "kdflow":
            fit(model, train, val, cfg, kd_objective(logits, 4.0, 0.9))
        else:
            reference_fit(model.to(device), teacher, train.to(device), val.to(device), cfg)
        sync(device)
        rate = n_train * epochs / (time.perf_counter() - start)
        tflops = rate * train_flops / 1e12
        pct = 100 * tflops / peaks[torch.bfloat16]
        print(f"| {loop} | {precision} | {compiled} | {rate:,.0f} | {tflops:.2f} | {pct:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
