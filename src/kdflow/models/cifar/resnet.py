"""The CIFAR ResNets of the KD tables (resnet8 .. resnet110, resnet8x4, resnet32x4), after
RepDistiller's models/resnet.py.

    build_model({"family": "resnet32x4"}, input_shape=(3, 32, 32), num_classes=100)
    ResNet((3, 32, 32), 100, depth=32, widths=(32, 64, 128, 256))   # the same model

depth 6n+2: a 3x3 stem, three stages of n basic blocks (stride 1, 2, 2), global mean, linear.
`widths` is (stem, stage 1, stage 2, stage 3): the "x4" models widen all four, so their first
block changes width at stride 1 and takes a projection shortcut. kdflow's own `resnet` family
(kdflow.models.resnet) is the same network with its stem as wide as stage 1 and PyTorch's
default initialisation; its basic block and forward (ResidualStages) are reused here.

Features (RepDistiller's `feat` list less its stem): block<i> the output of stage i after its
last ReLU, block<i>_pre the last block's residual sum before that ReLU (its `preact`), so
relu(block<i>_pre) is block<i>; penultimate the mean over H, W of block3.
"""

from __future__ import annotations

from torch import nn

from kdflow.models.cifar.init import he_init
from kdflow.models.resnet import ResidualStages, _BasicBlock


def stem3x3(c_in: int, c_out: int) -> nn.Sequential:
    """conv 3x3 (stride 1, no bias), BatchNorm, ReLU: the CIFAR stem of resnet.py and resnetv2.py."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class ResNet(ResidualStages):
    """RepDistiller's CIFAR ResNet with basic blocks: depth 6n+2, widths (stem, s1, s2, s3)."""

    def __init__(self, input_shape, num_classes, depth: int, widths: tuple[int, int, int, int]):
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        stem_width, *stage_widths = widths
        stages, c_in = [], stem_width
        for i, c in enumerate(stage_widths):
            strides = [1 if i == 0 else 2] + [1] * (n - 1)  # the first block of stages 2, 3 halves H, W
            blocks = [_BasicBlock(c_in if j == 0 else c, c, s) for j, s in enumerate(strides)]
            stages.append(nn.Sequential(*blocks))
            c_in = c
        super().__init__(stem3x3(input_shape[0], stem_width), stages, nn.Linear(c_in, num_classes))
        he_init(self)  # resnet.py: kaiming_normal_ (fan_out) convs, default Linear

    def rep_target(self, block):
        return self.stages[block - 1][-1], "conv2", "bn2"  # the last conv before the residual sum
