"""SVHN (cropped digits) from `<root>/train_32x32.mat` and `<root>/test_32x32.mat`, as torchvision
keeps them (never downloaded): X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0, which
becomes label 0 as torchvision maps it.

    load_svhn(Path("/data"), seed=0)   # x: (N, 3, 32, 32) uint8
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdflow import dataset_files as files
from kdflow.data.raw import RawData


def _part(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat  # MATLAB v5 files; scipy comes with scikit-learn

    m = loadmat(path)
    x = np.ascontiguousarray(np.transpose(m["X"], (3, 2, 0, 1)), dtype=np.uint8)  # (N, 3, 32, 32)
    y = m["y"].astype(np.int64).reshape(-1) % 10  # 10 -> 0
    return x, y


def load_svhn(root: Path | None, seed: int) -> RawData:
    base = files.require(root, "svhn")
    return RawData(*_part(base / "train_32x32.mat"), *_part(base / "test_32x32.mat"))
