"""The ShuffleNets of the KD tables (shufflev1, shufflev2), after RepDistiller's
models/ShuffleNetv1.py (`ShuffleV1`) and models/ShuffleNetv2.py (`ShuffleV2`, net size 1).

    build_model({"family": "shufflev1"}, input_shape=(3, 32, 32), num_classes=100)
    ShuffleNetV1((3, 32, 32), 100)   # the same model

Both: a 1x1 stem to 24 channels (BN, ReLU; no stride, no max-pool on CIFAR), three stages that
each halve H, W in their first block, a global mean and a linear classifier; PyTorch's default
initialisation, as the authors'. Every stride pads, so any input size runs.

ShuffleNetV1 (Zhang et al. 2018), groups 3: stages of 4, 8, 4 bottlenecks at 240, 480, 960
channels. A bottleneck: grouped 1x1 to a quarter of its width, channel shuffle, 3x3 depthwise,
grouped 1x1 back; its sum with the input, or at stride 2 its concatenation with a 3x3 average
pool of the input, then ReLU. block<i>: stage i's output; block<i>_pre: the last bottleneck's
sum before that ReLU (RepDistiller's `preact`); penultimate (B, 960).

ShuffleNetV2 (Ma et al. 2018), size 1: stages of a down-sampling unit and 3, 7, 3 basic units
at 116, 232, 464 channels, then a 1x1 conv to 1024 (BN, ReLU) before the mean. A basic unit
splits the channels in two halves, passes one through and transforms the other (1x1, 3x3
depthwise, 1x1, ReLU), concatenates and shuffles. block<i>_pre is the last unit's output with
the final ReLU left out. RepDistiller returns it concatenated but not shuffled; here it is
shuffled like the output, so relu(block<i>_pre) is block<i> channel for channel (the halves
passed through are outputs of ReLUs already). penultimate (B, 1024).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdflow.models.resnet import ResidualStages


def shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Channel shuffle: channel g * (C / groups) + k moves to k * groups + g."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _stem(c_in: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU())


class _V1Bottleneck(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, groups: int, first: bool):
        super().__init__()
        # at stride 2 the pooled input is concatenated, so the branch makes the rest of c_out
        branch = c_out - c_in if stride == 2 else c_out
        mid = branch // 4
        self.groups_in = 1 if first else groups  # the paper: too few stem channels to group
        self.stride = stride
        self.conv1 = nn.Conv2d(c_in, mid, 1, groups=self.groups_in, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, branch, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch)

    def forward_pre(self, x):
        h = shuffle(torch.relu(self.bn1(self.conv1(x))), self.groups_in)
        h = self.bn3(self.conv3(torch.relu(self.bn2(self.conv2(h)))))
        if self.stride == 2:
            return torch.cat([h, F.avg_pool2d(x, 3, 2, 1)], 1)
        return h + x

    def forward(self, x):
        return torch.relu(self.forward_pre(x))


class ShuffleNetV1(ResidualStages):
    """RepDistiller's ShuffleV1: groups 3, stages (4, 8, 4) at (240, 480, 960) channels."""

    def __init__(self, input_shape, num_classes):
        stages, c_in = [], 24
        for c, n in ((240, 4), (480, 8), (960, 4)):
            blocks = []
            for j in range(n):
                blocks.append(_V1Bottleneck(c_in, c, 2 if j == 0 else 1, 3, first=not stages and j == 0))
                c_in = c
            stages.append(nn.Sequential(*blocks))
        super().__init__(_stem(input_shape[0]), stages, nn.Linear(c_in, num_classes))


class _V2Down(nn.Module):
    """The stride-2 unit: both halves of c_out made from the whole input, concatenated, shuffled."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        half = c_out // 2
        self.left = nn.Sequential(
            nn.Conv2d(c_in, c_in, 3, 2, 1, groups=c_in, bias=False),
            nn.BatchNorm2d(c_in),
            nn.Conv2d(c_in, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(),
        )
        self.right = nn.Sequential(*_v2_branch(c_in, half, stride=2), nn.ReLU())

    def forward(self, x):
        return shuffle(torch.cat([self.left(x), self.right(x)], 1), 2)


def _v2_branch(c_in: int, c: int, stride: int) -> list[nn.Module]:
    """ShuffleNetV2's transformed branch without its last ReLU: 1x1 conv, BN, ReLU, 3x3 depthwise
    (carrying the stride), BN, 1x1 conv, BN."""
    return [
        nn.Conv2d(c_in, c, 1, bias=False),
        nn.BatchNorm2d(c),
        nn.ReLU(),
        nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False),
        nn.BatchNorm2d(c),
        nn.Conv2d(c, c, 1, bias=False),
        nn.BatchNorm2d(c),
    ]


class _V2Basic(nn.Module):
    """The stride-1 unit: the first half of the channels passes, the second is transformed."""

    def __init__(self, c: int):
        super().__init__()
        half = c // 2
        self.branch = nn.Sequential(*_v2_branch(half, half, stride=1))  # its ReLU is in forward

    def forward_pre(self, x):
        kept, changed = x.chunk(2, dim=1)
        return shuffle(torch.cat([kept, self.branch(changed)], 1), 2)

    def forward(self, x):
        kept, changed = x.chunk(2, dim=1)
        return shuffle(torch.cat([kept, torch.relu(self.branch(changed))], 1), 2)


class ShuffleNetV2(ResidualStages):
    """RepDistiller's ShuffleV2 (net size 1): stages (3, 7, 3) at (116, 232, 464), neck to 1024."""

    def __init__(self, input_shape, num_classes):
        stages, c_in = [], 24
        for c, n in ((116, 3), (232, 7), (464, 3)):
            stages.append(nn.Sequential(_V2Down(c_in, c), *(_V2Basic(c) for _ in range(n))))
            c_in = c
        neck = nn.Sequential(nn.Conv2d(c_in, 1024, 1, bias=False), nn.BatchNorm2d(1024), nn.ReLU())
        super().__init__(_stem(input_shape[0]), stages, nn.Linear(1024, num_classes), neck=neck)
