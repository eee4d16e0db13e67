"""DKD and DIST against computations written out by hand: plain loops over samples and classes,
in float64 NumPy, on small made-up logits."""

import math

import numpy as np
import pytest
import torch

from kdflow.methods.base import Batch, kd_term
from kdflow.methods.dist import DIST
from kdflow.methods.dkd import DKD

S = np.array(
    [
        [2.0, 0.5, -1.0, 0.3, 1.1],
        [0.1, 0.2, 3.0, -0.7, 0.0],
        [-1.2, 1.7, 0.4, 0.9, -0.3],
        [0.6, -0.4, 0.2, 2.2, 1.0],
    ]
)
T_LOGITS = np.array(
    [
        [3.5, 1.0, -0.5, 0.0, 0.2],
        [-1.0, 0.0, 4.0, 0.5, -0.2],
        [0.3, 2.5, -0.8, 1.4, 0.1],
        [1.0, 0.2, -1.5, 3.0, 0.4],
    ]
)
Y = np.array([0, 2, 3, 3])  # sample 2's label is not the teacher's top class
REL = 1e-4  # the losses compute in float32, the hand versions in float64 (KL of near distributions)


def softmax(row):
    e = [math.exp(v - max(row)) for v in row]
    return [v / sum(e) for v in e]


def kl(q, p):
    return sum(qi * math.log(qi / pi) for qi, pi in zip(q, p, strict=True) if qi > 0)


def zscore(row):  # unbiased std, as torch.std and logit-standardization-KD's `normalize`
    mean = sum(row) / len(row)
    std = math.sqrt(sum((v - mean) ** 2 for v in row) / (len(row) - 1))
    return [(v - mean) / (std + 1e-7) for v in row]


def hand_ce(s, y):
    return -sum(math.log(softmax(list(row))[label]) for row, label in zip(s, y, strict=True)) / len(y)


def hand_dkd(s, t, y, temp):
    """(TCKD, NCKD): per sample, target-vs-rest binary KL and the KL of the non-target
    probabilities renormalised, T^2-scaled and averaged over the batch."""
    tckd = nckd = 0.0
    for s_row, t_row, label in zip(s, t, y, strict=True):
        p_s, p_t = softmax([v / temp for v in s_row]), softmax([v / temp for v in t_row])
        rest = [j for j in range(len(s_row)) if j != label]
        rest_s, rest_t = sum(p_s[j] for j in rest), sum(p_t[j] for j in rest)  # not 1 - p: rounds
        tckd += kl([p_t[label], rest_t], [p_s[label], rest_s])
        q_s = [p_s[j] / rest_s for j in rest]
        q_t = [p_t[j] / rest_t for j in rest]
        nckd += kl(q_t, q_s)
    return temp**2 * tckd / len(y), temp**2 * nckd / len(y)


def pearson(a, b, eps=1e-8):  # cosine of the centred vectors, eps on the norms' product
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    num = sum((x - ma) * (z - mb) for x, z in zip(a, b, strict=True))
    na = math.sqrt(sum((x - ma) ** 2 for x in a))
    nb = math.sqrt(sum((z - mb) ** 2 for z in b))
    return num / (na * nb + eps)


def hand_dist(s, t, temp):
    """(inter, intra): 1 - mean Pearson over samples (rows), then over classes (columns) of
    softmax(z / tau), each tau^2-scaled."""
    p_s = [softmax([v / temp for v in row]) for row in s]
    p_t = [softmax([v / temp for v in row]) for row in t]
    inter = 1 - sum(pearson(a, b) for a, b in zip(p_s, p_t, strict=True)) / len(p_s)
    classes = range(len(p_s[0]))
    cols = [([r[c] for r in p_s], [r[c] for r in p_t]) for c in classes]
    intra = 1 - sum(pearson(a, b) for a, b in cols) / len(cols)
    return temp**2 * inter, temp**2 * intra


def batch(s=S, t=T_LOGITS, y=Y, epoch=1, **kw):
    s, t = torch.as_tensor(s, dtype=torch.float32), torch.as_tensor(t, dtype=torch.float32)
    return Batch(s, t, torch.as_tensor(y), torch.arange(len(y)), epoch=epoch, **kw)


# --- DKD ---


def test_dkd_defaults_are_mdistillers():
    hp = DKD().resolve()
    assert hp == {
        "ce_weight": 1.0,
        "alpha": 1.0,
        "beta": 8.0,
        "temperature": 4.0,
        "warmup": 20,
        "logit_std": False,
    }
    for name in DKD.tune:
        p = DKD.params[name]
        assert p.tunable and p.low <= p.default <= p.high, name


@pytest.mark.parametrize(
    "temp,alpha,beta,ce_weight,epoch,warmup,factor",
    [
        (4.0, 1.0, 8.0, 1.0, 1, 20, 1 / 20),  # the first epoch of warm-up
        (4.0, 1.0, 8.0, 1.0, 5, 20, 0.25),
        (4.0, 1.0, 8.0, 1.0, 20, 20, 1.0),  # full weight from epoch == warmup on
        (4.0, 1.0, 8.0, 1.0, 100, 20, 1.0),
        (1.0, 0.5, 2.0, 0.3, 3, 1, 1.0),  # the ImageNet configs' T 1, warm-up 1
        (7.5, 2.0, 6.0, 1.0, 1, 0, 1.0),  # warmup 0: none
    ],
)
def test_dkd_matches_hand_computation(temp, alpha, beta, ce_weight, epoch, warmup, factor):
    hp = {**DKD().resolve(), "temperature": temp, "alpha": alpha, "beta": beta}
    hp |= {"ce_weight": ce_weight, "warmup": warmup}
    parts = DKD().loss(batch(epoch=epoch), hp, None)
    tckd, nckd = hand_dkd(S, T_LOGITS, Y, temp)
    ce = hand_ce(S, Y)
    kd = factor * (alpha * tckd + beta * nckd)
    assert parts["tckd"].item() == pytest.approx(tckd, rel=REL)
    assert parts["nckd"].item() == pytest.approx(nckd, rel=REL)
    assert parts["ce"].item() == pytest.approx(ce, rel=REL)
    assert parts["kd"].item() == pytest.approx(kd, rel=REL)
    assert parts["loss"].item() == pytest.approx(ce_weight * ce + kd, rel=REL)


def test_dkd_logit_std_standardises_both_before_t_and_keeps_ce_raw():
    hp = {**DKD().resolve(), "logit_std": True, "temperature": 2.0, "alpha": 9.0, "beta": 72.0}
    parts = DKD().loss(batch(epoch=30), hp, None)
    tckd, nckd = hand_dkd([zscore(r) for r in S], [zscore(r) for r in T_LOGITS], Y, 2.0)
    ce = hand_ce(S, Y)
    assert parts["tckd"].item() == pytest.approx(tckd, rel=REL)
    assert parts["nckd"].item() == pytest.approx(nckd, rel=REL)
    assert parts["ce"].item() == pytest.approx(ce, rel=REL)
    assert parts["loss"].item() == pytest.approx(ce + 9 * tckd + 72 * nckd, rel=REL)


def test_dkd_teacher_equal_to_student_gives_zero_kd_parts():
    parts = DKD().loss(batch(t=S, epoch=50), DKD().resolve(), None)
    assert parts["tckd"].item() == pytest.approx(0.0, abs=1e-6)
    assert parts["nckd"].item() == pytest.approx(0.0, abs=1e-6)
    assert parts["loss"].item() == pytest.approx(hand_ce(S, Y), rel=REL)


def test_dkd_with_unit_weights_per_sample_recombines_into_kd():
    # The paper's identity: KD = TCKD + (1 - p_y^teacher) * NCKD, per sample.
    temp = 3.0
    hp = {**DKD().resolve(), "temperature": temp, "warmup": 0}
    for i in range(len(Y)):
        one = batch(S[i : i + 1], T_LOGITS[i : i + 1], Y[i : i + 1])
        parts = DKD().loss(one, hp, None)
        p_t = softmax([v / temp for v in T_LOGITS[i]])[Y[i]]
        kd = kd_term(one.s_logits, one.t_logits, temp).item()
        assert parts["tckd"].item() + (1 - p_t) * parts["nckd"].item() == pytest.approx(kd, rel=REL)


def test_dkd_stays_finite_where_a_softmax_saturates():
    # A gap of 200 at T = 1: the non-target probabilities underflow to 0 in float32, and the log
    # of their sum would be -inf; in log space both parts stay finite.
    s = np.array([[200.0, 0.0, -1.0, 0.5], [0.0, 1.0, 2.0, 3.0]])
    t = np.array([[5.0, 1.0, 0.0, 0.5], [0.0, 1.0, 2.0, 250.0]])
    y = np.array([0, 3])
    hp = {**DKD().resolve(), "temperature": 1.0}
    parts = DKD().loss(batch(s, t, y, epoch=30), hp, None)
    tckd, nckd = hand_dkd(s, t, y, 1.0)
    assert all(torch.isfinite(v).item() for v in parts.values())
    assert parts["tckd"].item() == pytest.approx(tckd, rel=1e-4)
    assert parts["nckd"].item() == pytest.approx(nckd, rel=1e-4)


# --- DIST ---


def test_dist_defaults_are_the_authors_cifar_recipe():
    hp = DIST().resolve()
    # DIST(beta=1, gamma=1) times kd_loss_weight 2, `kd: dist_t4`, ori_loss_weight 1
    assert hp == {"ce_weight": 1.0, "beta": 2.0, "gamma": 2.0, "temperature": 4.0, "logit_std": False}
    for name in DIST.tune:
        p = DIST.params[name]
        assert p.tunable and p.low <= p.default <= p.high, name


@pytest.mark.parametrize(
    "temp,beta,gamma,ce_weight", [(1.0, 1.0, 1.0, 1.0), (4.0, 2.0, 2.0, 1.0), (2.5, 0.5, 3.0, 0.2)]
)
def test_dist_matches_hand_computation(temp, beta, gamma, ce_weight):
    hp = {**DIST().resolve(), "temperature": temp, "beta": beta, "gamma": gamma, "ce_weight": ce_weight}
    parts = DIST().loss(batch(), hp, None)
    inter, intra = hand_dist(S, T_LOGITS, temp)
    ce = hand_ce(S, Y)
    assert parts["inter"].item() == pytest.approx(inter, rel=REL)
    assert parts["intra"].item() == pytest.approx(intra, rel=REL)
    assert parts["ce"].item() == pytest.approx(ce, rel=REL)
    assert parts["kd"].item() == pytest.approx(beta * inter + gamma * intra, rel=REL)
    assert parts["loss"].item() == pytest.approx(ce_weight * ce + beta * inter + gamma * intra, rel=REL)


def test_dist_is_unchanged_by_reordering_samples_or_classes_in_both():
    rows, cols = [2, 0, 3, 1], [4, 1, 0, 3, 2]
    hp = DIST().resolve()
    parts = DIST().loss(batch(), hp, None)
    moved = DIST().loss(batch(S[rows][:, cols], T_LOGITS[rows][:, cols], Y[rows]), hp, None)
    for name in ("inter", "intra"):
        assert moved[name].item() == pytest.approx(parts[name].item(), rel=REL)


def test_dist_one_sample_batch_has_no_intra_class_relation():
    # Each class's column over a batch of one is a single value: centred, it is zero, so its
    # correlation is 0 and intra is tau^2 with no gradient (as in the authors' code).
    s = torch.tensor(S[:1], dtype=torch.float32, requires_grad=True)
    b = Batch(s, torch.tensor(T_LOGITS[:1], dtype=torch.float32), torch.tensor(Y[:1]), torch.arange(1))
    hp = {**DIST().resolve(), "beta": 0.0}
    parts = DIST().loss(b, hp, None)
    assert parts["intra"].item() == pytest.approx(hp["temperature"] ** 2)
    (parts["loss"] - parts["ce"]).backward()
    assert s.grad.abs().max().item() == 0.0


def test_dist_logit_std_standardises_both_before_tau_and_keeps_ce_raw():
    hp = {**DIST().resolve(), "logit_std": True, "temperature": 2.0}
    parts = DIST().loss(batch(), hp, None)
    inter, intra = hand_dist([zscore(r) for r in S], [zscore(r) for r in T_LOGITS], 2.0)
    ce = hand_ce(S, Y)
    assert parts["inter"].item() == pytest.approx(inter, rel=REL)
    assert parts["intra"].item() == pytest.approx(intra, rel=REL)
    assert parts["loss"].item() == pytest.approx(ce + 2 * inter + 2 * intra, rel=REL)


def test_dist_identical_logits_give_zero():
    parts = DIST().loss(batch(t=S), DIST().resolve(), None)
    # Not exactly 0: the eps leaves 1 - |a|^2 / (|a|^2 + 1e-8), here ~1e-6, times tau^2 = 16
    assert parts["inter"].item() == pytest.approx(0.0, abs=1e-4)
    assert parts["intra"].item() == pytest.approx(0.0, abs=1e-4)
    assert parts["loss"].item() == pytest.approx(hand_ce(S, Y), abs=5e-4)


def test_dist_ignores_a_teacher_that_differs_by_an_affine_map_of_its_probabilities():
    # Pearson is blind to shift and scale: a teacher whose probabilities are an affine map of the
    # student's (here, softened towards uniform) gives zero inter-class loss, though KL would not.
    p = np.array([softmax(list(r)) for r in S])
    flat = 0.5 * p + 0.5 / p.shape[1]
    parts = DIST().loss(batch(t=np.log(flat)), {**DIST().resolve(), "temperature": 1.0}, None)
    assert parts["inter"].item() == pytest.approx(0.0, abs=1e-5)
    assert kd_term(torch.tensor(S), torch.tensor(np.log(flat)), 1.0).item() > 1e-2


# --- both ---


@pytest.mark.parametrize("method", [DKD(), DIST()])
@pytest.mark.parametrize("logit_std", [False, True])
def test_gradient_reaches_the_student_and_not_the_teacher(method, logit_std):
    s = torch.tensor(S, dtype=torch.float32, requires_grad=True)
    t = torch.tensor(T_LOGITS, dtype=torch.float32, requires_grad=True)
    b = Batch(s, t, torch.tensor(Y), torch.arange(len(Y)), epoch=30)
    parts = method.loss(b, {**method.resolve(), "logit_std": logit_std}, None)
    parts["loss"].backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None  # the teacher is detached inside the loss


@pytest.mark.parametrize("method", [DKD(), DIST()])
def test_parts_are_float32_scalars_whatever_the_logits_dtype(method):
    b = batch(epoch=30)
    b.s_logits, b.t_logits = b.s_logits.bfloat16(), b.t_logits.bfloat16()
    parts = method.loss(b, method.resolve(), None)
    for name, value in parts.items():
        assert value.dtype == torch.float32 and value.shape == (), name


# ---------------------------------------------------------------- noisy teacher (Sau & Balasubramanian)


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.8, 1.0])
def test_noisy_teacher_touches_the_stated_fraction_and_is_seeded(fraction):
    from kdflow.methods.noisy import perturb

    t = torch.randn(40, 10) + 3
    torch.manual_seed(11)
    noisy, mask = perturb(t, fraction, 0.3)
    assert int(mask.sum()) == round(fraction * 40)
    assert torch.equal(noisy[~mask], t[~mask])  # the others are left exactly as they were
    assert (noisy[mask] != t[mask]).all()
    torch.manual_seed(11)  # the same draws: which samples, then the noise
    chosen = torch.randperm(40)[: round(fraction * 40)]
    xi = torch.randn(40, 10)
    want = t.clone()
    want[chosen] = t[chosen] * (1 + 0.3 * xi[chosen])  # multiplicative, as KD_Lib's add_noise
    torch.testing.assert_close(noisy, want)
    torch.manual_seed(11)
    again, _ = perturb(t, fraction, 0.3)
    assert torch.equal(again, noisy)  # seeded: a resumed job draws the same noise


def test_noisy_teacher_loss_is_kd_on_the_perturbed_logits_by_hand():
    from kdflow.methods.noisy import NoisyKD, perturb

    method = NoisyKD()
    hp = method.resolve({"temperature": 2.0, "alpha": 0.7, "noise_fraction": 0.5})
    rng = np.random.default_rng(4)
    s, t = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    y = np.array([0, 1, 2, 3, 0, 1])
    b = Batch(torch.tensor(s), torch.tensor(t), torch.tensor(y), torch.arange(6))
    torch.manual_seed(5)
    got = method.loss(b, hp, None)["loss"].item()
    torch.manual_seed(5)
    tn = perturb(torch.tensor(t).float(), 0.5, hp["noise_std"])[0].double().numpy()

    def log_softmax(z):
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    ce = -log_softmax(s)[np.arange(6), y].mean()
    p = np.exp(log_softmax(tn / 2))
    kl = (p * (np.log(p) - log_softmax(s / 2))).sum(1).mean()
    assert got == pytest.approx(0.3 * ce + 0.7 * 4 * kl, rel=1e-6)
    torch.manual_seed(5)
    plain = method.loss(b, {**hp, "noise_fraction": 0.0}, None)["loss"].item()
    kd = (
        0.3 * ce
        + 0.7 * 4 * (np.exp(log_softmax(t / 2)) * (log_softmax(t / 2) - log_softmax(s / 2))).sum(1).mean()
    )
    assert plain == pytest.approx(kd, rel=1e-6)  # no sample touched: exactly kd
