"""The group-wise correlation (GWC) volume between the two 1/4-resolution feature maps.

Contract (../shared/docs/ffs-model-contracts.md, in our words): features L, R of C channels are
split into
G groups of C/G channels; for every disparity d in [0, D):
    V[b, g, d, h, w] = sum_{c in g} L[b, c, h, w] * R[b, c, h, w - d]        for w >= d, else 0
and, when `normalize` is true, that sum is divided by ||L_g(h, w)|| * ||R_g(h, w - d)|| + 1e-5
(per-group cosine). Sums accumulate in float32; the result is laid out [B, G, D, H, W].

`gwc_volume_torch` is the differentiable implementation our own model trains with;
`gwc_volume_into` the inference one for devices (one batched pass written into the post graph's
buffer); `gwc_volume_numpy` is the CPU implementation for ONNX Runtime: the same formula evaluated
as banded small matrix products (BLAS) over blocks of columns, split over worker threads (see its
docstring).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
import os

import numpy as np

EPS = 1e-5
_POOL: ThreadPoolExecutor | None = None


def gwc_volume_torch(left, right, num_groups: int, max_disp: int, normalize: bool = True):
    """left, right: torch tensors [B, C, H, W] -> volume [B, G, D, H, W] (float32)."""
    b, c, h, w = left.shape
    if c % num_groups:
        raise ValueError(f'{c} feature channels cannot be split into {num_groups} groups')
    left = left.float().reshape(b, num_groups, c // num_groups, h, w)
    right = right.float().reshape(b, num_groups, c // num_groups, h, w)
    if normalize:
        ln = left.norm(dim=2)  # [B, G, H, W]
        rn = right.norm(dim=2)
    vol = left.new_zeros(b, num_groups, max_disp, h, w)
    for d in range(min(max_disp, w)):
        dot = (left[..., d:] * right[...,: w - d]).sum(dim=2)
        if normalize:
            dot = dot / (ln[..., d:] * rn[...,: w - d] + EPS)
        vol[:,:, d,:, d:] = dot
    return vol


def _pool(workers: int):
    """Return a process-wide thread pool for the CPU volume.

    numpy releases the GIL inside its loops.
    """
    global _POOL
    if _POOL is None or _POOL._max_workers != workers:
        _POOL = ThreadPoolExecutor(workers, thread_name_prefix='ffs-gwc')
    return _POOL


def gwc_volume_numpy(
    left: np.ndarray,
    right: np.ndarray,
    num_groups: int,
    max_disp: int,
    normalize: bool = True,
    out: np.ndarray | None = None,
    threads: int | None = None,
    block: int = 32,
) -> np.ndarray:
    """Compute the GWC volume of float arrays `left`, `right` with numpy/BLAS.

    left, right: float arrays [B, C, H, W] -> volume [B, G, D, H, W] (float32, or out's dtype, e.g.
    float16).

    Same formula as the contract, computed as small matrix products: for each image row of each
    group and each block of `block` left columns x, the products of those columns with the right
    columns x-D+1 .. x+block-1 form a [block, block+D-1] matrix (one BLAS call for all rows) whose
    diagonals are the volume entries for d = 0..D-1; the norm products are divided in before the
    diagonals are read out (a strided view, no copy) and written once into `out` (the fp16 cast
    happens during that write). The right features are zero-padded by D-1 columns on the left,
    which yields the contract's 0 for w < d (0 / (0 + eps)). Sums accumulate in float32. Rows are
    split over `threads` worker threads (default: min(cores, B*G)); numpy releases the GIL in
    matmul.
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
    lt = np.ascontiguousarray(
        np.asarray(left, np.float32).reshape(b, g, cg, h, w).transpose(0, 1, 3, 4, 2)
    )
    lt = lt.reshape(bg * h, w, cg)
    rt = np.zeros((bg * h, w + d - 1, cg), np.float32)
    rt[:, d - 1:] = (
        np.asarray(right, np.float32)
        .reshape(b, g, cg, h, w)
        .transpose(0, 1, 3, 4, 2)
        .reshape(bg * h, w, cg)
    )
    if normalize:
        ln = np.sqrt(np.einsum('nwc,nwc->nw', lt, lt))
        rn = np.sqrt(np.einsum('nwc,nwc->nw', rt, rt))
    out_bg = out.reshape(bg, d, h, w)

    def work(span: tuple[int, int]) -> None:
        a, z = span  # (b, g) pairs a..z-1 = rows a*h .. z*h-1
        r0, r1 = a * h, z * h
        for x0 in range(0, w, block):
            x1 = min(w, x0 + block)
            nb = x1 - x0
            prod = np.matmul(
                lt[r0:r1, x0:x1], rt[r0:r1, x0: x1 + d - 1].transpose(0, 2, 1)
            )  # [rows, nb, nb+D-1]
            if normalize:
                den = ln[r0:r1, x0:x1, None] * rn[r0:r1, None, x0: x1 + d - 1]
                den += EPS
                prod /= den
            s_row, s_i, s_k = prod.strides
            # diag[r, j, i] = prod[r, i, i + j] = V at x = x0 + i, d = D-1-j
            diag = np.lib.stride_tricks.as_strided(prod, (r1 - r0, d, nb), (s_row, s_k, s_i + s_k))
            out_bg[a:z,:,:, x0:x1] = (
                diag[:,::-1,:].reshape(z - a, h, d, nb).transpose(0, 2, 1, 3)
            )

    workers = max(1, min(threads or os.cpu_count() or 1, bg))
    edges = np.linspace(0, bg, workers + 1).astype(int)
    spans = [(int(a), int(z)) for a, z in zip(edges[:-1], edges[1:]) if z > a]
    if len(spans) == 1:
        work(spans[0])
    else:
        list(_pool(len(spans)).map(work, spans))
    return out


def gwc_volume_into(
    left,
    right,
    num_groups: int,
    max_disp: int,
    normalize: bool = True,
    out=None,
    max_elements: int = 1 << 26,
):
    """Inference volume on the features' device in one batched pass, written straight into `out`.

    left, right: torch tensors [B, C, H, W] (any float dtype; sums accumulate in float32). `out`: a
    preallocated [B, G, D, H, W] tensor in the dtype the post graph takes (float16 or float32), or
    None for a new float32 one. The same banded matrix products as :func:`gwc_volume_numpy`: per
    image row of every group, the [W, C/G] left features times the [C/G, W+D-1] right features
    (zero-padded by D-1 columns on the left) give every dot product the volume needs on a band of
    diagonals; a strided view reads the D diagonals out, only they are divided by the norm
    products, and one copy writes them (and the cast) into `out`. Rows are processed in chunks of
    at most `max_elements` products (64 M floats = 256 MB by default) so the temporary stays
    bounded at large sizes; with the usual sizes (640x480: 960 rows) it is one chunk, i.e. a
    handful of kernels and no Python loop over disparities.
    """
    import torch

    b, c, h, w = left.shape
    if c % num_groups:
        raise ValueError(f'{c} feature channels cannot be split into {num_groups} groups')
    if right.shape != left.shape:
        raise ValueError(
            f'left {tuple(left.shape)} and right {tuple(right.shape)} features differ in shape'
        )
    g, cg, d = num_groups, c // num_groups, int(max_disp)
    if out is None:
        out = torch.empty((b, g, d, h, w), dtype=torch.float32, device=left.device)
    elif tuple(out.shape) != (b, g, d, h, w):
        raise ValueError(f'out has shape {tuple(out.shape)}, expected {(b, g, d, h, w)}')
    rows = b * g * h
    # [rows, W, C/G] and [rows, C/G, W+D-1]
    lt = left.float().reshape(b, g, cg, h, w).permute(0, 1, 3, 4, 2).reshape(rows, w, cg)
    rt = torch.nn.functional.pad(
        right.float().reshape(b, g, cg, h, w).permute(0, 1, 3, 2, 4), (d - 1, 0)
    )
    rt = rt.reshape(rows, cg, w + d - 1)
    if normalize:
        ln = lt.norm(dim=2)  # [rows, W]
        rn = rt.norm(dim=1)  # [rows, W+D-1]
    out_rows = out.view(b * g, d, h, w)
    step = max(1, min(rows, max_elements // max(1, w * (w + d - 1))))
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        prod = torch.bmm(
            lt[r0:r1], rt[r0:r1]
        )  # [n, W, W+D-1]; prod[n, x, k] pairs left x with padded k
        n = r1 - r0
        s_n, s_x, s_k = prod.stride()
        # diag[n, j, x] = prod[n, x, x + j] = V at disparity D-1-j (a strided view, no copy)
        diag = prod.as_strided((n, d, w), (s_n, s_k, s_x + s_k))
        if (
            normalize
        ):  # only the D diagonals are divided: den[n, j, x] = |L(x)| |Rpad(x + j)| + eps
            den = ln[r0:r1, None,:] * rn[r0:r1].unfold(1, d, 1).transpose(1, 2)
            diag = diag / (den + EPS)
        _write_rows(out_rows, diag.flip(1), r0, r1, g, h)
    return out


def _write_rows(out_rows, vol_rows, r0: int, r1: int, g: int, h: int) -> None:
    """Copy [n, D, W] rows r0..r1 into out_rows [B*G, D, H, W] (casting to its dtype).

    Row index: row = (b*G + g)*H + y.
    """
    while r0 < r1:
        bg, y0 = divmod(r0, h)
        y1 = min(h, y0 + (r1 - r0))
        n = y1 - y0
        out_rows[bg,:, y0:y1,:].copy_(vol_rows[:n].transpose(0, 1))
        vol_rows = vol_rows[n:]
        r0 += n


def gwc_volume_tensor(
    left, right, num_groups: int, max_disp: int, normalize: bool = True, out=None
):
    """Compute the GWC volume of torch tensors, on the features' device (inference only).

    Torch tensors in, torch tensor out: the BLAS numpy path for CPU tensors (several times faster
    than torch there), :func:`gwc_volume_into` on GPUs. `out` as there.
    """
    if left.device.type != 'cpu':
        return gwc_volume_into(left, right, num_groups, max_disp, normalize, out=out)
    import torch

    vol = gwc_volume_numpy(
        left.detach().float().numpy(),
        right.detach().float().numpy(),
        num_groups,
        max_disp,
        normalize,
        out=None if out is None else out.numpy(),
    )
    return out if out is not None else torch.from_numpy(vol)
