"""A teacher that is several trained models (Hinton et al. 2015; Bucilua et al. 2006; the oracle of
Chebotar & Waters 2016), combined into one set of logits.

    build_model({"family": "ensemble", "members": [spec_a, spec_b], "combine": "prob"}, shape, n)

combine:
    prob    log of the members' mean probability, log(1/M sum_m softmax(z_m)): a softmax of it is
            the averaged distribution (the default; Hinton et al. average probabilities)
    logit   the members' mean logits
    oracle  per sample, the logits of the member with the lowest cross-entropy on the true label;
            it needs the labels (`oracle_logits(x, y)`), so it is a teacher for the training and
            validation splits, and its test accuracy is an oracle's, an upper bound
Members of one architecture also give features, each the members' mean (for feature methods);
members of different architectures give logits only. The pipeline never builds an ensemble from
a config `family`: a model `{ensemble: [...]}` is assembled by the `ensemble` rule from trained
members (kdflow.pipeline.jobs.ensemble) and saved like any model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdflow.models.base import Classifier
from kdflow.plan import bare

COMBINE = ("prob", "logit", "oracle")


def combine_logits(z: torch.Tensor, how: str) -> torch.Tensor:
    """(M, B, C) member logits -> (B, C) by `how` ("prob" or "logit"; the oracle needs labels)."""
    if how == "prob":
        return torch.logsumexp(F.log_softmax(z.float(), -1), 0) - math.log(z.shape[0])
    if how == "logit":
        return z.mean(0)
    raise ValueError(f"combine {how!r} needs the labels (oracle_choice); allowed here: prob, logit")


def oracle_choice(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) index of the member with the lowest cross-entropy on each sample's true label."""
    ce = -F.log_softmax(z.float(), -1).gather(-1, y.expand(z.shape[0], -1).unsqueeze(-1)).squeeze(-1)
    return ce.argmin(0)  # (M, B) -> (B,); ties: the first member


class Ensemble(Classifier):
    def __init__(self, input_shape, num_classes, members: list[dict], combine: str = "prob"):
        super().__init__()
        from kdflow.models import build_model  # the registry imports this module

        if len(members) < 2:
            raise ValueError(f"an ensemble needs two or more members, got {len(members)}")
        if combine not in COMBINE:
            raise ValueError(f"combine {combine!r} is not allowed; allowed: {', '.join(COMBINE)}")
        self.members = nn.ModuleList(build_model(spec, input_shape, num_classes) for spec in members)
        self.combine = combine
        self.needs_labels = combine == "oracle"
        self.same_architecture = all(bare(s) == bare(members[0]) for s in members)

    def forward_features(self, x):
        outs = [m.forward_features(x) for m in self.members]
        logits = combine_logits(torch.stack([o[0] for o in outs]), self.combine)
        feats = {}
        if self.same_architecture:  # one architecture: the members' features align name by name
            feats = {n: torch.stack([o[1][n] for o in outs]).mean(0) for n in outs[0][1]}
        return logits, feats

    def oracle_logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = torch.stack([m(x) for m in self.members])  # (M, B, C)
        return z[oracle_choice(z, y), torch.arange(len(y), device=z.device)]
