"""Datasets: generation/loading, the seeded stratified train/val split, and in-memory tensors.

A dataset is a `DatasetSpec` (name, root, generation seed) and a loader in the hand-written
`LOADERS` registry that returns the raw arrays as a `RawData`. Whatever the source, the arrays are
stored once as `.npz` (the `prepare_data` rule) and training jobs load that file, so a real dataset
(`mnist`, `cifar10`, read from their usual on-disk formats) and the embedded `mnist1d` go through the
same code after loading. Inputs keep their natural shape: (N, L) for 1-D signals, (N, C, H, W) for
images; models take `input_shape` so an image dataset needs no other change.

    python -m kdflow.data resources/mnist1d.npz   # generate MNIST-1D offline (about 1 s)

One file per dataset (`mnist1d.py`, `mnist.py`, `cifar.py`: a loader(root, seed) -> RawData) and one
line in `LOADERS` here; `raw.py` stores the arrays, `splits.py` carves and holds the splits.
The test split is only ever returned by `load_split(..., "test")`, which only the evaluate job calls.
"""

from __future__ import annotations

from kdflow.data.cifar import load_cifar10
from kdflow.data.mnist import load_mnist
from kdflow.data.mnist1d import load_mnist1d
from kdflow.data.raw import RawData, load_raw, save_raw
from kdflow.data.splits import Split, content_hash, input_shape, load_split, num_classes, stratified_split

__all__ = [
    "LOADERS",
    "RawData",
    "Split",
    "content_hash",
    "input_shape",
    "load_cifar10",
    "load_mnist",
    "load_mnist1d",
    "load_raw",
    "load_split",
    "num_classes",
    "save_raw",
    "stratified_split",
]

# name -> loader(root, seed). Written out by hand: the registry is the list of what exists.
LOADERS = {
    "mnist1d": load_mnist1d,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
}
