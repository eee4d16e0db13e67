"""MNIST-1D (Greydanus 2020), generated offline: 4,000 train and 1,000 test signals of length 40.

    load_mnist1d(None, seed=42)   # about 1 s

`python -m kdflow.data out.npz` writes it to a file, as the prepare_data rule does.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from kdflow.data.raw import RawData


def _isolated_rng(fn, *args):
    """Call fn with Python's and NumPy's global RNG states restored afterwards.

    mnist1d seeds `random` and `np.random` globally; without this, generating the data would
    silently change every random draw that follows in the same process.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        return fn(*args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def load_mnist1d(root: Path | None, seed: int) -> RawData:
    """MNIST-1D generated offline (`make_dataset`, never `get_dataset`, which downloads)."""
    from mnist1d.data import get_dataset_args, make_dataset  # pulls matplotlib/scipy: import late

    args = get_dataset_args()
    args.seed = seed
    d = _isolated_rng(make_dataset, args)
    return RawData(
        d["x"].astype(np.float32),
        d["y"].astype(np.int64),
        d["x_test"].astype(np.float32),
        d["y_test"].astype(np.int64),
    )
