"""The CIFAR ResNet family (depth 6n+2) and its basic block.

    build_model({"family": "resnet", "depth": 56, "width": 16}, input_shape=(3, 32, 32), num_classes=10)

Its features are named per stage (block1..block3); see kdflow.models' docstring.
"""

from __future__ import annotations

import torch
from torch import nn

from kdflow.models.base import Classifier


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:  # projection shortcut where the shape changes
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward_pre(self, x):
        """The residual sum before the final ReLU (the block's pre-activation feature)."""
        h = torch.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(h)) + self.shortcut(x)

    def forward(self, x):
        return torch.relu(self.forward_pre(x))


class ResidualStages(Classifier):
    """The forward of a stem, stages whose last block has `forward_pre` (its output before the
    final ReLU), an optional neck, a global mean and a linear head; subclasses build the parts.
    This family and the zoo's ResNets, resnet50 and ShuffleNets (kdflow.models.cifar) share it."""

    def __init__(self, stem: nn.Module, stages: list[nn.Sequential], head: nn.Linear, neck=None):
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.neck = neck if neck is not None else nn.Identity()  # ShuffleNetV2's 1x1 conv to 1024
        self.head = head

    def forward_features(self, x):
        h = self.stem(x)  # (B, C0, H, W)
        feats = {}
        for i, stage in enumerate(self.stages, 1):
            *first, last = stage
            for block in first:
                h = block(h)
            feats[f"block{i}_pre"] = pre = last.forward_pre(h)
            feats[f"block{i}"] = h = torch.relu(pre)  # (B, C_i, H_i, W_i)
        h = self.neck(h).mean(dim=(2, 3))  # adaptive: any input size (the zoo's authors: AvgPool2d(8))
        feats["penultimate"] = h  # (B, D)
        return self.head(h), feats


class ResNet(ResidualStages):
    """The CIFAR ResNet of He et al. 2016 (depth 6n+2: 8, 20, 56, 110), as in the TAKD and
    RepDistiller tables: three stages of n basic blocks at width, 2x, 4x; global pool; linear."""

    def __init__(self, input_shape, num_classes, depth=20, width=16):
        if (depth - 2) % 6:
            raise ValueError(f"resnet depth must be 6n+2 (8, 20, 56, 110...), got {depth}")
        n = (depth - 2) // 6
        stem = nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        stages, c_in = [], width
        for i, c in enumerate((width, 2 * width, 4 * width)):
            blocks = [_BasicBlock(c_in if j == 0 else c, c, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            c_in = c
        super().__init__(stem, stages, nn.Linear(c_in, num_classes))

    def rep_target(self, block):
        return self.stages[block - 1][-1], "conv2", "bn2"  # the stage's last conv before the residual sum
