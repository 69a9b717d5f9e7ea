"""The group-wise correlation (GWC) volume between the two 1/4-resolution feature maps.

Contract (../shared/docs/ffs-model-contracts.md, in our words): features L, R of C channels are split into
G groups of C/G channels; for every disparity d in [0, D):
    V[b, g, d, h, w] = sum_{c in g} L[b, c, h, w] * R[b, c, h, w - d]        for w >= d, else 0
and, when `normalize` is true, that sum is divided by ||L_g(h, w)|| * ||R_g(h, w - d)|| + 1e-5
(per-group cosine). Sums accumulate in float32; the result is laid out [B, G, D, H, W].

`gwc_volume_torch` is the implementation our own model trains with and the torch/CUDA backends run;
`gwc_volume_numpy` is the CPU implementation for ONNX Runtime: the same formula evaluated as banded small matrix
products (BLAS) over blocks of columns, split over worker threads (see its docstring).
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
                     normalize: bool = True, out: np.ndarray | None = None, threads: int | None = None,
                     block: int = 32) -> np.ndarray:
    """left, right: float arrays [B, C, H, W] -> volume [B, G, D, H, W] (float32, or out's dtype, e.g. float16).

    Same formula as the contract, computed as small matrix products: for each image row of each group and each
    block of `block` left columns x, the products of those columns with the right columns x-D+1 .. x+block-1 form
    a [block, block+D-1] matrix (one BLAS call for all rows) whose diagonals are the volume entries for d = 0..D-1;
    the norm products are divided in before the diagonals are read out (a strided view, no copy) and written once
    into `out` (the fp16 cast happens during that write). The right features are zero-padded by D-1 columns on the
    left, which yields the contract's 0 for w < d (0 / (0 + eps)). Sums accumulate in float32. Rows are split over
    `threads` worker threads (default: min(cores, B*G)); numpy releases the GIL in matmul.
    """
    b, c, h, w = left.shape
    if c % num_groups:
        raise ValueError(f'{c} feature channels cannot be split into {num_groups} groups')
    if right.shape != left.shape:
        raise ValueError(f'left {left.shape} and right {right.shape} features differ in shape')
    g, d = num_groups, max_disp
    cg, bg = c // g, b * g
    if out is None:
        out = np.empty((b, g, d, h, w), np.float32)
    elif out.shape != (b, g, d, h, w):
        raise ValueError(f'out has shape {out.shape}, expected {(b, g, d, h, w)}')
    # channels-last rows: [B*G*H, W, C/G]; right padded with D-1 zero columns on the left
    lt = np.ascontiguousarray(np.asarray(left, np.float32).reshape(b, g, cg, h, w).transpose(0, 1, 3, 4, 2))
    lt = lt.reshape(bg * h, w, cg)
    rt = np.zeros((bg * h, w + d - 1, cg), np.float32)
    rt[:, d - 1:] = np.asarray(right, np.float32).reshape(b, g, cg, h, w).transpose(0, 1, 3, 4, 2).reshape(
        bg * h, w, cg)
    if normalize:
        ln = np.sqrt(np.einsum('nwc,nwc->nw', lt, lt))
        rn = np.sqrt(np.einsum('nwc,nwc->nw', rt, rt))
    out_bg = out.reshape(bg, d, h, w)

    def work(span: tuple[int, int]) -> None:
        a, z = span                       # (b, g) pairs a..z-1 = rows a*h .. z*h-1
        r0, r1 = a * h, z * h
        for x0 in range(0, w, block):
            x1 = min(w, x0 + block)
            nb = x1 - x0
            prod = np.matmul(lt[r0:r1, x0:x1], rt[r0:r1, x0:x1 + d - 1].transpose(0, 2, 1))  # [rows, nb, nb+D-1]
            if normalize:
                den = ln[r0:r1, x0:x1, None] * rn[r0:r1, None, x0:x1 + d - 1]
                den += EPS
                prod /= den
            s_row, s_i, s_k = prod.strides
            # diag[r, j, i] = prod[r, i, i + j] = V at x = x0 + i, d = D-1-j
            diag = np.lib.stride_tricks.as_strided(prod, (r1 - r0, d, nb), (s_row, s_k, s_i + s_k))
            out_bg[a:z, :, :, x0:x1] = diag[:, ::-1, :].reshape(z - a, h, d, nb).transpose(0, 2, 1, 3)

    workers = max(1, min(threads or os.cpu_count() or 1, bg))
    edges = np.linspace(0, bg, workers + 1).astype(int)
    spans = [(int(a), int(z)) for a, z in zip(edges[:-1], edges[1:]) if z > a]
    if len(spans) == 1:
        work(spans[0])
    else:
        list(_pool(len(spans)).map(work, spans))
    return out


def gwc_volume_tensor(left, right, num_groups: int, max_disp: int, normalize: bool = True):
    """Torch tensors in, torch tensor out, on the features' device: the BLAS numpy path for CPU tensors (several
    times faster than the per-disparity torch loop there), :func:`gwc_volume_torch` on GPUs. Inference only."""
    if left.device.type != 'cpu':
        return gwc_volume_torch(left, right, num_groups, max_disp, normalize)
    import torch
    vol = gwc_volume_numpy(left.detach().float().numpy(), right.detach().float().numpy(), num_groups, max_disp,
                           normalize)
    return torch.from_numpy(vol)
