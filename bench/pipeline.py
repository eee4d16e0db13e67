"""Wall time of the default pipeline and of dry runs on sweeps of 1,000+ jobs.

    .venv/bin/python -m bench.pipeline --dry-run-only   # dry runs only (~1 min)
    .venv/bin/python -m bench.pipeline                  # also the default pipeline (~10 min)

Each measurement is a fresh `snakemake` process over this repository's Snakefile in an empty
temporary directory (setup excluded: .venv must exist). Dry runs are repeated 5 times
(min/median/max); the full pipeline runs once (it is the `make run` workload: 3 seeds, tuning on,
MLflow on, data generated).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import mmm

REPO = Path(__file__).resolve().parents[1]


def snakemake(workdir: str, *args: str) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", workdir, "--cores", "2"]
    start = time.perf_counter()
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])
    return elapsed, proc.stdout + proc.stderr


def job_count(output: str) -> int:
    match = re.search(r"^total\s+(\d+)", output, re.M)
    return int(match.group(1)) if match else -1


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run-only", action="store_true")
    args = ap.parse_args(argv)
    print("| workload | jobs | wall s median (min-max) |")
    print("|---|---:|---:|")
    for name in ("sweep.yaml", "sweep_large.yaml"):
        times, jobs = [], -1
        for _ in range(5):
            with tempfile.TemporaryDirectory() as tmp:
                t, out = snakemake(tmp, "--configfile", str(REPO / "bench" / "configs" / name), "--dry-run")
                times.append(t)
                jobs = job_count(out)
        print(f"| dry run, bench/configs/{name} | {jobs:,} | {mmm(times, '.2f')} |", flush=True)
    if not args.dry_run_only:
        with tempfile.TemporaryDirectory() as tmp:
            t, out = snakemake(tmp, "--configfile", str(REPO / "config" / "config.yaml"))
            print(f"| default pipeline (config/config.yaml), from nothing | {job_count(out)} | {t:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
