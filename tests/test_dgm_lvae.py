"""KD4DGM on ladder VAEs: losses against hand computation, noise sharing, the NLL against an exact one."""

import copy
import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from kdflow.dgm import (
    LadderVAE,
    check_latents,
    effective_sample_size,
    fit_proposal,
    frechet_distance,
    gaussian_mmd,
    importance_log_weights,
    importance_nll,
    kd4dgm_loss,
    output_kl,
    sample_elbo_loss,
    teacher_forced_loss,
    w2_squared,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only contends


def make(hidden=16, layers=3, latent=4, seed=0, shape=(10,)):
    torch.manual_seed(seed)
    return LadderVAE(shape, hidden=hidden, layers=layers, latent=latent)


# --- the losses by hand ---------------------------------------------------------------------------------


def test_w2_squared_by_hand():
    mu1, s1 = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    mu2, s2 = torch.tensor([[0.0, 0.0], [0.0, 3.0]]), torch.tensor([[2.0, 0.5], [1.0, 1.0]])
    # row 1: (1-0)^2 + (1-2)^2 = 2 and (2-0)^2 + (1-0.5)^2 = 4.25; row 2: 0 and (0-3)^2 = 9
    assert w2_squared(mu1, s1, mu2, s2).item() == pytest.approx(((2 + 4.25) / 2 + 9 / 2) / 2)
    assert w2_squared(mu1, s1, mu2, s2, reduction="sum").item() == pytest.approx((6.25 + 9) / 2)
    with pytest.raises(ValueError, match="reduction"):
        w2_squared(mu1, s1, mu2, s2, reduction="max")


def test_w2_squared_is_the_quantile_distance():
    # In 1-D, W2^2 = int_0^1 (F1^-1(u) - F2^-1(u))^2 du: an independent route to the same number.
    u = (np.arange(200_000) + 0.5) / 200_000
    q1, q2 = scipy.stats.norm.ppf(u, 0.3, 1.5), scipy.stats.norm.ppf(u, -0.4, 0.7)
    w2 = w2_squared(
        torch.tensor([[0.3]]), torch.tensor([[1.5]]), torch.tensor([[-0.4]]), torch.tensor([[0.7]])
    )
    assert w2.item() == pytest.approx(np.mean((q1 - q2) ** 2), rel=1e-3)


def test_output_kl_by_hand():
    mu_t, mu_s = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0]]), torch.zeros(2, 3)
    # row 1: (1 + 0 + 4) / (2 * 0.25) = 10, row 2: 0; averaged over the batch
    assert output_kl(mu_t, mu_s, 0.5).item() == pytest.approx(5.0)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu_t, 0.5), torch.distributions.Normal(mu_s, 0.5)
    )
    assert output_kl(mu_t, mu_s, 0.5).item() == pytest.approx(ref.sum(-1).mean().item())


# --- noise sharing and the distillation losses ----------------------------------------------------------


def test_generation_shapes_bottom_to_top():
    vae = LadderVAE((1, 8, 8), hidden=8, layers=3, latent=(16, 8, 4))
    assert vae.latent_shapes() == [(16,), (8,), (4,)]
    gen = vae.generate(vae.sample_noise(5))
    assert gen.x.shape == (5, 1, 8, 8)
    assert [m.shape for m in gen.mu] == [(5, 16), (5, 8)] and len(gen.sigma) == 2
    assert [z.shape for z in gen.z] == [(5, 16), (5, 8), (5, 4)]
    assert all((s > 0).all() for s in gen.sigma)
    with pytest.raises(ValueError, match="eps"):
        vae.generate(vae.sample_noise(5)[:2])


def test_shared_noise_is_shared():
    teacher, other = make(seed=0), make(hidden=8, seed=1)
    eps = teacher.sample_noise(6, torch.Generator().manual_seed(3))
    a, b = teacher.generate(eps), teacher.generate(eps)
    assert torch.equal(a.x, b.x)
    twin = copy.deepcopy(teacher).generate(eps)
    assert all(torch.equal(zt, zs) for zt, zs in zip(a.z, twin.z)) and torch.equal(a.x, twin.x)
    c = other.generate(eps)
    assert torch.equal(c.z[-1], a.z[-1])  # the top latent IS the noise
    assert not torch.allclose(c.z[0], a.z[0])  # below it each chain feeds on its own latents


def test_kd4dgm_zero_for_a_copy_positive_otherwise():
    teacher = make(seed=0)
    eps = teacher.sample_noise(8, torch.Generator().manual_seed(1))
    for loss in (kd4dgm_loss, teacher_forced_loss):
        assert loss(teacher, copy.deepcopy(teacher), eps)["loss"].item() == 0.0
    student = make(hidden=8, seed=1)
    parts = kd4dgm_loss(teacher, student, eps, lam=0.1)
    assert parts["output"] > 0 and parts["latent"] > 0
    assert parts["loss"].item() == pytest.approx((parts["output"] + 0.1 * parts["latent"]).item())
    # the latent term by hand from the two generations: layers 1 and 2 have conditionals, the top none
    gt, gs = teacher.generate(eps), student.generate(eps)
    by_hand = sum(
        (((gt.mu[i] - gs.mu[i]) ** 2 + (gt.sigma[i] - gs.sigma[i]) ** 2).mean(-1)).mean() for i in range(2)
    )
    assert parts["latent"].item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert set(parts) == {"loss", "output", "latent", "w2_1", "w2_2"}


def test_gradients_reach_only_the_student_generator():
    teacher, student = make(seed=0), make(hidden=8, seed=1)
    kd4dgm_loss(teacher, student, teacher.sample_noise(8))["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in student.encoder.parameters())  # generation never uses the encoder
    grads = [p.grad for p in [*student.decoder.parameters(), *student.output.parameters()]]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_teacher_forcing_feeds_on_the_teachers_latents():
    teacher, student = make(seed=0), make(hidden=8, seed=1)
    eps = teacher.sample_noise(8, torch.Generator().manual_seed(2))
    gt = teacher.generate(eps)
    forced = student.generate_forced(gt.z)
    assert all(torch.equal(a, b) for a, b in zip(forced.z, gt.z))
    # the student's own chain on eps differs from its forced one below the top
    assert not torch.allclose(forced.mu[0], student.generate(eps).mu[0])
    assert not torch.isclose(
        teacher_forced_loss(teacher, student, eps)["loss"], kd4dgm_loss(teacher, student, eps)["loss"]
    )
    # with one layer there is no chain to accumulate errors on: the two arms coincide
    t1, s1 = make(layers=1, seed=0), make(hidden=8, layers=1, seed=1)
    e1 = t1.sample_noise(8)
    assert teacher_forced_loss(t1, s1, e1)["loss"].item() == pytest.approx(
        kd4dgm_loss(t1, s1, e1)["loss"].item()
    )


def test_check_latents_refuses_mismatched_shapes():
    teacher, student = make(latent=8), make(latent=4)
    with pytest.raises(ValueError, match=r"\[\(8,\), \(8,\), \(8,\)\].*\[\(4,\), \(4,\), \(4,\)\]"):
        check_latents(teacher, student)
    with pytest.raises(ValueError, match=r"\(4,\), \(4,\)\]"):
        check_latents(make(layers=2), make(layers=3))
    with pytest.raises(ValueError, match="latent shapes"):
        kd4dgm_loss(teacher, student, teacher.sample_noise(2))
    check_latents(make(hidden=32), make(hidden=8))  # widths may differ


def test_sample_elbo_loss_on_teacher_samples():
    teacher, student = make(seed=0), make(hidden=8, seed=1)
    parts = sample_elbo_loss(teacher, student, 16, beta=0.5, generator=torch.Generator().manual_seed(0))
    assert parts["loss"].item() == pytest.approx((parts["recon"] + 0.5 * parts["kl"]).item(), rel=1e-6)
    parts["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())


# --- the ELBO and the likelihood ------------------------------------------------------------------------


def test_elbo_decreases_under_adam():
    vae = make(hidden=32, layers=2, seed=0, shape=(20,))
    x = torch.randn(64, 20, generator=torch.Generator().manual_seed(0)) * 0.5

    def evaluate():
        torch.manual_seed(123)  # the same posterior noise before and after
        return vae.elbo(x)["loss"].item()

    before = evaluate()
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        vae.elbo(x, beta=0.5)["loss"].backward()
        opt.step()
    assert evaluate() < 0.9 * before


def test_importance_weights_average_to_the_negative_elbo():
    # E_q[log q(z|x) - log p(x, z)] = -ELBO: posterior_sample and log_joint agree with elbo (analytic KL)
    vae, x = make(seed=0), torch.randn(4, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z, log_q = vae.posterior_sample(x, 2000, torch.Generator().manual_seed(2))
        gap = (log_q - vae.log_joint(x, z)).double()  # (2000, 4)
        torch.manual_seed(3)
        nelbo = vae.elbo(x.repeat(2000, 1))["loss"].item()
    se = gap.std().item() / math.sqrt(gap.numel())
    # the analytic-KL ELBO has no more variance than the MC gap, so sqrt(2) * se bounds the difference's
    assert nelbo == pytest.approx(gap.mean().item(), abs=5 * math.sqrt(2) * se)


def linear_gaussian(seed=0, d_x=4, d_z=2, std=0.5):
    """layers=1 with a linear decoder: p(x) = N(b, W W^T + std^2 I) in closed form.

    W's columns are orthogonal, so the exact posterior N(., (I + W^T W / std^2)^-1) is diagonal and the
    ladder's diagonal q can match it: the importance weights of a fitted encoder are then nearly flat.
    """
    torch.manual_seed(seed)
    vae = LadderVAE((d_x,), hidden=16, layers=1, latent=d_z, decoder_std=std)
    q, _ = torch.linalg.qr(torch.randn(d_x, d_z))
    w, b = q * torch.tensor([1.0, 0.5]), torch.randn(d_x)  # posterior stds ~0.45 and ~0.71
    vae.output.body = torch.nn.Identity()
    vae.output.head = torch.nn.Linear(d_z, d_x)
    with torch.no_grad():
        vae.output.head.weight.copy_(w)
        vae.output.head.bias.copy_(b)
    return vae, torch.distributions.MultivariateNormal(
        b.double(), w.double() @ w.double().T + std**2 * torch.eye(d_x)
    )


def importance_se(model, x, proposal, k, generator):
    """The delta-method s.e. of log p^: std(w) / (mean(w) sqrt(K)), from a fresh set of K weights."""
    with torch.no_grad():
        z, log_q = proposal.posterior_sample(x, k, generator)
        w = torch.softmax((model.log_joint(x, z) - log_q).double(), dim=0)  # normalised: mean(w) = 1 / K
    return w.std(0) * math.sqrt(k)  # (B,)


def test_importance_nll_matches_the_exact_likelihood():
    vae, p_x = linear_gaussian()
    g = torch.Generator().manual_seed(0)
    x = p_x.sample((8,)).float()
    exact = -p_x.log_prob(x.double())  # (8,)
    # fit the proposal (the model's own encoder) so that the importance weights are nearly flat
    train = p_x.sample((256,)).float()
    opt = torch.optim.Adam(vae.encoder.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        vae.elbo(train)["loss"].backward()
        opt.step()
    est = importance_nll(vae, x, vae, k=2000, chunk=500, generator=g)
    assert est.dtype == torch.float64 and est.shape == (8,)
    # Tolerance: 5 s.e. of log p^ per point (the Jensen bias, ~s.e.^2 / 2, is negligible beside it). Over
    # seeds 0-7 the worst of the 8 points sat at 1.4-3.2 s.e., and the s.e. stayed below 0.02 nats, so
    # the check is tight: an error in log_joint or log q of even 0.1 nats would fail it.
    se = importance_se(vae, x, vae, 2000, g)
    assert se.max() < 0.02
    assert ((est - exact).abs() < 5 * se).all()
    # Any proposal is valid: another model's untrained encoder, looser (s.e. ~0.05) but still unbiased.
    other = LadderVAE((4,), hidden=16, layers=1, latent=2)
    est2 = importance_nll(vae, x, other, k=5000, chunk=1000, generator=g)
    assert ((est2 - exact).abs() < 5 * importance_se(vae, x, other, 5000, g)).all()


def test_a_refitted_proposal_reaches_the_exact_likelihood_and_leaves_the_model_alone():
    """fit_proposal: a fresh encoder fitted to the model with its generative part frozen; the
    importance-sampled NLL through it matches the exact one, where the model's own (untrained)
    encoder is a far poorer proposal (its weights degenerate: a low effective sample size)."""
    vae, p_x = linear_gaussian(seed=1)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    x = p_x.sample((8,)).float()
    exact = -p_x.log_prob(x.double())
    proposal = fit_proposal(vae, p_x.sample((512,)).float(), steps=400, batch=128, lr=1e-2)
    assert all(torch.equal(v, vae.state_dict()[k]) for k, v in before.items())  # the model is untouched
    assert all(
        torch.equal(a, b) for a, b in zip(proposal.output.parameters(), vae.output.parameters())
    )  # the proposal's generative part is the model's
    g = torch.Generator().manual_seed(0)
    est = importance_nll(vae, x, proposal, k=2000, chunk=500, generator=g)
    se = importance_se(vae, x, proposal, 2000, g)
    assert se.max() < 0.05 and ((est - exact).abs() < 5 * se).all()
    ess = effective_sample_size(importance_log_weights(vae, x, proposal, k=2000, chunk=500, generator=g))
    ess_own = effective_sample_size(importance_log_weights(vae, x, vae, k=2000, chunk=500, generator=g))
    # seeds 1-3: the refitted proposal's ESS min 779-1897 / median 1935-1983 of 2000; the untrained
    # encoder's min 37-86 / median 539-615
    assert ess.min() > 400 and ess.median() > 1800 and ess.median() > 2.5 * ess_own.median()


def test_effective_sample_size_by_hand():
    flat = torch.zeros(10, 3)
    assert torch.allclose(effective_sample_size(flat), torch.full((3,), 10.0, dtype=torch.float64))
    one = torch.full((10, 1), -1e9)
    one[4] = 0.0
    assert effective_sample_size(one).item() == pytest.approx(1.0)
    two = torch.log(torch.tensor([[1.0], [3.0]]))  # w = (1/4, 3/4): 1 / (1/16 + 9/16) = 1.6
    assert effective_sample_size(two).item() == pytest.approx(1.6)


# --- sample-based metrics -------------------------------------------------------------------------------


def test_gaussian_mmd():
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]])
    e = math.exp
    by_hand = e(-0.5) + e(-2.0) - 2 * (1 + e(-2.0) + 2 * e(-0.5)) / 4  # k(a, b) = exp(-(a - b)^2 / 2)
    assert gaussian_mmd(x, y, (1.0,)).item() == pytest.approx(by_hand)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 3, generator=g), torch.randn(300, 3, generator=g)
    bw = (0.5, 1.0, 2.0)
    # with itself the unbiased estimate is 2 (mean_offdiag - mean_all) = O(len(bw) / n), not exactly 0
    assert abs(gaussian_mmd(a, a, bw).item()) < 2 * len(bw) / 300
    assert abs(gaussian_mmd(a, b, bw).item()) < 0.02
    assert gaussian_mmd(a, b + 1.0, bw).item() > 0.2


def test_frechet_distance():
    g = np.random.default_rng(0)
    f1 = g.normal(size=(500, 3)) @ g.normal(size=(3, 3))
    assert abs(frechet_distance(f1, f1.copy())) < 1e-9
    # f2 = a f1 + c: C2 = a^2 C1 commutes with C1, so FD = |(1 - a) m1 - c|^2 + (1 - a)^2 tr C1 exactly
    a, c = 0.5, np.array([1.0, -2.0, 0.5])
    m1, c1 = f1.mean(0), np.cov(f1, rowvar=False)
    closed = ((1 - a) * m1 - c) @ ((1 - a) * m1 - c) + (1 - a) ** 2 * np.trace(c1)
    assert frechet_distance(torch.tensor(f1), torch.tensor(a * f1 + c)) == pytest.approx(closed, rel=1e-9)
    # a non-commuting pair against scipy's general sqrtm (the usual FID route)
    f2 = g.normal(size=(400, 3)) @ g.normal(size=(3, 3)) + 0.3
    c2 = np.cov(f2, rowvar=False)
    ref = ((m1 - f2.mean(0)) ** 2).sum() + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
    assert frechet_distance(f1, f2) == pytest.approx(ref, rel=1e-8)


# --- the convolutional ladder VAE (images) ----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (1, 28, 28), (3, 17, 13)])
def test_a_convolutional_ladder_vae_reads_and_writes_images_of_any_size(shape):
    torch.manual_seed(0)
    vae = LadderVAE(shape, hidden=32, layers=3, latent=4, channels=4)
    assert type(vae.encoder[0]).__name__ == "_ConvIn" and type(vae.output).__name__ == "_ConvOut"
    x = torch.randn(5, *shape)
    out = vae.elbo(x)
    assert out["nelbo"].shape == (5,) and torch.isfinite(out["loss"])
    assert vae.generate(vae.sample_noise(6)).x.shape == (6, *shape)
    z, log_q = vae.posterior_sample(x, 7)  # (k, B, d) latents: the output block keeps the leading dims
    assert vae.log_joint(x, z).shape == log_q.shape == (7, 5)
    # the k draws of one example are scored as the same example scored k times one by one
    one = torch.stack([vae.log_joint(x, [zi[k] for zi in z]) for k in range(7)])
    assert torch.allclose(one, vae.log_joint(x, z), atol=1e-4)


def test_a_convolutional_student_distils_from_an_mlp_teacher_on_the_same_noise():
    """The latents stay vectors, so an MLP and a convolutional ladder VAE share noise: the KD4DGM
    loss is zero for a copy, positive across architectures, and trains only the student's
    generative part."""
    torch.manual_seed(0)
    teacher = LadderVAE((1, 8, 8), hidden=32, layers=2, latent=4)
    student = LadderVAE((1, 8, 8), hidden=8, layers=2, latent=4, channels=4)
    eps = teacher.sample_noise(16)
    assert kd4dgm_loss(student, copy.deepcopy(student), eps)["loss"].item() == 0.0
    student.encoder.requires_grad_(False)
    kd4dgm_loss(teacher, student, eps)["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in [*student.decoder.parameters(), *student.output.parameters()])


def test_a_convolutional_ladder_vae_needs_images():
    with pytest.raises(ValueError, match="takes \\(C, H, W\\) images"):
        LadderVAE((40,), channels=4)
