"""2D cost aggregation: the GWC volume with disparity as channels, through a small 2D U-Net.

The cheap alternative to the 3D hourglass of filtering.py (model config aggregation: '2d'). The
group-wise volume [B,G,D,h,w] is reshaped to G*D channels at 1/4 resolution and fused with the
left 1/4 features by 1x1 convs; a U-Net over 1/4, 1/8 and 1/16 (each coarser level also sees the
left features of its resolution; skips join by addition) gives D classifier logits per 1/4
pixel. Everything is 2D convolution, which ONNX Runtime runs far faster on a CPU than 3D
convolution over D.

Outputs like CostFilter: a geometry volume for the refinement lookups ([B,1,D,h,w]: the logits
themselves) and the logits [B,D,h,w] (with corr_skip, plus a 1x1 conv of the volume itself);
plus the U-Net's last 1/4 feature map, which can stand in for the refinement's hidden state
(model config context: 'agg').
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import conv2d, up2_nearest

CORR_SKIP_SCALE = 10.0  # cosine in -1..1 -> logits up to +-10: a peaked initial distribution


class Aggregation2d(nn.Module):
    """Map the [B,G,D,h,w] volume and left features to (geo, logits [B,D,h,w], feat [B,c,h,w])."""

    def __init__(self, groups, num_disp, ch, feat_chs, corr_skip=False):
        super().__init__()
        c4, c8, c16 = ch
        f4, f8, f16, _ = feat_chs
        # joins are 1x1 convs (sums of projections), the 3x3 convs run on c channels only
        self.vol_in = conv2d(groups * num_disp, c4, 1, act=False)
        self.feat_in = conv2d(f4, c4, 1, act=False)
        self.body4 = conv2d(c4, c4, 3)
        self.down8 = conv2d(c4, c8, 3, 2, act=False)
        self.side8 = conv2d(f8, c8, 1, act=False)
        self.body8 = conv2d(c8, c8, 3)
        self.down16 = conv2d(c8, c16, 3, 2, act=False)
        self.side16 = conv2d(f16, c16, 1, act=False)
        self.body16 = nn.Sequential(conv2d(c16, c16, 3), conv2d(c16, c16, 3))
        self.up8 = conv2d(c16, c8, 1, act=False)
        self.fuse8 = conv2d(c8, c8, 3)
        self.up4 = conv2d(c8, c4, 1, act=False)
        self.fuse4 = conv2d(c4, c4, 3)
        self.classifier = nn.Conv2d(c4, num_disp, 1)
        self.relu = nn.ReLU(inplace=True)
        self.corr_skip = None
        if corr_skip:
            # volume -> logits directly, initialised to CORR_SKIP_SCALE x the mean cosine over the
            # groups at the same disparity: the U-Net starts from winner-take-all matching and
            # learns corrections, instead of having to learn which channel is which disparity
            self.corr_skip = nn.Conv2d(groups * num_disp, num_disp, 1)
            with torch.no_grad():
                self.corr_skip.weight.zero_()
                self.corr_skip.bias.zero_()
                for g in range(groups):
                    for d in range(num_disp):
                        self.corr_skip.weight[d, g * num_disp + d] = CORR_SKIP_SCALE / groups

    def forward(self, vol, f4, f8, f16, f32):  # noqa: ARG002 (f32: same signature as CostFilter)
        b, g, d, h, w = vol.shape
        vol = vol.reshape(b, g * d, h, w)  # channel g * D + d
        x4 = self.body4(self.relu(self.vol_in(vol) + self.feat_in(f4)))
        x8 = self.body8(self.relu(self.down8(x4) + self.side8(f8)))
        x16 = self.body16(self.relu(self.down16(x8) + self.side16(f16)))
        y8 = self.fuse8(self.relu(up2_nearest(self.up8(x16)) + x8))
        y4 = self.fuse4(self.relu(up2_nearest(self.up4(y8)) + x4))
        logits = self.classifier(y4)
        if self.corr_skip is not None:
            logits = logits + self.corr_skip(vol)
        return logits.unsqueeze(1), logits, y4
