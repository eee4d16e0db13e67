"""The base class of every model family; the features it returns are named in kdflow.models."""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """Base: subclasses implement `forward_features`; `forward` returns logits only."""

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]

    def rep_target(self, block: int) -> tuple[nn.Module, str, str | None]:
        """Where block `block` (1-based) keeps its linear layer, for structural re-parameterisation
        (kdflow.models.reparam): (holder, the layer's attribute, the attribute of its BatchNorm or
        None). Families whose blocks have no such layer do not override it."""
        raise ValueError(f"{type(self).__name__} blocks cannot be re-parameterised")
