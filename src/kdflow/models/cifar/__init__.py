"""The CIFAR model zoo of the published KD tables (RepDistiller, Tian et al. ICLR 2020; mdistiller,
the DKD / CVPR 2022 tables): each architecture a family of its own, with no size knobs, and the
parameter counts of the authors' code (tests/test_models_zoo.py pins them; docs/zoo.md lists them).

    build_model({"family": "resnet32x4"}, input_shape=(3, 32, 32), num_classes=100)   # teacher
    build_model({"family": "resnet8x4"}, input_shape=(3, 32, 32), num_classes=100)    # student

One file per architecture family; each says which of the authors' files it follows, what its
features are (block<i>, block<i>_pre, penultimate; kdflow.models' docstring) and what inputs it
takes. All pool globally by a mean over H, W (the authors pool a fixed 8x8 or 4x4, i.e. 32x32
inputs), use the input's channels in the stem, and start from the authors' initialisation.
"""

from __future__ import annotations

from kdflow.models.cifar.mobilenetv2 import MobileNetV2
from kdflow.models.cifar.resnet import ResNet
from kdflow.models.cifar.resnet50 import ResNet50
from kdflow.models.cifar.shufflenet import ShuffleNetV1, ShuffleNetV2
from kdflow.models.cifar.vgg import VGG
from kdflow.models.cifar.wrn import WideResNet


def fixed(cls, **config):
    """A constructor (input_shape, num_classes) of `cls` with the rest of its arguments fixed:
    a family without knobs (unlike functools.partial, its signature shows none)."""

    def build(input_shape, num_classes):
        return cls(input_shape, num_classes, **config)

    build.__qualname__ = build.__name__ = (
        f"{cls.__name__}({', '.join(f'{k}={v}' for k, v in config.items())})"
    )
    return build


SMALL = (16, 16, 32, 64)  # widths (stem, stage 1, 2, 3) of the plain CIFAR ResNets
X4 = (32, 64, 128, 256)  # the "x4" ResNets: stages 4x as wide, the stem 2x

# family name -> constructor (input_shape, num_classes); kdflow.registry.ZOO_CHANNELS has the same names
ZOO = {
    "resnet8": fixed(ResNet, depth=8, widths=SMALL),
    "resnet14": fixed(ResNet, depth=14, widths=SMALL),
    "resnet20": fixed(ResNet, depth=20, widths=SMALL),
    "resnet32": fixed(ResNet, depth=32, widths=SMALL),
    "resnet44": fixed(ResNet, depth=44, widths=SMALL),
    "resnet56": fixed(ResNet, depth=56, widths=SMALL),
    "resnet110": fixed(ResNet, depth=110, widths=SMALL),
    "resnet8x4": fixed(ResNet, depth=8, widths=X4),
    "resnet32x4": fixed(ResNet, depth=32, widths=X4),
    "resnet50": fixed(ResNet50),
    "wrn_16_1": fixed(WideResNet, depth=16, widen=1),
    "wrn_16_2": fixed(WideResNet, depth=16, widen=2),
    "wrn_40_1": fixed(WideResNet, depth=40, widen=1),
    "wrn_40_2": fixed(WideResNet, depth=40, widen=2),
    "vgg8": fixed(VGG, layers=(1, 1, 1, 1, 1)),
    "vgg11": fixed(VGG, layers=(1, 1, 2, 2, 2)),
    "vgg13": fixed(VGG, layers=(2, 2, 2, 2, 2)),
    "vgg16": fixed(VGG, layers=(2, 2, 3, 3, 3)),
    "vgg19": fixed(VGG, layers=(2, 2, 4, 4, 4)),
    "mobilenetv2": fixed(MobileNetV2, expansion=6, width_mult=0.5),  # RepDistiller's mobile_half
    "shufflev1": fixed(ShuffleNetV1),
    "shufflev2": fixed(ShuffleNetV2),
}
