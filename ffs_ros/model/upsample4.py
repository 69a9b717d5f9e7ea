"""Cheap convex x4 upsampling with the weights predicted at 1/4 resolution (upsampler 'convex4').

The alternative to upsample.py's head at 1/2 resolution, which is the most expensive part of the
guided model at 640x480. Every full-resolution pixel is still a convex combination (softmax over
9 weights) of the 3x3 coarse neighbourhood of its 1/4 cell, but all 16 sub-pixels' weights
(9 x 16 channels) come from one small head at 1/4 resolution that sees the hidden state and the
left image stem folded into 1/4 resolution (a 2x2 stride-2 conv of `stem_2x`: a learned
space-to-depth, so the 1/2-resolution detail is summarised, not blurred). Same interface as
ConvexUpsampler: `weights`, `apply` and `forward(disp4, hidden, stem_2x, extra=None)`.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .upsample import ConvexUpsampling, neighbours3x3


def softmax9(logits):
    """Softmax over axis 1 (9 neighbours) of [B,9,...], written with slices.

    The same values as torch.softmax(logits, 1), but ONNX Runtime runs a Softmax over a non-last
    axis through transposes: 100 ms for [1,9,16,120,160] on the 2-core dev CPU, this 17 ms.
    """
    top = logits[:, 0]
    for k in range(1, logits.shape[1]):
        top = torch.maximum(top, logits[:, k])
    e = torch.exp(logits - top.unsqueeze(1))
    total = e[:, 0]
    for k in range(1, logits.shape[1]):
        total = total + e[:, k]
    return e / total.unsqueeze(1)


class Convex4Upsampler(ConvexUpsampling):
    def __init__(self, hidden, stem_ch, mid=48):
        super().__init__()
        self.stem_in = nn.Conv2d(stem_ch, mid, 2, stride=2)  # learned space-to-depth of stem_2x
        self.hidden_in = nn.Conv2d(hidden, mid, 1)
        self.head = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, 9 * 16, 1),
        )

    def weights(self, disp4, hidden, stem_2x):
        """Return the convex weights [B,9,16,h,w] of every full-resolution pixel's 9 cells."""
        b, _, h, w = disp4.shape
        x = self.hidden_in(hidden) + self.stem_in(stem_2x)
        return softmax9(0.25 * self.head(x).view(b, 9, 16, h, w))

    @staticmethod
    def apply(mask, x4):
        """Upsample [B,1,h,w] x4 with convex weights `mask` -> [B,1,4h,4w] (values unchanged)."""
        up = (mask * neighbours3x3(x4).unsqueeze(2)).sum(1)  # [B,16,h,w]
        return F.pixel_shuffle(up, 4)
