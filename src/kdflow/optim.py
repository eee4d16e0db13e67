"""AdamW, SGD and their learning-rate schedules over one tensor, without torch.optim.

    flat = FlatParameters(model)                              # kdflow.flat: one buffer
    opt = AdamW(flat.param, lr=3e-3, weight_decay=1e-4)       # or SGD(flat.param, lr, weight_decay)
    sched = CosineLR(opt, epochs)                             # or ConstantLR(opt), FactorLR(opt, f)
    opt.zero_grad(); loss.backward(); flat.collect_grads(); opt.step()   # every batch
    sched.step()                                                         # every epoch
    opt.lr                                                    # the rate the next step uses

Why: constructing a torch.optim.Optimizer imports torch._dynamo (~1.3 s of every job with torch
2.13), and torch's schedulers need an Optimizer. Over one tensor an update is a dozen lines.

The arithmetic is torch's single-tensor path (torch/optim/adam.py `_single_tensor_adam` with
decoupled weight decay, sgd.py `_single_tensor_sgd`): the same operations in the same order with
the same Python-float scalars, so on CPU the weights equal torch.optim.AdamW's / SGD's bit for bit,
and CosineLR repeats CosineAnnealingLR's recursion, so the rates are the same floats
(tests/test_optim.py). On a GPU torch would take its foreach path: the same formula and scalars.
"""

from __future__ import annotations

import math

import torch


class AdamW:
    """torch.optim.AdamW(param, lr, weight_decay=...) with its defaults: betas (0.9, 0.999), eps 1e-8,
    no amsgrad, no maximize, not capturable."""

    betas = (0.9, 0.999)
    eps = 1e-8

    def __init__(self, param: torch.Tensor, lr: float, weight_decay: float):
        self.param, self.lr, self.weight_decay = param, lr, weight_decay
        self.steps = 0
        self.exp_avg = torch.zeros_like(param, memory_format=torch.preserve_format)
        self.exp_avg_sq = torch.zeros_like(param, memory_format=torch.preserve_format)

    def zero_grad(self) -> None:
        self.param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        grad = self.param.grad
        if grad is None:  # torch skips a parameter without gradient, step count included
            return
        beta1, beta2 = self.betas
        self.steps += 1
        if self.weight_decay != 0:
            self.param.mul_(1 - self.lr * self.weight_decay)  # decoupled: before the moments
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = float(self.steps)  # torch counts in a float32 tensor and reads it with .item()
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = self.lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5  # Python's pow, not math.sqrt: as torch
        denom = (self.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
        self.param.addcdiv_(self.exp_avg, denom, value=-step_size)

    def state_dict(self) -> dict:
        return {"lr": self.lr, "steps": self.steps, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.steps = state["lr"], state["steps"]
        self.exp_avg = _like(state["exp_avg"], self.param)
        self.exp_avg_sq = _like(state["exp_avg_sq"], self.param)


class SGD:
    """torch.optim.SGD(param, lr, momentum=0.9, nesterov=nesterov, weight_decay=...): dampening 0,
    weight decay as L2 added to the gradient."""

    momentum = 0.9

    def __init__(self, param: torch.Tensor, lr: float, weight_decay: float, nesterov: bool = True):
        self.param, self.lr, self.weight_decay, self.nesterov = param, lr, weight_decay, nesterov
        self.momentum_buffer: torch.Tensor | None = None  # the first step's gradient, as torch

    def zero_grad(self) -> None:
        self.param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        grad = self.param.grad
        if grad is None:
            return
        if self.weight_decay != 0:
            grad = grad.add(self.param, alpha=self.weight_decay)
        if self.momentum_buffer is None:
            self.momentum_buffer = grad.detach().clone()
        else:
            self.momentum_buffer.mul_(self.momentum).add_(grad, alpha=1)  # alpha: 1 - dampening
        buf = self.momentum_buffer
        grad = grad.add(buf, alpha=self.momentum) if self.nesterov else buf
        self.param.add_(grad, alpha=-self.lr)

    def state_dict(self) -> dict:
        return {"lr": self.lr, "momentum_buffer": self.momentum_buffer}

    def load_state_dict(self, state: dict) -> None:
        self.lr = state["lr"]
        buf = state["momentum_buffer"]
        self.momentum_buffer = None if buf is None else _like(buf, self.param)


def _like(saved: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A loaded state tensor on the parameter's device and dtype (checkpoints load to the CPU)."""
    return saved.to(device=param.device, dtype=param.dtype, copy=True)


class CosineLR:
    """torch's CosineAnnealingLR(opt, T_max=epochs, eta_min=0), stepped once per epoch. Torch moves
    the rate from the previous one by a ratio of cosines, not by the closed form
    base_lr * (1 + cos(pi * epoch / T_max)) / 2: the recursion is repeated so the floats agree."""

    eta_min = 0.0

    def __init__(self, opt: AdamW | SGD, epochs: int):
        self.opt, self.t_max = opt, epochs
        self.base_lr = opt.lr
        self.epoch = 0  # torch's last_epoch

    def step(self) -> None:
        self.epoch += 1
        e, t, lr = self.epoch, self.t_max, self.opt.lr
        if (e - 1 - t) % (2 * t) == 0:  # one past the minimum: the cosine restarts upwards
            self.opt.lr = lr + (self.base_lr - self.eta_min) * (1 - math.cos(math.pi / t)) / 2
        else:
            ratio = (1 + math.cos(math.pi * e / t)) / (1 + math.cos(math.pi * (e - 1) / t))
            self.opt.lr = ratio * (lr - self.eta_min) + self.eta_min

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "base_lr": self.base_lr}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.base_lr = state["epoch"], state["base_lr"]


class ConstantLR:
    """The learning rate never changes (torch: LambdaLR with a factor of 1.0)."""

    def __init__(self, opt: AdamW | SGD):
        self.opt = opt

    def step(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def lr_factor(scheduler: str, epochs: int, milestones=(), gamma: float = 0.1, warmup: int = 0):
    """The rate of epoch e (0-based) as a multiple of the peak rate, in closed form, for the
    schedules without a torch recursion to repeat: "multistep" (x gamma at each milestone, an
    epoch count: RepDistiller's x0.1 at 150/180/210 of 240) and any schedule with a linear
    warm-up (epoch e < warmup trains at (e + 1) / warmup of the rate). None for plain cosine and
    constant, which CosineLR / ConstantLR give. torch's LambdaLR with this factor is the reference."""
    if scheduler != "multistep" and not warmup:
        return None

    def factor(e: int) -> float:
        if scheduler == "multistep":
            f = gamma ** sum(e >= m for m in milestones)
        elif scheduler == "cosine":
            f = (1 + math.cos(math.pi * e / epochs)) / 2
        else:
            f = 1.0
        return f * (e + 1) / warmup if e < warmup else f

    return factor


class FactorLR:
    """torch's LambdaLR(opt, factor): the rate of epoch e is base_lr * factor(e), the same float."""

    def __init__(self, opt: AdamW | SGD, factor):
        self.opt, self.factor = opt, factor
        self.base_lr = opt.lr
        self.epoch = 0
        opt.lr = self.base_lr * factor(0)

    def step(self) -> None:
        self.epoch += 1
        self.opt.lr = self.base_lr * self.factor(self.epoch)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "base_lr": self.base_lr}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.base_lr = state["epoch"], state["base_lr"]
