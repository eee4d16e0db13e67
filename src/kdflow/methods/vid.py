"""vid: Ahn et al., "Variational Information Distillation for Knowledge Transfer", CVPR 2019.

    mu_i = r_i(s_i)                                         # a regressor per paired block
    var_i = softplus(alpha_i) + eps                         # one learned variance per teacher channel
    nll_i = mean( 0.5 * ((mu_i - t_i)^2 / var_i + log var_i) )
    loss = ce_weight * CE(s, y) + feat_weight * sum_i nll_i

The student maximises a variational lower bound on the mutual information between its block and the
teacher's: the negative log-likelihood of the teacher feature under a Gaussian whose mean the
student predicts (the constant 0.5 log 2 pi dropped). Defaults from RepDistiller
(distiller_zoo/VID.py: the regressor three 1x1 convolutions without bias, ReLU between, the hidden
width the teacher's channels; the variance initialised to 5.0 with eps 1e-5; per-pair NLL averaged
over batch, channels and positions, the pairs summed as train_student.py does;
scripts/run_cifar_distill.sh `--distill vid -a 0 -b 1`). Maps of equal rank, (C, L) or (C, H, W),
go through Conv1d/Conv2d 1x1 after the larger map is pooled to the smaller's size (as the authors'
VID.py does); vectors, or a map paired with a vector, are flattened and go through Linear layers, so
the variance is per flattened teacher element.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdflow.methods.base import (
    Batch,
    Method,
    ModuleInfo,
    Param,
    combine,
    is_map_pair,
    pool_to_common,
    weights,
)


class VIDRegressor(nn.Module):
    """Predicts the teacher feature's mean from the student's, and holds its learned variance."""

    def __init__(self, s_shape: tuple[int, ...], t_shape: tuple[int, ...], init_var: float, eps: float):
        super().__init__()
        self.conv = is_map_pair(s_shape, t_shape)
        if self.conv:
            c_in, c_out = s_shape[0], t_shape[0]
            conv = nn.Conv1d if len(s_shape) == 2 else nn.Conv2d

            def layer(a: int, b: int) -> nn.Module:
                return conv(a, b, kernel_size=1, bias=False)
        else:
            c_in, c_out = math.prod(s_shape), math.prod(t_shape)

            def layer(a: int, b: int) -> nn.Module:
                return nn.Linear(a, b, bias=False)

        self.mean = nn.Sequential(
            layer(c_in, c_out), nn.ReLU(), layer(c_out, c_out), nn.ReLU(), layer(c_out, c_out)
        )
        # softplus(alpha) + eps starts at init_var: alpha = softplus^-1(init_var - eps)
        alpha = math.log(math.expm1(init_var - eps))
        self.alpha = nn.Parameter(torch.full((c_out,), alpha))
        self.eps = eps

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        """The Gaussian NLL of f_t given f_s, averaged over every element (a scalar)."""
        if self.conv:
            f_s, f_t = pool_to_common(f_s, f_t)  # (B, C_s, *S), (B, C_t, *S)
        else:
            f_s, f_t = f_s.flatten(1), f_t.flatten(1)  # (B, D_s), (B, D_t)
        mu = self.mean(f_s).float()  # (B, C_t, *S) or (B, D_t)
        var = F.softplus(self.alpha.float()) + self.eps  # (C_t,)
        var = var.view(1, -1, *([1] * (mu.dim() - 2)))  # broadcast over batch and positions
        return (0.5 * ((mu - f_t.float()) ** 2 / var + var.log())).mean()


class VID(Method):
    name = "vid"
    paper = "Ahn et al., CVPR 2019"
    source = "HobbitLong/RepDistiller distiller_zoo/VID.py, scripts/run_cifar_distill.sh (vid, -b 1)"
    # search: two decades below the authors' beta, one above
    params = {
        **weights(1.0, 0.01, 10.0),
        "init_var": Param(5.0, doc="initial variance of the Gaussian (VID.py init_pred_var)"),
        "var_eps": Param(1e-5, doc="added to softplus(alpha): the variance's floor (VID.py eps)"),
    }
    tune = ("feat_weight",)
    feature_kind = "any"
    layer_roles = "blocks"

    def modules(self, s_shapes: dict, t_shapes: dict, info: ModuleInfo, hp: dict) -> nn.Module:
        # one regressor per (student, teacher) pair, keyed by the student feature's name
        return nn.ModuleDict(
            {
                s: VIDRegressor(tuple(s_shapes[s]), tuple(t_shapes[t]), hp["init_var"], hp["var_eps"])
                for s, t in zip(s_shapes, t_shapes)
            }
        )

    def loss(self, b: Batch, hp: dict, modules: nn.Module) -> dict:
        parts = {
            f"vid_{s_name}": modules[s_name](f_s, f_t)
            for (s_name, f_s), f_t in zip(b.s_feats.items(), b.t_feats.values())
        }
        return combine(b, hp, sum(parts.values()), **parts)
