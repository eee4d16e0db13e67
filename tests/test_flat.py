"""Flat parameters: kdflow.optim's step over one buffer gives torch's per-tensor optimizer's weights."""

import pytest
import torch
from torch import nn

from kdflow.checkpoint import save_model
from kdflow.engine import (
    TrainConfig,
    epoch_permutation,
    fit,
    make_flat_optimizer,
    make_optimizer,
    make_scheduler,
    scratch_objective,
)
from kdflow.flat import FlatParameters
from kdflow.losses import ce_loss, kd_loss
from kdflow.models import build_model

SPEC = {"family": "cnn1d", "channels": 8, "layers": 2}  # conv, batch norm and linear tensors


def new_model():
    torch.manual_seed(0)
    return build_model(SPEC, (40,), 10)


def train_steps(model, opt, before_step=lambda: None, steps=25):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(512, 40, generator=g), torch.randint(0, 10, (512,), generator=g)
    t = torch.randn(512, 10, generator=g)  # teacher logits
    for _ in range(steps):
        idx = torch.randperm(512, generator=g)[:128]
        loss = kd_loss(model(x[idx]), t[idx], y[idx], 4.0, 0.7)["loss"]
        opt.zero_grad()
        loss.backward()
        before_step()
        opt.step()
    return model.state_dict()


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_flat_steps_give_the_per_tensor_optimizers_weights_bit_for_bit(optimizer):
    cfg = TrainConfig(optimizer=optimizer, weight_decay=1e-3)
    per_tensor = new_model()
    expected = train_steps(per_tensor, make_optimizer(per_tensor.parameters(), cfg))
    model = new_model()
    flat = FlatParameters(model)
    got = train_steps(model, make_flat_optimizer(flat.param, cfg), flat.collect_grads)
    assert expected.keys() == got.keys()
    for k in expected:
        assert torch.equal(expected[k], got[k]), k
    assert not torch.equal(got["head.weight"], new_model().state_dict()["head.weight"])  # it trained


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_fit_ends_with_the_weights_of_torchs_per_tensor_optimizer_and_schedule(small_splits, optimizer):
    """fit's whole update (flat buffer, kdflow.optim, cosine schedule per epoch) against the loop
    with torch.optim per tensor; without validation fit keeps the last epoch's weights."""
    train, _ = small_splits
    cfg = TrainConfig(epochs=4, batch_size=64, optimizer=optimizer, weight_decay=1e-3, seed=3)
    result = fit(new_model(), train, None, cfg, scratch_objective())

    model = new_model()
    opt = make_optimizer(model.parameters(), cfg)
    sched = make_scheduler(opt, cfg)
    rates = []
    for epoch in range(1, cfg.epochs + 1):
        perm = epoch_permutation(len(train), cfg.seed, epoch, "cpu")
        for start in range(0, len(train), cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            loss = ce_loss(model(train.x[idx]), train.y[idx])["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        rates.append(opt.param_groups[0]["lr"])
        sched.step()
    expected, got = model.state_dict(), result.model.state_dict()
    for k in expected:
        assert torch.equal(expected[k], got[k]), k
    assert [h["lr"] for h in result.history] == rates


def test_parameters_become_views_of_the_buffer_and_loading_keeps_them():
    model = new_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flat = FlatParameters(model)
    assert flat.param.numel() == sum(p.numel() for p in model.parameters())
    for p in model.parameters():
        assert p.untyped_storage().data_ptr() == flat.param.untyped_storage().data_ptr()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # flattening changes no value
    with torch.no_grad():
        flat.param.zero_()
    assert all(torch.count_nonzero(p) == 0 for p in model.parameters())
    model.load_state_dict(before)  # copies into the views: the buffer sees the loaded values
    assert torch.equal(flat.param, torch.cat([before[k].reshape(-1) for k, _ in model.named_parameters()]))


def test_a_parameter_without_gradient_gets_zeros_and_the_rest_its_own():
    model = nn.ModuleDict({"used": nn.Linear(3, 2), "unused": nn.Linear(2, 2)})
    flat = FlatParameters(model)
    flat.param.grad = torch.full_like(flat.param, 7.0)  # stale values must not survive a collection
    model["used"](torch.ones(4, 3)).sum().backward()
    expected_used = torch.cat([model["used"].weight.grad.reshape(-1), model["used"].bias.grad.reshape(-1)])
    flat.collect_grads()
    n_used = expected_used.numel()
    assert torch.equal(flat.param.grad[:n_used], expected_used)
    assert torch.count_nonzero(flat.param.grad[n_used:]) == 0
    assert all(p.grad is None for p in model.parameters())  # moved: the next backward starts afresh


def test_frozen_parameters_stay_out_and_mixed_dtypes_are_refused():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    model[0].weight.requires_grad_(False)
    flat = FlatParameters(model)
    assert flat.param.numel() == 2 + 2 * 2 + 2  # everything but the frozen weight
    mixed = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2).double())
    with pytest.raises(ValueError, match="one dtype and device"):
        FlatParameters(mixed)


def test_fit_returns_a_model_whose_parameters_moved_from_their_start(small_splits):
    """fit trains through the flat buffer: every tensor of the returned model was updated."""
    train, val = small_splits
    start = dict(new_model().named_parameters())
    result = fit(new_model(), train, val, TrainConfig(epochs=2, batch_size=64), scratch_objective())
    for name, p in result.model.named_parameters():
        assert not torch.equal(p, start[name]), name


def test_a_flattened_model_is_saved_to_the_same_bytes_as_an_ordinary_one(tmp_path):
    """Readers record a model file's sha256; how the weights were held must not change the file."""
    plain, flattened = new_model(), new_model()
    FlatParameters(flattened)
    a = save_model(tmp_path / "a.pt", plain, SPEC, (40,), 10)
    b = save_model(tmp_path / "b.pt", flattened, SPEC, (40,), 10)
    assert a == b


def test_channels_last_parameters_keep_their_layout_and_the_per_tensor_weights():
    """A channels_last image model (train.channels_last) stays channels_last once flattened (its
    convolutions keep their kernels) and steps to the per-tensor optimizer's weights bit for bit."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 3, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)
    x = x.contiguous(memory_format=torch.channels_last)

    def model():
        torch.manual_seed(0)
        return build_model({"family": "resnet8"}, (3, 8, 8), 10).to(memory_format=torch.channels_last)

    def steps(m, opt, before_step=lambda: None):
        for _ in range(5):
            loss = ce_loss(m(x), y)["loss"]
            opt.zero_grad()
            loss.backward()
            before_step()
            opt.step()
        return m.state_dict()

    cfg = TrainConfig(optimizer="sgd", lr=0.05, weight_decay=5e-4, nesterov=False)
    per_tensor = model()
    expected = steps(per_tensor, make_optimizer(per_tensor.parameters(), cfg))
    flat_model = model()
    flat = FlatParameters(flat_model)
    convs = [p for p in flat_model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not any(p.is_contiguous() for p in convs if p.shape[2] > 1)  # 3x3 kernels: NHWC, not NCHW
    got = steps(flat_model, make_flat_optimizer(flat.param, cfg), flat.collect_grads)
    for k in expected:
        assert torch.equal(expected[k], got[k]), k
    assert all(p.untyped_storage().data_ptr() == flat.param.untyped_storage().data_ptr() for p in convs)
