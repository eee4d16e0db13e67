"""The standard CIFAR augmentation, batched on the training device: random crop with zero padding
and horizontal flip (He et al. 2016; RepDistiller's and mdistiller's `RandomCrop(32, padding=4)`
then `RandomHorizontalFlip()`), on the stored uint8 images before they are normalised.

    aug = Augment(crop=4, flip=True)
    offsets, flips = aug.draws(len(train), seed=0, epoch=3)   # every sample's draw for epoch 3
    xb = aug.apply(train.x[idx], offsets[idx], flips[idx])    # (B, C, H, W), same dtype

Each sample's crop offset and flip are drawn for the whole training split at the start of an
epoch from a generator seeded with (seed, epoch) alone, and looked up by sample index: what a
sample looks like in an epoch is a pure function of (seed, epoch, sample), whatever the batch
order, so a resumed job sees exactly the batches it would have seen (kdflow.engine). The draws
use their own stream, apart from the epoch's batch permutation. Validation and test are never
augmented: only `kdflow.engine.fit`'s training batches go through `apply`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

STREAM = 1 << 40  # added to the generator's seed: the augmentation draws are not the permutation's


@dataclass(frozen=True)
class Augment:
    crop: int = 0  # padding in pixels on each side; the crop is back to the input size (0: no crop)
    flip: bool = False  # horizontal flip with probability 1/2

    def __bool__(self) -> bool:
        return self.crop > 0 or self.flip

    def draws(self, n: int, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(offsets (n, 2): top and left of each sample's crop in the padded image, in
        [0, 2 * crop]; flips (n,) bool), for epoch `epoch` of a run seeded `seed`, on the CPU."""
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch + STREAM)
        offsets = torch.randint(0, 2 * self.crop + 1, (n, 2), generator=g)
        flips = torch.rand(n, generator=g) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        return offsets, flips

    def apply(self, x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """Crop each image of `x` (B, C, H, W), zero-padded by `crop`, at its offset, then flip it
        if drawn: one gather for the whole batch, on x's device."""
        b, c, h, w = x.shape
        if self.crop:
            x = F.pad(x, (self.crop,) * 4)  # zeros: black borders, as torchvision's default fill
        offsets, flips = offsets.to(x.device), flips.to(x.device)
        rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (B, H)
        cols = torch.arange(w, device=x.device).expand(b, w)
        cols = offsets[:, 1:] + torch.where(flips[:, None], w - 1 - cols, cols)  # (B, W)
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chan = torch.arange(c, device=x.device)[None, :, None, None]
        return x[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]
