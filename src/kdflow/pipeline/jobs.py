"""The pipeline's jobs as plain functions: each Snakemake script unpacks its paths and calls one.

    prepare_data(...)   generate / read a dataset into one .npz under resources/
    train(...)          train a model from labels (teacher, scratch student) or distil it
    cache_logits(...)   a teacher's logits on train/val, computed once, reused by every consumer
    evaluate(...)       test-set metrics of one trained model -> test_metrics.json

Tuning's jobs are in kdflow.pipeline.tune_jobs.

Files are the interface between jobs; MLflow only records. Each job's metadata file (`fit.json`)
holds its MLflow run id, which is how a student's run names its teacher's run (lineage).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from kdflow import data as datamod
from kdflow import tracking as trk
from kdflow.atomic import atomic_write, read_json, sha256, write_json
from kdflow.callbacks import Callback
from kdflow.checkpoint import (
    CorruptFileError,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
)
from kdflow.distillation import DistillSetup
from kdflow.engine import TrainConfig, augmentation, fingerprint, fit, predict_logits, scratch_objective
from kdflow.engine import evaluate as evaluate_split
from kdflow.methods import METHODS
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

    def log_to(self, run: trk.Run, **splits: datamod.Split) -> None:
        """Record the splits a run used as its MLflow inputs (the runs table's Dataset column)."""
        context = {"train": "train", "val": "validation", "test": "test"}
        for name, split in splits.items():
            digest = datamod.content_hash(split)
            run.log_dataset(f"{Path(self.path).stem}/{name}", digest, str(self.path), context[name])


@dataclass(frozen=True)
class JobInfo:
    """What a job is: names for tags, metadata and error messages."""

    rule: str
    model: str
    role: str  # teacher | assistant | student
    method: str  # scratch, or the method's row name (kd, dkd, kd_ls...)
    seed: int
    edge: str = ""  # "<teacher>__<student>", or "" when trained from labels
    config_hash: str = ""
    lineage: str = ""  # the chain it was distilled through ("t__a__s"), or "" when trained from labels

    @property
    def path(self) -> str:
        """Its place in the results tree below the rule: "<model>" or "<method>/<lineage>"."""
        return f"{self.method}/{self.lineage}" if self.lineage else self.model

    def tags(self) -> dict:
        return {
            "role": self.role,
            "method": self.method,
            "pair": self.lineage.replace("__", " → ") if self.lineage else "none",
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
    """A teacher as a consumer sees it: its cached logits, its metadata file, and its model (read
    only by methods that need its features)."""

    logits: Path
    fit_json: Path
    model: Path | None = None


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
        shown = {k: f"{metrics[k]:.3f}" for k in ("train_loss", "val_acc", "val_nll") if k in metrics}
        self.bar.set_postfix(shown)
        self.bar.update(1)

    def on_fit_end(self, result):
        self.bar.close()


def prepare_data(name: str, root: str | None, seed: int, out: Path, image_size=None) -> None:
    options = {"image_size": tuple(image_size)} if image_size else {}  # imagefolder's resize
    raw = datamod.LOADERS[name](Path(root) if root else None, seed, **options)
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


@dataclass(frozen=True)
class MethodRef:
    """The method a distillation job trains with: its registry name and every hyperparameter."""

    method: str  # kdflow.methods.METHODS key
    hp: dict  # resolved: the authors' defaults, the config's values, the tuned values


def distill_setup(
    spec: dict, teacher: TeacherRef, method: MethodRef, train_split: datamod.Split, cfg: TrainConfig
):
    """The teacher's metadata and a DistillSetup for `method`: the teacher's outputs from its
    cache (features computed once), or, when `cfg` augments the inputs, from the teacher run live
    on every batch. Which one is printed to the job's log."""
    shape, n_cls = datamod.input_shape(train_split), datamod.num_classes(train_split)
    t_meta, cache = load_teacher(teacher)
    m = METHODS[method.method]
    live = bool(augmentation(cfg))
    t_model = load_model(teacher.model, t_meta["model_sha256"]) if m.feature_kind or live else None
    setup = DistillSetup.build(m, method.hp, spec, shape, n_cls, t_model, train_split, cache["train"], live)
    print(f"teacher outputs: {teacher_outputs(cfg)}", flush=True)
    return t_meta, setup


def teacher_outputs(cfg: TrainConfig) -> str:
    """How a distillation job with `cfg` gets its teacher's outputs (job log, MLflow parameter)."""
    if augmentation(cfg):
        return "live (augmented inputs: the frozen teacher runs on every batch)"
    return "cached (logits.pt; features computed once at the start)"


def train(
    *,
    data: DataRef,
    spec: dict,
    cfg: TrainConfig,
    info: JobInfo,
    out_dir: Path,
    tracking: trk.TrackingSpec,
    teacher: TeacherRef | None = None,
    method: MethodRef | None = None,
    pretrained: Path | None = None,
    resolved_config: dict | None = None,
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
    snapshots: Sequence[int] = (),
) -> dict:
    """Train one model from labels or, given `teacher` and `method`, distil it (starting from the
    method's `pretrained` stage, if it has one); write into out_dir: model.pt, history.parquet,
    fit.json; checkpoint.pt is the resumable state (not an output). `snapshots`: epochs whose
    weights are kept too, as snapshot_epoch<k>.pt, listed in fit.json (early-stopped teachers)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    train_split, val_split = data.load("train"), data.load("val")
    shape, n_cls = datamod.input_shape(train_split), datamod.num_classes(train_split)
    tags = info.tags()
    # A checkpoint resumes only the run it was written for, on the same data and split.
    data_hash = datamod.content_hash(train_split, val_split)[:16]
    if teacher is None:
        torch.manual_seed(cfg.seed)
        model = build_model(spec, shape, n_cls)
        objective = scratch_objective(cfg.label_smoothing)
        run_key = json.dumps([spec, info.method, data_hash])
        method_params = {}
    else:
        t_meta, setup = distill_setup(spec, teacher, method, train_split, cfg)
        state = load_checkpoint(pretrained)["distiller"] if pretrained is not None else None
        model = setup.distiller(method.hp, cfg.seed, len(train_split), state)
        start = sha256(pretrained) if pretrained is not None else "none"
        objective = setup.objective(method.hp)
        run_key = json.dumps(
            [spec, info.method, method.method, method.hp, data_hash, t_meta["model_sha256"], start],
            default=str,
        )
        method_params = {"method_name": method.method, **method.hp, "teacher_outputs": teacher_outputs(cfg)}
        tags["teacher_run_id"] = t_meta.get("mlflow_run_id") or "none"

    student = model.student if teacher is not None else model
    params = {"model_spec": json.dumps(spec), "num_params": count_parameters(student), **asdict(cfg)}
    params.update(method_params)
    if teacher is not None:
        params["teacher"] = t_meta["model"]
    name = f"{info.rule}/{info.path}/seed{info.seed}"
    with trk.open_run(tracking, name, tags, params, output=str(out_dir)) as run:
        data.log_to(run, train=train_split, val=val_split)
        started = time.monotonic()
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
            snapshots=snapshots,
        )
        fit_seconds = time.monotonic() - started  # the job's training, apart from its fixed costs
        best = setup.final_student(result.model, method.hp) if teacher is not None else result.model
        model_sha = save_model(out_dir / "model.pt", best, spec, shape, n_cls)
        _write_history(result.history, out_dir / "history.parquet")
        meta = trained_meta(info, spec, best, result.best_epoch, model_sha, run.run_id, tags, method)
        meta.update(best_val_acc=result.best_val_acc, fit_seconds=round(fit_seconds, 3))
        if snapshots:
            meta["snapshots"] = _save_snapshots(result, spec, shape, n_cls, out_dir)
        write_json(out_dir / "fit.json", meta)
        run.set_tags({"model_sha256": model_sha})
        run.log_metrics({"best_val_acc": result.best_val_acc, "best_epoch": result.best_epoch})
        for f in ("model.pt", "history.parquet", "fit.json"):
            run.log_artifact(out_dir / f)
        if resolved_config is not None:
            write_json(out_dir / "config.resolved.json", trk.redact_config(resolved_config))
            run.log_artifact(out_dir / "config.resolved.json")
        run.log_model(best)
    return meta


def trained_meta(
    info: JobInfo, spec: dict, model, best_epoch: int, sha: str, run_id: str, tags: dict, method
) -> dict:
    """The fit.json of a trained model (both tasks; each adds its validation score): what its
    consumers (distillation, evaluation, the report) look up, and its lineage."""
    return {
        "model": info.model,
        "role": info.role,
        "method": info.method,
        "lineage": info.lineage or info.model,
        "seed": info.seed,
        "edge": info.edge,
        "spec": spec,
        "num_params": count_parameters(model),
        "best_epoch": best_epoch,
        "model_sha256": sha,
        "mlflow_run_id": run_id,
        "teacher_run_id": tags.get("teacher_run_id"),
        "hp": method.hp if method is not None else {},
    }


def pretrain(
    *,
    data: DataRef,
    spec: dict,
    cfg: TrainConfig,
    info: JobInfo,
    out: Path,
    tracking: trk.TrackingSpec,
    teacher: TeacherRef,
    method: MethodRef,
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
) -> None:
    """A method's stage before student training (FT's paraphraser, AB's and FSP's initialisation):
    train what the method's `pretrain` names for its epochs on the training split, without
    validation, and write the student and modules as they end to `out` (a resume checkpoint
    beside it makes it killable like any training job)."""
    train_split, val_split = data.load("train"), data.load("val")
    t_meta, setup = distill_setup(spec, teacher, method, train_split, cfg)
    m = METHODS[method.method]
    d = setup.distiller(method.hp, cfg.seed, len(train_split))
    trains = setup.stage_module(d)
    stage_cfg = replace(cfg, epochs=int(method.hp[m.pretrain.epochs]))
    data_hash = datamod.content_hash(train_split, val_split)[:16]
    run_key = json.dumps([spec, method.method, method.hp, data_hash, t_meta["model_sha256"]], default=str)
    name = f"{info.rule}/{info.path}/seed{info.seed}"
    tags = {**info.tags(), "teacher_run_id": t_meta.get("mlflow_run_id") or "none"}
    params = {"method_name": method.method, **method.hp, **asdict(stage_cfg), "trains": m.pretrain.trains}
    with trk.open_run(tracking, name, tags, params, output=str(out.parent)) as run:
        fit(
            trains,
            train_split,
            None,
            stage_cfg,
            setup.objective(method.hp, pretrain_of=d),
            callbacks=[ProgressBar(name), trk.MetricsCallback(run)],
            checkpoint=out.parent / "checkpoint.pt",
            checkpoint_every_s=checkpoint_every_s,
            run_key=run_key,
            stage=name,
        )
        save_checkpoint(out, {"distiller": d.cpu().state_dict(), "method": method.method})


def _save_snapshots(result, spec: dict, shape, n_cls: int, out_dir: Path) -> dict:
    """Each kept epoch's weights as a model file; {epoch: {file, model_sha256, val_acc}}."""
    out = {}
    for epoch, state in sorted(result.snapshots.items()):
        model = build_model(spec, shape, n_cls)
        model.load_state_dict(state)
        file = f"snapshot_epoch{epoch}.pt"
        sha = save_model(out_dir / file, model, spec, shape, n_cls)
        out[str(epoch)] = {"file": file, "model_sha256": sha, "val_acc": result.history[epoch - 1]["val_acc"]}
    return out


def snapshot(
    *, parent_fit: Path, epoch: int, info: JobInfo, out_dir: Path, tracking: trk.TrackingSpec
) -> dict:
    """An early-stopped teacher: the weights its model's training job kept at `epoch`, as a model
    of its own (model.pt, fit.json), with its own MLflow run that names the training run it is from."""
    parent = read_json(parent_fit)
    kept = parent.get("snapshots", {}).get(str(epoch))
    if kept is None:
        raise CorruptFileError(
            f"{parent_fit} lists no snapshot of epoch {epoch} (it has "
            f"{sorted(parent.get('snapshots', {}))}); delete that model's outputs and rerun: its "
            "training keeps the epochs the config asks for"
        )
    source = Path(parent_fit).parent / kept["file"]
    model = load_model(source, kept["model_sha256"])  # verifies the file against the recorded sha256
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = parent["spec"]
    tags = {**info.tags(), "snapshot_of_run_id": parent.get("mlflow_run_id") or "none"}
    params = {"snapshot_of": parent["model"], "epoch": epoch, "model_spec": json.dumps(spec)}
    name = f"{info.rule}/{info.model}/seed{info.seed}"
    with trk.open_run(tracking, name, tags, params, output=str(out_dir)) as run:
        with atomic_write(out_dir / "model.pt") as tmp:
            shutil.copyfile(source, tmp)
        meta = _assembled_meta(info, model, spec, epoch, kept["val_acc"], kept["model_sha256"], run.run_id)
        meta["snapshot_of"] = parent["model"]
        write_json(out_dir / "fit.json", meta)
        run.log_metrics({"best_val_acc": kept["val_acc"], "best_epoch": epoch})
        for f in ("model.pt", "fit.json"):
            run.log_artifact(out_dir / f)
    return meta


def ensemble(
    *,
    data: DataRef,
    member_models: list[Path],
    member_fits: list[Path],
    combine: str,
    info: JobInfo,
    out_dir: Path,
    tracking: trk.TrackingSpec,
) -> dict:
    """A teacher that is several trained models (kdflow.models.ensemble): their weights in one
    model file, its validation accuracy, and an MLflow run that names its members' runs."""
    metas = [read_json(f) for f in member_fits]
    trained = [load_model(m, meta["model_sha256"]) for m, meta in zip(member_models, metas)]
    val = data.load("val")
    shape, n_cls = datamod.input_shape(val), datamod.num_classes(val)
    spec = {"family": "ensemble", "members": [m["spec"] for m in metas], "combine": combine}
    model = build_model(spec, shape, n_cls)
    for slot, member in zip(model.members, trained):
        slot.load_state_dict(member.state_dict())
    val_acc = evaluate_split(model.eval(), val)["acc"]  # an oracle reads the validation labels
    out_dir.mkdir(parents=True, exist_ok=True)
    listed = [
        {
            "model": m["model"],
            "seed": m["seed"],
            "model_sha256": m["model_sha256"],
            "mlflow_run_id": m.get("mlflow_run_id"),
        }
        for m in metas
    ]
    tags = {**info.tags(), "member_run_ids": ",".join(str(m["mlflow_run_id"]) for m in listed)}
    params = {"combine": combine, "members": json.dumps([[m["model"], m["seed"]] for m in listed])}
    name = f"{info.rule}/{info.model}/seed{info.seed}"
    with trk.open_run(tracking, name, tags, params, output=str(out_dir)) as run:
        sha = save_model(out_dir / "model.pt", model, spec, shape, n_cls)
        meta = {**_assembled_meta(info, model, spec, 0, val_acc, sha, run.run_id), "members": listed}
        write_json(out_dir / "fit.json", meta)
        run.log_metrics({"best_val_acc": val_acc})
        for f in ("model.pt", "fit.json"):
            run.log_artifact(out_dir / f)
    return meta


def _assembled_meta(
    info: JobInfo, model, spec: dict, epoch: int, val_acc: float, sha: str, run_id: str
) -> dict:
    """fit.json of a teacher assembled from trained models (a snapshot, an ensemble), as a trained
    model's reads: what consumers (the cache, evaluation, the report) look up."""
    return {
        "model": info.model,
        "role": info.role,
        "method": info.method,
        "lineage": info.model,
        "seed": info.seed,
        "edge": "",
        "spec": spec,
        "num_params": count_parameters(model),
        "best_epoch": epoch,
        "best_val_acc": val_acc,
        "model_sha256": sha,
        "mlflow_run_id": run_id,
        "teacher_run_id": "none",
        "hp": {},
    }


def _write_history(history: list[dict], path: Path) -> None:
    with atomic_write(path) as tmp:
        pd.DataFrame(history).to_parquet(tmp, index=False)


def cache_logits(*, data: DataRef, model_file: Path, fit_json: Path, out: Path) -> None:
    """Teacher logits on the train and val splits, keyed by the teacher checkpoint's sha256."""
    meta = read_json(fit_json)
    model = load_model(model_file, meta["model_sha256"])
    train, val = data.load("train"), data.load("val")  # labels: an oracle ensemble reads them
    save_checkpoint(
        out,
        {
            "train": predict_logits(model, train),  # (N_train, C)
            "val": predict_logits(model, val),  # (N_val, C)
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
    logits = predict_logits(model, test)  # an oracle ensemble reads the labels
    probs = logits.softmax(1)
    metrics = {
        "test_acc": (logits.argmax(1) == test.y).float().mean().item(),
        "test_nll": F.cross_entropy(logits, test.y).item(),
        "test_ece": expected_calibration_error(probs, test.y),
        "num_params": count_parameters(model),
        # an oracle ensemble cannot run without the labels: it has no deployable throughput
        "throughput": float("nan")
        if getattr(model, "needs_labels", False)
        else throughput(model, test.inputs()),
    }
    if teacher_model is not None:
        t_meta = read_json(teacher_fit_json)
        t_logits = predict_logits(load_model(teacher_model, t_meta["model_sha256"]), test)
        metrics["teacher_agreement"] = agreement(logits, t_logits)
    row = {**{k: meta.get(k) for k in _ROW_KEYS}, **meta.get("hp", {}), **metrics}
    write_json(out, row)
    run = trk.attach_run(tracking, meta.get("mlflow_run_id"))
    data.log_to(run, test=test)
    run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
    run.flush()  # log_metrics buffers; this run is not ended here, so nothing else would write them
    run.log_artifact(out)
    return row


_ROW_KEYS = (
    "model",
    "role",
    "method",
    "lineage",
    "seed",
    "edge",
    "best_val_acc",
    "best_epoch",
    "mlflow_run_id",
    "teacher_run_id",
)


def config_hash(config: dict) -> str:
    return fingerprint(config)
