"""Accuracy against ground truth: EPE, bad-1, bad-2, D1, beside OpenCV SGBM in the same run.

Data sets
* ``motorcycle``: scikit-image's ``stereo_motorcycle()`` (Middlebury 2014 Motorcycle at about
quarter size,
  500x741, bundled, no download; +inf marks missing ground truth). Optionally downscaled
  (disparity scaled too).
* ``synthetic``: a fixed held-out set rendered by ffs_ros.synth from seeds never used for training
  (training caches use seed family 1; this set uses HELDOUT_SEED).

Metrics on pixels with finite ground truth (and, for synthetic scenes, non-occluded): EPE (mean
absolute error, px), bad-1 / bad-2 (fraction with error > 1 / > 2 px), D1 (KITTI: error > 3 px and
> 5 % of the true value). A matcher's invalid (NaN) pixels are filled along the scanline from the
nearer valid neighbour (the smaller disparity, i.e. background), the usual way to score sparse SGBM
output densely; `density` reports how many pixels were valid before filling.
"""

from __future__ import annotations

from dataclasses import dataclass
import time

import cv2
import numpy as np

HELDOUT_SEED = 20261121


@dataclass
class Pair:
    name: str
    left: np.ndarray
    right: np.ndarray
    gt: np.ndarray  # float32, NaN/inf = no ground truth
    valid: np.ndarray  # bool, pixels scored


def _downscale(left, right, gt, scale):
    if scale >= 1.0:
        return left, right, gt
    h, w = left.shape[:2]
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    lft = cv2.resize(left, size, interpolation=cv2.INTER_AREA)
    r = cv2.resize(right, size, interpolation=cv2.INTER_AREA)
    g = cv2.resize(gt, size, interpolation=cv2.INTER_NEAREST) * (size[0] / w)
    return lft, r, g.astype(np.float32)


def motorcycle(max_size: int | None = None):
    """Return [Pair] for skimage's Motorcycle, downscaled so the longer side is <= max_size.

    max_size None: native size.
    """
    from skimage.data import stereo_motorcycle

    left, right, gt = stereo_motorcycle()
    gt = np.asarray(gt, np.float32)
    scale = 1.0 if not max_size else min(1.0, max_size / max(left.shape[:2]))
    left, right, gt = _downscale(
        np.ascontiguousarray(left), np.ascontiguousarray(right), gt, scale
    )
    return [Pair('motorcycle', left, right, gt, np.isfinite(gt))]


def synthetic(
    n: int = 12,
    height: int = 240,
    width: int = 320,
    max_disparity: float = 80.0,
    seed: int = HELDOUT_SEED,
):
    """[Pair] of fixed held-out generated scenes (photometric changes on, like real cameras)."""
    from ..synth import render_scene

    out = []
    for i in range(n):
        s = render_scene(np.random.default_rng([seed, i]), height, width, max_disparity)
        out.append(Pair(f'synthetic_{i:02d}', s.left, s.right, s.disparity, ~s.occluded))
    return out


def fill_invalid(disp):
    """Replace NaN/inf pixels (no match) by a valid neighbour on the same row.

    The neighbour value is the smaller of the nearest valid values left and right on the same row.
    """
    d = np.asarray(disp, np.float32).copy()
    bad = ~np.isfinite(d)
    if not bad.any():
        return d
    h, w = d.shape
    idx = np.where(~bad, np.arange(w)[None,:], -1)
    left_idx = np.maximum.accumulate(idx, axis=1)
    idx_r = np.where(~bad, np.arange(w)[None,:], w)
    right_idx = np.minimum.accumulate(idx_r[:,::-1], axis=1)[:,::-1]
    rows = np.arange(h)[:, None]
    lv = np.where(left_idx >= 0, d[rows, np.clip(left_idx, 0, w - 1)], np.inf)
    rv = np.where(right_idx < w, d[rows, np.clip(right_idx, 0, w - 1)], np.inf)
    fill = np.minimum(lv, rv)
    fill[~np.isfinite(fill)] = 0.0
    d[bad] = fill[bad]
    return d


def score(pred, gt, valid):
    """dict(epe, bad1, bad2, d1, density) over `valid` pixels with finite ground truth."""
    m = valid & np.isfinite(gt)
    dens = float(np.isfinite(pred)[m].mean()) if m.any() else float('nan')
    p = fill_invalid(pred)
    err = np.abs(p - gt)[m]
    g = gt[m]
    return {
        'epe': float(err.mean()),
        'bad1': float((err > 1).mean()),
        'bad2': float((err > 2).mean()),
        'd1': float(((err > 3) & (err > 0.05 * g)).mean()),
        'density': dens,
    }


def evaluate_matcher(matcher, pairs, warmup: bool = True):
    """Run `matcher` (callable left, right -> disparity) on pairs -> (per-pair rows, mean row)."""
    rows = []
    if warmup and pairs:
        matcher(pairs[0].left, pairs[0].right)
    for p in pairs:
        t = time.perf_counter()
        pred = matcher(p.left, p.right)
        ms = (time.perf_counter() - t) * 1e3
        r = score(np.asarray(pred, np.float32), p.gt, p.valid)
        r.update(name=p.name, ms=ms, size=f'{p.left.shape[1]}x{p.left.shape[0]}')
        rows.append(r)
    keys = ('epe', 'bad1', 'bad2', 'd1', 'density', 'ms')
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    return rows, mean


class TorchModelMatcher:
    """Direct torch matcher for a loaded FFSSmall (pads to a multiple of 32, crops back)."""

    def __init__(self, model, iters=None, threads=None):
        import torch

        self.torch = torch
        if threads:
            torch.set_num_threads(int(threads))
        self.model = model.eval()
        self.iters = iters

    def __call__(self, left, right):
        torch = self.torch
        h, w = left.shape[:2]
        ph, pw = -h % 32, -w % 32

        def prep(im):  # noqa: E306
            t = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None].float()
            return torch.nn.functional.pad(t, (0, pw, 0, ph), mode='replicate')

        with torch.no_grad():
            d = self.model(prep(left), prep(right), iters=self.iters)
        return d[0, 0,:h,:w].numpy()


def format_table(results):
    """results: list of (dataset, method, mean-row) -> aligned text table."""
    head = (
        f'{"dataset":<12} {"method":<28} {"EPE":>6} {"bad-1":>7} {"bad-2":>7} {"D1":>7} '
        f'{"dens":>6} {"ms/pair":>8}'
    )
    lines = [head, '-' * len(head)]
    for ds, method, m in results:
        lines.append(
            f'{ds:<12} {method:<28} {m["epe"]:6.2f} {100 * m["bad1"]:6.1f}% '
            f'{100 * m["bad2"]:6.1f}% '
            f'{100 * m["d1"]:6.1f}% {100 * m["density"]:5.0f}% {m["ms"]:8.0f}'
        )
    return '\n'.join(lines)
