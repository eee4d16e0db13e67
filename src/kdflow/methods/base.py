"""What a distillation method is: the interface every file in kdflow.methods implements.

    method = METHODS["fitnets"]                      # kdflow.methods: the registry
    hp = method.resolve({"feat_weight": 50})         # the authors' defaults, overridden
    s_layers, t_layers = method.layers(s_names, t_names, hp)
    extra = method.modules(s_shapes, t_shapes, ModuleInfo(num_classes=10, n_train=3200), hp)
    parts = method.loss(batch, hp, extra)            # {"loss": ..., "ce": ..., "feat": ...}

The engine never names a method. A job asks the method which student and teacher features it
needs (by the names `forward_features` gives: "block1".., "penultimate", "block<i>_pre" before the
activation), builds the trainable modules it adds (regressors, embeddings, memory banks) from the
features' shapes, and trains them beside the student; they are never part of the saved student.

Every loss combines its parts as the field does (RepDistiller's train_student.py, gamma/alpha/beta):

    loss = ce_weight * CE(s, y) + kd_weight * KD(s, t; T) + feat_weight * method_loss

with the authors' values as the defaults of each method's `params`. `Param` also holds the Optuna
search range of the values that are tuned (`tune`). A method with a stage that must run before
student training (FT's paraphraser, AB's and FSP's initialisation) declares it as `pretrain`: the
pipeline runs it as a rule of its own (kdflow.pipeline.jobs.pretrain) and the distillation job starts from
its output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from kdflow.losses import soft_term


@dataclass(frozen=True)
class Param:
    """A hyperparameter: its default (the authors') and, if it may be tuned, its search range."""

    default: float | int | bool | str
    low: float | None = None
    high: float | None = None
    log: bool = False
    doc: str = ""
    valid: tuple[float, float] | None = None  # the values a config may give (inclusive), if limited

    @property
    def tunable(self) -> bool:
        return self.low is not None and self.high is not None


@dataclass(frozen=True)
class ModuleInfo:
    """What added modules may need to know beyond feature shapes."""

    num_classes: int
    n_train: int  # size of the training split (CRD's memory bank has one slot per sample)
    # a fresh student of the same architecture, initialised from the RNG's state (DML's peers)
    new_student: Callable[[], nn.Module] | None = None


@dataclass
class Batch:
    """One training step's inputs to a loss. Teacher tensors carry no gradient."""

    s_logits: torch.Tensor  # (B, C)
    t_logits: torch.Tensor  # (B, C)
    y: torch.Tensor  # (B,)
    idx: torch.Tensor  # (B,) indices into the training split
    s_feats: dict[str, torch.Tensor] = field(default_factory=dict)
    t_feats: dict[str, torch.Tensor] = field(default_factory=dict)
    epoch: int = 1  # 1-based; DKD's warm-up reads it
    x: torch.Tensor | None = None  # the batch's inputs, for modules that run on them (DML's peers)


@dataclass(frozen=True)
class Pretrain:
    """A stage before student training. `trains`: "student" (the student with the added modules:
    AB and FSP) or the name of one added module trained alone, the student not run (FT's
    "paraphraser"); `frozen_after`: that module stays fixed in the main stage (FT); `epochs`: the
    param holding the stage's epoch count."""

    trains: str
    frozen_after: bool = False
    epochs: str = "init_epochs"


class Method:
    """Base class: a method overrides `params`, `tune`, and `loss`; feature methods also `layers`
    (or `layer_roles`), `modules` and `feature_kind`."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""  # author, venue, year
    source: ClassVar[str] = ""  # the authors' file its defaults come from
    # For a method rebuilt from an incomplete description: which parts come from the paper and
    # which are kdflow's choices (the report prints it). "" for a method from its authors' code.
    reconstruction: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    tune: ClassVar[tuple[str, ...]] = ()  # tuned by default (each must be tunable)
    # None: logits only. "map": spatial feature maps (B, C, *spatial) from every layer it reads;
    # "map_same_channels": maps whose paired blocks have equal channel counts (FSP's matrices);
    # "any": maps or vectors. Config validation refuses a pair whose models cannot give them.
    feature_kind: ClassVar[str | None] = None
    # Which layers a feature method reads when the config names none: "last" (the last block),
    # "middle" (the middle block: FitNets' hint), "penultimate" (the embedding before the
    # classifier), "blocks" (every block, paired from the last: see pair_blocks), "blocks_pre"
    # (the same, before the activation).
    layer_roles: ClassVar[str | None] = None
    pretrain: ClassVar[Pretrain | None] = None
    stackable: ClassVar[bool] = False  # tuning may train trials as one stacked model (kd only)
    # The student trains in another form that `final_student` turns back into the architecture a
    # scratch model has (diffrep: one layer as parallel branches); its family must say where
    # (kdflow.models.base.Classifier.rep_target).
    reshapes_student: ClassVar[bool] = False

    def declared(self) -> dict[str, Param]:
        """Every hyperparameter a config may set: `params`, and for a method that reads one layer
        of each model, which layers (student_layer, teacher_layer; "" takes `layer_roles`)."""
        return {**self.params, **(LAYER_PARAMS if self.layer_roles in SINGLE_LAYER else {})}

    def resolve(self, overrides: dict | None = None) -> dict:
        """The method's hyperparameters: defaults, then `overrides` (validated by the config)."""
        return {**{k: p.default for k, p in self.declared().items()}, **(overrides or {})}

    def layers(self, s_names: list[str], t_names: list[str], hp: dict) -> tuple[list[str], list[str]]:
        """Feature names to request from the student and the teacher, in matching order."""
        role = self.layer_roles
        if role is None:
            return [], []
        if role in ("blocks", "blocks_pre"):
            s, t = pair_blocks(blocks(s_names), blocks(t_names))
            suffix = "_pre" if role == "blocks_pre" else ""
            return [n + suffix for n in s], [n + suffix for n in t]
        s = hp.get("student_layer") or pick(s_names, role)
        t = hp.get("teacher_layer") or pick(t_names, role)
        return [s], [t]

    def modules(self, s_shapes: dict, t_shapes: dict, info: ModuleInfo, hp: dict) -> nn.Module:
        """Trainable modules the method adds (shapes exclude the batch); none by default."""
        return nn.Module()

    def loss(self, b: Batch, hp: dict, modules: nn.Module) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def pretrain_loss(self, b: Batch, hp: dict, modules: nn.Module) -> dict[str, torch.Tensor]:
        """The loss of the `pretrain` stage, when the method has one."""
        raise NotImplementedError

    def prepare_student(self, student: nn.Module, s_layers: list[str], hp: dict) -> None:
        """Change the student for training, in place (a `reshapes_student` method)."""

    def student_features(self, student: nn.Module, s_layers: list[str]) -> dict[str, torch.Tensor]:
        """Tensors of the last forward that only the changed student holds (added to Batch.s_feats)."""
        return {}

    def final_student(self, student: nn.Module, s_layers: list[str], hp: dict) -> nn.Module:
        """The student to save: the architecture of a scratch model, computing the same function."""
        return student


SINGLE_LAYER = ("last", "middle", "penultimate")
LAYER_PARAMS = {
    "student_layer": Param("", doc="the student feature it reads ('': by its layer role), e.g. block2"),
    "teacher_layer": Param("", doc="the teacher feature it reads ('': by its layer role), e.g. block3"),
}


def blocks(names: list[str]) -> list[str]:
    """The block features ("block1", "block2", ...) in order, without "_pre" variants."""
    return sorted((n for n in names if n.startswith("block") and n[5:].isdigit()), key=lambda n: int(n[5:]))


def pair_blocks(s: list[str], t: list[str]) -> tuple[list[str], list[str]]:
    """Pair student and teacher blocks from the last one backwards, as many as the shallower has:
    RepDistiller pairs stage i with stage i, and its CIFAR pairs have equally many stages; a 2-block
    student of a 3-block teacher pairs (block1, block2) with (block2, block3)."""
    k = min(len(s), len(t))
    return s[len(s) - k :], t[len(t) - k :]


def pick(names: list[str], role: str) -> str:
    if role == "penultimate":
        return "penultimate"
    b = blocks(names)
    if role == "last":
        return b[-1]
    if role == "middle":  # RepDistiller's hint_layer=2 of 3 stages: the middle one
        return b[len(b) // 2]
    raise ValueError(f"unknown layer role {role!r}")


def is_map_pair(s_shape: tuple[int, ...], t_shape: tuple[int, ...]) -> bool:
    """Both (C, L) or both (C, H, W): a convolution connects them; anything else is flattened."""
    return len(s_shape) == len(t_shape) and len(s_shape) in (2, 3)


def pool_to_common(f_s: torch.Tensor, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool each spatial axis of the larger map down to the smaller's size."""
    size = tuple(min(a, b) for a, b in zip(f_s.shape[2:], f_t.shape[2:]))
    return _pool(f_s, size), _pool(f_t, size)


def _pool(f: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    if f.shape[2:] == size:
        return f
    if all(a % b == 0 for a, b in zip(f.shape[2:], size)):
        # Whole ratios (the usual halvings): a plain average pool, the same values as the adaptive
        # one and a deterministic backward on CUDA, which adaptive pooling's is not.
        kernel = tuple(a // b for a, b in zip(f.shape[2:], size))
        return {1: F.avg_pool1d, 2: F.avg_pool2d}[len(size)](f, kernel, kernel)
    return {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d}[len(size)](f, size)


def ce(s_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(s_logits.float(), y)


def kd_term(s_logits: torch.Tensor, t_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's soft term T^2 * KL(softmax(t/T) || softmax(s/T)) in float32 whatever the autocast
    dtype: kdflow.losses.soft_term, the one definition."""
    return soft_term(s_logits.float(), t_logits.float(), temperature)


def standardize(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Logit standardisation (Sun et al., CVPR 2024; logit-standardization-KD, mdistiller/distillers/
    KD.py `normalize`): z-score each sample's logits over classes, (z - mean) / (std + eps), the
    std unbiased as torch.std computes it. Applied to teacher and student before the temperature."""
    mean = logits.mean(-1, keepdim=True)
    return (logits - mean) / (logits.std(-1, keepdim=True) + eps)


def combine(b: Batch, hp: dict, method_loss: torch.Tensor | None, **named: torch.Tensor) -> dict:
    """ce_weight * CE + kd_weight * KD + feat_weight * method_loss, with every part named.
    The KD term is computed only where kd_weight > 0 (feature methods default to 0, as RepDistiller)."""
    parts = {"ce": ce(b.s_logits, b.y)}
    loss = hp.get("ce_weight", 1.0) * parts["ce"]
    if hp.get("kd_weight", 0.0) > 0:
        parts["kd"] = kd_term(b.s_logits, b.t_logits, hp.get("temperature", 4.0))
        loss = loss + hp["kd_weight"] * parts["kd"]
    if method_loss is not None:
        parts["feat"] = method_loss
        loss = loss + hp.get("feat_weight", 1.0) * method_loss
    return {"loss": loss, **parts, **named}


# The weights every feature method shares, with RepDistiller's defaults (gamma=1 CE, alpha=0 KD).
def weights(feat_weight: float, low: float, high: float) -> dict[str, Param]:
    return {
        "ce_weight": Param(1.0, doc="weight of cross-entropy on the labels (RepDistiller's gamma)"),
        "kd_weight": Param(0.0, doc="weight of Hinton's KD term (RepDistiller's alpha; 0: off)"),
        "temperature": Param(4.0, doc="T of the KD term, when kd_weight > 0"),
        "feat_weight": Param(feat_weight, low, high, log=True, doc="weight of the method's loss (beta)"),
    }
