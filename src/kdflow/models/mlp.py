"""The MLP family: flatten, ReLU layers, a linear classifier.

    build_model({"family": "mlp", "hidden": [256, 128]}, input_shape=(40,), num_classes=10)

Its features (block<i>, block<i>_pre, penultimate) are vectors (B, D); see kdflow.models.
"""

from __future__ import annotations

import math

from torch import nn

from kdflow.models.base import Classifier


class MLP(Classifier):
    """Flatten, then `hidden` ReLU layers, then a linear classifier."""

    def __init__(self, input_shape, num_classes, hidden=(64,), dropout=0.0):
        super().__init__()
        dims = [math.prod(input_shape), *hidden]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout))
            for a, b in zip(dims[:-1], dims[1:])
        )
        self.head = nn.Linear(dims[-1], num_classes)

    def forward_features(self, x):
        h = x.flatten(1)  # (B, D)
        feats = {}
        for i, block in enumerate(self.blocks, 1):
            linear, act, drop = block
            feats[f"block{i}_pre"] = pre = linear(h)
            h = drop(act(pre))
            feats[f"block{i}"] = h
        feats["penultimate"] = h
        return self.head(h), feats

    def rep_target(self, block):
        return self.blocks[block - 1], "0", None  # Linear (with bias), no BatchNorm
