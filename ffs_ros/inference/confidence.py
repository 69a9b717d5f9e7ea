"""How sure a disparity is: model-agnostic confidence and the left-right consistency check.

* :func:`feature_confidence_numpy` / :func:`feature_confidence_torch` -- for any two-stage model
  (official exports output only the disparity): the group-wise correlation volume the matcher
  builds anyway holds, for every 1/4-resolution pixel, how well its left feature matches the right
  feature at every disparity. A softmax over the disparities (right pixels that exist only) turns
  that into a distribution; the confidence is its mass within +-1 bin (4 px) of the network's
  final disparity: a distinct match at the estimate gives ~1, a flat or multi-modal correlation
  (textureless, repetitive, occluded) or a match elsewhere gives little. Upsampled bilinearly.
* :class:`LRCheckMatcher` -- runs any matcher a second time on the mirrored pair (the right image
  as reference) and sets pixels whose two disparities disagree by more than ``lr_max_diff`` px to
  NaN (the classic left-right consistency test); :func:`lr_difference` is the graded score.
"""

from __future__ import annotations

import numpy as np

from .base import MatcherInfo, MatchResult, StereoMatcher, with_nan

# Softmax temperature of the feature confidence on the mean cosine similarity (chosen on the
# held-out synthetic set, docs/confidence.md) and its window: +-1 bin (flat to 0.5, 0 at 1.5).
FEATURE_TEMPERATURE = 0.01
FEATURE_RADIUS = 1.0


def _cell_disparity(disp):
    """[..., 4h, 4w] disparity (px) -> [..., h, w] in volume bins, sampled near cell centres."""
    return disp[..., 2::4, 2::4] * 0.25


def feature_confidence_numpy(volume, disp, temperature=FEATURE_TEMPERATURE, radius=FEATURE_RADIUS):
    """Return the feature confidence [H, W] float32 at network size.

    volume: the contract's GWC volume [1, G, D, H/4, W/4] (float16 or float32); disp: the
    network's disparity [H, W] in network pixels.
    """
    import cv2

    g, d, h, w = volume.shape[1:]
    # mean cosine over groups -> logits; float32 accumulation (numpy float16 arithmetic is slow)
    logits = volume[0].sum(axis=0, dtype=np.float32)
    logits *= np.float32(1.0 / (g * temperature))
    bins = np.arange(d, dtype=np.float32)
    # bins whose right pixel does not exist (x - d < 0) are no candidate
    logits += np.where(bins[:, None] > np.arange(w)[None, :], -np.inf, 0.0).astype(np.float32)[
        :, None, :
    ]
    logits -= logits.max(axis=0, keepdims=True)
    prob = np.exp(logits, out=logits)
    total = prob.sum(axis=0)
    window = radius + 0.5 - np.abs(bins[:, None, None] - _cell_disparity(disp)[None])
    np.clip(window, 0.0, 1.0, out=window)
    conf4 = (prob * window).sum(axis=0) / total
    return cv2.resize(conf4.astype(np.float32), (4 * w, 4 * h), interpolation=cv2.INTER_LINEAR)


def feature_confidence_torch(volume, disp, temperature=FEATURE_TEMPERATURE, radius=FEATURE_RADIUS):
    """Torch twin of :func:`feature_confidence_numpy` on the volume's device.

    volume [1, G, D, h, w], disp [1, 1, 4h, 4w] -> [1, 1, 4h, 4w] float32.
    """
    import torch
    import torch.nn.functional as F

    g, d, h, w = volume.shape[1:]
    logits = volume[0].float().sum(0) * (1.0 / (g * temperature))  # [D, h, w]
    bins = torch.arange(d, device=volume.device, dtype=torch.float32)
    xs = torch.arange(w, device=volume.device, dtype=torch.float32)
    logits = logits.masked_fill((bins[:, None] > xs[None, :])[:, None, :], float('-inf'))
    prob = torch.softmax(logits, 0)
    window = (radius + 0.5 - (bins[:, None, None] - _cell_disparity(disp[0, 0].float())).abs())
    conf4 = (prob * window.clamp(0.0, 1.0)).sum(0)
    return F.interpolate(
        conf4[None, None], size=(4 * h, 4 * w), mode='bilinear', align_corners=False
    )


def mirrored(image):
    """Return the image flipped left-right (a contiguous copy)."""
    return np.ascontiguousarray(image[:, ::-1])


def lr_difference(d_left, d_right):
    """Return |d_L(x) - d_R(x - d_L(x))| per left pixel (NaN where either is invalid).

    d_left: disparities of the left image; d_right: disparities of the right image (right as
    reference, positive, in the right image's own pixel grid), both HxW. The right disparity is
    read at the nearest pixel x - d_L.
    """
    h, w = d_left.shape
    xs = np.arange(w, dtype=np.float32)[None, :]
    xr = np.rint(xs - d_left)
    inside = np.isfinite(xr) & (xr >= 0) & (xr <= w - 1)
    xi = np.where(inside, xr, 0).astype(np.intp)
    dr = np.take_along_axis(d_right, xi, axis=1)
    diff = np.abs(d_left - dr)
    diff[~inside] = np.nan
    return diff.astype(np.float32)


class LRCheckMatcher(StereoMatcher):
    """Any matcher plus the left-right consistency check (costs a second match per pair).

    The second pass matches the mirrored pair (mirror(right) against mirror(left)), whose result,
    mirrored back, is the right image's disparity. Pixels where |d_L - d_R| > max_diff become NaN.
    The confidence is the inner matcher's (None if it gives none).
    """

    def __init__(self, inner: StereoMatcher, max_diff: float = 1.0) -> None:
        super().__init__()
        if not max_diff > 0:
            raise ValueError(f'lr_max_diff must be > 0 px, got {max_diff}')
        self.inner = inner
        self.max_diff = float(max_diff)
        self.last_difference: np.ndarray | None = None

    @property
    def prepares(self) -> bool:
        return self.inner.prepares

    @property
    def info(self) -> MatcherInfo:
        from dataclasses import replace

        i = self.inner.info
        return replace(i, lr_check=True, extra=dict(i.extra, lr_max_diff=self.max_diff))

    def prepare(self, in_hw) -> None:
        self.inner.prepare(in_hw)

    def match(self, left, right):
        return self.match_full(left, right).disparity

    def match_full(self, left, right) -> MatchResult:
        import time

        first = self.inner.match_full(left, right)
        timings = dict(self.inner.last_timings)
        t = time.perf_counter()
        d_right = mirrored(self.inner.match(mirrored(right), mirrored(left)))
        diff = lr_difference(first.disparity, d_right)
        self.last_difference = diff
        disp = first.disparity.copy()
        disp[~(diff <= self.max_diff)] = np.nan
        timings['lr_check'] = (time.perf_counter() - t) * 1e3
        self.last_timings = timings
        return MatchResult(disp, with_nan(first.confidence, disp))

    def close(self) -> None:
        self.inner.close()
