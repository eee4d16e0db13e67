"""Faults through the real workflow: real `snakemake` processes over the repository's Snakefile in
temporary directories, tracking to sqlite there, with secrets planted in the environment and in
the config (see SECRETS) to check that none of them is ever written.

- Kill and resume: training jobs SIGKILLed mid-epoch (train, distill, tune; the job alone, or
  Snakemake with it as when a node is lost); rerunning the same command finishes, redoes only
  unfinished work, and ends with the models and test metrics of an uninterrupted run, bit for bit.
- Tracking: a killed attempt's runs end KILLED and the fresh run has the same `kdflow.output` tag;
  4+ jobs writing to one sqlite store at once lose no run, metric or artifact.
- Divergence: a NaN loss fails its job naming stage and epoch; with --keep-going the rest finishes.
- Storage faults: a damaged checkpoint.pt, logits.pt, model.pt, study.journal or dataset stops its
  job with a message naming the file and the way to recover; nothing is trained on garbage.

    pytest -m slow tests/test_faults.py   # ~6 CPU-minutes: 8 min wall on 2 cores shared with others

Jobs checkpoint every epoch here (KDFLOW_CHECKPOINT_EVERY_S=0): they run for seconds, and the
default spacing (10 s) would leave no checkpoint to resume from.
"""

import hashlib
import json
import os
import re
import signal
import struct
import subprocess
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import helpers
import pandas as pd
import psutil
import pytest
import torch
import yaml
from helpers import RUN_ARTIFACTS, all_runs, ok, only_study, planned_jobs, snakemake_command, tracking_client

from kdflow.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

EPOCHS = 20  # ~1.5 s of training per job on an idle core: room for two kills mid-run
CONFIG_SECRET = "config-password-9d41e2"
SECRETS = {"MLFLOW_TRACKING_PASSWORD": "env-password-5f3a9c", "KDFLOW_TEST_API_TOKEN": "env-token-77e1b0"}
FAULTS = {
    "experiment": "faults",
    "models": {
        "teacher": {"family": "cnn1d", "channels": 16, "layers": 2},
        "student": {"family": "cnn1d", "channels": 8, "layers": 2},
    },
    "pairs": [{"teacher": "teacher", "student": "student"}],
    "methods": [{"method": "kd", "params": {"temperature": 4.0, "alpha": 0.5}}],
    "seeds": [0, 1],
    "train": {"epochs": EPOCHS},
    "tuning": {"enabled": False},
    # A shared config's server credentials, overridden by MLFLOW_TRACKING_URI (environment()):
    # only here to check that the password never reaches a file or a log.
    "tracking": {"uri": f"https://alice:{CONFIG_SECRET}@mlflow.example.org"},
}
KILLED = {**FAULTS, "seeds": [0]}  # the killed run: seed 0 of the reference's two
TUNED = {
    **KILLED,
    "methods": ["kd"],  # T and alpha tuned
    "tuning": {
        "enabled": True,
        "n_trials": 4,
        "parallel_trials": 2,
        "pruner": {"n_startup_trials": 4, "warmup_fraction": 0.5},
    },
}
RESULTS = "results/faults"
TUNE = f"{RESULTS}/tune/kd/teacher__student"
JOBS = ("train/teacher/seed0", "train/student/seed0", "distill/kd/teacher__student/seed0")
OUTPUTS = {"model.pt", "fit.json", "history.parquet", "logits.pt", "test_metrics.json"}
OUTPUTS |= {"best_params.json", "trials.parquet", "tracking.json", "mnist1d-seed42.npz"}
EXACT = ("test_acc", "test_nll", "test_ece", "teacher_agreement", "num_params", "best_val_acc", "best_epoch")


# ----------------------------------------------------------------------------- running snakemake


def environment(workdir: Path, **extra: str) -> dict:
    return {
        **os.environ,
        **SECRETS,
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'results' / 'mlflow.db'}",
        "KDFLOW_CHECKPOINT_EVERY_S": "0",
        **extra,
    }


def snakemake(workdir: Path, config: dict, *args: str, **env: str) -> subprocess.CompletedProcess:
    """A run with the secrets planted and tracking to workdir's sqlite store (see environment)."""
    return helpers.snakemake(workdir, config, *args, env=environment(workdir, **env))


def outputs(workdir: Path) -> dict[str, int]:
    """Declared outputs present now (not logs, resume state or the tracking store), with mtimes."""
    return {
        str(p.relative_to(workdir)): p.stat().st_mtime_ns
        for p in workdir.rglob("*")
        if p.name in OUTPUTS and ".snakemake" not in p.parts
    }


# ----------------------------------------------------------------------------- killing jobs


@dataclass
class KillPoint:
    """SIGKILL the job writing `log` once `progress(workdir)` reaches `at`."""

    log: str  # the job's log, relative to the workdir: which job it is
    progress: Callable[[Path], int]
    at: int
    whole: bool = False  # kill Snakemake and the job together (a lost node), not the job alone
    inspect: Callable[[Path], object] = lambda workdir: None  # state to remember after the kill
    killed_at: int | None = None  # progress after the kill: what a rerun resumes from
    seen: object = None
    done_before: dict = field(default_factory=dict)  # outputs that existed at the kill


def checkpoint_epoch(job: str) -> Callable[[Path], int]:
    def progress(workdir: Path) -> int:
        try:
            return load_checkpoint(workdir / RESULTS / job / "checkpoint.pt")["epoch"]
        except Exception:  # absent, or replaced while read
            return 0

    return progress


def _job_logs(root: psutil.Process, known: dict) -> list:
    """(process, its open log) of every running job under `root`; `known` caches found logs."""
    found = []
    for p in root.children(recursive=True):
        try:
            if p.pid not in known and any(".snakemake/scripts/" in a for a in p.cmdline()):
                logs = [f.path for f in p.open_files() if f.path.endswith(".log")]
                if logs:  # a job opens its log after its imports: look again until it has
                    known[p.pid] = (p, logs[0])
        except psutil.Error:
            continue
        if p.pid in known:
            found.append(known[p.pid])
    return found


def _run_until_a_kill(proc: subprocess.Popen, workdir: Path, pending: list[KillPoint]) -> KillPoint | None:
    root, known = psutil.Process(proc.pid), {}
    while proc.poll() is None:
        for job, log in _job_logs(root, known):
            for point in pending:
                if log.endswith(point.log) and point.progress(workdir) >= point.at:
                    time.sleep(0.02)  # into the next epoch
                    if point.whole:
                        os.killpg(proc.pid, signal.SIGKILL)
                    else:
                        job.send_signal(signal.SIGKILL)
                    psutil.wait_procs([job], timeout=30)
                    return point
        time.sleep(0.05)
    return None


def run_with_kills(workdir: Path, config: dict, args: list[str], points: list[KillPoint]) -> list[int]:
    """Run the same command again and again, SIGKILLing jobs at `points`, until a run ends without
    a kill; return the exit codes. After a whole-Snakemake kill, `--unlock` first (as a user must)."""
    cmd = snakemake_command(workdir, config, *args)
    codes = []
    for _ in range(2 * len(points) + 2):
        pending = [p for p in points if p.killed_at is None]
        with open(workdir / f"snakemake.{len(codes)}.out", "w") as out:
            proc = subprocess.Popen(
                cmd, env=environment(workdir), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                point = _run_until_a_kill(proc, workdir, pending)
                codes.append(proc.wait(timeout=600))
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
        if point is None:
            return codes
        point.killed_at, point.seen = point.progress(workdir), point.inspect(workdir)
        point.done_before = outputs(workdir)
        if point.whole:  # Snakemake's lock outlives it: it refuses to start until unlocked
            ok(subprocess.run([*cmd, "--unlock"], env=environment(workdir), capture_output=True, text=True))
    raise AssertionError(f"still killing after {len(codes)} runs")


# ----------------------------------------------------------------------------- MLflow


def runs_of(workdir: Path, job_dir: str, experiment: str = "faults") -> list:
    output = str((workdir / job_dir).resolve())
    return [r for r in all_runs(workdir, experiment) if r.data.tags.get("kdflow.output") == output]


# ----------------------------------------------------------------------------- fixtures


def reference_targets() -> list[str]:
    jobs = [job.replace("seed0", f"seed{seed}") for job in JOBS for seed in FAULTS["seeds"]]
    return [f"{RESULTS}/{job}/test_metrics.json" for job in jobs]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The uninterrupted run (two seeds, four jobs at a time: the concurrent-writers run too), up to
    the test metrics. It starts in the background, so the killed run proceeds meanwhile."""
    workdir = tmp_path_factory.mktemp("reference")
    with open(workdir / "snakemake.out", "w") as out:
        cmd = snakemake_command(workdir, FAULTS, "--cores", "4", *reference_targets())
        proc = subprocess.Popen(
            cmd, env=environment(workdir), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    yield workdir, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)


def finished(reference_run) -> Path:
    workdir, proc = reference_run
    assert proc.wait(timeout=900) == 0, (workdir / "snakemake.out").read_text()[-3000:]
    return workdir


@pytest.fixture(scope="module")
def reference(reference_run) -> Path:
    return finished(reference_run)


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """The same experiment (seed 0), one job at a time, killed at five points on the way."""
    workdir = tmp_path_factory.mktemp("killed")
    log = f"{RESULTS}/logs/{{}}.log"
    points = [
        KillPoint(log.format(JOBS[0]), checkpoint_epoch(JOBS[0]), 3),
        KillPoint(log.format(JOBS[0]), checkpoint_epoch(JOBS[0]), 12, whole=True),  # the resumed job
        KillPoint(log.format(JOBS[1]), checkpoint_epoch(JOBS[1]), 6),
        KillPoint(log.format(JOBS[2]), checkpoint_epoch(JOBS[2]), 3),
        KillPoint(log.format(JOBS[2]), checkpoint_epoch(JOBS[2]), 14, whole=True),
    ]
    codes = run_with_kills(workdir, KILLED, ["--cores", "1"], points)
    return workdir, points, codes


# ----------------------------------------------------------------------------- kill and resume


def state_dict(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_killed_train_and_distill_jobs_resume_to_the_uninterrupted_result(reference_run, killed):
    workdir, points, codes = killed
    reference = finished(reference_run)
    assert all(p.killed_at is not None for p in points), [(p.log, p.at, p.killed_at) for p in points]
    assert codes[-1] == 0 and all(c != 0 for c in codes[:-1]), codes
    assert (workdir / RESULTS / "report.md").exists()

    # Only unfinished work was redone: what was complete at each kill was never rewritten.
    now = outputs(workdir)
    for p in points:
        for path, mtime in p.done_before.items():
            assert now.get(path) == mtime, f"{path} was redone after the kill at {p.log}:{p.at}"

    for job in JOBS:
        ref, got = reference / RESULTS / job, workdir / RESULTS / job
        a, b = state_dict(ref / "model.pt"), state_dict(got / "model.pt")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), job
        fits = [json.loads((d / "fit.json").read_text()) for d in (ref, got)]
        assert fits[0]["model_sha256"] == fits[1]["model_sha256"], job  # the same bytes, even
        pd.testing.assert_frame_equal(
            pd.read_parquet(ref / "history.parquet"), pd.read_parquet(got / "history.parquet")
        )
        m_ref, m_got = (json.loads((d / "test_metrics.json").read_text()) for d in (ref, got))
        for key in EXACT:
            assert m_ref.get(key) == m_got.get(key), (job, key)
    t_ref, t_got = (
        torch.load(d / RESULTS / JOBS[0] / "logits.pt", weights_only=True) for d in (reference, workdir)
    )
    assert torch.equal(t_ref["train"], t_got["train"]) and torch.equal(t_ref["val"], t_got["val"])

    # MLflow: each killed attempt's run ended KILLED; one fresh FINISHED run per job, on the same
    # output, that logged only the epochs after its checkpoint.
    client = tracking_client(workdir)
    for job in JOBS:
        kills = [p for p in points if p.log.endswith(f"logs/{job}.log")]
        runs = runs_of(workdir, f"{RESULTS}/{job}")
        statuses = sorted(r.info.status for r in runs)
        assert statuses == sorted(["FINISHED"] + ["KILLED"] * len(kills)), (job, statuses)
        fresh = next(r for r in runs if r.info.status == "FINISHED")
        assert (
            fresh.info.run_id
            == json.loads((workdir / RESULTS / job / "fit.json").read_text())["mlflow_run_id"]
        )
        steps = [m.step for m in client.get_metric_history(fresh.info.run_id, "val_acc")]
        resumed_from = kills[-1].killed_at if kills else 0
        assert steps == list(range(resumed_from + 1, EPOCHS + 1)), (job, resumed_from, steps[:3])
    assert not [r.info.run_name for r in all_runs(workdir, "faults") if r.info.status == "RUNNING"]
    print(f"kill points survived: {[(p.log.split('logs/')[1], p.at, p.killed_at, p.whole) for p in points]}")


def trials(workdir: Path, tune: str = TUNE) -> list:
    study = only_study(workdir / tune / "study.journal")
    return [] if study is None else study.get_trials(deepcopy=False)


def trial_epochs(first: int = 0, worker: int | None = None, tune: str = TUNE) -> Callable[[Path], int]:
    """Epochs reached by the running trials numbered `first` or more (claimed by `worker`, if given)."""

    def progress(workdir: Path) -> int:
        try:
            running = [
                t
                for t in trials(workdir, tune)
                if t.number >= first
                and t.state.name == "RUNNING"
                and worker in (None, t.user_attrs.get("worker"))
            ]
        except Exception:  # a line being appended
            return 0
        return max((max(t.intermediate_values, default=0) for t in running), default=0)

    return progress


def finished_trials(workdir: Path, tune: str = TUNE) -> dict:
    return {
        t.number: (t.params, t.value, t.datetime_complete)
        for t in trials(workdir, tune)
        if t.state.name in ("COMPLETE", "PRUNED")
    }


def test_killed_tune_job_continues_its_study(killed):
    """Two trials per batch (stacked); kills in the second batch and in the rerun's first."""
    workdir = killed[0]
    target = f"{TUNE}/best_params.json"
    log = f"{RESULTS}/logs/tune/kd/teacher__student/worker0.log"  # the study's one worker
    points = [
        KillPoint(log, trial_epochs(2), 5, inspect=finished_trials),
        KillPoint(log, trial_epochs(4), 5, whole=True, inspect=finished_trials),
    ]
    upstream = outputs(workdir)
    codes = run_with_kills(workdir, TUNED, ["--cores", "1", target], points)
    assert all(p.killed_at is not None for p in points) and codes[-1] == 0, codes

    states = {t.number: t.state.name for t in trials(workdir)}
    assert states == {
        0: "COMPLETE",
        1: "COMPLETE",
        2: "FAIL",  # running when killed: failed on restart, not counted
        3: "FAIL",
        4: "FAIL",
        5: "FAIL",
        6: "COMPLETE",
        7: "COMPLETE",
    }, states
    best = json.loads((workdir / target).read_text())
    assert best["n_finished"] == 4
    assert set(points[0].seen) == {0, 1}  # trials finished before the kill are kept, not redone
    after = finished_trials(workdir)
    assert all(after[n] == v for n, v in points[0].seen.items())
    now = outputs(workdir)
    assert all(now[p] == m for p, m in upstream.items()), "tuning rewrote an upstream output"

    # MLflow: the two killed worker runs and their four unfinished trials' runs ended KILLED; the
    # edge's tuning run, opened before the worker and ended after it, FINISHED once.
    assert [r.info.status for r in runs_of(workdir, TUNE)] == ["FINISHED"]
    worker_runs = runs_of(workdir, f"{TUNE}/workers/0")
    assert sorted(r.info.status for r in worker_runs) == ["FINISHED", "KILLED", "KILLED"]
    by_trial = {
        int(r.data.tags["optuna_trial"]): r.info.status
        for r in all_runs(workdir, "faults")
        if "optuna_trial" in r.data.tags
    }
    assert by_trial == {
        0: "FINISHED",
        1: "FINISHED",
        2: "KILLED",
        3: "KILLED",
        4: "KILLED",
        5: "KILLED",
        6: "FINISHED",
        7: "FINISHED",
    }
    assert not [r.info.run_name for r in all_runs(workdir, "faults") if r.info.status == "RUNNING"]
    params = {t.number: t.params for t in trials(workdir)}
    assert (
        params[6] == params[4] == params[2] and params[7] == params[5] == params[3]
    )  # killed points retried
    print(f"tune kill points: {[(p.at, p.killed_at, p.whole) for p in points]}; trial params: {params}")


def test_a_killed_tuning_worker_is_resumed_and_the_study_ends_exact(tmp_path):
    """Two workers share a study; one is SIGKILLed mid-trial while the other runs on."""
    results = "results/workers"
    tune = f"{results}/tune/kd/teacher__student"
    config = {
        **TUNED,
        "experiment": "workers",
        # Long trials (80 epochs): both workers are in their first claim when the kill comes.
        "models": {**FAULTS["models"], "student": {**FAULTS["models"]["student"], "train": {"epochs": 80}}},
        "tuning": {**TUNED["tuning"], "workers": 2},
    }
    log = f"{results}/logs/tune/kd/teacher__student/worker1.log"

    def owners(workdir: Path) -> dict:
        return {t.number: (t.user_attrs.get("worker"), t.state.name) for t in trials(workdir, tune)}

    worker1, worker0 = trial_epochs(worker=1, tune=tune), trial_epochs(worker=0, tune=tune)

    def progress(workdir: Path) -> int:  # worker 1's epochs, once worker 0 is training too
        return worker1(workdir) if worker0(workdir) > 0 else 0

    point = KillPoint(log, progress, 5, inspect=owners)
    codes = run_with_kills(tmp_path, config, ["--cores", "2", f"{tune}/best_params.json"], [point])
    assert point.killed_at is not None and codes[-1] == 0 and codes[0] != 0, codes
    # After the kill's run ended: worker 0 finished its claim and claimed no more, since the study
    # was full with worker 1's trials still RUNNING; nobody failed those.
    seen = point.seen
    killed = sorted(n for n, (w, state) in seen.items() if w == 1 and state == "RUNNING")
    kept = sorted(n for n, (w, state) in seen.items() if w == 0)
    assert killed and kept and len(killed) + len(kept) == 4, seen
    assert all(seen[n][1] == "COMPLETE" for n in kept), seen

    by_number = {t.number: t for t in trials(tmp_path, tune)}
    states = {n: t.state.name for n, t in by_number.items()}
    assert sorted(n for n, s in states.items() if s == "FAIL") == killed  # worker 0's trials untouched
    done = [t for t in by_number.values() if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 4 and len(by_number) == 4 + len(killed)  # exactly n_trials, nothing extra
    retries = {t.user_attrs["retry_of"]: t for t in done if "retry_of" in t.user_attrs}
    assert sorted(retries) == killed  # each killed trial retried once, with its own (T, alpha),
    assert all(retries[n].params == by_number[n].params for n in killed)
    assert all(t.user_attrs["worker"] == 1 for t in retries.values())  # by the rerun of its worker
    best = json.loads((tmp_path / tune / "best_params.json").read_text())
    assert best["n_finished"] == 4

    # MLflow: the killed worker's run and its trials' runs KILLED, the rerun's FINISHED; the other
    # worker's run FINISHED once; everything under one tuning run.
    runs = all_runs(tmp_path, "workers")
    assert sorted(r.info.status for r in runs_of(tmp_path, f"{tune}/workers/1", "workers")) == [
        "FINISHED",
        "KILLED",
    ]
    assert [r.info.status for r in runs_of(tmp_path, f"{tune}/workers/0", "workers")] == ["FINISHED"]
    (tune_run,) = runs_of(tmp_path, tune, "workers")
    worker_runs = [r for r in runs if re.search(r"/worker\d$", r.info.run_name)]
    assert len(worker_runs) == 3  # worker 0's, and worker 1's killed and rerun
    assert {r.data.tags["mlflow.parentRunId"] for r in worker_runs} == {tune_run.info.run_id}
    trial_status = {
        int(r.data.tags["optuna_trial"]): r.info.status for r in runs if "optuna_trial" in r.data.tags
    }
    assert {n for n, s in trial_status.items() if s == "KILLED"} == set(killed)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    assert all(by_number[n].state.name == "COMPLETE" for n in kept)  # not redone, not failed
    print(f"worker kill: mid-trial (epoch >= 5); after it {seen}; in the end {states}")


# ----------------------------------------------------------------------------- tracking


def max_overlap(spans: list[tuple[int, int]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    live = best = 0
    for _, delta in events:
        live += delta
        best = max(best, live)
    return best


def test_concurrent_writers_lose_no_run_metric_or_artifact(reference):
    client = tracking_client(reference)
    runs = all_runs(reference, "faults")
    fits = [*(reference / RESULTS).glob("train/*/seed*/fit.json")]
    fits += (reference / RESULTS).glob("distill/*/*/seed*/fit.json")
    job_dirs = sorted(p.parent for p in fits)
    assert len(job_dirs) == 6  # teacher, scratch student and kd student, two seeds
    # a run per training job, no more, no less (evaluation logs into the training run)
    assert sorted(r.info.run_name for r in runs) == sorted(
        str(d.relative_to(reference / RESULTS)) for d in job_dirs
    )
    assert {r.info.status for r in runs} == {"FINISHED"}
    overlap = max_overlap([(r.info.start_time, r.info.end_time) for r in runs])
    assert overlap >= 4, f"only {overlap} runs were open at once"

    points = artifacts = 0
    for d in job_dirs:
        fit = json.loads((d / "fit.json").read_text())
        run = client.get_run(fit["mlflow_run_id"])
        history = pd.read_parquet(d / "history.parquet")
        for column in history.columns.drop("epoch"):
            logged = client.get_metric_history(run.info.run_id, column)
            assert [(m.step, m.value) for m in logged] == list(zip(history.epoch, history[column])), (
                d,
                column,
            )
            points += len(logged)
        tested = json.loads((d / "test_metrics.json").read_text())
        for key in ("test_acc", "test_nll", "test_ece", "throughput"):
            assert run.data.metrics[key] == tested[key], (d, key)
        assert run.data.metrics["best_val_acc"] == fit["best_val_acc"]
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert names >= RUN_ARTIFACTS
        assert len(run.outputs.model_outputs) == 1  # mlflow.pytorch.log_model: a LoggedModel of the run
        artifacts += len(names) + 1
        local = client.download_artifacts(run.info.run_id, "model.pt", str(d.parent / f".{d.name}-artifact"))
        assert hashlib.sha256(Path(local).read_bytes()).hexdigest() == fit["model_sha256"]
    print(f"writers open at once: {overlap}; runs {len(runs)}, metric points {points}, artifacts {artifacts}")


def test_changed_training_settings_rerun_the_models_they_change(reference):
    """The shared train block and the split are not model specs: without them among the rules'
    params, a changed learning rate or split would silently keep the models trained otherwise."""

    def planned(config: dict) -> dict:
        dry_run = ok(snakemake(reference, config, "--dry-run", "--cores", "1", *reference_targets()))
        jobs = planned_jobs(dry_run)
        return {rule: n for rule, n in jobs.items() if rule in ("train", "distill")}

    assert planned(FAULTS) == {}  # unchanged: nothing to do
    assert planned({**FAULTS, "train": {**FAULTS["train"], "lr": 0.01}}) == {"train": 4, "distill": 2}
    assert planned({**FAULTS, "dataset": {"val_fraction": 0.25}}) == {"train": 4, "distill": 2}
    kd2 = [{"method": "kd", "params": {"temperature": 2.0, "alpha": 0.5}}]
    assert planned({**FAULTS, "methods": kd2}) == {"distill": 2}
    (reference / "config.yaml").write_text(yaml.safe_dump(FAULTS))


# ----------------------------------------------------------------------------- secrets


def test_no_secret_reaches_any_file_or_log(reference):
    resolved = (reference / RESULTS / JOBS[0] / "config.resolved.json").read_text()
    assert "https://***@mlflow.example.org" in resolved  # the redaction path did run
    secrets = [CONFIG_SECRET, *SECRETS.values()]
    leaks = []
    for path in reference.rglob("*"):
        if path.is_file() and path.name != "config.yaml":  # the user's own config holds the password
            data = path.read_bytes()
            leaks += [f"{path.relative_to(reference)}: {s}" for s in secrets if s.encode() in data]
    assert not leaks


def test_a_failed_jobs_log_never_shows_the_tracking_password(tmp_path):
    """MLflow's own error message quotes the whole tracking URI, password included."""
    secret = "uri-password-31c7aa"
    proc = snakemake(
        tmp_path,
        FAULTS,
        "--cores",
        "1",
        f"{RESULTS}/tracking.json",
        MLFLOW_TRACKING_URI=f"http://alice:{secret}@127.0.0.1:1",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="2",
    )
    assert proc.returncode != 0
    log = (tmp_path / RESULTS / "logs" / "init_tracking.log").read_text()
    assert "http://***@127.0.0.1:1" in log  # the error is there, the password is not
    texts = {"job log": log, "snakemake output": proc.stdout + proc.stderr}
    texts |= {str(p): p.read_text() for p in (tmp_path / ".snakemake" / "log").glob("*.log")}
    assert not [name for name, text in texts.items() if secret in text]


# ----------------------------------------------------------------------------- divergence


def test_diverging_job_fails_naming_stage_and_epoch_and_the_rest_finishes(tmp_path):
    config = {
        "experiment": "diverge",
        "models": {
            "teacher": {"family": "cnn1d", "channels": 8, "layers": 2},
            "assistant": {"family": "mlp", "hidden": [32], "train": {"lr": 1.0e6, "optimizer": "sgd"}},
            "student": {"family": "mlp", "hidden": [16]},
        },
        "seeds": [0],
        "train": {"epochs": 2},
        "tuning": {"enabled": False},
    }
    proc = snakemake(tmp_path, config, "--cores", "2", "--keep-going")
    assert proc.returncode != 0
    res = tmp_path / "results" / "diverge"
    stage = "distill/kd/teacher__assistant/seed0"
    message = re.compile(rf"DivergenceError: {stage}: training loss became (nan|inf|-inf) at epoch \d")
    assert message.search((res / "logs" / f"{stage}.log").read_text())
    assert message.search(proc.stdout + proc.stderr)  # shown by Snakemake too
    for done in ("train/teacher/seed0", "train/student/seed0", "distill/kd/teacher__student/seed0"):
        assert (res / done / "test_metrics.json").exists(), done  # the other branches finished
    assert not (res / stage / "model.pt").exists()
    assert not (res / "distill" / "kd" / "teacher__assistant__student").exists()
    assert not (res / "report.md").exists()
    failed = [r for r in all_runs(tmp_path, "diverge") if r.info.run_name == stage]
    assert [r.info.status for r in failed] == ["FAILED"]


# ----------------------------------------------------------------------------- storage faults


def damage(path: Path) -> None:
    """Flip one byte of data in place, keeping the mtime (bit rot does not touch it). In a zip file
    (torch.save, .npz) the byte is in the middle of the largest record's data: the file's middle
    byte may fall in alignment padding, which nothing reads, and the file would load as it was."""
    st = path.stat()
    raw = bytearray(path.read_bytes())
    at = len(raw) // 2
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            big = max(z.infolist(), key=lambda i: i.compress_size)
        name_len, extra_len = struct.unpack("<HH", raw[big.header_offset + 26 : big.header_offset + 30])
        at = big.header_offset + 30 + name_len + extra_len + big.compress_size // 2
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_damaged_files_stop_their_jobs_naming_the_file_and_the_fix(killed):
    workdir = killed[0]
    res = workdir / RESULTS
    logs = res / "logs"

    # The dataset: the evaluation of a finished model reads it again.
    data = workdir / "resources" / "mnist1d-seed42.npz"
    backup = data.read_bytes(), data.stat()
    damage(data)
    (res / JOBS[0] / "test_metrics.json").unlink()
    proc = snakemake(workdir, KILLED, "--cores", "1", f"{RESULTS}/{JOBS[0]}/test_metrics.json")
    assert proc.returncode != 0
    assert re.search(
        r"mnist1d-seed42\.npz is unreadable .*delete it and rerun to regenerate it", proc.stdout + proc.stderr
    )
    data.write_bytes(backup[0])
    os.utime(data, ns=(backup[1].st_atime_ns, backup[1].st_mtime_ns))

    # The Optuna journal: a garbled line in the middle.
    journal = workdir / TUNE / "study.journal"
    if not journal.exists():
        ok(snakemake(workdir, TUNED, "--cores", "1", f"{TUNE}/best_params.json"))
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:3] + [lines[3][:20] + "\n"] + lines[4:]))
    (workdir / TUNE / "best_params.json").unlink()
    proc = snakemake(workdir, TUNED, "--cores", "1", f"{TUNE}/best_params.json")
    assert proc.returncode != 0
    pattern = r"study\.journal is unreadable .*move it away to restart this edge's study"
    assert re.search(pattern, (logs / "tune" / "kd" / "teacher__student" / "select.log").read_text())
    assert not (workdir / TUNE / "best_params.json").exists()

    # Resume state, teacher-logit cache and a trained model, in one --keep-going run.
    damage(res / JOBS[1] / "checkpoint.pt")
    (res / JOBS[1] / "model.pt").unlink()  # so the job runs again and must resume
    damage(res / JOBS[0] / "logits.pt")
    (res / JOBS[2] / "model.pt").unlink()
    damage(res / JOBS[0] / "model.pt")
    targets = [
        f"{RESULTS}/{JOBS[1]}/model.pt",
        f"{RESULTS}/{JOBS[2]}/model.pt",
        f"{RESULTS}/{JOBS[0]}/test_metrics.json",
    ]
    proc = snakemake(workdir, KILLED, "--cores", "1", "--keep-going", *targets)
    assert proc.returncode != 0
    expected = {
        f"{JOBS[1]}.log": rf"{JOBS[1]}/checkpoint\.pt is corrupt or unreadable .*delete it and rerun",
        f"{JOBS[2]}.log": rf"{JOBS[0]}/logits\.pt is corrupt or unreadable .*cache_logits recomputes it",
        f"evaluate/{JOBS[0]}.log": rf"{JOBS[0]}/model\.pt does not match the sha256 .*Delete it and rerun",
    }
    for name, pattern in expected.items():
        assert re.search(pattern, (logs / name).read_text()), name
        assert re.search(pattern, proc.stdout + proc.stderr), name
    for target in targets:  # nothing was trained or evaluated on the damaged files
        assert not (workdir / target).exists(), target
