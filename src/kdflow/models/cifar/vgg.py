"""The VGGs of the KD tables (vgg8, vgg11, vgg13, vgg16, vgg19, all with BatchNorm), after
RepDistiller's models/vgg.py (`vgg<n>_bn`; its fully connected layers removed).

    build_model({"family": "vgg13"}, input_shape=(3, 32, 32), num_classes=100)
    VGG((3, 32, 32), 100, layers=(2, 2, 2, 2, 2))   # the same model

Five groups of 3x3 convs (with bias) + BN + ReLU at 64, 128, 256, 512, 512 channels, `layers`
convs each: vgg8 (1, 1, 1, 1, 1), vgg11 (1, 1, 2, 2, 2), vgg13 (2, 2, 2, 2, 2), vgg16
(2, 2, 3, 3, 3), vgg19 (2, 2, 4, 4, 4). A 2x2 max-pool follows groups 0, 1 and 2, and group 3
too only on inputs 64 pixels high (Tiny-ImageNet), as the authors'; then a global mean and a
linear classifier on 512 features.

Input sizes: the three (or four) max-pools floor-halve each side, so a side needs 8 pixels or
more (16 for the width when H is 64); 32x32 reaches group 4 at 4x4, scikit-learn's 8x8 digits at
1x1. kdflow.registry.input_problem refuses what is smaller.

Features (RepDistiller's `feat` less group 0, the stem): block<i> the output of group i after
its last ReLU (before the max-pool), block<i>_pre the last BN's output before that ReLU (its
`preact`); penultimate (B, 512).
"""

from __future__ import annotations

import torch
from torch import nn

from kdflow.models.base import Classifier
from kdflow.models.cifar.init import he_init

WIDTHS = (64, 128, 256, 512, 512)


def _group(c_in: int, c_out: int, n: int) -> nn.Sequential:
    """n x (conv 3x3, BN, ReLU) without the last ReLU, so the group ends in its BN output."""
    layers = []
    for j in range(n):
        layers += [
            nn.Conv2d(c_in if j == 0 else c_out, c_out, 3, padding=1),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        ]
    return nn.Sequential(*layers[:-1])


class VGG(Classifier):
    """RepDistiller's CIFAR VGG with BatchNorm; `layers`: convs in each of the five groups."""

    def __init__(self, input_shape, num_classes, layers: tuple[int, int, int, int, int]):
        super().__init__()
        chans = (input_shape[0], *WIDTHS)
        self.groups = nn.ModuleList(_group(a, b, n) for a, b, n in zip(chans[:-1], chans[1:], layers))
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(WIDTHS[-1], num_classes)
        he_init(self, linear_std=0.01, zero_bias=True)  # vgg.py's _initialize_weights

    def forward_features(self, x):
        # the fourth pool by the input's height, as vgg.py does: 64x64 inputs reach group 4 at 4x4
        pooled = (0, 1, 2, 3) if x.shape[2] == 64 else (0, 1, 2)
        h = self.pool(torch.relu(self.groups[0](x)))  # the stem: (B, 64, H/2, W/2)
        feats = {}
        for i in range(1, 5):
            feats[f"block{i}_pre"] = pre = self.groups[i](h)
            feats[f"block{i}"] = h = torch.relu(pre)  # (B, C_i, H_i, W_i)
            if i in pooled:
                h = self.pool(h)
        h = h.mean(dim=(2, 3))
        feats["penultimate"] = h  # (B, 512)
        return self.head(h), feats

    def rep_target(self, block):
        group = self.groups[block]  # group 0 is the stem
        return group, str(len(group) - 2), str(len(group) - 1)  # its last conv and BN
