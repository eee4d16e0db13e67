"""The CIFAR zoo (kdflow.models.cifar): the authors' parameter counts, the named features the
registry promises, the inputs each family takes (kdflow.registry.input_problem), and the fold of
the families that can be re-parameterised."""

import pytest
import torch
from torch import nn

from kdflow.models import MODELS, build_model, count_parameters, reparam
from kdflow.models.base import Classifier
from kdflow.models.cifar import ZOO
from kdflow.registry import (
    FAMILIES,
    REPARAM_FAMILIES,
    ZOO_CHANNELS,
    block_channels,
    feature_names,
    input_problem,
)

# (10 classes, 100 classes): sum(p.numel() for p in m.parameters()) of the authors' definitions,
# HobbitLong/RepDistiller at commit b84f547c5db6a35318d4671d7d5c4de74c822403, models/model_dict
# built with num_classes=10 and 100 (docs/zoo.md says how)
AUTHORS = {
    # models/resnet.py: resnet8 .. resnet110, resnet8x4, resnet32x4
    "resnet8": (78042, 83892),
    "resnet14": (175258, 181108),
    "resnet20": (272474, 278324),
    "resnet32": (466906, 472756),
    "resnet44": (661338, 667188),
    "resnet56": (855770, 861620),
    "resnet110": (1730714, 1736564),
    "resnet8x4": (1210410, 1233540),
    "resnet32x4": (7410730, 7433860),
    # models/resnetv2.py: ResNet50
    "resnet50": (23520842, 23705252),
    # models/wrn.py: wrn_16_1 .. wrn_40_2
    "wrn_16_1": (175066, 180916),
    "wrn_16_2": (691674, 703284),
    "wrn_40_1": (563930, 569780),
    "wrn_40_2": (2243546, 2255156),
    # models/vgg.py: vgg8_bn .. vgg19_bn
    "vgg8": (3918858, 3965028),
    "vgg11": (9231114, 9277284),
    "vgg13": (9416010, 9462180),
    "vgg16": (14728266, 14774436),
    "vgg19": (20040522, 20086692),
    # models/mobilenetv2.py: mobile_half
    "mobilenetv2": (697546, 812836),
    # models/ShuffleNetv1.py: ShuffleV1; models/ShuffleNetv2.py: ShuffleV2
    "shufflev1": (862768, 949258),
    "shufflev2": (1263278, 1355528),
}
NAMES = sorted(ZOO)
# where the block's output is ReLU(block<i>_pre); wrn's pre is the next BN, mobilenetv2's the block
RELU_OF_PRE = [n for n in NAMES if not n.startswith("wrn") and n != "mobilenetv2"]


def test_the_zoo_is_registered_as_families_without_knobs():
    assert set(ZOO) == set(ZOO_CHANNELS) == set(AUTHORS)
    for name in ZOO:
        assert MODELS[name] is ZOO[name] and FAMILIES[name] == (3, ()), name


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_are_the_authors(name):
    counts = tuple(count_parameters(build_model({"family": name}, (3, 32, 32), k)) for k in (10, 100))
    assert counts == AUTHORS[name]


@pytest.mark.parametrize("name", NAMES)
def test_forward_features_on_cifar_are_what_the_registry_names(name):
    spec = {"family": name}
    model = build_model(spec, (3, 32, 32), 10)
    with torch.no_grad():
        logits, feats = model.forward_features(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert sorted(feats) == sorted(feature_names(spec))
    n = len(block_channels(spec))
    assert [feats[f"block{i}"].shape[1] for i in range(1, n + 1)] == block_channels(spec)
    for i in range(1, n + 1):
        block, pre = feats[f"block{i}"], feats[f"block{i}_pre"]
        assert pre.shape == block.shape
        if name in RELU_OF_PRE:
            assert torch.equal(torch.relu(pre), block), i
        if name == "mobilenetv2":
            assert pre is block
    assert feats["penultimate"].shape == (2, model.head.in_features)


@pytest.mark.parametrize("name", NAMES)
def test_every_zoo_family_takes_one_channel_8x8_digits(name):
    spec = {"family": name}
    assert input_problem(spec, (1, 8, 8)) is None
    model = build_model(spec, (1, 8, 8), 10)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_input_problem_accepts_cifar_for_every_image_family():
    for name, (rank, _) in FAMILIES.items():
        if rank in (None, 3):
            assert input_problem({"family": name}, (3, 32, 32)) is None, name


@pytest.mark.parametrize(
    "spec,smallest,too_small",
    [
        ({"family": "vgg8"}, (1, 8, 8), (1, 7, 8)),
        ({"family": "vgg19"}, (1, 8, 8), (1, 8, 7)),
        ({"family": "vgg8"}, (1, 64, 16), (1, 64, 15)),  # 64 high: the fourth pool
        ({"family": "cnn2d", "channels": 4}, (1, 8, 8), (1, 8, 7)),
        ({"family": "cnn2d", "channels": 4, "layers": 2}, (1, 4, 4), (1, 3, 4)),
    ],
)
def test_input_problem_refuses_exactly_what_the_max_pools_cannot_run(spec, smallest, too_small):
    model = build_model(spec, smallest, 10).eval()
    assert input_problem(spec, smallest) is None
    model(torch.randn(2, *smallest))
    problem = input_problem(spec, too_small)
    assert problem and spec["family"] in problem and "x".join(map(str, too_small[1:])) in problem
    with pytest.raises(RuntimeError):
        model(torch.randn(2, *too_small))


@pytest.mark.parametrize(
    "name", ["resnet", "resnet8x4", "resnet50", "wrn_16_1", "mobilenetv2", "shufflev1", "shufflev2"]
)
def test_the_families_without_max_pools_run_on_a_single_pixel(name):
    assert input_problem({"family": name}, (1, 1, 1)) is None
    model = build_model({"family": name}, (1, 1, 1), 10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 1, 1)).shape == (2, 10)


def test_input_problem_refuses_the_wrong_rank():
    assert "(C, H, W)" in input_problem({"family": "resnet8"}, (40,))
    assert input_problem({"family": "mlp"}, (40,)) is None


def test_the_reparam_families_of_the_zoo_are_those_with_a_rep_target():
    for name in ZOO:
        has_target = type(ZOO[name]((3, 8, 8), 10)).rep_target is not Classifier.rep_target
        assert (name in REPARAM_FAMILIES) == has_target, name


@pytest.mark.parametrize("name", ["resnet8x4", "resnet50", "vgg8", "mobilenetv2"])
def test_folding_a_zoo_block_gives_the_scratch_model_and_the_same_outputs(name):
    torch.manual_seed(0)
    spec, shape = {"family": name}, (3, 8, 8)
    scratch = build_model(spec, shape, 10)
    x = torch.randn(4, *shape)
    for block in range(1, len(block_channels(spec)) + 1):
        model = build_model(spec, shape, 10)
        reparam.branch(model, block, 3)
        g = torch.Generator().manual_seed(block)
        with torch.no_grad():  # BN statistics far from their initial ones, so a wrong fold shows
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                    m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        model.eval()
        with torch.no_grad():
            before = model(x)
            reparam.fold(model, block)
            after = model(x)
        build_model(spec, shape, 10).load_state_dict(model.state_dict())  # strict: scratch's keys
        assert count_parameters(model) == count_parameters(scratch)
        torch.testing.assert_close(after, before, atol=1e-5 * before.abs().max().item(), rtol=0)
