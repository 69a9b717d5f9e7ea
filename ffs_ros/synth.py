"""Procedural rectified stereo pairs with exact disparity and occlusion ground truth.

One generator feeds model training, evaluation (held-out scenes from fixed seeds) and the node
demo.

Geometry. Every surface is a plane in *disparity space* of the left camera, d(x, y) = a*x + b*y + c
(a fronto-parallel plane has a = b = 0; a level ground plane has d depending on y only), with a
support mask and a texture, both attached to left-image coordinates. A rectified right camera sees
the left point (x, y) at (x - d(x, y), y). So

* the left image is a z-buffer over objects at the integer left pixels (larger disparity =
nearer), and
* the right image is rendered by *inverse warping* each object: for a right pixel x_r the left
coordinate
  on the plane is x_l = (x_r + b*y + c) / (1 - a) (a < 1 always holds here), where the mask and the
  texture are sampled; again the largest disparity wins.

Disparity is therefore exact for every left pixel. A left pixel is `occluded` when x - d < 0 or
when some other surface with a larger disparity covers its right-image position.

Textures mix crops of scikit-image's bundled sample photographs (never `stereo_motorcycle`, which
is our validation scene) with procedural multi-scale noise; each view gets its own photometric
change (gain, gamma, noise, blur) unless `photometric=False`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

__all__ = ['StereoSample', 'render_scene', 'plane_pair', 'texture_bank']

# scikit-image sample photos bundled in the wheel (no download). stereo_motorcycle is deliberately
# absent.
_PHOTO_NAMES = (
    'astronaut',
    'brick',
    'camera',
    'cat',
    'chelsea',
    'clock',
    'coffee',
    'coins',
    'grass',
    'gravel',
    'immunohistochemistry',
    'moon',
    'page',
    'rocket',
    'text',
    'cell',
    'hubble_deep_field',
    'retina',
    'colorwheel',
)


@dataclass
class StereoSample:
    """One rectified pair.

    `disparity` is left-referenced (x_l - x_r) and exact for every left pixel; `occluded` marks
    left pixels that are not visible in the right image (or fall off its left edge).
    """

    left: np.ndarray  # H x W x 3 uint8 RGB
    right: np.ndarray  # H x W x 3 uint8 RGB
    disparity: np.ndarray  # H x W float32
    occluded: np.ndarray  # H x W bool


@lru_cache(maxsize=1)
def texture_bank() -> tuple:
    """Return the sample photographs as float32 RGB arrays in 0..255 (loaded once per process)."""
    import skimage.data as skd

    out = []
    for name in _PHOTO_NAMES:
        fn = getattr(skd, name, None)
        if fn is None:
            continue
        try:
            img = np.asarray(fn())
        except Exception:  # noqa: BLE001 - an optional sample missing from this skimage build
            continue
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = img[...,:3].astype(np.float32)
        if img.max() <= 1.0:
            img *= 255.0
        out.append(img)
    if not out:
        raise RuntimeError(
            'no scikit-image sample photographs could be loaded; '
            'install scikit-image with its bundled data (pip install scikit-image)'
        )
    return tuple(out)


def _noise_texture(rng, h, w):
    """Multi-scale smooth colour noise, 0..255 float32 [h, w, 3]."""
    tex = np.zeros((h, w, 3), np.float32)
    total = 0.0
    for _ in range(rng.integers(1, 4)):
        cell = float(rng.choice([3, 6, 12, 24, 48]))
        sh, sw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
        small = rng.random((sh, sw, 3), dtype=np.float32)
        if rng.random() < 0.5:  # grey-ish noise
            small[:] = small[...,:1] * 0.8 + small * 0.2
        amp = rng.uniform(0.3, 1.0)
        tex += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
    tex /= total
    lo, hi = np.percentile(tex, 1), np.percentile(tex, 99)
    tex = (tex - lo) / max(hi - lo, 1e-3)
    return np.clip(tex, 0, 1) * 255.0


def _photo_texture(rng, h, w):
    """Return a random crop of a random sample photo, transformed.

    Rescaled, flipped, rotated by 90-degree steps, tinted.
    """
    bank = texture_bank()
    img = bank[rng.integers(len(bank))]
    k = int(rng.integers(4))
    if k:
        img = np.rot90(img, k)
    if rng.random() < 0.5:
        img = img[:,::-1]
    scale = rng.uniform(0.35, 2.0)
    need = max(h / img.shape[0], w / img.shape[1])
    scale = max(scale, need * 1.02)
    nh, nw = int(np.ceil(img.shape[0] * scale)), int(np.ceil(img.shape[1] * scale))
    img = cv2.resize(
        np.ascontiguousarray(img),
        (nw, nh),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    )
    y0 = int(rng.integers(0, nh - h + 1))
    x0 = int(rng.integers(0, nw - w + 1))
    img = img[y0: y0 + h, x0: x0 + w].astype(np.float32)
    if rng.random() < 0.4:
        img = img.mean(axis=2, keepdims=True) * rng.uniform(0.6, 1.2, size=(1, 1, 3)).astype(
            np.float32
        )
    return img


def _texture(rng, h, w, textureless_prob=0.06):
    """Object texture: photo, noise, or a blend; occasionally almost uniform (a hard case)."""
    if rng.random() < textureless_prob:
        base = rng.uniform(20, 235, size=(1, 1, 3)).astype(np.float32)
        tex = base + _noise_texture(rng, h, w) * rng.uniform(0.02, 0.08) - 6.0
        return np.clip(tex, 0, 255)
    r = rng.random()
    if r < 0.45:
        tex = _photo_texture(rng, h, w)
    elif r < 0.65:
        tex = _noise_texture(rng, h, w)
    else:
        alpha = rng.uniform(0.2, 0.7)
        tex = (1 - alpha) * _photo_texture(rng, h, w) + alpha * _noise_texture(rng, h, w)
    contrast = rng.uniform(0.5, 1.3)
    tex = cv2.GaussianBlur(tex, (0, 0), 0.6)  # optics: no content above the sampling limit
    mean = tex.mean()
    tex = (tex - mean) * contrast + mean + rng.uniform(-40, 40)
    return np.clip(tex, 0, 255).astype(np.float32)


def _random_polygon(rng, cx, cy, radius, n):
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = radius * rng.uniform(0.45, 1.0, n)
    pts = np.stack(
        [cx + rad * np.cos(ang), cy + rad * np.sin(ang) * rng.uniform(0.5, 1.5)], axis=1
    )
    return np.round(pts).astype(np.int32)


def _lattice_mask(rng, h, w):
    """Fences, chair backs, shelves, wheels with spokes.

    A frame of thin bars with the background showing through (the hardest structure for a
    1/4-resolution cost volume).
    """
    m = np.zeros((h, w), np.uint8)
    cx, cy = rng.uniform(0.05, 0.95) * w, rng.uniform(0.1, 0.9) * h
    size = rng.uniform(0.15, 0.5) * min(h, w * 0.8)
    thick = int(rng.integers(1, 5))
    if rng.random() < 0.5:  # wheel: rim + spokes
        r = int(size)
        cv2.circle(m, (int(cx), int(cy)), r, 1, int(rng.integers(3, 9)))
        for a in np.linspace(0, np.pi, int(rng.integers(3, 12)), endpoint=False) + rng.uniform(
            0, np.pi
        ):
            dx, dy = r * np.cos(a), r * np.sin(a)
            cv2.line(m, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), 1, thick)
    else:  # grid / fence of bars
        bw, bh = size * rng.uniform(0.8, 2.0), size * rng.uniform(0.6, 1.5)
        x0, y0 = int(cx - bw / 2), int(cy - bh / 2)
        cv2.rectangle(m, (x0, y0), (int(x0 + bw), int(y0 + bh)), 1, int(rng.integers(2, 7)))
        nx, ny = int(rng.integers(0, 8)), int(rng.integers(0, 4))
        for x in np.linspace(x0, x0 + bw, nx + 2)[1:-1]:
            cv2.line(m, (int(x), y0), (int(x), int(y0 + bh)), 1, thick)
        for y in np.linspace(y0, y0 + bh, ny + 2)[1:-1]:
            cv2.line(m, (x0, int(y)), (int(x0 + bw), int(y)), 1, thick)
    return m


def _shape_mask(rng, h, w, kind, hole_prob=0.15):
    """Return a uint8 support mask [h, w] of the given kind."""
    if kind == 'lattice':
        return _lattice_mask(rng, h, w)
    m = np.zeros((h, w), np.uint8)
    if kind == 'thin':
        # poles, wires, rails: a few px wide, long
        thick = int(rng.integers(1, 6))
        if rng.random() < 0.6:  # mostly vertical pole
            x = int(rng.integers(0, w))
            y0, y1 = int(rng.integers(0, h // 2)), int(rng.integers(h // 2, h + 1))
            x1 = x + int(rng.integers(-w // 10, w // 10 + 1))
            cv2.line(m, (x, y0), (x1, y1), 1, thick)
        else:
            p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(m, p0, p1, 1, thick)
        return m
    size = rng.uniform(0.08, 0.45) * min(h, w * 0.8)
    cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
    if kind == 'ellipse':
        axes = (int(size * rng.uniform(0.4, 1.2)), int(size * rng.uniform(0.4, 1.2)))
        cv2.ellipse(m, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    elif kind == 'rect':
        rw, rh = size * rng.uniform(0.5, 1.6), size * rng.uniform(0.5, 1.6)
        box = cv2.boxPoints(((cx, cy), (rw, rh), float(rng.choice([0.0, rng.uniform(0, 90)]))))
        cv2.fillPoly(m, [np.round(box).astype(np.int32)], 1)
    else:  # polygon
        cv2.fillPoly(m, [_random_polygon(rng, cx, cy, size, int(rng.integers(3, 10)))], 1)
    if rng.random() < hole_prob:  # holes: a frame / ring
        inner = _shape_mask(rng, h, w, 'ellipse')
        m = m & (1 - inner)
    return m


def _plane_through(rng, w, h, d_center, cx, cy, slant):
    """Disparity plane (a, b, c) with disparity d_center at (cx, cy) and random slant.

    The slant is in px per px.
    """
    a = rng.uniform(-slant, slant)
    b = rng.uniform(-slant, slant)
    c = d_center - a * cx - b * cy
    return a, b, c


def _fit_plane_range(a, b, c, mask_pts, lo, hi):
    """Shift/scale-free clamp.

    Move c so that the plane stays within [lo, hi] on the given points.
    """
    if mask_pts is None:
        return a, b, c
    xs, ys = mask_pts
    d = a * xs + b * ys + c
    dmin, dmax = float(d.min()), float(d.max())
    if dmax - dmin > hi - lo:  # too steep for the range: flatten
        s = (hi - lo) / (dmax - dmin + 1e-6)
        a, b = a * s, b * s
        d = a * xs + b * ys + c
        dmin, dmax = float(d.min()), float(d.max())
    if dmin < lo:
        c += lo - dmin
    elif dmax > hi:
        c -= dmax - hi
    return a, b, c


def _photometric(rng, img):
    """Per-view gain, gamma, blur and sensor noise on a float 0..255 image -> uint8."""
    img = img * rng.uniform(0.8, 1.2) * rng.uniform(0.93, 1.07, size=3).astype(np.float32)
    img = img + rng.uniform(-12, 12)
    img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** rng.uniform(0.8, 1.25)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.0))
    img = img + rng.normal(0, rng.uniform(0.0, 4.0), img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _to_uint8(img):
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _compose(objects, height, width):
    """Render left, right, disparity, occluded from a list of (mask, (a, b, c), texture) objects.

    Masks and textures are [height, canvas_w(, 3)] in left-image coordinates with canvas_w >=
    width.
    """
    cw = objects[0][0].shape[1]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    left = np.zeros((height, width, 3), np.float32)
    disp = np.full((height, width), -np.inf, np.float32)
    right = np.zeros((height, width, 3), np.float32)
    zr = np.full((height, width), -np.inf, np.float32)
    rows = np.arange(height)[:, None]
    for mask, (a, b, c), tex in objects:
        # left view: integer pixels, z-buffer on disparity
        d = a * xs + b * ys + c
        sel = (mask[:,:width] > 0) & (d > disp)
        disp[sel] = d[sel]
        left[sel] = tex[:,:width][sel]
        # right view: inverse warp x_l = (x_r + b*y + c) / (1 - a)
        xl = (xs + b * ys + c) / (1.0 - a)
        xi = np.floor(xl + 0.5).astype(np.int64)
        inside = (xi >= 0) & (xi < cw)
        cover = np.zeros_like(inside)
        cover[inside] = mask[np.broadcast_to(rows, xi.shape)[inside], xi[inside]] > 0
        dr = a * xl + b * ys + c
        sel = cover & (dr > zr)
        if sel.any():
            zr[sel] = dr[sel]
            warped = cv2.remap(tex, xl, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            right[sel] = warped[sel]
    if not np.isfinite(disp).all():
        raise RuntimeError(
            'scene has uncovered pixels; the background must cover the whole canvas'
        )
    # occlusion: the right-image position of each left pixel is covered by a nearer surface
    xr = xs - disp
    occ = xr < 0
    for mask, (a, b, c), _ in objects:
        xl = (xr + b * ys + c) / (1.0 - a)
        xi = np.floor(xl + 0.5).astype(np.int64)
        inside = (xi >= 0) & (xi < cw) & ~occ
        cover = np.zeros_like(inside)
        cover[inside] = mask[np.broadcast_to(rows, xi.shape)[inside], xi[inside]] > 0
        dj = a * xl + b * ys + c
        occ |= cover & (dj > disp + 1e-3)
    return left, right, disp.astype(np.float32), occ


def render_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    max_disparity: float = 64.0,
    *,
    min_objects: int = 4,
    max_objects: int = 12,
    photometric: bool = True,
    ground_prob: float = 0.4,
    thin_prob: float = 0.15,
    slant: float = 0.25,
    textureless_prob: float = 0.06,
    min_disparity: float = 0.0,
    lattice_prob: float = 0.0,
    hole_prob: float = 0.15,
) -> StereoSample:
    """Render a random cluttered scene.

    Background (often with a strongly slanted ground plane) and `min_objects`..`max_objects`
    occluding objects (polygons, ellipses, rectangles, thin poles/wires, and with `lattice_prob` >
    0 fences/grids/spoked wheels; `hole_prob` of the solid shapes get a hole), each a
    fronto-parallel or slanted plane. Disparities lie in [min_disparity, max_disparity].

    rng: numpy Generator (fixed seed -> identical scene). photometric=False renders both views with
    identical, noise-free photometry (used by the exactness tests).
    """
    if height < 8 or width < 8:
        raise ValueError(f'render_scene needs at least 8x8 pixels, got {height}x{width}')
    if not max_disparity > min_disparity >= 0:
        raise ValueError(
            f'need 0 <= min_disparity < max_disparity, got {min_disparity}, {max_disparity}'
        )
    lo, hi = float(min_disparity), float(max_disparity)
    cw = width + int(np.ceil(hi)) + 4
    # scene-level disparity span: sometimes narrow (far scene), often the full range
    span_hi = lo + (hi - lo) * rng.uniform(0.35, 1.0)
    bg_hi = lo + (span_hi - lo) * rng.uniform(0.0, 0.35)
    full = (
        np.array([0, cw - 1, 0, cw - 1], np.float32),
        np.array([0, 0, height - 1, height - 1], np.float32),
    )
    objects = []
    # background: a far, mildly slanted plane covering the whole canvas
    a, b, c = _plane_through(
        rng, cw, height, rng.uniform(lo, max(bg_hi, lo + 1e-3)), cw / 2, height / 2, slant * 0.3
    )
    objects.append(
        (
            np.ones((height, cw), np.uint8),
            _fit_plane_range(a, b, c, full, lo, bg_hi + 1e-3),
            _texture(rng, height, cw, textureless_prob),
        )
    )
    if rng.random() < ground_prob:
        # level ground: disparity zero-ish at a horizon row, growing linearly to the bottom edge
        horizon = rng.uniform(-0.2, 0.6) * height
        d_bottom = lo + (hi - lo) * rng.uniform(0.5, 1.0)
        d_h = rng.uniform(lo, bg_hi + 1e-3)
        b = (d_bottom - d_h) / max(height - 1 - horizon, 1.0)
        a = rng.uniform(-0.03, 0.03)
        c = d_h - b * horizon - a * cw / 2
        m = np.zeros((height, cw), np.uint8)
        m[max(0, int(np.ceil(horizon))):,:] = 1
        pts = np.nonzero(m)
        a, b, c = _fit_plane_range(
            a, b, c, (pts[1].astype(np.float32), pts[0].astype(np.float32)), lo, hi
        )
        objects.append((m, (a, b, c), _texture(rng, height, cw, textureless_prob)))
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        r = rng.random()
        kind = 'thin' if r < thin_prob else str(rng.choice(['polygon', 'ellipse', 'rect']))
        if lattice_prob > 0 and rng.random() < lattice_prob:
            kind = 'lattice'
        m = _shape_mask(rng, height, cw, kind, hole_prob)
        pts = np.nonzero(m)
        if len(pts[0]) < 4:
            continue
        ys_, xs_ = pts[0].astype(np.float32), pts[1].astype(np.float32)
        d_c = rng.uniform(lo, span_hi) if rng.random() < 0.85 else rng.uniform(lo, hi)
        s = 0.0 if rng.random() < 0.35 else slant
        a, b, c = _plane_through(rng, cw, height, d_c, float(xs_.mean()), float(ys_.mean()), s)
        a, b, c = _fit_plane_range(a, b, c, (xs_, ys_), lo, hi)
        objects.append((m, (a, b, c), _texture(rng, height, cw, textureless_prob)))
    left, right, disp, occ = _compose(objects, height, width)
    if photometric:
        return StereoSample(_photometric(rng, left), _photometric(rng, right), disp, occ)
    return StereoSample(_to_uint8(left), _to_uint8(right), disp, occ)


def plane_pair(height: int, width: int, disparity: float, seed: int = 0) -> StereoSample:
    """Return a fronto-parallel textured plane at constant `disparity` (px), no photometric change.

    Example: a plane at 2 m seen with fx = 400 px and baseline 0.12 m has disparity 400*0.12/2 = 24
    px. Left pixels with x - disparity < 0 are marked occluded (no match in the right image).
    """
    if disparity < 0:
        raise ValueError(f'disparity must be >= 0, got {disparity}')
    rng = np.random.default_rng(seed)
    cw = width + int(np.ceil(disparity)) + 4
    tex = _texture(rng, height, cw, textureless_prob=0.0)
    obj = (np.ones((height, cw), np.uint8), (0.0, 0.0, float(disparity)), tex)
    left, right, disp, occ = _compose([obj], height, width)
    return StereoSample(_to_uint8(left), _to_uint8(right), disp, occ)
