"""A dataset's arrays as it ships them (`RawData`), and the one `.npz` file they are stored in.

Every loader in `kdflow.data.LOADERS` returns a `RawData`; the `prepare_data` job writes it with
`save_raw`, and training jobs read it back with `load_raw` (through `kdflow.data.load_split`).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdflow.atomic import atomic_write


@dataclass(frozen=True)
class RawData:
    """Arrays as a dataset ships them: the official train and test parts."""

    x_train: np.ndarray  # (N, *input_shape): float32 signals, uint8 images (kdflow.data.splits normalises)
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray


def save_raw(data: RawData, path: Path) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)


def load_raw(path: Path) -> RawData:
    try:
        with np.load(path) as z:
            return RawData(z["x_train"], z["y_train"], z["x_test"], z["y_test"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(
            f"dataset file {path} is unreadable ({e}); delete it and rerun to regenerate it"
        ) from e
