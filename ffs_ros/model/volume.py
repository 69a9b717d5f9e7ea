"""Cost volumes at 1/4 resolution.

* The group-wise correlation (GWC) volume is the contract's:
`ffs_ros.contract.gwc.gwc_volume_torch`
  (cosine per group). In the two-stage export it is built *between* the graphs by the caller.
* The concat volume is built inside the post stage: both 1/4 features are projected (1x1 conv) to
a few
  channels and the right projection is shifted by every disparity d (zeros where w - d < 0).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..contract.gwc import gwc_volume_torch


def build_gwc(
    features_left_04, features_right_04, cv_group: int, num_disp: int, normalize: bool = True
):
    """[B,C,H,W] x2 -> [B,G,D,H,W]; D = num_disp = max_disp // 4."""
    return gwc_volume_torch(features_left_04, features_right_04, cv_group, num_disp, normalize)


def shifted_stack(right, num_disp: int):
    """Right [B,C,H,W] -> [B,C,D,H,W] with out[..., d, :, w] = right[..., w - d] (0 where w < d).

    Written with a left pad and static slices so it exports to ONNX with symbolic H and W.
    """
    w = right.shape[-1]
    padded = F.pad(right, (num_disp - 1, 0))
    return torch.stack(
        [padded[..., num_disp - 1 - d: num_disp - 1 - d + w] for d in range(num_disp)], 2
    )


class ConcatVolume(nn.Module):
    """Concat volume: [B,C,H,W] x2 -> [B,2c,D,H,W].

    Projected left (broadcast over D) beside the shifted projected right.
    """

    def __init__(self, cin, ch, num_disp):
        super().__init__()
        self.proj = nn.Conv2d(cin, ch, 1)
        self.num_disp = num_disp

    def forward(self, left, right):
        pl, pr = self.proj(left), self.proj(right)
        d = self.num_disp
        vr = shifted_stack(pr, d)
        vl = pl.unsqueeze(2).expand(-1, -1, d, -1, -1)
        # zero the left half where the right pixel does not exist, like the GWC volume
        valid = shifted_stack(torch.ones_like(pr[:,:1]), d)
        return torch.cat([vl * valid, vr], 1)
