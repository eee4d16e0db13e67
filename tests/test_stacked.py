"""Stacked trials compute what the same trials compute one by one."""

import pytest
import torch

from kdflow.engine import TrainConfig, fit, kd_objective, predict_logits
from kdflow.models import build_model
from kdflow.stacked import can_stack, fit_stacked, stack, unstack

SPECS = [{"family": "cnn1d", "channels": 4, "layers": 2}, {"family": "mlp", "hidden": [16, 8]}]


def members(spec, k, seed=0):
    out = []
    for _ in range(k):
        torch.manual_seed(seed)  # every trial starts from the training seed's init, as in run_study
        out.append(build_model(spec, (40,), 10))
    return out


@pytest.mark.parametrize("spec", SPECS, ids=["cnn1d", "mlp"])
def test_stacked_forward_equals_each_member(spec, small_splits):
    train, _ = small_splits
    models = [build_model(spec, (40,), 10) for _ in range(3)]  # different weights per member
    stacked = stack(models)
    out = stacked(train.x[:32])  # (K, B, C)
    for k, m in enumerate(models):
        assert torch.allclose(out[k], m(train.x[:32]), atol=1e-5)
        back = unstack(stacked, k, build_model(spec, (40,), 10))
        assert torch.allclose(back(train.x[:32]), m.eval()(train.x[:32]), atol=1e-5)


@pytest.mark.parametrize("spec", SPECS, ids=["cnn1d", "mlp"])
def test_stacked_fit_matches_sequential_fits(spec, small_splits):
    train, val = small_splits
    cfg = TrainConfig(epochs=3, batch_size=64, seed=0)
    torch.manual_seed(1)
    teacher_logits = predict_logits(build_model(SPECS[0], (40,), 10), train.x) * 3
    temps, alphas = torch.tensor([1.5, 4.0, 10.0]), torch.tensor([0.2, 0.5, 0.9])

    stacked = stack(members(spec, 3))
    results = fit_stacked(stacked, train, val, cfg, teacher_logits, temps, alphas)
    for k in range(3):
        seq = fit(
            members(spec, 1)[0],
            train,
            val,
            cfg,
            kd_objective(teacher_logits, temps[k].item(), alphas[k].item()),
        )
        assert results[k].best_val_acc == pytest.approx(seq.best_val_acc, abs=0.0051)  # <= one sample in 200
        assert results[k].stopped == "" and results[k].epochs_run == 3
        last = seq.history[-1]["val_acc"]
        member = unstack(stacked, k, build_model(spec, (40,), 10))
        acc = (predict_logits(member, val.x).argmax(1) == val.y).float().mean().item()
        assert acc == pytest.approx(last, abs=0.0051)


def test_pruned_member_stops_and_others_continue(small_splits):
    train, val = small_splits
    cfg = TrainConfig(epochs=4, batch_size=64, seed=0)
    logits = torch.randn(len(train), 10)
    seen = []

    def on_epoch(epoch, metrics, live):
        seen.append((epoch, list(live)))
        return {1: "pruned at epoch 2"} if epoch == 2 else {}

    stacked = stack(members(SPECS[1], 3))
    before = stacked.member_state(1)["head.weight"].clone()
    res = fit_stacked(
        stacked, train, val, cfg, logits, torch.tensor([2.0] * 3), torch.tensor([0.5] * 3), on_epoch
    )
    assert seen == [(1, [0, 1, 2]), (2, [0, 1, 2]), (3, [0, 2]), (4, [0, 2])]
    assert res[1].stopped == "pruned at epoch 2" and res[1].epochs_run == 2
    assert res[0].epochs_run == 4 and res[0].stopped == ""
    assert not torch.equal(before, stacked.member_state(1)["head.weight"])  # it did learn for 2 epochs


def test_diverging_member_is_stopped_with_its_reason(small_splits):
    train, val = small_splits
    cfg = TrainConfig(epochs=3, batch_size=64, seed=0)
    logits = torch.randn(len(train), 10)
    logits[0, 0] = float("nan")  # a poisoned teacher output reaches every member's KD term ...
    alphas = torch.tensor([0.5, 0.0])  # ... but alpha=0 still multiplies it: nan * 0 = nan
    res = fit_stacked(stack(members(SPECS[1], 2)), train, val, cfg, logits, torch.tensor([2.0, 2.0]), alphas)
    assert all("training loss became nan at epoch 1" in r.stopped for r in res)


def test_only_mlp_and_cnn1d_stack():
    assert can_stack(build_model(SPECS[0], (40,), 10)) and can_stack(build_model(SPECS[1], (40,), 10))
    assert not can_stack(build_model({"family": "cnn2d", "channels": 4, "layers": 1}, (3, 8, 8), 10))
