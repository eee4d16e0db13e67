"""ft: Kim, Park & Kwak, "Paraphrasing Complex Network: Network Compression via Factor Transfer",
NeurIPS 2018 (factor transfer).

    F_t = P_enc(t), F_s = T(s)                       # the factors: paraphraser's, translator's
    a(F) = normalize_L2( mean_c F^p1 )               # (B, C, *S) -> (B, prod(S))
    init loss = MSE( P_dec(P_enc(t)), t )            # the paraphraser alone, init_epochs
    loss = ce_weight * CE(s, y) + feat_weight * mean |a(F_s) - a(F_t)|^p2

A paraphraser (a convolutional autoencoder on the teacher's last block, its code k = 0.5 of the
teacher's channels) is first trained to reconstruct the teacher feature; then, frozen, its encoder
gives the teacher factor, and the student's translator (a convolutional encoder on the student's
last block) learns to match it. Defaults from RepDistiller (models/util.py Paraphraser and
Translator: three 3x3 convolutions with LeakyReLU(0.1), BatchNorm in the translator only, the
paraphraser's decoder three 3x3 transposed convolutions; distiller_zoo/FT.py FactorTransfer p1=2,
p2=1; train_student.py `factor`: the init stage of init_epochs=30 trains the paraphraser alone on
an MSE reconstruction, then the paraphraser is frozen and the translator trains with the student;
scripts/run_cifar_distill.sh `--distill factor -a 0 -b 200`).

As in RepDistiller (not the paper, whose factor is the whole flattened map), the factor compared is
the L2-normalised channel mean of F^p1 (with p1 = 2, an attention map of the factor), the larger
map pooled to the smaller's size first. 1-D maps use Conv1d, 2-D maps Conv2d.

The stage is `Pretrain(trains="paraphraser", frozen_after=True)`, its loss `pretrain_loss` (not
weighted, as in helper/pretrain.py); it reads only the teacher's feature. In the main stage the
paraphraser runs without autograd and out of the optimizer, so it stays as the stage left it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdflow.methods.base import Batch, Method, ModuleInfo, Param, Pretrain, combine, pool_to_common, weights


def conv_stack(dims: int, chans: list[int], *, transposed: bool = False, bn: bool) -> nn.Sequential:
    """3x3 (or 3) convolutions that keep the spatial size, each followed by [BatchNorm,] LeakyReLU(0.1)."""
    conv = {
        (1, False): nn.Conv1d,
        (2, False): nn.Conv2d,
        (1, True): nn.ConvTranspose1d,
        (2, True): nn.ConvTranspose2d,
    }
    norm = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dims]
    layers: list[nn.Module] = []
    for a, b in zip(chans[:-1], chans[1:]):
        layers.append(conv[(dims, transposed)](a, b, 3, 1, 1))
        if bn:
            layers.append(norm(b))
        layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """Autoencoder on the teacher map (C_t, *S): encoder C_t -> C_t -> k C_t -> k C_t, decoder back."""

    def __init__(self, t_shape: tuple[int, ...], rate: float):
        super().__init__()
        dims, c, k = len(t_shape) - 1, t_shape[0], int(t_shape[0] * rate)
        self.encoder = conv_stack(dims, [c, c, k, k], bn=False)
        self.decoder = conv_stack(dims, [k, k, c, c], transposed=True, bn=False)

    def forward(self, f_t: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(f_t))  # (B, C_t, *S): the reconstruction


class FTModules(nn.Module):
    def __init__(self, s_shape: tuple[int, ...], t_shape: tuple[int, ...], rate: float):
        super().__init__()
        if len(s_shape) != len(t_shape) or len(s_shape) not in (2, 3):
            raise ValueError(f"ft: needs two 1-D or two 2-D maps, got student {s_shape}, teacher {t_shape}")
        self.paraphraser = Paraphraser(t_shape, rate)
        # student map (C_s, *S_s) -> the teacher factor's channels k C_t
        k = int(t_shape[0] * rate)
        self.translator = conv_stack(len(s_shape) - 1, [s_shape[0], s_shape[0], k, k], bn=True)


def factor_map(f: torch.Tensor, p1: float) -> torch.Tensor:
    """(B, C, *S) -> (B, prod(S)): the channel mean of f^p1, L2-normalised per sample (FT.py)."""
    return F.normalize(f.float().pow(p1).mean(1).flatten(1), dim=1)


def ft_loss(factor_s: torch.Tensor, factor_t: torch.Tensor, p1: float, p2: float) -> torch.Tensor:
    factor_s, factor_t = pool_to_common(factor_s, factor_t)
    diff = factor_map(factor_s, p1) - factor_map(factor_t, p1)  # (B, prod(S))
    return diff.abs().mean() if p2 == 1 else diff.pow(p2).mean()


class FT(Method):
    name = "ft"
    paper = "Kim et al., NeurIPS 2018"
    source = (
        "HobbitLong/RepDistiller distiller_zoo/FT.py, models/util.py Paraphraser/Translator,"
        " train_student.py (factor, -b 200)"
    )
    # search: two decades below the authors' beta, one above
    params = {
        **weights(200.0, 2.0, 2000.0),
        "rate": Param(0.5, doc="k: the factor's channels as a fraction of the teacher's"),
        "p1": Param(2.0, doc="power of the factor before the channel mean (FT.py p1)"),
        "p2": Param(1.0, doc="1: L1 between the normalised factors; else the mean of diff^p2 (FT.py p2)"),
        "init_epochs": Param(30, doc="epochs training the paraphraser (train_student.py --init_epochs)"),
    }
    tune = ("feat_weight",)
    feature_kind = "map"
    layer_roles = "last"
    pretrain = Pretrain(trains="paraphraser", frozen_after=True)

    def modules(self, s_shapes: dict, t_shapes: dict, info: ModuleInfo, hp: dict) -> nn.Module:
        (s_shape,), (t_shape,) = s_shapes.values(), t_shapes.values()
        return FTModules(tuple(s_shape), tuple(t_shape), hp["rate"])

    def pretrain_loss(self, b: Batch, hp: dict, modules: nn.Module) -> dict:
        (f_t,) = b.t_feats.values()  # (B, C_t, *S); the student is not read
        rec = F.mse_loss(modules.paraphraser(f_t).float(), f_t.float())
        return {"loss": rec, "rec": rec}

    def loss(self, b: Batch, hp: dict, modules: nn.Module) -> dict:
        (f_s,), (f_t,) = b.s_feats.values(), b.t_feats.values()
        with torch.no_grad():  # the paraphraser is frozen after its stage (Pretrain.frozen_after)
            factor_t = modules.paraphraser.encoder(f_t)  # (B, k C_t, *S_t)
        factor_s = modules.translator(f_s)  # (B, k C_t, *S_s)
        return combine(b, hp, ft_loss(factor_s, factor_t, hp["p1"], hp["p2"]))
