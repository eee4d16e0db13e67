"""Config validation, the results-tree layout and every input/params function.

Results tree (one place; every rule's paths come from these patterns):
    resources/<dataset>.npz                                  the prepared dataset
    <results_dir>/<experiment>/
        tracking.json                                        MLflow backend + experiment created
        train/<model>/seed<k>/                               trained from labels (teacher, scratch)
        distill/<teacher>__<student>/seed<k>/                distilled along one edge
            model.pt fit.json history.parquet                a trained model (checkpoint.pt: resume state)
            logits.pt                                        its cached logits, when it is a teacher
            test_metrics.json                                its evaluation
        tune/<teacher>__<student>/                           best_params.json trials.parquet study.journal
            run.json workers/<k>.json                        the study's name and MLflow run; each worker's trials
        summary.parquet report.md plots/                     the report
        logs/ benchmarks/                                    mirror the tree above
"""

from pathlib import Path

from kdflow import plan
from kdflow.config import check_config

check_config(
    config, Path(workflow.current_basedir).parent / "schemas" / "config.schema.yaml"
)

RESULTS = f"{config['results_dir']}/{config['experiment']}"
TRAIN_DIR = f"{RESULTS}/train/{{model}}/seed{{seed}}"
DISTILL_DIR = f"{RESULTS}/distill/{{teacher}}__{{student}}/seed{{seed}}"
TUNE_DIR = f"{RESULTS}/tune/{{teacher}}__{{student}}"
TRACKING_MARKER = f"{RESULTS}/tracking.json"
CONDA_ENV = "../../environment.yml"  # relative to workflow/rules/
NAME = r"[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*"


wildcard_constraints:
    model=NAME,
    teacher=NAME,
    student=NAME,
    run=r"[A-Za-z0-9_]+",
    kind="train|distill",
    seed=r"\d+",
    worker=r"\d+",


def get_data_file():
    ds = config["dataset"]
    suffix = f"-seed{ds['seed']}" if ds["name"] == "mnist1d" else ""
    return f"resources/{ds['name']}{suffix}.npz"


def get_tracking_marker():
    # ancient: re-initialising tracking (a new URI) must not retrain anything downstream
    return ancient(TRACKING_MARKER)


def get_model_dir(model, seed):
    """Where a chain member's checkpoint lives: trained from labels, or distilled from its predecessor."""
    teacher = plan.teacher_of(config, model)
    if teacher is None:
        return TRAIN_DIR.format(model=model, seed=seed)
    return DISTILL_DIR.format(teacher=teacher, student=model, seed=seed)


def get_training_settings(model):
    """What a model's training depends on besides its input files and spec: the shared train
    settings under its own overrides, and the train/val split. As a rule's params, a change reruns
    the job (Snakemake's params trigger) instead of silently keeping a model trained otherwise.
    """
    ds = config["dataset"]
    return {
        **config["train"],
        **config["models"][model].get("train", {}),
        "val_fraction": ds["val_fraction"],
        "split_seed": ds["split_seed"],
    }


def get_run_dir(wildcards):
    return f"{RESULTS}/{wildcards.kind}/{wildcards.run}/seed{wildcards.seed}"


def get_teacher(wildcards, seed=None):
    """A distillation edge's teacher: its cached logits and metadata (lineage, sha256)."""
    d = get_model_dir(wildcards.teacher, wildcards.seed if seed is None else seed)
    return {"teacher_logits": f"{d}/logits.pt", "teacher_fit": f"{d}/fit.json"}


def get_tuning_teacher(wildcards):
    return get_teacher(wildcards, seed=config["tuning"]["seed"])


def get_tuning_params():
    """Params of the tuning rules: the study's journal and, as rerun triggers, what its trials
    depend on (not how many jobs or stacks run them: a changed worker count reruns nothing).
    """
    how = ("enabled", "workers", "parallel_trials")
    return {
        "journal": f"{TUNE_DIR}/study.journal",
        "settings": lambda wc: get_training_settings(wc.student),
        "tuning": {k: v for k, v in config["tuning"].items() if k not in how},
    }


def get_tuning_workers(wildcards):
    """The tuning workers of an edge, all of which must end before its best parameters are chosen."""
    return {
        f"worker{k}": f"{TUNE_DIR.format(**wildcards)}/workers/{k}.json"
        for k in range(config["tuning"]["workers"])
    }


def get_kd_params_file(wildcards):
    if not config["tuning"]["enabled"]:
        return {}
    return {"kd_params": f"{TUNE_DIR.format(**wildcards)}/best_params.json"}


def get_model_files(wildcards):
    d = get_run_dir(wildcards)
    return {"model": f"{d}/model.pt", "fit": f"{d}/fit.json"}


def get_eval_teacher(wildcards):
    """For a distilled model, the model it learned from (for top-1 agreement)."""
    if wildcards.kind != "distill":
        return {}
    teacher = wildcards.run.split(plan.SEP)[0]
    d = get_model_dir(teacher, wildcards.seed)
    return {"teacher_model": f"{d}/model.pt", "teacher_fit": f"{d}/fit.json"}


def get_all_model_dirs():
    dirs = []
    for seed in config["seeds"]:
        dirs.append(TRAIN_DIR.format(model=config["teacher"], seed=seed))
        dirs.append(TRAIN_DIR.format(model=config["student"], seed=seed))
        for edge in plan.edges(config):
            dirs.append(
                DISTILL_DIR.format(
                    teacher=edge.teacher, student=edge.student, seed=seed
                )
            )
    return dirs


def get_test_metrics():
    return [f"{d}/test_metrics.json" for d in get_all_model_dirs()]


def get_tuning_results():
    if not config["tuning"]["enabled"]:
        return []
    return [
        f"{TUNE_DIR.format(teacher=e.teacher, student=e.student)}/trials.parquet"
        for e in plan.edges(config)
    ]


def get_final_outputs():
    return [f"{RESULTS}/report.md", f"{RESULTS}/summary.parquet"]
