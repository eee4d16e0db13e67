"""profiles/slurm on a real single-node SLURM cluster, checked against a local run of the same config.

tools/slurm/start.sh installs (apt, if missing) and starts munge, MariaDB, slurmdbd, slurmctld and slurmd
with two fake GPUs; tools/slurm/stop.sh stops them by PID. Needs root, as CI has. About 2-3 minutes:
every SLURM job starts Snakemake twice, and the executor polls sacct.

    .venv/bin/pytest -m slurm
"""

import os
import re
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools" / "slurm"
# The smallest config that still has every rule: one seed, no assistants, a 2-trial tuning study.
CONFIG = {
    "experiment": "tiny",
    "models": {
        "teacher": {"family": "cnn1d", "channels": 16, "layers": 2},
        "student": {"family": "mlp", "hidden": [16]},
    },
    "pairs": [{"teacher": "teacher", "student": "student"}],
    "seeds": [0],
    "train": {"epochs": 2},
    # No pruning (start-up trials = n_trials): with two workers, whether a trial is pruned would
    # depend on which finished first, and the test compares the SLURM run's values with a local run's.
    "tuning": {"n_trials": 2, "workers": 2, "pruner": {"n_startup_trials": 2, "warmup_fraction": 0.3}},
}
GPU_RULES = {"train", "distill", "tune_worker"}
ALL_RULES = GPU_RULES | {"prepare_data", "init_tracking", "cache_logits", "tune_start", "tune_select"}
ALL_RULES |= {"evaluate", "report"}


@contextmanager
def slurm_cluster(state: Path):
    if os.geteuid() != 0:
        pytest.skip("the SLURM test installs and starts system daemons: run it as root (CI does)")
    env = {**os.environ, "KDFLOW_SLURM_GPUS": "2"}
    proc = subprocess.run([TOOLS / "start.sh", state], env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode == 3:
        pytest.skip(f"apt could not install slurm-wlm, munge, slurmdbd, mariadb: {proc.stderr[-1500:]}")
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        yield {"SLURM_CONF": proc.stdout.strip().removeprefix("export SLURM_CONF=")}
    finally:
        subprocess.run([TOOLS / "stop.sh", state], timeout=120)


def start_snakemake(workdir: Path, env: dict, *args: str, nice: int = 0) -> subprocess.Popen:
    """Snakemake on CONFIG in `workdir`, in a process group of its own."""
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    cmd = [
        "nice",
        "-n",
        str(nice),
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
    ]
    cmd += ["--configfile", str(workdir / "config.yaml"), *args]
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def finish(proc: subprocess.Popen, timeout: float) -> str:
    """Its output once it succeeded; on a timeout the whole group is killed (the slurm executor
    ignores SIGTERM while it waits on sacct)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"snakemake ran over {timeout} s:\n{out[-5000:]}")
    assert proc.returncode == 0, out[-5000:]
    return out


def sacct_jobs(env: dict) -> list[tuple[str, str, str, str]]:
    """(rule, allocated TRES, state, elapsed) of every job the cluster ran. The executor plugin puts
    `rule_<name>[_wildcards_...]` in each job's comment."""
    fields = "--format=Comment%200,AllocTRES%200,State,Elapsed"
    out = subprocess.run(
        ["sacct", "--allusers", "-X", "-n", "-P", "--starttime=2020-01-01", fields],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    jobs = []
    for line in out.splitlines():
        comment, tres, state, elapsed = line.split("|")
        jobs.append((re.match(r"rule_(.+?)(?:_wildcards_.*)?$", comment).group(1), tres, state, elapsed))
    return jobs


def test_slurm_profile_runs_the_pipeline_as_a_local_run_does(tmp_path):
    base_env = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CUDA_VISIBLE_DEVICES")
    }
    with slurm_cluster(tmp_path / "cluster") as cluster:
        # The SLURM run mostly waits (job start-up, sacct polls): the local run, niced, fills the gaps.
        local = start_snakemake(tmp_path / "local", base_env, "--cores", "2", nice=19)
        try:
            # The lab's tracking store, handed to the jobs only through the environment.
            lab_db = tmp_path / "lab.db"
            env = {**base_env, **cluster, "MLFLOW_TRACKING_URI": f"sqlite:///{lab_db}"}
            profile = ["--profile", str(REPO / "profiles" / "slurm")]
            # The plugin polls sacct after 40 s by default, then each time 10 s later than the last
            # time unless a job ended. A job here takes about 11 CPU-seconds (Snakemake twice, then the
            # script): polls at 4 s and 18 s catch most jobs at the second poll.
            fast_polls = ["--slurm-init-seconds-before-status-checks", "4"]
            finish(start_snakemake(tmp_path / "slurm", env, *profile, *fast_polls), timeout=600)
            jobs = sacct_jobs(env)
        finally:
            finish(local, timeout=600)

    # Every job ran on the cluster; exactly the GPU rules asked for (and got) one GPU.
    print("\n".join(" ".join(job) for job in jobs))  # the per-job times, for the record
    assert {rule for rule, *_ in jobs} == ALL_RULES
    assert [rule for rule, *_ in jobs].count("tune_worker") == 2  # the study's two workers: two jobs
    for rule, tres, state, _ in jobs:
        assert state == "COMPLETED", (rule, state)
        assert ("gres/gpu=1" in tres) == (rule in GPU_RULES), (rule, tres)
    train_log = (tmp_path / "slurm" / "results/tiny/logs/train/teacher/seed0.log").read_text()
    assert re.search(r"CUDA_VISIBLE_DEVICES=[01] was set before the job", train_log)  # by SLURM

    # Same results as the local run: CPU training is deterministic for a seed, tuning included.
    key = ["model", "role", "method", "seed"]
    local = pd.read_parquet(tmp_path / "local/results/tiny/summary.parquet").sort_values(key)
    slurm = pd.read_parquet(tmp_path / "slurm/results/tiny/summary.parquet").sort_values(key)
    assert len(slurm) == 3
    cols = [*key, "test_acc", "best_val_acc", "temperature", "alpha"]
    pd.testing.assert_frame_equal(local[cols].reset_index(drop=True), slurm[cols].reset_index(drop=True))

    # The jobs logged to the URI in the submitting environment, not to a sqlite file of their own.
    from mlflow import MlflowClient

    assert not (tmp_path / "slurm/results/mlflow.db").exists()
    client = MlflowClient(f"sqlite:///{lab_db}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], max_results=1000)
    names = {r.info.run_name for r in runs}
    assert {"train/teacher/seed0", "train/student/seed0", "distill/kd/teacher__student/seed0"} <= names
    tune = "tune/kd/teacher__student"
    assert {tune, f"{tune}/worker0", f"{tune}/worker1"} <= names
