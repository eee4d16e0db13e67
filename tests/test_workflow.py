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
    "pairs": [
        {"teacher": "teacher", "student": "student"},
        {"teacher": "teacher", "assistants": ["assistant"], "student": "student"},
    ],
    # kd's trials stack; dkd's run one by one over its own search space, on the first pair only
    "methods": ["kd", {"method": "dkd", "pairs": [0]}],
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


def test_dry_run_of_the_methods_example_plans_every_cell_once(tmp_path):
    example = yaml.safe_load((REPO / "config" / "examples" / "methods_mnist1d.yaml").read_text())
    planned = planned_jobs(ok(snakemake(tmp_path, example, "--dry-run")))
    edges = [len(p.get("assistants", [])) + 1 for p in example["pairs"]]  # its pairs share no chain
    rows = [
        m.get("pairs", range(len(edges))) if isinstance(m, dict) else range(len(edges))
        for m in example["methods"]
    ]
    assert planned["distill"] == len(example["seeds"]) * sum(edges[i] for row in rows for i in row)
    assert planned["pretrain"] > 0 and planned["tune_select"] > 0


def test_dry_run_of_the_teachers_example_plans_each_variant_once(tmp_path):
    example = yaml.safe_load((REPO / "config" / "examples" / "teachers_mnist1d.yaml").read_text())
    planned = planned_jobs(ok(snakemake(tmp_path, example, "--dry-run")))
    n_seeds, n_pairs = len(example["seeds"]), len(example["pairs"]) + 3  # the sweep adds 3 pairs
    assert planned["snapshot"] == 2 * n_seeds and planned["ensemble"] == n_seeds
    assert planned["distill"] == n_seeds * (n_pairs + 2)  # kd on every pair; noisy, dml on one
    assert planned["tune_select"] == n_pairs + 1  # kd per edge, noisy on its edge; dml tunes nothing


def test_dry_run_of_the_progressive_example_tunes_every_supervised_row_per_pair(tmp_path):
    example = yaml.safe_load((REPO / "config" / "examples" / "progressive_kd.yaml").read_text())
    planned = planned_jobs(ok(snakemake(tmp_path, example, "--dry-run")))
    n_rows, n_pairs, n_seeds = len(example["methods"]), len(example["pairs"]), len(example["seeds"])
    assert planned["distill"] == n_rows * n_pairs * n_seeds
    assert planned["tune_select"] == (n_rows - 1) * n_pairs  # diffrep_nosup: nothing to tune


def test_dry_run_of_the_cifar100_benchmark_on_files_in_cifar100s_format(tmp_path):
    """The field's table plans on a CIFAR-100 root (tiny files in the real pickle format): the
    recipe, the zoo, every method on every pair it allows, the published numbers accepted."""
    import pickle

    import numpy as np

    base = tmp_path / "data" / "cifar-100-python"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", 300), ("test", 100)):
        rows = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "fine_labels": list(range(100)) * (n // 100),
        }
        (base / part).write_bytes(pickle.dumps({**rows, "coarse_labels": [0] * n}))
    example = yaml.safe_load((REPO / "config" / "examples" / "cifar100_benchmark.yaml").read_text())
    example["dataset"]["root"] = str(tmp_path / "data")
    planned = planned_jobs(ok(snakemake(tmp_path, example, "--dry-run")))
    n_pairs, n_seeds = len(example["pairs"]), len(example["seeds"])
    cells = sum(
        len(m["pairs"]) if isinstance(m, dict) and "pairs" in m else n_pairs for m in example["methods"]
    )
    assert planned["distill"] == cells * n_seeds
    assert planned["train"] == len(example["models"]) * n_seeds
    assert "tune_select" not in planned  # the recipe's protocol fixes every value


@pytest.mark.slow
def test_tiny_pipeline_end_to_end(tmp_path):
    ok(snakemake(tmp_path, TINY, "--cores", "2"))
    results = tmp_path / "results" / "tiny"

    rows = pd.read_parquet(results / "summary.parquet")
    # seeds x (teacher, scratch student; kd: assistant, student by kd, student by takd; dkd: student)
    assert len(rows) == 2 * (2 + 3 + 1)
    assert sorted(rows.groupby(["method", "lineage"]).size().items()) == [
        (("dkd", "teacher__student"), 2),
        (("kd", "teacher__assistant"), 2),
        (("kd", "teacher__assistant__student"), 2),
        (("kd", "teacher__student"), 2),
        (("scratch", "student"), 2),
        (("scratch", "teacher"), 2),
    ]
    assert rows.test_acc.between(0, 1).all() and (rows.test_acc > 0.1).any()
    dkd = rows[rows.method == "dkd"]
    assert dkd.beta.notna().all() and dkd.warmup.eq(20).all()  # its hyperparameters are in the rows
    report = (results / "report.md").read_text()
    assert "teacher → assistant → student" in report and "±" in report
    for plot in ("accuracy_vs_params.png", "tuning.png"):
        assert (results / "plots" / plot).read_bytes()[:4] == b"\x89PNG"

    # Optuna: every (method, edge) journal holds one study with exactly the configured trials,
    # over the method's own search space.
    studies = [
        ("kd", lin) for lin in ("teacher__assistant", "teacher__student", "teacher__assistant__student")
    ]
    studies.append(("dkd", "teacher__student"))
    assert sorted(
        p.relative_to(results / "tune").as_posix() for p in (results / "tune").glob("*/*")
    ) == sorted(f"{m}/{lin}" for m, lin in studies)
    for method, lineage in studies:
        space = {"kd": {"temperature", "alpha"}, "dkd": {"beta", "temperature"}}[method]
        tune = results / "tune" / method / lineage
        study = only_study(tune / "study.journal")
        best = json.loads((tune / "best_params.json").read_text())
        assert study.study_name == best["study"] and set(best["params"]) == space
        done = [t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]
        assert len(done) == 3 and len(study.trials) == 3  # exactly n_trials, with two workers
        assert best["val_acc"] == study.best_value
        workers = [json.loads((tune / f"workers/{k}.json").read_text()) for k in (0, 1)]
        mine = [n for w in workers for n in w["trials"]]  # what each worker says it ran
        assert sorted(mine) == [t.number for t in done]
        assert all(
            t.user_attrs["worker"] == w["worker"] for w in workers for t in done if t.number in w["trials"]
        )
        fit = json.loads((results / "distill" / method / lineage / "seed1" / "fit.json").read_text())
        assert all(fit["hp"][k] == v for k, v in best["params"].items())  # trained with the best

    # MLflow: a run per job with the lineage tags; trials nested under their tuning run.
    client = tracking_client(tmp_path)
    runs = all_runs(tmp_path, "tiny")
    by_name = {r.info.run_name: r for r in runs}
    for r in runs:  # pruned Optuna trials end KILLED; every job's own run FINISHED
        allowed = {"FINISHED", "KILLED"} if "optuna_trial" in r.data.tags else {"FINISHED"}
        assert r.info.status in allowed, (r.info.run_name, r.info.status)
    for name in (
        "train/teacher/seed0",
        "distill/kd/teacher__assistant/seed1",
        "distill/dkd/teacher__student/seed0",
    ):
        tags = by_name[name].data.tags
        for key in (
            "role",
            "method",
            "pair",
            "seed",
            "edge",
            "teacher_run_id",
            "snakemake_rule",
            "git_commit",
            "config_hash",
        ):
            assert key in tags, (name, key)
    kd = by_name["distill/kd/teacher__student/seed0"]
    assert kd.data.tags["teacher_run_id"] == by_name["train/teacher/seed0"].info.run_id
    assert kd.data.tags["method"] == "kd" and kd.data.tags["pair"] == "teacher → student"
    takd = by_name["distill/kd/teacher__assistant__student/seed1"]
    assert takd.data.tags["teacher_run_id"] == by_name["distill/kd/teacher__assistant/seed1"].info.run_id
    assert takd.data.tags["pair"] == "teacher → assistant → student"
    dkd = by_name["distill/dkd/teacher__student/seed1"]
    assert dkd.data.tags["method"] == "dkd" and {"beta", "temperature", "warmup"} <= set(dkd.data.params)
    assert "test_acc" in kd.data.metrics and "val_acc" in kd.data.metrics
    assert len(client.get_metric_history(kd.info.run_id, "val_acc")) == 3  # one per epoch
    # One tuning run per edge, its workers' runs nested under it, each trial's under its worker's.
    parent = {r.info.run_id: r.data.tags.get("mlflow.parentRunId") for r in runs}
    tune_run = by_name["tune/kd/teacher__student"]
    workers = {by_name[f"tune/kd/teacher__student/worker{k}"].info.run_id for k in (0, 1)}
    assert {parent[w] for w in workers} == {tune_run.info.run_id}
    trials = [r for r in runs if r.info.run_name.startswith("tune/kd/teacher__student/trial")]
    assert len(trials) == 3 and all(parent[r.info.run_id] in workers for r in trials)
    assert tune_run.data.metrics["n_finished"] == 3 and "best_temperature" in tune_run.data.params
    artifacts = {a.path for a in client.list_artifacts(kd.info.run_id)}
    assert artifacts >= RUN_ARTIFACTS  # and the model, logged by mlflow.pytorch
    # The runs table's Dataset column: each split the run used, with its context.
    inputs = client.get_run(kd.info.run_id).inputs.dataset_inputs
    contexts = {d.dataset.name: {t.value for t in d.tags} for d in inputs}
    assert contexts == {
        "mnist1d-seed42/train": {"train"},
        "mnist1d-seed42/val": {"validation"},
        "mnist1d-seed42/test": {"test"},
    }
    experiment = client.get_experiment_by_name("tiny")  # opens on its training runs, not GenAI's
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    # A second run has nothing to do: every output is cached.
    again = ok(snakemake(tmp_path, TINY, "--cores", "2"))
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_feature_methods_with_modules_and_pretraining_stages_run_along_chains(tmp_path):
    """The matrix shape with the methods that add the most machinery: CRD's memory bank, FT's
    paraphraser stage, FitNets' regressor restricted to one pair, DiffKD's diffusion modules,
    diffrep's branched student saved folded; a chain of two assistants, the first a Transformer."""
    config = {
        "experiment": "matrix",
        "models": {
            "teacher": {"family": "cnn1d", "channels": 16, "layers": 3},
            "a1": {"family": "transformer1d", "patch": 4, "dim": 8, "layers": 2, "heads": 2},
            "a2": {"family": "cnn1d", "channels": 8, "layers": 2},
            "student": {"family": "cnn1d", "channels": 4, "layers": 2},
        },
        "pairs": [
            {"teacher": "teacher", "student": "student"},
            {"teacher": "teacher", "assistants": ["a1", "a2"], "student": "student"},
        ],
        "methods": [
            "crd",
            {"method": "ft", "params": {"init_epochs": 2}},
            {"method": "fitnets", "name": "hint1", "params": {"student_layer": "block1"}, "pairs": [1]},
            "diffkd",
            {"method": "diffrep", "params": {"branches": 3}, "pairs": [0]},
        ],
        "seeds": [0],
        "train": {"epochs": 2},
        "tuning": {"enabled": False},
        "tracking": {"enabled": False},
    }
    proc = ok(snakemake(tmp_path, config, "--cores", "2"))
    results = tmp_path / "results" / "matrix"
    rows = pd.read_parquet(results / "summary.parquet")
    chains = ["teacher__student", "teacher__a1", "teacher__a1__a2", "teacher__a1__a2__student"]
    expected = {("scratch", "teacher"), ("scratch", "student")}
    expected |= {(m, c) for m in ("crd", "ft", "diffkd") for c in chains} | {("hint1", c) for c in chains[1:]}
    expected |= {("diffrep", "teacher__student")}
    assert set(zip(rows.method, rows.lineage, strict=True)) == expected
    counts = rows.groupby("lineage").num_params.nunique()
    assert (counts == 1).all()  # every method's student has its scratch run's parameter count
    for lineage in chains:  # FT's stage ran once per edge, before its distillation
        assert (results / "pretrain" / "ft" / lineage / "seed0" / "pretrain.pt").exists()
    assert planned_jobs(proc)["pretrain"] == 4
    fit = json.loads((results / "distill" / "hint1" / "teacher__a1" / "seed0" / "fit.json").read_text())
    assert fit["hp"]["student_layer"] == "block1" and fit["hp"]["feat_weight"] == 100.0
    assert not (tmp_path / "results" / "mlflow.db").exists()  # tracking off: nothing logged


@pytest.mark.slow
def test_bad_config_stops_before_any_job_and_writes_nothing(tmp_path):
    proc = snakemake(tmp_path, {**TINY, "methods": ["kd", "hinton"]}, "--cores", "2")
    assert proc.returncode != 0
    assert "config key 'methods[1]': unknown method 'hinton'" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


GEN_TINY = {
    "task": "generative",
    "experiment": "gen_tiny",
    "models": {
        "teacher": {"family": "lvae", "hidden": 32, "layers": 2, "latent": 4},
        "assistant": {"family": "lvae", "hidden": 16, "layers": 2, "latent": 4},
        "student": {"family": "lvae", "hidden": 8, "layers": 2, "latent": 4},
    },
    "pairs": [
        {"teacher": "teacher", "student": "student"},
        {"teacher": "teacher", "assistants": ["assistant"], "student": "student"},
    ],
    "methods": ["kd4dgm"],
    "seeds": [0],
    "train": {"epochs": 2},
    "generative": {"kl_warmup_epochs": 1, "importance_samples": 20, "proposal_steps": 10, "samples": 50},
    # one worker: the workers' path is the classification studies' (kdflow.tuning.run_study), tested there
    "tuning": {"n_trials": 2, "workers": 1},
}


def test_dry_run_of_the_generative_examples_plans_every_cell_once(tmp_path):
    example = yaml.safe_load((REPO / "config" / "examples" / "dgm_kd.yaml").read_text())
    (tmp_path / "kd").mkdir()
    (tmp_path / "digits").mkdir()
    planned = planned_jobs(ok(snakemake(tmp_path / "kd", example, "--dry-run")))
    # 4 pairs, 5 distilled lineages (the assistant's own), 4 methods, 3 seeds; kd4dgm and
    # teacher_forced tuned per edge; teachers and real-data students trained alone
    assert planned["distill"] == 5 * 4 * 3 and planned["train"] == 6 * 3
    assert planned["tune_start"] == planned["tune_select"] == 5 * 2 and planned["tune_worker"] == 5 * 2
    assert planned["evaluate"] == planned["distill"] + planned["train"] and planned["fd_classifier"] == 1
    assert "cache_logits" not in planned
    digits = yaml.safe_load((REPO / "config" / "examples" / "dgm_digits.yaml").read_text())
    planned = planned_jobs(ok(snakemake(tmp_path / "digits", digits, "--dry-run")))
    assert planned["continual"] == 3 and planned["distill"] == 4 * 3


@pytest.mark.slow
def test_tiny_generative_pipeline_end_to_end(tmp_path):
    ok(snakemake(tmp_path, GEN_TINY, "--cores", "2"))
    results = tmp_path / "results" / "gen_tiny"
    rows = pd.read_parquet(results / "summary.parquet")
    assert sorted(rows.groupby(["method", "lineage"]).size().items()) == [
        (("kd4dgm", "teacher__assistant"), 1),
        (("kd4dgm", "teacher__assistant__student"), 1),
        (("kd4dgm", "teacher__student"), 1),
        (("scratch", "student"), 1),
        (("scratch", "teacher"), 1),
    ]
    assert rows.test_nll.notna().all() and (rows.ess_median >= 1).all()
    report = (results / "report.md").read_text()
    assert "Test negative log-likelihood" in report and "teacher → assistant → student" in report
    for plot in ("test_nll.png", "samples_0.png", "samples_1.png"):
        assert (results / "plots" / plot).read_bytes()[:4] == b"\x89PNG"
    # kd4dgm's lam was tuned per edge, each study to exactly its trials
    for lineage in ("teacher__student", "teacher__assistant", "teacher__assistant__student"):
        study = only_study(results / "tune" / "kd4dgm" / lineage / "study.journal")
        assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
        best = json.loads((results / "tune" / "kd4dgm" / lineage / "best_params.json").read_text())
        fit = json.loads((results / "distill" / "kd4dgm" / lineage / "seed0" / "fit.json").read_text())
        assert fit["hp"]["lam"] == best["params"]["lam"]
    # lineage in MLflow: the student distilled through the assistant names the assistant's run
    runs = {r.info.run_name: r for r in all_runs(tmp_path, "gen_tiny")}
    student = runs["distill/kd4dgm/teacher__assistant__student/seed0"]
    assistant = runs["distill/kd4dgm/teacher__assistant/seed0"]
    assert student.data.tags["teacher_run_id"] == assistant.info.run_id
    assert assistant.data.tags["teacher_run_id"] == runs["train/teacher/seed0"].info.run_id
    assert "test_nll" in student.data.metrics
