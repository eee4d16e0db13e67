"""The KD loss against a computation written out by hand in NumPy."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdflow.losses import LOSSES, ce_loss, kd_loss

S = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
T_LOGITS = np.array([[1.5, 1.0, -0.5], [-1.0, 0.0, 2.0]])
Y = np.array([0, 2])


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def hand_kd(s, t, y, temp, alpha):
    ce = -np.mean(np.log(softmax(s)[np.arange(len(y)), y]))
    p_t, p_s = softmax(t / temp), softmax(s / temp)
    kl = np.sum(p_t * (np.log(p_t) - np.log(p_s))) / len(y)  # summed over classes, mean over batch
    return (1 - alpha) * ce + alpha * temp**2 * kl, ce, temp**2 * kl


@pytest.mark.parametrize("temp,alpha", [(1.0, 0.0), (1.0, 1.0), (4.0, 0.5), (20.0, 0.9), (0.5, 0.3)])
def test_kd_loss_matches_hand_computation(temp, alpha):
    parts = kd_loss(torch.tensor(S), torch.tensor(T_LOGITS), torch.tensor(Y), temp, alpha)
    loss, ce, kd = hand_kd(S, T_LOGITS, Y, temp, alpha)
    assert parts["loss"].item() == pytest.approx(loss, rel=1e-10)
    assert parts["ce"].item() == pytest.approx(ce, rel=1e-10)
    assert parts["kd"].item() == pytest.approx(kd, rel=1e-10)


def test_kd_term_is_batchmean_not_mean_over_classes():
    # KLDivLoss's default "mean" would divide by batch * classes = 6, not by the batch of 2.
    parts = kd_loss(torch.tensor(S), torch.tensor(T_LOGITS), torch.tensor(Y), 1.0, 1.0)
    p_t, p_s = softmax(T_LOGITS), softmax(S)
    summed = np.sum(p_t * (np.log(p_t) - np.log(p_s)))
    assert parts["kd"].item() == pytest.approx(summed / 2, rel=1e-10)
    assert parts["kd"].item() != pytest.approx(summed / 6, rel=1e-3)


def test_alpha_zero_is_cross_entropy_and_identical_logits_give_zero_kd():
    s, y = torch.tensor(S), torch.tensor(Y)
    assert kd_loss(s, s.clone(), y, 3.0, 0.0)["loss"].item() == pytest.approx(F.cross_entropy(s, y).item())
    assert kd_loss(s, s.clone(), y, 3.0, 1.0)["kd"].item() == pytest.approx(0.0, abs=1e-12)


def test_t_squared_keeps_soft_gradient_scale_comparable_across_temperatures():
    # Without T^2 the soft-term gradient shrinks like 1/T^2 at high T; with it, it stays O(1).
    y = torch.tensor(Y)
    norms = {}
    for temp in (2.0, 8.0, 32.0):
        s = torch.tensor(S, requires_grad=True)
        kd_loss(s, torch.tensor(T_LOGITS), y, temp, 1.0)["loss"].backward()
        norms[temp] = s.grad.norm().item()
    assert max(norms.values()) / min(norms.values()) < 4.0
    assert all(math.isfinite(v) and v > 0 for v in norms.values())


def test_registry_names_scratch_and_kd():
    assert {"scratch": ce_loss, "kd": kd_loss} == LOSSES


def test_stacked_members_each_get_their_own_loss():
    # Three students stacked along a leading dim, each with its own T and alpha, equal three calls.
    rng = np.random.default_rng(0)
    s = torch.tensor(rng.normal(size=(3, 2, 3)))
    temps, alphas = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([0.0, 0.5, 0.9])
    parts = kd_loss(s, torch.tensor(T_LOGITS), torch.tensor(Y), temps, alphas)
    assert parts["loss"].shape == (3,)
    for k in range(3):
        loss, ce, kd = hand_kd(s[k].numpy(), T_LOGITS, Y, temps[k].item(), alphas[k].item())
        assert parts["loss"][k].item() == pytest.approx(loss, rel=1e-10)
        assert parts["kd"][k].item() == pytest.approx(kd, rel=1e-10)


def test_kd_loss_follows_the_logits_device():
    # The meta device stands in for a GPU here: a float T, or per-member (T, alpha) tensors on the
    # host (as kdflow.trials makes them), must meet the logits on their device.
    s, t = torch.zeros(3, 2, 3, device="meta"), torch.zeros(2, 3, device="meta")
    y = torch.zeros(2, dtype=torch.long, device="meta")
    assert kd_loss(s[0], t, y, 4.0, 0.5)["loss"].device.type == "meta"
    parts = kd_loss(s, t, y, torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.1, 0.5, 0.9]))
    assert parts["loss"].device.type == "meta" and parts["loss"].shape == (3,)


def test_kd_loss_is_computed_in_float32_under_bf16_logits():
    """bf16 logits (autocast) must not round T or the softmaxes: the loss equals the fp32 one
    computed on the same (bf16-representable) logits."""
    g = torch.Generator().manual_seed(0)
    s = torch.randn(8, 10, generator=g).to(torch.bfloat16)
    t = torch.randn(8, 10, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    got = kd_loss(s, t, y, 3.3, 0.7)
    want = kd_loss(s.float(), t, y, 3.3, 0.7)
    assert got["loss"].dtype == torch.float32
    assert torch.equal(got["loss"], want["loss"])


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothed_ce_against_the_smoothed_target_written_out(eps):
    """Mueller et al. 2019's label-smoothed teacher: CE against (1 - eps) one-hot + eps / C."""
    rng = np.random.default_rng(3)
    z, y = rng.normal(size=(5, 4)), np.array([0, 3, 1, 1, 2])
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    target = (1 - eps) * np.eye(4)[y] + eps / 4
    want = -(target * logp).sum(1).mean()
    got = ce_loss(torch.tensor(z), torch.tensor(y), eps)["loss"].item()
    assert got == pytest.approx(want, rel=1e-12)
