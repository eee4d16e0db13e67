"""K models of one spec trained as one: several Optuna trials' students in a single pass.

    members = [build_model(spec, shape, n_cls) for _ in range(K)]   # identical init per seed
    stacked = stack(members)                     # forward: (B, *in) -> (K, B, C)
    result = fit_stacked(stacked, train, val, cfg, teacher_logits, temps, alphas, on_epoch)

Small students leave a CPU core idle between PyTorch's per-op overheads; stacking K of them
turns K small ops into one K-times-larger op. Members share nothing: an MLP layer becomes a
batched matmul over (K, out, in) weights, a CNN1D conv a grouped conv (groups=K) whose BatchNorm
channels are the members' channels, so each member's maths is that of its own model (up to
float summation order). All members see the same batches in the same order, as sequential trials
with one training seed do. `unstack` gives back member k as an ordinary model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kdflow.data import Split
from kdflow.engine import TrainConfig, epoch_permutation, make_optimizer, make_scheduler, predict_logits
from kdflow.losses import kd_loss
from kdflow.models import CNN1D, MLP, Classifier


class StackedMLP(nn.Module):
    def __init__(self, members: list[MLP]):
        super().__init__()
        n_layers = len(members[0].blocks)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([m.blocks[i][0].weight.detach() for m in members]))  # (K, out, in)
            for i in range(n_layers)
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([m.blocks[i][0].bias.detach() for m in members]))
            for i in range(n_layers)
        )
        self.head_w = nn.Parameter(torch.stack([m.head.weight.detach() for m in members]))
        self.head_b = nn.Parameter(torch.stack([m.head.bias.detach() for m in members]))
        self.dropout = nn.Dropout(members[0].blocks[0][2].p) if n_layers else nn.Identity()

    def forward(self, x):
        k = self.head_w.shape[0]
        h = x.flatten(1).expand(k, -1, -1)  # (K, B, D)
        for w, b in zip(self.weights, self.biases):
            h = self.dropout(F.relu(torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))))
        return torch.baddbmm(self.head_b[:, None, :], h, self.head_w.transpose(1, 2))  # (K, B, C)

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        state = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            state[f"blocks.{i}.0.weight"], state[f"blocks.{i}.0.bias"] = w[k], b[k]
        state["head.weight"], state["head.bias"] = self.head_w[k], self.head_b[k]
        return state


class StackedCNN1D(nn.Module):
    def __init__(self, members: list[CNN1D]):
        super().__init__()
        k = len(members)
        blocks = []
        for i, block in enumerate(members[0].blocks):
            conv, bn = block[0], block[1]
            sconv = nn.Conv1d(
                conv.in_channels * k,
                conv.out_channels * k,
                conv.kernel_size,
                stride=conv.stride,
                padding=conv.padding,
                groups=k,
            )
            sbn = nn.BatchNorm1d(bn.num_features * k, eps=bn.eps, momentum=bn.momentum)
            with torch.no_grad():
                sconv.weight.copy_(torch.cat([m.blocks[i][0].weight for m in members]))
                sconv.bias.copy_(torch.cat([m.blocks[i][0].bias for m in members]))
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(sbn, name).copy_(torch.cat([getattr(m.blocks[i][1], name) for m in members]))
            blocks.append(nn.Sequential(sconv, sbn, nn.ReLU()))
        self.blocks = nn.ModuleList(blocks)
        self.dropout = nn.Dropout(members[0].dropout.p)
        self.head_w = nn.Parameter(torch.stack([m.head.weight.detach() for m in members]))  # (K, C, F)
        self.head_b = nn.Parameter(torch.stack([m.head.bias.detach() for m in members]))

    def forward(self, x):
        k = self.head_w.shape[0]
        h = x.unsqueeze(1).expand(-1, k, -1)  # (B, K, L): member k reads channel k
        for block in self.blocks:
            h = block(h)  # (B, K*C, L')
        h = self.dropout(h.reshape(h.shape[0], k, -1))  # (B, K, C*L'), each member channel-major
        return torch.einsum("bkf,kcf->kbc", h, self.head_w) + self.head_b[:, None, :]  # (K, B, C)

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        state = {}
        for i, block in enumerate(self.blocks):
            conv, bn = block[0], block[1]
            c = conv.out_channels // self.head_w.shape[0]
            part = slice(k * c, (k + 1) * c)
            state[f"blocks.{i}.0.weight"], state[f"blocks.{i}.0.bias"] = conv.weight[part], conv.bias[part]
            for name in ("weight", "bias", "running_mean", "running_var"):
                state[f"blocks.{i}.1.{name}"] = getattr(bn, name)[part]
            state[f"blocks.{i}.1.num_batches_tracked"] = bn.num_batches_tracked
        state["head.weight"], state["head.bias"] = self.head_w[k], self.head_b[k]
        return state


# family class -> its stacked form; families absent here are tuned one trial at a time.
STACKED = {MLP: StackedMLP, CNN1D: StackedCNN1D}


def can_stack(model: Classifier) -> bool:
    return type(model) in STACKED


def stack(members: list[Classifier]) -> nn.Module:
    return STACKED[type(members[0])](members)


def unstack(stacked: nn.Module, k: int, template: Classifier) -> Classifier:
    """Member k's weights loaded into `template` (a fresh model of the same spec)."""
    template.load_state_dict({n: t.detach().clone() for n, t in stacked.member_state(k).items()})
    return template.eval()


@dataclass
class MemberResult:
    best_val_acc: float = -1.0
    best_epoch: int = 0
    stopped: str = ""  # "" ran to the end; otherwise why it stopped (pruned, diverged)
    epochs_run: int = 0


# on_epoch(epoch, per-member metrics, still-active members) -> {member: reason it stops now}
EpochHook = Callable[[int, list[dict], list[int]], dict[int, str]]


def fit_stacked(
    stacked: nn.Module,
    train: Split,
    val: Split,
    cfg: TrainConfig,
    teacher_logits: torch.Tensor,  # (N_train, C)
    temperatures: torch.Tensor,  # (K,)
    alphas: torch.Tensor,  # (K,)
    on_epoch: EpochHook | None = None,
) -> list[MemberResult]:
    """KD-train all members together; a member stopped by `on_epoch` (pruning) or by a non-finite
    loss (divergence) stops learning; when none is left the fit ends. No checkpoints: a killed
    tuning job's trials are failed and redrawn (see kdflow.tuning)."""
    device = cfg.device
    stacked.to(device)
    train, val = train.to(device), val.to(device)
    teacher_logits = teacher_logits.to(device)
    k = len(temperatures)
    opt = make_optimizer(stacked, cfg)
    sched = make_scheduler(opt, cfg)
    results = [MemberResult() for _ in range(k)]
    active = torch.ones(k, dtype=torch.bool, device=device)
    n = len(train)
    for epoch in range(1, cfg.epochs + 1):
        stacked.train()
        perm = epoch_permutation(n, cfg.seed, epoch, device)
        loss_sum = torch.zeros(k, device=device)
        for start in range(0, n, cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            parts = kd_loss(stacked(train.x[idx]), teacher_logits[idx], train.y[idx], temperatures, alphas)
            loss = torch.where(active, parts["loss"], 0.0)  # stopped members no longer learn
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            loss_sum += loss.detach() * len(idx)
        lr = opt.param_groups[0]["lr"]
        sched.step()

        logits = predict_logits(stacked, val.x)  # (K, N_val, C)
        val_acc = (logits.argmax(-1) == val.y).float().mean(-1).tolist()
        train_loss = (loss_sum / n).tolist()
        live = [i for i in range(k) if active[i]]
        metrics = [{"train_loss": train_loss[i], "val_acc": val_acc[i], "lr": lr} for i in range(k)]
        stops = {}
        for i in live:
            r = results[i]
            r.epochs_run = epoch
            if not torch.isfinite(torch.tensor(train_loss[i])):
                stops[i] = f"training loss became {train_loss[i]} at epoch {epoch}"
                continue
            if val_acc[i] > r.best_val_acc:
                r.best_val_acc, r.best_epoch = val_acc[i], epoch
        live_finite = [i for i in live if i not in stops]
        if on_epoch is not None:
            stops.update(on_epoch(epoch, metrics, live_finite))
        for i, reason in stops.items():
            results[i].stopped = reason
            active[i] = False
        if not active.any():
            break
    return results
