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


def ce_loss(
    student_logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
) -> dict[str, torch.Tensor]:
    """Cross-entropy on the labels; with label smoothing e, against (1 - e) one-hot + e / C."""
    ce = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    return {"loss": ce, "ce": ce}


def soft_term(
    student_logits: torch.Tensor,  # (..., B, C), at least float32
    teacher_logits: torch.Tensor,  # (B, C) or (..., B, C), no grad
    temperature: float | torch.Tensor,  # a float, or one per member: shape (...)
) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes, averaged over the batch."""
    s = student_logits
    # On the logits' device: T reshaped to (1, 1) is no longer a scalar that may stay on the host.
    temp = torch.as_tensor(temperature, dtype=s.dtype, device=s.device)
    t_b = temp.reshape(temp.shape + (1, 1))  # broadcasts over (B, C)
    log_p_student = F.log_softmax(s / t_b, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / t_b, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True)
    return temp**2 * kl.sum(-1).mean(-1)  # batchmean: summed over classes, averaged over the batch


def kd_loss(
    student_logits: torch.Tensor,  # (..., B, C): leading dims are independent members (stacked trials)
    teacher_logits: torch.Tensor,  # (B, C) or (..., B, C), no grad
    labels: torch.Tensor,  # (B,)
    temperature: float | torch.Tensor,  # a float, or one per member: shape (...)
    alpha: float | torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Each part is a scalar for one model, or one value per member, shape (...)."""
    # At least float32 whatever the autocast dtype: bf16 would round T (3.3 -> 3.297) and softmaxes.
    s = student_logits.to(torch.promote_types(student_logits.dtype, torch.float32))
    if isinstance(alpha, torch.Tensor):  # per-member alphas, possibly made on the host
        alpha = alpha.to(s.device)
    ce = F.cross_entropy(
        s.reshape(-1, s.shape[-1]), labels.expand(s.shape[:-1]).reshape(-1), reduction="none"
    ).view(s.shape[:-1])
    kd = soft_term(s, teacher_logits, temperature)
    ce = ce.mean(-1)
    return {"loss": (1.0 - alpha) * ce + alpha * kd, "ce": ce, "kd": kd}


# method name -> loss. "scratch" learns from labels only; "kd" from a teacher's logits too.
LOSSES = {"scratch": ce_loss, "kd": kd_loss}
