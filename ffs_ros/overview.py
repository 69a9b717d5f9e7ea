"""Images a person can judge: colour-mapped disparity and depth on stated ranges, and an overview.

The overview is left | disparity | depth side by side, each map with a colour bar labelled in px
or m. Colours are TURBO with near = red in both maps and black where there is no value.
Disparity is shown on [0, max_disparity] (the range the matcher searches, as the node's
disparity/color topic), depth on a fixed [lo, hi] in metres that is written on its bar and in
its title (farther than hi: the far colour). No percentiles, so the same scene gives the same
colours in every run and every tool (`ffs-ros infer`, `ffs-ros demo`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# depth colours reach to this many times the nearest measurable depth (fx*B / max disparity), i.e.
# down to a disparity of max_disparity / 16; farther is clipped to the far colour
DEPTH_SHOWN_FACTOR = 16.0
BLANK = 48  # grey of the overview's background and of a missing panel


def nice_ceil(x: float) -> float:
    """Smallest 1, 2, 2.5 or 5 x 10^k that is >= x (x > 0)."""
    if not x > 0 or not math.isfinite(x):
        return 1.0
    e = 10.0 ** math.floor(math.log10(x))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * e >= x * (1 - 1e-9):
            return m * e
    return 10.0 * e


def depth_range(
    fx_baseline: float, max_disparity: float, min_depth: float = 0.0, max_depth: float = math.inf
) -> tuple[float, float]:
    """Colour range [lo, hi] m of depth images.

    lo = min_depth; hi = DEPTH_SHOWN_FACTOR x the nearest measurable depth, rounded up to a
    round number, and at most max_depth.
    """
    hi = nice_ceil(DEPTH_SHOWN_FACTOR * fx_baseline / max(float(max_disparity), 1e-6))
    hi = min(hi, float(max_depth))
    lo = float(min_depth)
    if not hi > lo:
        hi = lo + nice_ceil(max(lo, 1.0))
    return lo, hi


def disparity_rgb(disp: np.ndarray, max_disparity: float) -> np.ndarray:
    """HxWx3 uint8 RGB of a disparity map on [0, max_disparity] px; NaN/<= 0 black."""
    from .geometry import color_map_disparity

    return color_map_disparity(disp, max_disparity)


def depth_rgb(depth: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """HxWx3 uint8 RGB of a depth map (m) on [lo, hi], near = red; NaN/<= 0 black."""
    import cv2

    z = np.asarray(depth, np.float32)
    with np.errstate(invalid='ignore'):
        t = np.clip((hi - np.nan_to_num(z, nan=hi)) / max(hi - lo, 1e-9), 0, 1)
        invalid = ~(z > 0)
    col = cv2.applyColorMap((t * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    col = cv2.cvtColor(col, cv2.COLOR_BGR2RGB)
    col[invalid] = 0
    return col


def confidence_rgb(confidence: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB of a confidence map on [0, 1] (dark = unsure, bright = sure); NaN black.

    Colour map: OpenCV's VIRIDIS (perceptually uniform, readable in grey); invalid pixels are
    black, which the map's darkest colour (dark violet) is not.
    """
    import cv2

    c = np.asarray(confidence, np.float32)
    invalid = ~np.isfinite(c)
    t = np.clip(np.nan_to_num(c, nan=0.0), 0.0, 1.0)
    col = cv2.applyColorMap((t * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    col = cv2.cvtColor(col, cv2.COLOR_BGR2RGB)
    col[invalid] = 0
    return col


def _scale(h: int) -> float:
    return max(1.0, h / 480.0)


def layout(h: int, w: int) -> tuple[int, int]:
    """(title height, colour bar width) in px of an overview panel for an HxW image."""
    k = _scale(h)
    return round(22 * k), round(64 * k)


def overview_shape(h: int, w: int) -> tuple[int, int, int]:
    """Shape of overview() for HxW images: three panels of (title + image) x (image + bar)."""
    title_h, bar_w = layout(h, w)
    return title_h + h, 3 * (w + bar_w), 3


def _text(img, text, org, k, color=(235, 235, 235)) -> None:
    import cv2

    cv2.putText(
        img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.42 * k, color, max(1, round(k)), cv2.LINE_AA
    )


def _ticks(lo: float, hi: float) -> list[float]:
    step = nice_ceil((hi - lo) / 4.0)
    first = math.ceil(lo / step) * step
    inner = [
        first + i * step
        for i in range(int((hi - first) / step) + 1)
        if lo + 0.12 * (hi - lo) < first + i * step < hi - 0.12 * (hi - lo)
    ]
    return [lo, *inner, hi]


def color_bar(
    h: int, bar_w: int, lo: float, hi: float, colorize, top_suffix: str = ''
) -> np.ndarray:
    """HxBAR_Wx3 RGB bar: colours of values hi (top) .. lo (bottom) and their labels."""
    k = _scale(h)
    bar = np.full((h, bar_w, 3), BLANK, np.uint8)
    strip = round(12 * k)
    x0 = round(4 * k)
    pad = round(6 * k)  # keeps the end labels inside the image
    values = np.linspace(hi, lo, h - 2 * pad, dtype=np.float32)[:, None]
    values = np.maximum(values, np.float32(lo + 1e-3 * (hi - lo)))  # 0 px would draw as 'none'
    bar[pad: h - pad, x0: x0 + strip] = colorize(np.repeat(values, strip, axis=1))
    for v in _ticks(lo, hi):
        y = pad + round((hi - v) / max(hi - lo, 1e-9) * (h - 2 * pad - 1))
        bar[y, x0 + strip: x0 + strip + round(3 * k)] = 235
        label = f'{v:g}' + (top_suffix if v == hi else '')
        _text(bar, label, (x0 + strip + round(5 * k), y + round(4 * k)), k)
    return bar


def _panel(h: int, w: int, image, title: str, bar, unit: str = '') -> np.ndarray:
    title_h, bar_w = layout(h, w)
    k = _scale(h)
    p = np.full((title_h + h, w + bar_w, 3), BLANK, np.uint8)
    if image is None:
        _text(p, 'not available', (round(8 * k), title_h + h // 2), k)
    else:
        p[title_h:, :w] = image
    if bar is not None:
        p[title_h:, w:] = bar
    _text(p, title, (round(4 * k), round(16 * k)), k)
    if unit:
        _text(p, unit, (w + round(4 * k), round(16 * k)), k)
    return p


def overview(
    left: np.ndarray | None,
    disp: np.ndarray,
    max_disparity: float,
    depth: np.ndarray | None = None,
    depth_lo_hi: tuple[float, float] | None = None,
    no_depth: str = 'no depth (no calibration)',
) -> np.ndarray:
    """RGB left | disparity | depth with colour bars (px, m); see overview_shape().

    `left` None or `depth` None leave a grey panel saying so (`no_depth` is its title).
    """
    h, w = disp.shape
    _, bar_w = layout(h, w)
    dmax = float(max_disparity)
    panels = [
        _panel(h, w, left, 'left', None),
        _panel(
            h,
            w,
            disparity_rgb(disp, dmax),
            f'disparity 0-{dmax:g} px, black: none',
            color_bar(h, bar_w, 0.0, dmax, lambda v: disparity_rgb(v, dmax)),
            'px',
        ),
    ]
    if depth is None or depth_lo_hi is None:
        panels.append(_panel(h, w, None, no_depth, None))
    else:
        lo, hi = depth_lo_hi
        panels.append(
            _panel(
                h,
                w,
                depth_rgb(depth, lo, hi),
                f'depth {lo:g}-{hi:g} m, black: none',
                color_bar(h, bar_w, lo, hi, lambda v: depth_rgb(v, lo, hi), '+'),
                'm',
            )
        )
    return np.hstack(panels)


def write_images(
    out,
    left: np.ndarray | None,
    disp: np.ndarray,
    max_disparity: float,
    depth: np.ndarray | None = None,
    depth_lo_hi: tuple[float, float] | None = None,
    no_depth: str = 'no depth (no calibration)',
    confidence: np.ndarray | None = None,
) -> list[Path]:
    """Write left.png, disparity.png, depth.png (with depth) and overview.png; return the paths.

    `left` is RGB (None: no left.png, a grey panel in the overview). With `confidence` (HxW in
    [0, 1], NaN invalid) also confidence.png (see :func:`confidence_rgb`).
    """
    import cv2

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = {}
    if left is not None:
        images['left.png'] = left
    images['disparity.png'] = disparity_rgb(disp, max_disparity)
    if depth is not None and depth_lo_hi is not None:
        images['depth.png'] = depth_rgb(depth, *depth_lo_hi)
    if confidence is not None:
        images['confidence.png'] = confidence_rgb(confidence)
    images['overview.png'] = overview(left, disp, max_disparity, depth, depth_lo_hi, no_depth)
    written = []
    for name, rgb in images.items():
        path = out / name
        if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)):
            raise RuntimeError(f'could not write {path}')
        written.append(path)
    return written
