"""The seeded stratified train/val split, and splits held as in-memory tensors.

    train = load_split(Path("resources/mnist1d.npz"), "train", val_fraction=0.2, split_seed=0)
    input_shape(train), num_classes(train)   # (40,), 10

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

    x: torch.Tensor  # (N, *input_shape) float32
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


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


def load_split(path: Path, name: str, val_fraction: float, split_seed: int) -> Split:
    """One of 'train', 'val' (both carved from the official train part) or 'test'."""
    raw = load_raw(path)
    if name == "test":
        return Split(torch.from_numpy(raw.x_test), torch.from_numpy(raw.y_test))
    train_idx, val_idx = stratified_split(raw.y_train, val_fraction, split_seed)
    idx = {"train": train_idx, "val": val_idx}[name]
    return Split(torch.from_numpy(raw.x_train[idx]), torch.from_numpy(raw.y_train[idx]))


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
