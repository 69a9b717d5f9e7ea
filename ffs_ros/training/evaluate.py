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


# ---- confidence: sparsification curves ---------------------------------------------------------
SPARSIFICATION_KEEP = (1.0, 0.9, 0.8, 0.5)  # reported points: bad-2 of the most confident share
_AUC_GRID = np.linspace(0.01, 1.0, 100)


def sparsification(err, conf, threshold: float = 2.0):
    """Return the bad-`threshold` sparsification of pixels ranked by `conf`, beside the oracle's.

    err: absolute disparity errors of the scored pixels; conf: their confidences (higher = surer;
    NaN = least sure). Keeping the most confident share f of the pixels, bad(f) is the share of
    them with err > threshold; the curve is sampled at f = 0.01 ... 1 and its area (AUC, trapezoid)
    is compared with the oracle's, which ranks the pixels by their true error. Returns dict(at
    {f: bad(f)} for SPARSIFICATION_KEEP, auc, oracle_auc, ratio = auc / oracle_auc).
    """
    err = np.asarray(err, np.float64).ravel()
    conf = np.asarray(conf, np.float64).ravel()
    if err.size == 0:
        raise ValueError('sparsification of no pixels')
    bad = err > threshold

    def curve(order):
        cum = np.cumsum(bad[order])
        k = np.maximum(1, np.rint(_AUC_GRID * err.size).astype(np.int64))
        return cum[k - 1] / k

    ranked = curve(np.argsort(-np.nan_to_num(conf, nan=-np.inf), kind='stable'))
    oracle = curve(np.argsort(err, kind='stable'))
    trapezoid = getattr(np, 'trapezoid', None) or np.trapz  # numpy 1.26 has only trapz
    auc, oracle_auc = float(trapezoid(ranked, _AUC_GRID)), float(trapezoid(oracle, _AUC_GRID))
    at = {f: float(ranked[int(round(f * 100)) - 1]) for f in SPARSIFICATION_KEEP}
    return {
        'at': at,
        'auc': auc,
        'oracle_auc': oracle_auc,
        'ratio': auc / oracle_auc if oracle_auc > 0 else float('inf'),
    }


def lr_score(difference):
    """Graded left-right confidence: 1 / (1 + |d_L - d_R|), 0 where the check cannot be made."""
    s = 1.0 / (1.0 + np.asarray(difference, np.float32))
    return np.nan_to_num(s, nan=0.0)


def evaluate_confidence(confidence_of, pairs, threshold: float = 2.0):
    """Return (per-pair rows, mean row) of sparsification for one confidence source.

    confidence_of(pair) -> (disparity HxW, confidence HxW, milliseconds). Pixels scored: those
    with ground truth (see `score`) and a valid disparity. The mean row averages the pairs.
    """
    rows = []
    for p in pairs:
        disp, conf, ms = confidence_of(p)
        m = p.valid & np.isfinite(p.gt) & np.isfinite(disp)
        r = sparsification(np.abs(disp - p.gt)[m], np.asarray(conf)[m], threshold)
        r.update(name=p.name, ms=ms)
        rows.append(r)
    mean = {
        'at': {f: float(np.mean([r['at'][f] for r in rows])) for f in SPARSIFICATION_KEEP},
        'auc': float(np.mean([r['auc'] for r in rows])),
        'oracle_auc': float(np.mean([r['oracle_auc'] for r in rows])),
        'ms': float(np.mean([r['ms'] for r in rows])),
    }
    mean['ratio'] = mean['auc'] / mean['oracle_auc'] if mean['oracle_auc'] > 0 else float('inf')
    return rows, mean


def format_confidence_table(results):
    """results: list of (dataset, source, mean-row) -> aligned text table."""
    keep = ' '.join(f'{"b2@" + str(int(100 * f)):>7}' for f in SPARSIFICATION_KEEP)
    head = (
        f'{"dataset":<12} {"confidence":<22} {keep} {"AUC":>7} {"oracle":>7} {"ratio":>6} '
        f'{"ms":>7}'
    )
    lines = [head, '-' * len(head)]
    for ds, source, m in results:
        at = ' '.join(f'{100 * m["at"][f]:6.2f}%' for f in SPARSIFICATION_KEEP)
        lines.append(
            f'{ds:<12} {source:<22} {at} {100 * m["auc"]:6.3f}% {100 * m["oracle_auc"]:6.3f}% '
            f'{m["ratio"]:6.2f} {m["ms"]:7.0f}'
        )
    return '\n'.join(lines)
