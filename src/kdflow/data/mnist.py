"""MNIST read from its four IDX files under `<root>/MNIST/raw/` (never downloaded).

    load_mnist(Path("/data"), seed=0)   # x: (N, 1, 28, 28) in [0, 1]

The seed is unused: the train/test parts are the official ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdflow.data.raw import RawData, require_dir


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): big-endian magic, dims, then uint8 data."""
    raw = path.read_bytes()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist(root: Path | None, seed: int) -> RawData:
    """MNIST from the four IDX files torchvision and LeCun's page use (`<root>/MNIST/raw/`)."""
    raw = require_dir(root, "MNIST/raw", "mnist")

    def images(name: str) -> np.ndarray:  # (N, 1, 28, 28), scaled to [0, 1]
        return (_read_idx(raw / name)[:, None].astype(np.float32)) / 255.0

    return RawData(
        images("train-images-idx3-ubyte"),
        _read_idx(raw / "train-labels-idx1-ubyte").astype(np.int64),
        images("t10k-images-idx3-ubyte"),
        _read_idx(raw / "t10k-labels-idx1-ubyte").astype(np.int64),
    )
