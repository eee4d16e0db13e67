"""kdflow.optim: torch's AdamW, SGD and cosine schedule, bit for bit, without importing torch._dynamo."""

import math
import subprocess
import sys

import pytest
import torch

from kdflow import optim
from kdflow.engine import (
    TrainConfig,
    make_flat_optimizer,
    make_flat_scheduler,
    make_optimizer,
    make_scheduler,
)

WEIGHT_DECAY = 1e-2  # large enough that a wrongly placed decay term shows in the weights


def start_weights():
    return torch.randn(1000, generator=torch.Generator().manual_seed(0))


def gradients(steps):
    g = torch.Generator().manual_seed(1)
    return [
        torch.randn(1000, generator=g) * 10 ** torch.randint(-4, 2, (1,), generator=g) for _ in range(steps)
    ]


def run(opt, param, grads, new_lr=lambda step: None):
    """Steps `opt` over `grads`, changing the rate where new_lr says so (as a schedule would)."""
    for i, grad in enumerate(grads):
        opt.zero_grad()
        param.grad = grad.clone()
        opt.step()
        if (lr := new_lr(i)) is not None:
            if isinstance(opt, torch.optim.Optimizer):
                opt.param_groups[0]["lr"] = lr
            else:
                opt.lr = lr
    return param.detach().clone()


def decayed_lr(step):
    """Every 10 steps a new rate: the step must read the current one, not the first."""
    return 3e-3 * 0.9 ** (step // 10) if step % 10 == 9 else None


@pytest.mark.parametrize("optimizer, nesterov", [("adamw", True), ("sgd", True), ("sgd", False)])
def test_steps_equal_torchs_optimizer_bit_for_bit(optimizer, nesterov):
    cfg = TrainConfig(optimizer=optimizer, lr=3e-3, weight_decay=WEIGHT_DECAY, nesterov=nesterov)
    grads = gradients(50)
    ref = torch.nn.Parameter(start_weights())
    expected = run(make_optimizer([ref], cfg), ref, grads, decayed_lr)
    param = torch.nn.Parameter(start_weights())
    got = run(make_flat_optimizer(param, cfg), param, grads, decayed_lr)
    assert torch.equal(got, expected)
    assert not torch.equal(got, start_weights())


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_state_dict_resumes_the_same_trajectory(optimizer):
    cfg = TrainConfig(optimizer=optimizer, weight_decay=WEIGHT_DECAY)
    grads = gradients(30)
    param = torch.nn.Parameter(start_weights())
    straight = run(make_flat_optimizer(param, cfg), param, grads)

    param = torch.nn.Parameter(start_weights())
    first = make_flat_optimizer(param, cfg)
    run(first, param, grads[:12])
    saved = {k: v.clone() if torch.is_tensor(v) else v for k, v in first.state_dict().items()}
    resumed = make_flat_optimizer(param, cfg)
    resumed.load_state_dict(saved)
    assert torch.equal(run(resumed, param, grads[12:]), straight)


def test_a_step_without_gradient_changes_nothing():
    param = torch.nn.Parameter(start_weights())
    opt = optim.AdamW(param, 1e-3, weight_decay=WEIGHT_DECAY)
    opt.step()
    assert opt.steps == 0 and torch.equal(param, start_weights())


def lr_schedule(cfg, steps):
    """The rates fit would use over `steps` epochs with the flat optimizer and its schedule."""
    opt = make_flat_optimizer(torch.nn.Parameter(torch.zeros(1)), cfg)
    sched = make_flat_scheduler(opt, cfg)
    rates = []
    for _ in range(steps):
        rates.append(opt.lr)
        sched.step()
    return rates, opt, sched


@pytest.mark.parametrize("epochs, steps", [(200, 200), (7, 40)])  # 7: past the minimum it restarts
def test_cosine_rates_are_torchs_floats(epochs, steps):
    cfg = TrainConfig(epochs=epochs, lr=3e-3)
    torch_opt = make_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    torch_sched = make_scheduler(torch_opt, cfg)
    expected = []
    for _ in range(steps):
        expected.append(torch_opt.param_groups[0]["lr"])
        torch_opt.step()  # no gradient, no change: torch warns if the schedule steps first
        torch_sched.step()
    assert lr_schedule(cfg, steps)[0] == expected  # floats compared with ==: no tolerance
    closed_form = [cfg.lr * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]
    assert closed_form != expected[:epochs]  # the recursion is what makes them equal


def resumed_rates(cfg, at, steps):
    """The rates of `steps` epochs after a schedule saved at epoch `at` is loaded into a fresh one."""
    _, opt, sched = lr_schedule(cfg, at)
    resumed_opt = make_flat_optimizer(torch.nn.Parameter(torch.zeros(1)), cfg)
    resumed_sched = make_flat_scheduler(resumed_opt, cfg)
    resumed_opt.load_state_dict(opt.state_dict())
    resumed_sched.load_state_dict(sched.state_dict())
    rates = []
    for _ in range(steps):
        rates.append(resumed_opt.lr)
        resumed_sched.step()
    return rates


def test_cosine_resumes_from_its_state_and_constant_stays():
    cfg = TrainConfig(epochs=10, lr=1e-2)
    straight, _, _ = lr_schedule(cfg, 10)
    assert resumed_rates(cfg, 4, 6) == straight[4:]
    assert lr_schedule(TrainConfig(scheduler="constant", lr=0.1), 5)[0] == [0.1] * 5


def torch_rates(cfg, steps):
    torch_opt = make_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    torch_sched = make_scheduler(torch_opt, cfg)
    rates = []
    for _ in range(steps):
        rates.append(torch_opt.param_groups[0]["lr"])
        torch_opt.step()
        torch_sched.step()
    return rates


def test_multistep_with_warmup_is_repdistillers_schedule_and_torchs_floats():
    # RepDistiller's CIFAR-100 recipe, scaled down: 24 epochs, x0.1 after 15, 18 and 21 (of 240:
    # 150, 180, 210), plus a 3-epoch linear warm-up
    cfg = TrainConfig(
        epochs=24, lr=0.05, optimizer="sgd", scheduler="multistep", milestones=(15, 18, 21), warmup_epochs=3
    )
    rates, _, _ = lr_schedule(cfg, 24)
    assert rates == torch_rates(cfg, 24)  # torch's LambdaLR with the same factor: the same floats
    hand = [0.05 * (e + 1) / 3 for e in range(3)] + [0.05] * 12 + [0.05 * 0.1] * 3 + [0.05 * 0.01] * 3
    hand += [0.05 * 0.1**3] * 3
    assert rates == pytest.approx(hand, rel=1e-12)
    without = lr_schedule(TrainConfig(epochs=6, lr=1.0, scheduler="multistep", milestones=(2, 4)), 6)[0]
    assert without == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01], rel=1e-12)


def test_warmup_on_cosine_and_its_resume():
    cfg = TrainConfig(epochs=10, lr=0.1, warmup_epochs=4)
    straight, _, _ = lr_schedule(cfg, 10)
    assert straight == torch_rates(cfg, 10)
    cosine = [0.1 * (1 + math.cos(math.pi * e / 10)) / 2 for e in range(10)]
    assert straight == pytest.approx([c * min(1, (e + 1) / 4) for e, c in enumerate(cosine)], rel=1e-12)
    assert resumed_rates(cfg, 4, 6) == straight[4:]


FIT_WITHOUT_DYNAMO = """
import sys, torch
from kdflow.data import Split
from kdflow.engine import TrainConfig, fit, scratch_objective
from kdflow.models import build_model
torch.manual_seed(0)
x, y = torch.randn(64, 40), torch.randint(0, 10, (64,))
for opt in ("adamw", "sgd"):
    cfg = TrainConfig(epochs=2, batch_size=32, optimizer=opt, compile=False)
    fit(build_model({"family": "mlp", "hidden": [8]}, (40,), 10), Split(x, y), Split(x, y), cfg,
        scratch_objective())
print("torch._dynamo" in sys.modules)
"""


def test_a_fit_does_not_import_torch_dynamo():
    """In a fresh process: this test session's other imports must not hide one made by fit."""
    out = subprocess.run(
        [sys.executable, "-c", FIT_WITHOUT_DYNAMO], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False"]
