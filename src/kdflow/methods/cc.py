"""cc: Peng et al., "Correlation Congruence for Knowledge Distillation", ICCV 2019.

    z_s = W_s e_s,  z_t = W_t e_t                       # trainable linear embeddings to feat_dim
    delta_i = |z_s,i - z_t,i|                           # (B, feat_dim)
    loss = ce_weight * CE(s, y) + feat_weight * mean_{i < B-1} <delta_i, delta_{i+1}>

on the penultimate features. This is the form in RepDistiller (distiller_zoo/CC.py, restructured
from the authors' code): the correlation between consecutive samples of the batch stands in for
the paper's full kernel correlation matrix. As there, both embeddings are linear maps to
feat_dim = 128 (train_student.py `--feat_dim`, models/util.py LinearEmbed) trained with the
student, the teacher's included; beta from scripts/run_cifar_distill.sh
(`--distill correlation -a 0 -b 0.02`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kdflow.methods.base import Batch, Method, ModuleInfo, Param, combine, weights


def cc_loss(z_s: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
    """(B, d), (B, d) -> scalar: the mean over neighbouring samples of <delta_i, delta_{i+1}>."""
    delta = (z_s.float() - z_t.float()).abs()  # (B, d)
    return (delta[:-1] * delta[1:]).sum(1).mean()


class CC(Method):
    name = "cc"
    paper = "Peng et al., ICCV 2019"
    source = "HobbitLong/RepDistiller distiller_zoo/CC.py, train_student.py (LinearEmbed to --feat_dim 128)"
    # search: two decades below the authors' beta, one above (a large weight swamps the CE term)
    params = {
        **weights(0.02, 0.0002, 0.2),
        "feat_dim": Param(128, doc="width of the student and teacher embeddings"),
    }
    tune = ("feat_weight",)
    feature_kind = "any"
    layer_roles = "penultimate"

    def modules(self, s_shapes: dict, t_shapes: dict, info: ModuleInfo, hp: dict) -> nn.Module:
        (s_shape,), (t_shape,) = s_shapes.values(), t_shapes.values()
        dim = int(hp["feat_dim"])
        return nn.ModuleDict(
            {
                "embed_s": nn.Linear(math.prod(s_shape), dim),
                "embed_t": nn.Linear(math.prod(t_shape), dim),
            }
        )

    def loss(self, b: Batch, hp: dict, modules: nn.Module) -> dict:
        f_s, f_t = next(iter(b.s_feats.values())), next(iter(b.t_feats.values()))
        z_s = modules["embed_s"](f_s.flatten(1))  # (B, feat_dim)
        z_t = modules["embed_t"](f_t.flatten(1))  # (B, feat_dim): trained, though f_t is not
        return combine(b, hp, cc_loss(z_s, z_t))
