"""An MLP ladder VAE (Sønderby et al. 2016) for flat or 1-D inputs, shaped for KD4DGM's noise sharing.

    vae = LadderVAE((40,), hidden=64, layers=3, latent=8)  # MNIST-1D; digits: LadderVAE((1, 8, 8))
    out = vae.elbo(x, beta=min(epoch / 25, 1.0))  # out["loss"].backward(); the authors' KL warm-up
    eps = vae.sample_noise(128)  # [eps_1 .. eps_L], each (128, d_l)
    gen = vae.generate(eps)  # gen.x (128, 40); gen.mu, gen.sigma, gen.z per layer

Every list over layers runs BOTTOM TO TOP, as in the authors' code: index 0 is z_1 (next to x), index
L-1 is the top z_L. `mu`/`sigma` of a `Generation` have L-1 entries (the conditionals p(z_l | z_{l+1}),
l = 1..L-1; the top has none), `z` has L.

Model (follows the authors' compressVAE/models/vae/LVAE.py, class LVAE, with MLP blocks for the conv ResNets):

    p(z_L) = N(0, I)
    p(z_l | z_{l+1}) = N(mu_l, sigma_l^2)             # MLP `decoder[l-1]` on z_{l+1}
    p(x | z_1) = N(mu_x, decoder_std^2 I)              # MLP `output` on z_1; decoder_std fixed
    q(z_L | x) = N(mu^_L, sigma^_L^2)                  # bottom-up only
    q(z_l | x, z_{l+1}) = precision-weighted combination of (mu^_l, sigma^_l) and (mu_l, sigma_l)

where d_l = encoder[l-1](d_{l-1}) (d_0 = x) is the deterministic bottom-up path and (mu^_l, sigma^_l)
its head. Every sigma is softplus(a) / ln 2 + 1e-6, the authors' `iso_gauss_param` (softplus(0)/ln 2 = 1,
so an untrained layer starts at unit std). decoder_std = sqrt(beta / 2) with beta = 0.1 is the authors'
`transfer_beta_sigma` (compressVAE/main.py): a fixed-variance Gaussian decoder stands in for beta = 0.1.

Differences from the authors, and why: MLP blocks (Linear-ELU-Linear-ELU, then a linear head) instead of
conv ResNet blocks with BatchNorm: the inputs are flat, and without BatchNorm a sample does not depend on
the rest of its batch (the authors' teacher generates with BatchNorm in train mode); ELU rather than
ReLU, so a narrow student cannot lose units to dead ReLUs. The decoder outputs only mu_x (the authors'
also output a log-variance that the fixed std overrides). The KL is analytic per layer given the sampled
parent, as the authors' `nelbo` (helpers/distributions.py `kl_gaussian`). For distillation the student's
`encoder` is frozen (`student.encoder.requires_grad_(False)`), as in the authors' main.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)
STD_FLOOR = 1e-6  # the authors' EPS_STD: keeps precisions finite


@dataclass(frozen=True)
class Generation:
    """One top-down pass. Lists run bottom to top; `mu`/`sigma` hold p(z_l | z_{l+1}) for l < L."""

    x: torch.Tensor  # (B, *input_shape): the decoder mean mu_x
    mu: list[torch.Tensor]  # L-1 x (B, d_l)
    sigma: list[torch.Tensor]  # L-1 x (B, d_l)
    z: list[torch.Tensor]  # L x (B, d_l): the latents the conditionals were evaluated on / produced


def gaussian_log_prob(x: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """log N(x; mu, sigma^2) summed over the last dim: (..., d) -> (...)."""
    sigma = torch.as_tensor(sigma, dtype=mu.dtype, device=mu.device)
    return (-0.5 * ((x - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * LOG_2PI).sum(-1)


def gaussian_kl(mu_q, s_q, mu_p, s_p) -> torch.Tensor:
    """KL(N(mu_q, s_q^2) || N(mu_p, s_p^2)) summed over the last dim: (..., d) -> (...)."""
    kl = torch.log(s_p / s_q) + (s_q**2 + (mu_q - mu_p) ** 2) / (2 * s_p**2) - 0.5
    return kl.sum(-1)


def precision_weighted(mu1, s1, mu2, s2) -> tuple[torch.Tensor, torch.Tensor]:
    """The ladder posterior: N(mu1, s1^2) * N(mu2, s2^2), renormalised (authors' `prec_weighted_com`)."""
    p1, p2 = s1**-2, s2**-2
    var = 1.0 / (p1 + p2)
    return (mu1 * p1 + mu2 * p2) * var, var.sqrt()


class _Block(nn.Module):
    """Linear-ELU-Linear-ELU body and a linear head; returns (hidden, head), like the authors' ConvRMLP."""

    def __init__(self, d_in: int, hidden: int, d_out: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU())
        self.head = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return h, self.head(h)


def _side(n: int, halvings: int) -> int:
    """A side after `halvings` 3x3 stride-2 convs with padding 1: ceil(n / 2) each time."""
    for _ in range(halvings):
        n = (n + 1) // 2
    return n


class _ConvIn(nn.Module):
    """The first bottom-up block of a convolutional ladder VAE: flat x -> image -> two 3x3 stride-2
    convs (channels, 2 x channels) -> Linear to `hidden`; returns (hidden, head) like _Block."""

    def __init__(self, shape: tuple[int, int, int], channels: int, hidden: int, d_out: int):
        super().__init__()
        c, h, w = shape
        self.shape = shape
        self.body = nn.Sequential(
            nn.Conv2d(c, channels, 3, 2, 1),
            nn.ELU(),
            nn.Conv2d(channels, 2 * channels, 3, 2, 1),
            nn.ELU(),
            nn.Flatten(),
            nn.Linear(2 * channels * _side(h, 2) * _side(w, 2), hidden),
            nn.ELU(),
        )
        self.head = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x.reshape(-1, *self.shape)).reshape(*x.shape[:-1], -1)
        return h, self.head(h)


class _ConvOut(nn.Module):
    """p(x | z_1)'s mean for images: Linear -> (2 x channels, ceil(H/4), ceil(W/4)) -> two 4x4
    stride-2 transposed convs -> cropped to (C, H, W), flattened; returns (hidden map, mean)."""

    def __init__(self, shape: tuple[int, int, int], channels: int, d_in: int):
        super().__init__()
        c, h, w = shape
        self.shape, self.start = shape, (2 * channels, _side(h, 2), _side(w, 2))
        self.body = nn.Sequential(nn.Linear(d_in, 2 * channels * _side(h, 2) * _side(w, 2)), nn.ELU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * channels, channels, 4, 2, 1),
            nn.ELU(),
            nn.ConvTranspose2d(channels, c, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lead = z.shape[:-1]
        h = self.body(z)
        c, height, width = self.shape
        x = self.up(h.reshape(-1, *self.start))[:, :, :height, :width]
        return h, x.reshape(*lead, c * height * width)


def _gauss_params(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 2d) -> mean (..., d), std (..., d) = softplus / ln 2 + floor."""
    mu, pre = a.chunk(2, dim=-1)
    return mu, F.softplus(pre) / math.log(2) + STD_FLOOR


class LadderVAE(nn.Module):
    """Ladder VAE. `latent` is dims per layer: one int for all, or one per layer bottom to top.

    Modules: `encoder` (L bottom-up blocks, the inference path), `decoder` (L-1 conditionals,
    `decoder[l-1]` gives p(z_l | z_{l+1})) and `output` (p(x | z_1)); `decoder` + `output` are the
    generative part that distillation trains. With `channels` (images), the block that reads x and
    the block that writes its mean are convolutional (_ConvIn, _ConvOut: two stride-2 layers each,
    as the authors' CelebA LVAE downsamples before its latents); the latents stay vectors.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        hidden: int = 64,
        layers: int = 3,
        latent: int | Sequence[int] = 8,
        decoder_std: float = 0.2236,  # sqrt(0.1 / 2): the authors' beta = 0.1 as a fixed decoder std
        channels: int = 0,  # > 0: images through a conv first encoder block and a deconv output block
    ):
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        dims = [int(latent)] * layers if isinstance(latent, int) else [int(d) for d in latent]
        if len(dims) != layers:
            raise ValueError(f"latent has {len(dims)} sizes for {layers} layers: {dims}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.input_dim = math.prod(self.input_shape)
        self.dims = dims
        self.decoder_std = float(decoder_std)
        widths = [self.input_dim] + [hidden] * (layers - 1)
        self.encoder = nn.ModuleList(_Block(w, hidden, 2 * d) for w, d in zip(widths, dims))
        self.decoder = nn.ModuleList(_Block(dims[i + 1], hidden, 2 * dims[i]) for i in range(layers - 1))
        self.output = _Block(dims[0], hidden, self.input_dim)
        if channels:
            if len(self.input_shape) != 3:
                raise ValueError(f"a convolutional ladder VAE takes (C, H, W) images, not {self.input_shape}")
            self.encoder[0] = _ConvIn(self.input_shape, channels, hidden, 2 * dims[0])
            self.output = _ConvOut(self.input_shape, channels, dims[0])

    @property
    def layers(self) -> int:
        return len(self.dims)

    def latent_shapes(self) -> list[tuple[int, ...]]:
        """Per-layer latent shapes, bottom (z_1) to top (z_L), without the batch dim."""
        return [(d,) for d in self.dims]

    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """[eps_1 .. eps_L] ~ N(0, I), each (n, d_l), on the model's device and dtype."""
        p = next(self.parameters())
        return [torch.randn(n, d, generator=generator, device=p.device, dtype=p.dtype) for d in self.dims]

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)  # (B, *input_shape) -> (B, D)
        if x.shape[1] != self.input_dim:
            raise ValueError(f"input of {x.shape[1]} features, model expects {self.input_shape}")
        return x

    def _conditional(self, i: int, parent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z_{i+1} | z_{i+2}) in 0-based index i: (mu, sigma), each (..., d_i)."""
        return _gauss_params(self.decoder[i](parent)[1])

    def _x_mean(self, z1: torch.Tensor) -> torch.Tensor:
        return self.output(z1)[1]  # (..., D)

    def _bottom_up(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        h, out = x, []
        for block in self.encoder:
            h, a = block(h)
            out.append(_gauss_params(a))  # (mu^_l, sigma^_l), each (B, d_l)
        return out

    def _posterior(self, x: torch.Tensor, k: int | None, generator=None):
        """Sample the ladder posterior top-down. Returns z, q params and prior params (bottom to top)."""
        up = self._bottom_up(self._flat(x))
        if k is not None:  # k samples per x share one bottom-up pass: (B, d) -> (k, B, d)
            up = [(m.expand(k, *m.shape), s.expand(k, *s.shape)) for m, s in up]
        z, q, prior = [None] * self.layers, [None] * self.layers, [None] * (self.layers - 1)
        for i in reversed(range(self.layers)):
            mu_q, s_q = up[i]
            if i < self.layers - 1:
                prior[i] = self._conditional(i, z[i + 1])
                mu_q, s_q = precision_weighted(mu_q, s_q, *prior[i])
            noise = torch.randn(mu_q.shape, generator=generator, device=mu_q.device, dtype=mu_q.dtype)
            z[i], q[i] = mu_q + s_q * noise, (mu_q, s_q)
        return z, q, prior

    def elbo(self, x: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
        """Negative ELBO, one posterior sample; per sample summed over dims, then averaged over the batch
        (and `nelbo`, the beta = 1 bound of each example: (B,), not differentiable).

        loss = recon + beta * kl; recon = -log p(x | z_1); kl = sum_l KL(q(z_l | .) || p(z_l | z_{l+1})),
        each analytic given the sampled parent, the top against N(0, I) (authors' LVAE.nelbo).
        """
        x = self._flat(x)
        z, q, prior = self._posterior(x, None)
        recon = -gaussian_log_prob(x, self._x_mean(z[0]), self.decoder_std)  # (B,)
        top_mu, top_s = q[-1]
        kls = [gaussian_kl(*q[i], *prior[i]) for i in range(self.layers - 1)]
        kls.append(gaussian_kl(top_mu, top_s, torch.zeros_like(top_mu), torch.ones_like(top_s)))
        kl = torch.stack(kls).sum(0)  # (B,)
        out = {"loss": (recon + beta * kl).mean(), "recon": recon.mean(), "kl": kl.mean()}
        out["nelbo"] = (recon + kl).detach()  # (B,): the beta = 1 bound per example, in nats
        out.update({f"kl{i + 1}": k.mean() for i, k in enumerate(kls)})
        return out

    def _check_latents(self, z: Sequence[torch.Tensor], what: str) -> None:
        shapes = [tuple(t.shape[-1:]) for t in z]
        if shapes != self.latent_shapes():
            raise ValueError(f"{what} has shapes {shapes}, model expects {self.latent_shapes()}")

    def generate(self, eps: Sequence[torch.Tensor]) -> Generation:
        """Top-down ancestral pass on supplied noise: z_L = eps_L, z_l = mu_l + sigma_l * eps_l."""
        self._check_latents(eps, "eps")
        z, mu, sigma = [None] * self.layers, [None] * (self.layers - 1), [None] * (self.layers - 1)
        z[-1] = eps[-1]
        for i in reversed(range(self.layers - 1)):
            mu[i], sigma[i] = self._conditional(i, z[i + 1])  # on this model's own z_{l+1}
            z[i] = mu[i] + sigma[i] * eps[i]
        x = self._x_mean(z[0])
        return Generation(x.reshape(*x.shape[:-1], *self.input_shape), mu, sigma, z)

    def generate_forced(self, z_teacher: Sequence[torch.Tensor]) -> Generation:
        """Every conditional evaluated on the supplied (teacher's) latents: teacher forcing."""
        self._check_latents(z_teacher, "z_teacher")
        params = [self._conditional(i, z_teacher[i + 1]) for i in range(self.layers - 1)]
        x = self._x_mean(z_teacher[0])
        mu, sigma = [m for m, _ in params], [s for _, s in params]
        return Generation(x.reshape(*x.shape[:-1], *self.input_shape), mu, sigma, list(z_teacher))

    def log_joint(self, x: torch.Tensor, z: Sequence[torch.Tensor]) -> torch.Tensor:
        """log p(x, z_1..z_L). x (B, ...), each z (..., B, d_l) -> (..., B)."""
        self._check_latents(z, "z")
        x = self._flat(x)
        lp = gaussian_log_prob(z[-1], torch.zeros_like(z[-1]), 1.0)
        for i in range(self.layers - 1):
            lp = lp + gaussian_log_prob(z[i], *self._conditional(i, z[i + 1]))
        return lp + gaussian_log_prob(x, self._x_mean(z[0]), self.decoder_std)

    def posterior_sample(
        self, x: torch.Tensor, k: int, generator: torch.Generator | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """k draws from q(z | x): z list (bottom to top), each (k, B, d_l), and log q(z | x), (k, B)."""
        z, q, _ = self._posterior(x, k, generator)
        log_q = sum(gaussian_log_prob(zi, mu, s) for zi, (mu, s) in zip(z, q))
        return z, log_q
