"""Every registered method, on real models: where gradients go, what is saved, exact resume.

The per-method loss values are checked against independent computations in
test_methods_logit.py, test_methods_feature.py and test_methods_modules.py.
"""

import pytest
import torch
from test_engine import StopAt  # a job killed right after an epoch's checkpoint

from kdflow.distillation import DistillSetup
from kdflow.engine import TrainConfig, fit
from kdflow.methods import METHODS
from kdflow.models import build_model, count_parameters

TEACHER = {"family": "cnn1d", "channels": 16, "layers": 3}
STUDENT = {"family": "cnn1d", "channels": 8, "layers": 2, "dropout": 0.2}  # dropout: RNG state matters
CFG = TrainConfig(epochs=4, batch_size=64, seed=0)


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(1)
    return build_model(TEACHER, (40,), 10).eval()


def setup_for(name, teacher, train, hp=None):
    method = METHODS[name]
    if method.feature_kind == "map_same_channels":  # FSP: a deeper teacher of the student's width
        torch.manual_seed(1)
        teacher = build_model({**TEACHER, "channels": STUDENT["channels"]}, (40,), 10).eval()
    hp = method.resolve(hp)
    with torch.no_grad():
        logits = teacher(train.x)
    return DistillSetup.build(method, hp, STUDENT, (40,), 10, teacher, train, logits), hp


def one_step(setup, hp, d, train, stage=None):
    idx = torch.arange(32)
    objective = setup.objective(hp, pretrain_of=d if stage else None)
    model = setup.stage_module(d) if stage else d
    parts = objective(model, train.x[idx], train.y[idx], idx, 25)  # past DKD's warm-up
    parts["loss"].backward()
    return parts


def grads(module):
    return {n: p.grad for n, p in module.named_parameters()}


@pytest.mark.parametrize("name", list(METHODS))
def test_gradients_reach_the_student_and_the_methods_modules_never_the_teacher(name, teacher, small_splits):
    train, _ = small_splits
    setup, hp = setup_for(name, teacher, train)
    d = setup.distiller(hp, 0, len(train))
    parts = one_step(setup, hp, d, train)
    assert torch.isfinite(parts["loss"]) and parts["loss"].requires_grad
    assert all(p.grad is None for p in teacher.parameters())
    assert any(g is not None and g.abs().sum() > 0 for g in grads(d.student).values())
    if METHODS[name].feature_kind is not None and float(hp.get("feat_weight", 0)) > 0:
        used = {n: g for n, g in grads(d.extra).items() if g is not None}
        # every module the main loss uses gets a gradient: all of them, but FT's paraphraser
        # (trained in its own stage) and CRD's bank (buffers, not parameters)
        expected = {n for n in grads(d.extra) if not n.startswith("paraphraser")}
        assert set(used) == expected, name
        assert "feat" in parts and parts["feat"].item() != 0


@pytest.mark.parametrize("name", [n for n, m in METHODS.items() if m.pretrain])
def test_a_pretraining_stage_trains_what_it_names_and_nothing_else(name, teacher, small_splits):
    train, _ = small_splits
    setup, hp = setup_for(name, teacher, train)
    d = setup.distiller(hp, 0, len(train))
    one_step(setup, hp, d, train, stage=True)
    trained = setup.stage_module(d)
    assert any(g is not None and g.abs().sum() > 0 for g in grads(trained).values())
    assert all(p.grad is None for p in teacher.parameters())
    if METHODS[name].pretrain.trains != "student":
        assert all(g is None for g in grads(d.student).values())  # the student is not even run


def test_a_frozen_stage_module_is_left_out_of_the_main_stage(teacher, small_splits):
    train, _ = small_splits
    setup, hp = setup_for("ft", teacher, train)
    state = setup.distiller(hp, 0, len(train)).state_dict()
    d = setup.distiller(hp, 0, len(train), pretrained=state)
    assert not any(p.requires_grad for p in d.extra.paraphraser.parameters())
    assert all(p.requires_grad for p in d.extra.translator.parameters())


@pytest.mark.parametrize("name", list(METHODS))
def test_the_saved_student_is_exactly_a_scratch_model(name, teacher, small_splits):
    train, val = small_splits
    setup, hp = setup_for(name, teacher, train)
    result = fit(
        setup.distiller(hp, 0, len(train)),
        train,
        val,
        TrainConfig(epochs=1, batch_size=128),
        setup.objective(hp),
    )
    student = setup.final_student(result.model, hp)  # diffrep: its branches folded
    torch.manual_seed(0)
    scratch = build_model(STUDENT, (40,), 10)
    assert count_parameters(student) == count_parameters(scratch)
    assert student.state_dict().keys() == scratch.state_dict().keys()
    assert type(student) is type(scratch)


@pytest.mark.parametrize("name", ["crd", "fitnets", "vid", "diffrep", "dml"])
def test_a_killed_distillation_resumes_exactly_modules_and_memory_bank_included(
    name, teacher, small_splits, tmp_path
):
    train, val = small_splits
    # CRD with fewer negatives than samples, so that drawing them uses the RNG a resume must restore
    setup, hp = setup_for(name, teacher, train, {"nce_k": 64} if name == "crd" else None)
    straight = fit(setup.distiller(hp, 0, len(train)), train, val, CFG, setup.objective(hp))
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(
            setup.distiller(hp, 0, len(train)),
            train,
            val,
            CFG,
            setup.objective(hp),
            checkpoint=ckpt,
            callbacks=[StopAt(2)],
        )
    resumed = fit(setup.distiller(hp, 0, len(train)), train, val, CFG, setup.objective(hp), checkpoint=ckpt)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and any(k.startswith("extra.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.history == straight.history


def test_kd_with_logit_standardisation_is_the_soft_term_of_z_scored_logits_and_ce_on_the_raw():
    import math

    from kdflow.methods.base import Batch

    s = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]], dtype=torch.float64)
    t = torch.tensor([[5.0, 1.0, -2.0], [-1.0, 0.0, 4.0]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    T, alpha = 2.0, 0.7

    def z(row):  # Sun et al. 2024: (z - mean) / (unbiased std + 1e-7), per sample
        m = sum(row) / len(row)
        sd = math.sqrt(sum((v - m) ** 2 for v in row) / (len(row) - 1))
        return [(v - m) / (sd + 1e-7) for v in row]

    def softmax(row):
        e = [math.exp(v) for v in row]
        return [v / sum(e) for v in e]

    kl = ce = 0.0
    for i in range(2):
        p_t = softmax([v / T for v in z(t[i].tolist())])
        p_s = softmax([v / T for v in z(s[i].tolist())])
        kl += sum(a * math.log(a / b) for a, b in zip(p_t, p_s)) / 2
        ce += -math.log(softmax(s[i].tolist())[y[i]]) / 2
    hp = METHODS["kd"].resolve({"temperature": T, "alpha": alpha, "logit_std": True})
    parts = METHODS["kd"].loss(Batch(s, t, y, torch.arange(2)), hp, None)
    assert parts["kd"].item() == pytest.approx(T**2 * kl, rel=1e-5)
    assert parts["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert parts["loss"].item() == pytest.approx((1 - alpha) * ce + alpha * T**2 * kl, rel=1e-5)
