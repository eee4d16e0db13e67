"""The torch-free registry agrees with the real loaders and model constructors."""

import inspect

import numpy as np
import pytest

from kdflow import data, models
from kdflow.methods import METHODS as REAL_METHODS
from kdflow.methods.__main__ import declarations
from kdflow.registry import (
    DATASET_RANK,
    FAMILIES,
    GENERATED,
    METHODS,
    METHODS_FILE,
    VECTOR_BLOCKS,
    ZOO_CHANNELS,
    block_channels,
    feature_names,
)


def test_every_dataset_has_a_loader_and_the_generated_one_has_the_declared_rank():
    assert set(DATASET_RANK) == set(data.LOADERS)
    assert set(DATASET_RANK) >= GENERATED
    raw = data.load_mnist1d(None, 42)
    assert raw.x_train.ndim - 1 == DATASET_RANK["mnist1d"]


def test_family_knobs_are_the_constructor_arguments():
    assert set(FAMILIES) == set(models.MODELS) - models.ASSEMBLED
    for name, (_, knobs) in FAMILIES.items():
        params = inspect.signature(models.MODELS[name]).parameters
        assert tuple(p for p in params if p not in ("input_shape", "num_classes")) == knobs, name


SMALL = {
    "mlp": {},
    "cnn1d": {"layers": 1},
    "cnn2d": {"layers": 1},
    "resnet": {"depth": 8, "width": 4},
    "transformer1d": {"dim": 8, "layers": 1, "heads": 2},
    "vit": {"dim": 8, "layers": 1, "heads": 2},
    # the CIFAR zoo has no knobs: each at its one size (tests/test_models_zoo.py checks it at 32x32 too)
    **{name: {} for name in ZOO_CHANNELS},
}


def test_family_rank_matches_what_the_model_accepts():
    import torch

    x = {1: np.zeros((2, 40), np.float32), 3: np.zeros((2, 3, 8, 8), np.float32)}
    assert set(SMALL) == set(FAMILIES)
    for name, (rank, _) in FAMILIES.items():
        for r, arr in x.items():
            if rank in (None, r):
                model = models.build_model({"family": name, **SMALL[name]}, arr.shape[1:], 10)
                assert model(torch.from_numpy(arr)).shape == (2, 10)


def test_the_method_declarations_file_is_written_from_the_methods():
    import json

    assert json.loads(METHODS_FILE.read_text()) == declarations(), "run: python -m kdflow.methods"
    assert set(METHODS) == set(REAL_METHODS)
    for name, m in REAL_METHODS.items():
        assert m.name == name and m.paper and m.source, name
        assert set(m.tune) <= set(METHODS[name].tunable), name


@pytest.mark.parametrize("family", sorted(SMALL))
def test_feature_names_are_what_forward_features_gives(family):
    import torch

    spec = {"family": family, **SMALL[family]}
    shape = (40,) if FAMILIES[family][0] == 1 else (3, 8, 8)
    model = models.build_model(spec, shape, 10)
    _, feats = model.forward_features(torch.zeros(2, *shape))
    assert sorted(feats) == sorted(feature_names(spec))
    if family not in VECTOR_BLOCKS:
        channels = [feats[f"block{i}"].shape[1] for i in range(1, len(block_channels(spec)) + 1)]
        assert channels == block_channels(spec)
