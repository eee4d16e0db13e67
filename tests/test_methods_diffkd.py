"""DiffKD (kdflow.methods.diffkd) against computations written out by hand on small tensors: the
noise schedule from linear betas, the DDIM update, the noisy start, the noise-prediction loss, the
autoencoder, the logits' KL and the weighted total; where gradients go; 1-D, 2-D and vector
features; and a short training that lowers the loss."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from kdflow.methods.base import Batch, ModuleInfo
from kdflow.methods.diffkd import (
    DiffKD,
    DiffKDModule,
    alphas_cumprod,
    as_map,
    common_rank,
    ddim_step,
    denoising_steps,
    noisy_start,
)

B = 4
INFO = ModuleInfo(num_classes=3, n_train=100)
METHOD = DiffKD()


def hand_alphas_cumprod(n=1000):
    """prod (1 - beta) in float64, betas linear from 1e-4 to 0.02 (DDPM's schedule)."""
    out, prod = [], 1.0
    for i in range(n):
        prod *= 1.0 - (1e-4 + (0.02 - 1e-4) * i / (n - 1))
        out.append(prod)
    return out


ACP = hand_alphas_cumprod()


def batch(s_shape, t_shape, seed=0) -> Batch:
    """Student tensors require grad; teacher tensors do not (as the engine hands them over)."""
    g = torch.Generator().manual_seed(seed)
    return Batch(
        s_logits=torch.randn(B, 3, generator=g, requires_grad=True),
        t_logits=torch.randn(B, 3, generator=g),
        y=torch.tensor([0, 1, 2, 0]),
        idx=torch.arange(B),
        s_feats={"block2": torch.randn(B, *s_shape, generator=g, requires_grad=True)},
        t_feats={"block3": torch.randn(B, *t_shape, generator=g)},
    )


def build(s_shape, t_shape, overrides=None):
    hp = METHOD.resolve(overrides)
    torch.manual_seed(0)
    return METHOD.modules({"block2": s_shape}, {"block3": t_shape}, INFO, hp), hp


def bn_train(h):
    """BatchNorm in training mode with its initial affine (1, 0): batch statistics over (B, L)."""
    mean = h.mean(axis=(0, 2), keepdims=True)
    var = h.var(axis=(0, 2), keepdims=True)  # biased, as BN normalises with
    return (h - mean) / np.sqrt(var + 1e-5)


def conv1x1(w, b, x):
    """(B, C_in, L) -> (B, C_out, L) with w (C_out, C_in, 1), by einsum."""
    return np.einsum("oc,bcl->bol", w[:, :, 0], x) + b[None, :, None]


def npy(t):
    return t.detach().double().numpy()


# ---------------------------------------------------------------- declarations


def test_declarations_and_the_authors_defaults():
    hp = METHOD.resolve()
    assert METHOD.name == "diffkd" and "hunto" in METHOD.source and METHOD.paper
    assert METHOD.feature_kind == "any" and METHOD.layer_roles == "last"
    assert hp["ce_weight"] == 1.0 and hp["kd_weight"] == 0.0 and hp["feat_weight"] == 1.0
    assert (hp["inference_steps"], hp["train_steps"], hp["use_ae"], hp["logit_tau"]) == (5, 1000, True, 1.0)
    assert hp["diffuse_logits"] and hp["ae_channels"] == 0
    for name in METHOD.tune:
        p = METHOD.params[name]
        assert p.tunable and p.log and p.low <= hp[name] <= p.high
    names = ["block1", "block2", "block3", "penultimate"]
    assert METHOD.layers(names[1:], names, {}) == (["block3"], ["block3"])


# ---------------------------------------------------------------- the schedule and the DDIM update


def test_alphas_from_linear_betas_and_the_second_half_of_a_doubled_schedule():
    assert np.allclose(alphas_cumprod(1000).double().numpy(), ACP, rtol=1e-5)
    # 5 steps: a 10-step schedule 900, 800, ..., 0 of which the last five run
    assert denoising_steps(1000, 5) == [(400, 300), (300, 200), (200, 100), (100, 0), (0, -100)]
    assert denoising_steps(1000, 2) == [(250, 0), (0, -250)]
    mod = DiffKDModule(2, 3, 1, 3, 0, 5, 1000)
    assert mod.timesteps.tolist() == [400, 300, 200, 100, 0]
    assert mod.alphas[-1][1] == 1.0  # the step to t < 0 lands on alpha 1: the clean sample
    assert mod.alphas[0] == pytest.approx((ACP[400], ACP[300]), rel=1e-5)


def test_ddim_step_is_the_deterministic_update_written_out():
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    a_t, a_prev = ACP[400], ACP[300]
    got = ddim_step(x, eps, a_t, a_prev)
    for i, (xv, ev) in enumerate(zip(x.flatten().tolist(), eps.flatten().tolist())):
        x0 = (xv - math.sqrt(1 - a_t) * ev) / math.sqrt(a_t)
        want = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * ev
        assert got.flatten()[i].item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    # given the true noise of x = sqrt(a_t) x0 + sqrt(1 - a_t) e, it returns x at a_prev exactly
    x0, e = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    x_t = math.sqrt(a_t) * x0 + math.sqrt(1 - a_t) * e
    assert torch.allclose(ddim_step(x_t, e, a_t, a_prev), math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * e)
    assert torch.allclose(ddim_step(x_t, e, a_t, 1.0), x0, atol=1e-5)


class LinearNoise(nn.Module):
    """A stand-in noise model whose prediction is easy to write out: 0.1 x + 0.001 t."""

    def forward(self, x, t):
        return 0.1 * x + 0.001 * t.float()


class FixedGamma(nn.Module):
    def __init__(self, gamma):
        super().__init__()
        self.gamma = torch.tensor(gamma)

    def forward(self, x):
        return self.gamma


def test_denoising_loop_runs_the_last_five_of_ten_steps_from_the_adapters_start():
    mod = DiffKDModule(2, 3, 1, 3, 0, 5, 1000)
    mod.model, mod.adapter = LinearNoise(), FixedGamma([0.9, 0.2])
    s = torch.randn(2, 3, 4)
    torch.manual_seed(5)
    got = mod.denoise(s)
    torch.manual_seed(5)
    noise = npy(torch.randn(2, 3, 4))
    gamma = np.array([0.9, 0.2])[:, None, None]
    x = gamma * npy(s) + (1 - gamma) * noise  # weights gamma, 1 - gamma: not square roots
    for t in (400, 300, 200, 100, 0):
        a_t, a_prev = ACP[t], ACP[t - 100] if t >= 100 else 1.0
        eps = 0.1 * x + 0.001 * t
        x0 = (x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
        x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps
    assert np.allclose(npy(got), x, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- the noise adapter and the start


def test_noisy_start_mixes_each_sample_by_its_gamma():
    f, n = torch.randn(3, 2, 5), torch.randn(3, 2, 5)
    gamma = torch.tensor([0.0, 0.25, 1.0])
    got = noisy_start(f, n, gamma)
    for b, g in enumerate(gamma.tolist()):
        assert torch.allclose(got[b], g * f[b] + (1 - g) * n[b])


def test_adapter_gamma_is_a_two_way_softmax_of_its_linear_head():
    mod = DiffKDModule(2, 16, 2, 3, 0, 5, 1000)
    x = torch.randn(B, 16, 3, 3)
    gamma = mod.adapter(x)
    assert gamma.shape == (B,) and ((gamma > 0) & (gamma < 1)).all()
    with torch.no_grad():  # a head that ignores the feature: gamma = sigmoid(b0 - b1)
        mod.adapter.pred.weight.zero_()
        mod.adapter.pred.bias.copy_(torch.tensor([0.7, -0.4]))
    assert torch.allclose(mod.adapter(x), torch.full((B,), 1 / (1 + math.exp(-1.1))))


# ---------------------------------------------------------------- the noise model and its loss


def test_time_embedding_is_added_per_sample_at_every_position():
    mod = DiffKDModule(2, 8, 1, 3, 0, 5, 1000).eval()  # eval: BN does not mix the samples
    x, k = torch.randn(3, 8, 5), torch.tensor([0, 417, 999])
    together = mod.model(x, k)
    for b in range(3):
        assert torch.allclose(together[b], mod.model(x[b : b + 1], k[b])[0], atol=1e-6)
    expected = mod.model.pred(x + mod.model.time_embedding.weight[k][:, :, None])
    assert torch.allclose(together, expected)


def test_ddim_loss_is_the_noise_prediction_mse_at_random_steps():
    mod = DiffKDModule(2, 8, 1, 3, 0, 5, 1000)
    target = torch.randn(5, 8, 6)
    torch.manual_seed(3)
    got = mod.ddim_loss(target)
    torch.manual_seed(3)  # the same draws: the noise, then one step per sample in [0, 1000)
    noise = torch.randn(5, 8, 6)
    k = torch.randint(0, 1000, (5,))
    a = np.array([ACP[i] for i in k.tolist()])[:, None, None]
    noisy = np.sqrt(a) * npy(target) + np.sqrt(1 - a) * npy(noise)
    pred = mod.model(torch.tensor(noisy, dtype=torch.float32), k)
    assert got.item() == pytest.approx(np.mean((npy(pred) - npy(noise)) ** 2), rel=1e-5)


# ---------------------------------------------------------------- the autoencoder


def test_ae_reconstruction_and_its_latent_as_the_detached_target():
    mod = DiffKDModule(3, 6, 1, 3, 4, 5, 1000)
    f_s, f_t = torch.randn(B, 3, 5), torch.randn(B, 6, 5)
    _, target, _, rec = mod(f_s, f_t)
    enc, dec = mod.ae.encoder[0], mod.ae.decoder
    hidden = bn_train(conv1x1(npy(enc.weight), npy(enc.bias), npy(f_t)))
    out = conv1x1(npy(dec.weight), npy(dec.bias), hidden)
    assert rec.item() == pytest.approx(np.mean((out - npy(f_t)) ** 2), rel=1e-5)
    assert not target.requires_grad and np.allclose(npy(target), hidden, atol=1e-5)


def test_the_ae_learns_from_reconstruction_only():
    modules, hp = build((3, 5), (6, 5))
    b = batch((3, 5), (6, 5))
    parts = METHOD.loss(b, hp, modules)
    (parts["diffkd_feat"] + parts["ddim"]).backward(retain_graph=True)
    assert all(p.grad is None for p in modules["feat"].ae.parameters())
    modules.zero_grad(set_to_none=True)
    b.s_feats["block2"].grad = None
    parts["ae"].backward()
    assert all(p.grad is not None for p in modules["feat"].ae.parameters())
    assert b.s_feats["block2"].grad is None
    assert all(p.grad is None for n, p in modules.named_parameters() if not n.startswith("feat.ae"))


# ---------------------------------------------------------------- the total and the logits


def test_total_is_the_weighted_sum_of_the_named_parts():
    modules, _ = build((3, 6), (5, 3))
    hp = METHOD.resolve({"ce_weight": 0.5, "kd_weight": 0.3, "feat_weight": 2.0})
    parts = METHOD.loss(batch((3, 6), (5, 3)), hp, modules)
    named = ["diffkd_feat", "ddim", "ae", "diffkd_logits", "ddim_logits"]
    assert set(parts) == {"loss", "ce", "kd", "feat", *named}
    assert parts["feat"].item() == pytest.approx(sum(parts[n].item() for n in named), rel=1e-6)
    expected = 0.5 * parts["ce"] + 0.3 * parts["kd"] + 2.0 * parts["feat"]
    assert parts["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    modules, hp = build((3, 6), (5, 3), {"use_ae": False, "diffuse_logits": False})
    assert set(modules) == {"feat"} and modules["feat"].ae is None
    parts = METHOD.loss(batch((3, 6), (5, 3)), hp, modules)
    assert set(parts) == {"loss", "ce", "feat", "diffkd_feat", "ddim"}


def test_feature_mse_and_logit_kl_by_hand_on_the_same_draws():
    modules, hp = build((3, 6), (8, 3), {"logit_tau": 2.0, "ae_channels": 5})
    assert modules["feat"].ae.encoder[0].out_channels == 5
    b = batch((3, 6), (8, 3))
    torch.manual_seed(11)
    parts = METHOD.loss(b, hp, modules)
    torch.manual_seed(11)  # the same draws, module by module; the student pooled 6 -> 3 first
    f_s = b.s_feats["block2"]
    pooled = (f_s[:, :, 0::2] + f_s[:, :, 1::2]) / 2
    refined, target, _, _ = modules["feat"](pooled, b.t_feats["block3"])
    assert parts["diffkd_feat"].item() == pytest.approx(np.mean((npy(refined) - npy(target)) ** 2), rel=1e-5)
    refined, target, _, _ = modules["logits"](b.s_logits[..., None], b.t_logits[..., None])
    s, t, tau = npy(refined[..., 0]) / 2.0, npy(target[..., 0]) / 2.0, 2.0
    p_t = np.exp(t) / np.exp(t).sum(1, keepdims=True)
    log_p_s = s - np.log(np.exp(s).sum(1, keepdims=True))
    kl = tau**2 * np.sum(p_t * (np.log(p_t) - log_p_s)) / B  # summed over classes, batch mean
    assert parts["diffkd_logits"].item() == pytest.approx(kl, rel=1e-5)


# ---------------------------------------------------------------- gradients and shapes


def test_gradients_reach_the_student_and_every_module_never_the_teacher():
    modules, hp = build((8, 10), (64, 5))
    b = batch((8, 10), (64, 5))
    before = {k: v.clone() for k, v in b.t_feats.items()}
    parts = METHOD.loss(b, hp, modules)
    parts["loss"].backward()
    assert b.s_feats["block2"].grad.abs().sum() > 0 and b.s_logits.grad.abs().sum() > 0
    for name, p in modules.named_parameters():
        assert p.grad is not None, name
    for k, f in b.t_feats.items():
        assert not f.requires_grad and f.grad is None and torch.equal(f, before[k])
    assert not b.t_logits.requires_grad and b.t_logits.grad is None


def test_the_denoising_loop_is_differentiated_through_as_the_authors_do():
    modules, hp = build((3, 6), (4, 6), {"diffuse_logits": False})
    b = batch((3, 6), (4, 6))
    METHOD.loss(b, hp, modules)["diffkd_feat"].backward()
    feat = modules["feat"]
    for part in (feat.trans, feat.adapter, feat.model, feat.proj):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    assert b.s_feats["block2"].grad.abs().sum() > 0


@pytest.mark.parametrize(
    "s_shape,t_shape,rank",
    [
        ((8, 10), (64, 5), 1),  # 1-D maps, the student pooled to the teacher's length
        ((4, 6, 6), (16, 3, 3), 2),  # 2-D maps
        ((3, 4), (6, 8), 1),  # 1-D, the teacher pooled
        ((7,), (12,), 1),  # vectors: maps of one position
        ((5,), (6, 4, 4), 2),  # a vector with a 2-D map: the map pooled to 1 x 1
        ((3, 8), (4, 2, 2), 1),  # maps of different rank: both read as sequences
    ],
)
def test_maps_of_one_or_two_dimensions_and_vectors_run(s_shape, t_shape, rank):
    assert common_rank(s_shape, t_shape) == rank
    f_t = as_map(torch.zeros(B, *t_shape), rank)
    assert f_t.dim() == rank + 2 and f_t.shape[:2] == (B, t_shape[0])
    modules, hp = build(s_shape, t_shape)
    b = batch(s_shape, t_shape)
    parts = METHOD.loss(b, hp, modules)
    assert all(torch.isfinite(v) for v in parts.values())
    parts["loss"].backward()
    assert all(p.grad is not None for p in modules.parameters())


# ---------------------------------------------------------------- training


def test_a_short_training_lowers_the_loss():
    torch.manual_seed(0)
    x = torch.randn(64, 4, 10)
    teacher = nn.Conv1d(4, 16, 3, stride=2, padding=1)  # (B, 16, 5): a fixed function of x
    with torch.no_grad():
        f_t = torch.relu(teacher(x))
        t_logits = f_t.mean(2)[:, :3] * 3
    f_t_before = f_t.clone()
    y = t_logits.argmax(1)
    student = nn.Conv1d(4, 8, 3, padding=1)  # (B, 8, 10)
    head = nn.Linear(8, 3)
    modules, hp = build((8, 10), (16, 5))
    params = [*student.parameters(), *head.parameters(), *modules.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(120):
        f_s = torch.relu(student(x))
        b = Batch(head(f_s.mean(2)), t_logits, y, torch.arange(64), {"block2": f_s}, {"block3": f_t})
        loss = METHOD.loss(b, hp, modules)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-15:]) < 0.7 * np.mean(losses[:15])
    assert torch.equal(f_t, f_t_before)  # the teacher's feature was never changed in place
