"""The workflow itself on tiny configs: lint, dry run, real runs in a temporary directory.

Each run is a real `snakemake` process over the repository's Snakefile, with real MLflow (sqlite)
and Optuna (journal) storage under the temporary directory.
"""

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from helpers import REPO, RUN_ARTIFACTS, all_runs, ok, only_study, planned_jobs, snakemake, tracking_client

TINY = {
    "experiment": "tiny",
    "models": {
        "teacher": {"family": "cnn1d", "channels": 16, "layers": 2},
        "assistant": {"family": "cnn1d", "channels": 8, "layers": 2},
        "student": {"family": "mlp", "hidden": [16]},
    },
    "seeds": [0, 1],
    "train": {"epochs": 3},
    # Two workers per study: the parallel-tuning path, with its MLflow nesting, end to end.
    "tuning": {"n_trials": 3, "workers": 2, "pruner": {"n_startup_trials": 1, "warmup_fraction": 0.3}},
}


def test_lint_is_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert "Lints for" not in proc.stdout + proc.stderr


def test_dry_run_of_default_config_plans_the_whole_dag(tmp_path):
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    proc = ok(snakemake(tmp_path, default, "--dry-run"))
    expected = {"train": 6, "distill": 9, "tune_start": 3, "tune_worker": 3, "tune_select": 3}
    expected |= {"evaluate": 15, "report": 1}
    planned = planned_jobs(proc)
    assert {rule: planned.get(rule) for rule in expected} == expected, (proc.stdout + proc.stderr)[-2000:]


@pytest.mark.slow
def test_tiny_pipeline_end_to_end(tmp_path):
    ok(snakemake(tmp_path, TINY, "--cores", "2"))
    results = tmp_path / "results" / "tiny"

    rows = pd.read_parquet(results / "summary.parquet")
    assert len(rows) == 2 * 5  # seeds x (teacher, assistant, scratch, kd, takd)
    assert sorted(rows.groupby(["role", "method"]).size().items()) == [
        (("assistant", "kd"), 2),
        (("student", "kd"), 2),
        (("student", "scratch"), 2),
        (("student", "takd"), 2),
        (("teacher", "scratch"), 2),
    ]
    assert rows.test_acc.between(0, 1).all() and (rows.test_acc > 0.1).any()
    report = (results / "report.md").read_text()
    assert "| student | student | takd |" in report and "±" in report
    for plot in ("accuracy_vs_params.png", "tuning.png"):
        assert (results / "plots" / plot).read_bytes()[:4] == b"\x89PNG"

    # Optuna: every edge's journal holds one study, with exactly the configured finished trials.
    for edge in ("teacher__assistant", "teacher__student", "assistant__student"):
        study = only_study(results / "tune" / edge / "study.journal")
        best = json.loads((results / "tune" / edge / "best_params.json").read_text())
        assert study.study_name == best["study"]
        done = [t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]
        assert len(done) == 3 and len(study.trials) == 3  # exactly n_trials, with two workers
        assert best["val_acc"] == study.best_value
        workers = [json.loads((results / "tune" / edge / f"workers/{k}.json").read_text()) for k in (0, 1)]
        mine = [n for w in workers for n in w["trials"]]  # what each worker says it ran
        assert sorted(mine) == [t.number for t in done]
        assert all(
            t.user_attrs["worker"] == w["worker"] for w in workers for t in done if t.number in w["trials"]
        )

    # MLflow: a run per job with the lineage tags; trials nested under their tuning run.
    client = tracking_client(tmp_path)
    runs = all_runs(tmp_path, "tiny")
    by_name = {r.info.run_name: r for r in runs}
    for r in runs:  # pruned Optuna trials end KILLED; every job's own run FINISHED
        allowed = {"FINISHED", "KILLED"} if "optuna_trial" in r.data.tags else {"FINISHED"}
        assert r.info.status in allowed, (r.info.run_name, r.info.status)
    for name in (
        "train/teacher/seed0",
        "distill/teacher__assistant/seed1",
        "distill/assistant__student/seed0",
    ):
        tags = by_name[name].data.tags
        for key in (
            "role",
            "method",
            "seed",
            "edge",
            "teacher_run_id",
            "snakemake_rule",
            "git_commit",
            "config_hash",
        ):
            assert key in tags, (name, key)
    kd = by_name["distill/teacher__student/seed0"]
    assert kd.data.tags["teacher_run_id"] == by_name["train/teacher/seed0"].info.run_id
    takd = by_name["distill/assistant__student/seed1"]
    assert takd.data.tags["teacher_run_id"] == by_name["distill/teacher__assistant/seed1"].info.run_id
    assert takd.data.tags["method"] == "takd" and "temperature" in takd.data.params
    assert "test_acc" in kd.data.metrics and "val_acc" in kd.data.metrics
    assert len(client.get_metric_history(kd.info.run_id, "val_acc")) == 3  # one per epoch
    # One tuning run per edge, its workers' runs nested under it, each trial's under its worker's.
    parent = {r.info.run_id: r.data.tags.get("mlflow.parentRunId") for r in runs}
    tune_run = by_name["tune/teacher__student"]
    workers = {by_name[f"tune/teacher__student/worker{k}"].info.run_id for k in (0, 1)}
    assert {parent[w] for w in workers} == {tune_run.info.run_id}
    trials = [r for r in runs if r.info.run_name.startswith("tune/teacher__student/trial")]
    assert len(trials) == 3 and all(parent[r.info.run_id] in workers for r in trials)
    assert tune_run.data.metrics["n_finished"] == 3 and "best_temperature" in tune_run.data.params
    artifacts = {a.path for a in client.list_artifacts(kd.info.run_id)}
    assert artifacts >= RUN_ARTIFACTS  # and the model, logged by mlflow.pytorch

    # A second run has nothing to do: every output is cached.
    again = ok(snakemake(tmp_path, TINY, "--cores", "2"))
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
@pytest.mark.parametrize("assistants", [[], ["a1", "a2"]], ids=["no-assistants", "two-assistants"])
def test_chains_of_zero_and_two_assistants_run(tmp_path, assistants):
    config = {
        "experiment": "chain",
        "models": {
            "teacher": {"family": "cnn1d", "channels": 8, "layers": 2},
            "a1": {"family": "mlp", "hidden": [32]},
            "a2": {"family": "mlp", "hidden": [16]},
            "student": {"family": "mlp", "hidden": [8]},
        },
        "assistants": assistants,
        "seeds": [0],
        "train": {"epochs": 2},
        "tuning": {"enabled": not assistants, "n_trials": 2},
        "tracking": {"enabled": False},
    }
    ok(snakemake(tmp_path, config, "--cores", "2"))
    rows = pd.read_parquet(tmp_path / "results" / "chain" / "summary.parquet")
    expected = {("teacher", "scratch"), ("student", "scratch"), ("student", "kd")}
    if assistants:
        expected |= {("assistant", "kd"), ("student", "takd")}
        assert (tmp_path / "results" / "chain" / "distill" / "a1__a2" / "seed0" / "model.pt").exists()
    assert set(zip(rows.role, rows.method, strict=True)) == expected
    assert not (tmp_path / "results" / "mlflow.db").exists()  # tracking off: nothing logged


@pytest.mark.slow
def test_bad_config_stops_before_any_job_and_writes_nothing(tmp_path):
    proc = snakemake(tmp_path, {**TINY, "kd": {"alpha": 1.5}}, "--cores", "2")
    assert proc.returncode != 0
    assert "config key 'kd.alpha'" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()
