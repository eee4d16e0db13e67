"""The plain-CNN families: CNN1D for 1-D signals (L,), CNN2D for images (C, H, W).

    build_model({"family": "cnn1d", "channels": 64, "layers": 3}, input_shape=(40,), num_classes=10)
    build_model({"family": "cnn2d", "channels": 32, "layers": 4}, input_shape=(3, 32, 32), num_classes=10)

Both give the named features of kdflow.models' docstring (block<i>, block<i>_pre, penultimate).
"""

from __future__ import annotations

from torch import nn

from kdflow.models.base import Classifier


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

    def rep_target(self, block):
        return self.blocks[block - 1], "0", "1"  # conv, BatchNorm


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

    def rep_target(self, block):
        return self.blocks[block - 1], "0", "1"  # conv, BatchNorm
