"""Iterative refinement at 1/4 resolution with a ConvGRU.

Every iteration, the ConvGRU looks up (a) the filtered cost volume around the current disparity (9
taps, 2 levels along disparity) and (b) an all-pairs correlation of the 1/4 features,
L(h,w)·R(h,w') / sqrt(C), around x - d (9 taps, 2 levels), encodes them with the disparity and
updates it by a predicted delta. Disparities are in 1/4-pixel units.
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from .lookup import lookup_last, pool_last

RADIUS = 4  # 9 taps


class GeometryLookup(nn.Module):
    """Holds the two pyramids for one image pair and samples them at a disparity map."""

    def __init__(self, levels=2):
        super().__init__()
        self.levels = levels

    def build(self, geo, f_left, f_right):
        # geo [B,C,D,H,W] -> [B,C,H,W,D]; correlation [B,H,W,W']
        b, c, d, h, w = geo.shape
        gp = [geo.permute(0, 1, 3, 4, 2)]
        cf = f_left.shape[1]
        corr = torch.matmul(f_left.permute(0, 2, 3, 1), f_right.permute(0, 2, 1, 3)) / math.sqrt(
            cf
        )
        cp = [corr]
        for _ in range(self.levels - 1):
            gp.append(pool_last(gp[-1]))
            cp.append(pool_last(cp[-1]))
        return gp, cp

    def __call__(self, pyramids, disp):
        gp, cp = pyramids
        taps = torch.arange(-RADIUS, RADIUS + 1, dtype=disp.dtype, device=disp.device)
        out = []
        b, _, h, w = disp.shape
        xs = torch.arange(w, dtype=disp.dtype, device=disp.device).view(1, 1, w)
        d = disp[:, 0]  # [B,H,W]
        for lvl in range(self.levels):
            s = 2.0**lvl
            g = gp[lvl]  # [B,C,H,W,D']
            pos = (d / s).unsqueeze(-1) + taps  # [B,H,W,K]
            c = g.shape[1]
            pos_g = pos.unsqueeze(1).expand(-1, c, -1, -1, -1)
            vals = lookup_last(g, pos_g)  # [B,C,H,W,K]
            out.append(vals.permute(0, 1, 4, 2, 3).reshape(b, -1, h, w))
            corr = cp[lvl]  # [B,H,W,W']
            posc = ((xs - d) / s).unsqueeze(-1) + taps  # [B,H,W,K]
            cv = lookup_last(corr, posc)
            out.append(cv.permute(0, 3, 1, 2))
        return torch.cat(out, 1)


class ConvGRU(nn.Module):
    def __init__(self, hidden, inp):
        super().__init__()
        self.convz = nn.Conv2d(hidden + inp, hidden, 3, padding=1)
        self.convr = nn.Conv2d(hidden + inp, hidden, 3, padding=1)
        self.convq = nn.Conv2d(hidden + inp, hidden, 3, padding=1)

    def forward(self, h, x):
        hx = torch.cat([h, x], 1)
        z = torch.sigmoid(self.convz(hx))
        r = torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat([r * h, x], 1)))
        return (1 - z) * h + z * q


class UpdateBlock(nn.Module):
    """lookup features + disparity -> motion features -> GRU -> delta disparity."""

    def __init__(self, lookup_ch, hidden, ctx_ch, motion_ch=48):
        super().__init__()
        self.enc_lookup = nn.Sequential(
            nn.Conv2d(lookup_ch, 64, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 48, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.enc_disp = nn.Sequential(
            nn.Conv2d(1, 16, 7, padding=3),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.enc_out = nn.Sequential(
            nn.Conv2d(64, motion_ch - 1, 3, padding=1), nn.ReLU(inplace=True)
        )
        self.gru = ConvGRU(hidden, motion_ch + ctx_ch)
        self.head = nn.Sequential(
            nn.Conv2d(hidden, 64, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 1, 3, padding=1),
        )

    def forward(self, h, ctx, looked, disp):
        m = self.enc_out(torch.cat([self.enc_lookup(looked), self.enc_disp(disp)], 1))
        h = self.gru(h, torch.cat([m, disp, ctx], 1))
        return h, self.head(h)


class ContextNet(nn.Module):
    """Left 1/4 features -> initial hidden state (tanh) and a per-iteration context input.

    The context input goes through relu.
    """

    def __init__(self, cin, hidden, ctx, mid=64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, hidden + ctx, 3, padding=1),
        )
        self.hidden = hidden

    def forward(self, f):
        x = self.body(f)
        return torch.tanh(x[:,: self.hidden]), F.relu(x[:, self.hidden:])
