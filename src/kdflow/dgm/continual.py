"""Continual learning of a class-conditional ladder VAE with KD4DGM (Chen et al., CVPR 2023, application 4).

    vae = ConditionalLadderVAE((1, 8, 8), n_classes=10, hidden=64, layers=2, latent=8)
    vae.elbo(x, y, beta)["loss"].backward()                   # y: (B,) int64 class indices
    gen = vae.generate(vae.sample_noise(16), y)               # same eps, another y: another digit
    eps, y_old = old_task_batch(vae, 128, (0, 1, 2, 3, 4))    # torch's global RNG
    parts = conditional_kd4dgm_loss(frozen_old, vae, eps, y_old, lam=0.1)
    out = run_continual(x_tr, y_tr, x_va, y_va, x_te, y_te, epochs=200, seed=0)  # {arm: {metric: float}}

    python -m kdflow.dgm.continual --seeds 0 1 2 --epochs 200 --out results/continual.json

The setting (the authors' continualVAE): a conditional VAE learns task 1 (some classes), then task 2
(the other classes) without task 1's real data. Step 2 minimises the new task's negative ELBO on real
data plus `distill_weight` times the KD4DGM loss against a frozen copy of the step-1 model, on the
SAME noise and the SAME labels drawn uniformly from task 1's classes (data-free replay of the old
task). Arms: "naive" (step 2 by the task-2 ELBO alone), "kd4dgm", and "joint" (a fresh model on both
tasks' real data: the upper reference). "step1" is the model after task 1.

Differences from the authors, and why: MLP blocks (kdflow.dgm.lvae); the label enters the bottom-up
encoder's first block, every decoder conditional and the output block, not every block of the
encoder, and the top prior stays N(0, I) rather than p(z_L | c), so that the generator's noise is
the unconditional one of LadderVAE.sample_noise; the two step-2 losses are summed with weights
1 and `distill_weight` rather than the authors' batch-share weights (1 - r, r).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdflow.dgm.family import kl_weight
from kdflow.dgm.losses import check_latents, output_kl, w2_squared
from kdflow.dgm.lvae import Generation, LadderVAE, _Block
from kdflow.dgm.nll import effective_sample_size, fit_proposal, importance_log_weights

ARMS = ("naive", "kd4dgm")
METRICS = ("task1_nll", "task2_nll", "task1_ess_median", "task2_ess_median")


class ConditionalLadderVAE(LadderVAE):
    """A LadderVAE whose generative part and encoder also read the one-hot label y.

    The one-hot (n_classes) is concatenated to the input of the bottom-up encoder's first block,
    of every decoder conditional p(z_l | z_{l+1}, y) and of the output block p(x | z_1, y); those
    blocks are rebuilt wider after LadderVAE builds its own. The top prior is N(0, I).

    How: LadderVAE's internal hooks (`_conditional`, `_x_mean`, `_bottom_up`) take no label, so each
    public method binds y for the duration of the call (`_given`) and the overridden hooks append
    it; the ladder's logic itself is LadderVAE's, unchanged. Not thread-safe (the bound label is
    state on the module).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        n_classes: int,
        hidden: int = 64,
        layers: int = 3,
        latent: int | Sequence[int] = 8,
        decoder_std: float = 0.2236,
    ):
        super().__init__(input_shape, hidden, layers, latent, decoder_std)
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.n_classes = int(n_classes)
        c, d = self.n_classes, self.dims
        self.encoder[0] = _Block(self.input_dim + c, hidden, 2 * d[0])
        for i in range(self.layers - 1):
            self.decoder[i] = _Block(d[i + 1] + c, hidden, 2 * d[i])
        self.output = _Block(d[0] + c, hidden, self.input_dim)
        self._onehot: torch.Tensor | None = None  # the bound label, (B, n_classes), inside `_given`

    # --- binding the label ---------------------------------------------------------------------------

    def _one_hot(self, y: torch.Tensor, batch: int) -> torch.Tensor:
        """(B,) int64 labels -> (B, n_classes) one-hot in the model's dtype; checks size and range."""
        if y.ndim != 1 or y.shape[0] != batch:
            raise ValueError(f"labels of shape {tuple(y.shape)}, expected ({batch},)")
        if y.dtype != torch.int64:
            raise ValueError(f"labels must be int64, got {y.dtype}")
        if len(y) and (y.min() < 0 or y.max() >= self.n_classes):
            raise ValueError(f"labels must lie in [0, {self.n_classes}), got {y.min()}..{y.max()}")
        p = next(self.parameters())
        return F.one_hot(y.to(p.device), self.n_classes).to(p.dtype)

    @contextmanager
    def _given(self, y: torch.Tensor, batch: int) -> Iterator[None]:
        """Bind y (B,) for the hooks below while LadderVAE's method runs; restores what was bound."""
        previous, self._onehot = self._onehot, self._one_hot(y, batch)
        try:
            yield
        finally:
            self._onehot = previous

    def _with_label(self, h: torch.Tensor) -> torch.Tensor:
        """(..., B, d) -> (..., B, d + n_classes): the bound one-hot appended, broadcast over (...)."""
        if self._onehot is None:
            raise RuntimeError("ConditionalLadderVAE needs a label: call elbo/generate/... with y")
        return torch.cat([h, self._onehot.expand(*h.shape[:-1], self.n_classes)], dim=-1)

    # --- LadderVAE's hooks, now reading the label ----------------------------------------------------

    def _conditional(self, i: int, parent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return super()._conditional(i, self._with_label(parent))

    def _x_mean(self, z1: torch.Tensor) -> torch.Tensor:
        return super()._x_mean(self._with_label(z1))

    def _bottom_up(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return super()._bottom_up(self._with_label(x))

    # --- the public methods, with y ------------------------------------------------------------------

    def elbo(self, x: torch.Tensor, y: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
        """LadderVAE.elbo of x given its labels y (B,): negative ELBO of log p(x | y)."""
        with self._given(y, x.shape[0]):
            return super().elbo(x, beta)

    def generate(self, eps: Sequence[torch.Tensor], y: torch.Tensor) -> Generation:
        """LadderVAE.generate on eps (each (B, d_l)) for labels y (B,)."""
        with self._given(y, eps[-1].shape[0]):
            return super().generate(eps)

    def generate_forced(self, z_teacher: Sequence[torch.Tensor], y: torch.Tensor) -> Generation:
        """LadderVAE.generate_forced on the supplied latents for labels y (B,)."""
        with self._given(y, z_teacher[-1].shape[0]):
            return super().generate_forced(z_teacher)

    def log_joint(self, x: torch.Tensor, z: Sequence[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """log p(x, z | y). x (B, ...), each z (..., B, d_l), y (B,) -> (..., B)."""
        with self._given(y, x.shape[0]):
            return super().log_joint(x, z)

    def posterior_sample(
        self, x: torch.Tensor, y: torch.Tensor, k: int, generator: torch.Generator | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """k draws from q(z | x, y): z list, each (k, B, d_l), and log q, (k, B)."""
        with self._given(y, x.shape[0]):
            return super().posterior_sample(x, k, generator)


# --- the conditional distillation loss ---------------------------------------------------------------


def _check_conditional_pair(teacher: ConditionalLadderVAE, student: ConditionalLadderVAE) -> None:
    """Both models must share noise shapes, inputs, classes and the decoder std (output_kl's one std)."""
    check_latents(teacher, student)
    for name in ("input_shape", "n_classes", "decoder_std"):
        t, s = getattr(teacher, name), getattr(student, name)
        if t != s:
            raise ValueError(f"teacher {name} {t} != student {name} {s}")


def conditional_kd4dgm_loss(
    teacher: ConditionalLadderVAE,
    student: ConditionalLadderVAE,
    eps: Sequence[torch.Tensor],
    y: torch.Tensor,
    lam: float = 0.1,
    reduction: str = "mean",
) -> dict[str, torch.Tensor]:
    """kdflow.dgm.losses.kd4dgm_loss with both chains on the same eps AND the same labels y (B,).

        loss = output_kl(mu_x^T, mu_x^S, decoder_std) + lam * sum_l w2_squared(p_T(z_l | .), p_S(z_l | .))

    each chain on its own latents; the teacher under no_grad. Keys: loss, output, latent, w2_1.. .
    """
    _check_conditional_pair(teacher, student)
    with torch.no_grad():
        gen_t = teacher.generate(eps, y)
    gen_s = student.generate(eps, y)
    out = output_kl(gen_t.x, gen_s.x, teacher.decoder_std)
    layers = [
        w2_squared(mt, st, ms, ss, reduction=reduction)
        for mt, st, ms, ss in zip(gen_t.mu, gen_t.sigma, gen_s.mu, gen_s.sigma)
    ]
    latent = torch.stack(layers).sum() if layers else torch.zeros_like(out)
    parts = {"loss": out + lam * latent, "output": out, "latent": latent}
    parts.update({f"w2_{i + 1}": w for i, w in enumerate(layers)})
    return parts


def old_task_batch(
    model: LadderVAE, n: int, classes: Sequence[int]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Noise for n chains and n labels drawn uniformly from `classes`, both from torch's global RNG."""
    eps = model.sample_noise(n)
    pool = torch.as_tensor(list(classes), dtype=torch.int64, device=eps[0].device)
    return eps, pool[torch.randint(len(pool), (n,), device=pool.device)]


# --- measurement: a refitted proposal and the importance-sampled NLL ---------------------------------


class _Packed(nn.Module):
    """A conditional model read through inputs packed as [flat x, one-hot y] in one (B, D + C) tensor.

    nll.fit_proposal draws minibatches of ONE tensor and calls `elbo(batch)`; packed so, it refits a
    conditional model's encoder by exactly the procedure (seeds, steps, optimiser) the unconditional
    models get, with no second copy of it here.
    """

    def __init__(self, model: ConditionalLadderVAE):
        super().__init__()
        self.model = model

    @property
    def encoder(self) -> nn.ModuleList:
        return self.model.encoder

    def elbo(self, packed: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
        x, onehot = packed.split([self.model.input_dim, self.model.n_classes], dim=-1)
        return self.model.elbo(x, onehot.argmax(-1), beta)


def pack(model: ConditionalLadderVAE, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, *input_shape), (B,) -> (B, D + n_classes): x flattened, then the one-hot label."""
    return torch.cat([x.reshape(len(x), -1), model._one_hot(y, len(x))], dim=-1)


def fit_conditional_proposal(
    model: ConditionalLadderVAE,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int = 2000,
    batch: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
) -> ConditionalLadderVAE:
    """nll.fit_proposal for a conditional model: a copy whose encoder is re-initialised (seeded) and
    trained by the ELBO of (x, y) with the generative part frozen. The model is left untouched."""
    return fit_proposal(_Packed(model), pack(model, x, y), steps, batch, lr, seed).model


class _Given:
    """A conditional model with its labels fixed: the (log_joint, posterior_sample) interface of
    nll.importance_log_weights, which knows nothing of labels."""

    def __init__(self, model: ConditionalLadderVAE, y: torch.Tensor):
        self.model, self.y = model, y

    def log_joint(self, x, z):
        return self.model.log_joint(x, z, self.y)

    def posterior_sample(self, x, k, generator=None):
        return self.model.posterior_sample(x, self.y, k, generator)


def conditional_nll(
    model: ConditionalLadderVAE,
    proposal: ConditionalLadderVAE,
    x: torch.Tensor,
    y: torch.Tensor,
    k: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-log p(x | y) by importance sampling with K=k draws of `proposal` (float64 logsumexp), and
    the draws' effective sample size: both (B,)."""
    log_w = importance_log_weights(_Given(model, y), x, _Given(proposal, y), k, 100, generator)
    return -(torch.logsumexp(log_w, dim=0) - math.log(k)), effective_sample_size(log_w)


# --- training ----------------------------------------------------------------------------------------


def train_elbo(
    model: ConditionalLadderVAE,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    warmup_epochs: int,
    order: torch.Generator,
    extra: Callable[[], torch.Tensor] | None = None,
) -> None:
    """Adam on the negative ELBO of (x, y) (+ `extra()` per step, e.g. a distillation loss).

    Minibatch order comes from `order`, so arms given equal generators see the same batches; the
    posterior (and any `extra`) noise comes from torch's global RNG.
    """
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr)
    model.train()
    for epoch in range(epochs):
        beta = kl_weight(epoch + 1, warmup_epochs)
        for idx in torch.randperm(len(x), generator=order).split(batch_size):
            loss = model.elbo(x[idx], y[idx], beta)["loss"]
            if extra is not None:
                loss = loss + extra()
            opt.zero_grad()
            loss.backward()
            opt.step()


def _in(y: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Boolean mask of labels in `classes`."""
    return torch.isin(y, torch.as_tensor(list(classes), dtype=y.dtype, device=y.device))


def _distill_term(teacher, student, batch: int, classes, lam: float, weight: float) -> Callable:
    """The kd4dgm arm's per-step extra loss: fresh noise and old-task labels every call."""

    def term() -> torch.Tensor:
        eps, y_old = old_task_batch(student, batch, classes)
        return weight * conditional_kd4dgm_loss(teacher, student, eps, y_old, lam)["loss"]

    return term


def _evaluate(model, x_fit, y_fit, tests, *, k, steps, batch, seed) -> dict[str, float]:
    """Refit a proposal to `model` (one procedure for all), then NLL and median ESS per task."""
    proposal = fit_conditional_proposal(model, x_fit, y_fit, steps=steps, batch=batch, seed=seed)
    model.eval()
    out = {}
    for name, (x, y) in tests.items():
        nll, ess = conditional_nll(model, proposal, x, y, k, torch.Generator().manual_seed(seed))
        out[f"{name}_nll"] = nll.mean().item()
        out[f"{name}_ess_median"] = ess.median().item()
    return out


def run_continual(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    tasks: tuple[Sequence[int], Sequence[int]] = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9)),
    hidden: int = 64,
    layers: int = 2,
    latent: int = 8,
    epochs: int = 200,
    batch_size: int = 128,
    lr: float = 1e-3,
    kl_warmup_epochs: int = 10,
    lam: float = 0.1,
    distill_weight: float = 1.0,
    k: int = 1000,
    proposal_steps: int = 3000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Two-task continual learning of a ConditionalLadderVAE; returns {model: {metric: float}}.

    Models: "step1" (task 1's real data, ELBO with KL warm-up over `kl_warmup_epochs`), "naive" and
    "kd4dgm" (copies of step1 trained `epochs` more on task 2 at beta = 1: the ELBO alone, or plus
    distill_weight * conditional_kd4dgm_loss against frozen step1 on fresh noise and task-1 labels
    each step), "joint" (a fresh model, same initialisation as step1, `epochs` on both tasks' data
    with warm-up). Each phase runs `epochs` passes over its own data. Metrics per model:
    task{1,2}_nll, the mean over that task's test points of -log p(x | y) (nats, importance sampled,
    K = k) and task{1,2}_ess_median, the median effective sample size of those weights (far below K,
    the estimate rests on a few draws and over-states the NLL by an amount it cannot show).

    Measurement: each model's proposal is refitted by fit_conditional_proposal (its encoder reset
    with `seed`, `proposal_steps` steps, the rest frozen) on the union of BOTH tasks' training data.
    That refit sees task-1 training data, for measurement only: it changes no generative weight.
    The validation split is checked for shape and otherwise unused: nothing is selected, every
    setting is fixed in advance and every model is the last epoch's. Inputs are float (N, *shape),
    already normalised; labels int64. No file I/O. Deterministic for a seed (reseeds torch's RNG).
    """
    shape = tuple(x_train.shape[1:])
    for x, y in ((x_train, y_train), (x_val, y_val), (x_test, y_test)):
        if tuple(x.shape[1:]) != shape or len(x) != len(y):
            raise ValueError(f"inputs {tuple(x.shape)} / labels {tuple(y.shape)} do not match {shape}")
    n_classes = int(max(max(tasks[0]), max(tasks[1]))) + 1
    parts = {"old": _in(y_train, tasks[0]), "new": _in(y_train, tasks[1])}
    parts["both"] = parts["old"] | parts["new"]

    def fresh() -> ConditionalLadderVAE:
        torch.manual_seed(seed)
        return ConditionalLadderVAE(shape, n_classes, hidden=hidden, layers=layers, latent=latent)

    def phase(model, part: str, warmup: int, order_seed: int, extra=None) -> ConditionalLadderVAE:
        m, order = parts[part], torch.Generator().manual_seed(order_seed)
        train_elbo(
            model,
            x_train[m],
            y_train[m],
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            warmup_epochs=warmup,
            order=order,
            extra=extra,
        )
        return model

    models = {"step1": phase(fresh(), "old", kl_warmup_epochs, seed)}
    teacher = copy.deepcopy(models["step1"]).requires_grad_(False).eval()
    for arm in ARMS:
        student = copy.deepcopy(models["step1"])
        torch.manual_seed(seed + 1)  # every arm's noise stream starts alike; batches from `order`
        extra = _distill_term(teacher, student, batch_size, tasks[0], lam, distill_weight)
        models[arm] = phase(student, "new", 0, seed + 1, extra if arm == "kd4dgm" else None)
    models["joint"] = phase(fresh(), "both", kl_warmup_epochs, seed + 2)
    tests = {f"task{i + 1}": (x_test[m], y_test[m]) for i, m in enumerate(_in(y_test, t) for t in tasks)}
    x_fit, y_fit = x_train[parts["both"]], y_train[parts["both"]]
    measure = {"k": k, "steps": proposal_steps, "batch": batch_size, "seed": seed}
    return {name: _evaluate(model, x_fit, y_fit, tests, **measure) for name, model in models.items()}


# --- the digits experiment ---------------------------------------------------------------------------


def load_digits_splits(data_seed: int = 42, val_fraction: float = 0.2, split_seed: int = 0):
    """scikit-learn's 8x8 digits through kdflow.data: (x, y) for train, val, test; x normalised."""
    from kdflow.data import load_digits, load_split, save_raw

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits.npz"
        save_raw(load_digits(None, data_seed), path)
        splits = [load_split(path, name, val_fraction, split_seed) for name in ("train", "val", "test")]
    return [(s.inputs(), s.y) for s in splits]


def summarise(runs: Sequence[dict]) -> dict[str, dict[str, list[float]]]:
    """{model: {metric: [mean, std]}} over seeds (std with ddof=1; 0 for one seed)."""
    out = {}
    for name in runs[0]:
        out[name] = {}
        for metric in runs[0][name]:
            v = np.array([r[name][metric] for r in runs])
            out[name][metric] = [float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0]
    return out


def markdown_table(summary: dict, n_seeds: int) -> str:
    """Models x {task-1 NLL, task-2 NLL} as mean ± std over seeds."""
    rows = [
        f"| model ({n_seeds} seeds) | task-1 NLL (nats) | task-2 NLL | task-1 ESS (median) | task-2 ESS |",
        "|---|---|---|---|---|",
    ]
    for name, m in summary.items():
        cells = [f"{m[key][0]:.2f} ± {m[key][1]:.2f}" for key in METRICS[:2]]
        cells += [f"{m[key][0]:.0f}" for key in METRICS[2:]]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the two-task digits experiment over seeds, print a markdown table, write JSON to --out."""
    from kdflow.atomic import write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--kl-warmup-epochs", type=int, default=10)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--proposal-steps", type=int, default=3000)
    ap.add_argument("--lam", type=float, default=0.1)
    ap.add_argument("--distill-weight", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    (xtr, ytr), (xva, yva), (xte, yte) = load_digits_splits()
    opts = {
        "epochs": args.epochs,
        "kl_warmup_epochs": args.kl_warmup_epochs,
        "k": args.k,
        "proposal_steps": args.proposal_steps,
        "lam": args.lam,
        "distill_weight": args.distill_weight,
    }
    start, runs = time.perf_counter(), []
    for seed in args.seeds:
        runs.append(run_continual(xtr, ytr, xva, yva, xte, yte, seed=seed, **opts))
    summary = summarise(runs)
    print(markdown_table(summary, len(runs)))
    print(f"\nwall time {time.perf_counter() - start:.1f} s")
    result = {"options": opts, "seeds": args.seeds, "runs": runs, "summary": summary}
    if args.out is not None:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
