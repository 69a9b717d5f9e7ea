"""One cheap correction of the 1/4 disparity from the cost around it (`local_refine`, fast tier).

The fast tier has no ConvGRU: one iteration with its lookups costs more than the whole fast network
on a CPU (docs/fast_tier.md). Its disparity is then a soft-argmin over bins 4 px wide, which is
imprecise below a bin and biased where the distribution has two modes. This block looks at the
filtered probabilities sampled at the estimate and +-1, +-2 bins (linear interpolation between
bins, written as a triangle window so it is plain arithmetic in every backend) beside the 1/4
features, and predicts one additive correction with two small convolutions at 1/4 resolution.
The last convolution starts at zero: a network trained without the block computes exactly as
before when it is added (`ffs-ros train --init`).
"""

from __future__ import annotations

import torch
from torch import nn


def sample_bins(prob, disp4, offsets):
    """Return prob [B,D,h,w] read at disp4 + k bins for k in `offsets` -> [B,len(offsets),h,w].

    Linear interpolation between neighbouring bins (weight 1 - |d - x|, clamped at 0); reads
    outside 0..D-1 are 0.
    """
    dvals = torch.arange(prob.shape[1], dtype=prob.dtype, device=prob.device).view(1, -1, 1, 1)
    return torch.cat(
        [
            (prob * (1.0 - (dvals - disp4 - float(k)).abs()).clamp(min=0.0)).sum(1, keepdim=True)
            for k in offsets
        ],
        1,
    )


class LocalRefine(nn.Module):
    def __init__(self, hidden: int, mid: int, radius: int = 2):
        super().__init__()
        self.offsets = tuple(range(-radius, radius + 1))
        self.inp = nn.Conv2d(hidden + len(self.offsets), mid, 1)
        self.body = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.out = nn.Conv2d(mid, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, hidden, prob, disp4):
        """Return the correction [B,1,h,w] (1/4-pixel units) to add to `disp4`."""
        x = torch.cat([hidden, sample_bins(prob, disp4, self.offsets)], 1)
        return self.out(self.body(self.inp(x)))
