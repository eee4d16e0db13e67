"""The MobileNetV2 of the KD tables, after RepDistiller's models/mobilenetv2.py: its
`mobile_half` (expansion 6, width multiplier 0.5), the "MobileNetV2" of the RepDistiller and
mdistiller tables.

    build_model({"family": "mobilenetv2"}, input_shape=(3, 32, 32), num_classes=100)
    MobileNetV2((3, 32, 32), 100, expansion=6, width_mult=0.5)   # the same model

A 3x3 stride-2 stem (16 channels at width 0.5), seven groups of inverted residual blocks
(Sandler et al. 2018, the authors' CIFAR strides: 1, 1, 2, 2, 1, 2, 1), a 1x1 conv to 1280
(not scaled below width 1), BN, ReLU, global mean, linear. Every stride pads, so any input size
runs (32x32 ends at 2x2, 8x8 at 1x1).

Features: block1..block4 the outputs of groups 1, 2, 4 and 6 (0-based; RepDistiller's f1..f4):
12, 16, 48, 160 channels at width 0.5. A block ends in its linear 1x1 projection (plus the
input where the shapes agree) with no activation after it, so block<i>_pre is block<i>, the
same tensor (RepDistiller's `preact` also returns the plain features here). penultimate
(B, 1280).
"""

from __future__ import annotations

from torch import nn

from kdflow.models.base import Classifier
from kdflow.models.cifar.init import he_init

# (expansion or None for the model's, channels at width 1, blocks, stride of the first)
GROUPS = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
TAPS = (1, 2, 4, 6)  # the groups whose outputs are block1..block4


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]


class _InvertedResidual(nn.Module):
    """1x1 expansion (BN, ReLU), 3x3 depthwise (stride; BN, ReLU), 1x1 linear projection (BN),
    plus the input where stride 1 keeps the shape."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int):
        super().__init__()
        mid = c_in * expansion
        self.residual = stride == 1 and c_in == c_out
        self.conv = nn.Sequential(
            *_conv_bn(c_in, mid, 1),
            nn.ReLU(),
            *_conv_bn(mid, mid, 3, stride, groups=mid),
            nn.ReLU(),
            *_conv_bn(mid, c_out, 1),  # indices 6 (conv) and 7 (BN): rep_target
        )

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(Classifier):
    """RepDistiller's CIFAR MobileNetV2 at expansion `expansion` and width `width_mult`."""

    def __init__(self, input_shape, num_classes, expansion: int, width_mult: float):
        super().__init__()
        c_in = int(32 * width_mult)
        self.stem = nn.Sequential(*_conv_bn(input_shape[0], c_in, 3, 2), nn.ReLU())
        groups = []
        for t, c, n, s in GROUPS:
            c_out = int(c * width_mult)
            blocks = []
            for stride in [s] + [1] * (n - 1):
                blocks.append(_InvertedResidual(c_in, c_out, stride, t or expansion))
                c_in = c_out
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.ModuleList(groups)
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280  # the authors' rule
        self.neck = nn.Sequential(*_conv_bn(c_in, last, 1), nn.ReLU())
        self.head = nn.Linear(last, num_classes)
        he_init(self, linear_std=0.01, zero_bias=True)  # mobilenetv2.py's _initialize_weights

    def forward_features(self, x):
        h = self.stem(x)  # (B, 16, H/2, W/2) at width 0.5
        feats = {}
        for j, group in enumerate(self.groups):
            h = group(h)
            if j in TAPS:
                i = TAPS.index(j) + 1
                feats[f"block{i}"] = feats[f"block{i}_pre"] = h  # no activation ends a block
        h = self.neck(h).mean(dim=(2, 3))  # adaptive: the authors' AvgPool2d(input_size // 16)
        feats["penultimate"] = h  # (B, 1280)
        return self.head(h), feats

    def rep_target(self, block):
        return self.groups[TAPS[block - 1]][-1].conv, "6", "7"  # the last block's projection and BN
