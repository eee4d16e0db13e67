"""Training losses. Each is a small pure function returning a dict of named parts; "loss" is optimised.

The KD loss, written once (Hinton et al. 2015), with student logits s, teacher logits t, labels y,
temperature T and weight alpha on the soft term:

    loss = (1 - alpha) * CE(s, y) + alpha * T^2 * KL( softmax(t/T) || softmax(s/T) )

KL is summed over classes and averaged over the batch ("batchmean"); `nn.KLDivLoss()`'s default
"mean" divides by batch x classes as well, a known bug in other KD code. T^2 keeps the soft term's
gradient scale independent of T. alpha weighs the soft (teacher) term: alpha=0 is plain training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ce_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    ce = F.cross_entropy(student_logits, labels)
    return {"loss": ce, "ce": ce}


def kd_loss(
    student_logits: torch.Tensor,  # (B, C)
    teacher_logits: torch.Tensor,  # (B, C), no grad
    labels: torch.Tensor,  # (B,)
    temperature: float,
    alpha: float,
) -> dict[str, torch.Tensor]:
    ce = F.cross_entropy(student_logits, labels)
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    kd = temperature**2 * kl
    return {"loss": (1.0 - alpha) * ce + alpha * kd, "ce": ce, "kd": kd}


# method name -> loss. "scratch" learns from labels only; "kd" from a teacher's logits too.
LOSSES = {"scratch": ce_loss, "kd": kd_loss}
