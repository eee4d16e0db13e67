"""fitnets: Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015.

    loss = ce_weight * CE(s, y) + feat_weight * MSE(r(s_hint), t_hint)

The student's middle block (the "guided" layer) is mapped by a trainable regressor r to the shape
of the teacher's middle block (the "hint") and pulled towards it. Defaults from RepDistiller
(scripts/run_cifar_distill.sh `--distill hint -a 0 -b 100`; train_student.py `--hint_layer 2`, the
middle of its three stages). The regressor follows models/util.py ConvReg for maps: one convolution
that brings the student map to the teacher's channels and spatial size, then BatchNorm and ReLU
(the hint is a post-ReLU activation, so r ends in the same non-linearity). Beyond ConvReg's cases
(equal, half or double the size; larger by any amount) a smaller student map of any size is grown
with a transposed convolution. Vectors, or a map paired with a vector, go through Linear + ReLU
(models/util.py Regress), reshaped to the teacher's shape.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdflow.methods.base import Batch, Method, ModuleInfo, combine, is_map_pair, weights


def _axis(s: int, t: int) -> tuple[str, int, int, int]:
    """(kind, kernel, stride, padding) taking a spatial axis of size s to size t."""
    if s == 2 * t:  # stride-2 3x3: ceil(s / 2) = t
        return "down", 3, 2, 1
    if 2 * s == t:  # transposed 4x4, stride 2: 2s = t
        return "up", 4, 2, 1
    if s >= t:  # valid convolution: s - k + 1 = t (k = 1 when equal)
        return "down", 1 + s - t, 1, 0
    return "up", 1 + t - s, 1, 0  # transposed, stride 1: s + k - 1 = t


class ConvRegressor(nn.Module):
    """Student map (C_s, *S_s) -> teacher map (C_t, *S_t), 1-D or 2-D: conv, BatchNorm, ReLU."""

    def __init__(self, s_shape: tuple[int, ...], t_shape: tuple[int, ...]):
        super().__init__()
        dims = len(s_shape) - 1
        axes = [_axis(s, t) for s, t in zip(s_shape[1:], t_shape[1:])]
        up = any(kind == "up" for kind, *_ in axes)
        if up:  # one transposed conv for every axis: an equal axis keeps its size with kernel 1
            if any(kind == "down" and k > 1 for kind, k, _, _ in axes):
                raise ValueError(f"fitnets: no single conv maps student {s_shape} to teacher {t_shape}")
            axes = [("up", 1, 1, 0) if ax[0] == "down" else ax for ax in axes]
        conv = {
            (1, False): nn.Conv1d,
            (2, False): nn.Conv2d,
            (1, True): nn.ConvTranspose1d,
            (2, True): nn.ConvTranspose2d,
        }[(dims, up)]
        _, kernel, stride, padding = zip(*axes)
        self.conv = conv(s_shape[0], t_shape[0], kernel, stride, padding)
        self.bn = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(t_shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class LinearRegressor(nn.Module):
    """Anything (B, *s_shape) -> (B, *t_shape) through Linear + ReLU on the flattened feature."""

    def __init__(self, s_shape: tuple[int, ...], t_shape: tuple[int, ...]):
        super().__init__()
        self.t_shape = tuple(t_shape)
        self.linear = nn.Linear(math.prod(s_shape), math.prod(t_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.linear(x.flatten(1))).view(x.shape[0], *self.t_shape)


def regressor(s_shape: tuple[int, ...], t_shape: tuple[int, ...]) -> nn.Module:
    s_shape, t_shape = tuple(s_shape), tuple(t_shape)
    if is_map_pair(s_shape, t_shape):
        return ConvRegressor(s_shape, t_shape)
    return LinearRegressor(s_shape, t_shape)


class FitNets(Method):
    name = "fitnets"
    paper = "Romero et al., ICLR 2015"
    source = "HobbitLong/RepDistiller scripts/run_cifar_distill.sh (hint, -b 100), models/util.py ConvReg"
    # search: two decades below the authors' beta, one above (a large hint weight swamps the CE term)
    params = weights(100.0, 1.0, 1000.0)
    tune = ("feat_weight",)
    feature_kind = "any"
    layer_roles = "middle"

    def modules(self, s_shapes: dict, t_shapes: dict, info: ModuleInfo, hp: dict) -> nn.Module:
        # one regressor per (student, teacher) pair, keyed by the student feature's name
        return nn.ModuleDict({s: regressor(s_shapes[s], t_shapes[t]) for s, t in zip(s_shapes, t_shapes)})

    def loss(self, b: Batch, hp: dict, modules: nn.Module) -> dict:
        hint = sum(
            F.mse_loss(modules[s_name](f_s).float(), f_t.float())  # (B, *t_shape) against the hint
            for (s_name, f_s), f_t in zip(b.s_feats.items(), b.t_feats.values())
        )
        return combine(b, hp, hint)
