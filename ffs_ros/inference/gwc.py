"""The group-wise correlation (GWC) volume between the two 1/4-resolution feature maps.

Contract (../shared/docs/ffs-model-contracts.md, in our words): features L, R of C channels are split into
G groups of C/G channels; for every disparity d in [0, D):
    V[b, g, d, h, w] = sum_{c in g} L[b, c, h, w] * R[b, c, h, w - d]        for w >= d, else 0
and, when `normalize` is true, that sum is divided by ||L_g(h, w)|| * ||R_g(h, w - d)|| + 1e-5
(per-group cosine). Sums accumulate in float32; the result is laid out [B, G, D, H, W].

`gwc_volume_torch` is the implementation our own model trains with and the torch/CUDA backends run;
`gwc_volume_numpy` is the CPU implementation for ONNX Runtime: the same formula with reused buffers, in-place
division and the groups split over worker threads (see its docstring).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

EPS = 1e-5
_POOL: ThreadPoolExecutor | None = None


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


def _pool(workers: int):
    """A process-wide thread pool for the CPU volume (numpy releases the GIL inside its loops)."""
    global _POOL
    if _POOL is None or _POOL._max_workers != workers:
        _POOL = ThreadPoolExecutor(workers, thread_name_prefix='ffs-gwc')
    return _POOL


def gwc_volume_numpy(left: np.ndarray, right: np.ndarray, num_groups: int, max_disp: int,
                     normalize: bool = True, out: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
    """left, right: float arrays [B, C, H, W] -> volume [B, G, D, H, W] (float32, or out's dtype).

    Per disparity, the group dot products are accumulated in float32 into one reused buffer (no per-d
    allocation), divided in place by the norm product, and written once into `out` -- which may be float16 when
    the post graph wants fp16 (the cast happens during that write). Groups are split across `threads` worker
    threads (default: min(cores, G)).
    """
    b, c, h, w = left.shape
    if c % num_groups:
        raise ValueError(f'{c} feature channels cannot be split into {num_groups} groups')
    if right.shape != left.shape:
        raise ValueError(f'left {left.shape} and right {right.shape} features differ in shape')
    g = num_groups
    lg = np.asarray(left, dtype=np.float32).reshape(b, g, c // g, h, w)
    rg = np.asarray(right, dtype=np.float32).reshape(b, g, c // g, h, w)
    if out is None:
        out = np.empty((b, g, max_disp, h, w), np.float32)
    elif out.shape != (b, g, max_disp, h, w):
        raise ValueError(f'out has shape {out.shape}, expected {(b, g, max_disp, h, w)}')
    if normalize:
        ln = np.sqrt(np.einsum('bgchw,bgchw->bghw', lg, lg))
        rn = np.sqrt(np.einsum('bgchw,bgchw->bghw', rg, rg))

    def work(gs: slice) -> None:
        lsub, rsub, osub = lg[:, gs], rg[:, gs], out[:, gs]
        buf = np.empty(lsub.shape[:2] + (h, w), np.float32)
        den = np.empty_like(buf) if normalize else None
        for d in range(max_disp):
            if d >= w:
                osub[:, :, d] = 0
                continue
            dot = buf[..., :w - d]
            np.einsum('bgchw,bgchw->bghw', lsub[..., d:], rsub[..., :w - d], out=dot)
            if normalize:
                dd = den[..., :w - d]
                np.multiply(ln[:, gs, :, d:], rn[:, gs, :, :w - d], out=dd)
                dd += EPS
                dot /= dd
            osub[:, :, d, :, :d] = 0
            osub[:, :, d, :, d:] = dot

    workers = max(1, min(threads or os.cpu_count() or 1, g))
    if workers == 1:
        work(slice(None))
    else:
        edges = np.linspace(0, g, workers + 1).astype(int)
        list(_pool(workers).map(work, [slice(a, z) for a, z in zip(edges[:-1], edges[1:]) if z > a]))
    return out
