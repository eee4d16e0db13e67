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

Members that stop (pruned, diverged) leave the stack at the end of that epoch (`keep_members`): the
parameters, buffers and optimizer state keep only the live members' rows, so the rest of the fit
costs what a stack of the live members costs. A member's numbers do not depend on whether others
left: each member's rows are computed as before, and dropout draws its masks for the whole original
stack (see `Stacked.dropout`). Members keep their original indices throughout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kdflow.data import Split
from kdflow.engine import TrainConfig, epoch_permutation, make_optimizer, make_scheduler, predict_logits
from kdflow.losses import kd_loss
from kdflow.models import CNN1D, MLP, Classifier


class Stacked(nn.Module):
    """What both stacked families share: which members the rows hold, and their dropout."""

    def __init__(self, k: int, dropout: float):
        super().__init__()
        self.members = list(range(k))  # the original index of each member still stacked, in row order
        self.k_full = k  # members at the start: dropout masks are drawn for all of them
        self.dropout_p = dropout

    def row(self, member: int) -> int:
        return self.members.index(member)

    def dropout(self, h: torch.Tensor, dim: int) -> torch.Tensor:
        """nn.Dropout on `h` whose members lie along `dim`, with the masks drawn for the original
        stack, as nn.Dropout draws them on CPU, and the rows of the members still here taken: a
        member's mask is the same whichever others have left (at the cost of drawing theirs)."""
        if not self.training or self.dropout_p == 0:
            return h
        shape, keep = list(h.shape), 1 - self.dropout_p
        shape[dim] = self.k_full
        mask = torch.empty(shape, dtype=h.dtype, device=h.device).bernoulli_(keep).div_(keep)
        if len(self.members) < self.k_full:
            mask = mask.index_select(dim, torch.tensor(self.members, device=h.device))
        return h * mask


class StackedMLP(Stacked):
    def __init__(self, members: list[MLP]):
        n_layers = len(members[0].blocks)
        super().__init__(len(members), members[0].blocks[0][2].p if n_layers else 0.0)
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

    def forward(self, x):
        k = self.head_w.shape[0]
        h = x.flatten(1).expand(k, -1, -1)  # (K, B, D)
        for w, b in zip(self.weights, self.biases):
            h = self.dropout(F.relu(torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))), dim=0)
        return torch.baddbmm(self.head_b[:, None, :], h, self.head_w.transpose(1, 2))  # (K, B, C)

    def member_state(self, member: int) -> dict[str, torch.Tensor]:
        k = self.row(member)
        state = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            state[f"blocks.{i}.0.weight"], state[f"blocks.{i}.0.bias"] = w[k], b[k]
        state["head.weight"], state["head.bias"] = self.head_w[k], self.head_b[k]
        return state


class StackedCNN1D(Stacked):
    def __init__(self, members: list[CNN1D]):
        super().__init__(len(members), members[0].dropout.p)
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
        self.head_w = nn.Parameter(torch.stack([m.head.weight.detach() for m in members]))  # (K, C, F)
        self.head_b = nn.Parameter(torch.stack([m.head.bias.detach() for m in members]))

    def forward(self, x):
        k = self.head_w.shape[0]
        h = x.unsqueeze(1).expand(-1, k, -1)  # (B, K, L): member k reads channel k
        for block in self.blocks:
            h = block(h)  # (B, K*C, L')
        h = self.dropout(h.reshape(h.shape[0], k, -1), dim=1)  # (B, K, C*L'), each member channel-major
        return torch.einsum("bkf,kcf->kbc", h, self.head_w) + self.head_b[:, None, :]  # (K, B, C)

    def member_state(self, member: int) -> dict[str, torch.Tensor]:
        k = self.row(member)
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


def stack(members: list[Classifier]) -> Stacked:
    return STACKED[type(members[0])](members)


def unstack(stacked: Stacked, k: int, template: Classifier) -> Classifier:
    """Member k's weights loaded into `template` (a fresh model of the same spec)."""
    template.load_state_dict({n: t.detach().clone() for n, t in stacked.member_state(k).items()})
    return template.eval()


@torch.no_grad()
def keep_members(stacked: Stacked, keep: list[int], optimizer: torch.optim.Optimizer | None = None) -> None:
    """Shrink `stacked` in place to the members `keep` (original indices, a subset of those stacked).

    Every parameter and buffer holds one block of rows per member along dim 0 ((K, ...) or
    (K*C, ...)): each keeps its members' blocks, and so does the optimizer's per-parameter state.
    Parameters are new tensors (autograd keeps the old ones' shapes), swapped into `optimizer` in
    place, so it and its scheduler go on as they were."""
    k = len(stacked.members)
    rows = torch.tensor([stacked.row(m) for m in keep], device=stacked.head_w.device)

    def take(t: torch.Tensor) -> torch.Tensor:  # (K*c, ...) -> (len(keep)*c, ...)
        return t.reshape(k, -1, *t.shape[1:]).index_select(0, rows).reshape(-1, *t.shape[1:])

    new = {}
    for module in stacked.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            new[p] = nn.Parameter(take(p), requires_grad=p.requires_grad)
            setattr(module, name, new[p])
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.dim():  # BatchNorm's running stats; num_batches_tracked is shared
                setattr(module, name, take(buffer))
        if isinstance(module, nn.Conv1d):  # grouped: a group per member
            module.in_channels = module.in_channels // k * len(keep)
            module.out_channels = module.out_channels // k * len(keep)
            module.groups = len(keep)
        elif isinstance(module, nn.BatchNorm1d):
            module.num_features = module.num_features // k * len(keep)
    stacked.members = list(keep)
    if optimizer is not None:
        for group in optimizer.param_groups:
            group["params"] = [new[p] for p in group["params"]]
        for old, p in new.items():
            if old in optimizer.state:  # exp_avg, exp_avg_sq / momentum_buffer; not Adam's step
                state = optimizer.state.pop(old)
                optimizer.state[p] = {n: take(v) if v.shape == old.shape else v for n, v in state.items()}


@dataclass
class MemberResult:
    best_val_acc: float = -1.0
    best_epoch: int = 0
    stopped: str = ""  # "" ran to the end; otherwise why it stopped (pruned, diverged)
    epochs_run: int = 0


# on_epoch(epoch, {member: its metrics}, live members) -> {member: reason it stops now}
EpochHook = Callable[[int, dict[int, dict], list[int]], dict[int, str]]


def fit_stacked(
    stacked: Stacked,
    train: Split,
    val: Split,
    cfg: TrainConfig,
    teacher_logits: torch.Tensor,  # (N_train, C)
    temperatures: torch.Tensor,  # (K,)
    alphas: torch.Tensor,  # (K,)
    on_epoch: EpochHook | None = None,
) -> list[MemberResult]:
    """KD-train all members together; a member stopped by `on_epoch` (pruning) or by a non-finite
    loss (divergence) leaves the stack at the end of that epoch; when none is left the fit ends.
    Results are indexed by original member; `stacked` ends holding the members of its last epoch.
    No checkpoints: a killed tuning job's trials are failed and redrawn (see kdflow.tuning)."""
    device = cfg.device
    stacked.to(device)
    train, val = train.to(device), val.to(device)
    teacher_logits = teacher_logits.to(device)
    temperatures, alphas = temperatures.to(device), alphas.to(device)
    opt = make_optimizer(stacked.parameters(), cfg)
    sched = make_scheduler(opt, cfg)
    results = [MemberResult() for _ in range(len(temperatures))]
    n = len(train)
    for epoch in range(1, cfg.epochs + 1):
        live = list(stacked.members)
        temps, alps = temperatures[live], alphas[live]  # (K_live,)
        stacked.train()
        perm = epoch_permutation(n, cfg.seed, epoch, device)
        loss_sum = torch.zeros(len(live), device=device)
        for start in range(0, n, cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            loss = kd_loss(stacked(train.inputs(idx)), teacher_logits[idx], train.y[idx], temps, alps)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # members share no parameter: each gets its own loss's gradient
            opt.step()
            loss_sum += loss.detach() * len(idx)
        lr = opt.param_groups[0]["lr"]
        sched.step()

        logits = predict_logits(stacked, val)  # (K_live, N_val, C)
        val_acc = (logits.argmax(-1) == val.y).float().mean(-1).tolist()
        train_loss = (loss_sum / n).tolist()
        metrics = {
            m: {"train_loss": train_loss[r], "val_acc": val_acc[r], "lr": lr} for r, m in enumerate(live)
        }
        stops = {}
        for m in live:
            result = results[m]
            result.epochs_run = epoch
            if not math.isfinite(metrics[m]["train_loss"]):
                stops[m] = f"training loss became {metrics[m]['train_loss']} at epoch {epoch}"
            elif metrics[m]["val_acc"] > result.best_val_acc:
                result.best_val_acc, result.best_epoch = metrics[m]["val_acc"], epoch
        if on_epoch is not None:
            stops.update(on_epoch(epoch, metrics, [m for m in live if m not in stops]))
        for m, reason in stops.items():
            results[m].stopped = reason
        remaining = [m for m in live if m not in stops]
        if not remaining:
            break
        if len(remaining) < len(live):
            keep_members(stacked, remaining, opt)
    return results
