"""Evaluation of deep generative models: importance-sampled NLL, MMD, Fréchet distance.

    proposal = fit_proposal(student, x_train)                         # its encoder, refitted alone
    nll = importance_nll(student, x_test, proposal, k=1000)           # (B,) nats per example
    mmd2 = gaussian_mmd(x_real, x_gen, bandwidths=(0.5, 1.0, 2.0))    # unbiased MMD^2
    fd = frechet_distance(feat_real, feat_gen)                        # on classifier features: "FD-clf"

None of these is in the authors' code (KD4DGM-CVPR compressVAE/helpers/metrics_image.py scores
Inception features with EMD, MMD, 1-NN and the square root of the Fréchet distance); the NLL is the
primary metric here because a likelihood model can be scored directly.

Importance sampling, valid for any proposal q whose support covers the posterior:

    -log p(x) ~= -( logsumexp_k [log p(x, z_k) - log q(z_k | x)] - log K ),   z_k ~ q(. | x)

The estimate of log p(x) is a lower bound in expectation (Jensen) that tightens as K grows, and how
loose it is at a given K depends on how far q is from the model's own posterior. So one model's
encoder is no common yardstick: a student trained on its own has its own latent coordinates, and
the teacher's encoder as its proposal gave NLLs of 1,400-10,000 nats on MNIST-1D where its own gave
102 (a probe with these modules, in #13's notes). Compared models get their proposals by one
procedure instead, `fit_proposal`: a fresh encoder trained by the ELBO with the model's generative
part frozen, the same steps for every model; `effective_sample_size` says when the weights
degenerate (ESS near 1: the estimate is one sample's).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch


@torch.no_grad()
def importance_nll(
    model,
    x: torch.Tensor,
    proposal,
    k: int = 1000,
    chunk: int = 100,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """-log p_model(x) per example, (B,), float64; z ~ `proposal.posterior_sample(x, ., generator)`.

    `model` needs `log_joint(x, z)`; the k samples are drawn `chunk` at a time so memory is O(chunk * B).
    """
    log_w = importance_log_weights(model, x, proposal, k, chunk, generator)  # (k, B)
    return -(torch.logsumexp(log_w, dim=0) - math.log(k))


@torch.no_grad()
def importance_log_weights(model, x, proposal, k=1000, chunk=100, generator=None) -> torch.Tensor:
    """log p(x, z_k) - log q(z_k | x) for k draws of the proposal: (k, B), float64."""
    log_w = []
    for start in range(0, k, chunk):
        z, log_q = proposal.posterior_sample(x, min(chunk, k - start), generator=generator)
        log_w.append(model.log_joint(x, z).double() - log_q.double())  # (chunk, B)
    return torch.cat(log_w)


def effective_sample_size(log_w: torch.Tensor) -> torch.Tensor:
    """Kish's ESS of importance weights, (sum w)^2 / sum w^2 per example: (k, B) -> (B,), in [1, k]."""
    w = torch.softmax(log_w.double(), dim=0)  # normalised per example
    return 1.0 / (w**2).sum(0)


def fit_proposal(
    model, x: torch.Tensor, steps: int = 2000, batch: int = 128, lr: float = 1e-3, seed: int = 0
):
    """A copy of `model` whose `encoder` is re-initialised (seeded) and trained by the ELBO on `x`
    with everything else frozen: the model's generative part is untouched, so the copy's
    `posterior_sample` is a proposal fitted to this model. One procedure for every model compared
    (a distilled student's own encoder is frozen at its initialisation, as in the authors' code)."""
    proposal = copy.deepcopy(model).train()
    torch.manual_seed(seed)
    for m in proposal.encoder.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    proposal.requires_grad_(False)
    proposal.encoder.requires_grad_(True)
    opt = torch.optim.Adam(proposal.encoder.parameters(), lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        loss = proposal.elbo(x[torch.randint(len(x), (batch,), generator=g)])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return proposal.requires_grad_(False).eval()


def gaussian_mmd(x: torch.Tensor, y: torch.Tensor, bandwidths=(1.0,)) -> torch.Tensor:
    """Unbiased MMD^2 between samples x (m, ...) and y (n, ...), kernel sum_h exp(-|a - b|^2 / (2 h^2)).

        MMD^2 = sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (n(n-1)) - 2 mean k(x_i, y_j)

    Can be slightly negative (it is unbiased, not non-negative); computed in float64.
    """
    x, y = x.reshape(len(x), -1).double(), y.reshape(len(y), -1).double()
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"need at least 2 samples each, got {m} and {n}")

    def kernel(a, b):  # (p, D), (q, D) -> (p, q)
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * h**2)) for h in bandwidths)

    kxx, kyy = kernel(x, x), kernel(y, y)
    # the diagonal of k(x, x) is len(bandwidths) exactly; leaving it out is what makes MMD^2 unbiased
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return xx + yy - 2 * kernel(x, y).mean()


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(f1, f2) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (n1, D), (n2, D) (tensors or arrays).

        FD = |m1 - m2|^2 + tr(C1 + C2 - 2 (C1 C2)^{1/2}),   C = covariance with ddof = 1

    as FID computes it, but not the square root the authors' `fid()` returns. tr (C1 C2)^{1/2} is taken as
    tr (C1^{1/2} C2 C1^{1/2})^{1/2} (same eigenvalues, similar matrices), through symmetric eigh in
    float64: no complex parts to drop, as scipy.linalg.sqrtm of the non-symmetric C1 C2 can leave.
    """
    a = f1.detach().cpu().double().numpy() if torch.is_tensor(f1) else np.asarray(f1, np.float64)
    b = f2.detach().cpu().double().numpy() if torch.is_tensor(f2) else np.asarray(f2, np.float64)
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    m1, m2 = a.mean(0), b.mean(0)
    c1, c2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    s1 = _psd_sqrt(c1)
    inner = s1 @ c2 @ s1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    return float(((m1 - m2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * cross)
