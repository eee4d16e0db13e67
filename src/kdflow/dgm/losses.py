"""KD4DGM (Chen et al., CVPR 2023) and its comparison arms for ladder VAEs: data-free distillation losses.

    eps = teacher.sample_noise(128)                           # one noise draw, shared by both chains
    parts = kd4dgm_loss(teacher, student, eps, lam=0.1)       # parts["loss"].backward()
    parts = teacher_forced_loss(teacher, student, eps)        # layer-wise matching on the teacher's z
    parts = sample_elbo_loss(teacher, student, eps, beta=1.0) # student ELBO on x ~ p_T

The KD4DGM loss, written once (authors' compressVAE/models/student_teacher.py, `distill` and
`loss_function`; divergences from compressVAE/helpers/distributions.py `kl_out` and `WS22_gaussian`):

    both chains run on the SAME eps, each on its own latents: z_l^T = mu_l^T(z_{l+1}^T) + sigma_l^T eps_l,
    z_l^S = mu_l^S(z_{l+1}^S) + sigma_l^S eps_l, z_L^T = z_L^S = eps_L
    output = mean_B sum_dims KL(N(mu_x^T, s^2) || N(mu_x^S, s^2)) = mean_B ||mu_x^T - mu_x^S||^2 / (2 s^2)
    latent = sum_{l=1..L-1} mean_B reduce_dims[(mu_l^T - mu_l^S)^2 + (sigma_l^T - sigma_l^S)^2]
    loss = output + lam * latent                                # lam = 0.1, reduce = mean: the authors'

The latent term is the squared 2-Wasserstein distance between the diagonal Gaussian conditionals; the
top layer has no conditional. Gradients flow through the student's whole reparameterised chain; the
teacher runs under no_grad (it has no BatchNorm or dropout, so its train/eval mode does not matter).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kdflow.dgm.lvae import Generation, LadderVAE


def w2_squared(mu1, s1, mu2, s2, reduction: str = "mean") -> torch.Tensor:
    """Squared W2 between diagonal Gaussians, (B, ...) each -> scalar.

    Per sample, (mu1 - mu2)^2 + (s1 - s2)^2 reduced over the elements ("mean" or "sum", the authors'
    `--distill-z-reduction`), then averaged over the batch.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    b = mu1.shape[0]
    w2 = (mu1 - mu2).reshape(b, -1) ** 2 + (s1 - s2).reshape(b, -1) ** 2  # (B, N)
    per_sample = w2.mean(-1) if reduction == "mean" else w2.sum(-1)
    return per_sample.mean()


def output_kl(mu_t: torch.Tensor, mu_s: torch.Tensor, std: float) -> torch.Tensor:
    """KL(N(mu_t, std^2) || N(mu_s, std^2)), summed over dims, averaged over the batch: (B, ...) -> scalar."""
    b = mu_t.shape[0]
    return ((mu_t - mu_s).reshape(b, -1) ** 2).sum(-1).mean() / (2 * std**2)


def check_latents(teacher: LadderVAE, student: LadderVAE) -> None:
    """Raise ValueError unless both models have the same latent shapes (the noise is shared)."""
    t, s = teacher.latent_shapes(), student.latent_shapes()
    if t != s:
        raise ValueError(f"teacher latent shapes {t} != student latent shapes {s}: they cannot share noise")


def _check_pair(teacher: LadderVAE, student: LadderVAE) -> None:
    check_latents(teacher, student)
    if teacher.input_shape != student.input_shape:
        raise ValueError(f"teacher input {teacher.input_shape} != student input {student.input_shape}")
    if teacher.decoder_std != student.decoder_std:
        # output_kl assumes one shared decoder std, as the authors' global DECODER_STD
        raise ValueError(f"teacher decoder_std {teacher.decoder_std} != student {student.decoder_std}")


def _match(gen_t: Generation, gen_s: Generation, std: float, lam: float, reduction: str) -> dict:
    out = output_kl(gen_t.x, gen_s.x, std)
    layers = [
        w2_squared(*ts, reduction=reduction) for ts in zip(gen_t.mu, gen_t.sigma, gen_s.mu, gen_s.sigma)
    ]
    latent = torch.stack(layers).sum() if layers else torch.zeros_like(out)
    parts = {"loss": out + lam * latent, "output": out, "latent": latent}
    parts.update({f"w2_{i + 1}": w for i, w in enumerate(layers)})  # per layer, for the log
    return parts


def kd4dgm_loss(
    teacher: LadderVAE,
    student: LadderVAE,
    eps: Sequence[torch.Tensor],
    lam: float = 0.1,
    reduction: str = "mean",
) -> dict[str, torch.Tensor]:
    """The paper's loss: both chains on the same eps, each on its own latents (see the module docstring)."""
    _check_pair(teacher, student)
    with torch.no_grad():
        gen_t = teacher.generate(eps)
    return _match(gen_t, student.generate(eps), teacher.decoder_std, lam, reduction)


def teacher_forced_loss(
    teacher: LadderVAE,
    student: LadderVAE,
    eps: Sequence[torch.Tensor],
    lam: float = 0.1,
    reduction: str = "mean",
) -> dict[str, torch.Tensor]:
    """Layer-wise matching: the student's conditionals on the TEACHER's latents, same terms as kd4dgm_loss.

    The arm the paper says accumulates errors: at sampling time the student feeds on its own latents,
    which it never saw in training. Not in the authors' code; built from `generate_forced`.
    """
    _check_pair(teacher, student)
    with torch.no_grad():
        gen_t = teacher.generate(eps)
    return _match(gen_t, student.generate_forced(gen_t.z), teacher.decoder_std, lam, reduction)


def sample_elbo_loss(
    teacher: LadderVAE,
    student: LadderVAE,
    n: int | Sequence[torch.Tensor],
    beta: float = 1.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The student's negative ELBO (LadderVAE.elbo) on teacher samples x = mu_x^T(eps) + s * noise.

    `n` is a batch size (eps drawn from `generator`) or an eps list, so this arm can use the same noise
    stream as the others. The decoder noise is drawn from `generator`. Not in the authors' code.
    """
    if teacher.input_shape != student.input_shape:
        raise ValueError(f"teacher input {teacher.input_shape} != student input {student.input_shape}")
    with torch.no_grad():
        eps = teacher.sample_noise(n, generator) if isinstance(n, int) else n
        mu_x = teacher.generate(eps).x  # (B, *input_shape)
        noise = torch.randn(mu_x.shape, generator=generator, device=mu_x.device, dtype=mu_x.dtype)
        x = mu_x + teacher.decoder_std * noise
    return student.elbo(x, beta)
