"""One GPU per job on a local multi-GPU machine: a slot taken through a file lock.

    snakemake --cores all --resources gpu=4     # Snakemake counts GPU jobs; this module picks the device

Snakemake's `gpu` resource is only a counter: it never says *which* device a job gets. So a job that
trains calls `acquire()` (through `kdflow.pipeline.smk.device()`) before CUDA starts:

- `CUDA_VISIBLE_DEVICES` already set (by SLURM, or by the user): honoured, nothing is locked.
- otherwise the job takes the first free slot `k` among `KDFLOW_GPU_SLOTS` (default: the number of
  CUDA devices) by `flock` on `<lock dir>/gpu<k>.lock`, sets `CUDA_VISIBLE_DEVICES=k` and keeps the
  lock for the rest of its life. The kernel drops the lock when the process ends, SIGKILL included, so
  a crashed job never leaks a GPU. When every slot is held, it polls until one frees up.
- no slot at all (no GPU, `KDFLOW_GPU_SLOTS=0`): a no-op; the job runs on the CPU.

Several small jobs per GPU: a CIFAR ResNet-20 uses a few percent of a modern GPU, so aggregate
throughput grows with jobs sharing one. `KDFLOW_JOBS_PER_GPU=N` makes N slots per device (slot k
runs on device k mod devices, so jobs spread over the devices first); give Snakemake as many:

    KDFLOW_JOBS_PER_GPU=4 snakemake --cores all --resources gpu=4    # one GPU, four jobs on it

"Least used GPU" and round-robin both race (two jobs read the same state, pick the same device); a lock
is taken by exactly one process. The lock directory (`KDFLOW_GPU_LOCK_DIR`, default
`<tmp>/kdflow-gpu-slots`) is per machine and shared by all users, so concurrent pipelines share the GPUs.
"""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
import time
from pathlib import Path

SLOTS_ENV = "KDFLOW_GPU_SLOTS"
JOBS_PER_GPU_ENV = "KDFLOW_JOBS_PER_GPU"
LOCK_DIR_ENV = "KDFLOW_GPU_LOCK_DIR"
POLL_SECONDS = 0.5  # a job waiting for a GPU waits for a whole training run anyway

_decided = False  # acquire() decides once per process
_slot: int | None = None
_lock_fd: int | None = None  # held open for the process's lifetime: the open fd is the lock


def device_count() -> int:
    if os.environ.get(SLOTS_ENV, "").strip():
        return int(os.environ[SLOTS_ENV])
    import torch

    return torch.cuda.device_count()  # through NVML: counts without starting CUDA


def jobs_per_device() -> int:
    raw = os.environ.get(JOBS_PER_GPU_ENV, "").strip() or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{JOBS_PER_GPU_ENV}={raw!r}: allowed: a whole number >= 1 (jobs sharing one GPU)")
    return int(raw)


def slot_count() -> int:
    return device_count() * jobs_per_device()


def lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "kdflow-gpu-slots")


def _try_lock(path: Path) -> int | None:
    # Read-only is enough for flock, and works on a lock file another user created.
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _make_lock_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        return
    path.chmod(0o1777)  # like /tmp: every user can add a lock file, none can remove another's


def acquire(timeout: float | None = None) -> int | None:
    """The slot this process holds (taking one on the first call), or None when it locks none:
    `CUDA_VISIBLE_DEVICES` was set before the job started, or there are no slots. Raises TimeoutError
    when `timeout` seconds pass with every slot held."""
    global _decided, _slot, _lock_fd
    if _decided:
        return _slot
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        visible = os.environ["CUDA_VISIBLE_DEVICES"]
        print(f"kdflow: CUDA_VISIBLE_DEVICES={visible} was set before the job: using it", file=sys.stderr)
        _decided = True
        return None
    n, devices = slot_count(), device_count()
    if n <= 0:
        _decided = True
        return None
    root = lock_dir()
    _make_lock_dir(root)
    deadline = None if timeout is None else time.monotonic() + timeout
    waiting = False
    while True:
        for slot in range(n):
            fd = _try_lock(root / f"gpu{slot}.lock")
            if fd is not None:
                _decided, _slot, _lock_fd = True, slot, fd
                os.environ["CUDA_VISIBLE_DEVICES"] = str(slot % devices)
                print(
                    f"kdflow: GPU slot {slot} of {n} (CUDA_VISIBLE_DEVICES={slot % devices})", file=sys.stderr
                )
                return slot
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU slot among {n} in {root} after {timeout} s")
        if not waiting:
            print(f"kdflow: all {n} GPU slots in {root} are held; waiting", file=sys.stderr)
            waiting = True
        time.sleep(POLL_SECONDS)
