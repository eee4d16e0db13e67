"""diffkd: Huang et al., "Knowledge Diffusion for Distillation", NeurIPS 2023.

    s = W f_s                                   # 1x1 conv: student channels -> the target's
    t = E(f_t).detach() if use_ae else f_t      # the target: a linear AE's latent, or the feature
    gamma = adapter(s)                          # (B,) in (0, 1): how clean the student feature is
    x = gamma * s + (1 - gamma) * noise         # where denoising starts
    x = DDIM(eps_model, x)                      # the last `inference_steps` of a 2 x steps schedule
    feat = MSE(proj(x), t)
    ddim = MSE(eps_model(sqrt(a_k) t + sqrt(1 - a_k) n, k), n)    # k ~ U{0..999}, n ~ N(0, I)
    ae   = MSE(D(E(f_t)), f_t)
    loss = ce_weight * CE(s, y) + feat_weight * (feat + ddim + ae [+ the same on the logits])

A light noise-prediction model is trained on the teacher's features (the `ddim` term) and, in the
same step, denoises the student's feature, which then matches the teacher's. The denoising runs
with gradients: through it the student, the adapter and the noise model all learn from `feat`.

Defaults from the authors' image_classification_sota (the DiffKD repository's `classification`
submodule): lib/models/losses/diffkd/diffkd.py (5 inference steps, 1000 training steps; the AE's
latent C // 2 when no width is given), diffkd_modules.py (the models below), scheduling_ddim.py
(linear betas 1e-4..0.02, no clipping, the final alpha 1, eta 0), lib/models/losses/kd_loss.py
(`diffkd`: the last stage's feature with kernel 3 and the AE on, plus the logits with kernel 1, no
AE and KL at tau 1) and configs/strategies/distill/diffkd/diffkd_b1.yaml (both loss weights 1).
That config fixes the AE latent at 1024 channels for ResNet teachers of 512 and 2048; here the
latent is the teacher's C // 2 (diffkd.py's own default, and what the paper's AE is for: a smaller
space to diffuse in) unless `ae_channels` sets it.

Shapes: the authors read ResNet stages of equal size. Here a 1-D map (C, L) uses Conv1d/BatchNorm1d
where they use the 2-D ones; maps of different sizes are average-pooled to the smaller
(base.pool_to_common) before the 1x1 connector; a vector is a map of one position; maps of
different rank are flattened to sequences. BatchNorm needs two values per channel: a batch of one
sample whose feature has one position (vectors, the logits) cannot be trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdflow.methods.base import Batch, Method, ModuleInfo, Param, combine, kd_term, pool_to_common, weights

BETA_START, BETA_END = 1e-4, 0.02  # scheduling_ddim.py: DDIMScheduler's linear schedule
TIME_ROWS = 1280  # diffkd_modules.py: the time embedding has more rows than the 1000 steps


# ---------------------------------------------------------------- the DDIM schedule


def alphas_cumprod(train_steps: int) -> torch.Tensor:
    """(train_steps,) float32: prod_{i <= k} (1 - beta_i), betas linear in [BETA_START, BETA_END]."""
    betas = torch.linspace(BETA_START, BETA_END, train_steps, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, 0)


def denoising_steps(train_steps: int, steps: int) -> list[tuple[int, int]]:
    """(t, t_prev) of each update. The authors schedule 2 x steps and run only the second half:
    denoising starts from a mildly noisy student feature, not from pure noise. t_prev < 0: alpha 1."""
    stride = train_steps // (2 * steps)
    return [(i * stride, (i - 1) * stride) for i in reversed(range(steps))]


def ddim_step(x: torch.Tensor, eps: torch.Tensor, a_t: float, a_prev: float) -> torch.Tensor:
    """Deterministic DDIM (eta 0, x0 not clipped): estimate x0 from the predicted noise, then move
    it to the previous step's noise level along the same noise."""
    x0 = (x - (1.0 - a_t) ** 0.5 * eps) / a_t**0.5
    return a_prev**0.5 * x0 + (1.0 - a_prev) ** 0.5 * eps


def noisy_start(f: torch.Tensor, noise: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """scheduling_ddim.py add_noise_diff2: weights gamma and 1 - gamma themselves, not their roots."""
    g = gamma.view(-1, *[1] * (f.dim() - 1))  # (B, 1, ...)
    return g * f + (1.0 - g) * noise


def add_noise(x0: torch.Tensor, noise: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The forward process at each sample's step: sqrt(a) x0 + sqrt(1 - a) noise, a (B,)."""
    a = a.view(-1, *[1] * (x0.dim() - 1))
    return a.sqrt() * x0 + (1.0 - a).sqrt() * noise


# ---------------------------------------------------------------- the modules


def conv(dims: int, c_in: int, c_out: int, kernel: int = 1) -> nn.Module:
    return (nn.Conv1d if dims == 1 else nn.Conv2d)(c_in, c_out, kernel, padding=kernel // 2)


def norm(dims: int, c: int) -> nn.Module:
    return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(c)


class Bottleneck(nn.Module):
    """x + [1x1 to C // reduction, 3x3, 1x1 back to C], each conv followed by BN (ReLU between)."""

    def __init__(self, dims: int, c: int, reduction: int):
        super().__init__()
        mid = max(1, c // reduction)  # a narrow teacher still gets one channel
        self.block = nn.Sequential(
            conv(dims, c, mid),
            norm(dims, mid),
            nn.ReLU(),
            conv(dims, mid, mid, 3),
            norm(dims, mid),
            nn.ReLU(),
            conv(dims, mid, c),
            norm(dims, c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class NoiseModel(nn.Module):
    """Predicts the noise in x at step t: a learned embedding of t added to every position, then two
    bottlenecks (reduction 4) and a 1x1 conv + BN (kernel 3: maps); for the logits (kernel 1) two
    1x1 expand-by-4 MLP blocks instead (diffkd_modules.py DiffusionModel)."""

    def __init__(self, dims: int, c: int, kernel: int):
        super().__init__()
        self.dims = dims
        self.time_embedding = nn.Embedding(TIME_ROWS, c)
        if kernel == 3:
            self.pred = nn.Sequential(
                Bottleneck(dims, c, 4), Bottleneck(dims, c, 4), conv(dims, c, c), norm(dims, c)
            )
        else:
            wide = 4 * c
            self.pred = nn.Sequential(
                conv(dims, c, wide),
                norm(dims, wide),
                nn.ReLU(),
                conv(dims, wide, c),
                norm(dims, c),
                conv(dims, c, wide),
                norm(dims, wide),
                nn.ReLU(),
                conv(dims, wide, c),
            )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B, C, *S); t () or (B,) long."""
        emb = self.time_embedding(t).view(-1, x.shape[1], *[1] * self.dims)  # (1 or B, C, 1, ...)
        return self.pred(x + emb)


class NoiseAdapter(nn.Module):
    """gamma (B,) in (0, 1) from the student feature: a bottleneck (reduction 8; kernel 1: a 1x1
    expand-by-2 block), averaged over positions, Linear(C, 2), softmax, the first probability."""

    def __init__(self, dims: int, c: int, kernel: int):
        super().__init__()
        if kernel == 3:
            self.feat = Bottleneck(dims, c, 8)
        else:
            self.feat = nn.Sequential(
                conv(dims, c, 2 * c), norm(dims, 2 * c), nn.ReLU(), conv(dims, 2 * c, c), norm(dims, c)
            )
        self.pred = nn.Linear(c, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.feat(x).flatten(2).mean(2)  # (B, C)
        return self.pred(h).softmax(1)[:, 0]


class AutoEncoder(nn.Module):
    """Linear: encoder 1x1 conv + BN to the latent, decoder 1x1 conv back."""

    def __init__(self, dims: int, c: int, latent: int):
        super().__init__()
        self.encoder = nn.Sequential(conv(dims, c, latent), norm(dims, latent))
        self.decoder = conv(dims, latent, c)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(x)
        return hidden, self.decoder(hidden)


class DiffKDModule(nn.Module):
    """One distilled pair (diffkd.py DiffKD): connector, optional AE, noise model, adapter, proj."""

    def __init__(
        self,
        s_channels: int,
        t_channels: int,
        dims: int,
        kernel: int,
        latent: int,
        steps: int,
        train_steps: int,
    ):
        super().__init__()
        self.ae = AutoEncoder(dims, t_channels, latent) if latent else None
        c = latent or t_channels  # the width everything below works in
        self.trans = conv(dims, s_channels, c)
        self.model = NoiseModel(dims, c, kernel)
        self.adapter = NoiseAdapter(dims, c, kernel)
        self.proj = nn.Sequential(conv(dims, c, c), norm(dims, c))
        acp = alphas_cumprod(train_steps)
        self.register_buffer("alphas_cumprod", acp, persistent=False)  # derived from hp: not saved
        schedule = denoising_steps(train_steps, steps)
        self.register_buffer("timesteps", torch.tensor([t for t, _ in schedule]), persistent=False)
        # python floats: the loop's coefficients need no device round trip
        self.alphas = [(acp[t].item(), acp[p].item() if p >= 0 else 1.0) for t, p in schedule]

    def denoise(self, s: torch.Tensor) -> torch.Tensor:
        """The student feature (B, C, *S), noised by the adapter's gamma, then the DDIM updates."""
        x = noisy_start(s, torch.randn_like(s), self.adapter(s))
        for t, (a_t, a_prev) in zip(self.timesteps, self.alphas):
            x = ddim_step(x, self.model(x, t), a_t, a_prev)
        return x

    def ddim_loss(self, target: torch.Tensor) -> torch.Tensor:
        """Noise-prediction MSE on the (detached) teacher target at a random step per sample."""
        noise = torch.randn_like(target)
        k = torch.randint(0, len(self.alphas_cumprod), (target.shape[0],), device=target.device)
        pred = self.model(add_noise(target, noise, self.alphas_cumprod[k]), k)
        return F.mse_loss(pred.float(), noise.float())

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor) -> tuple:
        """(refined student, target, ddim loss, AE reconstruction loss or None)."""
        rec = None
        if self.ae is not None:
            hidden, out = self.ae(f_t)
            rec = F.mse_loss(out.float(), f_t.float())
            f_t = hidden.detach()  # the AE learns from reconstruction only
        refined = self.proj(self.denoise(self.trans(f_s)))
        return refined, f_t, self.ddim_loss(f_t), rec


# ---------------------------------------------------------------- shapes


def common_rank(s_shape: tuple[int, ...], t_shape: tuple[int, ...]) -> int:
    """The spatial rank both features are read at: the maps' when they agree, a map's when the other
    is a vector, 1 for two vectors or maps of different rank."""
    ranks = {len(s_shape) - 1, len(t_shape) - 1} - {0}
    return ranks.pop() if len(ranks) == 1 else 1


def as_map(f: torch.Tensor, rank: int) -> torch.Tensor:
    """(B, C, *S) with len(S) = rank: a vector as one position, another rank's map as a sequence."""
    if f.dim() - 2 == rank:
        return f
    if f.dim() == 2:
        return f.view(*f.shape, *[1] * rank)
    return f.flatten(2)


class DiffKD(Method):
    name = "diffkd"
    paper = "Huang et al., NeurIPS 2023"
    source = (
        "hunto/image_classification_sota (hunto/DiffKD's classification): lib/models/losses/diffkd/"
        "{diffkd,diffkd_modules,scheduling_ddim}.py, lib/models/losses/kd_loss.py (diffkd), "
        "configs/strategies/distill/diffkd/diffkd_b1.yaml"
    )
    # search: a decade either side of kd_loss_weight 1 (every config). The terms are MSEs on a
    # BN-normalised latent and on unit noise, of order one like the CE, so 0.1 barely moves the
    # student and 10 outweighs the labels; log, since the weight scales the gradient
    params = {
        **weights(1.0, 0.1, 10.0),
        # the loop's stride is train_steps // (2 x inference_steps): at least 1
        "inference_steps": Param(
            5, valid=(1, 500), doc="DDIM updates on the student feature (of a 2x schedule)"
        ),
        # at most the time embedding's 1280 rows
        "train_steps": Param(
            1000, valid=(2, TIME_ROWS), doc="steps of the noise schedule (num_train_timesteps)"
        ),
        "use_ae": Param(True, doc="diffuse in a linear autoencoder's latent of the teacher feature"),
        "ae_channels": Param(0, doc="the latent's channels (0: teacher channels // 2)"),
        "diffuse_logits": Param(True, doc="also denoise the logits (kernel 1, no AE) under KL"),
        "logit_tau": Param(1.0, doc="temperature of that KL (kd_loss.py tau)"),
    }
    tune = ("feat_weight",)
    feature_kind = "any"
    layer_roles = "last"  # ResNet's layer4

    def modules(self, s_shapes: dict, t_shapes: dict, info: ModuleInfo, hp: dict) -> nn.Module:
        (s_shape,), (t_shape,) = s_shapes.values(), t_shapes.values()
        dims = common_rank(s_shape, t_shape)
        latent = (hp["ae_channels"] or max(1, t_shape[0] // 2)) if hp["use_ae"] else 0
        steps = (hp["inference_steps"], hp["train_steps"])
        if 2 * steps[0] > steps[1]:
            raise ValueError(f"diffkd: 2 x inference_steps {steps[0]} exceeds train_steps {steps[1]}")
        parts = {"feat": DiffKDModule(s_shape[0], t_shape[0], dims, 3, latent, *steps)}
        if hp["diffuse_logits"]:
            k = info.num_classes  # logits as (B, K, 1): 1x1 convs are Linear layers
            parts["logits"] = DiffKDModule(k, k, 1, 1, 0, *steps)
        return nn.ModuleDict(parts)

    def loss(self, b: Batch, hp: dict, modules: nn.Module) -> dict:
        (f_s,), (f_t,) = b.s_feats.values(), b.t_feats.values()
        rank = common_rank(tuple(f_s.shape[1:]), tuple(f_t.shape[1:]))
        f_s, f_t = pool_to_common(as_map(f_s, rank), as_map(f_t, rank))
        refined, target, ddim, rec = modules["feat"](f_s, f_t)
        parts = {"diffkd_feat": F.mse_loss(refined.float(), target.float()), "ddim": ddim}
        if rec is not None:
            parts["ae"] = rec
        if "logits" in modules:
            refined, target, ddim, _ = modules["logits"](b.s_logits[..., None], b.t_logits[..., None])
            parts["diffkd_logits"] = kd_term(refined[..., 0], target[..., 0], hp["logit_tau"])
            parts["ddim_logits"] = ddim
        return combine(b, hp, sum(parts.values()), **parts)
