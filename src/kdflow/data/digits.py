"""scikit-learn's 8x8 handwritten digits (the UCI optical-recognition test set, 1,797 images, 10
classes), which ship with scikit-learn: real images on any machine, offline. There is no official
train/test split: 20 % of each class is held out as the test part, seeded by `dataset.seed`, once
(the `prepare_data` job's .npz), before the train/validation split carves the rest.

    load_digits(None, seed=42)   # x: (N, 1, 8, 8) uint8 (the 0-16 intensities * 255/16, rounded)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdflow.data.raw import RawData

TEST_FRACTION = 0.2


def load_digits(root: Path | None, seed: int) -> RawData:
    from sklearn.datasets import load_digits as sklearn_digits

    from kdflow.data.splits import stratified_split

    d = sklearn_digits()
    x = np.rint(d.images[:, None] * (255 / 16)).astype(np.uint8)  # (1797, 1, 8, 8); 17 levels stay distinct
    y = d.target.astype(np.int64)
    train, test = stratified_split(y, TEST_FRACTION, seed)
    return RawData(x[train], y[train], x[test], y[test])
