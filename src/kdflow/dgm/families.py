"""The generative families by name (config `family:`), and the ladder VAE's (kdflow.dgm.family).

    from kdflow.dgm.families import FAMILIES
    FAMILIES["lvae"].distill["kd4dgm"](teacher, student, 128, {"lam": 0.1})

hm and vrnn define theirs beside their models (kdflow.dgm.hm, kdflow.dgm.vrnn); the ladder VAE's is
here because its losses (kdflow.dgm.losses) import its model. A new family is one file with a
`FAMILY` and one line below, plus its torch-free entry in kdflow.registry.GEN_FAMILIES.
"""

from __future__ import annotations

import math

import torch

from kdflow.dgm import hm, vrnn
from kdflow.dgm.family import Family
from kdflow.dgm.losses import kd4dgm_loss, sample_elbo_loss, teacher_forced_loss
from kdflow.dgm.lvae import LadderVAE
from kdflow.dgm.nll import effective_sample_size, fit_proposal, importance_log_weights

IMPORTANCE_CHUNK = 100  # proposal draws evaluated at once: memory O(chunk x test examples)


def _build(spec: dict, shape: tuple[int, ...]) -> LadderVAE:
    knobs = (spec.get("hidden", 64), spec.get("layers", 3), spec.get("latent", 8))
    return LadderVAE(shape, *knobs, channels=spec.get("channels", 0))


def _test_nll(model: LadderVAE, x_test, x_train, k: int, steps: int, seed: int) -> dict:
    """Importance-sampled NLL with a proposal fitted to this model (nll.fit_proposal), and the ESS."""
    proposal = fit_proposal(model, x_train, steps=steps, seed=seed)
    g = torch.Generator(device=x_test.device).manual_seed(seed)
    log_w = importance_log_weights(model, x_test, proposal, k, IMPORTANCE_CHUNK, g)
    nll = -(torch.logsumexp(log_w, 0) - math.log(k))
    estimator = f"importance sampling, K={k}, proposal encoder refitted for {steps} steps"
    return {"nll": nll, "ess": effective_sample_size(log_w), "estimator": estimator}


def _sample(model: LadderVAE, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """x = mu_x(z) + decoder_std * noise, z by ancestral sampling."""
    with torch.no_grad():
        mu = model.generate(model.sample_noise(n, generator)).x
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + model.decoder_std * noise


def _shared_noise(loss):
    """A ladder-VAE arm on one draw of eps from torch's global generator (checkpointed by fit)."""
    return lambda t, s, n, hp: loss(t, s, t.sample_noise(n), hp["lam"])


LVAE = Family(
    build=_build,
    train_loss=lambda model, x, beta: model.elbo(x, beta),
    val_nll=lambda model, x: model.elbo(x, 1.0)["nelbo"],
    distill={
        "kd4dgm": _shared_noise(kd4dgm_loss),
        "kd4dgm_output": _shared_noise(kd4dgm_loss),  # its lam is 0 (kdflow.registry.GEN_METHODS)
        "teacher_forced": _shared_noise(teacher_forced_loss),
        "sample_elbo": lambda t, s, n, hp: sample_elbo_loss(t, s, n),
    },
    test_nll=_test_nll,
    sample=_sample,
    # the authors train a student's generative part only; the sample-ELBO arm needs its encoder
    frozen=lambda student, method: [] if method == "sample_elbo" else [student.encoder],
)

FAMILIES: dict[str, Family] = {"lvae": LVAE, "hm": hm.FAMILY, "vrnn": vrnn.FAMILY}
