"""The torch-free registry agrees with the real loaders and model constructors."""

import inspect

import numpy as np

from kdflow import data, models
from kdflow.registry import DATASET_RANK, FAMILIES, GENERATED


def test_every_dataset_has_a_loader_and_the_generated_one_has_the_declared_rank():
    assert set(DATASET_RANK) == set(data.LOADERS)
    assert set(DATASET_RANK) >= GENERATED
    raw = data.load_mnist1d(None, 42)
    assert raw.x_train.ndim - 1 == DATASET_RANK["mnist1d"]


def test_family_knobs_are_the_constructor_arguments():
    assert set(FAMILIES) == set(models.MODELS)
    for name, (_, knobs) in FAMILIES.items():
        params = inspect.signature(models.MODELS[name]).parameters
        assert tuple(p for p in params if p not in ("input_shape", "num_classes")) == knobs, name


SMALL = {"mlp": {}, "cnn1d": {"layers": 1}, "cnn2d": {"layers": 1}, "resnet": {"depth": 8, "width": 4}}


def test_family_rank_matches_what_the_model_accepts():
    import torch

    x = {1: np.zeros((2, 40), np.float32), 3: np.zeros((2, 3, 8, 8), np.float32)}
    assert set(SMALL) == set(FAMILIES)
    for name, (rank, _) in FAMILIES.items():
        for r, arr in x.items():
            if rank in (None, r):
                model = models.build_model({"family": name, **SMALL[name]}, arr.shape[1:], 10)
                assert model(torch.from_numpy(arr)).shape == (2, 10)
