"""The methods with added modules or an init stage (vid, crd, ab, ft, fsp) against computations
written out by hand on small tensors, and the models' pre-activation features they read."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdflow.methods.ab import AB, ab_term
from kdflow.methods.base import Batch, ModuleInfo
from kdflow.methods.crd import CRD, CRDModule
from kdflow.methods.fsp import FSP, fsp_matrix
from kdflow.methods.ft import FT, factor_map, ft_loss
from kdflow.methods.vid import VID, VIDRegressor
from kdflow.models import build_model
from kdflow.registry import feature_names

INFO = ModuleInfo(num_classes=3, n_train=6)


def batch(s_feats: dict, t_feats: dict, idx=None) -> Batch:
    b = next(iter(s_feats.values())).shape[0]
    g = torch.Generator().manual_seed(1)
    return Batch(
        s_logits=torch.randn(b, 3, generator=g, requires_grad=True),
        t_logits=torch.randn(b, 3, generator=g),
        y=torch.arange(b) % 3,
        idx=torch.arange(b) if idx is None else idx,
        s_feats=s_feats,
        t_feats=t_feats,
    )


def shapes(feats: dict) -> dict:
    return {k: tuple(v.shape[1:]) for k, v in feats.items()}


def l2(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


# ---------------------------------------------------------------- vid


def hand_nll(mu, t, var):
    """mean over (b, c, l) of 0.5 * ((mu - t)^2 / var_c + log var_c), by loops."""
    total, count = 0.0, 0
    for b in range(mu.shape[0]):
        for c in range(mu.shape[1]):
            for pos in range(mu.shape[2]):
                d = mu[b, c, pos].item() - t[b, c, pos].item()
                total += 0.5 * (d * d / var[c] + math.log(var[c]))
                count += 1
    return total / count


def test_vid_variance_starts_at_init_var_and_nll_matches_the_formula():
    torch.manual_seed(0)
    reg = VIDRegressor((4, 6), (5, 3), init_var=5.0, eps=1e-5)
    var0 = (F.softplus(reg.alpha) + 1e-5).detach()
    assert torch.allclose(var0, torch.full((5,), 5.0))
    with torch.no_grad():
        reg.alpha.copy_(torch.linspace(-1.0, 2.0, 5))  # unequal variances per channel
    f_s, f_t = torch.randn(2, 4, 6), torch.randn(2, 5, 3)
    # the student map (length 6) is average-pooled to the teacher's length 3 before the regressor
    pooled = (f_s[:, :, 0::2] + f_s[:, :, 1::2]) / 2
    mu = reg.mean(pooled).detach()
    var = [math.log1p(math.exp(a)) + 1e-5 for a in reg.alpha.tolist()]
    assert reg(f_s, f_t).item() == pytest.approx(hand_nll(mu, f_t, var), rel=1e-5)


def test_vid_flattens_a_vector_paired_with_a_map():
    torch.manual_seed(0)
    reg = VIDRegressor((7,), (2, 3), init_var=5.0, eps=1e-5)
    assert isinstance(reg.mean[0], torch.nn.Linear) and reg.alpha.shape == (6,)
    f_s, f_t = torch.randn(4, 7), torch.randn(4, 2, 3)
    mu = reg.mean(f_s).detach()[:, :, None]  # (B, 6, 1): one "channel" per flattened teacher element
    expected = hand_nll(mu, f_t.reshape(4, 6, 1), [5.0] * 6)
    assert reg(f_s, f_t).item() == pytest.approx(expected, rel=1e-5)


def test_vid_loss_sums_the_pairs_and_combines_with_ce():
    torch.manual_seed(0)
    s = {"block1": torch.randn(3, 4, 8), "block2": torch.randn(3, 4, 4)}
    t = {"block2": torch.randn(3, 6, 8), "block3": torch.randn(3, 6, 4)}
    method, b = VID(), batch(s, t)
    hp = method.resolve({"feat_weight": 2.0})
    mods = method.modules(shapes(s), shapes(t), INFO, hp)
    parts = method.loss(b, hp, mods)
    pairs = mods["block1"](s["block1"], t["block2"]) + mods["block2"](s["block2"], t["block3"])
    assert parts["feat"].item() == pytest.approx(pairs.item(), rel=1e-6)
    ce = F.cross_entropy(b.s_logits, b.y)
    assert parts["loss"].item() == pytest.approx(ce.item() + 2.0 * pairs.item(), rel=1e-6)
    assert {"block1.alpha", "block2.alpha", "block1.mean.0.weight"} <= set(mods.state_dict())


# ---------------------------------------------------------------- crd


def crd_hp(**over):
    return CRD().resolve({"feat_dim": 3, "nce_k": 2, **over})


def hand_crd(mod, f_s, f_t, idx, neg, tau, n):
    """Scores, Z (from this first batch) and both NCE terms by explicit loops over the tiny bank."""
    v_s = [l2((mod.embed_s.weight @ f + mod.embed_s.bias).tolist()) for f in f_s]
    v_t = [l2((mod.embed_t.weight @ f + mod.embed_t.bias).tolist()) for f in f_t]
    mem_s, mem_t = mod.memory_s.tolist(), mod.memory_t.tolist()

    def scores(v, bank):  # (B, 1 + K) of exp(v . m / tau)
        return [
            [math.exp(sum(a * c for a, c in zip(v[b], bank[j])) / tau) for j in [idx[b], *neg[b]]]
            for b in range(len(v))
        ]

    e_s, e_t = scores(v_s, mem_t), scores(v_t, mem_s)
    loss = 0.0
    for e in (e_s, e_t):
        z = sum(sum(row) for row in e) / sum(len(row) for row in e) * n  # mean * N
        k = len(e[0]) - 1
        total = 0.0
        for row in e:
            h = [x / z for x in row]
            total += math.log(h[0] / (h[0] + k / n + 1e-7))
            total += sum(math.log((k / n) / (x + k / n + 1e-7)) for x in h[1:])
        loss += -total / len(e)
    return loss, v_s, v_t


def test_crd_nce_matches_explicit_loops_with_fixed_negatives():
    torch.manual_seed(0)
    mod = CRDModule(4, 5, n_data=6, hp=crd_hp())
    f_s, f_t = torch.randn(2, 4), torch.randn(2, 5)
    idx, neg = torch.tensor([1, 4]), torch.tensor([[0, 5], [2, 3]])
    expected, _, _ = hand_crd(mod, f_s, f_t, idx.tolist(), neg.tolist(), 0.07, 6)
    assert mod(f_s, f_t, idx, neg).item() == pytest.approx(expected, rel=1e-4)


def test_crd_memory_update_by_hand_and_z_set_once():
    torch.manual_seed(0)
    mod = CRDModule(4, 5, n_data=6, hp=crd_hp())
    f_s, f_t = torch.randn(2, 4), torch.randn(2, 5)
    idx, neg = torch.tensor([1, 4]), torch.tensor([[0, 5], [2, 3]])
    old_s, old_t = mod.memory_s.clone(), mod.memory_t.clone()
    _, v_s, v_t = hand_crd(mod, f_s, f_t, idx.tolist(), neg.tolist(), 0.07, 6)
    mod(f_s, f_t, idx, neg)
    for bank, old, v in ((mod.memory_s, old_s, v_s), (mod.memory_t, old_t, v_t)):
        for row in range(6):
            if row in (1, 4):  # momentum 0.5 towards the new embedding, then back onto the sphere
                b = [1, 4].index(row)
                want = l2([0.5 * m + 0.5 * x for m, x in zip(old[row].tolist(), v[b])])
                assert bank[row].tolist() == pytest.approx(want, rel=1e-5)
            else:
                assert torch.equal(bank[row], old[row])
        assert not bank.requires_grad and bank.grad_fn is None
    z = mod.z.clone()
    assert (z > 0).all()
    mod(torch.randn(2, 4), torch.randn(2, 5), torch.tensor([0, 2]), neg)
    assert torch.equal(mod.z, z)  # estimated once, from the first batch
    mod.eval()  # outside training nothing moves
    banks = mod.memory_s.clone()
    mod(torch.randn(2, 4), torch.randn(2, 5), torch.tensor([3, 5]), neg)
    assert torch.equal(mod.memory_s, banks)


def test_crd_caps_k_draws_distinct_negatives_and_checkpoints_its_bank():
    method = CRD()
    assert method.params["nce_k"].default == 16384
    mod = method.modules({"penultimate": (4,)}, {"penultimate": (2, 3)}, INFO, method.resolve())
    assert mod.k == 5  # n_train - 1
    assert {"memory_s", "memory_t", "z", "embed_s.weight", "embed_t.weight"} <= set(mod.state_dict())
    assert mod.memory_s.shape == (6, 128)
    idx = torch.tensor([0, 3, 5])
    torch.manual_seed(7)
    neg = mod.sample_negatives(idx)
    assert neg.shape == (3, 5)
    for row, i in zip(neg.tolist(), idx.tolist()):
        assert sorted(row) == [j for j in range(6) if j != i]  # K = N - 1: every other slot once
    small = CRDModule(4, 4, n_data=50, hp=crd_hp(nce_k=10))
    torch.manual_seed(7)
    a = small.sample_negatives(idx)
    torch.manual_seed(7)
    assert torch.equal(a, small.sample_negatives(idx))  # torch's global RNG: a resume draws the same
    for row, i in zip(a.tolist(), idx.tolist()):
        assert len(set(row)) == 10 and i not in row


def direct_crd(mod, f_s, f_t, idx, negatives):
    """CRD's loss as criterion.py writes it, and as crd.py computed it before working in log space:
    exp of the gathered scores, divided by Z (estimated from this batch while unset), eps in the
    denominators. Updates nothing."""
    v_s = F.normalize(mod.embed_s(f_s), dim=1)
    v_t = F.normalize(mod.embed_t(f_t), dim=1)
    slots = torch.cat([idx[:, None], negatives], dim=1)  # (B, 1 + K)
    e_s = torch.exp((v_s @ mod.memory_t.T).gather(1, slots) / mod.tau)
    e_t = torch.exp((v_t @ mod.memory_s.T).gather(1, slots) / mod.tau)
    estimate = torch.stack([e_s.mean(), e_t.mean()]).detach() * mod.n_data
    z = torch.where(mod.z < 0, estimate, mod.z)

    def nce(h):
        noise = negatives.shape[1] / mod.n_data
        log_pos = torch.log(h[:, 0] / (h[:, 0] + noise + 1e-7))
        log_neg = torch.log(noise / (h[:, 1:] + noise + 1e-7))
        return -(log_pos.sum() + log_neg.sum()) / h.shape[0]

    return nce(e_s / z[0]) + nce(e_t / z[1])


# every other slot (no draw, no gather); K sampled, given or drawn from torch's global RNG
@pytest.mark.parametrize("k,given", [(39, False), (7, True), (7, False)])
def test_crd_log_space_loss_and_gradients_equal_the_direct_formula_in_float64(k, given):
    torch.manual_seed(0)
    n = 40
    mod = CRDModule(6, 9, n_data=n, hp=crd_hp(feat_dim=5, nce_k=k, nce_t=0.1)).double()
    wrt = [*mod.parameters()]
    for step in range(3):  # the first batch estimates Z, the next ones read it
        f_s = torch.randn(8, 6, dtype=torch.float64, requires_grad=True)
        f_t = torch.randn(8, 9, dtype=torch.float64, requires_grad=True)
        idx = torch.randperm(n)[:8]
        torch.manual_seed(step)
        negatives = mod.sample_negatives(idx)  # for k = 39: every other slot
        fixed = negatives if given else None
        want = direct_crd(mod, f_s, f_t, idx, negatives)
        want_grads = torch.autograd.grad(want, [f_s, f_t, *wrt])
        torch.manual_seed(step)
        got = mod(f_s, f_t, idx, fixed)  # updates the banks and, on the first step, Z
        got_grads = torch.autograd.grad(got, [f_s, f_t, *wrt])
        assert got.item() == pytest.approx(want.item(), rel=1e-12)
        for g, w in zip(got_grads, want_grads):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
        assert mod.z_set and (mod.z > 0).all()
    z = mod.z.clone()
    mod.load_state_dict(mod.state_dict())  # a load may bring back an unset Z: look again
    assert not mod.z_set
    mod(f_s, f_t, idx, fixed)
    assert torch.equal(mod.z, z)


# ---------------------------------------------------------------- ab


def test_ab_margin_loss_explicit_cases():
    # (student c, teacher t, loss) with margin 1; t = 0 counts as off
    cases = [
        (0.5, 2.0, 0.25),  # on, c below +m: (c - 1)^2
        (2.0, 2.0, 0.0),  # on, c past +m
        (1.0, 0.1, 0.0),  # on, c exactly +m: (1 - 1)^2
        (-3.0, 0.5, 16.0),  # on, c far negative
        (-0.5, -1.0, 0.25),  # off, c above -m: (c + 1)^2
        (-2.0, -1.0, 0.0),  # off, c past -m
        (-1.0, -0.3, 0.0),  # off, c exactly -m: not counted
        (0.0, 0.0, 1.0),  # t = 0 is off: (0 + 1)^2
        (2.0, -4.0, 9.0),  # off, c positive
    ]
    c = torch.tensor([x[0] for x in cases])
    t = torch.tensor([x[1] for x in cases])
    assert ab_term(c, t, 1.0).item() == pytest.approx(sum(x[2] for x in cases))
    for ci, ti, want in cases:
        assert ab_term(torch.tensor([ci]), torch.tensor([ti]), 1.0).item() == pytest.approx(want)


def test_ab_pretrain_weights_pairs_and_main_loss_is_ce_only():
    torch.manual_seed(0)
    s = {"block1_pre": torch.randn(4, 3, 5), "block2_pre": torch.randn(4, 3, 5)}
    t = {"block1_pre": torch.randn(4, 3, 5), "block2_pre": torch.randn(4, 3, 5)}
    method, b = AB(), batch(s, t)
    hp = method.resolve()
    mods = method.modules(shapes(s), shapes(t), INFO, hp)  # equal shapes: identity connectors
    parts = method.pretrain_loss(b, hp, mods)
    want = sum(
        w * ab_term(s[k], t[k], 1.0).item() / 4 * 3 / 1000
        for w, k in zip((0.5, 1.0), ("block1_pre", "block2_pre"))
    )
    assert parts["loss"].item() == pytest.approx(want, rel=1e-6)
    main = method.loss(b, hp, mods)
    assert set(main) == {"loss", "ce"} and main["loss"].item() == pytest.approx(
        F.cross_entropy(b.s_logits, b.y).item()
    )
    assert method.pretrain.trains == "student" and hp[method.pretrain.epochs] == 30
    assert method.layers(["block1", "block2", "penultimate"], ["block1", "block2", "block3"], hp) == (
        ["block1_pre", "block2_pre"],
        ["block2_pre", "block3_pre"],
    )


def test_ab_connectors_by_shape():
    method = AB()
    s = {"block1_pre": (3, 5), "block2_pre": (16,), "block3_pre": (4, 6, 6)}
    t = {"block1_pre": (6, 5), "block2_pre": (8,), "block3_pre": (4, 6, 6)}
    mods = method.modules(s, t, INFO, method.resolve())
    conv, vec, same = mods["block1_pre"].net, mods["block2_pre"].net, mods["block3_pre"].net
    assert isinstance(conv[0], torch.nn.Conv1d) and conv[0].kernel_size == (1,)
    assert isinstance(conv[1], torch.nn.BatchNorm1d)
    assert isinstance(vec[0], torch.nn.Linear) and isinstance(vec[1], torch.nn.BatchNorm1d)
    assert isinstance(same, torch.nn.Identity)
    assert "block1_pre.net.1.running_mean" in mods.state_dict()


# ---------------------------------------------------------------- ft


def test_ft_factor_normalisation_and_l1_by_hand():
    torch.manual_seed(0)
    f_s, f_t = torch.randn(2, 3, 4), torch.randn(2, 5, 4)

    def hand_factor(f):  # per sample: channel mean of f^2 at each position, then unit L2 norm
        return [
            l2([sum(f[b, c, p].item() ** 2 for c in range(f.shape[1])) / f.shape[1] for p in range(4)])
            for b in range(2)
        ]

    a_s, a_t = hand_factor(f_s), hand_factor(f_t)
    assert factor_map(f_s, 2.0).tolist() == [pytest.approx(r, rel=1e-5) for r in a_s]
    l1 = sum(abs(x - y) for rs, rt in zip(a_s, a_t) for x, y in zip(rs, rt)) / 8
    assert ft_loss(f_s, f_t, 2.0, 1.0).item() == pytest.approx(l1, rel=1e-5)
    sq = sum((x - y) ** 2 for rs, rt in zip(a_s, a_t) for x, y in zip(rs, rt)) / 8
    assert ft_loss(f_s, f_t, 2.0, 2.0).item() == pytest.approx(sq, rel=1e-5)


@pytest.mark.parametrize("s_shape,t_shape", [((4, 5), (6, 5)), ((4, 6, 6), (8, 3, 3))])
def test_ft_modules_stages_and_frozen_paraphraser(s_shape, t_shape):
    torch.manual_seed(0)
    method = FT()
    hp = method.resolve()
    s = {"block2": torch.randn(3, *s_shape, requires_grad=True)}
    t = {"block3": torch.randn(3, *t_shape)}
    mods = method.modules(shapes(s), shapes(t), INFO, hp)
    k = int(t_shape[0] * 0.5)
    assert mods.paraphraser.encoder(t["block3"]).shape == (3, k, *t_shape[1:])
    assert mods.paraphraser(t["block3"]).shape == t["block3"].shape
    assert mods.translator(s["block2"]).shape == (3, k, *s_shape[1:])
    b = batch(s, t)
    rec = method.pretrain_loss(b, hp, mods)
    assert rec["loss"].item() == pytest.approx(F.mse_loss(mods.paraphraser(t["block3"]), t["block3"]).item())
    assert (
        method.pretrain.trains == "paraphraser" and method.pretrain.frozen_after and hp["init_epochs"] == 30
    )
    parts = method.loss(b, hp, mods)
    want = ft_loss(mods.translator(s["block2"]), mods.paraphraser.encoder(t["block3"]), 2.0, 1.0)
    assert parts["feat"].item() == pytest.approx(want.item(), rel=1e-6)
    parts["loss"].backward()
    assert all(p.grad is None for p in mods.paraphraser.parameters())  # frozen after its stage
    assert all(p.grad is not None for p in mods.translator.parameters())
    assert {"paraphraser.encoder.0.weight", "translator.1.running_var"} <= set(mods.state_dict())


# ---------------------------------------------------------------- fsp


def hand_fsp(bottom, top):
    """bottom (B, Ca, L1), top (B, Cb, L2) with L1 = 2 L2: bottom averaged in pairs, then loops."""
    bottom = [[[(bottom[b, c, 2 * x] + bottom[b, c, 2 * x + 1]).item() / 2 for x in range(top.shape[2])]
               for c in range(bottom.shape[1])] for b in range(bottom.shape[0])]  # fmt: skip
    n = top.shape[2]
    return [
        [[sum(top[b, i, x].item() * bottom[b][j][x] for x in range(n)) / n for j in range(len(bottom[b]))]
         for i in range(top.shape[1])]
        for b in range(top.shape[0])
    ]  # fmt: skip


def test_fsp_matrix_by_loops():
    torch.manual_seed(0)
    bottom, top = torch.randn(2, 3, 8), torch.randn(2, 4, 4)
    g = fsp_matrix(bottom, top)
    assert g.shape == (2, 4, 3)
    want = hand_fsp(bottom, top)
    for b in range(2):
        for i in range(4):
            assert g[b, i].tolist() == pytest.approx(want[b][i], rel=1e-5)
    # 2-D maps of one size: no pooling, a mean over the H x W positions
    a, c = torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3)
    g2 = fsp_matrix(a, c)
    for i in range(2):
        for j in range(2):
            want2 = sum(c[0, i, h, w].item() * a[0, j, h, w].item() for h in range(3) for w in range(3)) / 9
            assert g2[0, i, j].item() == pytest.approx(want2, rel=1e-5)


def test_fsp_pretrain_sums_consecutive_pairs_and_needs_equal_channels():
    torch.manual_seed(0)
    s = {f"block{i}": torch.randn(2, 3, 16 // 2**i) for i in (1, 2, 3)}
    t = {f"block{i}": torch.randn(2, 3, 16 // 2**i) for i in (2, 3, 4)}
    method, b = FSP(), batch(s, t)
    hp = method.resolve()
    mods = method.modules(shapes(s), shapes(t), INFO, hp)
    parts = method.pretrain_loss(b, hp, mods)
    want = 0.0
    for (lo_s, hi_s), (lo_t, hi_t) in zip(
        [("block1", "block2"), ("block2", "block3")], [("block2", "block3"), ("block3", "block4")]
    ):
        gs, gt = hand_fsp(s[lo_s], s[hi_s]), hand_fsp(t[lo_t], t[hi_t])
        diffs = [(x - y) ** 2 for bs, bt in zip(gs, gt) for rs, rt in zip(bs, bt) for x, y in zip(rs, rt)]
        want += sum(diffs) / len(diffs)
    assert parts["loss"].item() == pytest.approx(want, rel=1e-5)
    assert set(method.loss(b, hp, mods)) == {"loss", "ce"}
    with pytest.raises(ValueError, match="channels"):
        method.modules({"block1": (3, 8), "block2": (4, 4)}, {"block2": (3, 8), "block3": (5, 4)}, INFO, hp)


# ---------------------------------------------------------------- gradients, with real models


@pytest.mark.parametrize(
    "method,student,teacher",
    [
        (
            VID(),
            {"family": "cnn1d", "channels": 4, "layers": 2},
            {"family": "cnn1d", "channels": 6, "layers": 3},
        ),
        (VID(), {"family": "mlp", "hidden": [8, 8]}, {"family": "cnn1d", "channels": 4, "layers": 2}),
        (CRD(), {"family": "mlp", "hidden": [8]}, {"family": "cnn1d", "channels": 4, "layers": 2}),
        (
            AB(),
            {"family": "cnn1d", "channels": 4, "layers": 2},
            {"family": "cnn1d", "channels": 6, "layers": 3},
        ),
        (AB(), {"family": "mlp", "hidden": [8, 8]}, {"family": "mlp", "hidden": [16, 16]}),
        (
            FT(),
            {"family": "cnn1d", "channels": 4, "layers": 2},
            {"family": "cnn1d", "channels": 6, "layers": 3},
        ),
        (
            FSP(),
            {"family": "cnn1d", "channels": 4, "layers": 2},
            {"family": "cnn1d", "channels": 4, "layers": 3},
        ),
    ],
)
def test_gradients_reach_student_and_modules_never_the_teacher(method, student, teacher):
    torch.manual_seed(0)
    s_model, t_model = build_model(student, (40,), 3), build_model(teacher, (40,), 3)
    hp = method.resolve({"nce_k": 4} if method.name == "crd" else {})
    s_names, t_names = method.layers(feature_names(student), feature_names(teacher), hp)
    x, idx = torch.randn(5, 40), torch.tensor([0, 1, 2, 3, 5])
    s_logits, s_all = s_model.forward_features(x)
    with torch.no_grad():
        t_logits, t_all = t_model.forward_features(x)
    s_feats, t_feats = {n: s_all[n] for n in s_names}, {n: t_all[n] for n in t_names}
    mods = method.modules(shapes(s_feats), shapes(t_feats), INFO, hp)
    b = Batch(s_logits, t_logits, torch.tensor([0, 1, 2, 0, 1]), idx, s_feats, t_feats)
    # the init-stage methods distil only in pretrain_loss; their main loss is CE alone
    stage = method.pretrain_loss if method.name in ("ab", "fsp") else method.loss
    parts = stage(b, hp, mods)
    for f in s_feats.values():
        f.retain_grad()
    parts["loss"].backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in s_feats.values())
    assert all(p.grad is None for p in t_model.parameters())
    assert all(not f.requires_grad and f.grad is None for f in (*t_feats.values(), t_logits))
    trained = [p for n, p in mods.named_parameters() if not n.startswith("paraphraser")]
    assert all(p.grad is not None for p in trained)
    assert all(not buf.requires_grad for buf in mods.buffers())


# ---------------------------------------------------------------- models: pre-activation features


@pytest.mark.parametrize(
    "spec,input_shape",
    [
        ({"family": "mlp", "hidden": [8, 6]}, (40,)),
        ({"family": "cnn1d", "channels": 4, "layers": 3}, (40,)),
        ({"family": "cnn2d", "channels": 4, "layers": 4}, (3, 16, 16)),
        ({"family": "resnet", "depth": 8, "width": 4}, (3, 16, 16)),
    ],
)
def test_pre_activation_features(spec, input_shape):
    torch.manual_seed(0)
    model = build_model(spec, input_shape, 3).eval()
    x = torch.randn(2, *input_shape)
    logits, feats = model.forward_features(x)
    assert set(feats) == set(feature_names(spec))
    assert torch.equal(logits, model(x))
    family = spec["family"]
    # the block outputs are what the unchanged modules compute, block after block
    h = (
        x.flatten(1)
        if family == "mlp"
        else x.unsqueeze(1)
        if family == "cnn1d"
        else model.stem(x)
        if family == "resnet"
        else x
    )
    for i, block in enumerate(model.stages if family == "resnet" else model.blocks, 1):
        h = block(h)
        pre, out = feats[f"block{i}_pre"], feats[f"block{i}"]
        assert torch.equal(out, h)
        if family == "cnn2d":  # before the pool: the block's input resolution
            assert pre.shape[:2] == out.shape[:2] and pre.shape[2] >= out.shape[2]
            assert torch.equal(model.blocks[i - 1][3](torch.relu(pre)), out)
        else:
            assert pre.shape == out.shape
            assert torch.equal(torch.relu(pre), out)
        if family != "cnn2d":  # the residual sum, the Linear or BatchNorm output: before the ReLU
            assert (pre < 0).any()
