"""The generative pipeline's view of the Helmholtz machine and the VRNN (`FAMILY` in kdflow.dgm.hm and
kdflow.dgm.vrnn), and the Old Faithful loader (kdflow.data.old_faithful). A few seconds on one core."""

import numpy as np
import pytest
import torch

from kdflow import data
from kdflow.data import old_faithful
from kdflow.dgm import hm, vrnn


@pytest.fixture(scope="module", autouse=True)
def _one_thread_module():
    """torch on one thread for the whole module, module-scoped fixtures' fits included (conftest's
    `one_thread` is per test, so it would start after them): tiny models lose to thread contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


HM, VR = hm.FAMILY, vrnn.FAMILY
L = 6  # VRNN sequence length in these tests
TINY = {"family": "vrnn", "hidden": 8, "rnn": 8, "latent": 2}


def _fit(fam, model, x, steps, lr=1e-2) -> list[float]:
    """`steps` full-batch Adam steps on fam.train_loss; returns the losses."""
    opt = torch.optim.Adam(model.parameters(), lr)
    losses = []
    for _ in range(steps):
        loss = fam.train_loss(model, x, 1.0)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _grads(params) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in params]


def _has_grad(params) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


# ---------------- Helmholtz machine ----------------


@pytest.fixture(scope="module")
def faithful() -> torch.Tensor:
    return torch.as_tensor(hm.load_old_faithful())  # (272, 2) standardised


def test_hm_build_reads_hidden_and_checks_shape():
    assert HM.build({"family": "hm", "hidden": 2}, (2,)).hidden == 2
    assert HM.build({"family": "hm"}, (2,)).hidden == 8
    with pytest.raises(ValueError, match=r"\(3,\)"):
        HM.build({}, (3,))


def test_hm_train_loss_lowers_the_exact_nll(faithful):
    torch.manual_seed(0)
    m = HM.build({"hidden": 8}, (2,))
    parts = HM.train_loss(m, faithful, 0.3)
    assert set(parts) == {"loss", "wake", "sleep"}
    before = HM.val_nll(m, faithful).mean().item()
    _fit(HM, m, faithful, 30)
    assert HM.val_nll(m, faithful).mean().item() < before - 0.1


def test_hm_one_loss_gives_wake_grads_to_gen_and_sleep_grads_to_rec(faithful):
    torch.manual_seed(0)
    m = hm.HelmholtzMachine(8)
    gen, rec = list(m.gen.parameters()), list(m.rec.parameters())
    torch.manual_seed(1)
    HM.train_loss(m, faithful, 1.0)["loss"].backward()
    both_gen, both_rec = _grads(gen), _grads(rec)
    m.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # same draws: wake's recognition samples, then sleep's dreams
    m.wake_loss(faithful)["loss"].backward()
    assert all(p.grad is None for p in rec)
    wake_gen = _grads(gen)
    m.zero_grad(set_to_none=True)
    m.sleep_loss(len(faithful))["loss"].backward()
    assert all(p.grad is None for p in gen)
    for a, b in zip(both_gen, wake_gen):
        torch.testing.assert_close(a, b)
    for a, b in zip(both_rec, _grads(rec)):
        torch.testing.assert_close(a, b)


def test_hm_nll_is_exact(faithful):
    m = hm.HelmholtzMachine(2)
    assert HM.val_nll(m, faithful).shape == (272,)
    out = HM.test_nll(m, faithful[:10], faithful, k=5, steps=3, seed=0)
    torch.testing.assert_close(out["nll"], -m.log_likelihood(faithful[:10]).detach())
    assert out["ess"] is None and out["estimator"].startswith("exact")


def test_hm_distill_trains_the_student_only():
    torch.manual_seed(0)
    teacher, student = hm.HelmholtzMachine(8), hm.HelmholtzMachine(2)
    parts = HM.distill["kd4dgm"](teacher, student, 64, {"lr": 1e-3})  # lr: the optimizer's, ignored
    assert torch.isfinite(parts["loss"])
    parts["loss"].backward()
    assert _has_grad(student.gen.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert HM.frozen(student, "kd4dgm") == []


def test_hm_sample_shape_and_seed():
    m = hm.HelmholtzMachine(2)
    a = HM.sample(m, 50, torch.Generator().manual_seed(3))
    assert a.shape == (50, 2) and not a.requires_grad
    torch.testing.assert_close(a, HM.sample(m, 50, torch.Generator().manual_seed(3)))


# ---------------- VRNN ----------------


def _sequences(n: int, seed: int) -> torch.Tensor:
    """Ramps of random slope (a latent worth inferring, given the fixed x_std = 1) plus small noise."""
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(n, 1, generator=g) * torch.linspace(-1, 1, L) + 0.3 * torch.randn(
        n, L, generator=g
    )


@pytest.fixture(scope="module")
def seqs() -> torch.Tensor:
    return _sequences(128, 0)


@pytest.fixture(scope="module")
def fitted(seqs) -> vrnn.VRNN:
    torch.manual_seed(0)
    m = VR.build(TINY, (L,))
    _fit(VR, m, seqs, 200)
    return m


def test_vrnn_build_reads_knobs_and_shape():
    m = VR.build(TINY, (40,))
    assert (m.x_dim, m.length, m.latent, m.rnn, m.x_std) == (1, 40, 2, 8, 1.0)
    default = VR.build({"family": "vrnn"}, (40,))
    assert (default.latent, default.rnn) == (vrnn.VRNN().latent, vrnn.VRNN().rnn)  # the constructor's
    assert VR.build(TINY, (5, 3)).x_dim == 3
    with pytest.raises(ValueError, match=r"\(4, 2, 2\)"):
        VR.build(TINY, (4, 2, 2))


def test_vrnn_train_loss_decreases_and_val_nll_shape(seqs):
    torch.manual_seed(0)
    m = VR.build(TINY, (L,))
    assert set(VR.train_loss(m, seqs, 0.5)) == {"loss", "recon", "kl"}
    losses = _fit(VR, m, seqs, 40)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3
    assert VR.val_nll(m, seqs[:7]).shape == (7,)


@pytest.mark.parametrize("method", ["kd4dgm", "kd4dgm_output", "sample_elbo"])
def test_vrnn_distill_is_finite_reproducible_and_trains_the_student(method):
    torch.manual_seed(0)
    teacher, student = VR.build(TINY, (L,)), VR.build({**TINY, "hidden": 4, "rnn": 4}, (L,))
    hp = {"lam": 0.0 if method == "kd4dgm_output" else 0.1, "lr": 1e-3}
    torch.manual_seed(5)
    parts = VR.distill[method](teacher, student, 16, hp)
    assert torch.isfinite(parts["loss"])
    parts["loss"].backward()
    assert _has_grad(student.generative_parameters())
    assert _has_grad(student.encoder.parameters()) == (method == "sample_elbo")
    assert all(p.grad is None for p in teacher.parameters())
    torch.manual_seed(5)  # a checkpointed RNG state reproduces the noise
    torch.testing.assert_close(VR.distill[method](teacher, student, 16, hp)["loss"], parts["loss"])
    assert VR.frozen(student, method) == []


def test_vrnn_sample_shape_and_seed():
    m = VR.build(TINY, (L,))
    a = VR.sample(m, 9, torch.Generator().manual_seed(1))
    assert a.shape == (9, L) and not a.requires_grad
    torch.testing.assert_close(a, VR.sample(m, 9, torch.Generator().manual_seed(1)))
    assert VR.sample(VR.build(TINY, (L, 2)), 3, None).shape == (3, L, 2)


def test_vrnn_refitted_proposal_changes_only_the_encoder(fitted, seqs):
    rng = torch.get_rng_state()
    proposal = vrnn.fit_vrnn_proposal(fitted, seqs, steps=5, seed=0)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is left alone
    enc = {id(p) for p in proposal.encoder.parameters()}
    for (name, p), q in zip(proposal.named_parameters(), fitted.parameters()):
        assert torch.equal(p, q) != (id(p) in enc), name  # encoder refitted, the rest untouched
    assert not any(p.requires_grad for p in proposal.parameters())
    assert all(p.requires_grad for p in fitted.parameters())


def test_vrnn_importance_nll_converges_in_k(fitted, seqs):
    x_test = _sequences(4, 1)
    small = VR.test_nll(fitted, x_test, seqs, k=2000, steps=300, seed=0)
    large = VR.test_nll(fitted, x_test, seqs, k=30000, steps=300, seed=0)
    assert small["nll"].shape == small["ess"].shape == (4,)
    assert ((small["ess"] >= 1) & (small["ess"] <= 2000)).all()
    # a proposal with ESS ~ 200 of 2000 leaves a std of about 0.07 nats on log p at K = 2000
    assert (small["nll"] - large["nll"]).abs().max() < 0.25
    assert small["estimator"] == "importance sampling, K=2000, proposal refitted for 300 steps"


# ---------------- Old Faithful ----------------


def test_old_faithful_loader_splits_the_shipped_rows():
    raw = data.LOADERS["old_faithful"](None, 0)
    assert raw.x_train.shape == (200, 2) and raw.x_test.shape == (72, 2)
    assert raw.x_train.dtype == raw.x_test.dtype == np.float32
    assert raw.y_train.dtype == np.int64 and not raw.y_train.any() and not raw.y_test.any()
    rows = old_faithful.read_old_faithful().astype(np.float32)
    both = np.concatenate([raw.x_train, raw.x_test])
    np.testing.assert_array_equal(np.unique(both, axis=0), np.unique(rows, axis=0))
    assert len(np.unique(both, axis=0)) == len(np.unique(rows, axis=0))
    assert sorted(map(tuple, both)) == sorted(map(tuple, rows))  # the same 272 rows, duplicates included
    assert raw.x_train[:, 1].mean() > 50  # raw minutes, not standardised
    np.testing.assert_array_equal(hm.load_old_faithful(standardise=False), rows)


def test_old_faithful_split_depends_only_on_the_seed():
    a, b, c = (data.LOADERS["old_faithful"](None, s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_train, c.x_train)
