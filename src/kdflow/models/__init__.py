"""Model families with size knobs, and the one registry that names them: one file per family (or
small family), one line in `MODELS` here.

    model = build_model({"family": "cnn1d", "channels": 64, "layers": 3}, input_shape=(40,), num_classes=10)
    logits = model(x)                           # (B, num_classes)
    logits, feats = model.forward_features(x)   # feats: {"block1": ..., "penultimate": (B, D)}

Every family returns logits from `forward` and, from `forward_features`, the same logits plus named
intermediate features, so a feature-based method (FitNets, attention transfer, RKD, CRD) can ask
for them without a change here:

    block<i>       the output of block i: (B, D) for mlp, (B, C, L) for cnn1d, (B, C, H, W) otherwise;
                   transformer1d and vit lay their tokens out as maps, (B, dim, L/p) and (B, dim, H/p, W/p)
    block<i>_pre   the same block before its activation (AB distils these): mlp the Linear output,
                   cnn1d and cnn2d the BatchNorm output (cnn2d: also before the max-pool, so at the
                   block's input resolution), resnet the last basic block's residual sum before its
                   final ReLU, transformer1d and vit block<i> itself (a block ends in its residual
                   sum, with no activation). relu(block<i>_pre) is block<i> except for cnn2d's pool,
                   mlp's dropout in training, and the Transformers. The CIFAR zoo
                   (kdflow.models.cifar) follows RepDistiller's `preact`; each of its modules
                   says what that is (wrn: the next stage's BatchNorm of block<i>; mobilenetv2:
                   block<i> itself).
    penultimate    the vector the classifier reads, (B, D)

`input_shape` excludes the batch: (L,) for 1-D signals, (C, H, W) for images.
"""

from __future__ import annotations

from torch import nn

from kdflow.models.base import Classifier
from kdflow.models.cifar import ZOO
from kdflow.models.cnn import CNN1D, CNN2D
from kdflow.models.ensemble import Ensemble
from kdflow.models.mlp import MLP
from kdflow.models.resnet import ResNet
from kdflow.models.transformer import Transformer1D, ViT

# family name -> class. The config's model spec is {"family": name, **constructor knobs}.
MODELS = {
    "mlp": MLP,
    "cnn1d": CNN1D,
    "cnn2d": CNN2D,
    "resnet": ResNet,
    "transformer1d": Transformer1D,
    "vit": ViT,
    # the CIFAR zoo of the KD tables, written out in kdflow.models.cifar: resnet8 .. resnet110,
    # resnet8x4, resnet32x4, resnet50, wrn_16_1 .. wrn_40_2, vgg8 .. vgg19, mobilenetv2, shufflev1, shufflev2
    **ZOO,
    "ensemble": Ensemble,  # assembled from trained members by the pipeline, not declared by family
}
ASSEMBLED = {"ensemble"}  # families a config does not name (kdflow.registry.FAMILIES leaves them out)


def build_model(spec: dict, input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    knobs = {k: v for k, v in spec.items() if k not in ("family", "train")}  # train: per-model overrides
    if "hidden" in knobs:
        knobs["hidden"] = tuple(knobs["hidden"])
    return MODELS[spec["family"]](input_shape, num_classes, **knobs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
