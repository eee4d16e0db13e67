"""Helmholtz machine on Old Faithful and its data-free distillation (KD4DGM, Chen et al. CVPR 2023, A3).

    import torch
    from kdflow.dgm.hm import HelmholtzMachine, distill_loss, load_old_faithful

    y = torch.as_tensor(load_old_faithful())          # (272, 2): (duration, waiting), standardised
    teacher = HelmholtzMachine(hidden=8)              # 186 generative parameters
    opt_gen, opt_rec = teacher.make_optimizers()      # Adam lr 1e-2, weight decay 1e-4 (authors' main.py)
    for _ in range(1000):                             # authors: 1000 full-batch epochs
        teacher.wake_sleep_step(y, opt_gen, opt_rec)
    teacher.log_likelihood(y).mean()                  # exact: 2^8 = 256 latent configurations
    student = HelmholtzMachine(hidden=2)              # 54 generative parameters
    distill_loss(teacher, student, n=272)["loss"].backward()

Generative chain (authors' compressHM/models/HM/HM.py, `gennet`), every z_l in {0,1}^2, STD = 0.5:
    p(z4) = Bern(sigmoid(a))            a in R^2 (a bias-free Linear(1, 2) applied to a constant 1)
    p(z3 | z4) = Bern(sigmoid(f3(z4)))  p(y2 | z3) = N(g2(z3), STD^2)
    p(z2 | y2) = Bern(sigmoid(f2(y2)))  p(z1 | z2) = Bern(sigmoid(f1(z2)))  p(y1 | z1) = N(g1(z1), STD^2)
Each f, g is Linear -> ReLU -> Linear of width `hidden`. Recognition (`infnet`):
    q(z1 | y1, y2), q(z2 | y2, z1), q(z3 | y2), q(z4 | z3).
Ancestral sampling thresholds uniform noise, z_l = 1[sigmoid(logit_l) > u_l], so a chain is a deterministic
function of its noises {u_l, e_y}: the compact DGM that KD4DGM distils.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdflow.data.old_faithful import read_old_faithful
from kdflow.dgm.family import Family

STD = 0.5  # fixed std of y1, y2 (authors' STD)
BINARY = ("z1", "z2", "z3", "z4")
GAUSS = ("y1", "y2")


def load_old_faithful(standardise: bool = True) -> np.ndarray:
    """The 272 Old Faithful eruptions as float32 (272, 2): column 0 duration (y1), column 1 waiting (y2).

    Standardised per column with the population std (ddof=0), which reproduces the constants hard-coded
    in the authors' compressHM/main.py (means 3.4878, 70.8971; stds 1.1393, 13.5700).
    """
    data = read_old_faithful()
    if standardise:
        data = (data - data.mean(0)) / data.std(0)
    return data.astype(np.float32)


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


def _bern_logp(logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log Bern(z; sigmoid(logits)) = z*l - softplus(l), summed over the last dim (broadcasts)."""
    return (z * logits - F.softplus(logits)).sum(-1)


def _gauss_logp(mu: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log N(y; mu, STD^2), summed over the last dim."""
    return (-0.5 * ((y - mu) / STD) ** 2 - math.log(STD) - 0.5 * math.log(2 * math.pi)).sum(-1)


class HelmholtzMachine(nn.Module):
    """Binary-latent Helmholtz machine of compressHM/models/HM/HM.py (teacher hidden=8, student hidden=2)."""

    def __init__(self, hidden: int = 8):
        super().__init__()
        self.hidden = hidden
        # keys name the variable each conditional produces; order = the generative chain
        self.gen = nn.ModuleDict(
            {
                "z4": nn.Linear(1, 2, bias=False),  # prior logits; bias-free on a constant 1 as the authors
                "z3": _mlp(2, hidden, 2),
                "y2": _mlp(2, hidden, 1),
                "z2": _mlp(1, hidden, 2),
                "z1": _mlp(2, hidden, 2),
                "y1": _mlp(2, hidden, 1),
            }
        )
        self.rec = nn.ModuleDict(
            {
                "z1": _mlp(2, hidden, 2),
                "z2": _mlp(3, hidden, 2),
                "z3": _mlp(1, hidden, 2),
                "z4": _mlp(2, hidden, 2),
            }
        )

    def make_optimizers(self, lr: float = 1e-2, weight_decay: float = 1e-4):
        """One Adam per network, as the authors' build_optimizer (lr 1e-2, weight decay 1e-4)."""
        return (
            torch.optim.Adam(self.gen.parameters(), lr=lr, weight_decay=weight_decay),
            torch.optim.Adam(self.rec.parameters(), lr=lr, weight_decay=weight_decay),
        )

    def draw_noise(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Uniform u_l (n, 2) for each binary layer and standard-normal e (n, 1) for each y.

        Drawn on the generator's device and moved to the model's, so a CPU generator gives the same
        noise whatever device the model is on.
        """
        w = self.gen["z4"].weight
        device = w.device if generator is None else generator.device
        kw = dict(generator=generator, device=device, dtype=w.dtype)
        noise = {k: torch.rand(n, 2, **kw) for k in BINARY}
        noise.update({k: torch.randn(n, 1, **kw) for k in GAUSS})
        return {k: v.to(w.device) for k, v in noise.items()}

    def sample(self, n: int, noise: dict | None = None, y2: torch.Tensor | None = None) -> dict:
        """Ancestral sample of n chains from the given noises (drawn if None).

        `y2` (n, 1), if given, replaces the sampled y2 (teacher forcing, as the authors' generate_distill).
        Returns {"y": (n, 2) [y1, y2], "z": {z_l: (n, 2)}, "logits": {z_l: (n, 2)}, "mu": {y_k: (n, 1)},
        "noise": the noises used}.
        """
        noise = self.draw_noise(n) if noise is None else noise
        z, logits, mu, y = {}, {}, {}, {}

        def binary(key, parent):
            logits[key] = self.gen[key](parent)
            # no gradient crosses the threshold: the per-layer loss terms train each conditional
            z[key] = (torch.sigmoid(logits[key]) > noise[key]).to(parent.dtype)
            return z[key]

        def gauss(key, parent):
            mu[key] = self.gen[key](parent)
            y[key] = mu[key] + STD * noise[key]
            return y[key]

        one = noise["z1"].new_ones(n, 1)
        z3 = binary("z3", binary("z4", one))
        gauss("y2", z3)
        if y2 is not None:  # teacher forcing: continue from the given y2; mu["y2"] stays this model's own
            y["y2"] = y2
        gauss("y1", binary("z1", binary("z2", y["y2"])))
        return {"y": torch.cat([y["y1"], y["y2"]], 1), "z": z, "logits": logits, "mu": mu, "noise": noise}

    def _recognise(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """z ~ q(z | y) for y (B, 2), layer by layer as the authors' infer; returns {z_l: (B, 2)}."""
        y1, y2 = y[:, :1], y[:, 1:]
        z = {}
        z["z1"] = torch.bernoulli(torch.sigmoid(self.rec["z1"](torch.cat([y1, y2], 1))))
        z["z2"] = torch.bernoulli(torch.sigmoid(self.rec["z2"](torch.cat([y2, z["z1"]], 1))))
        z["z3"] = torch.bernoulli(torch.sigmoid(self.rec["z3"](y2)))
        z["z4"] = torch.bernoulli(torch.sigmoid(self.rec["z4"](z["z3"])))
        return z

    def _rec_logits(self, y: torch.Tensor, z: dict) -> dict[str, torch.Tensor]:
        y1, y2 = y[:, :1], y[:, 1:]
        return {
            "z1": self.rec["z1"](torch.cat([y1, y2], 1)),
            "z2": self.rec["z2"](torch.cat([y2, z["z1"]], 1)),
            "z3": self.rec["z3"](y2),
            "z4": self.rec["z4"](z["z3"]),
        }

    def _log_joint_parts(self, y: torch.Tensor, z: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(z-parts), log p(y-parts)) for y (..., 2) and z_l (..., 2) that broadcast; each (...)."""
        y1, y2 = y[..., :1], y[..., 1:]
        one = z["z1"].new_ones(1)
        lp_z = _bern_logp(self.gen["z4"](one), z["z4"]) + _bern_logp(self.gen["z3"](z["z4"]), z["z3"])
        lp_z = lp_z + _bern_logp(self.gen["z2"](y2), z["z2"]) + _bern_logp(self.gen["z1"](z["z2"]), z["z1"])
        lp_y = _gauss_logp(self.gen["y2"](z["z3"]), y2) + _gauss_logp(self.gen["y1"](z["z1"]), y1)
        return lp_z, lp_y

    def log_joint(self, y: torch.Tensor, z: dict) -> torch.Tensor:
        """log p(y, z) for y (..., 2) and z_l (..., 2) that broadcast together; returns (...)."""
        lp_z, lp_y = self._log_joint_parts(y, z)
        return lp_z + lp_y

    def log_likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """Exact log p(y1, y2) for y (B, 2), summing all 2^8 latent configurations; returns (B,)."""
        w = self.gen["z4"].weight
        bits = torch.tensor(list(itertools.product((0.0, 1.0), repeat=8)), dtype=w.dtype, device=w.device)
        z = {k: bits[:, 2 * i : 2 * i + 2] for i, k in enumerate(BINARY)}  # (256, 2) each
        lp = self.log_joint(y[:, None, :], z)  # (B, 256)
        return torch.logsumexp(lp, dim=1)

    def wake_loss(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Wake phase: -log p(y, z) per example with z ~ q(z | y); only the generative net gets gradients."""
        with torch.no_grad():
            z = self._recognise(y)
        lp_z, lp_y = self._log_joint_parts(y, z)  # (B,) each
        return {"loss": -(lp_z + lp_y).mean(), "z": -lp_z.mean(), "y": -lp_y.mean()}

    def sleep_loss(self, n: int) -> dict[str, torch.Tensor]:
        """Sleep phase: -log q(z | y) on n dreamed (y, z); only the recognition net gets gradients."""
        with torch.no_grad():
            dream = self.sample(n)
        logits = self._rec_logits(dream["y"], dream["z"])
        loss = -sum(_bern_logp(logits[k], dream["z"][k]).sum() for k in BINARY) / n
        return {"loss": loss}

    def wake_sleep_step(self, y: torch.Tensor, opt_gen, opt_rec) -> dict[str, float]:
        """One full-batch wake update then one sleep update on len(y) dreams (authors' execute_graph)."""
        opt_gen.zero_grad()
        wake = self.wake_loss(y)
        wake["loss"].backward()
        opt_gen.step()
        opt_rec.zero_grad()
        sleep = self.sleep_loss(y.shape[0])
        sleep["loss"].backward()
        opt_rec.step()
        return {"wake": wake["loss"].item(), "sleep": sleep["loss"].item()}


def distill_loss(
    teacher: HelmholtzMachine, student: HelmholtzMachine, n: int, kl: bool = False, noise: dict | None = None
) -> dict[str, torch.Tensor]:
    """KD4DGM loss for Helmholtz machines (authors' compressHM/models/student_teacher.py, `distill`).

    The teacher samples n chains; the student reuses the teacher's uniform noises and is teacher-forced
    on the teacher's y2 (its own z's otherwise). Per chain,
        loss = sum_l BCE(logit_l^S, sigmoid(logit_l^T)) + sum_{y1,y2} (mu^T - mu^S)^2 / (2 STD^2),
    averaged over the n chains. The Gaussian part is KL(N(mu^T, STD^2) || N(mu^S, STD^2)); the BCE part is
    a cross-entropy, so a perfect student still pays the teacher's Bernoulli entropy. `kl=True` subtracts
    that entropy (no student gradient): the z part becomes KL(Bern_T || Bern_S), zero for a copy.
    """
    with torch.no_grad():  # the teacher only supplies targets
        t = teacher.sample(n, noise)
    s = student.sample(n, t["noise"], y2=t["y"][:, 1:])
    loss_z = 0.0
    for k in BINARY:
        p_t = torch.sigmoid(t["logits"][k])
        loss_z = loss_z + F.binary_cross_entropy_with_logits(s["logits"][k], p_t, reduction="sum")
        if kl:
            loss_z = loss_z - F.binary_cross_entropy_with_logits(t["logits"][k], p_t, reduction="sum")
    loss_y = sum(((t["mu"][k] - s["mu"][k]) ** 2).sum() for k in GAUSS) / (2 * STD**2)
    return {"loss": (loss_z + loss_y) / n, "z": loss_z / n, "y": loss_y / n}


# ---------------- the generative pipeline's view (kdflow.dgm.family) ----------------


def _build(spec: dict, input_shape: tuple[int, ...]) -> HelmholtzMachine:
    """A Helmholtz machine of width spec["hidden"] (default 8, the authors' teacher); it models (y1, y2)."""
    if tuple(input_shape) != (2,):
        raise ValueError(
            f"the Helmholtz machine models 2-d points (input shape (2,)), got {tuple(input_shape)}"
        )
    return HelmholtzMachine(hidden=spec.get("hidden", 8))


def _train_loss(model: HelmholtzMachine, x: torch.Tensor, beta: float) -> dict:
    """Wake-sleep as one loss for one optimizer: the wake loss only reaches the generative net and the
    sleep loss only the recognition net (each detaches the other's samples), so the sum's gradient is
    the wake gradient on one and the sleep gradient on the other. No KL term: `beta` is ignored."""
    wake, sleep = model.wake_loss(x)["loss"], model.sleep_loss(len(x))["loss"]
    return {"loss": wake + sleep, "wake": wake.detach(), "sleep": sleep.detach()}


def _val_nll(model: HelmholtzMachine, x: torch.Tensor) -> torch.Tensor:
    """Exact -log p(x) per example, (B,)."""
    return -model.log_likelihood(x)


def _test_nll(model: HelmholtzMachine, x_test, x_train=None, k=None, steps=None, seed=None) -> dict:
    """Exact NLL: no proposal to fit and nothing to sample, so x_train, k, steps and seed are unused."""
    with torch.no_grad():
        nll = -model.log_likelihood(x_test)
    return {"nll": nll, "ess": None, "estimator": "exact (2^8 latent states enumerated)"}


def _sample(model: HelmholtzMachine, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """The observed (y1, y2) of n ancestral samples, Gaussian noise on y included: (n, 2)."""
    with torch.no_grad():
        return model.sample(n, model.draw_noise(n, generator))["y"]


def _kd4dgm(teacher, student, n: int, hp: dict) -> dict:
    """The authors' loss; hp holds no loss parameter for it (an "lr" there is the optimizer's)."""
    return distill_loss(teacher, student, n)


FAMILY = Family(
    build=_build,
    train_loss=_train_loss,
    val_nll=_val_nll,
    distill={"kd4dgm": _kd4dgm},
    test_nll=_test_nll,
    sample=_sample,
)
