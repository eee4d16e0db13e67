"""MNIST and Fashion-MNIST from their four IDX files (plain or gzipped), where torchvision keeps
them: `<root>/MNIST/raw/`, `<root>/FashionMNIST/raw/` (never downloaded).

    load_mnist(Path("/data"), seed=0)           # x: (N, 1, 28, 28) uint8
    load_fashion_mnist(Path("/data"), seed=0)

The seed is unused: the train/test parts are the official ones.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from kdflow import dataset_files as files
from kdflow.data.raw import RawData

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file: two zero bytes, the type code, the number of dims, the big-endian dims, then
    the data (LeCun's format, which the MNIST and Fashion-MNIST files use). `.gz` is decompressed."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if raw[:2] != b"\x00\x00" or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims}, the file holds {data.size} values (truncated?)")
    return data.reshape(dims)


def _load(root: Path | None, name: str, sub: str) -> RawData:
    base = files.require(root, name)

    def read(stem: str) -> np.ndarray:
        return read_idx(files.found(base, f"{sub}/{stem}"))

    def images(stem: str) -> np.ndarray:  # (N, 1, 28, 28) uint8
        return np.ascontiguousarray(read(stem)[:, None], dtype=np.uint8)

    return RawData(
        images("train-images-idx3-ubyte"),
        read("train-labels-idx1-ubyte").astype(np.int64),
        images("t10k-images-idx3-ubyte"),
        read("t10k-labels-idx1-ubyte").astype(np.int64),
    )


def load_mnist(root: Path | None, seed: int) -> RawData:
    return _load(root, "mnist", "MNIST/raw")


def load_fashion_mnist(root: Path | None, seed: int) -> RawData:
    return _load(root, "fashion_mnist", "FashionMNIST/raw")
