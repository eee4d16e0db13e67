"""What exists, by name, without importing torch: config validation runs when Snakemake parses
the workflow, and importing torch there would cost every `snakemake` call ~1.5-3 s.

tests/test_registry.py checks these against the real loaders, model constructors and methods.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

# dataset -> shape of one input, (L,) for a signal, (C, H, W) for an image (patch sizes must divide it)
# (npz and imagefolder: the user's images, whose shape config validation reads from the files)
DATASET_SHAPE = {
    "mnist1d": (40,),
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
    "svhn": (3, 32, 32),
    "npz": None,
    "imagefolder": None,
}
DATASET_RANK = {name: 1 if name == "mnist1d" else 3 for name in DATASET_SHAPE}
# datasets kdflow makes itself (or a package ships); the others are read from disk under dataset.root
GENERATED = {"mnist1d", "digits"}
# the knobs transformer1d and vit share (kdflow.models.transformer)
TRANSFORMER_KNOBS = ("patch", "dim", "layers", "heads", "mlp_ratio", "dropout")
# model family -> (input rank it takes or None for any, its size knobs)
FAMILIES = {
    "mlp": (None, ("hidden", "dropout")),
    "cnn1d": (1, ("channels", "layers", "kernel", "dropout")),
    "cnn2d": (3, ("channels", "layers")),
    "resnet": (3, ("depth", "width")),
    "transformer1d": (1, TRANSFORMER_KNOBS),
    "vit": (3, TRANSFORMER_KNOBS),
}
# families whose blocks are vectors (B, D); the others' blocks are feature maps (B, C, *spatial)
VECTOR_BLOCKS = {"mlp"}
# families whose blocks' linear layer can be re-parameterised (Classifier.rep_target)
REPARAM_FAMILIES = {"mlp", "cnn1d", "cnn2d", "resnet"}


def feature_names(spec: dict) -> list[str]:
    """The names `forward_features` gives for a model spec: block<i>, block<i>_pre, penultimate."""
    n = {
        "mlp": len(spec.get("hidden", [64])),
        "cnn1d": spec.get("layers", 3),
        "cnn2d": spec.get("layers", 4),
        "resnet": 3,
        "transformer1d": spec.get("layers", 4),
        "vit": spec.get("layers", 4),
    }[spec["family"]]
    return [f"block{i}{s}" for i in range(1, n + 1) for s in ("", "_pre")] + ["penultimate"]


def block_channels(spec: dict) -> list[int]:
    """Channel counts of a map family's blocks, in order (as the model constructors build them)."""
    family = spec["family"]
    if family == "cnn1d":
        return [spec.get("channels", 32)] * spec.get("layers", 3)
    if family == "cnn2d":
        return [spec.get("channels", 32) * 2 ** min(i, 3) for i in range(spec.get("layers", 4))]
    if family == "resnet":
        return [spec.get("width", 16) * 2**i for i in range(3)]
    if family in ("transformer1d", "vit"):
        return [spec.get("dim", 64)] * spec.get("layers", 4)
    raise ValueError(f"family {family!r} has no feature maps")


class MethodInfo(NamedTuple):
    """A method as config validation and the DAG see it (kdflow.methods.base.Method has the rest)."""

    features: str | None  # None: logits only; "map", "map_same_channels", "any": see methods.base
    pretrain: bool  # has a stage before student training (a `pretrain` rule)
    params: dict  # hyperparameter -> default (its type is the type a config value must have)
    tune: tuple[str, ...]  # tuned by default
    tunable: tuple[str, ...]  # may be tuned (have a search range)
    bounds: dict  # hyperparameter -> [lowest, highest] a config may give, where limited
    reshapes_student: bool  # trains the student in another form (its family needs REPARAM_FAMILIES)


# Written from kdflow.methods by `python -m kdflow.methods` (tests/test_registry.py says when to).
METHODS_FILE = Path(__file__).with_name("methods.json")
METHODS: dict[str, MethodInfo] = {
    name: MethodInfo(
        v["features"],
        v["pretrain"],
        v["params"],
        tuple(v["tune"]),
        tuple(v["tunable"]),
        v["bounds"],
        v["reshapes_student"],
    )
    for name, v in json.loads(METHODS_FILE.read_text()).items()
}
