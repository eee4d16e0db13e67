"""The weight initialisation of the authors' CIFAR models (RepDistiller's `models/`), so a zoo
model starts where theirs does:

    he_init(model, linear_std=0.01, zero_bias=True)   # what vgg.py and mobilenetv2.py do

Every conv: normal with std sqrt(2 / (k * k * out_channels)) (He et al.'s fan-out rule, which
resnet.py writes as kaiming_normal_ and wrn.py, vgg.py, mobilenetv2.py by hand), bias zero;
BatchNorm: weight 1, bias 0 (PyTorch's default already). The linear classifier differs by file.
"""

from __future__ import annotations

from torch import nn


def he_init(model: nn.Module, linear_std: float | None = None, zero_bias: bool = False) -> None:
    """Convs as above; Linear: normal(0, linear_std) if given, else PyTorch's default; its bias
    zero if `zero_bias`."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            if zero_bias:
                nn.init.zeros_(m.bias)
