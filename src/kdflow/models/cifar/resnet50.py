"""RepDistiller's CIFAR ResNet50 (models/resnetv2.py, `ResNet50`): the ImageNet ResNet-50's
bottleneck stages on a 3x3 stride-1 stem without max-pool, for 32x32 inputs.

    build_model({"family": "resnet50"}, input_shape=(3, 32, 32), num_classes=100)

Four stages of (3, 4, 6, 3) bottlenecks at widths 64, 128, 256, 512 (outputs 4x: 256 .. 2048),
strides 1, 2, 2, 2; global mean; linear. Features as the other ResNets' (kdflow.models.cifar.resnet):
block<i> the output of stage i after its last ReLU, block<i>_pre the last bottleneck's residual
sum before it (RepDistiller's `preact`); penultimate (B, 2048).
"""

from __future__ import annotations

import torch
from torch import nn

from kdflow.models.cifar.init import he_init
from kdflow.models.cifar.resnet import stem3x3
from kdflow.models.resnet import ResidualStages


class _Bottleneck(nn.Module):
    """1x1 down to `width`, 3x3 (carrying the stride), 1x1 up to 4 * width; BN after each."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int):
        super().__init__()
        c_out = self.expansion * width
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:  # projection shortcut where the shape changes
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward_pre(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.bn2(self.conv2(h)))
        return self.bn3(self.conv3(h)) + self.shortcut(x)

    def forward(self, x):
        return torch.relu(self.forward_pre(x))


class ResNet50(ResidualStages):
    """resnetv2.py's ResNet50: bottleneck stages (3, 4, 6, 3) on a 64-wide 3x3 stem."""

    def __init__(self, input_shape, num_classes):
        stages, c_in = [], 64
        for i, (width, n) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
            strides = [1 if i == 0 else 2] + [1] * (n - 1)
            blocks = []
            for s in strides:
                blocks.append(_Bottleneck(c_in, width, s))
                c_in = width * _Bottleneck.expansion
            stages.append(nn.Sequential(*blocks))
        super().__init__(stem3x3(input_shape[0], 64), stages, nn.Linear(c_in, num_classes))
        he_init(self)  # resnetv2.py: kaiming_normal_ (fan_out) convs, default Linear

    def rep_target(self, block):
        return self.stages[block - 1][-1], "conv3", "bn3"  # the last conv before the residual sum
