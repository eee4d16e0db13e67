"""CIFAR-10 read from its python pickles under `<root>/cifar-10-batches-py/` (never downloaded).

    load_cifar10(Path("/data"), seed=0)   # x: (N, 3, 32, 32) in [0, 1]

The seed is unused: the train/test parts are the official ones.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from kdflow.data.raw import RawData, require_dir


def load_cifar10(root: Path | None, seed: int) -> RawData:
    """CIFAR-10 from its python pickles (`<root>/cifar-10-batches-py/`), as torchvision reads it."""
    base = require_dir(root, "cifar-10-batches-py", "cifar10")

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        with open(base / name, "rb") as f:
            d = pickle.load(f, encoding="latin1")  # noqa: S301 - the dataset's own format
        x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).astype(np.float32)
        return x / 255.0, np.asarray(d["labels"], dtype=np.int64)

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = batch("test_batch")
    return RawData(
        np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), x_test, y_test
    )
