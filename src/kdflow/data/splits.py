"""The seeded stratified train/val split, and splits held as in-memory tensors.

    train = load_split(Path("resources/mnist1d.npz"), "train", val_fraction=0.2, split_seed=0)
    input_shape(train), num_classes(train)   # (40,), 10
    x = train.inputs(idx)                    # a batch as the model reads it (float32)

Images stay uint8 in memory and on the training device (a quarter of float32's bytes: CIFAR's
training part is 150 MB, not 600); `Split.prep` converts a batch to float and normalises it per
channel with the mean and std of the *training* split (never validation or test), which every
split of one file carries, so a model sees the same normalisation in training and at test time.
1-D signals (MNIST-1D) are stored as float32 and read as they are.

The test split is only ever returned by `load_split(..., "test")`, which only the evaluate job calls.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdflow.data.raw import load_raw


@dataclass(frozen=True)
class Split:
    """One split held as tensors, batched by index (no per-sample collation)."""

    x: torch.Tensor  # (N, *input_shape): float32 signals, or uint8 images
    y: torch.Tensor  # (N,) int64
    mean: torch.Tensor | None = None  # (C, 1, 1) per-channel mean of the training split in [0, 1]
    std: torch.Tensor | None = None  # (C, 1, 1), for uint8 images

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        moved = (t.to(device) if t is not None else None for t in (self.mean, self.std))
        return Split(self.x.to(device), self.y.to(device), *moved)

    def prep(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of this split's stored inputs as a model reads them: uint8 images to float32
        in [0, 1], normalised by the training split's statistics; float inputs unchanged."""
        if x.dtype != torch.uint8:
            return x
        if self.mean is None:
            raise ValueError(
                "a Split of uint8 images needs the training split's mean and std (load_split sets them)"
            )
        return (x.float() / 255.0 - self.mean) / self.std

    def inputs(self, idx: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """Samples `idx` (all by default) as the model reads them."""
        return self.prep(self.x[idx])

    def head(self, n: int) -> Split:
        """The first n samples, with the same normalisation."""
        return Split(self.x[:n], self.y[:n], self.mean, self.std)


def stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): each class contributes round(val_fraction * count) samples to val.

    Seeded with its own Generator, so the split is a pure function of (labels, fraction, seed).
    """
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        val.append(idx[: int(round(val_fraction * len(idx)))])
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(len(y)), val_idx)
    return train_idx, val_idx


def channel_stats(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in [0, 1] units, as (C, 1, 1)
    float32 (accumulated in float64, a channel at a time to bound memory)."""
    mean, std = [], []
    for c in range(x.shape[1]):
        v = x[:, c].astype(np.float64) / 255.0
        mean.append(v.mean())
        std.append(max(v.std(), 1e-6))  # a constant channel is left unscaled rather than divided by 0
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float32).view(-1, 1, 1)  # noqa: E731
    return as_tensor(mean), as_tensor(std)


def load_split(path: Path, name: str, val_fraction: float, split_seed: int) -> Split:
    """One of 'train', 'val' (both carved from the official train part) or 'test'; image splits
    carry the training split's channel statistics (see the module docstring)."""
    raw = load_raw(path)
    train_idx, val_idx = stratified_split(raw.y_train, val_fraction, split_seed)
    stats = channel_stats(raw.x_train[train_idx]) if raw.x_train.dtype == np.uint8 else (None, None)
    if name == "test":
        return Split(torch.from_numpy(raw.x_test), torch.from_numpy(raw.y_test), *stats)
    idx = {"train": train_idx, "val": val_idx}[name]
    return Split(torch.from_numpy(raw.x_train[idx]), torch.from_numpy(raw.y_train[idx]), *stats)


def content_hash(*splits: Split) -> str:
    """sha256 of the splits' arrays: what a model was trained on, whatever file it came from."""
    h = hashlib.sha256()
    for split in splits:
        for t in (split.x, split.y):
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def input_shape(split: Split) -> tuple[int, ...]:
    return tuple(split.x.shape[1:])


def num_classes(split: Split) -> int:
    return int(split.y.max()) + 1
