"""ab: Heo et al., "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden
Neurons", AAAI 2019.

    c_i = connector_i(s_i)                                  # student pre-activation -> teacher's shape
    ab(c, t) = sum (c + m)^2 [c > -m and t <= 0] + (c - m)^2 [c <= m and t > 0]
    init loss = sum_i 2^(i - n + 1) * 3/1000 * ab(c_i, t_i) / B    # i = 0..n-1, the last pair weighs 1
    loss      = ce_weight * CE(s, y) (+ kd_weight * KD)             # after the init stage

Each teacher neuron is on (t > 0) or off before its ReLU; the student's connected pre-activation is
pushed past the margin m on the same side: a squared hinge, the differentiable stand-in for the
paper's activation-transfer loss. Defaults from RepDistiller (distiller_zoo/AB.py: margin 1.0, the
pair weights and the 3/1000 scale; models/util.py Connector: identity where the shapes agree, else a
convolution and BatchNorm; train_student.py `abound`: the loss only in an init stage of
init_epochs=30 that trains the student's feature layers and the connectors, then plain training with
loss_kd = 0 whatever -b says; scripts/run_cifar_distill.sh `--distill abound -a 0 -b 1`).

The stage is `pretrain = Pretrain(trains="student")`, its loss `pretrain_loss` (not weighted by
feat_weight, as in helper/pretrain.py). Features are read before the activation ("blocks_pre").
Connectors: a 1x1 convolution + BatchNorm for maps of equal rank, pooled to the teacher's size where
it is smaller (RepDistiller uses a strided or transposed convolution there); Linear + BatchNorm1d on
flattened features for vectors or a map paired with a vector.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kdflow.methods.base import (
    Batch,
    Method,
    ModuleInfo,
    Param,
    Pretrain,
    combine,
    is_map_pair,
    pool_to_common,
    weights,
)


class Connector(nn.Module):
    """Student pre-activation (C_s, *S_s) -> (C_t, *S) or flattened (D_t,); identity if shapes agree."""

    def __init__(self, s_shape: tuple[int, ...], t_shape: tuple[int, ...]):
        super().__init__()
        self.conv = is_map_pair(s_shape, t_shape)
        if s_shape == t_shape:
            self.net = nn.Identity()
        elif self.conv:
            conv, bn = (nn.Conv1d, nn.BatchNorm1d) if len(s_shape) == 2 else (nn.Conv2d, nn.BatchNorm2d)
            self.net = nn.Sequential(conv(s_shape[0], t_shape[0], kernel_size=1), bn(t_shape[0]))
        else:
            self.net = nn.Sequential(
                nn.Linear(math.prod(s_shape), math.prod(t_shape)), nn.BatchNorm1d(math.prod(t_shape))
            )

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The connected student feature and the teacher's, brought to one shape."""
        if self.conv:
            return pool_to_common(self.net(f_s), f_t)  # (B, C_t, *S) both
        return self.net(f_s.flatten(1)), f_t.flatten(1)  # (B, D_t) both


def ab_term(c: torch.Tensor, t: torch.Tensor, margin: float) -> torch.Tensor:
    """The margin loss summed over every element (batch included): c the connected student
    pre-activation, t the teacher's, of one shape."""
    c, t = c.float(), t.float()
    off = ((c > -margin) & (t <= 0)).float()  # the teacher's neuron is off, the student's is not past -m
    on = ((c <= margin) & (t > 0)).float()  # the teacher's neuron is on, the student's is not past +m
    return ((c + margin) ** 2 * off + (c - margin) ** 2 * on).sum()


class AB(Method):
    name = "ab"
    paper = "Heo et al., AAAI 2019"
    source = (
        "HobbitLong/RepDistiller distiller_zoo/AB.py, models/util.py Connector, train_student.py (abound)"
    )
    params = {
        **weights(1.0, 0.01, 10.0),  # the shared weights; feat_weight is replaced just below
        # the script passes -b 1, but RepDistiller's main stage adds no AB term (loss_kd = 0 for
        # abound): the effective beta is 0, and the init stage is not weighted
        "feat_weight": Param(0.0, doc="unused: the AB loss runs only in the init stage (RepDistiller)"),
        "margin": Param(1.0, doc="m: how far past zero the student's pre-activation must be"),
        "init_epochs": Param(30, doc="epochs of the init stage (train_student.py --init_epochs)"),
    }
    tune = ()  # the main stage is plain CE: nothing of AB's own is left to tune there
    feature_kind = "any"
    layer_roles = "blocks_pre"
    pretrain = Pretrain(trains="student")

    def modules(self, s_shapes: dict, t_shapes: dict, info: ModuleInfo, hp: dict) -> nn.Module:
        # one connector per (student, teacher) pair, keyed by the student feature's name
        return nn.ModuleDict(
            {s: Connector(tuple(s_shapes[s]), tuple(t_shapes[t])) for s, t in zip(s_shapes, t_shapes)}
        )

    def pretrain_loss(self, b: Batch, hp: dict, modules: nn.Module) -> dict:
        n, batch = len(b.s_feats), b.y.shape[0]
        parts = {}
        for i, ((s_name, f_s), f_t) in enumerate(zip(b.s_feats.items(), b.t_feats.values())):
            c, t = modules[s_name](f_s, f_t)
            # AB.py: the deepest pair weighs 1, each shallower one half the next; / B; * 3/1000
            parts[f"ab_{s_name}"] = 2.0 ** (i - n + 1) * ab_term(c, t, hp["margin"]) / batch * 3 / 1000
        total = sum(parts.values())
        return {"loss": total, "ab": total, **parts}

    def loss(self, b: Batch, hp: dict, modules: nn.Module) -> dict:
        return combine(b, hp, None)  # after the init stage: CE (+ KD where kd_weight > 0) alone
