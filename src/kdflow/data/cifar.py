"""CIFAR-10 and CIFAR-100 from their python pickles, where torchvision keeps them:
`<root>/cifar-10-batches-py/`, `<root>/cifar-100-python/` (never downloaded).

    load_cifar10(Path("/data"), seed=0)    # x: (N, 3, 32, 32) uint8; 10 classes
    load_cifar100(Path("/data"), seed=0)   # the 100 fine labels (the KD tables' task)

The seed is unused: the train/test parts are the official ones.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from kdflow import dataset_files as files
from kdflow.data.raw import RawData


def _batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="latin1")  # noqa: S301 - the dataset's own format
    x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return x, np.asarray(d[label_key], dtype=np.int64)


def load_cifar10(root: Path | None, seed: int) -> RawData:
    base = files.require(root, "cifar10") / "cifar-10-batches-py"
    parts = [_batch(base / f"data_batch_{i}", "labels") for i in range(1, 6)]
    x_test, y_test = _batch(base / "test_batch", "labels")
    return RawData(
        np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), x_test, y_test
    )


def load_cifar100(root: Path | None, seed: int) -> RawData:
    base = files.require(root, "cifar100") / "cifar-100-python"
    return RawData(*_batch(base / "train", "fine_labels"), *_batch(base / "test", "fine_labels"))
