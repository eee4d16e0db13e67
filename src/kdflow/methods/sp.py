"""sp: Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019.

    G = normalize_rows(f f^T)                           # f: (B, D) flattened feature; G: (B, B)
    loss = ce_weight * CE(s, y) + feat_weight * ||G_t - G_s||_F^2 / B^2

Samples that the teacher finds alike should be alike for the student; only the batch-by-batch
similarities are matched, so student and teacher widths and spatial sizes may differ. Defaults
from RepDistiller (distiller_zoo/SP.py, "verified by original author"; helper/loops.py feeds it
the last block, feat[-2]; scripts/run_cifar_distill.sh `--distill similarity -a 0 -b 3000`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdflow.methods.base import Batch, Method, combine, weights


def similarity(f: torch.Tensor) -> torch.Tensor:
    """(B, *) -> (B, B): the Gram matrix of the flattened features, each row L2-normalised."""
    f = f.float().flatten(1)  # (B, D)
    return F.normalize(f @ f.t(), dim=1)


def sp_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    bsz = f_s.shape[0]
    return (similarity(f_t) - similarity(f_s)).pow(2).sum() / bsz**2


class SP(Method):
    name = "sp"
    paper = "Tung & Mori, ICCV 2019"
    source = "HobbitLong/RepDistiller distiller_zoo/SP.py, scripts/run_cifar_distill.sh (-b 3000)"
    # search: two decades below the authors' beta, one above (a large weight swamps the CE term)
    params = weights(3000.0, 30.0, 30000.0)
    tune = ("feat_weight",)
    feature_kind = "any"
    layer_roles = "last"

    def loss(self, b: Batch, hp: dict, modules) -> dict:
        sp = sum(sp_loss(f_s, f_t) for f_s, f_t in zip(b.s_feats.values(), b.t_feats.values()))
        return combine(b, hp, sp)
