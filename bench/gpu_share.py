"""Several training jobs sharing one GPU: aggregate samples/s for N = 1, 2, 4, 8 concurrent processes.

    PYTHONPATH=src python3 -m bench.gpu_share --device cuda --json out.json   # one GPU, ~2 min (estimated)
    .venv/bin/python -m bench.gpu_share --device cpu --quick                  # N = 1, 2, tiny: the code path

Each job is a separate Python process started with subprocess, as Snakemake starts a job. It takes
a GPU slot through kdflow.devices.acquire() with KDFLOW_JOBS_PER_GPU=N (a private lock directory),
as a pipeline job does, so all N share device 0. Each trains a CIFAR resnet20 student by KD from a
live resnet56 teacher (freshly initialised: the weights do not change a step's cost) with `engine.fit`:
random crop 4 + flip on the device, `live_kd_objective` (T = 4, alpha = 0.9), RepDistiller's SGD at
batch 64 (config/recipes/repdistiller_cifar100.yaml), fp32 unless --precision bf16, no validation,
one thread (`threads: 1`, as the pipeline's rules), on the same random uint8 CIFAR-shaped images
(fixed seed, 100 classes). No torch.compile: each process would pay its 15-40 s compile.

Timing: a job builds its data and models, runs an untimed warm-up fit on a few batches (CUDA
context, cuDNN handles), writes a ready file and waits for a start file, which the parent writes
once all N are ready (a barrier). It then times its fit (wall clock, the device synchronised) and
writes its start and end times and samples/s. Aggregate samples/s for N = all jobs' training samples
/ (last end - first start). Achieved TFLOP/s counts the student's training FLOPs (forward and
backward of one step, torch's FlopCounterMode, as bench/gpu.py) per sample, and also with the
teacher's forward added (what a live-KD job computes), against the bf16 matmul peak measured here
(square matmuls on random data, bench.gpu.matmul_peak) and, for fp32 runs on CUDA, the TF32 one.
On CPU the figures only check the code path (tiny sizes; the "peak" of 256^3 matmuls means little).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from bench.common import ALPHA, T, cifar_like_splits, mmm
from bench.gpu import flops_per_sample, matmul_peak, sync
from kdflow import devices
from kdflow.engine import TrainConfig, fit, live_kd_objective
from kdflow.models import build_model

TEACHER, STUDENT = "resnet56", "resnet20"
SHAPE, CLASSES = (3, 32, 32), 100
ROOT = Path(__file__).resolve().parent.parent  # the jobs run `python -m bench.gpu_share` from here


@dataclass(frozen=True)
class Size:
    n_train: int  # per job, a multiple of the batch
    epochs: int
    jobs: tuple[int, ...]
    matmul_n: int  # side of the square matmuls that measure the peak


SIZES = {  # cuda: ~5-20 s of timed training per N on an H100-class card
    ("cuda", False): Size(40960, 1, (1, 2, 4, 8), 8192),
    ("cuda", True): Size(2048, 1, (1, 2), 2048),
    ("cpu", False): Size(256, 1, (1, 2), 512),  # 2 cores: no more than 2 one-thread jobs
    ("cpu", True): Size(128, 1, (1, 2), 256),
}
WARMUP_BATCHES = 4


def train_config(job: dict) -> TrainConfig:
    return TrainConfig(
        epochs=job["epochs"], batch_size=64, lr=0.05, optimizer="sgd", nesterov=False, weight_decay=5e-4,
        scheduler="multistep", milestones=(150, 180, 210), augment_crop=4, augment_flip=True,
        precision=job["precision"], seed=job["rank"], device=job["device"],
    )  # fmt: skip


def worker(folder: Path, rank: int) -> int:
    """One job: warm up, wait at the barrier, time one fit, write result<rank>.json."""
    job = {**json.loads((folder / "job.json").read_text()), "rank": rank}
    slot = devices.acquire(timeout=60)  # before CUDA starts, as kdflow.pipeline.smk.device() does
    torch.set_num_threads(1)
    cfg = train_config(job)
    train, _ = cifar_like_splits(job["n_train"], 0, CLASSES)
    torch.manual_seed(rank)
    teacher = build_model({"family": TEACHER}, SHAPE, CLASSES).to(cfg.device).eval()
    objective = live_kd_objective(teacher, T, ALPHA)

    start = time.perf_counter()
    warm = train.head(WARMUP_BATCHES * cfg.batch_size)
    fit(build_model({"family": STUDENT}, SHAPE, CLASSES), warm, None, replace(cfg, epochs=1), objective)
    sync(cfg.device)
    warmup_s = time.perf_counter() - start
    (folder / f"ready{rank}").touch()
    while not (folder / "go").exists():
        time.sleep(0.005)

    student = build_model({"family": STUDENT}, SHAPE, CLASSES)
    sync(cfg.device)
    begin = time.time()  # wall clock: comparable across the processes
    fit(student, train, None, cfg, objective)
    sync(cfg.device)
    end = time.time()
    samples = job["n_train"] * job["epochs"]
    result = {"rank": rank, "slot": slot, "start": begin, "end": end, "samples": samples,
              "rate": samples / (end - begin), "warmup_s": warmup_s}  # fmt: skip
    (folder / f"result{rank}.json").write_text(json.dumps(result))
    return 0


def run_jobs(n: int, job: dict, timeout: float) -> list[dict]:
    """Start n job processes, release them together once all are ready, return their results."""
    with tempfile.TemporaryDirectory(prefix="kdflow-gpu-share-") as tmp:
        folder = Path(tmp)
        (folder / "job.json").write_text(json.dumps(job))
        env = {**os.environ, devices.JOBS_PER_GPU_ENV: str(n), devices.LOCK_DIR_ENV: str(folder / "locks")}
        cmd = [sys.executable, "-m", "bench.gpu_share", "--worker", str(folder), "--rank"]
        procs = [subprocess.Popen([*cmd, str(i)], cwd=ROOT, env=env) for i in range(n)]
        deadline = time.monotonic() + timeout
        try:
            while not all((folder / f"ready{i}").exists() for i in range(n)):
                failed = [p.returncode for p in procs if p.poll() not in (None, 0)]
                if failed or time.monotonic() > deadline:
                    raise RuntimeError(f"N={n}: a job failed ({failed}) or timed out before the barrier")
                time.sleep(0.01)
            (folder / "go").touch()
            for p in procs:
                p.wait(max(1.0, deadline - time.monotonic()))
        finally:
            for p in procs:  # only on failure or timeout: these are this run's own children
                if p.poll() is None:
                    p.kill()
                    p.wait()
        if any(p.returncode for p in procs):
            raise RuntimeError(f"N={n}: job exit codes {[p.returncode for p in procs]}")
        return [json.loads((folder / f"result{i}.json").read_text()) for i in range(n)]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, N = 1, 2: checks the code path")
    ap.add_argument("--jobs", type=int, nargs="+", help="the N to run (default 1 2 4 8; CPU 1 2)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--n-train", type=int, help="training images per job (a multiple of 64)")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds allowed for each N")
    ap.add_argument("--json", help="also write every measurement to this file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # a job's folder: run as one job
    ap.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(Path(args.worker), args.rank)
    cuda = torch.device(args.device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu --quick to check the code path")
        return 2
    size = SIZES[("cuda" if cuda else "cpu", args.quick)]
    job = {"device": args.device, "precision": args.precision, "n_train": args.n_train or size.n_train,
           "epochs": args.epochs or size.epochs}  # fmt: skip
    jobs = tuple(args.jobs or size.jobs)

    torch.manual_seed(0)
    student = build_model({"family": STUDENT}, SHAPE, CLASSES).to(args.device)
    teacher = build_model({"family": TEACHER}, SHAPE, CLASSES).to(args.device).eval()
    probe = torch.randn(64, *SHAPE, device=args.device)
    student_flops = flops_per_sample(student, probe, backward=True)
    with torch.no_grad():
        teacher_flops = flops_per_sample(teacher, probe, backward=False)
    peaks = {"bf16": matmul_peak(args.device, torch.bfloat16, size.matmul_n)}
    if cuda and args.precision == "fp32":  # cuDNN runs fp32 convolutions on TF32 tensor cores by default
        peaks["tf32"] = matmul_peak(args.device, torch.float32, size.matmul_n, tf32=True)
    del student, teacher, probe
    if cuda:
        torch.cuda.empty_cache()
    name = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"device: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}")
    print("measured peaks (" + ", ".join(f"{k} {v:.4g}" for k, v in peaks.items()) +
          f" TFLOP/s; {size.matmul_n}^3 matmuls, random data)")  # fmt: skip
    print(f"{STUDENT} training step {student_flops / 1e6:.0f} MFLOP per sample (forward + backward); "
          f"{TEACHER} forward {teacher_flops / 1e6:.0f} MFLOP per sample")  # fmt: skip
    print(f"each job: {job['n_train']:,} images x {job['epochs']} epoch(s), batch 64, {job['precision']}, "
          f"live KD, crop + flip, no validation, 1 thread; N = {', '.join(map(str, jobs))}\n")  # fmt: skip

    sys.stdout.flush()  # before the jobs write to the same stream
    rows, runs, agg = [], {}, {}
    peak = peaks["bf16"]
    for n in jobs:
        t0 = time.perf_counter()
        results = run_jobs(n, job, args.timeout)
        runs[n] = results
        span = max(r["end"] for r in results) - min(r["start"] for r in results)
        agg[n] = sum(r["samples"] for r in results) / span
        starts = [r["start"] for r in results]
        rates = [r["rate"] for r in results]
        step_tf, job_tf = agg[n] * student_flops / 1e12, agg[n] * (student_flops + teacher_flops) / 1e12
        tf32 = f" | {100 * job_tf / peaks['tf32']:.2f}" if "tf32" in peaks else ""
        rows.append(
            f"| {n} | {agg[n]:,.0f} | {agg[n] / agg[jobs[0]]:.2f}x | {mmm(rates)} | {step_tf:.2f} "
            f"| {100 * step_tf / peak:.2f} | {job_tf:.2f} | {100 * job_tf / peak:.2f}{tf32} "
            f"| {max(starts) - min(starts):.3f} | {span:.1f} |"
        )
        print(f"N={n}: {agg[n]:,.0f} samples/s aggregate over {span:.1f} s "
              f"({time.perf_counter() - t0:.0f} s with process start and warm-up)", flush=True)  # fmt: skip
        if args.json:  # after each N: a run cut short keeps what it measured
            with open(args.json, "w") as f:
                json.dump({"device": name, "torch": torch.__version__, "job": job, "peaks": peaks,
                           "student_flops": student_flops, "teacher_flops": teacher_flops,
                           "aggregate": agg, "runs": runs}, f, indent=1)  # fmt: skip

    tf32_head, tf32_rule = (" | with teacher, % of TF32 peak", "---:|") if "tf32" in peaks else ("", "")
    print(f"\n| N jobs | aggregate samples/s | x N={jobs[0]} | per job samples/s median (min-max) "
          f"| TFLOP/s student step | % of bf16 peak | TFLOP/s with teacher fwd | % of bf16 peak{tf32_head} "
          "| start spread s | timed span s |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|" + tf32_rule + "---:|---:|")
    print("\n".join(rows))
    best = max(agg, key=agg.get)
    one = agg.get(1, agg[jobs[0]])
    pct = lambda rate, flops: 100 * rate * flops / 1e12 / peak  # noqa: E731
    print(
        f"\none job: {pct(one, student_flops):.2f} % of the bf16 peak (student step); best N = {best}: "
        f"{agg[best]:,.0f} samples/s, {agg[best] / one:.2f}x one job, {pct(agg[best], student_flops):.2f} % "
        f"of the bf16 peak ({pct(agg[best], student_flops + teacher_flops):.2f} % with the teacher's forward)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
