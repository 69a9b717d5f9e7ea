"""Convex x4 upsampling of a 1/4-resolution disparity with weights predicted at 1/2 resolution.

Every full-resolution pixel is a convex combination (softmax over 9 weights) of the 3x3 coarse
neighbourhood of its 1/4 cell. The weights come from a head at 1/2 resolution that sees the
upsampled GRU state and the left image stem (`stem_2x`): 4 x 9 channels per 1/2 pixel, one set per
2x2 full-resolution sub-pixel. The coarse values are multiplied by 4 (1/4-pixel units -> pixels).

With `guide_ch` > 0 the weights also get a learned joint-bilateral term ("which neighbouring cell
does this pixel look like"): a small dilated CNN on the stem and the neighbours' disparity steps
embeds every full-resolution pixel in `guide_ch` dimensions; each 1/4 cell's descriptor is the mean
embedding of its 4x4 pixels; the logit of neighbour k adds guide_scale * <pixel embedding, cell k
descriptor> / sqrt(guide_ch). The plain head's 3x3 window at 1/2 resolution cannot see the
neighbouring cells it chooses between (they are 4 px away); this term compares them explicitly,
which is what puts depth edges on image edges. A fresh guide has small random embeddings (its
effect is ~0.01 px), so a model trained without the term computes nearly the same output until it
is fine-tuned; guide_scale 0 switches the term off exactly. (guide_scale starts at 1, not 0: behind
a zero gate the term's effect grew about 3x slower in a first fine-tune.)

Written with pad/slice/pixel_shuffle only (no unfold), so it exports to ONNX with symbolic
sizes.
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from .layers import up2_nearest


def neighbours3x3(x):
    """Gather the 3x3 neighbours: [B,C,H,W] -> [B,9*C,H,W], neighbour-major.

    Channel k*C + c is neighbour k of channel c; replicate padding; k = 3*(dy+1) + (dx+1).
    """
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1), mode='replicate')
    return torch.cat([p[..., i: i + h, j: j + w] for i in range(3) for j in range(3)], 1)


class ConvexUpsampling(nn.Module):
    """What every convex x4 upsampler does with its `weights` and `apply`."""

    def forward(self, disp4, hidden, stem_2x, extra=None):
        """Return the x4 disparity in pixels (and `extra` [B,1,h,w] upsampled the same way)."""
        mask = self.weights(disp4, hidden, stem_2x)
        full = self.apply(mask, disp4 * 4.0)
        if extra is None:
            return full
        return full, self.apply(mask, extra)


class ConvexUpsampler(ConvexUpsampling):
    def __init__(self, hidden, stem_ch, guide_ch=0, guide_width=32):
        super().__init__()
        self.head = nn.Sequential(
            nn.Conv2d(hidden + stem_ch, 64, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 4 * 9, 1),
        )
        self.guide_ch = int(guide_ch)
        if self.guide_ch:
            w = int(guide_width)
            # receptive field 15 px at 1/2 resolution: covers the 3x3 cells (12 px full
            # resolution) compared
            self.guide = nn.Sequential(
                nn.Conv2d(stem_ch + 9, w, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, padding=2, dilation=2),
                nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, padding=4, dilation=4),
                nn.ReLU(inplace=True),
                nn.Conv2d(w, 4 * self.guide_ch, 1),
            )
            self.guide_scale = nn.Parameter(torch.ones(()))

    def affinity(self, steps4, stem_2x):
        """Return the similarity of every full-resolution pixel to its 9 neighbouring cells.

        steps4 [B,9,h,w] (neighbour minus centre disparity, px), stem_2x [B,S,2h,2w] ->
        [B,9,4,2h,2w] (a full-resolution pixel: one of 4 sub-pixels per 1/2 pixel).
        """
        c = self.guide_ch
        steps = up2_nearest(steps4.clamp(-32.0, 32.0) * 0.125)
        e = self.guide(torch.cat([stem_2x, steps], 1))  # [B,4c,2h,2w]
        b, _, h2, w2 = e.shape
        e = e.view(b, 4, c, h2, w2)
        cell = F.avg_pool2d(e.mean(1), 2)  # [B,c,h,w]: mean over the cell's 4x4 px
        nb = up2_nearest(neighbours3x3(cell)).view(b, 9, c, h2, w2)
        # sum over channels one at a time: a [B,9,4,c,2h,2w] product would be the largest tensor
        # of the model
        sim = nb[:,:, 0].unsqueeze(2) * e[:,:, 0].unsqueeze(1)
        for i in range(1, c):
            sim = sim + nb[:,:, i].unsqueeze(2) * e[:,:, i].unsqueeze(1)
        return sim * (1.0 / math.sqrt(c))

    def weights(self, disp4, hidden, stem_2x):
        """Return the convex weights [B,9,4,2h,2w] of every full-resolution pixel's 9 cells."""
        b, _, h, w = disp4.shape
        d = disp4 * 4.0
        logits = 0.25 * self.head(torch.cat([up2_nearest(hidden), stem_2x], 1)).view(
            b, 9, 4, 2 * h, 2 * w
        )
        if self.guide_ch:
            logits = logits + self.guide_scale * self.affinity(neighbours3x3(d) - d, stem_2x)
        return torch.softmax(logits, dim=1)

    @staticmethod
    def apply(mask, x4):
        """Upsample [B,1,h,w] x4 with convex weights `mask` -> [B,1,4h,4w] (values unchanged)."""
        up = (mask * up2_nearest(neighbours3x3(x4)).unsqueeze(2)).sum(1)  # [B,4,2h,2w]
        return F.pixel_shuffle(up, 2)
