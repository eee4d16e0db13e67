"""The files each dataset read from disk needs under `dataset.root`, torch-free: config validation
checks them before any job, and the readers open them (kdflow.data.mnist, cifar, svhn, npz).

    expected_files("cifar100")   # ["cifar-100-python/train", "cifar-100-python/test"]
    missing(root, "mnist")       # the expected files absent under root ([] when complete)

An IDX file may also be gzipped (`<name>.gz`, as the mirrors ship them). Each entry of HOW_TO_GET
is the one line that fetches the files on a machine with internet (kdflow never downloads).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

_IDX = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]
EXPECTED = {
    "mnist": [f"MNIST/raw/{f}" for f in _IDX],
    "fashion_mnist": [f"FashionMNIST/raw/{f}" for f in _IDX],
    "cifar10": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)]
    + ["cifar-10-batches-py/test_batch"],
    "cifar100": ["cifar-100-python/train", "cifar-100-python/test"],
    "svhn": ["train_32x32.mat", "test_32x32.mat"],
    "npz": ["train.npz", "test.npz"],
    "imagefolder": ["train", "test"],
}


def _torchvision(cls: str, *calls: str) -> str:
    """The one-liner that has torchvision fetch a dataset into <root>."""
    made = "; ".join(f"{cls}('<root>', {c}download=True)" for c in calls)
    return f'python -c "from torchvision.datasets import {cls}; {made}"'


HOW_TO_GET = {
    "mnist": _torchvision("MNIST", "train=True, ", "train=False, "),
    "fashion_mnist": _torchvision("FashionMNIST", "train=True, ", "train=False, "),
    "cifar10": _torchvision("CIFAR10", ""),
    "cifar100": _torchvision("CIFAR100", ""),
    "svhn": _torchvision("SVHN", "split='train', ", "split='test', "),
    "npz": "write <root>/train.npz and <root>/test.npz, each with x (uint8, NCHW or NHWC) and y (labels)",
    "imagefolder": "arrange <root>/train/<class>/<image> and <root>/test/<class>/<image> (png, jpg)",
}


def found(root: Path, rel: str) -> Path | None:
    """The file (or its .gz, for IDX files), or None."""
    for p in (root / rel, root / f"{rel}.gz"):
        if p.exists():
            return p
    return None


def missing(root: Path, name: str) -> list[str]:
    return [rel for rel in EXPECTED[name] if found(root, rel) is None]


def require(root: Path | None, name: str) -> Path:
    """`root`, with every file `name` needs; else an error listing what is missing and how to get it."""
    root = Path(root or "")
    absent = missing(root, name)
    if absent:
        raise FileNotFoundError(
            f"dataset '{name}': missing under {root}: {', '.join(absent)}; kdflow never downloads. "
            f"On a machine with internet: {HOW_TO_GET[name].replace('<root>', str(root))}"
        )
    return root


# ---------------------------------------------------------------- the user's own arrays (npz)

CHANNELS = (1, 3, 4)


def _header(path: Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """An array's shape and dtype in an .npz, from its header alone (the data are not read)."""
    with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return shape, dtype


def layout(shape: tuple[int, ...]) -> str:
    """ "NCHW", "NHWC" or "NHW" for an image array's shape; ValueError otherwise."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4 and shape[1] in CHANNELS:
        return "NCHW"
    if len(shape) == 4 and shape[3] in CHANNELS:
        return "NHWC"
    raise ValueError(
        f"x has shape {shape}; allowed: (N, C, H, W) or (N, H, W, C) with C in 1, 3, 4, or (N, H, W)"
    )


def check_npz(root: Path) -> None:
    """What kdflow.data.npz needs of the two files, from their headers: ValueError naming what is wrong."""
    shapes = {}
    for part in ("train", "test"):
        path = root / f"{part}.npz"
        try:
            names = set(zipfile.ZipFile(path).namelist())
        except (OSError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path}: not an .npz file ({e})") from e
        if not {"x.npy", "y.npy"} <= names:
            raise ValueError(f"{path}: needs arrays 'x' and 'y'; it has {sorted(n[:-4] for n in names)}")
        (xs, xd), (ys, yd) = _header(path, "x"), _header(path, "y")
        if xd != np.uint8:
            raise ValueError(f"{path}: x is {xd}; allowed: uint8 images (0-255)")
        try:
            layout(xs)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
        if not np.issubdtype(yd, np.integer) or ys != (xs[0],):
            raise ValueError(f"{path}: y must be {xs[0]} integer labels (one per image), got {ys} {yd}")
        shapes[part] = xs
    image = {p: _image_shape(s) for p, s in shapes.items()}
    if image["train"] != image["test"]:
        raise ValueError(f"{root}: train images are {image['train']} (C, H, W), test images {image['test']}")
    labels = {}
    for part in ("train", "test"):
        with np.load(root / f"{part}.npz") as z:  # the labels only: a few bytes per image
            labels[part] = z["y"]
    classes = int(labels["train"].max()) + 1
    for part, y in labels.items():
        if y.min() < 0 or y.max() >= classes:
            raise ValueError(
                f"{root / f'{part}.npz'}: labels must lie in 0..{classes - 1} (the training labels' "
                f"range), found {int(y.min())}..{int(y.max())}"
            )


def _image_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    kind = layout(shape)
    if kind == "NHW":
        return (1, *shape[1:])
    return tuple(shape[1:]) if kind == "NCHW" else (shape[3], shape[1], shape[2])


def npz_image_shape(root: Path) -> tuple[int, int, int]:
    """(C, H, W) of the images in `root`'s train.npz, from its header."""
    return _image_shape(_header(Path(root) / "train.npz", "x")[0])
