"""Dataset generation, the stratified split, and the real-dataset file readers."""

import pickle
import random

import numpy as np
import pytest
import torch

from kdflow import data


def test_split_is_deterministic_stratified_and_disjoint():
    y = np.repeat(np.arange(10), 40)
    np.random.default_rng(0).shuffle(y)
    a_train, a_val = data.stratified_split(y, 0.2, seed=3)
    b_train, b_val = data.stratified_split(y, 0.2, seed=3)
    c_train, c_val = data.stratified_split(y, 0.2, seed=4)
    assert np.array_equal(a_val, b_val) and np.array_equal(a_train, b_train)
    assert not np.array_equal(a_val, c_val)
    assert len(np.intersect1d(a_train, a_val)) == 0
    assert len(a_train) + len(a_val) == len(y)
    assert np.bincount(y[a_val]).tolist() == [8] * 10  # 20 % of each class


def test_split_ignores_global_rng_state():
    y = np.repeat(np.arange(3), 10)
    np.random.seed(1)
    first = data.stratified_split(y, 0.3, seed=0)[1]
    np.random.seed(2)
    assert np.array_equal(first, data.stratified_split(y, 0.3, seed=0)[1])


def test_mnist1d_generation_leaves_global_rngs_alone_and_has_paper_shapes(mnist1d_file):
    random.seed(123)
    np.random.seed(123)
    expected = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    raw = data.load_mnist1d(None, 42)
    assert (random.random(), np.random.rand()) == expected
    assert raw.x_train.shape == (4000, 40) and raw.x_test.shape == (1000, 40)
    assert raw.x_train.dtype == np.float32 and raw.y_train.dtype == np.int64
    assert np.bincount(np.concatenate([raw.y_train, raw.y_test])).tolist() == [500] * 10


def test_load_split_keeps_test_apart(mnist1d_file):
    train = data.load_split(mnist1d_file, "train", 0.2, 0)
    val = data.load_split(mnist1d_file, "val", 0.2, 0)
    test = data.load_split(mnist1d_file, "test", 0.2, 0)
    assert (len(train), len(val), len(test)) == (3200, 800, 1000)
    assert data.input_shape(train) == (40,) and data.num_classes(train) == 10
    assert isinstance(train.x, torch.Tensor) and train.x.dtype == torch.float32


def test_truncated_dataset_file_names_itself(tmp_path, mnist1d_file):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(mnist1d_file.read_bytes()[:1000])
    with pytest.raises(ValueError, match="bad.npz"):
        data.load_raw(bad)


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_reader_on_generated_idx_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 28, 28))
    _write_idx(raw / "train-images-idx3-ubyte", imgs)
    _write_idx(raw / "train-labels-idx1-ubyte", np.arange(5))
    _write_idx(raw / "t10k-images-idx3-ubyte", imgs[:2])
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.array([3, 4]))
    d = data.load_mnist(tmp_path, 0)
    assert d.x_train.shape == (5, 1, 28, 28) and d.x_test.shape == (2, 1, 28, 28)
    assert d.x_train.dtype == np.uint8 and np.array_equal(d.x_train[2, 0], imgs[2])
    assert d.y_test.tolist() == [3, 4]


def test_cifar10_reader_on_generated_pickles(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        with open(base / name, "wb") as f:
            pickle.dump(batch, f)
    d = data.load_cifar10(tmp_path, 0)
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
    assert d.x_train.dtype == np.uint8 and d.y_train.tolist()[:4] == [0, 1, 2, 3]
    # the pickle's rows are the R, G, B planes of a 32x32 image, one after another
    with open(base / "data_batch_1", "rb") as f:
        first = pickle.load(f)["data"][1]
    assert np.array_equal(d.x_train[1, 1].ravel(), first[1024:2048])


def test_missing_real_dataset_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        data.load_cifar10(tmp_path, 0)
