"""Model families with size knobs, and the one registry that names them.

    model = build_model({"family": "cnn1d", "channels": 64, "layers": 3}, input_shape=(40,), num_classes=10)
    logits = model(x)                           # (B, num_classes)
    logits, feats = model.forward_features(x)   # feats: {"block1": ..., "penultimate": (B, D)}

Every family returns logits from `forward` and, from `forward_features`, the same logits plus named
intermediate features, so a feature-based method (FitNets, attention transfer, RKD, CRD) can ask
for them without a change here:

    block<i>       the output of block i: (B, D) for mlp, (B, C, L) for cnn1d, (B, C, H, W) otherwise
    block<i>_pre   the same block before its activation (AB distils these): mlp the Linear output,
                   cnn1d and cnn2d the BatchNorm output (cnn2d: also before the max-pool, so at the
                   block's input resolution), resnet the last basic block's residual sum before its
                   final ReLU. relu(block<i>_pre) is block<i> except for cnn2d's pool and mlp's
                   dropout in training.
    penultimate    the vector the classifier reads, (B, D)

`input_shape` excludes the batch: (L,) for 1-D signals, (C, H, W) for images.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Classifier(nn.Module):
    """Base: subclasses implement `forward_features`; `forward` returns logits only."""

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


class MLP(Classifier):
    """Flatten, then `hidden` ReLU layers, then a linear classifier."""

    def __init__(self, input_shape, num_classes, hidden=(64,), dropout=0.0):
        super().__init__()
        dims = [math.prod(input_shape), *hidden]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout))
            for a, b in zip(dims[:-1], dims[1:])
        )
        self.head = nn.Linear(dims[-1], num_classes)

    def forward_features(self, x):
        h = x.flatten(1)  # (B, D)
        feats = {}
        for i, block in enumerate(self.blocks, 1):
            linear, act, drop = block
            feats[f"block{i}_pre"] = pre = linear(h)
            h = drop(act(pre))
            feats[f"block{i}"] = h
        feats["penultimate"] = h
        return self.head(h), feats


class CNN1D(Classifier):
    """Conv1d blocks (stride 2, BatchNorm, ReLU), then flatten and a linear classifier.

    Flattening instead of global pooling keeps where a pattern occurred, which MNIST-1D needs
    (the digit templates are positional); the paper's CNN does the same.
    """

    def __init__(self, input_shape, num_classes, channels=32, layers=3, kernel=5, dropout=0.0):
        super().__init__()
        (length,) = input_shape
        chans = [1] + [channels] * layers
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(a, b, kernel, stride=2, padding=kernel // 2),
                nn.BatchNorm1d(b),
                nn.ReLU(),
            )
            for a, b in zip(chans[:-1], chans[1:])
        )
        for _ in range(layers):
            length = (length + 2 * (kernel // 2) - kernel) // 2 + 1
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels * length, num_classes)

    def forward_features(self, x):
        h = x.unsqueeze(1)  # (B, 1, L)
        feats = {}
        for i, block in enumerate(self.blocks, 1):
            conv, bn, act = block
            feats[f"block{i}_pre"] = pre = bn(conv(h))  # (B, C, L / 2^i)
            h = act(pre)
            feats[f"block{i}"] = h
        h = h.flatten(1)
        feats["penultimate"] = h
        return self.head(self.dropout(h)), feats


class CNN2D(Classifier):
    """Conv2d blocks (3x3, BatchNorm, ReLU, 2x2 max-pool), global average pool, linear head.

    The plain-CNN family the TAKD paper uses on CIFAR (its "CNN 10 / 4 / 2" are depths).
    """

    def __init__(self, input_shape, num_classes, channels=32, layers=4):
        super().__init__()
        in_ch = input_shape[0]
        chans = [in_ch] + [channels * 2 ** min(i, 3) for i in range(layers)]
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(a, b, 3, padding=1),
                nn.BatchNorm2d(b),
                nn.ReLU(),
                nn.MaxPool2d(2) if i < 3 else nn.Identity(),
            )
            for i, (a, b) in enumerate(zip(chans[:-1], chans[1:]))
        )
        self.head = nn.Linear(chans[-1], num_classes)

    def forward_features(self, x):
        h = x  # (B, C, H, W)
        feats = {}
        for i, block in enumerate(self.blocks, 1):
            conv, bn, act, pool = block
            feats[f"block{i}_pre"] = pre = bn(conv(h))  # (B, C', H, W): before the pool
            h = pool(act(pre))
            feats[f"block{i}"] = h
        h = h.mean(dim=(2, 3))  # (B, C)
        feats["penultimate"] = h
        return self.head(h), feats


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


class ResNet(Classifier):
    """The CIFAR ResNet of He et al. 2016 (depth 6n+2: 8, 20, 56, 110), as in the TAKD and
    RepDistiller tables: three stages of n basic blocks at width, 2x, 4x; global pool; linear."""

    def __init__(self, input_shape, num_classes, depth=20, width=16):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"resnet depth must be 6n+2 (8, 20, 56, 110...), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        stages, c_in = [], width
        for i, c in enumerate((width, 2 * width, 4 * width)):
            blocks = [_BasicBlock(c_in if j == 0 else c, c, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            c_in = c
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(c_in, num_classes)

    def forward_features(self, x):
        h = self.stem(x)  # (B, w, H, W)
        feats = {}
        for i, stage in enumerate(self.stages, 1):
            *first, last = stage
            for block in first:
                h = block(h)
            feats[f"block{i}_pre"] = pre = last.forward_pre(h)
            h = torch.relu(pre)  # (B, w * 2^(i-1), H / 2^(i-1), W / 2^(i-1))
            feats[f"block{i}"] = h
        h = h.mean(dim=(2, 3))
        feats["penultimate"] = h
        return self.head(h), feats


# family name -> class. The config's model spec is {"family": name, **constructor knobs}.
MODELS = {"mlp": MLP, "cnn1d": CNN1D, "cnn2d": CNN2D, "resnet": ResNet}


def build_model(spec: dict, input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    knobs = {k: v for k, v in spec.items() if k not in ("family", "train")}  # train: per-model overrides
    if "hidden" in knobs:
        knobs["hidden"] = tuple(knobs["hidden"])
    return MODELS[spec["family"]](input_shape, num_classes, **knobs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
