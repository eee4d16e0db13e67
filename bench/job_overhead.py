"""The fixed cost of one pipeline job: what a distillation job spends outside its training.

    .venv/bin/python -m bench.job_overhead            # 5 repetitions (~2 min)
    .venv/bin/python -m bench.job_overhead --reps 3

A matrix of pairs x methods x seeds runs hundreds of jobs, each a fresh Python process that
imports torch and MLflow, opens its MLflow run, loads the data and the teacher, trains, saves and
logs its model. Two measurements, each repeated and interleaved:

1. A real `distill` job of a 1-epoch kd student through `snakemake --forcerun` (the job's own
   benchmark file gives its wall time; `fit.json` its training seconds), with MLflow tracking on
   and off: the job's wall time minus its training is its fixed cost.
2. The pieces of that cost, each in a fresh process: importing torch, importing mlflow, and
   building the optimizer `fit` used before (torch's AdamW, whose constructor imports
   torch._dynamo) against the one it uses now (kdflow.optim.AdamW over the flat buffer).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import mmm

REPO = Path(__file__).resolve().parents[1]
CONFIG = {
    "experiment": "overhead",
    "models": {
        "teacher": {"family": "cnn1d", "channels": 16, "layers": 2},
        "student": {"family": "cnn1d", "channels": 8, "layers": 2},
    },
    "pairs": [{"teacher": "teacher", "student": "student"}],
    "methods": ["kd"],
    "seeds": [0],
    "train": {"epochs": 1},
    "tuning": {"enabled": False},
}
JOB = "results/overhead/distill/kd/teacher__student/seed0"
# What each piece costs in a fresh interpreter: a statement timed after the imports it needs.
PIECES = {
    "import torch": ("", "import torch"),
    "import mlflow": ("", "import mlflow"),
    "torch.optim.AdamW(...) (before)": (
        "import torch",
        "torch.optim.AdamW([torch.nn.Parameter(torch.zeros(8))])",
    ),
    "kdflow.optim.AdamW(...) (now)": (
        "import torch; from kdflow.optim import AdamW",
        "AdamW(torch.nn.Parameter(torch.zeros(8)), 3e-3, 1e-4)",
    ),
}


def snakemake(workdir: Path, config: dict, *args: str) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    cmd += ["--configfile", str(workdir / "config.yaml"), "--cores", "1", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])


def distill_job(workdir: Path, config: dict) -> tuple[float, float]:
    """(job wall seconds, training seconds) of one forced rerun of the distill job."""
    (workdir / JOB / "checkpoint.pt").unlink(missing_ok=True)  # or the rerun resumes, training nothing
    snakemake(workdir, config, "--forcerun", "distill", f"{JOB}/model.pt")
    bench = (workdir / "results/overhead/benchmarks/distill/kd/teacher__student/seed0.tsv").read_text()
    wall = float(bench.splitlines()[1].split("\t")[0])
    return wall, json.loads((workdir / JOB / "fit.json").read_text())["fit_seconds"]


def piece(setup: str, stmt: str) -> float:
    code = f"{setup}\nimport time\nt = time.perf_counter()\n{stmt}\nprint(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    variants = {"tracking on": CONFIG, "tracking off": {**CONFIG, "tracking": {"enabled": False}}}
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    pieces: dict[str, list[float]] = {name: [] for name in PIECES}
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {name: Path(tmp) / name.replace(" ", "_") for name in variants}
        for name, config in variants.items():  # data, teacher, its logits: made once, not timed
            dirs[name].mkdir()
            snakemake(dirs[name], config, f"{JOB}/model.pt")
        start = time.perf_counter()
        for _ in range(args.reps):
            for name, config in variants.items():
                runs[name].append(distill_job(dirs[name], config))
            for name, (setup, stmt) in PIECES.items():
                pieces[name].append(piece(setup, stmt))
    print(f"{args.reps} repetitions, interleaved, in {time.perf_counter() - start:.0f} s\n")
    print("| distill job, 1-epoch kd student | job wall s | training s | fixed cost s |")
    print("|---|---:|---:|---:|")
    for name, values in runs.items():
        wall, train = [v[0] for v in values], [v[1] for v in values]
        fixed = [w - t for w, t in values]
        print(f"| {name} | {mmm(wall, '.2f')} | {mmm(train, '.2f')} | {mmm(fixed, '.2f')} |")
    print("\n| piece, in a fresh process | seconds |")
    print("|---|---:|")
    for name, values in pieces.items():
        print(f"| {name} | {mmm(values, '.3f')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
