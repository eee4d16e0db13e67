"""The GPU-slot allocator, without a GPU: the slot count comes from KDFLOW_GPU_SLOTS.

Every job is a real process (the lock is per process), started all at once.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kdflow import devices

# A job: take a slot, record when it held it, hold it a moment, exit (the kernel drops the lock).
JOB = """
import json, os, sys, time
from kdflow import devices
slot = devices.acquire()
start = time.time()
open(sys.argv[1] + ".ready", "w").close()
time.sleep(float(sys.argv[2]))
record = {"slot": slot, "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}
with open(sys.argv[1], "w") as f:
    json.dump(record, f)
"""


def job_env(lock_dir, slots):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return {**env, devices.SLOTS_ENV: str(slots), devices.LOCK_DIR_ENV: str(lock_dir)}


def start_job(tmp_path, name, env, hold=1.0, code=JOB):
    return subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / f"{name}.json"), str(hold)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path, seconds=30):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("slots", [1, 3])
def test_concurrent_jobs_never_share_a_slot_and_all_finish(tmp_path, slots):
    env = job_env(tmp_path / "locks", slots)
    procs = [start_job(tmp_path, f"job{i}", env) for i in range(3 * slots)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err

    records = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(3 * slots)]
    assert {r["slot"] for r in records} <= set(range(slots))
    assert all(r["cvd"] == str(r["slot"]) for r in records)
    for slot in range(slots):
        held = sorted((r["start"], r["end"]) for r in records if r["slot"] == slot)
        for (_, end), (next_start, _) in zip(held[:-1], held[1:]):
            assert next_start >= end, f"slot {slot} held twice at once: {held}"
    # Started together, 3N jobs of a second each spread over every slot.
    assert {r["slot"] for r in records} == set(range(slots))


def test_a_killed_holder_frees_its_slot(tmp_path):
    env = job_env(tmp_path / "locks", 1)
    holder = start_job(tmp_path, "holder", env, hold=600)
    wait_for(tmp_path / "holder.json.ready")
    waiter = start_job(tmp_path, "waiter", env, hold=0)
    time.sleep(1.5)
    assert waiter.poll() is None and not (tmp_path / "waiter.json").exists()  # waiting for slot 0

    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    waiter.communicate(timeout=30)
    assert waiter.returncode == 0
    assert json.loads((tmp_path / "waiter.json").read_text())["slot"] == 0


def test_a_preset_cuda_visible_devices_is_honoured(tmp_path):
    env = {**job_env(tmp_path / "locks", 2), "CUDA_VISIBLE_DEVICES": "1"}
    job = start_job(tmp_path, "preset", env, hold=0)
    _, err = job.communicate(timeout=60)
    assert "CUDA_VISIBLE_DEVICES=1 was set before the job" in err
    record = json.loads((tmp_path / "preset.json").read_text())
    assert record["slot"] is None and record["cvd"] == "1"
    assert not (tmp_path / "locks").exists()  # nothing was locked


def test_no_slots_is_a_no_op(tmp_path):
    job = start_job(tmp_path, "cpu", job_env(tmp_path / "locks", 0), hold=0)
    job.communicate(timeout=60)
    record = json.loads((tmp_path / "cpu.json").read_text())
    assert record["slot"] is None and record["cvd"] is None


def test_timeout_when_every_slot_is_held(tmp_path):
    env = job_env(tmp_path / "locks", 1)
    holder = start_job(tmp_path, "holder", env, hold=600)
    try:
        wait_for(tmp_path / "holder.json.ready")
        code = "from kdflow import devices\ndevices.acquire(timeout=1)"
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert "TimeoutError: no free GPU slot" in proc.stderr
    finally:
        holder.kill()
        holder.wait()


def test_the_job_entry_point_takes_a_slot(tmp_path):
    """kdflow.pipeline.smk.device(), which every training job calls (for its TrainConfig), takes the slot."""
    code = (
        "import os; from kdflow.pipeline.smk import device\n"
        "d = device(); device(); print(d, os.environ['CUDA_VISIBLE_DEVICES'])"
    )
    env = job_env(tmp_path / "locks", 2)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["cpu", "0"]  # slot 0; no CUDA on the test machine, so the CPU
    assert out.stderr.count("GPU slot 0 of 2") == 1  # decided once per job


def test_jobs_per_gpu_shares_each_device_among_that_many_jobs_at_most(tmp_path):
    env = {**job_env(tmp_path / "locks", 2), devices.JOBS_PER_GPU_ENV: "2"}  # 2 devices x 2 jobs
    procs = [start_job(tmp_path, f"job{i}", env) for i in range(8)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    records = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(8)]
    assert {r["slot"] for r in records} == {0, 1, 2, 3}
    assert all(r["cvd"] == str(r["slot"] % 2) for r in records)  # slot k on device k mod 2
    for device in ("0", "1"):
        spans = [(r["start"], r["end"]) for r in records if r["cvd"] == device]
        most = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
        assert most == 2, f"device {device}: {most} jobs at once"  # shared by two, never three


def test_a_bad_jobs_per_gpu_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(devices.JOBS_PER_GPU_ENV, "0")
    with pytest.raises(ValueError, match="KDFLOW_JOBS_PER_GPU='0'"):
        devices.jobs_per_device()
