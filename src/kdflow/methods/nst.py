"""nst: Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer", 2017.

    g_c = f_c / ||f_c||                                 # each channel's spatial map, (B, C, N), unit length
    k(a, b) = (a . b)^2                                 # the polynomial kernel of degree 2 (c = 0)
    MMD^2 = mean k(g_t, g_t') + mean k(g_s, g_s') - 2 mean k(g_s, g_t)   # means over channel pairs
    loss = ce_weight * CE(s, y) + feat_weight * sum_pairs mean_batch MMD^2

over every paired block: the distribution of the student's channel activation patterns is matched
to the teacher's, so the widths may differ but the spatial sizes must agree; where they differ the
larger map is adaptive-average-pooled to the smaller, as RepDistiller does. Defaults from
RepDistiller (distiller_zoo/NST.py, full MMD with the teacher-teacher term; scripts/
run_cifar_distill.sh `--distill nst -a 0 -b 50`). The teacher-teacher term carries no gradient;
it makes identical maps cost zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdflow.methods.base import Batch, Method, combine, pool_to_common, weights


def poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, C_a, N), (B, C_b, N) -> (B, C_a, C_b): (a_i . b_j)^2 for every pair of channels."""
    return (a @ b.transpose(1, 2)).pow(2)


def nst_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    f_s, f_t = pool_to_common(f_s, f_t)
    g_s = F.normalize(f_s.float().flatten(2), dim=2)  # (B, C_s, N)
    g_t = F.normalize(f_t.float().flatten(2), dim=2)  # (B, C_t, N)
    return poly_kernel(g_t, g_t).mean() + poly_kernel(g_s, g_s).mean() - 2 * poly_kernel(g_s, g_t).mean()


class NST(Method):
    name = "nst"
    paper = "Huang & Wang, arXiv 2017"
    source = "HobbitLong/RepDistiller distiller_zoo/NST.py, scripts/run_cifar_distill.sh (-b 50)"
    # search: two decades below the authors' beta, one above (a large weight swamps the CE term)
    params = weights(50.0, 0.5, 500.0)
    tune = ("feat_weight",)
    feature_kind = "map"
    layer_roles = "blocks"

    def loss(self, b: Batch, hp: dict, modules) -> dict:
        parts = {
            f"nst_{s_name}": nst_loss(f_s, f_t)
            for (s_name, f_s), f_t in zip(b.s_feats.items(), b.t_feats.values())
        }
        return combine(b, hp, sum(parts.values()), **parts)
