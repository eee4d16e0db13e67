"""The jobs of a `task: generative` experiment: the classification jobs' shapes for generative models.

    train(...)           a teacher or a student alone: its ELBO with KL warm-up (wake-sleep for hm)
                         on the training split; the epoch with the lowest validation NLL bound is kept
    train(..., teacher=, method=)
                         a student distilled from its teacher WITHOUT DATA: every step draws fresh
                         noise (torch's generator, checkpointed with the fit) and runs both chains on
                         it; the last epoch is kept (selecting on real validation data would not be
                         data-free)
    fd_classifier(...)   the small classifier whose features the Fréchet distance uses (train split)
    evaluate(...)        test NLL (importance-sampled with a proposal fitted to the model by one
                         procedure for all, or exact for hm), its effective sample size, MMD and the
                         classifier-feature Fréchet distance of the model's samples, a sample grid

Inputs are standardised per feature by the training split's mean and std for signals (mnist1d,
old_faithful), and normalised per channel by the training split as every image is (kdflow.data), so
NLLs are in nats of that space. Model files hold the family, spec and input shape beside the
weights, and their sha256 is recorded in fit.json as for classifiers. Training runs through
kdflow.engine.fit: the same checkpointing and exact resume, the same MLflow callbacks.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from kdflow import plan
from kdflow import tracking as trk
from kdflow.atomic import atomic_write, read_json, sha256, write_json
from kdflow.checkpoint import load_checkpoint, load_model, save_checkpoint, save_model, verify
from kdflow.data import Split, content_hash
from kdflow.dgm.families import FAMILIES
from kdflow.dgm.family import kl_weight
from kdflow.dgm.nll import frechet_distance, gaussian_mmd
from kdflow.engine import TrainConfig, fit, scratch_objective
from kdflow.models import build_model, count_parameters
from kdflow.pipeline.jobs import (
    CHECKPOINT_EVERY_S,
    DataRef,
    JobInfo,
    MethodRef,
    ProgressBar,
    _write_history,
    trained_meta,
)


@dataclass(frozen=True)
class GenSettings:
    """The config's `generative` block (workflow/schemas/config.schema.yaml says what each is)."""

    kl_warmup_epochs: int = 20
    importance_samples: int = 1000
    proposal_steps: int = 2000
    samples: int = 1000
    tune_importance_samples: int = 100
    tune_proposal_steps: int = 500
    test_examples: int | None = None  # the NLL on the first n test examples (None: all)


@dataclass(frozen=True)
class ModelRef:
    """A trained generative model: its file and its fit.json (which records the file's sha256)."""

    model: Path
    fit_json: Path


def load_inputs(data: DataRef, *names: str) -> dict[str, Split]:
    """The splits `names` as float inputs: signals standardised per feature by the training
    split's statistics, images as Split.inputs normalises them (per channel, training split)."""
    loaded = {"train": data.load("train")}  # read once: its statistics, and maybe as a split
    train = loaded["train"].inputs()
    if train.dim() == 2:
        mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    else:
        mean, std = torch.zeros(()), torch.ones(())
    out = {}
    for name in names:
        split = loaded[name] if name in loaded else data.load(name)
        out[name] = Split((split.inputs() - mean) / std, split.y)
    return out


def save_gen_model(path: Path, model: torch.nn.Module, spec: dict, shape: tuple[int, ...]) -> str:
    save_checkpoint(path, {"state_dict": model.state_dict(), "spec": spec, "input_shape": list(shape)})
    return sha256(path)


def load_gen_model(path: Path, expected_sha256: str | None = None) -> torch.nn.Module:
    verify(path, expected_sha256)
    ck = load_checkpoint(path)
    model = FAMILIES[ck["spec"]["family"]].build(ck["spec"], tuple(ck["input_shape"]))
    model.load_state_dict(ck["state_dict"])
    return model.eval()


def _scalars(parts: dict) -> dict:
    """The scalar parts of a loss (fit sums each per epoch); per-example tensors are dropped."""
    return {k: v for k, v in parts.items() if v.dim() == 0}


@torch.no_grad()
def val_nll(family: str, model: torch.nn.Module, x: torch.Tensor, batch: int = 1024) -> float:
    """The mean validation NLL bound (negative ELBO; exact for hm), batched."""
    was = model.training
    model.eval()
    parts = [FAMILIES[family].val_nll(model, x[i : i + batch]) for i in range(0, len(x), batch)]
    model.train(was)
    return torch.cat(parts).double().mean().item()


def _validator(family: str):
    def validate(model, val: Split) -> dict:
        nll = val_nll(family, model, val.x)
        return {"val_nll": nll, "val_score": -nll}  # fit keeps the highest score

    return validate


def distillation(
    arch: dict, shape: tuple[int, ...], teacher: torch.nn.Module, method: MethodRef, cfg: TrainConfig
):
    """A student to distil from `teacher` by `method`, data-free: (student, objective, cfg). The
    student is built from cfg's seed with the modules its family freezes frozen; the objective runs
    the method's loss on fresh noise every step (as many samples as the batch); cfg takes the
    method's `lr` when it sets one. Used by distillation jobs and tuning trials alike."""
    family = FAMILIES[arch["family"]]
    torch.manual_seed(cfg.seed)
    student = family.build(arch, shape)
    for module in family.frozen(student, method.method):
        module.requires_grad_(False)
    loss, hp = family.distill[method.method], method.hp
    objective = lambda m, x, y, idx, epoch: _scalars(loss(teacher, m, len(idx), hp))  # noqa: E731
    if hp.get("lr") is not None:
        cfg = replace(cfg, lr=float(hp["lr"]))
    return student, objective, cfg


def train(
    *,
    data: DataRef,
    spec: dict,
    cfg: TrainConfig,
    gen: GenSettings,
    info: JobInfo,
    out_dir: Path,
    tracking: trk.TrackingSpec,
    teacher: ModelRef | None = None,
    method: MethodRef | None = None,
    resolved_config: dict | None = None,
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
) -> dict:
    """Train one generative model by its ELBO or, given `teacher` and `method`, distil it without
    data (see the module docstring); write model.pt, history.parquet, fit.json into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    family = FAMILIES[spec["family"]]
    splits = load_inputs(data, "train", "val")
    train_split, val_split = splits["train"], splits["val"]
    shape = tuple(train_split.x.shape[1:])
    arch = plan.bare(spec)
    data_hash = content_hash(train_split, val_split)[:16]
    tags = info.tags()
    if teacher is None:
        torch.manual_seed(cfg.seed)
        model = family.build(arch, shape)
        warm = gen.kl_warmup_epochs
        objective = lambda m, x, y, idx, epoch: _scalars(family.train_loss(m, x, kl_weight(epoch, warm)))  # noqa: E731
        val, validate = val_split, _validator(spec["family"])
        run_key = json.dumps([spec, "scratch", data_hash])
        method_params = {}
    else:
        t_meta = read_json(teacher.fit_json)
        t_model = load_gen_model(teacher.model, t_meta["model_sha256"]).to(cfg.device).requires_grad_(False)
        model, objective, cfg = distillation(arch, shape, t_model, method, cfg)
        val, validate = None, None  # data-free: no real data choose the epoch
        run_key = json.dumps([spec, method.method, method.hp, data_hash, t_meta["model_sha256"]], default=str)
        tags["teacher_run_id"] = t_meta.get("mlflow_run_id") or "none"
        hp = {k: v for k, v in method.hp.items() if k != "lr"}  # the lr in use is cfg's, below
        method_params = {"method_name": method.method, **hp, "teacher": t_meta["model"]}
    params = {"model_spec": json.dumps(spec), **asdict(cfg), **asdict(gen), **method_params}
    params["num_params"] = count_parameters(model)
    name = f"{info.rule}/{info.path}/seed{info.seed}"
    with trk.open_run(tracking, name, tags, params, output=str(out_dir)) as run:
        if teacher is None:
            data.log_to(run, train=train_split, val=val_split)
        started = time.monotonic()
        result = fit(
            model,
            train_split,
            val,
            cfg,
            objective,
            callbacks=[ProgressBar(name), trk.MetricsCallback(run)],
            checkpoint=out_dir / "checkpoint.pt",
            checkpoint_every_s=checkpoint_every_s,
            run_key=run_key,
            stage=name,
            validate=validate,
            select="val_score",
        )
        fit_seconds = time.monotonic() - started
        best = result.model.cpu().requires_grad_(True)
        sha = save_gen_model(out_dir / "model.pt", best, arch, shape)
        _write_history(result.history, out_dir / "history.parquet")
        meta = trained_meta(info, spec, best, result.best_epoch, sha, run.run_id, tags, method)
        meta.update(best_val_nll=-result.best_val_acc if teacher is None else None)
        meta["fit_seconds"] = round(fit_seconds, 3)
        write_json(out_dir / "fit.json", meta)
        run.set_tags({"model_sha256": sha})
        if teacher is None:
            run.log_metrics({"best_val_nll": meta["best_val_nll"], "best_epoch": result.best_epoch})
        for f in ("model.pt", "history.parquet", "fit.json"):
            run.log_artifact(out_dir / f)
        if resolved_config is not None:
            write_json(out_dir / "config.resolved.json", trk.redact_config(resolved_config))
            run.log_artifact(out_dir / "config.resolved.json")
    return meta


FD_CLASSIFIER = {"family": "mlp", "hidden": [128, 128]}  # its penultimate layer: the features


def fd_classifier(*, data: DataRef, out: Path, epochs: int = 30, seed: int = 0) -> dict:
    """The classifier whose penultimate features the Fréchet distance compares: an MLP trained
    on the training split's labels (validation picks the epoch), written as a kdflow model."""
    splits = load_inputs(data, "train", "val")
    train_split, val_split = splits["train"], splits["val"]
    shape, n_cls = tuple(train_split.x.shape[1:]), int(train_split.y.max()) + 1
    torch.manual_seed(seed)
    model = build_model(FD_CLASSIFIER, shape, n_cls)
    cfg = TrainConfig(epochs=epochs, seed=seed)
    result = fit(model, train_split, val_split, cfg, scratch_objective())
    sha = save_model(out, result.model, FD_CLASSIFIER, shape, n_cls)
    return {"val_acc": result.best_val_acc, "sha256": sha}


@torch.no_grad()
def _features(classifier: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return classifier.forward_features(x)[1]["penultimate"]


def _median_distance(x: torch.Tensor) -> float:
    """The median pairwise distance of x: the MMD kernel's bandwidth scale (the median heuristic)."""
    d = torch.cdist(x.reshape(len(x), -1).double(), x.reshape(len(x), -1).double())
    return d[torch.triu(torch.ones_like(d, dtype=torch.bool), 1)].median().item()


def evaluate(
    *,
    data: DataRef,
    model_file: Path,
    fit_json: Path,
    gen: GenSettings,
    out: Path,
    samples_out: Path,
    tracking: trk.TrackingSpec,
    classifier: Path | None = None,
) -> dict:
    """Test-set metrics of one generative model (the only generative job that reads the test
    split); the first 64 of its samples to `samples_out` (.npy) for the report's grids."""
    meta = read_json(fit_json)
    model = load_gen_model(model_file, meta["model_sha256"])
    family = FAMILIES[meta["spec"]["family"]]
    splits = load_inputs(data, "train", "test")
    x_train, x_test = splits["train"].x, splits["test"].x[: gen.test_examples]
    seed = int(meta["seed"])
    torch.manual_seed(seed)
    est = family.test_nll(model, x_test, x_train, gen.importance_samples, gen.proposal_steps, seed)
    nll = est["nll"].double()
    samples = family.sample(model, gen.samples, torch.Generator().manual_seed(seed))
    real = x_test[torch.randperm(len(x_test), generator=torch.Generator().manual_seed(seed))[: gen.samples]]
    h = _median_distance(real)
    metrics = {
        "test_nll": nll.mean().item(),
        "test_nll_sem": (nll.std() / math.sqrt(len(nll))).item(),
        "nll_estimator": est["estimator"],
        "ess_median": est["ess"].median().item() if est["ess"] is not None else float("nan"),
        "ess_below_10": (est["ess"] < 10).double().mean().item() if est["ess"] is not None else float("nan"),
        "mmd2": gaussian_mmd(real, samples, bandwidths=(0.5 * h, h, 2 * h)).item(),
        "fd_clf": float("nan"),
        "num_params": count_parameters(model),
        "n_test": len(x_test),
    }
    if classifier is not None:
        clf = load_model(classifier).eval()
        metrics["fd_clf"] = frechet_distance(_features(clf, real), _features(clf, samples))
    keys = (
        "model",
        "role",
        "method",
        "lineage",
        "seed",
        "edge",
        "best_val_nll",
        "best_epoch",
        "mlflow_run_id",
    )
    row = {**{k: meta.get(k) for k in keys}, **meta.get("hp", {}), **metrics}
    write_json(out, row)
    with atomic_write(samples_out) as tmp, open(tmp, "wb") as f:
        np.save(f, samples[:64].cpu().numpy())
    run = trk.attach_run(tracking, meta.get("mlflow_run_id"))
    run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)})
    run.flush()
    run.log_artifact(out)
    return row


def continual(*, data: DataRef, spec: dict, cfg: TrainConfig, gen: GenSettings, cl: dict, out: Path) -> dict:
    """Continual learning on the dataset's classes (kdflow.dgm.continual.run_continual), one seed:
    test NLL on both tasks of the step-1 model, naive fine-tuning, KD4DGM, and the joint reference."""
    from kdflow.dgm.continual import run_continual

    s = load_inputs(data, "train", "val", "test")
    started = time.monotonic()
    result = run_continual(
        s["train"].x, s["train"].y, s["val"].x, s["val"].y, s["test"].x, s["test"].y,
        tasks=tuple(tuple(t) for t in cl["tasks"]),
        hidden=spec.get("hidden", 64), layers=spec.get("layers", 3),
        latent=spec.get("latent", 8), epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
        kl_warmup_epochs=gen.kl_warmup_epochs, lam=cl["lam"], distill_weight=cl["distill_weight"],
        k=gen.importance_samples, proposal_steps=gen.proposal_steps, seed=cfg.seed,
    )  # fmt: skip
    record = {
        "seed": cfg.seed,
        "tasks": cl["tasks"],
        "models": result,
        "seconds": round(time.monotonic() - started, 1),
    }
    write_json(out, record)
    return record
