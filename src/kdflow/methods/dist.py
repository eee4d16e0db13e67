"""dist: Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022.

DIST matches relations instead of probabilities: a Pearson correlation between student and
teacher predictions is blind to the shifts and scales by which a stronger teacher's differ.
With P = softmax(z / tau) row-wise, (B, C):

    inter = 1 - mean over samples of pearson(P_s[i, :], P_t[i, :])    ranks among the classes
    intra = 1 - mean over classes of pearson(P_s[:, c], P_t[:, c])    ranks among the batch
    loss  = ce_weight * CE(s, y) + beta * tau^2 * inter + gamma * tau^2 * intra

as hunto/image_classification_sota lib/models/losses/dist_kd.py (the `classification` submodule
of hunto/DIST_KD) computes it: pearson is the cosine of the mean-centred vectors with 1e-8 added
to the product of the norms, and tau^2 multiplies each relation.

Defaults: that file's `DIST(beta=1.0, gamma=1.0, tau=1.0)` is weighted by the training recipe,
`ori_loss_weight * CE + kd_loss_weight * DIST` (lib/models/losses/kd_loss.py `KDLoss.__call__`).
Its CIFAR-100 recipe, configs/strategies/distill/dist_cifar.yaml, sets ori_loss_weight 1,
kd_loss_weight 2 and `kd: dist_t4` (tau 4), so beta = gamma = 1 * 2 = 2, tau = 4, CE weight 1,
no label smoothing; the ImageNet one (resnet_dist.yaml) keeps the weights and uses tau 1.

`logit_std: true` z-scores both logits per sample before tau (Sun et al., CVPR 2024). Their
code applies it to KD, DKD, MLKD and CTKD, not to DIST: an option here, with no authors' values.
"""

from __future__ import annotations

import torch

from kdflow.methods.base import Batch, Method, Param, ce, standardize


def relation_loss(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 - the mean over rows of the Pearson correlation of a's and b's rows, (N, K) -> ()."""
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    corr = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)
    return 1 - corr.mean()


def dist_parts(s_logits: torch.Tensor, t_logits: torch.Tensor, temperature: float) -> tuple:
    """(inter, intra), each tau^2 * relation loss of softmax(z / tau), in float32; (B, C) logits."""
    p_s = torch.softmax(s_logits.float() / temperature, -1)
    p_t = torch.softmax(t_logits.float() / temperature, -1)
    inter = relation_loss(p_s, p_t)  # each sample's row over the classes
    intra = relation_loss(p_s.T, p_t.T)  # each class's column over the batch
    return temperature**2 * inter, temperature**2 * intra


class DIST(Method):
    name = "dist"
    paper = "Huang et al., NeurIPS 2022"
    source = (
        "hunto/image_classification_sota (hunto/DIST_KD's classification) lib/models/losses/dist_kd.py; "
        "weights configs/strategies/distill/dist_cifar.yaml"
    )
    params = {
        "ce_weight": Param(1.0, doc="weight of cross-entropy on the labels (ori_loss_weight)"),
        # The authors keep beta = gamma = 2 in every recipe (configs/strategies/distill/
        # dist_cifar.yaml, resnet_dist.yaml, dist_b2.yaml): tuned on a log scale centred on 2, a
        # factor 4 either way, each apart because the two relations answer different questions
        # (which class, for a sample; which sample, for a class).
        "beta": Param(2.0, 0.5, 8.0, log=True, doc="weight of the inter-class relation (per sample)"),
        "gamma": Param(2.0, 0.5, 8.0, log=True, doc="weight of the intra-class relation (per class)"),
        # The authors use 1 (ImageNet) and 4 (CIFAR-100). Unlike KL, whose gradient shrinks as
        # 1/tau^2 and tau^2 restores, the correlation of softmax(z / tau) tends to that of the
        # logits as tau grows, so tau^2 grows the gradient by ~tau^2 past tau ~ 4: capped at 8.
        "temperature": Param(4.0, 1.0, 8.0, log=True, doc="softmax temperature tau"),
        "logit_std": Param(False, doc="z-score logits per sample before tau (Sun et al. 2024)"),
    }
    tune = ("temperature", "beta", "gamma")

    def loss(self, b: Batch, hp: dict, modules) -> dict:
        s, t = b.s_logits.float(), b.t_logits.detach().float()
        if hp["logit_std"]:
            s, t = standardize(s), standardize(t)
        inter, intra = dist_parts(s, t, hp["temperature"])
        kd = hp["beta"] * inter + hp["gamma"] * intra
        parts = {"ce": ce(b.s_logits, b.y), "kd": kd, "inter": inter, "intra": intra}
        return {"loss": hp["ce_weight"] * parts["ce"] + kd, **parts}
