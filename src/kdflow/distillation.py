"""Distilling by any registered method: the student and the method's added modules trained as one
module, the teacher's outputs computed once, and the training objective.

    method, hp = METHODS["fitnets"], METHODS["fitnets"].resolve({"feat_weight": 50})
    setup = DistillSetup.build(method, hp, spec, shape, n_cls, teacher_model, train, cached_logits)
    result = fit(setup.distiller, train, val, cfg, setup.objective())
    student = result.model.student            # exactly the architecture a scratch model has

The method's modules (regressors, embeddings, memory banks) live beside the student in a
`Distiller`, so one optimizer trains both, one checkpoint holds both (a killed job resumes
exactly, CRD's memory bank included), and the saved model is the student alone. The teacher is
frozen (eval mode, no gradients). Without augmentation its logits come from the cache (logits.pt)
and its features, for the methods that read any, from one pass over the training split at the
start of the job: the training inputs do not change between epochs, so every epoch reuses them.
With augmentation (`live=True`) every batch is new, so the teacher runs on each batch as the
student sees it (under the training loop's bf16 autocast when configured).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from kdflow.data import Split
from kdflow.engine import Objective
from kdflow.methods.base import Batch, Method, ModuleInfo
from kdflow.models import build_model


class Distiller(nn.Module):
    """The student and a method's added modules; `forward` is the student's alone, so validation
    and selection see exactly the model that will be saved."""

    def __init__(self, student: nn.Module, extra: nn.Module):
        super().__init__()
        self.student = student
        self.extra = extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)


@dataclass
class Teacher:
    """The teacher's outputs for a training batch: looked up by sample index in its outputs on
    the training split, or, with `model` set (live), computed from the batch itself."""

    logits: torch.Tensor | None  # (N, C); None when live
    feats: dict[str, torch.Tensor]  # name -> (N, *feature shape); only the layers a method reads
    model: nn.Module | None = None  # live: the frozen teacher, run on every batch
    layers: tuple[str, ...] = ()  # live: the features a method reads
    placed: tuple | None = field(default=None, repr=False)  # live: (device, channels_last) it is on

    @property
    def live(self) -> bool:
        return self.model is not None

    def batch(self, idx: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.model is not None:
            return self._run(x)
        if self.logits.device != idx.device:  # a cache read on the CPU moves once, at the first step
            self.logits = self.logits.to(idx.device)
            self.feats = {k: v.to(idx.device) for k, v in self.feats.items()}
        return self.logits[idx], {k: v[idx] for k, v in self.feats.items()}

    @torch.no_grad()
    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        nhwc = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        if self.placed != (x.device, nhwc):  # once: the teacher on the batch's device and layout
            self.model.to(x.device, memory_format=torch.channels_last if nhwc else torch.preserve_format)
            self.placed = (x.device, nhwc)
        model = self.model.eval()  # eval whatever the student's mode: frozen BN statistics
        if not self.layers:
            return model(x), {}
        logits, feats = model.forward_features(x)
        return logits, {n: feats[n] for n in self.layers}


@torch.no_grad()
def teacher_features(model: nn.Module, data: Split, layers: list[str], batch_size: int = 1024) -> dict:
    """`layers` of a frozen teacher (eval mode, no gradients) for every sample of `data`."""
    if not layers:
        return {}
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    for i in range(0, len(data), batch_size):
        _, feats = model.forward_features(data.inputs(slice(i, i + batch_size)))
        for n in layers:
            parts[n].append(feats[n])
    return {n: torch.cat(v) for n, v in parts.items()}


@torch.no_grad()
def feature_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Every feature `forward_features` gives, name -> shape without the batch, from one
    eval-mode pass on zeros (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    _, feats = model.forward_features(torch.zeros(2, *input_shape))
    model.train(was_training)
    return {n: tuple(f.shape[1:]) for n, f in feats.items()}


@dataclass
class DistillSetup:
    """Everything one distillation run needs, built once: trials of a tuning study share it."""

    method: Method
    spec: dict
    input_shape: tuple[int, ...]
    num_classes: int
    s_layers: list[str]
    t_shapes: dict
    teacher: Teacher

    @classmethod
    def build(
        cls,
        method: Method,
        hp: dict,
        spec: dict,
        input_shape: tuple[int, ...],
        num_classes: int,
        teacher_model: nn.Module | None,
        train: Split,
        teacher_logits: torch.Tensor | None,
        live: bool = False,
    ) -> DistillSetup:
        """`live`: the teacher runs on every batch (augmented inputs); `teacher_model` is then
        required and `teacher_logits` unused."""
        probe = build_model(spec, input_shape, num_classes)  # names and shapes only
        s_layers, t_layers = [], []
        if method.feature_kind is not None:
            s_layers, t_layers = method.layers(
                list(feature_shapes(probe, input_shape)), list(feature_shapes(teacher_model, input_shape)), hp
            )
        if live:
            shapes = feature_shapes(teacher_model, input_shape)
            t_shapes = {n: shapes[n] for n in t_layers}
            teacher = Teacher(None, {}, teacher_model.eval().requires_grad_(False), tuple(t_layers))
        else:
            feats = teacher_features(teacher_model, train, t_layers) if t_layers else {}
            t_shapes = {n: tuple(v.shape[1:]) for n, v in feats.items()}
            teacher = Teacher(teacher_logits, feats)
        return cls(method, spec, input_shape, num_classes, s_layers, t_shapes, teacher)

    def distiller(self, hp: dict, seed: int, n_train: int, pretrained: dict | None = None) -> Distiller:
        """A fresh student (the same initial weights as its scratch run for `seed`) and modules,
        for the main stage: from the `pretrained` state of the method's stage before it, if it
        has one, with what that stage froze made untrainable (no optimizer step, no decay)."""
        torch.manual_seed(seed)
        student = build_model(self.spec, self.input_shape, self.num_classes)
        self.method.prepare_student(student, self.s_layers, hp)
        shapes = feature_shapes(student, self.input_shape)
        s_shapes = {n: shapes[n] for n in self.s_layers}

        def new_student() -> nn.Module:
            return build_model(self.spec, self.input_shape, self.num_classes)

        info = ModuleInfo(num_classes=self.num_classes, n_train=n_train, new_student=new_student)
        d = Distiller(student, self.method.modules(s_shapes, self.t_shapes, info, hp))
        if pretrained is not None:
            d.load_state_dict(pretrained)
            stage = self.method.pretrain
            if stage.frozen_after:
                self.stage_module(d).requires_grad_(False)
        return d

    def final_student(self, d: Distiller, hp: dict) -> nn.Module:
        """The student to save, as the method leaves it (diffrep folds its branches), checked to
        be exactly the architecture of a scratch model: its weights load into a fresh one."""
        student = self.method.final_student(d.student, self.s_layers, hp)
        build_model(self.spec, self.input_shape, self.num_classes).load_state_dict(student.state_dict())
        return student

    def stage_module(self, d: Distiller) -> nn.Module:
        """What the method's pre-training stage trains: the distiller, or one of its modules."""
        trains = self.method.pretrain.trains
        return d if trains == "student" else getattr(d.extra, trains)

    def objective(self, hp: dict, pretrain_of: Distiller | None = None) -> Objective:
        """The method's training loss; with `pretrain_of`, its pre-training stage's loss on that
        distiller (the module being fitted is then the distiller, or its modules alone)."""
        method, s_layers, teacher = self.method, self.s_layers, self.teacher

        def step(model, x, y, idx, epoch):
            d = pretrain_of if pretrain_of is not None else model
            t_logits, t_feats = teacher.batch(idx, x)
            if pretrain_of is not None and method.pretrain.trains != "student":
                s_logits, s_feats = None, {}  # one module trains alone: the student is not run
            else:
                s_logits, feats = d.student.forward_features(x)
                s_feats = {n: feats[n] for n in s_layers} | method.student_features(d.student, s_layers)
            b = Batch(s_logits, t_logits, y, idx, s_feats, t_feats, epoch, x)
            loss = method.loss if pretrain_of is None else method.pretrain_loss
            return loss(b, hp, d.extra)

        return step
