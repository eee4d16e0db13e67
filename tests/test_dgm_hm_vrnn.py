"""Helmholtz machine and VRNN of KD4DGM (kdflow.dgm.hm, kdflow.dgm.vrnn): exact likelihood, noise sharing,
distillation losses, and short fits. About 10 s on one core."""

import copy
import itertools
import math

import numpy as np
import pytest
import torch

from kdflow.dgm import hm, vrnn

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only contends


# ---------------- Helmholtz machine ----------------


@pytest.mark.parametrize("hidden, n_gen, n_rec", [(8, 186, 168), (2, 54, 48)])
def test_hm_parameter_counts_match_authors(hidden, n_gen, n_rec):
    # counted by instantiating the authors' HM(arch) (arch 2: dim 8, arch 1: dim 2) with .cuda() removed
    m = hm.HelmholtzMachine(hidden)
    assert sum(p.numel() for p in m.gen.parameters()) == n_gen
    assert sum(p.numel() for p in m.rec.parameters()) == n_rec


def test_old_faithful_rows_and_standardisation():
    raw = hm.load_old_faithful(standardise=False)
    assert raw.shape == (272, 2)
    np.testing.assert_allclose(raw[0], [3.6, 79.0])
    np.testing.assert_allclose(raw[-1], [4.467, 74.0], rtol=1e-6)
    # the constants hard-coded in the authors' compressHM/main.py
    np.testing.assert_allclose(raw.mean(0), [3.48778309, 70.89705882], rtol=1e-6)
    np.testing.assert_allclose(raw.std(0), [1.13927121, 13.56996002], rtol=1e-6)
    y = hm.load_old_faithful()
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(y.std(0), 1.0, rtol=1e-5)


def _brute_force_log_p(m: hm.HelmholtzMachine, y: torch.Tensor) -> torch.Tensor:
    """log p(y) by an explicit loop over the 4^4 latent states with torch.distributions."""
    B, N = torch.distributions.Bernoulli, torch.distributions.Normal
    y1, y2 = y[:, :1], y[:, 1:]
    total = torch.zeros(len(y), dtype=y.dtype)
    states = [torch.tensor(s, dtype=y.dtype) for s in itertools.product((0.0, 1.0), repeat=2)]
    l4 = m.gen["z4"].weight[:, 0]
    for z4, z3, z2, z1 in itertools.product(states, repeat=4):
        lp = B(logits=l4).log_prob(z4).sum() + B(logits=m.gen["z3"](z4)).log_prob(z3).sum()
        lp = lp + N(m.gen["y2"](z3), 0.5).log_prob(y2)[:, 0]
        lp = lp + B(logits=m.gen["z2"](y2)).log_prob(z2).sum(1)
        lp = lp + B(logits=m.gen["z1"](z2)).log_prob(z1).sum() + N(m.gen["y1"](z1), 0.5).log_prob(y1)[:, 0]
        total = total + lp.exp()
    return total.log()


def test_hm_exact_log_likelihood_matches_brute_force():
    torch.manual_seed(0)
    m = hm.HelmholtzMachine(8).double()
    y = torch.randn(6, 2, dtype=torch.float64)
    with torch.no_grad():
        np.testing.assert_allclose(m.log_likelihood(y), _brute_force_log_p(m, y), rtol=1e-10)


def test_hm_density_integrates_to_one():
    torch.manual_seed(1)
    m = hm.HelmholtzMachine(2).double()
    with torch.no_grad():
        states = torch.tensor(list(itertools.product((0.0, 1.0), repeat=2)), dtype=torch.float64)
        mu1, mu2 = m.gen["y1"](states), m.gen["y2"](states)  # every mean y1, y2 can take
        # +-5 units = 10 std of 0.5 beyond any mean: the tails hold < 1e-22 of the mass
        g1 = torch.arange(mu1.min() - 5, mu1.max() + 5, 0.1, dtype=torch.float64)
        g2 = torch.arange(mu2.min() - 5, mu2.max() + 5, 0.1, dtype=torch.float64)
        grid = torch.cartesian_prod(g1, g2)
        mass = m.log_likelihood(grid).exp().sum() * 0.1**2
    # Summing over y1 first, each p(y1 | z1) is a Gaussian, whose grid sum at spacing h = 0.2 std equals
    # its integral to about exp(-2 pi^2 (std/h)^2), far below float64 eps; what is left over y2 is the
    # Gaussian mixture p(y2). So the sum is exact to rounding (seen: |mass - 1| <= 5e-16), and the ReLU
    # kinks of p(z2 | y2) in y2 do not matter: a missing or extra normaliser would be off by O(1).
    assert abs(mass.item() - 1.0) < 1e-9


def test_hm_samples_follow_the_exact_density():
    # sample() and log_likelihood() wire the chain separately: their first two moments must agree
    torch.manual_seed(2)
    m = hm.HelmholtzMachine(8).double()
    with torch.no_grad():
        for p in m.gen.parameters():  # sharpen: at init sigmoid(logit) ~ 1/2 hides a flipped threshold
            p.mul_(2.0)
        y = m.sample(20_000)["y"]  # (n, 2)
        lo, hi = y.min(0).values - 3, y.max(0).values + 3
        grid = torch.cartesian_prod(*(torch.arange(lo[i], hi[i], 0.1, dtype=torch.float64) for i in (0, 1)))
        w = m.log_likelihood(grid).exp() * 0.1**2  # (G,) cell masses
    assert w.sum().item() == pytest.approx(1.0, abs=1e-4)  # the box holds the mass

    def feats(v):  # (n, 2) -> (n, 5): y1, y2, y1 y2, y1^2, y2^2
        return torch.stack([v[:, 0], v[:, 1], v[:, 0] * v[:, 1], v[:, 0] ** 2, v[:, 1] ** 2], 1)

    exact = (w[:, None] * feats(grid)).sum(0)
    f = feats(y)
    se = f.std(0) / math.sqrt(len(y))
    assert ((f.mean(0) - exact).abs() < 5 * se).all(), (f.mean(0), exact, se)


def test_hm_same_noise_same_sample():
    m = hm.HelmholtzMachine(8)
    noise = m.draw_noise(64, torch.Generator().manual_seed(3))
    a, b = m.sample(64, noise), m.sample(64, noise)
    torch.testing.assert_close(a["y"], b["y"])
    for k in hm.BINARY:
        torch.testing.assert_close(a["z"][k], b["z"][k])
        assert set(a["z"][k].unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(m.sample(64)["y"], a["y"])


def test_hm_distill_copy_pays_only_the_entropy_floor():
    torch.manual_seed(4)
    teacher = hm.HelmholtzMachine(8)
    noise = teacher.draw_noise(128)
    copy_ = copy.deepcopy(teacher)
    out = hm.distill_loss(teacher, copy_, 128, noise=noise)
    # BCE(l, sigmoid(l)) is the Bernoulli entropy H(p) = -p log p - (1-p) log(1-p), not 0
    logits = teacher.sample(128, noise)["logits"]
    p = torch.sigmoid(torch.stack([logits[k] for k in hm.BINARY]))
    entropy = -(p * p.log() + (1 - p) * (1 - p).log()).sum() / 128
    assert out["y"].item() == pytest.approx(0.0, abs=1e-10)
    assert out["loss"].item() == pytest.approx(entropy.item(), rel=1e-5)
    # subtracting that floor gives the KL form, zero for a copy
    assert hm.distill_loss(teacher, copy_, 128, kl=True, noise=noise)["loss"].item() == pytest.approx(
        0, abs=1e-5
    )


def test_hm_distill_trains_every_student_conditional():
    torch.manual_seed(5)
    teacher, student = hm.HelmholtzMachine(8), hm.HelmholtzMachine(2)
    out = hm.distill_loss(teacher, student, 64)
    assert out["loss"].item() > out["z"].item() > 0
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.gen.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in student.rec.parameters())


def test_hm_wake_sleep_raises_exact_log_likelihood():
    torch.manual_seed(6)
    y = torch.as_tensor(hm.load_old_faithful())
    m = hm.HelmholtzMachine(8)
    opt_gen, opt_rec = m.make_optimizers()
    with torch.no_grad():
        before = m.log_likelihood(y).mean().item()
    for _ in range(60):
        m.wake_sleep_step(y, opt_gen, opt_rec)
    with torch.no_grad():
        after = m.log_likelihood(y).mean().item()
    # seen: -4.44 -> -2.71 nats; over seeds 6..13 the gain after 60 steps was 0.66 to 1.7
    assert after > before + 0.5, (before, after)


# ---------------- VRNN ----------------


def _small(cell="lstm", **kw):
    return vrnn.VRNN(latent=3, hidden=8, rnn=8, cell=cell, **kw)


def test_vrnn_parameter_counts_match_authors():
    # the authors' VRNN(arch) with x_dim 3, counted by instantiating their class; generative = no encoder
    for (hidden, rnn), total, gen in [
        ((512, 1200), 14_412_227, 13_256_099),
        ((128, 600), 2_416_643, 2_302_691),
    ]:
        m = vrnn.VRNN(x_dim=3, latent=16, hidden=hidden, rnn=rnn)
        assert sum(p.numel() for p in m.parameters()) == total
        assert sum(p.numel() for p in m.generative_parameters()) == gen


def test_gaussian_kl_by_hand():
    # KL(N(0, 1) || N(1, 4)) = log 2 + (1 + 1) / 8 - 1/2
    kl = vrnn.gaussian_kl(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(1.0), torch.tensor(math.log(4)))
    assert kl.item() == pytest.approx(math.log(2) + 0.25 - 0.5, rel=1e-6)
    assert vrnn.gaussian_kl(torch.tensor(0.3), torch.tensor(-1.0), torch.tensor(0.3), torch.tensor(-1.0)) == 0


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_vrnn_same_noise_same_sample_and_forcing_is_consistent(cell):
    torch.manual_seed(7)
    m = _small(cell)
    eps = m.draw_eps(5, 12)
    a, b = m.generate(eps), m.generate(eps)
    torch.testing.assert_close(a["x"], b["x"])
    torch.testing.assert_close(a["x"], a["x_mean"])  # default: no observation noise, as generate(1.0, 0, 1.0)
    assert a["x"].shape == (5, 12, 1) and a["p_mu"].shape == (5, 12, 3)
    # forcing a model on its own generated x replays its own chain
    torch.testing.assert_close(m.generate_forced(a["x"], eps)["x_mean"], a["x_mean"])
    noisy = m.generate(eps, x_noise=torch.ones(5, 12, 1))
    torch.testing.assert_close(noisy["x"], noisy["x_mean"] + 1.0)
    assert m.generate(eps, length=4)["x"].shape == (5, 4, 1)


def test_vrnn_distill_copy_is_zero_and_student_gets_gradients():
    torch.manual_seed(8)
    teacher = _small()
    assert vrnn.distill_loss(teacher, copy.deepcopy(teacher), 6, 10)["loss"].item() == pytest.approx(
        0, abs=1e-7
    )
    student = vrnn.VRNN(latent=3, hidden=4, rnn=5, cell="gru")
    out = vrnn.distill_loss(teacher, student, 6, 10, lam=1e-3)
    assert out["x"].item() > 0 and out["z"].item() > 0
    assert out["loss"].item() == pytest.approx(out["x"].item() + 1e-3 * out["z"].item(), rel=1e-6)
    out["loss"].backward()
    assert all(p.grad is not None for p in student.generative_parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_vrnn_elbo_decreases_with_adam():
    torch.manual_seed(9)
    x = torch.randn(16, 10) * 0.5 + torch.linspace(-1, 1, 10)
    m = _small()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)

    def nelbo():  # same posterior noise each time, so only the parameters change it
        torch.manual_seed(0)
        with torch.no_grad():
            return m.elbo(x)["loss"].item()

    before = nelbo()
    for _ in range(30):
        opt.zero_grad()
        m.elbo(x, beta=0.5)["loss"].backward()
        opt.step()
    assert nelbo() < before - 0.05, (before, nelbo())


def test_vrnn_importance_sampled_nll_is_below_negative_elbo():
    torch.manual_seed(10)
    m = _small().double()
    x = torch.randn(4, 6, dtype=torch.float64)
    k = 256
    with torch.no_grad():
        z, log_q = m.posterior_sample(x, k)
        assert z.shape == (k, 4, 6, 3) and log_q.shape == (k, 4)
        log_w = m.log_joint(x, z) - log_q  # (k, B)
        nll_is = -(torch.logsumexp(log_w, 0) - math.log(k))  # (B,)
        nelbo = m.elbo(x.repeat(k, 1))["nelbo"].view(k, 4)  # analytic-KL bound, k independent draws
    # E_q[log w] is the ELBO: the Monte-Carlo and analytic-KL estimates agree within their noise
    se = (log_w.var(0) / k + nelbo.var(0) / k).sqrt()
    assert ((-log_w.mean(0) - nelbo.mean(0)).abs() < 4 * se).all()
    # log-mean-exp >= mean: -log p_IS lies below the bound, per sequence, up to the bound's noise
    assert (nll_is <= nelbo.mean(0) + 3 * nelbo.std(0) / math.sqrt(k)).all()
    assert nll_is.mean() < nelbo.mean()
