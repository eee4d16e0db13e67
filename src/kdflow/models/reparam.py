"""Structural re-parameterisation: a layer trained as K parallel linear branches, folded into the
one layer it replaced (RepVGG, Ding et al. CVPR 2021; Diverse Branch Block, Ding et al. CVPR 2021).

    rep = branch(model, block=2, k=4)     # block 2's conv + BN becomes 4 branches, each conv + BN
    ...train: rep.outputs holds the K branch features of the last forward...
    fold(model)                            # back to the original conv + BN, the same function in eval

A model family says where its block's linear layer is with `rep_target(i)`: (the module holding
it, the layer's attribute, the attribute of the BatchNorm after it or None). The layer is a Conv1d,
Conv2d (any kernel, stride, padding k // 2) or Linear. Its branches, in this order and repeated
until there are K: the layer's own kernel + BN (the first starts from the layer's initial weights),
a 1x1 (or, for Linear, a second full) + BN, identity + BN where input and output have the same
shape (stride 1, equal channels). A branch is linear in eval mode, so the sum of branches is one
layer: each BN is folded into its kernel, 1x1 kernels are zero-padded to the centre, identity is a
centred delta, and the sums of kernels and biases become the original layer's weights with a
BatchNorm that adds the bias (or, without a BatchNorm, the layer's own bias).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CONV = (nn.Conv1d, nn.Conv2d)


class Branches(nn.Module):
    """K parallel branches standing for `layer` (and the `bn` after it, replaced by Identity)."""

    def __init__(self, layer: nn.Module, has_bn: bool, k: int):
        super().__init__()
        if k < 2:
            raise ValueError(f"re-parameterisation needs 2 or more branches, got {k}")
        self.template = _describe(layer)
        self.has_bn = has_bn
        kinds = ["full", "point"] + (["identity"] if _identity_ok(self.template) else [])
        self.kinds = [kinds[i % len(kinds)] for i in range(k)]
        self.branches = nn.ModuleList(self._branch(kind) for kind in self.kinds)
        with torch.no_grad():  # the first branch starts where the plain layer would have
            self.branches[0][0].weight.copy_(layer.weight)
        self.outputs: list[torch.Tensor] = []

    def _branch(self, kind: str) -> nn.Sequential:
        t = self.template
        bn = {nn.Linear: nn.BatchNorm1d, nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d}[t["type"]]
        if kind == "identity":
            return nn.Sequential(nn.Identity(), bn(t["out"]))
        if t["type"] is nn.Linear:
            return nn.Sequential(nn.Linear(t["in"], t["out"], bias=False), bn(t["out"]))
        kernel, padding = (t["kernel_size"], t["padding"]) if kind == "full" else (1, 0)
        conv = t["type"](t["in"], t["out"], kernel, t["stride"], padding, bias=False)
        return nn.Sequential(conv, bn(t["out"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.outputs = [b(x) for b in self.branches]
        return torch.stack(self.outputs).sum(0)

    @torch.no_grad()
    def merged(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The one kernel and bias equal to the sum of the branches in eval mode."""
        t = self.template
        device = self.branches[0][1].weight.device
        weight = torch.zeros(t["out"], t["in"], *t["kernel_size"], device=device)
        bias = torch.zeros(t["out"], device=device)
        for kind, (op, bn) in zip(self.kinds, self.branches):
            w = _kernel(kind, op, t, device)
            std = (bn.running_var + bn.eps).sqrt()
            scale = bn.weight / std
            weight += w * scale.view(-1, *[1] * (w.dim() - 1))
            bias += bn.bias - bn.running_mean * scale
        return weight, bias

    def folded(self) -> tuple[nn.Module, nn.Module | None]:
        """The original layer (and BatchNorm) computing what the branches compute in eval mode."""
        t = self.template
        weight, bias = self.merged()
        if t["type"] is nn.Linear:
            layer = nn.Linear(t["in"], t["out"], bias=t["bias"])
        else:
            layer = t["type"](t["in"], t["out"], t["kernel_size"], t["stride"], t["padding"], bias=t["bias"])
        with torch.no_grad():
            layer.weight.copy_(weight)
            if not self.has_bn:
                if layer.bias is None:
                    raise ValueError("a layer without bias or BatchNorm cannot hold the branches' bias")
                layer.bias.copy_(bias)
                return layer, None
            if layer.bias is not None:
                layer.bias.zero_()
            bn = type(self.branches[0][1])(t["out"])
            # eval BN: (x - 0) / sqrt(1 + eps) * sqrt(1 + eps) + bias = x + bias
            bn.weight.fill_(math.sqrt(1 + bn.eps))
            bn.bias.copy_(bias)
        return layer, bn


def _describe(layer: nn.Module) -> dict:
    if isinstance(layer, nn.Linear):
        kind = {"type": nn.Linear, "in": layer.in_features, "out": layer.out_features}
        return {**kind, "kernel_size": (), "bias": layer.bias is not None}
    if not isinstance(layer, CONV) or layer.groups != 1 or layer.dilation != (1,) * len(layer.kernel_size):
        raise ValueError(f"cannot re-parameterise {layer}: Linear, Conv1d or Conv2d (groups 1, no dilation)")
    if any(p != k // 2 or k % 2 == 0 for p, k in zip(layer.padding, layer.kernel_size)):
        raise ValueError(f"cannot re-parameterise {layer}: odd kernels with padding kernel // 2")
    return {
        "type": type(layer),
        "in": layer.in_channels,
        "out": layer.out_channels,
        "kernel_size": layer.kernel_size,
        "stride": layer.stride,
        "padding": layer.padding,
        "bias": layer.bias is not None,
    }


def _identity_ok(t: dict) -> bool:
    return t["in"] == t["out"] and (t["type"] is nn.Linear or all(s == 1 for s in t["stride"]))


def _kernel(kind: str, op: nn.Module, t: dict, device: torch.device) -> torch.Tensor:
    """A branch's kernel in the shape of the full layer's (before its BatchNorm)."""
    if kind == "full":
        return op.weight
    if kind == "point" and t["type"] is nn.Linear:
        return op.weight
    if kind == "point":  # 1x1, zero-padded to the centre of the full kernel
        pad = [p for k in reversed(t["kernel_size"]) for p in (k // 2, k // 2)]
        return F.pad(op.weight, pad)
    eye = torch.zeros(
        t["out"], t["in"], *t["kernel_size"], device=device
    )  # identity: a centred delta per channel
    centre = tuple(k // 2 for k in t["kernel_size"])
    for c in range(t["out"]):
        eye[(c, c, *centre)] = 1.0
    return eye


def branch(model: nn.Module, block: int, k: int) -> Branches:
    """Replace block `block`'s layer (and BatchNorm) of `model` by K branches; return them."""
    holder, layer_key, bn_key = model.rep_target(block)
    rep = Branches(getattr(holder, layer_key), bn_key is not None, k)
    setattr(holder, layer_key, rep)
    if bn_key is not None:
        setattr(holder, bn_key, nn.Identity())
    return rep


def fold(model: nn.Module, block: int) -> nn.Module:
    """Fold block `block`'s branches back into its layer and BatchNorm, in place; returns `model`."""
    holder, layer_key, bn_key = model.rep_target(block)
    rep = getattr(holder, layer_key)
    layer, bn = rep.folded()
    device = next(rep.parameters()).device
    setattr(holder, layer_key, layer.to(device).train(rep.training))
    if bn_key is not None:
        setattr(holder, bn_key, bn.to(device).train(rep.training))
    return model
