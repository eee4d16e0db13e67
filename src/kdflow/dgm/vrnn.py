"""Variational RNN (Chung et al. 2015) and its data-free distillation (KD4DGM, Chen et al. CVPR 2023, A2).

    import math

    import torch
    from kdflow.dgm.vrnn import VRNN, distill_loss

    x = torch.randn(32, 40)                                   # (B, T): MNIST-1D read as 40 scalars
    teacher = VRNN(hidden=128, rnn=256, latent=16)
    teacher.elbo(x, beta=1.0)["loss"].backward()              # beta: KL warm-up weight
    student = VRNN(hidden=32, rnn=64, latent=16)              # latent must match: the z-noise is shared
    distill_loss(teacher, student, n=32, length=40)["loss"].backward()
    z, log_q = teacher.posterior_sample(x, k=100)             # importance-sampled NLL:
    nll = -(torch.logsumexp(teacher.log_joint(x, z) - log_q, 0) - math.log(100))   # (B,)

Model (authors' compressVRNN/models/vrnn/VRNN.py), h_{t-1} the recurrent state before step t:
    prior     p(z_t | h_{t-1})        = N(mu_p, exp(logvar_p)),  MLP on h
    encoder   q(z_t | x_t, h_{t-1})   = N(mu_q, exp(logvar_q)),  MLP on [phi_x(x_t), h]
    decoder   p(x_t | z_t, h_{t-1})   = N(mu_x, x_std^2),        MLP on [phi_z(z_t), h]; x_std fixed
    recurrence h_t = RNN([phi_x(x_t), phi_z(z_t)], h_{t-1})      (LSTM as the authors, or GRU)
phi_x, phi_z and every MLP are two Linear+ReLU layers of width `hidden` (authors: 512 teacher,
128 student); `rnn` is the recurrent width (authors: 1200 / 600). The authors' x_t is a 3-d pen stroke
(pen bit + 2 Gaussian offsets); here x_t is `x_dim` Gaussian values, so the pen-bit terms are dropped.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kdflow.dgm.family import Family
from kdflow.dgm.nll import effective_sample_size, fit_proposal, importance_log_weights


def gaussian_kl(mu_p, logvar_p, mu_q, logvar_q) -> torch.Tensor:
    """Elementwise KL(N(mu_p, e^logvar_p) || N(mu_q, e^logvar_q))."""
    return 0.5 * (logvar_q - logvar_p + (logvar_p.exp() + (mu_p - mu_q) ** 2) / logvar_q.exp() - 1.0)


def gaussian_logp(x, mu, logvar) -> torch.Tensor:
    """Elementwise log N(x; mu, e^logvar); logvar may be a float."""
    logvar = torch.as_tensor(logvar, dtype=mu.dtype, device=mu.device)
    return -0.5 * ((x - mu) ** 2 / logvar.exp() + logvar + math.log(2 * math.pi))


def _randn(shape, generator: torch.Generator | None, ref: torch.Tensor) -> torch.Tensor:
    """Standard normals of `shape` like `ref` (device, dtype), drawn on the generator's device (torch's
    global RNG when None) and moved: a CPU generator gives the same draws on any device."""
    device = ref.device if generator is None else generator.device
    return torch.randn(shape, generator=generator, device=device, dtype=ref.dtype).to(ref.device)


def _mlp(d_in: int, hidden: int) -> nn.Sequential:
    # ends in ReLU like the authors' dense stacks; the heads are separate Linear layers
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())


class VRNN(nn.Module):
    """VRNN over real-valued sequences x (B, T, x_dim), or (B, T) when x_dim == 1."""

    def __init__(
        self,
        x_dim: int = 1,
        latent: int = 16,  # authors' z_dim
        hidden: int = 128,
        rnn: int = 256,
        cell: str = "lstm",
        x_std: float = 1.0,  # authors' --STD 1 on standardised data
        length: int | None = None,  # the sequences' length, when fixed: what sampling without data produces
    ):
        super().__init__()
        self.x_dim, self.latent, self.rnn, self.x_std, self.cell_type = x_dim, latent, rnn, x_std, cell
        self.length = length
        self.phi_x = _mlp(x_dim, hidden)
        self.phi_z = _mlp(latent, hidden)
        self.enc = _mlp(hidden + rnn, hidden)
        self.enc_mu, self.enc_logvar = nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.prior = _mlp(rnn, hidden)
        self.prior_mu, self.prior_logvar = nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.dec = _mlp(hidden + rnn, hidden)
        self.dec_mu = nn.Linear(hidden, x_dim)
        cells = {"lstm": nn.LSTMCell, "gru": nn.GRUCell}
        self.cell = cells[cell](2 * hidden, rnn)

    @property
    def encoder(self) -> nn.ModuleList:
        """The inference modules of q(z_t | x_t, h_{t-1}) alone (a view: the state dict keeps their names).

        phi_x and the recurrence feed q too but belong to the generative model (p(x_t | ...) and the
        prior read h), so a proposal refitted by `nll.fit_proposal` re-initialises and trains only these.
        """
        return nn.ModuleList([self.enc, self.enc_mu, self.enc_logvar])

    def generative_parameters(self) -> list[nn.Parameter]:
        """Everything but the encoder: what distillation trains and what a parameter count compares."""
        enc = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in enc]

    def draw_eps(self, n: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard-normal z-noise (n, length, latent)."""
        return _randn((n, length, self.latent), generator, self.dec_mu.weight)

    def draw_x_noise(self, n: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard-normal x-noise (n, length, x_dim); `generate` scales it by x_std."""
        return _randn((n, length, self.x_dim), generator, self.dec_mu.weight)

    # --- one step's pieces; h is the state before step t, (N, rnn) ---
    def _init_state(self, n: int, ref: torch.Tensor):
        h = ref.new_zeros(n, self.rnn)
        return (h, h.clone()) if self.cell_type == "lstm" else h

    def _h(self, state) -> torch.Tensor:
        return state[0] if self.cell_type == "lstm" else state

    def _p_z(self, h):
        out = self.prior(h)
        return self.prior_mu(out), self.prior_logvar(out)

    def _q_z(self, fx, h):
        out = self.enc(torch.cat([fx, h], -1))
        return self.enc_mu(out), self.enc_logvar(out)

    def _x_mean(self, fz, h):
        return self.dec_mu(self.dec(torch.cat([fz, h], -1)))

    def _as_seq(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-1) if x.dim() == 2 and self.x_dim == 1 else x  # (B, T, x_dim)

    def _filter(
        self, x: torch.Tensor, z: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Run along observed x (N, T, x_dim) with z (N, T, latent) given, or drawn from q if None
        (its noise from `generator`, torch's global RNG when None).

        Returns the per-step q and prior parameters, z and the decoder mean, each stacked to (N, T, .).
        """
        n, length, _ = x.shape
        state = self._init_state(n, x)
        fx_all = self.phi_x(x)  # (N, T, hidden)
        keys = ("q_mu", "q_logvar", "p_mu", "p_logvar", "z", "x_mean")
        out = {k: [] for k in keys}
        for t in range(length):
            h, fx = self._h(state), fx_all[:, t]
            q_mu, q_logvar = self._q_z(fx, h)
            p_mu, p_logvar = self._p_z(h)
            if z is None:
                z_t = q_mu + (0.5 * q_logvar).exp() * _randn(q_mu.shape, generator, q_mu)
            else:
                z_t = z[:, t]
            fz = self.phi_z(z_t)
            x_mean = self._x_mean(fz, h)
            state = self.cell(torch.cat([fx, fz], -1), state)
            for k, v in zip(keys, (q_mu, q_logvar, p_mu, p_logvar, z_t, x_mean)):
                out[k].append(v)
        return {k: torch.stack(v, 1) for k, v in out.items()}

    def _dream(self, eps, x_forced=None, x_noise=None) -> dict[str, torch.Tensor]:
        """Run the prior chain from z-noise eps (N, T, latent); x_t is x_forced[:, t] when given, else
        the decoder mean plus x_std * x_noise[:, t] (zero noise when x_noise is None)."""
        n, length, _ = eps.shape
        state = self._init_state(n, eps)
        keys = ("p_mu", "p_logvar", "z", "x_mean", "x")
        out = {k: [] for k in keys}
        for t in range(length):
            h = self._h(state)
            p_mu, p_logvar = self._p_z(h)
            z_t = p_mu + (0.5 * p_logvar).exp() * eps[:, t]
            fz = self.phi_z(z_t)
            x_mean = self._x_mean(fz, h)
            if x_forced is not None:
                x_t = x_forced[:, t]
            else:
                x_t = x_mean if x_noise is None else x_mean + self.x_std * x_noise[:, t]
            state = self.cell(torch.cat([self.phi_x(x_t), fz], -1), state)
            for k, v in zip(keys, (p_mu, p_logvar, z_t, x_mean, x_t)):
                out[k].append(v)
        res = {k: torch.stack(v, 1) for k, v in out.items()}
        res["p_sigma"] = (0.5 * res["p_logvar"]).exp()
        return res

    # --- public API ---
    def elbo(self, x: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
        """Negative ELBO with KL weight beta (warm-up), one posterior sample, analytic KL per step.

        loss, recon, kl: means per time step over B x T (the authors' reduction, used for training);
        nelbo: (B,) the beta = 1 bound per sequence in nats, for evaluation.
        """
        x = self._as_seq(x)
        r = self._filter(x)
        recon = -gaussian_logp(x, r["x_mean"], 2 * math.log(self.x_std)).sum(-1)  # (B, T)
        kl = gaussian_kl(r["q_mu"], r["q_logvar"], r["p_mu"], r["p_logvar"]).sum(-1)  # (B, T)
        return {
            "loss": (recon + beta * kl).mean(),
            "recon": recon.mean(),
            "kl": kl.mean(),
            "nelbo": (recon + kl).sum(1),
        }

    def generate(self, eps: torch.Tensor, length: int | None = None, x_noise=None) -> dict[str, torch.Tensor]:
        """Sample from the prior chain with z-noise eps (B, >= length, latent).

        As the authors' generate(1.0, 0, 1.0): z-noise at scale 1 and, by default, no noise on x, so the
        fed-back x_t is the decoder mean; pass x_noise (B, length, x_dim) for real samples.
        Returns x_mean, x (B, length, x_dim), z, p_mu, p_logvar, p_sigma (B, length, latent).
        """
        return self._dream(eps[:, :length], x_noise=x_noise)

    def generate_forced(self, x_teacher: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
        """The prior chain teacher-forced on x_teacher (B, T, x_dim), sharing the z-noise eps (B, T, latent):
        z_t comes from this model's own prior, x_t is the teacher's (authors' generate_distill)."""
        return self._dream(eps, x_forced=self._as_seq(x_teacher))

    def posterior_sample(
        self, x: torch.Tensor, k: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """k draws z ~ q(z | x) for x (B, T[, x_dim]): z (k, B, T, latent) and log q(z | x) (k, B);
        the noise from `generator` (torch's global RNG when None), as nll.importance_log_weights passes.

        z is one tensor (not a per-layer list as in a ladder VAE); callers treat it as opaque and hand it
        back to log_joint, so -log p(x) ~= -logmeanexp_k(log_joint(x, z) - log_q).
        """
        x = self._as_seq(x)
        b, length, d = x.shape
        r = self._filter(x.repeat(k, 1, 1), generator=generator)  # (k*B, T, .)
        log_q = gaussian_logp(r["z"], r["q_mu"], r["q_logvar"]).sum((1, 2))
        return r["z"].view(k, b, length, self.latent), log_q.view(k, b)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z) = sum_t log p(z_t | h_{t-1}) + log p(x_t | z_t, h_{t-1}) for z (k, B, T, latent)."""
        x = self._as_seq(x)
        k, b, length, _ = z.shape
        r = self._filter(x.repeat(k, 1, 1), z.reshape(k * b, length, self.latent))
        lp_z = gaussian_logp(r["z"], r["p_mu"], r["p_logvar"]).sum((1, 2))
        lp_x = gaussian_logp(x.repeat(k, 1, 1), r["x_mean"], 2 * math.log(self.x_std)).sum((1, 2))
        return (lp_z + lp_x).view(k, b)


def distill_loss(
    teacher: VRNN, student: VRNN, n: int, length: int, lam: float = 1e-3, eps: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """KD4DGM loss for VRNNs (authors' compressVRNN/models/student_teacher.py + VRNN.generate_distill).

    The teacher generates n sequences of `length` steps from z-noise eps (drawn if None) without x noise;
    the student shares eps and is teacher-forced on the teacher's x_t. Averaged over n x length:
        loss = ||mu_x^T - mu_x^S||^2 / (2 x_std^2) + lam * sum_d KL(N(mu_z^T, s_z^T) || N(mu_z^S, s_z^S)),
    the second on each step's prior p(z_t | h_{t-1}); with x_std = 1 the first is 0.5 ||dmu||^2, i.e.
    KL between the two fixed-std x Gaussians. The authors' pen-bit BCE is dropped (no pen bit here).
    """
    assert teacher.latent == student.latent and teacher.x_std == student.x_std, "noise and x_std are shared"
    eps = teacher.draw_eps(n, length) if eps is None else eps
    with torch.no_grad():  # the teacher only supplies targets
        t = teacher.generate(eps)
    s = student.generate_forced(t["x"], eps)
    loss_x = ((t["x_mean"] - s["x_mean"]) ** 2).sum(-1).mean() / (2 * teacher.x_std**2)
    loss_z = gaussian_kl(t["p_mu"], t["p_logvar"], s["p_mu"], s["p_logvar"]).sum(-1).mean()
    return {"loss": loss_x + lam * loss_z, "x": loss_x, "z": loss_z}


# ---------------- the generative pipeline's view (kdflow.dgm.family) ----------------

KNOBS = ("hidden", "rnn", "latent", "cell")  # the spec's model knobs; VRNN's defaults where it is silent
IS_CHUNK = 20_000  # sequences per importance-sampling pass: chunk = IS_CHUNK // B draws at a time


def _build(spec: dict, input_shape: tuple[int, ...]) -> VRNN:
    """A VRNN over sequences of input_shape[0] steps: (L,) is L scalars (MNIST-1D read as 40 steps),
    (L, D) is L vectors of D >= 2. x_std stays the constructor's fixed value."""
    shape = tuple(input_shape)
    if len(shape) == 1:
        x_dim = 1
    elif len(shape) == 2 and shape[1] >= 2:
        x_dim = shape[1]
    else:
        raise ValueError(f"a VRNN reads (L,) or (L, D >= 2) sequences, got input shape {shape}")
    knobs = {k: spec[k] for k in KNOBS if k in spec}
    return VRNN(x_dim=x_dim, length=shape[0], **knobs)


def _length(model: VRNN) -> int:
    """The sequence length the model was built for (sampling without data needs one)."""
    if model.length is None:
        raise ValueError("this VRNN has no fixed sequence length: build it with length=L")
    return model.length


def _scalar_parts(parts: dict) -> dict:
    """ELBO parts without the per-sequence `nelbo` (B,), which is evaluation's, not a loss to log."""
    return {k: v for k, v in parts.items() if k != "nelbo"}


def _train_loss(model: VRNN, x: torch.Tensor, beta: float) -> dict:
    """The negative ELBO with KL weight beta; loss, recon and kl are means per time step."""
    return _scalar_parts(model.elbo(x, beta))


def _val_nll(model: VRNN, x: torch.Tensor) -> torch.Tensor:
    """The beta = 1 negative ELBO per sequence in nats, (B,): an upper bound on the NLL."""
    return model.elbo(x, 1.0)["nelbo"]


def _kd4dgm(teacher: VRNN, student: VRNN, n: int, hp: dict) -> dict:
    """The authors' loss: output match plus hp["lam"] times the prior KL (lam 0: the output arm)."""
    return distill_loss(teacher, student, n, _length(teacher), lam=hp["lam"])


def _sample_elbo(teacher: VRNN, student: VRNN, n: int, hp: dict) -> dict:
    """The student's negative ELBO (beta 1) on n teacher samples, x noise included; the student's
    encoder is trained too (it is what its ELBO needs). Noise from torch's global RNG."""
    length = _length(teacher)
    eps, x_noise = teacher.draw_eps(n, length), teacher.draw_x_noise(n, length)
    with torch.no_grad():
        x = teacher.generate(eps, x_noise=x_noise)["x"]
    return _scalar_parts(student.elbo(x, 1.0))


def fit_vrnn_proposal(model: VRNN, x_train: torch.Tensor, steps: int, seed: int) -> VRNN:
    """A copy of `model` whose `encoder` (q's modules only) is re-initialised and trained by the ELBO
    on x_train with everything else frozen (nll.fit_proposal), leaving torch's global RNG untouched.

    After data-free distillation a student's own encoder was never trained, so it is no fair proposal;
    one fitting procedure for every model compared makes their importance-sampled NLLs comparable.
    """
    device = x_train.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return fit_proposal(model, x_train, steps=steps, seed=seed)


def _test_nll(model: VRNN, x_test, x_train, k: int, steps: int, seed: int) -> dict:
    """Importance-sampled NLL (B,) with K = k draws of a refitted proposal, and the weights' ESS (B,)."""
    proposal = fit_vrnn_proposal(model, x_train, steps, seed)
    generator = torch.Generator(device=x_test.device).manual_seed(seed)
    chunk = max(1, min(k, IS_CHUNK // max(1, len(x_test))))
    log_w = importance_log_weights(model, x_test, proposal, k, chunk, generator)  # (k, B)
    return {
        "nll": -(torch.logsumexp(log_w, 0) - math.log(k)),
        "ess": effective_sample_size(log_w),
        "estimator": f"importance sampling, K={k}, proposal refitted for {steps} steps",
    }


def _sample(model: VRNN, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """n sequences from the prior chain with x noise: (n, L) for x_dim 1, else (n, L, x_dim)."""
    length = _length(model)
    eps, x_noise = model.draw_eps(n, length, generator), model.draw_x_noise(n, length, generator)
    with torch.no_grad():
        x = model.generate(eps, x_noise=x_noise)["x"]
    return x.squeeze(-1) if model.x_dim == 1 else x


def _frozen(student: VRNN, method: str) -> list[nn.Module]:
    """Nothing: the authors' VRNN student trains its generative part, distill_loss gives the encoder no
    gradient anyway, and sample_elbo needs the encoder trained."""
    return []


FAMILY = Family(
    build=_build,
    train_loss=_train_loss,
    val_nll=_val_nll,
    distill={"kd4dgm": _kd4dgm, "kd4dgm_output": _kd4dgm, "sample_elbo": _sample_elbo},
    test_nll=_test_nll,
    sample=_sample,
    frozen=_frozen,
)
