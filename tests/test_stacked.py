"""Stacked trials compute what the same trials compute one by one, whichever of them stop early."""

import pytest
import torch

from kdflow.engine import TrainConfig, fit, kd_objective, predict_logits
from kdflow.models import build_model
from kdflow.stacked import can_stack, fit_stacked, keep_members, stack, unstack

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
        seen.append((epoch, list(live), sorted(metrics)))
        if epoch == 2:
            learned.append(not torch.equal(before, stacked.member_state(1)["head.weight"]))
            return {1: "pruned at epoch 2"}
        return {}

    stacked, learned = stack(members(SPECS[1], 3)), []
    before = stacked.member_state(1)["head.weight"].clone()
    res = fit_stacked(
        stacked, train, val, cfg, logits, torch.tensor([2.0] * 3), torch.tensor([0.5] * 3), on_epoch
    )
    assert seen == [
        (1, [0, 1, 2], [0, 1, 2]),
        (2, [0, 1, 2], [0, 1, 2]),
        (3, [0, 2], [0, 2]),
        (4, [0, 2], [0, 2]),
    ]
    assert res[1].stopped == "pruned at epoch 2" and res[1].epochs_run == 2
    assert res[0].epochs_run == 4 and res[0].stopped == ""
    assert learned == [True]  # it did learn for 2 epochs


def run_with_stops(spec, splits, stops: dict[int, dict[int, str]], optimizer="adamw"):
    """A stack of 4 (differing temperatures and alphas) fitted for 4 epochs; `stops` says which
    members on_epoch stops at which epoch. Returns (results, {(epoch, member): metrics}, stacked)."""
    train, val = splits
    cfg = TrainConfig(epochs=4, batch_size=64, seed=0, optimizer=optimizer)
    torch.manual_seed(1)
    teacher_logits = predict_logits(build_model(SPECS[0], (40,), 10), train.x) * 3
    stacked, seen = stack(members(spec, 4)), {}

    def on_epoch(epoch, metrics, live):
        seen.update({(epoch, m): metrics[m] for m in live})
        return stops.get(epoch, {})

    torch.manual_seed(5)  # dropout's masks
    temps, alphas = torch.tensor([1.5, 4.0, 10.0, 2.0]), torch.tensor([0.2, 0.5, 0.9, 0.7])
    results = fit_stacked(stacked, train, val, cfg, teacher_logits, temps, alphas, on_epoch)
    return results, seen, stacked


DROPOUT = [{**spec, "dropout": 0.2} for spec in SPECS]


@pytest.mark.parametrize(
    "spec, optimizer",
    [(SPECS[0], "adamw"), (SPECS[1], "sgd"), (DROPOUT[0], "sgd"), (DROPOUT[1], "adamw")],
    ids=["cnn1d-adamw", "mlp-sgd", "cnn1d-dropout-sgd", "mlp-dropout-adamw"],
)
def test_stopping_members_leaves_the_others_as_they_were(spec, optimizer, small_splits):
    """On CPU here the live members' metrics come out equal to the bit; the tolerances allow for
    float summation order (a stack of one is an ungrouped conv). Dropout drawn per stack size
    instead would move train_loss by ~1e-2."""
    full, full_seen, full_stack = run_with_stops(spec, small_splits, {}, optimizer)
    stops = {2: {1: "pruned", 3: "pruned"}, 3: {2: "pruned"}}  # 4 members, then 2, then 1
    part, part_seen, part_stack = run_with_stops(spec, small_splits, stops, optimizer)

    assert [r.stopped for r in part] == ["", "pruned", "pruned", "pruned"]
    assert [r.epochs_run for r in part] == [4, 2, 3, 2] and part_stack.members == [0]
    assert len(part_seen) == 4 + 4 + 2 + 1 and part_seen.keys() <= full_seen.keys()
    for key, got in part_seen.items():
        assert got["val_acc"] == pytest.approx(full_seen[key]["val_acc"], abs=0.0051), key  # one sample
        assert got["train_loss"] == pytest.approx(full_seen[key]["train_loss"], rel=1e-5), key
    for m, r in enumerate(part):
        best = max(full_seen[e, m]["val_acc"] for e in range(1, r.epochs_run + 1))
        assert r.best_val_acc == pytest.approx(best, abs=0.0051), m
    val = small_splits[1].x
    a, b = (
        predict_logits(unstack(s, 0, build_model(spec, (40,), 10)), val) for s in (full_stack, part_stack)
    )
    assert torch.allclose(a, b, atol=1e-3)


@pytest.mark.parametrize("spec", SPECS, ids=["cnn1d", "mlp"])
def test_stopped_members_leave_the_stacked_model_and_its_optimizer(spec, small_splits):
    train, _ = small_splits
    stacked = stack(members(spec, 4))
    opt = torch.optim.AdamW(stacked.parameters(), 1e-3)
    stacked(train.x[:32]).sum().backward()
    opt.step()
    moments = {name: opt.state[p]["exp_avg"].clone() for name, p in stacked.named_parameters()}
    kept = {m: stacked.member_state(m) for m in (1, 3)}

    keep_members(stacked, [1, 3], opt)

    assert stacked.members == [1, 3]
    assert all(torch.equal(stacked.member_state(m)[n], t) for m in kept for n, t in kept[m].items())
    with pytest.raises(ValueError):
        stacked.member_state(0)
    assert stacked(train.x[:32]).shape == (2, 32, 10)
    params = list(stacked.parameters())
    assert opt.param_groups[0]["params"] == params and set(opt.state) == set(params)
    for name, p in stacked.named_parameters():  # each holds a block of rows per member, now 2 of 4
        assert p.numel() * 2 == moments[name].numel(), name
        assert torch.equal(opt.state[p]["exp_avg"].flatten(), moments[name].reshape(4, -1)[[1, 3]].flatten())


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
