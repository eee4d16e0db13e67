"""The Wide ResNets of the KD tables (wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2), after
RepDistiller's models/wrn.py (Zagoruyko & Komodakis 2016, without dropout).

    build_model({"family": "wrn_40_2"}, input_shape=(3, 32, 32), num_classes=100)
    WideResNet((3, 32, 32), 100, depth=40, widen=2)   # the same model

depth 6n+4: a 3x3 conv stem (16 channels, no BN), three stages of n pre-activation blocks at
16k, 32k, 64k channels (strides 1, 2, 2), BN + ReLU, global mean, linear.

A pre-activation network ends each stage in a residual sum with no activation after it, and
the features are RepDistiller's: block<i> is that sum (its `feat`), block<i>_pre the BatchNorm
that opens the next stage (the final BN after stage 3) applied to it (its `preact`), so
relu(block<i>_pre) is what the next stage convolves, not block<i>. penultimate: the mean of
relu(block3_pre), (B, 64k). The next stage takes that BN output from here rather than computing
it again, which in training would update its running statistics twice.
"""

from __future__ import annotations

import torch
from torch import nn

from kdflow.models.base import Classifier
from kdflow.models.cifar.init import he_init


class _PreActBlock(nn.Module):
    """BN, ReLU, conv 3x3 (stride), BN, ReLU, conv 3x3, plus the input: as it is where the widths
    agree, else through a 1x1 conv of the activated input."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if c_in != c_out else None

    def forward(self, x, x_bn=None):
        """`x_bn`: bn1(x) where the caller has it already."""
        a = torch.relu(self.bn1(x) if x_bn is None else x_bn)
        h = self.conv2(torch.relu(self.bn2(self.conv1(a))))
        return h + (x if self.shortcut is None else self.shortcut(a))


class WideResNet(Classifier):
    """RepDistiller's WRN-depth-widen: depth 6n+4, stage widths 16k, 32k, 64k."""

    def __init__(self, input_shape, num_classes, depth: int, widen: int):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"depth must be 6n+4 (16, 22, 28, 40), got {depth}")
        n = (depth - 4) // 6
        self.stem = nn.Conv2d(input_shape[0], 16, 3, 1, 1, bias=False)
        stages, c_in = [], 16
        for i, c in enumerate((16 * widen, 32 * widen, 64 * widen)):
            strides = [1 if i == 0 else 2] + [1] * (n - 1)
            blocks = [_PreActBlock(c_in if j == 0 else c, c, s) for j, s in enumerate(strides)]
            stages.append(nn.Sequential(*blocks))
            c_in = c
        self.stages = nn.ModuleList(stages)
        self.bn = nn.BatchNorm2d(c_in)
        self.head = nn.Linear(c_in, num_classes)
        he_init(self, zero_bias=True)  # wrn.py: convs normal(0, sqrt(2 / n)), Linear bias zero

    def forward_features(self, x):
        h, pre = self.stem(x), None  # (B, 16, H, W)
        feats = {}
        for i, stage in enumerate(self.stages, 1):
            first, *rest = stage
            h = first(h, pre)
            for block in rest:
                h = block(h)
            feats[f"block{i}"] = h  # (B, 16k * 2^(i-1), H_i, W_i): the residual sum
            opening_bn = self.stages[i][0].bn1 if i < len(self.stages) else self.bn
            feats[f"block{i}_pre"] = pre = opening_bn(h)
        h = torch.relu(pre).mean(dim=(2, 3))  # adaptive: the authors' fixed avg_pool2d(8) at 32x32
        feats["penultimate"] = h  # (B, 64k)
        return self.head(h), feats
