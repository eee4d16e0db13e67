from pathlib import Path

import pytest

from kdflow import data


@pytest.fixture(scope="session")
def mnist1d_file(tmp_path_factory) -> Path:
    """The real MNIST-1D data (generated offline, about 1 s), shared by the session."""
    path = tmp_path_factory.mktemp("data") / "mnist1d.npz"
    data.save_raw(data.load_mnist1d(None, 42), path)
    return path


@pytest.fixture(scope="session")
def small_splits(mnist1d_file):
    """A 600/200 slice of MNIST-1D train/val for fast fits."""
    train = data.load_split(mnist1d_file, "train", 0.2, 0)
    val = data.load_split(mnist1d_file, "val", 0.2, 0)
    return data.Split(train.x[:600], train.y[:600]), data.Split(val.x[:200], val.y[:200])


@pytest.fixture
def one_thread():
    """torch on one thread for the test: tiny models gain nothing from a second, and on a shared
    2-core machine they lose a lot (the generative-model tests ran 20-100x slower with two)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
