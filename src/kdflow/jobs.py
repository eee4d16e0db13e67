"""The pipeline's jobs as plain functions: each Snakemake script unpacks its paths and calls one.

    prepare_data(...)   generate / read a dataset into one .npz under resources/
    train(...)          train a model from labels (teacher, scratch student) or distil it
    cache_logits(...)   a teacher's logits on train/val, computed once, reused by every consumer
    evaluate(...)       test-set metrics of one trained model -> test_metrics.json

Tuning's jobs are in kdflow.tune_jobs.

Files are the interface between jobs; MLflow only records. Each job's metadata file (`fit.json`)
holds its MLflow run id, which is how a student's run names its teacher's run (lineage).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from kdflow import data as datamod
from kdflow import tracking as trk
from kdflow.atomic import atomic_write, read_json, write_json
from kdflow.callbacks import Callback
from kdflow.checkpoint import (
    CorruptFileError,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
)
from kdflow.engine import (
    TrainConfig,
    fingerprint,
    fit,
    kd_objective,
    predict_logits,
    scratch_objective,
)
from kdflow.metrics import agreement, expected_calibration_error, throughput
from kdflow.models import build_model, count_parameters

CHECKPOINT_EVERY_S = 10.0  # a killed job redoes at most this much work; see kdflow.engine


@dataclass(frozen=True)
class DataRef:
    """A prepared dataset file and how its training part is split."""

    path: Path
    val_fraction: float = 0.2
    split_seed: int = 0

    def load(self, split: str) -> datamod.Split:
        return datamod.load_split(Path(self.path), split, self.val_fraction, self.split_seed)


@dataclass(frozen=True)
class JobInfo:
    """What a job is: names for tags, metadata and error messages."""

    rule: str
    model: str
    role: str  # teacher | assistant | student
    method: str  # scratch | kd | takd
    seed: int
    edge: str = ""  # "<teacher>__<student>", or "" when trained from labels
    config_hash: str = ""

    def tags(self) -> dict:
        return {
            "role": self.role,
            "method": self.method,
            "seed": self.seed,
            "edge": self.edge or "none",
            "teacher_run_id": "none",  # set by distillation jobs: the lineage
            "model": self.model,
            "snakemake_rule": self.rule,
            "git_commit": trk.git_commit(),
            "config_hash": self.config_hash,
        }


@dataclass(frozen=True)
class TeacherRef:
    """A teacher as a consumer sees it: its cached logits and its metadata file."""

    logits: Path
    fit_json: Path


def setup(threads: int, deterministic: bool = True) -> None:
    torch.set_num_threads(max(1, threads))
    # The switch behind torch.use_deterministic_algorithms, without the import of torch._inductor
    # that it does to set inductor's copy (~1.5 s of every job); fit sets that copy when it compiles.
    torch._C._set_deterministic_algorithms(deterministic)


class ProgressBar(Callback):
    """One tqdm bar over epochs, to the job's log."""

    def __init__(self, desc: str):
        self.desc = desc

    def on_fit_start(self, start_epoch, epochs):
        from tqdm import tqdm

        self.bar = tqdm(total=epochs, initial=start_epoch, desc=self.desc, mininterval=2.0)

    def on_epoch_end(self, epoch, metrics):
        self.bar.set_postfix(loss=f"{metrics['train_loss']:.3f}", val_acc=f"{metrics['val_acc']:.3f}")
        self.bar.update(1)

    def on_fit_end(self, result):
        self.bar.close()


def prepare_data(name: str, root: str | None, seed: int, out: Path) -> None:
    raw = datamod.LOADERS[name](Path(root) if root else None, seed)
    datamod.save_raw(raw, out)


def load_teacher(teacher: TeacherRef) -> tuple[dict, dict]:
    meta = read_json(teacher.fit_json)
    cache = load_checkpoint(
        teacher.logits, "delete it and rerun: cache_logits recomputes it from the teacher's model.pt"
    )
    if cache["teacher_sha256"] != meta["model_sha256"]:
        raise CorruptFileError(
            f"{teacher.logits} was computed from another checkpoint than the one {teacher.fit_json} "
            "describes; delete it and rerun to recompute it"
        )
    return meta, cache


def train(
    *,
    data: DataRef,
    spec: dict,
    cfg: TrainConfig,
    info: JobInfo,
    out_dir: Path,
    tracking: trk.TrackingSpec,
    teacher: TeacherRef | None = None,
    kd_params: dict | None = None,
    resolved_config: dict | None = None,
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
) -> dict:
    """Train one model (from labels, or distilled when `teacher` is given); write into out_dir:
    model.pt, history.parquet, fit.json; checkpoint.pt is the resumable state (not an output)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    train_split, val_split = data.load("train"), data.load("val")
    shape, n_cls = datamod.input_shape(train_split), datamod.num_classes(train_split)
    torch.manual_seed(cfg.seed)
    model = build_model(spec, shape, n_cls)

    params = {"model_spec": json.dumps(spec), "num_params": count_parameters(model), **asdict(cfg)}
    tags = info.tags()
    # A checkpoint resumes only the run it was written for, on the same data and split.
    data_hash = datamod.content_hash(train_split, val_split)[:16]
    if teacher is None:
        objective, run_key = scratch_objective(), json.dumps([spec, info.method, data_hash])
    else:
        t_meta, cache = load_teacher(teacher)
        T, alpha = kd_params["temperature"], kd_params["alpha"]
        objective = kd_objective(cache["train"], T, alpha)
        run_key = json.dumps([spec, info.method, data_hash, T, alpha, t_meta["model_sha256"]])
        params.update(temperature=T, alpha=alpha, teacher=t_meta["model"])
        tags["teacher_run_id"] = t_meta.get("mlflow_run_id") or "none"

    name = f"{info.rule}/{info.edge or info.model}/seed{info.seed}"
    with trk.open_run(tracking, name, tags, params, output=str(out_dir)) as run:
        result = fit(
            model,
            train_split,
            val_split,
            cfg,
            objective,
            callbacks=[ProgressBar(name), trk.MetricsCallback(run)],
            checkpoint=out_dir / "checkpoint.pt",
            checkpoint_every_s=checkpoint_every_s,
            run_key=run_key,
            stage=name,
        )
        model_sha = save_model(out_dir / "model.pt", result.model, spec, shape, n_cls)
        _write_history(result.history, out_dir / "history.parquet")
        meta = {
            "model": info.model,
            "role": info.role,
            "method": info.method,
            "seed": info.seed,
            "edge": info.edge,
            "spec": spec,
            "num_params": count_parameters(result.model),
            "best_epoch": result.best_epoch,
            "best_val_acc": result.best_val_acc,
            "model_sha256": model_sha,
            "mlflow_run_id": run.run_id,
            "teacher_run_id": tags.get("teacher_run_id"),
            **({"temperature": T, "alpha": alpha} if teacher is not None else {}),
        }
        write_json(out_dir / "fit.json", meta)
        run.set_tags({"model_sha256": model_sha})
        run.log_metrics({"best_val_acc": result.best_val_acc, "best_epoch": result.best_epoch})
        for f in ("model.pt", "history.parquet", "fit.json"):
            run.log_artifact(out_dir / f)
        if resolved_config is not None:
            write_json(out_dir / "config.resolved.json", trk.redact_config(resolved_config))
            run.log_artifact(out_dir / "config.resolved.json")
        run.log_model(result.model)
    return meta


def _write_history(history: list[dict], path: Path) -> None:
    with atomic_write(path) as tmp:
        pd.DataFrame(history).to_parquet(tmp, index=False)


def cache_logits(*, data: DataRef, model_file: Path, fit_json: Path, out: Path) -> None:
    """Teacher logits on the train and val splits, keyed by the teacher checkpoint's sha256."""
    meta = read_json(fit_json)
    model = load_model(model_file, meta["model_sha256"])
    save_checkpoint(
        out,
        {
            "train": predict_logits(model, data.load("train").x),  # (N_train, C)
            "val": predict_logits(model, data.load("val").x),  # (N_val, C)
            "teacher_sha256": meta["model_sha256"],
        },
    )


def evaluate(
    *,
    data: DataRef,
    model_file: Path,
    fit_json: Path,
    out: Path,
    tracking: trk.TrackingSpec,
    teacher_model: Path | None = None,
    teacher_fit_json: Path | None = None,
) -> dict:
    """Test-set metrics of one model; logged into the model's own training run too."""
    meta = read_json(fit_json)
    model = load_model(model_file, meta["model_sha256"])
    test = data.load("test")
    logits = predict_logits(model, test.x)
    probs = logits.softmax(1)
    metrics = {
        "test_acc": (logits.argmax(1) == test.y).float().mean().item(),
        "test_nll": F.cross_entropy(logits, test.y).item(),
        "test_ece": expected_calibration_error(probs, test.y),
        "num_params": count_parameters(model),
        "throughput": throughput(model, test.x),
    }
    if teacher_model is not None:
        t_meta = read_json(teacher_fit_json)
        t_logits = predict_logits(load_model(teacher_model, t_meta["model_sha256"]), test.x)
        metrics["teacher_agreement"] = agreement(logits, t_logits)
    row = {**{k: meta.get(k) for k in _ROW_KEYS}, **metrics}
    write_json(out, row)
    run = trk.attach_run(tracking, meta.get("mlflow_run_id"))
    run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
    run.flush()  # log_metrics buffers; this run is not ended here, so nothing else would write them
    run.log_artifact(out)
    return row


_ROW_KEYS = (
    "model",
    "role",
    "method",
    "seed",
    "edge",
    "best_val_acc",
    "best_epoch",
    "temperature",
    "alpha",
    "mlflow_run_id",
    "teacher_run_id",
)


def config_hash(config: dict) -> str:
    return fingerprint(config)
