"""pkt: Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer",
ECCV 2018.

    K_ij = (cos(f_i, f_j) + 1) / 2                      # (B, B), in [0, 1]
    P_ij = K_ij / sum_j K_ij                             # each row a distribution over the batch
    loss = ce_weight * CE(s, y) + feat_weight * mean_ij P^t_ij log((P^t_ij + eps) / (P^s_ij + eps))

on the penultimate features: the student matches the teacher's conditional probabilities of one
sample's neighbours (the KL divergence averaged over the B^2 entries, not summed per row, as the
authors' code does). Only the batch relations are matched, so widths may differ. Defaults from
RepDistiller (distiller_zoo/PKT.py, "code from author", eps = 1e-7; scripts/run_cifar_distill.sh
`--distill pkt -a 0 -b 30000`).
"""

from __future__ import annotations

import torch

from kdflow.methods.base import Batch, Method, combine, weights

EPS = 1e-7  # the authors' eps, in the norms and the log ratio


def neighbour_probs(f: torch.Tensor) -> torch.Tensor:
    """(B, *) -> (B, B): cosine similarities mapped to [0, 1], each row normalised to sum to 1."""
    f = f.float().flatten(1)  # (B, D)
    f = f / (f.norm(dim=1, keepdim=True) + EPS)  # an all-zero row stays zero (the authors zero NaNs)
    k = (f @ f.t() + 1.0) / 2.0  # (B, B)
    return k / k.sum(1, keepdim=True)


def pkt_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    p_s, p_t = neighbour_probs(f_s), neighbour_probs(f_t)
    return (p_t * torch.log((p_t + EPS) / (p_s + EPS))).mean()


class PKT(Method):
    name = "pkt"
    paper = "Passalis & Tefas, ECCV 2018"
    source = "HobbitLong/RepDistiller distiller_zoo/PKT.py, scripts/run_cifar_distill.sh (-b 30000)"
    # search: two decades below the authors' beta, one above (a large weight swamps the CE term)
    params = weights(30000.0, 300.0, 300000.0)
    tune = ("feat_weight",)
    feature_kind = "any"
    layer_roles = "penultimate"

    def loss(self, b: Batch, hp: dict, modules) -> dict:
        pkt = sum(pkt_loss(f_s, f_t) for f_s, f_t in zip(b.s_feats.values(), b.t_feats.values()))
        return combine(b, hp, pkt)
