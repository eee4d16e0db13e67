"""The Transformer families: Transformer1D for 1-D signals (L,), ViT for images (C, H, W).

    build_model({"family": "transformer1d", "patch": 4, "dim": 64}, input_shape=(40,), num_classes=10)
    build_model({"family": "vit", "patch": 4, "layers": 6}, input_shape=(3, 32, 32), num_classes=10)

Both cut the input into non-overlapping patches, embed each linearly, add a learned position
embedding, run `layers` pre-norm encoder blocks, then LayerNorm, mean over tokens and a linear head
(no cls token). Their blocks' tokens come back laid out as maps, (B, dim, L/p) and (B, dim, H/p, W/p),
so a feature method pairs them with a CNN's maps as it would another CNN's (see kdflow.models).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdflow.models.base import Classifier


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


class _Block(nn.Module):
    """Pre-norm encoder block: x + attention(LN(x)), then x + MLP(LN(x)) with a GELU MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        hidden = int(mlp_ratio * dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)  # on each residual branch, as in ViT

    def forward(self, x):
        b, n, d = x.shape  # (B, N, D)
        qkv = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, D / heads)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.drop(self.proj(a))
        return x + self.drop(self.fc2(F.gelu(self.fc1(self.ln2(x)))))


class _Encoder(Classifier):
    """Shared body: `embed` maps the input to (B, dim, *grid); subclasses build it and check shapes.

    A block ends in its residual sum, with no activation after it, so block<i>_pre is block<i>
    (the same tensor). Methods that read pre-activations (AB) get the block output. Dropout acts
    on the embedded tokens and on each block's two residual branches.
    """

    def __init__(
        self, embed: nn.Module, grid: tuple[int, ...], num_classes, dim, layers, heads, mlp_ratio, dropout
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads={heads} does not divide dim={dim}; allowed: {_divisors(dim)}")
        self.grid = grid  # patches along each input axis
        self.embed = embed
        self.pos = nn.Parameter(torch.zeros(1, math.prod(grid), dim))
        nn.init.trunc_normal_(self.pos, std=0.02)  # ViT's init; zeros would make every token alike at first
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(dim, heads, mlp_ratio, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward_features(self, x):
        h = self.drop(self.embed(x).flatten(2).transpose(1, 2) + self.pos)  # (B, N, D)
        feats = {}
        for i, block in enumerate(self.blocks, 1):
            h = block(h)
            tokens_as_map = h.transpose(1, 2).reshape(h.shape[0], -1, *self.grid)  # (B, D, *grid)
            feats[f"block{i}"] = feats[f"block{i}_pre"] = tokens_as_map
        h = self.norm(h).mean(dim=1)  # (B, D)
        feats["penultimate"] = h
        return self.head(h), feats


class Transformer1D(_Encoder):
    """Patches of `patch` samples of a signal (L,) -> `layers` encoder blocks; maps (B, dim, L/patch)."""

    def __init__(
        self, input_shape, num_classes, patch=4, dim=64, layers=4, heads=4, mlp_ratio=2, dropout=0.0
    ):
        (length,) = input_shape
        if length % patch:
            raise ValueError(
                f"patch={patch} does not divide the signal length {length}; allowed: {_divisors(length)}"
            )
        # (B, L) -> (B, 1, L) -> (B, dim, L / patch): a Linear(patch, dim) on each patch
        embed = nn.Sequential(nn.Unflatten(1, (1, length)), nn.Conv1d(1, dim, patch, stride=patch))
        super().__init__(embed, (length // patch,), num_classes, dim, layers, heads, mlp_ratio, dropout)


class ViT(_Encoder):
    """Patches of patch x patch pixels of an image (C, H, W), no cls token; maps (B, dim, H/p, W/p)."""

    def __init__(
        self, input_shape, num_classes, patch=4, dim=64, layers=4, heads=4, mlp_ratio=2, dropout=0.0
    ):
        c, height, width = input_shape
        if height % patch or width % patch:
            raise ValueError(
                f"patch={patch} does not divide the image size {height}x{width}; "
                f"allowed: {_divisors(math.gcd(height, width))}"
            )
        embed = nn.Conv2d(c, dim, patch, stride=patch)  # a Linear(C * patch^2, dim) on each patch
        grid = (height // patch, width // patch)
        super().__init__(embed, grid, num_classes, dim, layers, heads, mlp_ratio, dropout)
