"""Datasets: generation/loading, the seeded stratified train/val split, and in-memory tensors.

A dataset is a `DatasetSpec` (name, root, generation seed) and a loader in the hand-written
`LOADERS` registry that returns the raw arrays as a `RawData`. Whatever the source, the arrays are
stored once as `.npz` (the `prepare_data` rule) and training jobs load that file, so a real dataset
(`mnist`, `cifar10`, read from their usual on-disk formats) and the embedded `mnist1d` go through the
same code after loading. Inputs keep their natural shape: (N, L) for 1-D signals, (N, C, H, W) for
images; models take `input_shape` so an image dataset needs no other change.

    python -m kdflow.data resources/mnist1d.npz   # generate MNIST-1D offline (about 1 s)

One file per dataset (or small family: `mnist.py` reads MNIST and Fashion-MNIST; a loader(root, seed)
-> RawData) and one line in `LOADERS` here; `raw.py` stores the arrays, `splits.py` carves and
holds the splits. What each on-disk dataset expects under its root, and how to get it, is in
kdflow.dataset_files (torch-free: config validation checks it before any job).
The test split is only ever returned by `load_split(..., "test")`, which only the evaluate job calls.
"""

from __future__ import annotations

from kdflow.data.cifar import load_cifar10, load_cifar100
from kdflow.data.digits import load_digits
from kdflow.data.imagefolder import load_imagefolder
from kdflow.data.mnist import load_fashion_mnist, load_mnist
from kdflow.data.mnist1d import load_mnist1d
from kdflow.data.npz import load_npz
from kdflow.data.old_faithful import load_old_faithful
from kdflow.data.raw import RawData, load_raw, save_raw
from kdflow.data.splits import Split, content_hash, input_shape, load_split, num_classes, stratified_split
from kdflow.data.svhn import load_svhn

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
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "svhn": load_svhn,
    "npz": load_npz,
    "old_faithful": load_old_faithful,
    "imagefolder": load_imagefolder,
}
