"""The group-wise correlation (GWC) volume between the two 1/4-resolution feature maps.

Contract (../shared/docs/ffs-model-contracts.md, in our words): features L, R of C channels are split into
G groups of C/G channels; for every disparity d in [0, D):
    V[b, g, d, h, w] = sum_{c in g} L[b, c, h, w] * R[b, c, h, w - d]        for w >= d, else 0
and, when `normalize` is true, that sum is divided by ||L_g(h, w)|| * ||R_g(h, w - d)|| + 1e-5
(per-group cosine). Sums accumulate in float32; the result is laid out [B, G, D, H, W].

`gwc_volume_torch` is the implementation our own model trains with and the torch/CUDA backends run;
`gwc_volume_numpy` is the CPU implementation for ONNX Runtime. Both follow the formula literally.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-5


def gwc_volume_torch(left, right, num_groups: int, max_disp: int, normalize: bool = True):
    """left, right: torch tensors [B, C, H, W] -> volume [B, G, D, H, W] (float32)."""
    import torch
    b, c, h, w = left.shape
    if c % num_groups:
        raise ValueError(f'{c} feature channels cannot be split into {num_groups} groups')
    left = left.float().reshape(b, num_groups, c // num_groups, h, w)
    right = right.float().reshape(b, num_groups, c // num_groups, h, w)
    if normalize:
        ln = left.norm(dim=2)   # [B, G, H, W]
        rn = right.norm(dim=2)
    vol = left.new_zeros(b, num_groups, max_disp, h, w)
    for d in range(min(max_disp, w)):
        dot = (left[..., d:] * right[..., :w - d]).sum(dim=2)
        if normalize:
            dot = dot / (ln[..., d:] * rn[..., :w - d] + EPS)
        vol[:, :, d, :, d:] = dot
    return vol


def gwc_volume_numpy(left: np.ndarray, right: np.ndarray, num_groups: int, max_disp: int,
                     normalize: bool = True, out: np.ndarray | None = None) -> np.ndarray:
    """left, right: float arrays [B, C, H, W] -> float32 volume [B, G, D, H, W]."""
    b, c, h, w = left.shape
    if c % num_groups:
        raise ValueError(f'{c} feature channels cannot be split into {num_groups} groups')
    lg = np.asarray(left, dtype=np.float32).reshape(b, num_groups, c // num_groups, h, w)
    rg = np.asarray(right, dtype=np.float32).reshape(b, num_groups, c // num_groups, h, w)
    if out is None:
        out = np.zeros((b, num_groups, max_disp, h, w), np.float32)
    else:
        out[...] = 0
    if normalize:
        ln = np.sqrt(np.einsum('bgchw,bgchw->bghw', lg, lg))
        rn = np.sqrt(np.einsum('bgchw,bgchw->bghw', rg, rg))
    for d in range(min(max_disp, w)):
        dot = np.einsum('bgchw,bgchw->bghw', lg[..., d:], rg[..., :w - d])
        if normalize:
            dot /= ln[..., d:] * rn[..., :w - d] + EPS
        out[:, :, d, :, d:] = dot
    return out
