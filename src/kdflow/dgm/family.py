"""What the generative pipeline needs of a model family: one `Family` per file (lvae, hm, vrnn).

    fam = FAMILIES["lvae"]                                   # kdflow.dgm.FAMILIES
    model = fam.build(spec, input_shape)                     # spec: {family, knobs...} of the config
    parts = fam.train_loss(model, x, beta)                   # parts["loss"]: what training minimises
    bound = fam.val_nll(model, x)                            # (B,) nats: selection on the val split
    parts = fam.distill[method](teacher, student, n, hp)     # data-free: noise from torch's RNG
    out = fam.test_nll(model, x_test, x_train, k, steps, seed)  # {nll: (B,), ess: (B,) | None, estimator}
    x = fam.sample(model, n, generator)                      # (n, *input_shape) samples of the model

Every tensor is float32 on the model's device; x is the split's inputs as a model reads them
(kdflow.dgm.jobs standardises signals by the training split). `beta` is the KL warm-up weight
(1 after the warm-up; a family without a KL term, the Helmholtz machine, ignores it). The noise of
`distill` is drawn from torch's global generator, so a fit checkpointed with its RNG state resumes
bit for bit. `frozen(student, method)`: the student's modules that distillation does not train
(the authors freeze a ladder VAE student's encoder: only the generative part learns).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

# (teacher, student, n, hp) -> loss parts; hp: the method's resolved values (kdflow.registry.GEN_METHODS)
DistillLoss = Callable[[nn.Module, nn.Module, int, dict], dict]


@dataclass(frozen=True)
class Family:
    build: Callable[[dict, tuple[int, ...]], nn.Module]
    train_loss: Callable[[nn.Module, torch.Tensor, float], dict]
    val_nll: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    distill: dict[str, DistillLoss]
    test_nll: Callable[..., dict]
    sample: Callable[[nn.Module, int, torch.Generator | None], torch.Tensor]
    frozen: Callable[[nn.Module, str], list[nn.Module]] = field(default=lambda student, method: [])


def kl_weight(epoch: int, warmup_epochs: int) -> float:
    """The KL weight of 1-based `epoch` under the authors' linear KL warm-up: epoch / warmup_epochs
    up to 1 (no warm-up: always 1)."""
    return min(epoch / warmup_epochs, 1.0) if warmup_epochs else 1.0
