"""1-D linear-interpolation lookups written with gather (no grid_sample).

So the refinement exports to ONNX (GatherElements) and runs in ONNX Runtime with symbolic image
sizes.

`lookup_last(values, pos)`: values [..., N], pos [..., K] (float positions along the last axis) ->
[..., K], linearly interpolated, 0 where pos is outside [0, N - 1].
"""

from __future__ import annotations

import torch


def lookup_last(values, pos):
    n = values.shape[-1]
    p0 = torch.floor(pos)
    frac = pos - p0
    i0 = p0.clamp(0, n - 1)
    i1 = (p0 + 1).clamp(0, n - 1)
    inside0 = (p0 >= 0) & (p0 <= n - 1)
    inside1 = (p0 + 1 >= 0) & (p0 + 1 <= n - 1)
    v0 = torch.gather(values, -1, i0.long())
    v1 = torch.gather(values, -1, i1.long())
    return v0 * (1 - frac) * inside0.to(values.dtype) + v1 * frac * inside1.to(values.dtype)


def pool_last(x):
    """Average-pool pairs along the last axis (N -> N // 2); a pyramid level for lookups."""
    n = x.shape[-1] // 2 * 2
    x = x[...,:n]
    return 0.5 * (x[..., 0::2] + x[..., 1::2])
