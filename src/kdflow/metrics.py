"""Test-set metrics beyond accuracy: calibration, agreement with a teacher, inference speed."""

from __future__ import annotations

import time

import torch
from torch import nn


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017): sum_b |B|/N * |acc(B) - conf(B)|."""
    conf, pred = probs.max(1)  # (N,), (N,)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.float().mean() * (correct[in_bin].mean() - conf[in_bin].mean()).abs()
    return ece.item()


def agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Fraction of samples where student and teacher predict the same class (top-1)."""
    return (student_logits.argmax(1) == teacher_logits.argmax(1)).float().mean().item()


@torch.inference_mode()
def throughput(model: nn.Module, x: torch.Tensor, batch_size: int = 1000, repeats: int = 5) -> float:
    """Inference samples/s: the median of `repeats` timed passes over x after one warm-up."""
    model.eval()

    def one_pass() -> float:
        t = time.perf_counter()
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size])
        return time.perf_counter() - t

    one_pass()
    times = sorted(one_pass() for _ in range(repeats))
    return len(x) / times[len(times) // 2]
