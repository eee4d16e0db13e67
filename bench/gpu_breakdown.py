"""Where bench.gpu's time goes: the teacher pass, the bare training step, and the step's kernels.

    .venv/bin/python -m bench.gpu_breakdown                         # on a CUDA machine (~30 s)
    .venv/bin/python -m bench.gpu_breakdown --device cpu --quick    # the code path, on CPU

Same workload as bench.gpu (ResNet-56 teacher, ResNet-20 student, 32x32x3 random inputs). For each
batch: the seconds of kdflow's one teacher pass over the training split (inside bench.gpu's kdflow
rows), and the milliseconds of one bare KD training step (forward, loss, backward, AdamW; no
validation, no metrics), median of 20 after 5 warm-up steps, under settings `fit` does not choose
today: cuDNN autotuning (`torch.backends.cudnn.benchmark`) and the channels-last memory layout. Last,
torch.profiler's view of one step of the engine's default (fp32, eager): the GPU's busy time against
the wall time, and the kernels that take most of it.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from bench.common import ALPHA, T
from bench.gpu import CLASSES, FULL, QUICK, SHAPE, seconds, sync
from kdflow.engine import TrainConfig, make_optimizer, predict_logits
from kdflow.losses import kd_loss
from kdflow.models import build_model

# (precision, cudnn.benchmark, channels_last); the first is what `fit` runs by default
SETTINGS = [("fp32", False, False), ("fp32", True, False), ("bf16", False, False), ("bf16", True, False),
            ("bf16", True, True)]  # fmt: skip


def make_step(spec: dict, batch: int, precision: str, channels_last: bool, device: str):
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(spec, SHAPE, CLASSES).to(device, memory_format=layout).train()
    opt = make_optimizer(model.parameters(), TrainConfig(device=device))
    x = torch.randn(batch, *SHAPE, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, CLASSES, (batch,), device=device)
    t_logits = torch.randn(batch, CLASSES, device=device)
    autocast = torch.autocast(torch.device(device).type, torch.bfloat16, enabled=precision == "bf16")

    def step():
        with autocast:
            loss = kd_loss(model(x), t_logits, y, T, ALPHA)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def step_ms(step, device: str, warmup: int = 5, steps: int = 20) -> float:
    for _ in range(warmup):
        step()
    return 1000 * statistics.median(seconds(step, device) for _ in range(steps))


def teacher_pass_s(wl, device: str) -> float:
    torch.manual_seed(0)
    teacher = build_model(wl.teacher, SHAPE, CLASSES).to(device)
    x = torch.randn(wl.n_train, *SHAPE, device=device)
    predict_logits(teacher, x[:4096])  # warm-up
    return seconds(lambda: predict_logits(teacher, x), device)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    device, wl = args.device, QUICK if args.quick else FULL
    cuda = torch.device(device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu --quick to check the code path")
        return 2

    print(f"teacher {wl.teacher}: one pass over {wl.n_train:,} samples (predict_logits, fp32): "
          f"{teacher_pass_s(wl, device):.2f} s")  # fmt: skip

    print("\nbare KD training step, ms (median of 20)")
    print("| batch | " + " | ".join(f"{p}{', cudnn.benchmark' if b else ''}{', channels_last' if c else ''}"
                                    for p, b, c in SETTINGS) + " |")  # fmt: skip
    print("|---:|" + "---:|" * len(SETTINGS))
    saved = torch.backends.cudnn.benchmark
    for batch in wl.batches:
        cells = []
        for precision, bench_mode, channels_last in SETTINGS:
            torch.backends.cudnn.benchmark = bench_mode
            step = make_step(wl.student, batch, precision, channels_last, device)
            cells.append(f"{step_ms(step, device):.2f}")
        print(f"| {batch} | " + " | ".join(cells) + " |", flush=True)
    torch.backends.cudnn.benchmark = saved

    batch = wl.batches[-1]
    step = make_step(wl.student, batch, "fp32", False, device)
    wall = step_ms(step, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(5):
            step()
        sync(device)
    events = [e for e in prof.key_averages() if e.device_type.name == ("CUDA" if cuda else "CPU")]
    busy = sum(e.self_device_time_total if cuda else e.self_cpu_time_total for e in events) / 5 / 1000
    print(f"\nfp32 eager step at batch {batch}: wall {wall:.2f} ms, kernels busy {busy:.2f} ms per step")
    print("| kernel | ms per step | calls per step |")
    print("|---|---:|---:|")
    key = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
    for e in sorted(events, key=key, reverse=True)[:10]:
        print(f"| `{e.key[:90]}` | {key(e) / 5 / 1000:.2f} | {e.count / 5:g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
