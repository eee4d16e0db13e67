"""The feature and relation methods (FitNets, AT, SP, RKD, PKT, CC, NST) against computations written
out by hand in NumPy, loop by loop, on small batches (B = 4, a few channels and positions)."""

import math

import numpy as np
import pytest
import torch

from kdflow.methods.at import AT
from kdflow.methods.base import Batch, ModuleInfo
from kdflow.methods.cc import CC
from kdflow.methods.fitnets import FitNets
from kdflow.methods.nst import NST
from kdflow.methods.pkt import PKT
from kdflow.methods.rkd import RKD
from kdflow.methods.sp import SP

B = 4
INFO = ModuleInfo(num_classes=3, n_train=100)
ALL = [FitNets(), AT(), SP(), RKD(), PKT(), CC(), NST()]


def arr(*shape, seed=0, positive=False):
    a = np.random.default_rng(seed).normal(size=shape)
    return np.abs(a) if positive else a


def batch(s_feats: dict, t_feats: dict) -> Batch:
    """Student tensors require grad; teacher tensors do not (as the engine hands them over)."""
    rng = np.random.default_rng(99)
    return Batch(
        s_logits=torch.tensor(rng.normal(size=(B, 3)), dtype=torch.float32, requires_grad=True),
        t_logits=torch.tensor(rng.normal(size=(B, 3)), dtype=torch.float32),
        y=torch.tensor([0, 1, 2, 0]),
        idx=torch.arange(B),
        s_feats={k: torch.tensor(v, dtype=torch.float32, requires_grad=True) for k, v in s_feats.items()},
        t_feats={k: torch.tensor(v, dtype=torch.float32) for k, v in t_feats.items()},
    )


def shapes(feats: dict) -> dict:
    return {k: tuple(v.shape[1:]) for k, v in feats.items()}  # without the batch, as the engine passes


def run(method, s_feats, t_feats, overrides=None, modules=None):
    hp = method.resolve(overrides)
    b = batch(s_feats, t_feats)
    if modules is None:
        torch.manual_seed(0)
        modules = method.modules(shapes(b.s_feats), shapes(b.t_feats), INFO, hp)
    return method.loss(b, hp, modules), b, modules, hp


def check_grads(parts, b, modules):
    """Gradients reach every student feature and every added parameter, and no teacher tensor; the
    teacher's values are left as they were (no in-place edits)."""
    before = {k: v.clone() for k, v in b.t_feats.items()}
    parts["loss"].backward()
    for f in b.s_feats.values():
        assert f.grad is not None and f.grad.abs().sum() > 0
    for name, p in modules.named_parameters():
        assert p.grad is not None, name
    for k, f in b.t_feats.items():
        assert not f.requires_grad and f.grad is None
        assert torch.equal(f, before[k])


def huber(x, y):  # smooth L1 with threshold 1, averaged
    d = np.abs(x - y)
    return np.mean(np.where(d < 1, 0.5 * d**2, d - 0.5))


# ---------------------------------------------------------------- the interface
@pytest.mark.parametrize("method", ALL, ids=lambda m: m.name)
def test_declarations(method):
    assert method.name and method.paper and "RepDistiller" in method.source
    assert method.feature_kind in ("map", "any") and method.layer_roles
    assert "feat_weight" in method.tune
    hp = method.resolve()
    for name in method.tune:
        p = method.params[name]
        assert p.tunable and p.low <= hp[name] <= p.high
    assert hp["ce_weight"] == 1.0 and hp["kd_weight"] == 0.0


def test_authors_defaults_and_layers():
    betas = {"fitnets": 100, "at": 1000, "sp": 3000, "rkd": 1, "pkt": 30000, "cc": 0.02, "nst": 50}
    assert {m.name: m.resolve()["feat_weight"] for m in ALL} == betas
    assert RKD().resolve()["w_d"] == 25 and RKD().resolve()["w_a"] == 50
    assert AT().resolve()["p"] == 2 and CC().resolve()["feat_dim"] == 128
    names = ["block1", "block2", "block3", "penultimate"]
    assert FitNets().layers(names, names + ["block4"], {}) == (["block2"], ["block3"])
    assert SP().layers(names, names, {}) == (["block3"], ["block3"])
    for m in (RKD(), PKT(), CC()):
        assert m.layers(names, names, {}) == (["penultimate"], ["penultimate"])
    for m in (AT(), NST()):
        assert m.layers(names[:2], names, {}) == (["block1", "block2"], ["block2", "block3"])
    assert {m.name for m in ALL if m.feature_kind == "map"} == {"at", "nst"}


# ---------------------------------------------------------------- FitNets
@pytest.mark.parametrize(
    "s_shape,t_shape",
    [
        ((3, 8), (5, 4)),  # 1-D: half (stride-2 conv)
        ((3, 4), (5, 8)),  # 1-D: double (transposed conv)
        ((3, 7), (5, 7)),  # 1-D: equal
        ((3, 7), (5, 4)),  # 1-D: larger by 3
        ((3, 3), (5, 7)),  # 1-D: smaller by 4
        ((3, 8, 8), (5, 4, 4)),  # 2-D: half
        ((3, 2, 4), (5, 4, 8)),  # 2-D: double
        ((3, 5, 6), (6, 5, 3)),  # 2-D: equal and larger
        ((3, 5, 3), (6, 5, 6)),  # 2-D: equal and double
        ((3, 4, 4), (2, 7, 5)),  # 2-D: smaller by 3 and by 1
        ((6,), (9,)),  # vectors
        ((3, 4), (9,)),  # a 1-D map to a vector
        ((6,), (3, 2, 2)),  # a vector to a 2-D map
    ],
)
def test_fitnets_regressor_gives_the_teachers_shape_and_trains(s_shape, t_shape):
    parts, b, modules, _ = run(
        FitNets(), {"block2": arr(B, *s_shape)}, {"block3": arr(B, *t_shape, seed=1, positive=True)}
    )
    assert modules["block2"](b.s_feats["block2"]).shape == (B, *t_shape)
    check_grads(parts, b, modules)


def test_fitnets_loss_is_the_mse_of_the_regressed_hint():
    s, t = arr(B, 6), arr(B, 5, seed=1, positive=True)
    parts, b, modules, hp = run(FitNets(), {"block2": s}, {"block2": t})
    w = modules["block2"].linear.weight.detach().numpy()
    bias = modules["block2"].linear.bias.detach().numpy()
    r = np.zeros((B, 5))
    for i in range(B):
        for j in range(5):
            r[i, j] = max(0.0, sum(w[j, k] * s[i, k] for k in range(6)) + bias[j])
    mse = np.mean((r - t) ** 2)
    assert parts["feat"].item() == pytest.approx(mse, rel=1e-5)
    assert parts["loss"].item() == pytest.approx(parts["ce"].item() + 100 * mse, rel=1e-5)


def test_fitnets_conv_regressor_matches_a_hand_convolution():
    # 1-D, equal length: a 1x1 convolution, then BatchNorm (batch statistics, as in training) and ReLU
    s, t = arr(B, 2, 3), arr(B, 3, 3, seed=1, positive=True)
    parts, _, modules, _ = run(FitNets(), {"block2": s}, {"block2": t})
    w = modules["block2"].conv.weight.detach().numpy()  # (3, 2, 1)
    bias = modules["block2"].conv.bias.detach().numpy()
    z = np.zeros((B, 3, 3))
    for i in range(B):
        for c in range(3):
            for pos in range(3):
                z[i, c, pos] = sum(w[c, k, 0] * s[i, k, pos] for k in range(2)) + bias[c]
    mean, var = z.mean(axis=(0, 2), keepdims=True), z.var(axis=(0, 2), keepdims=True)
    r = np.maximum(0.0, (z - mean) / np.sqrt(var + 1e-5))  # BatchNorm starts at weight 1, bias 0
    assert parts["feat"].item() == pytest.approx(np.mean((r - t) ** 2), rel=1e-5)


# ---------------------------------------------------------------- AT
def hand_attention(f):
    """(B, C, *S): the channel mean of f^2 at each position, flattened, divided by its L2 norm."""
    out = []
    for sample in f:
        a = np.array(
            [
                np.mean([sample[c][pos] ** 2 for c in range(len(sample))])
                for pos in np.ndindex(sample.shape[1:])
            ]
        )
        out.append(a / np.sqrt(np.sum(a**2)))
    return np.array(out)


def hand_at(f_s, f_t):
    return np.mean((hand_attention(f_s) - hand_attention(f_t)) ** 2)


def avg_pool_by(f, k):
    """Non-overlapping average pooling by k along every spatial axis (what adaptive pooling does
    when the size divides)."""
    if f.ndim == 3:
        return f.reshape(f.shape[0], f.shape[1], -1, k).mean(-1)
    b, c, h, w = f.shape
    return f.reshape(b, c, h // k, k, w // k, k).mean(axis=(3, 5))


def test_at_matches_hand_attention_maps_over_paired_blocks():
    s1, t1 = arr(B, 3, 8), arr(B, 5, 8, seed=1)  # 1-D maps, different widths
    s2, t2 = arr(B, 2, 4, 4, seed=2), arr(B, 4, 4, 4, seed=3)  # 2-D maps
    parts, b, modules, _ = run(AT(), {"block1": s1, "block2": s2}, {"block2": t1, "block3": t2})
    assert parts["at_block1"].item() == pytest.approx(hand_at(s1, t1), rel=1e-5)
    assert parts["at_block2"].item() == pytest.approx(hand_at(s2, t2), rel=1e-5)
    expected = hand_at(s1, t1) + hand_at(s2, t2)
    assert parts["feat"].item() == pytest.approx(expected, rel=1e-5)
    assert parts["loss"].item() == pytest.approx(parts["ce"].item() + 1000 * expected, rel=1e-5)
    check_grads(parts, b, modules)


@pytest.mark.parametrize(
    "s_shape,t_shape",
    [((3, 8), (4, 4)), ((3, 4), (4, 8)), ((3, 8, 8), (2, 4, 4)), ((3, 2, 2), (2, 4, 4))],
)
def test_at_pools_the_larger_map_to_the_smaller(s_shape, t_shape):
    s, t = arr(B, *s_shape), arr(B, *t_shape, seed=1)
    parts, b, modules, _ = run(AT(), {"block1": s}, {"block1": t})
    k = s_shape[1] // t_shape[1] if s_shape[1] > t_shape[1] else t_shape[1] // s_shape[1]
    s, t = (avg_pool_by(s, k), t) if s_shape[1] > t_shape[1] else (s, avg_pool_by(t, k))
    assert parts["feat"].item() == pytest.approx(hand_at(s, t), rel=1e-5)
    check_grads(parts, b, modules)


def test_at_of_identical_maps_is_zero_and_ignores_width():
    f = arr(B, 3, 4, 4)
    assert run(AT(), {"block1": f}, {"block1": f})[0]["feat"].item() == pytest.approx(0, abs=1e-7)
    # the same attention from a map whose channels are repeated: still zero
    twice = np.concatenate([f, f], axis=1)
    assert run(AT(), {"block1": f}, {"block1": twice})[0]["feat"].item() == pytest.approx(0, abs=1e-7)


# ---------------------------------------------------------------- SP
def hand_sp(f_s, f_t):
    def gram(f):
        f = f.reshape(len(f), -1)
        g = np.array(
            [[sum(f[i, d] * f[j, d] for d in range(f.shape[1])) for j in range(B)] for i in range(B)]
        )
        return g / np.sqrt((g**2).sum(axis=1, keepdims=True))  # rows to unit length

    return np.sum((gram(f_t) - gram(f_s)) ** 2) / B**2


@pytest.mark.parametrize("s_shape,t_shape", [((5,), (7,)), ((3, 6), (2, 4)), ((2, 3, 3), (4, 2, 2))])
def test_sp_matches_hand_gram_matrices(s_shape, t_shape):
    s, t = arr(B, *s_shape), arr(B, *t_shape, seed=1)
    parts, b, modules, _ = run(SP(), {"block3": s}, {"block3": t})
    assert parts["feat"].item() == pytest.approx(hand_sp(s, t), rel=1e-5)
    assert parts["loss"].item() == pytest.approx(parts["ce"].item() + 3000 * hand_sp(s, t), rel=1e-5)
    check_grads(parts, b, modules)


def test_sp_of_identical_or_rescaled_features_is_zero():
    f = arr(B, 3, 4)
    assert run(SP(), {"block3": f}, {"block3": f})[0]["feat"].item() == pytest.approx(0, abs=1e-7)
    assert run(SP(), {"block3": 5 * f}, {"block3": f})[0]["feat"].item() == pytest.approx(0, abs=1e-7)


# ---------------------------------------------------------------- RKD
def hand_rkd(s, t):
    def dist(e):
        d = np.zeros((B, B))
        for i in range(B):
            for j in range(B):
                d[i, j] = math.sqrt(sum((e[i, k] - e[j, k]) ** 2 for k in range(e.shape[1])))
        return d / d[~np.eye(B, dtype=bool)].mean()

    def ang(e):
        a = np.zeros((B, B, B))
        for j in range(B):  # the vertex
            for i in range(B):
                for k in range(B):
                    if i != j and k != j:
                        u, v = e[i] - e[j], e[k] - e[j]
                        a[j, i, k] = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
        return a

    return huber(dist(s), dist(t)), huber(ang(s), ang(t))


def test_rkd_matches_hand_distances_and_angles():
    s, t = arr(B, 5), arr(B, 7, seed=1)  # widths may differ
    parts, b, modules, _ = run(RKD(), {"penultimate": s}, {"penultimate": t})
    d, a = hand_rkd(s, t)
    assert parts["rkd_distance"].item() == pytest.approx(d, rel=1e-5)
    assert parts["rkd_angle"].item() == pytest.approx(a, rel=1e-5)
    assert parts["feat"].item() == pytest.approx(25 * d + 50 * a, rel=1e-5)
    assert parts["loss"].item() == pytest.approx(parts["ce"].item() + 25 * d + 50 * a, rel=1e-5)
    check_grads(parts, b, modules)
    parts = run(RKD(), {"penultimate": s}, {"penultimate": t}, {"w_a": 10, "feat_weight": 0.5})[0]
    assert parts["loss"].item() == pytest.approx(parts["ce"].item() + 0.5 * (25 * d + 10 * a), rel=1e-5)


def test_rkd_uses_the_huber_regime_beyond_one():
    # teacher distances spread far apart: some |psi_s - psi_t| exceed 1, the linear branch
    s, t = arr(B, 3), np.array([[0.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [30.0, 0, 0]])
    parts = run(RKD(), {"penultimate": s}, {"penultimate": t})[0]
    assert parts["rkd_distance"].item() == pytest.approx(hand_rkd(s, t)[0], rel=1e-5)


def test_rkd_of_identical_or_rescaled_embeddings_is_zero():
    f = arr(B, 6)
    assert run(RKD(), {"penultimate": f}, {"penultimate": f})[0]["feat"].item() == pytest.approx(0, abs=1e-6)
    assert run(RKD(), {"penultimate": 3 * f}, {"penultimate": f})[0]["feat"].item() == pytest.approx(
        0, abs=1e-6
    )


# ---------------------------------------------------------------- PKT
def hand_pkt(s, t, eps=1e-7):
    def probs(f):
        unit = [f[i] / (math.sqrt(sum(x * x for x in f[i])) + eps) for i in range(B)]
        k = np.array([[(unit[i] @ unit[j] + 1) / 2 for j in range(B)] for i in range(B)])
        return np.array([k[i] / k[i].sum() for i in range(B)])

    p_s, p_t = probs(s), probs(t)
    return np.mean(
        [[p_t[i, j] * math.log((p_t[i, j] + eps) / (p_s[i, j] + eps)) for j in range(B)] for i in range(B)]
    )


def test_pkt_matches_hand_probabilities():
    s, t = arr(B, 5), arr(B, 8, seed=1)
    parts, b, modules, _ = run(PKT(), {"penultimate": s}, {"penultimate": t})
    assert parts["feat"].item() == pytest.approx(hand_pkt(s, t), rel=1e-5)
    assert parts["loss"].item() == pytest.approx(parts["ce"].item() + 30000 * hand_pkt(s, t), rel=1e-4)
    check_grads(parts, b, modules)


def test_pkt_of_identical_features_is_zero():
    f = arr(B, 5)
    assert run(PKT(), {"penultimate": f}, {"penultimate": f})[0]["feat"].item() == pytest.approx(0, abs=1e-7)


# ---------------------------------------------------------------- CC
def test_cc_embeds_both_sides_and_matches_hand_correlation():
    s, t = arr(B, 6), arr(B, 5, seed=1)
    parts, b, modules, _ = run(CC(), {"penultimate": s}, {"penultimate": t}, {"feat_dim": 3})
    assert modules["embed_s"](b.s_feats["penultimate"]).shape == (B, 3)
    assert modules["embed_t"](b.t_feats["penultimate"]).shape == (B, 3)

    def embed(lin, x):
        w, bias = lin.weight.detach().numpy(), lin.bias.detach().numpy()
        return np.array(
            [
                [sum(w[j, k] * x[i, k] for k in range(x.shape[1])) + bias[j] for j in range(3)]
                for i in range(B)
            ]
        )

    delta = np.abs(embed(modules["embed_s"], s) - embed(modules["embed_t"], t))
    cc = np.mean([sum(delta[i, d] * delta[i + 1, d] for d in range(3)) for i in range(B - 1)])
    assert parts["feat"].item() == pytest.approx(cc, rel=1e-5)
    assert parts["loss"].item() == pytest.approx(parts["ce"].item() + 0.02 * cc, rel=1e-5)
    check_grads(parts, b, modules)  # the teacher's embedding trains, its features do not


def test_cc_takes_maps_and_is_zero_for_identical_embeddings():
    f = arr(B, 2, 3)
    method = CC()
    _, _, modules, _ = run(method, {"penultimate": f}, {"penultimate": f})
    assert modules["embed_s"].in_features == 6 and modules["embed_t"].out_features == 128
    modules["embed_t"].load_state_dict(modules["embed_s"].state_dict())
    parts = run(method, {"penultimate": f}, {"penultimate": f}, modules=modules)[0]
    assert parts["feat"].item() == pytest.approx(0, abs=1e-7)


# ---------------------------------------------------------------- NST
def hand_nst(f_s, f_t):
    def unit_channels(f):  # (B, C, N), each channel's spatial vector to unit length
        f = f.reshape(f.shape[0], f.shape[1], -1)
        return f / np.sqrt((f**2).sum(axis=2, keepdims=True))

    def kernel_mean(a, b):  # the mean over channel pairs of (a_i . b_j)^2, one per sample
        return np.array([np.mean([[(ai @ bj) ** 2 for bj in b[n]] for ai in a[n]]) for n in range(B)])

    g_s, g_t = unit_channels(f_s), unit_channels(f_t)
    return np.mean(kernel_mean(g_t, g_t) + kernel_mean(g_s, g_s) - 2 * kernel_mean(g_s, g_t))


def test_nst_matches_hand_kernel_sums_over_paired_blocks():
    s1, t1 = arr(B, 3, 6), arr(B, 5, 6, seed=1, positive=True)  # 1-D maps, different widths
    s2, t2 = arr(B, 2, 3, 3, seed=2), arr(B, 4, 3, 3, seed=3)  # 2-D maps
    parts, b, modules, _ = run(NST(), {"block2": s1, "block3": s2}, {"block2": t1, "block3": t2})
    assert parts["nst_block2"].item() == pytest.approx(hand_nst(s1, t1), rel=1e-5)
    assert parts["nst_block3"].item() == pytest.approx(hand_nst(s2, t2), rel=1e-5)
    expected = hand_nst(s1, t1) + hand_nst(s2, t2)
    assert parts["loss"].item() == pytest.approx(parts["ce"].item() + 50 * expected, rel=1e-5)
    check_grads(parts, b, modules)


@pytest.mark.parametrize("s_shape,t_shape", [((3, 8), (4, 4)), ((2, 2, 2), (3, 4, 4))])
def test_nst_pools_the_larger_map_to_the_smaller(s_shape, t_shape):
    s, t = arr(B, *s_shape), arr(B, *t_shape, seed=1)
    parts = run(NST(), {"block1": s}, {"block1": t})[0]
    s, t = (avg_pool_by(s, 2), t) if s_shape[1] > t_shape[1] else (s, avg_pool_by(t, 2))
    assert parts["feat"].item() == pytest.approx(hand_nst(s, t), rel=1e-5)


def test_nst_of_identical_maps_is_zero():
    f = arr(B, 3, 2, 3)
    assert run(NST(), {"block1": f}, {"block1": f})[0]["feat"].item() == pytest.approx(0, abs=1e-6)


# ---------------------------------------------------------------- precision
@pytest.mark.parametrize(
    "method,shape,name",
    [
        (AT(), (3, 4, 4), "block1"),
        (SP(), (6,), "block3"),
        (RKD(), (6,), "penultimate"),
        (PKT(), (6,), "penultimate"),
        (NST(), (3, 8), "block1"),
    ],
    ids=lambda x: getattr(x, "name", ""),
)
def test_losses_are_float32_on_bfloat16_features(method, shape, name):
    s, t = arr(B, *shape), arr(B, *shape, seed=1)
    exact = run(method, {name: s}, {name: t})[0]["feat"].item()
    b = batch({name: s}, {name: t})
    b.s_feats = {k: v.detach().bfloat16() for k, v in b.s_feats.items()}
    b.t_feats = {k: v.bfloat16() for k, v in b.t_feats.items()}
    feat = method.loss(b, method.resolve(), method.modules({}, {}, INFO, {}))["feat"]
    assert feat.dtype == torch.float32 and feat.item() == pytest.approx(exact, rel=0.1, abs=1e-4)


# ---------------------------------------------------------------- on the real model families
PAIRS = {  # (student spec, teacher spec, input shape): block counts, widths and sizes differ
    "cnn1d": (
        {"family": "cnn1d", "channels": 4, "layers": 2},
        {"family": "cnn1d", "channels": 6, "layers": 3},
        (40,),
    ),
    "resnet": (
        {"family": "resnet", "depth": 8, "width": 4},
        {"family": "resnet", "depth": 8, "width": 8},
        (3, 8, 8),
    ),
    "cnn2d": (
        {"family": "cnn2d", "channels": 4, "layers": 2},
        {"family": "cnn2d", "channels": 4, "layers": 4},
        (3, 16, 16),
    ),
    "mlp": ({"family": "mlp", "hidden": (6, 5)}, {"family": "mlp", "hidden": (9, 8, 7)}, (10,)),
}


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("method", ALL, ids=lambda m: m.name)
def test_one_step_on_real_models(method, pair):
    from kdflow.models import build_model

    s_spec, t_spec, input_shape = PAIRS[pair]
    if method.feature_kind == "map" and pair == "mlp":
        pytest.skip("MLP blocks are vectors")
    torch.manual_seed(0)
    student, teacher = build_model(s_spec, input_shape, 3), build_model(t_spec, input_shape, 3).eval()
    x = torch.randn(B, *input_shape)
    s_logits, s_all = student.forward_features(x)
    with torch.no_grad():
        t_logits, t_all = teacher.forward_features(x)
    hp = method.resolve()
    s_names, t_names = method.layers(list(s_all), list(t_all), hp)
    s_feats, t_feats = {n: s_all[n] for n in s_names}, {n: t_all[n] for n in t_names}
    modules = method.modules(shapes(s_feats), shapes(t_feats), INFO, hp)
    b = Batch(s_logits, t_logits, torch.tensor([0, 1, 2, 0]), torch.arange(B), s_feats, t_feats)
    parts = method.loss(b, hp, modules)
    assert torch.isfinite(parts["loss"]) and parts["feat"].item() >= -1e-6
    parts["feat"].backward()  # the method's own term reaches the student's first layer and its modules
    assert next(student.parameters()).grad.abs().sum() > 0
    assert all(p.grad is not None for p in modules.parameters())


def test_fitnets_refuses_a_map_that_one_convolution_cannot_reach():
    # one axis must shrink (8 -> 3) and the other grow (2 -> 4): no single conv or transposed conv
    with pytest.raises(ValueError, match="no single conv"):
        FitNets().modules({"block2": (3, 8, 2)}, {"block2": (5, 3, 4)}, INFO, FitNets().resolve())
