"""A model's trainable parameters as views into one contiguous buffer, so the optimizer steps once.

    flat = FlatParameters(model)              # after model.to(device); params are now views
    opt = kdflow.optim.AdamW(flat.param, lr, wd)  # torch.optim.AdamW([flat.param], lr, ...) as well
    opt.zero_grad(); loss.backward(); flat.collect_grads(); opt.step()

Why: a small model's optimizer step is per-tensor overhead, not arithmetic. AdamW over the default
student's 10 tensors cost ~0.5 ms of a ~2 ms CPU step; over one buffer it costs ~12 small ops.
Updates are elementwise, so the weights are bit-identical to a per-tensor optimizer's
(tests/test_flat.py). The gradients are moved into the flat gradient with one `torch.cat` after
backward rather than accumulated into views, so anything that sets a `.grad` to None (as
`zero_grad` does by default) cannot silently disconnect a parameter from the optimizer.

A parameter in channels_last layout (`model.to(memory_format=torch.channels_last)`, a `train` option
for image models) keeps it: its segment of the buffer holds it in (N, H, W, C) order and the view
is permuted back, so its strides, and the convolution kernels picked for it, stay channels_last.

Keep the views: `model.to()` after flattening replaces them (load_state_dict copies into them and is
fine). Stacked students keep per-tensor optimizers: their compaction slices per-member state.
"""

from __future__ import annotations

import torch
from torch import nn


class FlatParameters:
    def __init__(self, model: nn.Module):
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("FlatParameters: the model has no trainable parameter")
        kinds = {(p.dtype, p.device) for p in self.params}
        if len(kinds) > 1:
            raise ValueError(f"FlatParameters needs one dtype and device, got {sorted(map(str, kinds))}")
        self.orders = [_storage_order(p) for p in self.params]
        with torch.no_grad():
            buffer = torch.cat([p.permute(o).reshape(-1) for p, o in zip(self.params, self.orders)])
        self.param = nn.Parameter(buffer)
        offset = 0
        for p, order in zip(self.params, self.orders):
            stored = buffer[offset : offset + p.numel()].view(tuple(p.shape[i] for i in order))
            p.data = stored.permute(_inverse(order))  # the original shape, in the original layout
            offset += p.numel()

    def collect_grads(self) -> None:
        """Move the parameters' gradients into the flat gradient (zeros where a parameter got none)
        and set theirs to None, so the next backward starts from nothing, as after zero_grad."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        if self.param.grad is None:  # the optimizer's zero_grad sets it to None by default
            self.param.grad = torch.empty_like(self.param)
        torch.cat([g.permute(o).reshape(-1) for g, o in zip(grads, self.orders)], out=self.param.grad)
        for p in self.params:
            p.grad = None


def _storage_order(p: torch.Tensor) -> tuple[int, ...]:
    """The dimension order in which `p`'s elements lie in memory: (0, 2, 3, 1) for a channels_last
    4-D tensor, its own order otherwise."""
    if p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last):
        return (0, 2, 3, 1)
    return tuple(range(p.dim()))


def _inverse(order: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(range(len(order)), key=order.__getitem__))
