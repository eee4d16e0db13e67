"""diffrep (kdflow.methods.diffrep, a reconstruction of Yao et al. AAAI 2024) and the structural
re-parameterisation under it (kdflow.models.reparam): the fold is exact and leaves the scratch
architecture, and each part of the loss equals a computation written out here step by step."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from kdflow.distillation import DistillSetup
from kdflow.engine import TrainConfig, fit
from kdflow.methods import METHODS
from kdflow.methods.base import Batch
from kdflow.methods.diffrep import cosine_abar, progressive_loss
from kdflow.models import build_model, count_parameters, reparam

FAMILIES = [
    ({"family": "cnn1d", "channels": 6, "layers": 2}, (40,)),
    ({"family": "cnn1d", "channels": 6, "layers": 3, "kernel": 9}, (40,)),
    ({"family": "mlp", "hidden": [12, 12]}, (40,)),
    ({"family": "cnn2d", "channels": 4, "layers": 2}, (3, 8, 8)),
    ({"family": "resnet", "depth": 8, "width": 4}, (3, 8, 8)),
]


def scramble_bn(model: nn.Module, seed: int) -> None:
    """Give every BatchNorm statistics and affine values far from their initial ones, so a fold that
    forgot a term (a mean, a scale, eps) shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g))
                m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g))


@pytest.mark.parametrize("spec,shape", FAMILIES)
@pytest.mark.parametrize("k", [2, 3, 8])
def test_folding_the_branches_gives_the_scratch_architecture_and_the_same_outputs(spec, shape, k):
    torch.manual_seed(0)
    scratch = build_model(spec, shape, 10)
    n_blocks = len(spec.get("hidden", [])) or spec.get("layers", 3)
    for block in range(1, n_blocks + 1):
        model = build_model(spec, shape, 10)
        rep = reparam.branch(model, block, k)
        assert len(rep.branches) == k and count_parameters(model) > count_parameters(scratch)
        scramble_bn(model, seed=block)
        model.eval()
        x = torch.randn(16, *shape)
        with torch.no_grad():
            before, feats_before = model.forward_features(x)
        reparam.fold(model, block)
        assert not model.training  # the fold keeps the mode it found
        with torch.no_grad():
            after, feats_after = model.forward_features(x)
        assert count_parameters(model) == count_parameters(scratch)
        fresh = build_model(spec, shape, 10)
        fresh.load_state_dict(model.state_dict())  # strict: exactly scratch's keys and shapes
        torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
        for name in feats_before:
            torch.testing.assert_close(feats_after[name], feats_before[name], atol=1e-5, rtol=0)


def test_branch_kinds_follow_repvgg_and_the_first_starts_from_the_layers_initial_weights():
    torch.manual_seed(0)
    model = build_model({"family": "resnet", "depth": 8, "width": 4}, (3, 8, 8), 10)
    conv = model.stages[0][-1].conv2
    rep = reparam.branch(model, 1, 5)  # stage 1: stride 1, equal channels: identity allowed
    assert rep.kinds == ["full", "point", "identity", "full", "point"]
    assert torch.equal(rep.branches[0][0].weight, conv.weight)
    assert rep.branches[1][0].kernel_size == (1, 1)
    assert isinstance(model.stages[0][-1].bn2, nn.Identity)
    strided = build_model({"family": "cnn1d", "channels": 4, "layers": 2}, (40,), 10)
    assert reparam.branch(strided, 2, 4).kinds == ["full", "point", "full", "point"]  # stride 2: no identity


def test_the_sum_of_branches_is_what_the_block_computes_and_what_the_method_reads():
    torch.manual_seed(0)
    method = METHODS["diffrep"]
    model = build_model({"family": "cnn1d", "channels": 4, "layers": 2}, (40,), 10)
    method.prepare_student(model, ["block2_pre"], method.resolve({"branches": 3}))
    _, feats = model.forward_features(torch.randn(5, 40))
    branches = method.student_features(model, ["block2_pre"])["branches"]
    assert branches.shape == (3, 5, 4, 10)
    torch.testing.assert_close(branches.sum(0), feats["block2_pre"])


def test_cosine_schedule_by_hand():
    s = 0.008

    def abar(t):
        return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2

    for k in (1, 2, 4, 8):
        want = [abar((k - i) / k) for i in range(1, k + 1)]  # step i at time (K - i) / K
        np.testing.assert_allclose(cosine_abar(k).numpy(), want, rtol=1e-6)
    assert cosine_abar(4)[-1] == 1.0 and torch.all(cosine_abar(8).diff() > 0)


class Scale(nn.Module):
    """A connector with no parameters to learn: x -> 2x, so the expected loss is easy to write."""

    def forward(self, x):
        return 2 * x


def by_hand(branches, t, order, abar, xi):
    """mean over steps k and elements of (2 * sum_{j<=k} s_order[j] - x_k)^2, one step at a time."""
    k = len(branches)
    total = 0.0
    for step in range(k):
        running = sum(branches[order[j]] for j in range(step + 1))
        target = math.sqrt(abar[step]) * t + math.sqrt(1 - abar[step]) * xi
        total += ((2 * running - target) ** 2).mean()
    return total / k


@pytest.mark.parametrize("student_start", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_progressive_loss_by_hand(shuffle, student_start):
    rng = np.random.default_rng(0)
    k, shape = 4, (3, 2, 5)
    branches, t = rng.normal(size=(k, *shape)), rng.normal(size=shape)
    hp = {"shuffle": shuffle, "student_start": student_start}
    torch.manual_seed(7)
    got = progressive_loss(torch.tensor(branches, dtype=torch.float32), torch.tensor(t, dtype=torch.float32),
                           Scale(), hp)  # fmt: skip
    torch.manual_seed(7)  # the same draws, in the same order: the permutation, then the noise
    order = torch.randperm(k).tolist() if shuffle else list(range(k))
    xi = 2 * branches.sum(0) if student_start else torch.randn(shape).double().numpy()
    want = by_hand(branches, t, order, cosine_abar(k).double().numpy(), xi)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_the_student_start_target_carries_no_gradient_and_the_teacher_none_at_all():
    torch.manual_seed(0)
    branches = torch.randn(3, 4, 2, 5, requires_grad=True)
    t = torch.randn(4, 2, 5)
    torch.manual_seed(5)
    loss = progressive_loss(branches, t, Scale(), {"shuffle": True, "student_start": True})
    loss.backward()
    # d/ds of mean_k (2 y_k - x_k)^2 with x_k's student part detached: 4 (2 y_k - x_k) per step used
    assert branches.grad is not None and not t.requires_grad and t.grad is None
    with torch.no_grad():
        abar = cosine_abar(3).view(3, 1, 1, 1)
        torch.manual_seed(5)
        order = torch.randperm(3)
        y = branches[order].cumsum(0)
        x = abar.sqrt() * t + (1 - abar).sqrt() * 2 * y[-1]
        resid = 2 * (2 * y - x) * 2 / y[0].numel() / 3  # dL/dy_k
        want = torch.zeros_like(branches)
        for step in range(3):  # y_k holds branches order[0..k]
            for j in range(step + 1):
                want[order[j]] += resid[step]
    torch.testing.assert_close(branches.grad, want)


def test_feat_weight_zero_is_the_unsupervised_control_ce_alone():
    method = METHODS["diffrep"]
    hp = method.resolve({"feat_weight": 0.0})
    s_logits = torch.randn(4, 3)
    b = Batch(s_logits, torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), torch.arange(4),
              {"branches": torch.randn(2, 4, 5)}, {"block2": torch.randn(4, 7)})  # fmt: skip
    parts = method.loss(b, hp, nn.ModuleDict())
    assert set(parts) == {"loss", "ce"}
    assert parts["loss"].item() == pytest.approx(torch.nn.functional.cross_entropy(s_logits, b.y).item())


@pytest.mark.parametrize(
    "student", [{"family": "cnn1d", "channels": 4, "layers": 2}, {"family": "mlp", "hidden": [8]}]
)
def test_a_distilled_student_is_saved_folded_with_the_outputs_it_was_validated_with(student, small_splits):
    train, val = small_splits
    torch.manual_seed(1)
    teacher = build_model({"family": "cnn1d", "channels": 8, "layers": 3}, (40,), 10).eval()
    method = METHODS["diffrep"]
    hp = method.resolve({"branches": 3})
    with torch.no_grad():
        logits = teacher(train.x)
    setup = DistillSetup.build(method, hp, student, (40,), 10, teacher, train, logits)
    result = fit(setup.distiller(hp, 0, len(train)), train, val, TrainConfig(epochs=2, batch_size=64),
                 setup.objective(hp))  # fmt: skip
    d = result.model.eval()
    with torch.no_grad():
        unfolded = d(val.x)
    saved = setup.final_student(d, hp)
    with torch.no_grad():
        folded = saved(val.x)
    torch.testing.assert_close(folded, unfolded, atol=1e-5, rtol=0)
    assert count_parameters(saved) == count_parameters(build_model(student, (40,), 10))
    assert all(p.grad is None for p in teacher.parameters())
