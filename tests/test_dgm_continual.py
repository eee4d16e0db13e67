"""Continual KD4DGM: the conditional ladder VAE, its distillation loss, its exact-case NLL, the run."""

import copy
import math

import pytest
import torch

from kdflow.dgm.continual import (
    ConditionalLadderVAE,
    conditional_kd4dgm_loss,
    conditional_nll,
    fit_conditional_proposal,
    kl_weight,
    markdown_table,
    old_task_batch,
    run_continual,
    summarise,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only contends


def make(hidden=8, layers=2, latent=3, n_classes=4, seed=0, shape=(1, 2, 3)):
    torch.manual_seed(seed)
    return ConditionalLadderVAE(shape, n_classes, hidden=hidden, layers=layers, latent=latent)


def labels(*ys):
    return torch.tensor(ys, dtype=torch.int64)


# --- the model -----------------------------------------------------------------------------------------


def test_shapes_of_elbo_generate_log_joint_and_posterior():
    vae = make(layers=3, latent=(4, 3, 2))
    x, y = torch.randn(5, 1, 2, 3), labels(0, 1, 2, 3, 0)
    out = vae.elbo(x, y, beta=0.5)
    assert out["loss"].shape == () and {"loss", "recon", "kl", "kl1", "kl3"} <= set(out)
    assert out["loss"].item() == pytest.approx((out["recon"] + 0.5 * out["kl"]).item(), rel=1e-6)
    eps = vae.sample_noise(5)
    assert [e.shape for e in eps] == [(5, 4), (5, 3), (5, 2)]
    gen = vae.generate(eps, y)
    assert gen.x.shape == (5, 1, 2, 3) and [m.shape for m in gen.mu] == [(5, 4), (5, 3)]
    z, log_q = vae.posterior_sample(x, y, 7, torch.Generator().manual_seed(0))
    assert [t.shape for t in z] == [(7, 5, 4), (7, 5, 3), (7, 5, 2)] and log_q.shape == (7, 5)
    assert vae.log_joint(x, z, y).shape == (7, 5)
    assert vae.log_joint(x, [t[0] for t in z], y).shape == (5,)  # one draw, no leading k


def test_the_label_conditions_generation_and_inference():
    vae = make()
    eps = vae.sample_noise(3, torch.Generator().manual_seed(1))
    a, b = vae.generate(eps, labels(0, 0, 0)), vae.generate(eps, labels(1, 1, 1))
    assert not torch.allclose(a.x, b.x) and not torch.allclose(a.mu[0], b.mu[0])
    assert torch.equal(a.x, vae.generate(eps, labels(0, 0, 0)).x)  # same eps, same y: same sample
    assert torch.equal(a.z[-1], b.z[-1])  # the top prior is N(0, I) whatever the label
    x = torch.randn(3, 1, 2, 3)
    za, _ = vae.posterior_sample(x, labels(0, 0, 0), 2, torch.Generator().manual_seed(2))
    zb, _ = vae.posterior_sample(x, labels(2, 2, 2), 2, torch.Generator().manual_seed(2))
    assert not torch.allclose(za[-1], zb[-1])  # the encoder's first block reads y
    assert not torch.allclose(vae.log_joint(x, za, labels(0, 0, 0)), vae.log_joint(x, za, labels(2, 2, 2)))


def test_bad_labels_are_refused_and_none_stays_bound():
    vae = make()
    eps = vae.sample_noise(2)
    for bad in (labels(0, 4), labels(0), torch.tensor([0.0, 1.0]), labels(-1, 0)):
        with pytest.raises(ValueError, match="labels"):
            vae.generate(eps, bad)
    assert vae._onehot is None  # a call leaves no label behind, even one that failed
    with pytest.raises(RuntimeError, match="needs a label"):
        super(ConditionalLadderVAE, vae).generate(eps)  # LadderVAE's own method, no label bound


# --- the conditional distillation loss -----------------------------------------------------------------


def test_distill_loss_zero_for_a_copy_positive_otherwise():
    teacher = make(seed=0)
    eps, y = teacher.sample_noise(6, torch.Generator().manual_seed(1)), labels(0, 1, 0, 1, 1, 0)
    assert conditional_kd4dgm_loss(teacher, copy.deepcopy(teacher), eps, y)["loss"].item() == 0.0
    student = make(hidden=4, seed=1)
    parts = conditional_kd4dgm_loss(teacher, student, eps, y, lam=0.3)
    assert parts["output"] > 0 and parts["latent"] > 0 and set(parts) == {"loss", "output", "latent", "w2_1"}
    assert parts["loss"].item() == pytest.approx((parts["output"] + 0.3 * parts["latent"]).item())
    other = conditional_kd4dgm_loss(teacher, student, eps, labels(2, 3, 2, 3, 3, 2), lam=0.3)
    assert other["loss"].item() != pytest.approx(parts["loss"].item())  # the labels are shared and read
    parts["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in student.encoder.parameters())  # generation never uses the encoder


def test_distill_terms_by_hand():
    teacher, student = make(seed=0, shape=(3,)), make(hidden=4, seed=1, shape=(3,))
    eps, y = teacher.sample_noise(2, torch.Generator().manual_seed(4)), labels(3, 1)
    parts = conditional_kd4dgm_loss(teacher, student, eps, y, lam=0.1)
    gt, gs = teacher.generate(eps, y), student.generate(eps, y)
    std2 = teacher.decoder_std**2
    out, w2 = 0.0, 0.0
    for b in range(2):  # per sample, element by element; then the batch mean
        out += sum((gt.x[b, j] - gs.x[b, j]).item() ** 2 / (2 * std2) for j in range(3)) / 2
        w2 += (
            sum(
                (gt.mu[0][b, j] - gs.mu[0][b, j]).item() ** 2
                + (gt.sigma[0][b, j] - gs.sigma[0][b, j]).item() ** 2
                for j in range(3)
            )
            / 3
            / 2
        )
    assert parts["output"].item() == pytest.approx(out, rel=1e-5)
    assert parts["latent"].item() == pytest.approx(w2, rel=1e-5)
    assert parts["loss"].item() == pytest.approx(out + 0.1 * w2, rel=1e-5)
    with pytest.raises(ValueError, match="n_classes"):
        conditional_kd4dgm_loss(teacher, make(n_classes=5, shape=(3,)), eps, y)


def test_old_task_batch_draws_old_labels_from_the_global_rng():
    vae = make()
    torch.manual_seed(5)
    eps, y = old_task_batch(vae, 200, (1, 3))
    assert set(y.tolist()) == {1, 3} and y.dtype == torch.int64 and eps[0].shape == (200, 3)
    torch.manual_seed(5)
    eps2, y2 = old_task_batch(vae, 200, (1, 3))
    assert torch.equal(y, y2) and all(torch.equal(a, b) for a, b in zip(eps, eps2))


# --- the likelihood against an exact one ---------------------------------------------------------------


def linear_gaussian(seed=0, d_x=4, d_z=2, n_classes=3, std=0.5):
    """A 1-layer conditional model with a linear output: x = W z + B[:, y] + b + std * noise, so
    p(x | y) = N(b + B[:, y], W W^T + std^2 I). W's columns are orthogonal, so the exact posterior's
    covariance is diagonal (and the same for every y) and the ladder's diagonal q can match it."""
    vae = make(hidden=16, layers=1, latent=d_z, n_classes=n_classes, seed=seed, shape=(d_x,))
    vae.decoder_std = std
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d_x, d_z, generator=g))
    w, shift, b = q * torch.tensor([1.0, 0.5]), 2 * torch.randn(d_x, n_classes, generator=g), torch.randn(d_x)
    vae.output.body = torch.nn.Identity()
    vae.output.head = torch.nn.Linear(d_z + n_classes, d_x)  # reads [z_1, one-hot y]
    with torch.no_grad():
        vae.output.head.weight.copy_(torch.cat([w, shift], dim=1))
        vae.output.head.bias.copy_(b)
    cov = w.double() @ w.double().T + std**2 * torch.eye(d_x, dtype=torch.float64)
    means = (b[:, None] + shift).double().T  # (n_classes, d_x)
    return vae, means, cov


def test_conditional_nll_matches_the_exact_gaussian_likelihood():
    vae, means, cov = linear_gaussian()
    g = torch.Generator().manual_seed(0)

    def draw(n):
        y = torch.randint(3, (n,), generator=g)
        x = torch.distributions.MultivariateNormal(means[y], cov).sample()
        return x.float(), y

    x, y = draw(9)
    exact = -torch.distributions.MultivariateNormal(means[y], cov).log_prob(x.double())
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    proposal = fit_conditional_proposal(vae, *draw(512), steps=500, batch=128, lr=1e-2, seed=0)
    assert all(torch.equal(v, vae.state_dict()[k]) for k, v in before.items())  # the model is untouched
    nll, ess = conditional_nll(vae, proposal, x, y, k=2000, generator=g)
    assert nll.dtype == torch.float64 and nll.shape == (9,) and ess.shape == (9,)
    # nearly flat weights: over model/data seeds 0-5 the median ESS was 1898-1975 of 2000 and the worst
    # of 9 points was 0.004-0.022 nats off the exact value, so 0.05 nats catches any real error in
    # log_joint, log q or the label's wiring (a wrong label costs nats, below)
    assert ess.median() > 1500
    assert (nll - exact).abs().max() < 0.05
    # and the wrong label is a worse model of x: its NLL is higher for every point
    nll_wrong, _ = conditional_nll(vae, proposal, x, (y + 1) % 3, k=500, generator=g)
    assert (nll_wrong > nll).all()


# --- the experiment ------------------------------------------------------------------------------------


def tiny_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(4, (n,), generator=g)
    centres = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(99))
    return centres[y] + 0.3 * torch.randn(n, 1, 2, 2, generator=g), y


def test_run_continual_is_finite_and_deterministic():
    data = [*tiny_data(200, 0), *tiny_data(40, 1), *tiny_data(60, 2)]
    opts = {"tasks": ((0, 1), (2, 3)), "hidden": 8, "latent": 2, "epochs": 2, "batch_size": 32,
            "kl_warmup_epochs": 2, "k": 50, "proposal_steps": 5, "seed": 3}  # fmt: skip
    a = run_continual(*data, **opts)
    assert set(a) == {"step1", "naive", "kd4dgm", "joint"}
    for metrics in a.values():
        assert set(metrics) == {"task1_nll", "task2_nll", "task1_ess_median", "task2_ess_median"}
        assert all(math.isfinite(v) for v in metrics.values())
        assert 1 <= metrics["task1_ess_median"] <= 50
    assert a["naive"] != a["kd4dgm"]  # the distillation term changed something
    assert run_continual(*data, **opts) == a
    assert run_continual(*data, **{**opts, "seed": 4}) != a
    table = markdown_table(summarise([a, a]), 2)
    assert len(table.splitlines()) == 2 + 4 and "| kd4dgm | " in table and "± 0.00" in table
    with pytest.raises(ValueError, match="do not match"):
        run_continual(data[0], data[1][:-1], *data[2:], **opts)


def test_kl_warmup_is_linear_and_reaches_one():
    assert [kl_weight(e + 1, 4) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert kl_weight(1, 0) == 1.0
