"""A user's own arrays: `<root>/train.npz` and `<root>/test.npz`, each with `x` (uint8 images,
(N, C, H, W) or (N, H, W, C) with C in 1, 3, 4, or (N, H, W) for one channel) and `y` (integer
labels 0..K-1). Checked before any job by kdflow.dataset_files.check_npz (torch-free: the arrays'
headers and the labels).

    load_npz(Path("/data/mine"), seed=0)   # x: (N, C, H, W) uint8
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdflow import dataset_files as files
from kdflow.data.raw import RawData


def _part(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as z:
        x, y = z["x"], z["y"].astype(np.int64)
    kind = files.layout(x.shape)
    x = x[:, None] if kind == "NHW" else np.transpose(x, (0, 3, 1, 2)) if kind == "NHWC" else x
    return np.ascontiguousarray(x, dtype=np.uint8), y


def load_npz(root: Path | None, seed: int) -> RawData:
    base = files.require(root, "npz")
    files.check_npz(base)
    return RawData(*_part(base / "train.npz"), *_part(base / "test.npz"))
