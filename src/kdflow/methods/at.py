"""at: Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017 (attention transfer).

    a(f) = normalize_L2( mean_c f_c^p )                  # (B, C, *S) -> (B, prod(S)), one map per sample
    loss = ce_weight * CE(s, y) + feat_weight * sum_pairs mean( (a(f_s) - a(f_t))^2 )

over every paired block (base.pair_blocks). Defaults from RepDistiller (distiller_zoo/AT.py p=2;
scripts/run_cifar_distill.sh `--distill attention -a 0 -b 1000`). The spatial map has no channels,
so student and teacher widths may differ; where the spatial sizes differ the larger map is
adaptive-average-pooled to the smaller before the attention map, as RepDistiller does (it pools
to a square; here each axis of a 1-D (B, C, L) or 2-D (B, C, H, W) map separately).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdflow.methods.base import Batch, Method, Param, combine, pool_to_common, weights


def attention_map(f: torch.Tensor, p: float) -> torch.Tensor:
    """(B, C, *S) -> (B, prod(S)): the channel mean of f^p, L2-normalised per sample. The paper
    writes |f|^p; the same for even p and for the post-ReLU blocks AT reads."""
    return F.normalize(f.float().pow(p).mean(1).flatten(1), dim=1)


def at_loss(f_s: torch.Tensor, f_t: torch.Tensor, p: float) -> torch.Tensor:
    f_s, f_t = pool_to_common(f_s, f_t)
    return (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()


class AT(Method):
    name = "at"
    paper = "Zagoruyko & Komodakis, ICLR 2017"
    source = "HobbitLong/RepDistiller distiller_zoo/AT.py (p=2), scripts/run_cifar_distill.sh (-b 1000)"
    # search: two decades below the authors' beta, one above (a large weight swamps the CE term)
    params = {
        **weights(1000.0, 10.0, 10000.0),
        "p": Param(2.0, doc="power of the activations in the attention map (the paper's best: 2)"),
    }
    tune = ("feat_weight",)
    feature_kind = "map"
    layer_roles = "blocks"

    def loss(self, b: Batch, hp: dict, modules) -> dict:
        parts = {
            f"at_{s_name}": at_loss(f_s, f_t, hp["p"])
            for (s_name, f_s), f_t in zip(b.s_feats.items(), b.t_feats.values())
        }
        return combine(b, hp, sum(parts.values()), **parts)
