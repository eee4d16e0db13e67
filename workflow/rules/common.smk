"""Config validation, the results-tree layout and every input/params function.

Results tree (one place; every rule's paths come from these patterns):
    resources/<dataset>.npz                                  the prepared dataset
    <results_dir>/<experiment>/
        tracking.json                                        MLflow backend + experiment created
        train/<model>/seed<k>/                               trained from labels (teachers, scratch students)
        distill/<method>/<lineage>/seed<k>/                  distilled by <method> along <lineage>
            model.pt fit.json history.parquet                a trained model (checkpoint.pt: resume state)
            logits.pt                                        its cached logits, when it is a teacher
            test_metrics.json                                its evaluation
        pretrain/<method>/<lineage>/seed<k>/pretrain.pt      a method's stage before student training
        tune/<method>/<lineage>/                             best_params.json trials.parquet study.journal
            run.json workers/<k>.json                        the study's name and MLflow run; each worker's trials
        summary.parquet report.md plots/                     the report
        logs/ benchmarks/                                    mirror the tree above
A lineage is the chain a model was distilled through, names joined by "__" (kdflow.plan):
distill/kd/teacher__assistant__student/ is the student distilled by kd from the assistant that was
distilled by kd from the teacher.
"""

import hashlib
import json
from pathlib import Path

from kdflow import plan
from kdflow.config import check_config
from kdflow.registry import METHODS
from kdflow.tracking import check_cluster_uri

check_config(
    config, Path(workflow.current_basedir).parent / "schemas" / "config.schema.yaml"
)


onstart:
    # On a cluster, jobs on many nodes must not share the default sqlite file: ask for a URI, but
    # only for a real run with tracking on (the hook is skipped by dry runs and inside jobs).
    check_cluster_uri(config, workflow.executor_plugin.name, workflow.dryrun)


RESULTS = f"{config['results_dir']}/{config['experiment']}"
TRAIN_DIR = f"{RESULTS}/train/{{model}}/seed{{seed}}"
DISTILL_DIR = f"{RESULTS}/distill/{{method}}/{{lineage}}/seed{{seed}}"
PRETRAIN_DIR = f"{RESULTS}/pretrain/{{method}}/{{lineage}}/seed{{seed}}"
TUNE_DIR = f"{RESULTS}/tune/{{method}}/{{lineage}}"
TRACKING_MARKER = f"{RESULTS}/tracking.json"
CONDA_ENV = "../../environment.yml"  # relative to workflow/rules/
NAME = r"[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*"


wildcard_constraints:
    model=NAME,
    method=NAME,
    lineage=rf"{NAME}(?:__{NAME})+",
    run=rf"{NAME}|{NAME}/{NAME}(?:__{NAME})+",
    kind="train|distill",
    seed=r"\d+",
    worker=r"\d+",


def one_of(names):
    """A wildcard pattern matching exactly these names (none: matching nothing)."""
    return "|".join(names) if names else "(?!)"


def get_snapshot_source(wildcards):
    """The training job of the model a snapshot teacher is taken from (it kept the weights)."""
    parent, _ = plan.snapshots(config)[wildcards.model]
    d = TRAIN_DIR.format(model=parent, seed=wildcards.seed)
    return {"parent_model": f"{d}/model.pt", "parent_fit": f"{d}/fit.json"}


def get_ensemble_members(wildcards):
    """An ensemble teacher's members: each one's model and metadata, in the ensemble's order."""
    dirs = [
        TRAIN_DIR.format(model=m, seed=s)
        for m, s in plan.members(config, wildcards.model, wildcards.seed)
    ]
    return {
        "models": [f"{d}/model.pt" for d in dirs],
        "fits": [f"{d}/fit.json" for d in dirs],
    }


def get_data_file():
    """The prepared dataset: one file per dataset, generation seed, or (for the user's own data)
    root and image size, so two experiments on different data never share one."""
    ds = config["dataset"]
    suffix = ""
    if ds["name"] in ("mnist1d", "digits", "old_faithful"):
        suffix = f"-seed{ds['seed']}"
    elif ds["name"] in ("npz", "imagefolder"):
        key = json.dumps([str(Path(ds["root"]).resolve()), ds.get("image_size")])
        suffix = f"-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    if ds["name"] not in ("mnist1d", "old_faithful"):
        suffix += "-u8"  # images are stored as uint8 (files from before hold floats: not reused)
    return f"resources/{ds['name']}{suffix}.npz"


def get_tracking_marker():
    # ancient: re-initialising tracking (a new URI) must not retrain anything downstream
    return ancient(TRACKING_MARKER)


def get_model_dir(lineage, method, seed):
    """Where a model lives: trained from labels (one name), or distilled by `method` along `lineage`."""
    if plan.SEP not in lineage:
        return TRAIN_DIR.format(model=lineage, seed=seed)
    return DISTILL_DIR.format(method=method, lineage=lineage, seed=seed)


def get_method(wildcards):
    """A row of the experiment as its jobs see it: {name, method, params, search} (a rerun trigger)."""
    return vars(plan.method_by_name(config, wildcards.method))


def get_training_settings(model):
    """What a model's training depends on besides its input files and spec: the shared train
    settings under its own overrides, and the train/val split. As a rule's params, a change reruns
    the job (Snakemake's params trigger) instead of silently keeping a model trained otherwise.
    """
    ds = config["dataset"]
    return {
        **plan.train_settings(config, model),
        "val_fraction": ds["val_fraction"],
        "split_seed": ds["split_seed"],
    }


def get_run_dir(wildcards):
    return f"{RESULTS}/{wildcards.kind}/{wildcards.run}/seed{wildcards.seed}"


def get_teacher(wildcards, seed=None):
    """A distillation edge's teacher: its model, cached logits and metadata (lineage, sha256)."""
    d = get_model_dir(
        plan.teacher_lineage(wildcards.lineage),
        wildcards.method,
        wildcards.seed if seed is None else seed,
    )
    files = {"teacher_model": f"{d}/model.pt", "teacher_fit": f"{d}/fit.json"}
    if (
        config["task"] == "classify"
    ):  # a generative teacher runs on the student's noise: no cache
        files["teacher_logits"] = f"{d}/logits.pt"
    return files


def get_tuning_teacher(wildcards):
    return get_teacher(wildcards, seed=config["tuning"]["seed"])


def get_pretrain_file(wildcards, seed=None):
    """The output of the method's stage before student training, for methods that have one."""
    spec = plan.method_by_name(config, wildcards.method)
    if config["task"] == "generative" or not METHODS[spec.method].pretrain:
        return {}
    seed = wildcards.seed if seed is None else seed
    return {
        "pretrain": f"{PRETRAIN_DIR.format(**{**wildcards, 'seed': seed})}/pretrain.pt"
    }


def get_tuning_pretrain(wildcards):
    return get_pretrain_file(wildcards, seed=config["tuning"]["seed"])


def get_tuning_params():
    """Params of the tuning rules: the study's journal and, as rerun triggers, what its trials
    depend on (not how many jobs or stacks run them: a changed worker count reruns nothing).
    """
    how = ("enabled", "workers", "parallel_trials")
    return {
        "journal": f"{TUNE_DIR}/study.journal",
        "settings": lambda wc: get_training_settings(plan.student(wc.lineage)),
        "method": get_method,
        "tuning": {k: v for k, v in config["tuning"].items() if k not in how},
    }


def get_tuning_workers(wildcards):
    """The tuning workers of an edge, all of which must end before its best parameters are chosen."""
    return {
        f"worker{k}": f"{TUNE_DIR.format(**wildcards)}/workers/{k}.json"
        for k in range(config["tuning"]["workers"])
    }


def get_tuned_params_file(wildcards):
    if not plan.tuned(config, wildcards.method, wildcards.lineage):
        return {}
    return {"tuned": f"{TUNE_DIR.format(**wildcards)}/best_params.json"}


def get_model_files(wildcards):
    d = get_run_dir(wildcards)
    return {"model": f"{d}/model.pt", "fit": f"{d}/fit.json"}


def get_eval_teacher(wildcards):
    """For a distilled model, the model it learned from (for top-1 agreement)."""
    if wildcards.kind != "distill":
        return {}
    method, lineage = wildcards.run.split("/")
    d = get_model_dir(plan.teacher_lineage(lineage), method, wildcards.seed)
    return {"teacher_model": f"{d}/model.pt", "teacher_fit": f"{d}/fit.json"}


def get_all_model_dirs():
    dirs = []
    for seed in config["seeds"]:
        for model in plan.scratch_models(config):
            dirs.append(TRAIN_DIR.format(model=model, seed=seed))
        for m in plan.methods(config):
            for lineage in plan.lineages(config, m):
                dirs.append(
                    DISTILL_DIR.format(method=m.name, lineage=lineage, seed=seed)
                )
    return dirs


def get_test_metrics():
    return [f"{d}/test_metrics.json" for d in get_all_model_dirs()]


def get_tuning_results():
    return [
        f"{TUNE_DIR.format(method=m.name, lineage=lineage)}/trials.parquet"
        for m in plan.methods(config)
        for lineage in plan.lineages(config, m)
        if plan.tuned(config, m.name, lineage)
    ]


def get_pair_lineages():
    return [p.lineage for p in plan.pairs(config)]


def get_method_names():
    return [m.name for m in plan.methods(config)]


def get_final_outputs():
    return [f"{RESULTS}/report.md", f"{RESULTS}/summary.parquet"]


def get_fd_classifier(wildcards):
    """The classifier of the Fréchet distance (task generative), when the dataset has classes."""
    if config["dataset"]["name"] == "old_faithful":
        return {}
    return {"classifier": f"{RESULTS}/fd_classifier.pt"}


def get_continual_results():
    """Task generative: the continual-learning results of every seed, when it is enabled."""
    if not config["continual"]["enabled"]:
        return []
    return [f"{RESULTS}/continual/seed{seed}.json" for seed in config["seeds"]]
