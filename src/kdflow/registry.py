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
    "old_faithful": (2,),  # (eruption duration, waiting time): task generative only
}
DATASET_RANK = {name: 1 if name in ("mnist1d", "old_faithful") else 3 for name in DATASET_SHAPE}
# datasets kdflow makes itself (or a package ships); the others are read from disk under dataset.root
GENERATED = {"mnist1d", "digits", "old_faithful"}
# the knobs transformer1d and vit share (kdflow.models.transformer)
TRANSFORMER_KNOBS = ("patch", "dim", "layers", "heads", "mlp_ratio", "dropout")
# the CIFAR zoo of the KD tables (kdflow.models.cifar, docs/zoo.md): family -> its blocks' channels
ZOO_CHANNELS = {
    "resnet8": (16, 32, 64),
    "resnet14": (16, 32, 64),
    "resnet20": (16, 32, 64),
    "resnet32": (16, 32, 64),
    "resnet44": (16, 32, 64),
    "resnet56": (16, 32, 64),
    "resnet110": (16, 32, 64),
    "resnet8x4": (64, 128, 256),
    "resnet32x4": (64, 128, 256),
    "resnet50": (256, 512, 1024, 2048),
    "wrn_16_1": (16, 32, 64),
    "wrn_16_2": (32, 64, 128),
    "wrn_40_1": (16, 32, 64),
    "wrn_40_2": (32, 64, 128),
    "vgg8": (128, 256, 512, 512),
    "vgg11": (128, 256, 512, 512),
    "vgg13": (128, 256, 512, 512),
    "vgg16": (128, 256, 512, 512),
    "vgg19": (128, 256, 512, 512),
    "mobilenetv2": (12, 16, 48, 160),
    "shufflev1": (240, 480, 960),
    "shufflev2": (116, 232, 464),
}
# the zoo's families that floor-halve their input with 2x2 max-pools (the others' strides pad)
VGG = ("vgg8", "vgg11", "vgg13", "vgg16", "vgg19")
# model family -> (input rank it takes or None for any, its size knobs)
FAMILIES = {
    "mlp": (None, ("hidden", "dropout")),
    "cnn1d": (1, ("channels", "layers", "kernel", "dropout")),
    "cnn2d": (3, ("channels", "layers")),
    "resnet": (3, ("depth", "width")),
    "transformer1d": (1, TRANSFORMER_KNOBS),
    "vit": (3, TRANSFORMER_KNOBS),
    **{name: (3, ()) for name in ZOO_CHANNELS},  # images; no knobs: each is one fixed architecture
}
# families whose blocks are vectors (B, D); the others' blocks are feature maps (B, C, *spatial)
VECTOR_BLOCKS = {"mlp"}
# families whose blocks' linear layer can be re-parameterised (Classifier.rep_target). Not the
# zoo's wrn_* (its last conv has neither bias nor BN to fold into) nor shufflev1 (grouped 1x1)
# and shufflev2 (the conv makes half of the block's channels).
REPARAM_FAMILIES = {
    "mlp",
    "cnn1d",
    "cnn2d",
    "resnet",
    *(name for name in ZOO_CHANNELS if name.startswith("resnet")),
    *VGG,
    "mobilenetv2",
}


def feature_names(spec: dict) -> list[str]:
    """The names `forward_features` gives for a model spec: block<i>, block<i>_pre, penultimate."""
    n = {
        "mlp": len(spec.get("hidden", [64])),
        "cnn1d": spec.get("layers", 3),
        "cnn2d": spec.get("layers", 4),
        "resnet": 3,
        "transformer1d": spec.get("layers", 4),
        "vit": spec.get("layers", 4),
        **{name: len(channels) for name, channels in ZOO_CHANNELS.items()},
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
    if family in ZOO_CHANNELS:
        return list(ZOO_CHANNELS[family])
    raise ValueError(f"family {family!r} has no feature maps")


def input_problem(spec: dict, shape: tuple[int, ...]) -> str | None:
    """Why a model spec cannot take inputs of `shape` ((C, H, W) or (L,), without the batch), or
    None if it can.

    The limit is a floor-halving 2x2 max-pool run on a side already 1 pixel wide: cnn2d pools
    after its first min(layers, 3) blocks, the zoo's VGGs after groups 0-2 (and 3 on inputs 64
    high). Every other family downsamples by padded strided convs (and resnet's, wrn's and
    shufflev1's 1x1 or padded pooling shortcuts), ceil(n / 2) >= 1, so any size runs. A
    transformer's patch must divide the input: config validation says that with the patch
    sizes allowed (kdflow.config), so it is not repeated here.
    """
    family = spec["family"]
    rank = FAMILIES[family][0]
    if rank is not None and len(shape) != rank:
        takes = "(C, H, W) images" if rank == 3 else "(L,) signals"
        return f"family {family!r} takes {takes}, not inputs of shape {tuple(shape)}"
    if family == "cnn2d":
        pools = min(spec.get("layers", 4), 3)
    elif family in VGG:
        pools = 4 if shape[1] == 64 else 3  # vgg.py pools group 3 too on inputs 64 high
    else:
        return None
    _, h, w = shape
    if min(h, w) < 2**pools:
        return (
            f"family {family!r} halves its input {pools} times with 2x2 max-pools, so each side "
            f"needs at least {2**pools} pixels; got {h}x{w}"
        )
    return None


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


# ---- task: generative (kdflow.dgm) ----
# datasets a generative experiment can model (every one; old_faithful only this task)
GEN_DATASETS = ("mnist1d", "digits", "old_faithful", "mnist", "fashion_mnist", "cifar10", "cifar100")
GEN_DATASETS += ("svhn", "npz", "imagefolder")
# family -> (the input rank it takes, or None for any; its knobs). lvae: a ladder VAE (hidden
# width, latent layers, latent dims per layer; channels: convolutional first and last blocks, for
# images); hm: the Helmholtz machine of (2,) data; vrnn: a variational RNN reading an (L,) signal
# as L steps.
GEN_FAMILIES = {
    "lvae": (None, ("hidden", "layers", "latent", "channels")),
    "hm": (1, ("hidden",)),
    "vrnn": (1, ("hidden", "rnn", "latent")),
}
# the knob defaults of the constructors (kdflow.dgm), which latent shapes are read from
GEN_DEFAULTS = {
    "lvae": {"hidden": 64, "layers": 3, "latent": 8},
    "hm": {"hidden": 8},
    "vrnn": {"hidden": 64, "rnn": 128, "latent": 8},
}


def latent_shapes(spec: dict, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """A generative model's latent shapes, bottom to top, without the batch dim: what a teacher
    and its student must share for their chains to run on the same noise."""
    family = spec["family"]
    knobs = {**GEN_DEFAULTS[family], **spec}
    if family == "lvae":
        latent, layers = knobs["latent"], knobs["layers"]
        dims = [latent] * layers if isinstance(latent, int) else list(latent)
        return [(d,) for d in dims]
    if family == "hm":
        return [(2,)] * 4  # z1..z4, two binary units each (kdflow.dgm.hm)
    return [(shape[0], knobs["latent"])]  # vrnn: one z_t per step


class GenMethod(NamedTuple):
    """A data-free distillation method of generative models (kdflow.dgm.family: each family's loss)."""

    paper: str
    source: str  # the authors' file it follows, or what it is built from
    params: dict  # family -> {hyperparameter: default}; the families it distils are the keys
    tune: tuple[str, ...]  # tuned by default (where the family has it)
    reconstruction: str = ""  # not in the authors' code: how it was built


_KD4DGM = (
    "Chen et al., A Unified Knowledge Distillation Framework for Deep Directed Graphical Models, CVPR 2023"
)
# lr: the student's learning rate, None for train.lr; it is tunable by every method
GEN_METHODS = {
    "kd4dgm": GenMethod(
        _KD4DGM,
        "KD4DGM-CVPR compressVAE/models/student_teacher.py (lvae), compressHM/ (hm), compressVRNN/ (vrnn)",
        {"lvae": {"lam": 0.1, "lr": None}, "vrnn": {"lam": 0.001, "lr": None}, "hm": {"lr": None}},
        ("lam",),
    ),
    "kd4dgm_output": GenMethod(
        _KD4DGM + " (its ablation: the output term alone)",
        "kd4dgm with lam = 0",
        {"lvae": {"lam": 0.0, "lr": None}, "vrnn": {"lam": 0.0, "lr": None}},
        (),
    ),
    "teacher_forced": GenMethod(
        _KD4DGM + " (the layer-wise arm it argues against)",
        "kd4dgm's terms with the student's conditionals on the teacher's latents",
        {"lvae": {"lam": 0.1, "lr": None}},
        ("lam",),
        "not in the authors' code: LadderVAE.generate_forced",
    ),
    "sample_elbo": GenMethod(
        "distillation by the student's ELBO on teacher samples (the sample-based baseline)",
        "LadderVAE.elbo / VRNN.elbo on x ~ p_teacher",
        {"lvae": {"lr": None}, "vrnn": {"lr": None}},
        (),
        "not in the authors' code",
    ),
}
# a tuned hyperparameter's search range: (low, high, log)
GEN_RANGES = {"lam": (1e-3, 10.0, True), "lr": (1e-4, 1e-2, True)}


def gen_params(method: str) -> list[str]:
    """Every hyperparameter a generative method has for some family."""
    return list(dict.fromkeys(p for values in GEN_METHODS[method].params.values() for p in values))
