"""Stereo geometry in plain numpy (no ROS): disparity -> depth -> points.

Cloud messages: messages.py.

Conventions (ROS, REP 103/118): rectified pair, left optical frame (x right, y down, z forward),
depth in metres along z, invalid = NaN. The raw disparity from a matcher is d = x_left - x_right;
with a principal-point offset doffs = cx_left - cx_right the corrected disparity is d - doffs (what
stereo_msgs/DisparityImage carries) and Z = fx * B / (d - doffs).

Invalid disparities: NaN; corrected disparity <= 0 or outside [min_disparity, max_disparity] (the
range applies to the corrected disparity, as in DisparityImage); no match in the right image
(x_right = x - d outside [0, width-1]). All of these reduce to a per-column interval lo[x] <= d -
doffs <= hi[x], so validity costs two comparisons per pixel (NaN fails both).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
import threading

import numpy as np

_TINY = float(np.nextafter(np.float32(0), np.float32(1)))  # smallest positive float32: "> 0"


@dataclass
class StereoCamera:
    """A rectified stereo pair (pixels; baseline in metres)."""

    fx: float
    fy: float
    cx_left: float
    cy: float
    cx_right: float
    baseline: float
    width: int
    height: int

    @property
    def doffs(self) -> float:
        """Principal-point offset cx_left - cx_right (px)."""
        return self.cx_left - self.cx_right

    @property
    def fx_baseline(self) -> float:
        """Fx * baseline: depth = fx_baseline / corrected disparity."""
        return self.fx * self.baseline

    @classmethod
    def from_projection(cls, p_left, p_right, width: int, height: int) -> 'StereoCamera':
        """From the 3x4 (or flat 12) rectified projection matrices of the left and right camera.

        baseline = -P_right[0,3] / P_right[0,0]. Raises ValueError for NaN/inf or zero fx/fy,
        and for a zero or negative baseline (left and right may be swapped).
        """
        pl = np.asarray(p_left, dtype=np.float64).reshape(3, 4)
        pr = np.asarray(p_right, dtype=np.float64).reshape(3, 4)
        for name, p in (('left', pl), ('right', pr)):
            if not np.all(np.isfinite(p)):
                raise ValueError(
                    f'{name} projection matrix P contains NaN/inf: {p.ravel().tolist()}; '
                    'the camera_info is not calibrated/rectified'
                )
            if p[0, 0] <= 0 or p[1, 1] <= 0:
                raise ValueError(
                    f'{name} projection matrix P has fx={p[0, 0]:g}, fy={p[1, 1]:g}; both must be '
                    '> 0 (an all-zero P means the camera is uncalibrated)'
                )
        baseline = -pr[0, 3] / pr[0, 0] + 0.0  # + 0.0: no '-0' in messages
        if not baseline > 0:
            raise ValueError(
                f'stereo baseline is {baseline:g} m (from P_right[0,3] = {pr[0, 3]:g}); it must '
                'be > 0: '
                'the left and right images/camera_infos may be swapped, or the right P lacks '
                'its Tx = -fx*baseline term'
            )
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f'image size {width}x{height} must be positive')
        return cls(
            fx=float(pl[0, 0]),
            fy=float(pl[1, 1]),
            cx_left=float(pl[0, 2]),
            cy=float(pl[1, 2]),
            cx_right=float(pr[0, 2]),
            baseline=float(baseline),
            width=int(width),
            height=int(height),
        )


class _Bounds:
    """Per-camera constants reused between frames.

    Per-column bounds on the corrected disparity and the ray factors (u - cx)/fx, (v - cy)/fy.
    """

    def __init__(self, cam: StereoCamera, min_disparity: float, max_disparity: float) -> None:
        u = np.arange(cam.width, dtype=np.float64)
        doffs = cam.doffs
        # corrected dc = d - doffs. Need dc > 0, min <= dc <= max, 0 <= u - d <= W-1
        #   <=> u - (W-1) - doffs <= dc <= u - doffs
        lo = np.maximum(max(float(min_disparity), _TINY), u - (cam.width - 1) - doffs)
        hi = np.minimum(float(max_disparity), u - doffs)
        self.lo = lo.astype(np.float32)[None,:]
        self.hi = hi.astype(np.float32)[None,:]
        # float32 rounding must not let dc <= 0 through
        self.lo = np.maximum(self.lo, np.float32(_TINY))
        self.ray_x = ((u - cam.cx_left) / cam.fx).astype(np.float32)[None,:]
        self.ray_y = ((np.arange(cam.height, dtype=np.float64) - cam.cy) / cam.fy).astype(
            np.float32
        )[:, None]
        # scratch for the masks (the cache is per thread, so these are never shared)
        shape = (cam.height, cam.width)
        self.m1 = np.empty(shape, bool)
        self.m2 = np.empty(shape, bool)
        self._full: dict = {}

    def full(self, name: str) -> np.ndarray:
        """Return a contiguous HxW copy of a per-row/per-column constant, or 'nan'.

        The constant is 'lo', 'hi', 'ray_x' or 'ray_y'; 'nan' gives HxW int32 quiet-NaN bit
        patterns. Built on first use and kept: element-wise kernels on full arrays skip numpy's
        broadcasting (about twice as fast as on the 1xW / Hx1 views).
        """
        a = self._full.get(name)
        if a is None:
            shape = self.m1.shape
            if name == 'nan':
                a = np.full(shape, 0x7FC00000, np.int32)
            else:
                a = np.ascontiguousarray(np.broadcast_to(getattr(self, name), shape))
            self._full[name] = a
        return a


_BOUNDS_CACHE: dict = {}


def bounds(cam: StereoCamera, min_disparity: float, max_disparity: float) -> _Bounds:
    key = (threading.get_ident(), astuple(cam), float(min_disparity), float(max_disparity))
    b = _BOUNDS_CACHE.get(key)
    if b is None:
        if len(_BOUNDS_CACHE) > 8:
            _BOUNDS_CACHE.clear()
        b = _BOUNDS_CACHE[key] = _Bounds(cam, min_disparity, max_disparity)
    return b


def check_shape(arr: np.ndarray, cam: StereoCamera, what: str) -> None:
    if arr.shape[:2] != (cam.height, cam.width):
        raise ValueError(
            f'{what} is {arr.shape[1]}x{arr.shape[0]} but the camera is {cam.width}x{cam.height}'
        )


def valid_disparity_mask(
    disp: np.ndarray, cam: StereoCamera, min_disparity: float = 0.0, max_disparity: float = np.inf
) -> np.ndarray:
    """Boolean HxW: True where the raw disparity is usable (see the module docstring)."""
    check_shape(disp, cam, 'disparity')
    b = bounds(cam, min_disparity, max_disparity)
    dc = np.subtract(disp, np.float32(cam.doffs), dtype=np.float32)
    return (dc >= b.lo) & (dc <= b.hi)


def corrected_disparity(
    disp: np.ndarray,
    cam: StereoCamera,
    min_disparity: float = 0.0,
    max_disparity: float = np.inf,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """float32 d - doffs (the DisparityImage convention) with NaN where invalid."""
    return _corrected_disparity(disp, cam, min_disparity, max_disparity, out)[0]


def _corrected_disparity(
    disp: np.ndarray,
    cam: StereoCamera,
    min_disparity: float,
    max_disparity: float,
    out: np.ndarray | None,
) -> tuple[np.ndarray, int]:
    """Return (corrected_disparity(...), number of valid pixels).

    The count comes from the validity mask that is built anyway (no extra pass over the result).
    """
    check_shape(disp, cam, 'disparity')
    b = bounds(cam, min_disparity, max_disparity)
    out = np.subtract(disp, np.float32(cam.doffs), out=out, dtype=np.float32)
    return out, nan_outside(out, b.full('lo'), b.full('hi'), b)


def nan_outside(arr: np.ndarray, lo, hi, b: '_Bounds') -> int:
    """Set arr to NaN where it is not within [lo, hi]; return the number of elements left valid.

    arr is a contiguous HxW float32 array; lo and hi are contiguous HxW float32 arrays or float32
    scalars; NaN is outside.
    """
    import cv2

    ok = np.greater_equal(arr, lo, out=b.m1)  # NaN fails both comparisons
    np.logical_and(ok, np.less_equal(arr, hi, out=b.m2), out=ok)
    n_valid = int(np.count_nonzero(ok))
    if n_valid != ok.size:
        bad = np.logical_not(ok, out=b.m2)
        cv2.copyTo(
            b.full('nan'), bad.view(np.uint8), arr.view(np.int32)
        )  # masked copy of NaN bits
    return n_valid


def disparity_to_depth(
    disp: np.ndarray,
    cam: StereoCamera,
    min_disparity: float = 0.0,
    max_disparity: float = np.inf,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """float32 depth in metres, Z = fx*B / (d - doffs), NaN where the disparity is invalid.

    `out` (HxW float32) is reused when given.
    """
    out = corrected_disparity(disp, cam, min_disparity, max_disparity, out=out)
    np.divide(np.float32(cam.fx_baseline), out, out=out)
    return out


def depth_to_points(depth: np.ndarray, cam: StereoCamera) -> np.ndarray:
    """HxWx3 float32 points in the left optical frame: X=(u-cx)Z/fx, Y=(v-cy)Z/fy, Z."""
    check_shape(depth, cam, 'depth')
    b = bounds(cam, 0.0, np.inf)
    pts = np.empty((cam.height, cam.width, 3), np.float32)
    np.multiply(depth, b.ray_x, out=pts[..., 0])
    np.multiply(depth, b.ray_y, out=pts[..., 1])
    pts[..., 2] = depth
    return pts


def color_map_disparity(disp: np.ndarray, max_disparity: float) -> np.ndarray:
    """HxWx3 uint8 RGB colour-mapped disparity (TURBO: near = red, far = blue), NaN/<=0 black."""
    import cv2

    scale = 255.0 / max(float(max_disparity), 1e-6)
    with np.errstate(invalid='ignore'):
        d8 = np.clip(np.nan_to_num(disp, nan=0.0) * scale, 0, 255).astype(np.uint8)
        invalid = ~(disp > 0)
    col = cv2.applyColorMap(d8, cv2.COLORMAP_TURBO)
    col = cv2.cvtColor(col, cv2.COLOR_BGR2RGB)
    col[invalid] = 0
    return col
