"""The training loop: one loop for plain and KD training.

    objective = scratch_objective()                      # or kd_objective(teacher_logits, T, alpha)
    result = fit(model, train, val, TrainConfig(epochs=30, seed=0), objective,
                 callbacks=[ProgressBar()], checkpoint=Path("ckpt.pt"))
    result.model      # weights of the epoch with the best validation accuracy (never test)
    result.history    # one dict per epoch: train_loss, train_<part>, val_acc, val_loss, lr

Data live as tensors on the training device (images as uint8) and are batched by index: the
permutation of epoch e is drawn from a generator seeded with (seed, e), so the order is a pure
function of the epoch and a resumed run sees the same batches. With `augment_crop`/`augment_flip`
each training batch is cropped and flipped on the device (kdflow.data.augment, its draws a pure
function of (seed, epoch, sample) too) before `Split.prep` converts and normalises it.

After every epoch the whole state (weights, optimizer, scheduler, best weights, history, torch RNG,
and on a GPU its RNG too, so dropout continues its sequence rather than replaying it) is written
atomically to `checkpoint`, skipped while the previous checkpoint is younger than
`checkpoint_every_s` (a save costs ~25 ms, a quarter of a small model's epoch; jobs use 10 s, so a
kill loses at most that); the last epoch is always saved. `fit` resumes from the checkpoint when it
exists and was written for the same configuration. On CPU a resumed fit ends with the same weights,
bit for bit, as one that ran straight through; on a GPU with deterministic cuDNN, within 1e-5
(tests/test_cuda.py).

The optimizer steps over one flat buffer holding every parameter (kdflow.flat): one step instead of
one per tensor, with the same weights bit for bit. It is kdflow.optim's AdamW or SGD, torch's
arithmetic without torch.optim, whose Optimizer imports torch._dynamo (~1.3 s of every job).

Side effects (progress, tracking, pruning) are callbacks; this module imports neither the
tracker nor the tuner. Metrics stay on the device during an epoch: one host sync per epoch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kdflow import optim
from kdflow.callbacks import Callback
from kdflow.checkpoint import load_checkpoint, save_checkpoint
from kdflow.data import Split
from kdflow.data.augment import Augment
from kdflow.flat import FlatParameters
from kdflow.losses import ce_loss, kd_loss


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 3e-3  # Adam-family default that trains these small nets in tens of epochs
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # "adamw" | "sgd" (momentum 0.9)
    nesterov: bool = True  # sgd's Nesterov momentum (RepDistiller and mdistiller use plain momentum)
    scheduler: str = "cosine"  # "cosine" (per epoch, to 0) | "constant" | "multistep"
    milestones: tuple[int, ...] = ()  # multistep: epochs (0-based counts) after which lr *= gamma
    gamma: float = 0.1
    warmup_epochs: int = 0  # linear warm-up: epoch e < warmup_epochs trains at (e + 1) / warmup_epochs
    augment_crop: int = 0  # random crop of images zero-padded by this many pixels (0: none)
    augment_flip: bool = False  # random horizontal flip of images
    channels_last: bool = False  # NHWC memory layout for image models (faster convolutions on GPUs)
    precision: str = "fp32"  # "bf16": forward/loss under bf16 autocast (weights and optimizer fp32)
    compile: bool = False  # torch.compile the model: pays on GPUs and long runs, not on small CPU jobs
    seed: int = 0
    device: str = "cpu"
    label_smoothing: float = 0.0  # of the CE when training from labels (scratch_objective)


# Part of every checkpoint's key: a checkpoint whose optimizer state has another layout (1: one
# torch state per tensor; 2: torch's optimizer over the flat buffer) is not resumed but started afresh.
STATE_FORMAT = 3


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite."""


# An objective maps (model, x, y, idx, epoch) to a dict of named loss parts; "loss" is optimised.
# idx: the batch's indices into the training split; epoch: 1-based (warm-ups read it).
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, int], dict]


def scratch_objective(label_smoothing: float = 0.0) -> Objective:
    def objective(model, x, y, idx, epoch):
        return ce_loss(model(x), y, label_smoothing)

    return objective


def kd_objective(teacher_logits: torch.Tensor, temperature: float, alpha: float) -> Objective:
    """KD against precomputed teacher logits for the training split, looked up by sample index.
    Logits read from a cache (on the CPU) move to the training device once, at the first step."""

    def objective(model, x, y, idx, epoch):
        nonlocal teacher_logits
        if teacher_logits.device != idx.device:
            teacher_logits = teacher_logits.to(idx.device)
        return kd_loss(model(x), teacher_logits[idx], y, temperature, alpha)

    return objective


def live_kd_objective(teacher: nn.Module, temperature: float, alpha: float) -> Objective:
    """KD with the teacher run on every batch (frozen: eval mode, no grad). For inputs that change
    every epoch (augmentation), where cached logits would be wrong; otherwise use kd_objective."""
    teacher.eval()

    def objective(model, x, y, idx, epoch):
        with torch.no_grad():
            t_logits = teacher(x)
        return kd_loss(model(x), t_logits, y, temperature, alpha)

    return objective


@dataclass
class FitResult:
    model: nn.Module  # best-validation weights loaded
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float = 0.0
    snapshots: dict = field(default_factory=dict)  # epoch -> state_dict, for the epochs fit was asked to keep


@torch.inference_mode()
def predict_logits(
    model: nn.Module, x: Split | torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 4096
) -> torch.Tensor:
    """Logits in eval mode, without gradients, batched to bound memory. `x`: a Split (its inputs
    converted and normalised batch by batch, its labels as `y`) or model-ready inputs. `y`: the
    labels, which a model with `needs_labels` (an oracle ensemble, kdflow.models.ensemble) reads."""
    was_training = model.training
    model.eval()
    if isinstance(x, Split):
        split, y = x, x.y
        inputs = lambda i: split.inputs(slice(i, i + batch_size))  # noqa: E731
    else:
        inputs = lambda i: x[i : i + batch_size]  # noqa: E731
    if getattr(model, "needs_labels", False):
        if y is None:
            raise ValueError(f"{type(model).__name__} chooses by the true label: its logits need y")
        parts = [model.oracle_logits(inputs(i), y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    else:
        parts = [model(inputs(i)) for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(parts)


def evaluate(model: nn.Module, split: Split) -> dict[str, float]:
    logits = predict_logits(model, split)
    return {
        "acc": (logits.argmax(1) == split.y).float().mean().item(),
        "loss": F.cross_entropy(logits, split.y).item(),
    }


def classifier_metrics(model: nn.Module, val: Split) -> dict[str, float]:
    """fit's default validation: accuracy and cross-entropy on the validation split."""
    v = evaluate(model, val)
    return {"val_acc": v["acc"], "val_loss": v["loss"]}


def epoch_permutation(n: int, seed: int, epoch: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """torch's per-tensor optimizer: for stacked students (kdflow.stacked), and the reference that
    make_flat_optimizer equals bit for bit."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, cfg.lr, momentum=0.9, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(params, cfg.lr, weight_decay=cfg.weight_decay)


def _lr_factor(cfg: TrainConfig):
    return optim.lr_factor(cfg.scheduler, cfg.epochs, cfg.milestones, cfg.gamma, cfg.warmup_epochs)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig):
    if (factor := _lr_factor(cfg)) is not None:
        return torch.optim.lr_scheduler.LambdaLR(opt, factor)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def make_flat_optimizer(param: torch.Tensor, cfg: TrainConfig) -> optim.AdamW | optim.SGD:
    """fit's optimizer over the one flat buffer: make_optimizer's update without torch.optim."""
    if cfg.optimizer == "sgd":
        return optim.SGD(param, cfg.lr, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    return optim.AdamW(param, cfg.lr, weight_decay=cfg.weight_decay)


def make_flat_scheduler(opt: optim.AdamW | optim.SGD, cfg: TrainConfig):
    """make_scheduler's rates, the same floats, for make_flat_optimizer's optimizer."""
    if (factor := _lr_factor(cfg)) is not None:
        return optim.FactorLR(opt, factor)
    if cfg.scheduler == "cosine":
        return optim.CosineLR(opt, cfg.epochs)
    return optim.ConstantLR(opt)


def augmentation(cfg: TrainConfig) -> Augment:
    return Augment(cfg.augment_crop, cfg.augment_flip)


def fingerprint(*parts: object) -> str:
    """A short hash of JSON-able parts: a checkpoint resumes only the run it was written for."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def fit(
    model: nn.Module,
    train: Split,
    val: Split | None,
    cfg: TrainConfig,
    objective: Objective,
    *,
    callbacks: Sequence[Callback] = (),
    checkpoint: Path | None = None,
    run_key: str = "",
    stage: str = "train",
    checkpoint_every_s: float = 0.0,
    snapshots: Sequence[int] = (),
    validate: Callable[[nn.Module, Split], dict[str, float]] | None = None,
    select: str = "val_acc",
) -> FitResult:
    """Train `model`; return it with its best-validation weights. See the module docstring.

    `run_key` identifies the run (model spec, method, T, alpha...) beyond `cfg`; together they
    decide whether an existing checkpoint belongs to this run. `stage` names the job in errors.
    Without `val` (a method's pre-training stage, which trains no classifier) nothing is validated
    and the weights of the last epoch are kept. `snapshots`: epochs whose end-of-epoch weights are
    kept as well (an early-stopped teacher), in the checkpoint too, so a resumed job still has them.
    `validate(model, val)`: the per-epoch validation metrics (default: a classifier's val_acc and
    val_loss); the epoch with the highest `select` among them is kept (a generative model's
    validation returns its negated NLL bound as its score, kdflow.dgm.jobs). FitResult.best_val_acc
    holds that best value.
    """
    device = cfg.device
    on_cuda = torch.device(device).type == "cuda"
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    train = train.to(device)
    val = val.to(device) if val is not None else None
    flat = FlatParameters(model)  # one optimizer step over one buffer, not one per tensor
    opt = make_flat_optimizer(flat.param, cfg)
    sched = make_flat_scheduler(opt, cfg)
    # A checkpoint resumes only a run that keeps the same snapshots (those before it are in it).
    key = fingerprint(asdict(cfg), run_key, STATE_FORMAT, *([sorted(snapshots)] if snapshots else []))
    state = {"epoch": 0, "best_epoch": 0, "best_val_acc": -math.inf, "best_state": None, "history": []}
    state["snapshots"] = {}  # epoch -> the model's state_dict at that epoch's end

    if checkpoint is not None and checkpoint.exists():
        ck = load_checkpoint(checkpoint)
        if ck["key"] == key:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            torch.set_rng_state(ck["rng"])
            if ck.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(ck["cuda_rng"], device)
            state = {k: ck.get(k, state[k]) for k in state}  # "snapshots" is newer than format 3

    for cb in callbacks:
        cb.on_fit_start(state["epoch"], cfg.epochs)

    n = len(train)
    last_save = time.monotonic()
    step_model = model
    if cfg.compile:  # inductor keeps its own copy of the determinism switch: set it as torch's is
        torch.use_deterministic_algorithms(
            torch.are_deterministic_algorithms_enabled(),
            warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
        )
        step_model = torch.compile(model)
    autocast = torch.autocast(torch.device(device).type, torch.bfloat16, enabled=cfg.precision == "bf16")
    aug = augmentation(cfg)
    if aug and train.x.dim() != 4:
        raise ValueError(
            f"{stage}: augmentation crops and flips images (N, C, H, W); inputs are {tuple(train.x.shape)}"
        )
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        model.train()
        perm = epoch_permutation(n, cfg.seed, epoch, device)
        draws = [d.to(device) for d in aug.draws(n, cfg.seed, epoch)] if aug else None
        sums: dict[str, torch.Tensor] = {}
        for start in range(0, n, cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            x = train.x[idx]
            if draws is not None:
                x = aug.apply(x, draws[0][idx], draws[1][idx])
            x = train.prep(x)
            if cfg.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                parts = objective(step_model, x, train.y[idx], idx, epoch)
            opt.zero_grad()
            parts["loss"].backward()
            flat.collect_grads()
            opt.step()
            for name, value in parts.items():  # summed on device; synced once per epoch
                sums[name] = sums.get(name, 0.0) + value.detach() * len(idx)
        lr = opt.lr
        sched.step()

        metrics = {f"train_{k}": v.item() / n for k, v in sums.items()}
        if not math.isfinite(metrics["train_loss"]):
            raise DivergenceError(
                f"{stage}: training loss became {metrics['train_loss']} at epoch {epoch} "
                f"(lr={cfg.lr}, {run_key}); lower the learning rate or check T/alpha"
            )
        metrics["lr"] = lr
        v = (validate or classifier_metrics)(model, val) if val is not None else None
        if v is not None:
            metrics.update(v)
        state["history"].append({"epoch": epoch, **metrics})
        if v is None or v[select] > state["best_val_acc"]:
            state.update(best_epoch=epoch, best_val_acc=v[select] if v else -1.0)
            state["best_state"] = copy.deepcopy(model.state_dict())
        if epoch in snapshots:
            state["snapshots"][epoch] = copy.deepcopy(model.state_dict())
        state["epoch"] = epoch

        if checkpoint is not None and (
            epoch == cfg.epochs or time.monotonic() - last_save >= checkpoint_every_s
        ):
            last_save = time.monotonic()
            save_checkpoint(
                checkpoint,
                {
                    **state,
                    "key": key,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if on_cuda else None,
                },
            )
        for cb in callbacks:
            cb.on_epoch_end(epoch, metrics)

    model.load_state_dict(state["best_state"])
    model.eval()
    result = FitResult(
        model, state["history"], state["best_epoch"], state["best_val_acc"], state["snapshots"]
    )
    for cb in callbacks:
        cb.on_fit_end(result)
    return result
