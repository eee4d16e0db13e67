"""fsp: Yim et al., "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization and
Transfer Learning", CVPR 2017 (flow of solution procedure).

    G(a, b)[i, j] = 1/|S| sum_x b_i(x) a_j(x)           # a, b consecutive blocks, pooled to one size S
    init loss = sum_i mean( (G(s_i, s_i+1) - G(t_i, t_i+1))^2 )     # init_epochs, the student alone
    loss      = ce_weight * CE(s, y) (+ kd_weight * KD)             # after the init stage

The FSP matrix (C_b x C_a per sample) is the Gram matrix between the channels of two consecutive
blocks: how the network's solution flows from one block to the next. Defaults from RepDistiller
(distiller_zoo/FSP.py: the larger map of each consecutive pair adaptive-average-pooled to the
smaller, each matrix a mean over positions, the pairs' mean squared differences summed, student and
teacher channels equal at every block; train_student.py `fsp`: the loss only in an init stage of
init_epochs=30 that trains the student's feature layers, then plain training with loss_kd = 0
whatever -b says; scripts/run_cifar_distill.sh `--distill fsp -a 0 -b 50`).

RepDistiller's feature list also holds the stem's output before the first block; kdflow's models
expose only the blocks, so the matrices are taken between consecutive paired blocks (base.pair_blocks):
n blocks give n - 1 matrices. The stage is `pretrain = Pretrain(trains="student")`, its loss
`pretrain_loss` (not weighted, as in helper/pretrain.py).
"""

from __future__ import annotations

import torch
from torch import nn

from kdflow.methods.base import Batch, Method, ModuleInfo, Param, Pretrain, combine, pool_to_common, weights


def fsp_matrix(bottom: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """bottom (B, C_a, *S_a), top (B, C_b, *S_b) -> (B, C_b, C_a), the larger map pooled first."""
    bottom, top = pool_to_common(bottom.float(), top.float())
    bottom, top = bottom.flatten(2), top.flatten(2)  # (B, C_a, S), (B, C_b, S)
    with torch.autocast(top.device.type, enabled=False):  # the product in float32, as every loss here
        return top @ bottom.transpose(1, 2) / bottom.shape[2]


class FSP(Method):
    name = "fsp"
    paper = "Yim et al., CVPR 2017"
    source = "HobbitLong/RepDistiller distiller_zoo/FSP.py, train_student.py (fsp), helper/pretrain.py"
    params = {
        **weights(50.0, 0.5, 500.0),  # the shared weights; feat_weight is replaced just below
        # the script passes -b 50, but RepDistiller's main stage adds no FSP term (loss_kd = 0 for
        # fsp): the effective beta is 0, and the init stage is not weighted
        "feat_weight": Param(0.0, doc="unused: the FSP loss runs only in the init stage (RepDistiller)"),
        "init_epochs": Param(30, doc="epochs of the init stage (train_student.py --init_epochs)"),
    }
    tune = ()  # the main stage is plain CE: nothing of FSP's own is left to tune there
    feature_kind = "map_same_channels"
    layer_roles = "blocks"
    pretrain = Pretrain(trains="student")

    def modules(self, s_shapes: dict, t_shapes: dict, info: ModuleInfo, hp: dict) -> nn.Module:
        s_chans = [shape[0] for shape in s_shapes.values()]
        t_chans = [shape[0] for shape in t_shapes.values()]
        if len(s_chans) < 2:
            raise ValueError(f"fsp: needs at least two paired blocks, got {list(s_shapes)}")
        if s_chans != t_chans:  # FSP.py: the matrices must have the same size on both sides
            raise ValueError(f"fsp: student channels {s_chans} differ from the teacher's {t_chans}")
        return nn.Module()  # nothing to train beside the student

    def pretrain_loss(self, b: Batch, hp: dict, modules: nn.Module) -> dict:
        s, t = list(b.s_feats.items()), list(b.t_feats.values())
        parts = {
            f"fsp_{s[i][0]}": (fsp_matrix(s[i][1], s[i + 1][1]) - fsp_matrix(t[i], t[i + 1])).pow(2).mean()
            for i in range(len(s) - 1)
        }
        total = sum(parts.values())
        return {"loss": total, "fsp": total, **parts}

    def loss(self, b: Batch, hp: dict, modules: nn.Module) -> dict:
        return combine(b, hp, None)  # after the init stage: CE (+ KD where kd_weight > 0) alone
