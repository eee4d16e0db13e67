"""noisy: Sau & Balasubramanian, "Deep Model Compression: Distilling Knowledge from Noisy Teachers",
arXiv 1610.09650, 2016.

    m    = round(noise_fraction * B) samples of the batch, drawn at random
    t'_i = t_i * (1 + noise_std * xi_i),  xi_i ~ N(0, I)    for i in m; t'_i = t_i otherwise
    loss = (1 - alpha) * CE(s, y) + alpha * T^2 * KL(softmax(t'/T) || softmax(s/T))

Noise on the teacher's logits simulates learning from several teachers (the KD survey: "adding
Gaussian noise to the logit outputs of the teacher ... a set of samples from each mini-batch with a
probability alpha ... alpha = 0.8 performed the best"). The noise is multiplicative, as in
KD_Lib's implementation of the paper (KD_Lib/KD/vision/noisy/utils.py `add_noise`: x * (1 +
sqrt(variance) * randn), default variance 0.1, so noise_std = sqrt(0.1)). Our choices: the fraction
is a count per batch (exactly round(fraction * B) samples, so the fraction touched is the fraction
stated), and the loss is Hinton's KD on the perturbed logits with kd's defaults (T 4, alpha 0.9),
where the paper and KD_Lib regress logits with an L2 loss: so that every teacher variant of an
experiment is compared under the same loss. The noise comes from torch's generator, which the
engine seeds from the run's seed and restores on resume.
"""

from __future__ import annotations

import math

import torch

from kdflow.losses import kd_loss
from kdflow.methods.base import Batch, Method, Param
from kdflow.methods.kd import KD


def perturb(t_logits: torch.Tensor, fraction: float, std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The perturbed logits, and which rows were perturbed (a bool mask of round(fraction * B))."""
    b = t_logits.shape[0]
    chosen = torch.randperm(b, device=t_logits.device)[: round(fraction * b)]
    mask = torch.zeros(b, dtype=torch.bool, device=t_logits.device)
    mask[chosen] = True
    noise = torch.randn_like(t_logits)
    scale = torch.where(mask[:, None], 1 + std * noise, torch.ones_like(noise))
    return t_logits * scale, mask


class NoisyKD(Method):
    name = "noisy"
    paper = "Sau & Balasubramanian, arXiv 2016"
    source = "KD_Lib KD/vision/noisy/utils.py add_noise (variance 0.1); fraction 0.8 (paper, via survey)"
    params = {
        **{k: KD.params[k] for k in ("temperature", "alpha")},  # kd's, defaults and ranges
        "noise_fraction": Param(
            0.8, 0.0, 1.0, valid=(0.0, 1.0), doc="share of each batch's samples perturbed"
        ),
        "noise_std": Param(math.sqrt(0.1), 0.03, 1.0, log=True, doc="std of the multiplicative logit noise"),
    }
    tune = ("temperature", "alpha", "noise_std")

    def loss(self, b: Batch, hp: dict, modules) -> dict:
        noisy, _ = perturb(b.t_logits.float(), hp["noise_fraction"], hp["noise_std"])
        return kd_loss(b.s_logits, noisy, b.y, hp["temperature"], hp["alpha"])
