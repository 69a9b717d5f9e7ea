"""Convex x4 upsampling of a 1/4-resolution disparity with weights predicted at 1/2 resolution.

Every full-resolution pixel is a convex combination (softmax over 9 weights) of the 3x3 coarse neighbourhood
of its 1/4 cell. The weights come from a head at 1/2 resolution that sees the upsampled GRU state and the
left image stem (`stem_2x`): 4 x 9 channels per 1/2 pixel, one set per 2x2 full-resolution sub-pixel.
The coarse values are multiplied by 4 (1/4-pixel units -> pixels). Written with pad/slice/pixel_shuffle only
(no unfold), so it exports to ONNX with symbolic sizes."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import up2_nearest


def neighbours3x3(x):
    """[B,1,H,W] -> [B,9,H,W] (replicate padding)."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1), mode='replicate')
    return torch.cat([p[..., i:i + h, j:j + w] for i in range(3) for j in range(3)], 1)


class ConvexUpsampler(nn.Module):
    def __init__(self, hidden, stem_ch):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(hidden + stem_ch, 64, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(64, 4 * 9, 1))

    def forward(self, disp4, hidden, stem_2x):
        b, _, h, w = disp4.shape
        hu = up2_nearest(hidden)
        mask = 0.25 * self.head(torch.cat([hu, stem_2x], 1))           # [B,36,2h,2w]
        mask = torch.softmax(mask.view(b, 9, 4, 2 * h, 2 * w), dim=1)
        nb = up2_nearest(neighbours3x3(disp4 * 4.0))   # [B,9,2h,2w]
        up = (mask * nb.unsqueeze(2)).sum(1)                            # [B,4,2h,2w]
        return F.pixel_shuffle(up, 2)                                   # [B,1,4h,4w]
