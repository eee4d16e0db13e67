"""Old Faithful geyser eruptions (272 rows of eruption duration and waiting time, in minutes), shipped
with kdflow as `old_faithful.csv`: the Helmholtz machine's dataset in KD4DGM (Chen et al. CVPR 2023).

    load_old_faithful(None, seed=0)   # x: (N, 2) float32 (duration, waiting), 200 train / 72 test

There is no official split: a seeded permutation holds out 72 rows as the test part. Values stay raw
(the generative pipeline standardises by the training split); labels are one dummy class.
`read_old_faithful` is the one CSV reader (kdflow.dgm.hm.load_old_faithful uses it too).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from kdflow.data.raw import RawData

N_TRAIN = 200  # of 272: the rest is the test part
HEADER = "eruptions,waiting"


def read_old_faithful() -> np.ndarray:
    """The 272 rows of the shipped CSV as float64 (272, 2), in file order: (duration, waiting)."""
    text = resources.files("kdflow.data").joinpath("old_faithful.csv").read_text()
    rows = [line for line in text.splitlines() if line and not line.startswith("#")]
    if rows[0] != HEADER:
        raise ValueError(f"old_faithful.csv: expected the header {HEADER!r}, got {rows[0]!r}")
    return np.array([r.split(",") for r in rows[1:]], dtype=np.float64)


def load_old_faithful(root: Path | None, seed: int, **_) -> RawData:
    """A seeded 200/72 train/test split of the raw rows; `root` is unused (the data ships with kdflow)."""
    x = read_old_faithful().astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    train, test = order[:N_TRAIN], order[N_TRAIN:]
    labels = np.zeros(len(x), dtype=np.int64)  # one class: the pipeline's splits need labels
    return RawData(x[train], labels[train], x[test], labels[test])
