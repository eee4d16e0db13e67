"""The Transformer families (transformer1d, vit): shapes and named features, the parameter count
written out from the architecture, one block against torch's own attention, a few training steps,
the refusals of bad patch sizes and heads, and a Transformer teacher paired with a CNN student."""

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdflow import config, registry
from kdflow.data import load_mnist1d
from kdflow.methods.at import AT
from kdflow.methods.base import Batch, ModuleInfo
from kdflow.methods.fitnets import FitNets
from kdflow.models import build_model, count_parameters

SMALL = {"dim": 16, "layers": 2, "heads": 2}
CASES = [  # spec, input shape, the grid of patches
    ({"family": "transformer1d", **SMALL}, (40,), (10,)),
    ({"family": "transformer1d", **SMALL, "patch": 8, "layers": 3}, (40,), (5,)),
    ({"family": "vit", **SMALL}, (3, 16, 16), (4, 4)),
    ({"family": "vit", **SMALL, "patch": 2, "heads": 4}, (1, 8, 8), (4, 4)),
    ({"family": "vit", **SMALL, "patch": 4}, (3, 8, 12), (2, 3)),
]


@pytest.mark.parametrize("spec,shape,grid", CASES)
def test_logits_and_named_features(spec, shape, grid):
    torch.manual_seed(0)
    model = build_model(spec, shape, 10)
    x = torch.randn(3, *shape)
    logits, feats = model.forward_features(x)
    assert logits.shape == (3, 10)
    assert torch.equal(logits, model(x))
    assert sorted(feats) == sorted(registry.feature_names(spec))
    blocks = [feats[f"block{i}"] for i in range(1, spec["layers"] + 1)]
    assert [b.shape[1] for b in blocks] == registry.block_channels(spec)
    for i, b in enumerate(blocks, 1):
        assert b.shape == (3, spec["dim"], *grid)
        assert feats[f"block{i}_pre"] is b  # no activation after a block's residual sum
    assert feats["penultimate"].shape == (3, spec["dim"])


def expected_parameters(tokens, patch_inputs, dim, layers, mlp_ratio, num_classes):
    """Counted from the architecture: patch embedding, position embedding, the blocks, norm, head."""
    hidden = int(mlp_ratio * dim)
    embed = patch_inputs * dim + dim
    position = tokens * dim
    attention = (dim * 3 * dim + 3 * dim) + (dim * dim + dim)  # q, k, v in one Linear; output proj
    mlp = (dim * hidden + hidden) + (hidden * dim + dim)
    norms = 2 * (2 * dim)  # two LayerNorms, weight and bias
    head = 2 * dim + dim * num_classes + num_classes  # the final LayerNorm, the classifier
    return embed + position + layers * (attention + mlp + norms) + head


@pytest.mark.parametrize(
    "spec,shape,tokens,patch_inputs",
    [
        ({"family": "transformer1d"}, (40,), 10, 4),
        (
            {"family": "transformer1d", "patch": 5, "dim": 24, "layers": 3, "heads": 3, "mlp_ratio": 3},
            (40,),
            8,
            5,
        ),
        ({"family": "vit"}, (3, 32, 32), 64, 3 * 4 * 4),
        ({"family": "vit", "patch": 2, "dim": 32, "layers": 1, "mlp_ratio": 1.5}, (1, 8, 8), 16, 4),
    ],
)
def test_parameter_count_is_the_architectures(spec, shape, tokens, patch_inputs):
    defaults = {"dim": 64, "layers": 4, "mlp_ratio": 2}  # the constructors'
    knobs = {k: spec.get(k, v) for k, v in defaults.items()}
    model = build_model(spec, shape, 10)
    assert count_parameters(model) == expected_parameters(tokens, patch_inputs, num_classes=10, **knobs)


def test_default_transformer1d_on_mnist1d_has_135626_parameters():
    # embed 4*64+64 = 320, position 10*64 = 640, 4 blocks of 8*64^2 + 11*64 = 33,472,
    # final LayerNorm 128, head 64*10+10 = 650
    assert count_parameters(build_model({"family": "transformer1d"}, (40,), 10)) == 135_626


def test_a_block_is_pre_norm_attention_then_a_gelu_mlp():
    """The hand-written block against nn.MultiheadAttention with the same weights."""
    torch.manual_seed(0)
    model = build_model({"family": "transformer1d", **SMALL, "heads": 4}, (40,), 10).eval()
    block = model.blocks[0]
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(block.qkv.weight)
        mha.in_proj_bias.copy_(block.qkv.bias)
        mha.out_proj.weight.copy_(block.proj.weight)
        mha.out_proj.bias.copy_(block.proj.bias)
    x = torch.randn(3, 10, 16)
    n1 = block.ln1(x)
    h = x + mha(n1, n1, n1, need_weights=False)[0]
    h = h + block.fc2(F.gelu(block.fc1(block.ln2(h))))
    torch.testing.assert_close(block(x), h)


def test_a_few_steps_lower_the_loss_of_both_families():
    for spec, shape in (
        ({"family": "transformer1d", **SMALL}, (40,)),
        ({"family": "vit", **SMALL}, (1, 8, 8)),
    ):
        torch.manual_seed(0)
        model = build_model(spec, shape, 4)
        x, y = torch.randn(32, *shape), torch.randint(0, 4, (32,))
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        losses = []
        for _ in range(30):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.7 * losses[0], (spec["family"], losses)


@pytest.mark.parametrize(
    "spec,shape,message",
    [
        (
            {"family": "transformer1d", "patch": 3},
            (40,),
            "patch=3 does not divide the signal length 40; allowed: 1, 2, 4, 5",
        ),
        (
            {"family": "vit", "patch": 3},
            (1, 8, 8),
            "patch=3 does not divide the image size 8x8; allowed: 1, 2, 4, 8",
        ),
        (
            {"family": "vit", "patch": 4},
            (3, 8, 6),
            "patch=4 does not divide the image size 8x6; allowed: 1, 2",
        ),
        ({"family": "transformer1d", "dim": 30}, (40,), "heads=4 does not divide dim=30"),
    ],
)
def test_bad_patch_or_heads_is_refused_naming_the_knob(spec, shape, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_model(spec, shape, 10)


def test_config_check_refuses_exactly_what_the_constructors_refuse():
    """config._check_transformer runs before any job, torch-free, on the dataset's input shape
    (registry.DATASET_SHAPE; the user's npz and image folders: read from their files)."""
    shapes = {**registry.DATASET_SHAPE, "npz": (3, 12, 20), "imagefolder": (3, 16, 8)}
    for dataset, shape in shapes.items():
        family = "transformer1d" if len(shape) == 1 else "vit"
        for patch in range(1, 10):
            for dim, heads in ((8, 2), (8, 3)):
                spec = {"family": family, "patch": patch, "dim": dim, "heads": heads, "layers": 1}
                try:
                    build_model(spec, shape, 10)
                    built = True
                except ValueError:
                    built = False
                try:
                    config._check_transformer("m", spec, dataset, shape)
                    passed = True
                except config.ConfigError:
                    passed = False
                assert built == passed, (dataset, spec)


def test_mnist1d_shape_in_the_registry_is_the_generated_one():
    assert load_mnist1d(None, 42).x_train.shape[1:] == registry.DATASET_SHAPE["mnist1d"]


@pytest.mark.parametrize(
    "teacher,student,shape",
    [
        ({"family": "transformer1d", **SMALL}, {"family": "cnn1d", "channels": 4, "layers": 2}, (40,)),
        ({"family": "vit", **SMALL}, {"family": "cnn2d", "channels": 4, "layers": 2}, (3, 16, 16)),
    ],
)
@pytest.mark.parametrize("method", [FitNets(), AT()], ids=lambda m: m.name)
def test_a_transformer_teacher_distils_its_maps_into_a_cnn(teacher, student, shape, method):
    torch.manual_seed(0)
    s_model, t_model = build_model(student, shape, 3), build_model(teacher, shape, 3).eval()
    hp = method.resolve()
    s_names, t_names = method.layers(registry.feature_names(student), registry.feature_names(teacher), hp)
    x = torch.randn(4, *shape)
    s_logits, s_all = s_model.forward_features(x)
    with torch.no_grad():
        t_logits, t_all = t_model.forward_features(x)
    s_feats, t_feats = {n: s_all[n] for n in s_names}, {n: t_all[n] for n in t_names}
    info = ModuleInfo(num_classes=3, n_train=100)
    mods = method.modules(
        {k: tuple(v.shape[1:]) for k, v in s_feats.items()},
        {k: tuple(v.shape[1:]) for k, v in t_feats.items()},
        info,
        hp,
    )
    b = Batch(s_logits, t_logits, torch.tensor([0, 1, 2, 0]), torch.arange(4), s_feats, t_feats)
    parts = method.loss(b, hp, mods)
    assert math.isfinite(parts["loss"].item())
    parts["loss"].backward()
    assert all(p.grad is not None for p in s_model.blocks[-1].parameters())
