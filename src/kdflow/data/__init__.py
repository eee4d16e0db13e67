"""Datasets: generation/loading, the seeded stratified train/val split, and in-memory tensors.

A dataset is a `DatasetSpec` (name, root, generation seed) and a loader in the hand-written
`LOADERS` registry that returns the raw arrays as a `RawData`. Whatever the source, the arrays are
stored once as `.npz` (the `prepare_data` rule) and training jobs load that file, so a real dataset
(`mnist`, `cifar10`, read from their usual on-disk formats) and the embedded `mnist1d` go through the
same code after loading. Inputs keep their natural shape: (N, L) for 1-D signals, (N, C, H, W) for
images; models take `input_shape` so an image dataset needs no other change.

    python -m kdflow.data resources/mnist1d.npz   # generate MNIST-1D offline (about 1 s)

The test split is only ever returned by `load_split(..., "test")`, which only the evaluate job calls.
"""

from __future__ import annotations

import hashlib
import random
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdflow.atomic import atomic_write


@dataclass(frozen=True)
class RawData:
    """Arrays as a dataset ships them: the official train and test parts."""

    x_train: np.ndarray  # (N, *input_shape) float32
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class Split:
    """One split held as tensors, batched by index (no per-sample collation)."""

    x: torch.Tensor  # (N, *input_shape) float32
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


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


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): big-endian magic, dims, then uint8 data."""
    raw = path.read_bytes()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist(root: Path | None, seed: int) -> RawData:
    """MNIST from the four IDX files torchvision and LeCun's page use (`<root>/MNIST/raw/`)."""
    raw = _require_dir(root, "MNIST/raw", "mnist")

    def images(name: str) -> np.ndarray:  # (N, 1, 28, 28), scaled to [0, 1]
        return (_read_idx(raw / name)[:, None].astype(np.float32)) / 255.0

    return RawData(
        images("train-images-idx3-ubyte"),
        _read_idx(raw / "train-labels-idx1-ubyte").astype(np.int64),
        images("t10k-images-idx3-ubyte"),
        _read_idx(raw / "t10k-labels-idx1-ubyte").astype(np.int64),
    )


def load_cifar10(root: Path | None, seed: int) -> RawData:
    """CIFAR-10 from its python pickles (`<root>/cifar-10-batches-py/`), as torchvision reads it."""
    import pickle

    base = _require_dir(root, "cifar-10-batches-py", "cifar10")

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


def _require_dir(root: Path | None, sub: str, name: str) -> Path:
    path = Path(root or "") / sub
    if not path.is_dir():
        raise FileNotFoundError(
            f"dataset '{name}': expected its files under {path} (set dataset.root); "
            "kdflow does not download datasets"
        )
    return path


# name -> loader(root, seed). Written out by hand: the registry is the list of what exists.
LOADERS = {"mnist1d": load_mnist1d, "mnist": load_mnist, "cifar10": load_cifar10}


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


if __name__ == "__main__":
    save_raw(load_mnist1d(None, 42), Path(sys.argv[1]))
