"""3D cost filtering: a stem over the combined volume and an image-gated hourglass.

The stem runs over the combined (GWC + concat) volume; every level of the hourglass is gated by the
left image features of the matching resolution (sigmoid(1x1 conv) broadcast along disparity). Cheap
axial 3D convolutions ((1,3,3) spatial then (k,1,1) along disparity) do most of the work. Outputs
the filtered feature volume and the classifier logits [B,D,H,W].
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import Axial3d, conv3d, up2_nearest


class FeatureGate(nn.Module):
    """volume [B,C,D,H,W] * sigmoid(W * features [B,F,H,W]) broadcast over D."""

    def __init__(self, feat_ch, vol_ch):
        super().__init__()
        self.att = nn.Conv2d(feat_ch, vol_ch, 1)

    def forward(self, vol, feat):
        return vol * torch.sigmoid(self.att(feat)).unsqueeze(2)


class Up3d(nn.Module):
    """x2 nearest upsampling in (D, H, W) + 1x1x1 conv, added to the skip, then an axial block."""

    def __init__(self, cin, cout):
        super().__init__()
        self.proj = conv3d(cin, cout, 1)
        self.block = Axial3d(cout)

    def forward(self, x, skip):
        up = up2_nearest(self.proj(x))
        return self.block(up + skip)


class CostFilter(nn.Module):
    """stem + 3-level gated hourglass + classifier."""

    def __init__(self, vin, ch, feat_chs, geo_ch):
        super().__init__()
        c0, c1, c2, c3 = ch
        f4, f8, f16, f32 = feat_chs
        self.stem = nn.Sequential(conv3d(vin, c0, 1), Axial3d(c0))
        self.g0 = FeatureGate(f4, c0)
        self.down1 = nn.Sequential(conv3d(c0, c1, 3, 2), Axial3d(c1))
        self.g1 = FeatureGate(f8, c1)
        self.down2 = nn.Sequential(conv3d(c1, c2, 3, 2), Axial3d(c2))
        self.g2 = FeatureGate(f16, c2)
        self.down3 = nn.Sequential(conv3d(c2, c3, 3, 2), Axial3d(c3, kd=3))
        self.g3 = FeatureGate(f32, c3)
        self.up2 = Up3d(c3, c2)
        self.up1 = Up3d(c2, c1)
        self.up0 = Up3d(c1, c0)
        self.g_out = FeatureGate(f4, c0)
        self.classifier = nn.Conv3d(c0, 1, 3, 1, 1)
        self.geo = nn.Conv3d(c0, geo_ch, 1)

    def forward(self, vol, f4, f8, f16, f32):
        x0 = self.g0(self.stem(vol), f4)
        x1 = self.g1(self.down1(x0), f8)
        x2 = self.g2(self.down2(x1), f16)
        x3 = self.g3(self.down3(x2), f32)
        y2 = self.up2(x3, x2)
        y1 = self.up1(y2, x1)
        y0 = self.g_out(self.up0(y1, x0), f4)
        return self.geo(y0), self.classifier(y0).squeeze(1)
