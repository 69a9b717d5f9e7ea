"""The stereo node's processing path without DDS: messages in, output messages out.

Used by the node's worker thread and by `ffs-ros bench`. Everything here is synchronous and
allocation-light: buffers (corrected disparity, depth, point cloud) are reused between frames
of the same size, so one StereoPipeline belongs to one worker thread (it is not thread-safe).
The node itself handles what needs time or topics (camera_info not yet received, stamps going
backwards); every other bad input raises InputError naming the problem and the fix.

Output conventions (see shared/docs/ros-stereo-conventions.md):
- disparity: stereo_msgs/DisparityImage, 32FC1 d = x_l - x_r - (cx_l - cx_r), NaN invalid;
  f = P_left[0,0], t = -P_right[0,3]/P_right[0,0]; min/max_disparity from the config;
  delta_d = the matcher's `info.delta_d` (SGBM's exact 1/16 px step; learned matchers regress
  continuous
  values, 1/16 is a nominal resolution); valid_window = the matcher's `info.valid_window` (x, y,
  width,
  height in output-image pixels) when it reports one for this image size, else the full image.
- depth/image_rect: 32FC1 metres NaN invalid (REP 118), or 16UC1 millimetres 0 invalid
  (depths that do not fit 1..65535 mm are 0); not range-filtered (min/max_depth filter the cloud).
- points2: x, y, z float32 (+ packed rgb), organized HxW with NaN points or dense 1xN, filtered
  to [min_depth, max_depth]; is_dense is True only when no point is NaN.
- confidence: 32FC1 in [0, 1] (how sure each disparity is; NaN where the disparity is invalid),
  when the matcher gives one. confidence_threshold > 0 masks disparity, depth and cloud pixels
  whose confidence is below it (they become invalid: NaN / 0 mm / no point).
All outputs carry the left image header (stamp, left optical frame).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
import math
import os
import platform
import sys
import time

import numpy as np

from .convert import (
    INPUT_ENCODINGS,
    ImageError,
    check_image,
    image_to_rgb,
    new_image,
    numpy_to_image,
)
from .geometry import StereoCamera, _corrected_disparity, color_map_disparity
from .inference.base import DEFAULT_DELTA_D, StereoMatcher
from .messages import CloudBuffer, copy_camera_info, depth_image_mm, disparity_image, point_cloud

DEPTH_ENCODINGS = ('32FC1', '16UC1')


@dataclass
class PipelineConfig:
    """Processing parameters (the node declares them as ROS parameters of the same names).

    min_disparity/max_disparity: valid range of the corrected disparity (px).
    min_depth/max_depth: point cloud filter (m); the depth image is not range-filtered.
    depth_encoding: '32FC1' (metres, NaN invalid, REP 118) or '16UC1' (millimetres, 0 invalid).
    use_color: add packed rgb to the cloud. organized_cloud: HxW cloud with NaN points, else dense
    1xN.
    """

    min_disparity: float = 0.0
    max_disparity: float = 256.0
    min_depth: float = 0.0
    max_depth: float = 100.0
    depth_encoding: str = '32FC1'
    use_color: bool = True
    organized_cloud: bool = True
    max_input_pixels: int = 4096 * 4096
    confidence_threshold: float = 0.0  # 0 = off; else drop pixels whose confidence is below

    def validate(self) -> 'PipelineConfig':
        """Raise ValueError naming the bad parameter and a valid choice; return self when fine."""

        def num(name: str, allow_inf: bool = False) -> float:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f'{name} must be a number, got {v!r}')
            if math.isnan(v) or (math.isinf(v) and not allow_inf):
                raise ValueError(f'{name} must be a finite number, got {v!r}')
            return float(v)

        min_d, max_d = num('min_disparity'), num('max_disparity', allow_inf=True)
        min_z, max_z = num('min_depth'), num('max_depth', allow_inf=True)
        if min_d < 0:
            raise ValueError(
                f'min_disparity must be >= 0 (disparities <= 0 are invalid anyway), got {min_d:g}'
            )
        if max_d <= min_d:
            raise ValueError(
                f'max_disparity ({max_d:g}) must be greater than min_disparity ({min_d:g})'
            )
        if min_z < 0:
            raise ValueError(f'min_depth must be >= 0 m, got {min_z:g}')
        if min_z >= max_z:
            raise ValueError(
                f'min_depth ({min_z:g} m) must be smaller than max_depth ({max_z:g} m)'
            )
        if self.depth_encoding not in DEPTH_ENCODINGS:
            raise ValueError(
                f'depth_encoding must be one of {", ".join(DEPTH_ENCODINGS)} '
                f'(32FC1 metres or 16UC1 millimetres), got {self.depth_encoding!r}'
            )
        if (
            isinstance(self.max_input_pixels, bool)
            or not isinstance(self.max_input_pixels, int)
            or self.max_input_pixels < 1
        ):
            raise ValueError(
                f'max_input_pixels must be a positive integer, got {self.max_input_pixels!r}'
            )
        thr = num('confidence_threshold')
        if not 0.0 <= thr < 1.0:
            raise ValueError(
                f'confidence_threshold must be in [0, 1) (0 = off; e.g. 0.5), got {thr:g}'
            )
        for name in ('use_color', 'organized_cloud'):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f'{name} must be true or false, got {getattr(self, name)!r}')
        return self


class InputError(ValueError):
    """A bad input pair: `problem` says what is wrong, `fix` what to do; str() gives both."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f'{problem}; fix: {fix}')


@dataclass
class Wanted:
    """Which outputs to compute (the node sets these from subscriber counts)."""

    disparity: bool = True
    depth: bool = True
    cloud: bool = True
    color: bool = False
    confidence: bool = False


@dataclass
class Outputs:
    """Output messages (None when not wanted) and per-stage times in milliseconds.

    Stages: convert, match, depth (disparity correction, depth and their messages), cloud, color
    (when wanted), plus any sub-stages the matcher reports in last_timings, as 'match/<name>'.
    valid_fraction: share of pixels with a valid disparity (after the confidence mask).
    mean_confidence: mean confidence of the matcher's valid pixels (None: the matcher gives
    none). masked_fraction: share of those pixels removed by confidence_threshold.
    """

    disparity: object | None = None  # stereo_msgs/DisparityImage
    depth: object | None = None  # sensor_msgs/Image
    depth_info: object | None = None  # sensor_msgs/CameraInfo
    cloud: object | None = None  # sensor_msgs/PointCloud2
    disparity_color: object | None = None  # sensor_msgs/Image rgb8
    confidence: object | None = None  # sensor_msgs/Image 32FC1
    timings: dict[str, float] = field(default_factory=dict)
    valid_fraction: float = 0.0
    mean_confidence: float | None = None
    masked_fraction: float = 0.0


def _vec(values, n: int, what: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).ravel()
    if a.size != n:
        raise InputError(
            f'{what} has {a.size} values instead of {n}',
            'publish a complete sensor_msgs/CameraInfo',
        )
    return a


def camera_from_infos(left_info, right_info, width: int, height: int) -> StereoCamera:
    """Return a validated StereoCamera from a rectified CameraInfo pair.

    Raises InputError for NaN/zero K or P and for a zero or negative baseline.
    """
    for side, info in (('left', left_info), ('right', right_info)):
        k = _vec(info.k, 9, f'{side} camera_info K')
        p = _vec(info.p, 12, f'{side} camera_info P')
        for name, m, (fx, fy) in (('K', k, (k[0], k[4])), ('P', p, (p[0], p[5]))):
            if not np.all(np.isfinite(m)):
                raise InputError(
                    f'{side} camera_info {name} contains NaN/inf ({m.tolist()})',
                    'calibrate the camera and publish rectified camera_info',
                )
            if not (fx > 0 and fy > 0):
                raise InputError(
                    f'{side} camera_info {name} has fx={fx:g}, fy={fy:g} (must be > 0; '
                    'all zeros means an uncalibrated camera)',
                    'calibrate the camera and publish rectified camera_info',
                )
    try:
        return StereoCamera.from_projection(left_info.p, right_info.p, width, height)
    except ValueError as e:
        msg = str(e)
        if 'baseline' in msg:
            raise InputError(
                msg.split(';')[0] + ' (left and right may be swapped)',
                'check that left/* topics carry the left camera and right/* the right one, '
                'and that the right P has Tx = -fx*baseline (P_right[0,3] < 0)',
            ) from None
        raise InputError(msg, 'publish rectified camera_info (stereo calibration)') from None


class StereoPipeline:
    """Validate a synchronized pair, run the matcher, build disparity/depth/cloud messages."""

    def __init__(self, matcher: StereoMatcher, config: PipelineConfig | None = None) -> None:
        self.matcher = matcher
        self._config = self._checked(config or PipelineConfig())
        self._cloud = CloudBuffer(self._config.use_color)
        self._fields = None
        self._disp: np.ndarray | None = None
        self._depth: np.ndarray | None = None
        self._cam_key = None
        self._size = None
        self._trim_in = (
            0  # frames until freed buffers of the previous image size go back to the OS
        )
        self._cam: StereoCamera | None = None

    @property
    def config(self) -> PipelineConfig:
        return self._config

    @config.setter
    def config(self, config: PipelineConfig) -> None:
        """Replace the configuration (validated); buffers follow on the next frame."""
        self._config = self._checked(config)
        if config.use_color != self._cloud.use_color:
            self._cloud = CloudBuffer(config.use_color)
            self._fields = None

    # ---- validation -------------------------------------------------------------------
    def _checked(self, config: PipelineConfig) -> PipelineConfig:
        config.validate()
        if config.confidence_threshold > 0 and not self.matcher.info.confidence:
            raise ValueError(
                f'confidence_threshold {config.confidence_threshold:g} needs a confidence, but '
                f'backend {self.matcher.info.backend} gives none; set confidence_threshold to 0 '
                "or use a model backend (confidence_source 'auto')"
            )
        return config

    @staticmethod
    def _check_image(side: str, msg) -> None:
        if msg.encoding not in INPUT_ENCODINGS:
            raise InputError(
                f'{side} image has unsupported encoding {msg.encoding!r}',
                f'publish one of {", ".join(INPUT_ENCODINGS)} (convert in the driver or with '
                'image_proc)',
            )
        try:
            check_image(msg)
        except ImageError as e:
            raise InputError(f'{side} image: {e.problem}', e.fix) from None

    def _camera(self, left, right, left_info, right_info) -> StereoCamera:
        self._check_image('left', left)
        self._check_image('right', right)
        h, w = int(left.height), int(left.width)
        if h * w > self._config.max_input_pixels:
            raise InputError(
                f'image is {w}x{h} = {h * w} pixels, more than max_input_pixels '
                f'({self._config.max_input_pixels})',
                'publish smaller images (e.g. image_proc resize; networks run at <= 1000 px width '
                'anyway) or raise max_input_pixels (memory grows with the image size)',
            )
        if (int(right.height), int(right.width)) != (h, w):
            raise InputError(
                f'left image is {w}x{h} but right image is {right.width}x{right.height}',
                'publish a rectified pair of equal size (both from the same rectification)',
            )
        for side, info in (('left', left_info), ('right', right_info)):
            if (int(info.height), int(info.width)) != (h, w):
                raise InputError(
                    f'{side} camera_info is {info.width}x{info.height} but the images are {w}x{h}',
                    'publish camera_info that matches the rectified images (rescale K and P '
                    'when resizing images, or use the camera_info of the *_rect topics)',
                )
        key = (
            w,
            h,
            np.asarray(left_info.k, np.float64).tobytes(),
            np.asarray(left_info.p, np.float64).tobytes(),
            np.asarray(right_info.k, np.float64).tobytes(),
            np.asarray(right_info.p, np.float64).tobytes(),
        )
        if (w, h) != self._size:
            if self._size is not None:
                self._trim_in = (
                    2  # the previous size's buffers (and its last messages) are free by then
                )
            self._size = (w, h)
        if key != self._cam_key:
            self._cam = camera_from_infos(left_info, right_info, w, h)
            self._cam_key = key
        return self._cam

    # ---- processing ------------------------------------------------------------------
    def process(self, left, right, left_info, right_info, wanted: Wanted | None = None) -> Outputs:
        """Process one synchronized pair (sensor_msgs Image x2, CameraInfo x2).

        Raises InputError for: unsupported encoding, left/right size mismatch, image vs
        camera_info size mismatch, data length != step*height or step < width*bpp, empty image,
        NaN/zero in K or P, zero or negative baseline (left/right may be swapped), big-endian
        16-bit data, and a pair the matcher refuses (a ValueError with `problem` and `fix`, e.g.
        sgbm's ImageTooNarrow). All outputs carry the left image header.
        """
        wanted = wanted or Wanted()
        cfg = self._config
        out = Outputs()
        tm = out.timings
        t0 = time.perf_counter()
        cam = self._camera(left, right, left_info, right_info)
        # contiguous for every backend (a copy only for padded rgb8 rows); read-only views
        rgb_l = np.ascontiguousarray(image_to_rgb(left))
        rgb_r = np.ascontiguousarray(image_to_rgb(right))
        t1 = time.perf_counter()
        tm['convert'] = (t1 - t0) * 1e3

        try:
            result = self.matcher.match_full(rgb_l, rgb_r)
        except ValueError as e:
            # a matcher refusing this input (e.g. sgbm: image narrower than its disparity range)
            # says so with `problem` and `fix`, like InputError: that is bad input, not a failure
            if getattr(e, 'problem', None) and getattr(e, 'fix', None):
                raise InputError(e.problem, e.fix) from None
            raise
        t2 = time.perf_counter()
        tm['match'] = (t2 - t1) * 1e3
        for name, ms in (getattr(self.matcher, 'last_timings', None) or {}).items():
            if name != 'match':
                tm[f'match/{name}'] = float(ms)
        h, w = cam.height, cam.width
        disp, conf = result.disparity, result.confidence
        if disp.shape != (h, w):
            raise RuntimeError(
                f'matcher {self.matcher.info.backend} returned a {disp.shape} disparity for a '
                f'{w}x{h} pair; backends must return HxW in left-image pixels'
            )

        if self._disp is None or self._disp.shape != (h, w):
            self._disp = np.empty((h, w), np.float32)
            self._depth = np.empty((h, w), np.float32)
        header = left.header
        if conf is not None:
            disp = self._apply_confidence(disp, conf, out)
            if wanted.confidence:
                out.confidence = numpy_to_image(conf, '32FC1', header)
        # disparity and depth are written straight into the messages' data when wanted
        dc = self._disp
        if wanted.disparity:
            out.disparity, dc = self._disparity_msg(cam, header)
        n_valid = _corrected_disparity(disp, cam, cfg.min_disparity, cfg.max_disparity, dc)[1]
        out.valid_fraction = n_valid / float(h * w)
        depth = None
        if wanted.depth and cfg.depth_encoding == '32FC1':
            out.depth, depth = new_image(h, w, '32FC1', header)
        elif wanted.depth or wanted.cloud:
            depth = self._depth
        if depth is not None:
            np.divide(np.float32(cam.fx_baseline), dc, out=depth)
        if wanted.depth:
            if out.depth is None:
                out.depth = depth_image_mm(depth, header)
            out.depth_info = copy_camera_info(left_info, header)
        t3 = time.perf_counter()
        tm['depth'] = (t3 - t2) * 1e3

        if wanted.cloud:
            out.cloud = self._cloud_msg(depth, cam, rgb_l, header)
            t4 = time.perf_counter()
            tm['cloud'] = (t4 - t3) * 1e3
            t3 = t4
        if wanted.color:
            col = color_map_disparity(dc, cfg.max_disparity)
            out.disparity_color = numpy_to_image(col, 'rgb8', header)
            tm['color'] = (time.perf_counter() - t3) * 1e3
        if self._trim_in:
            self._trim_in -= 1
            if not self._trim_in:
                release_free_memory()
        return out

    def _apply_confidence(self, disp, conf, out: Outputs):
        """Report the confidence statistics and mask pixels below the threshold -> disparity."""
        valid = np.isfinite(disp)
        n = int(np.count_nonzero(valid))
        out.mean_confidence = float(np.mean(conf, where=valid)) if n else float('nan')
        thr = self._config.confidence_threshold
        if thr <= 0 or not n:
            return disp
        low = valid & ~(conf >= thr)
        out.masked_fraction = int(np.count_nonzero(low)) / n
        if not disp.flags.writeable:
            disp = disp.copy()
        disp[low] = np.nan
        return disp

    def searched_max_disparity(self) -> float:
        """Return the largest disparity reported (max_disparity, or what the matcher searches)."""
        searched = self.matcher.info.max_disparity
        cap = self._config.max_disparity
        return float(min(cap, searched)) if searched else float(cap)

    def nearest_depth(self) -> tuple[float, float] | None:
        """Return (largest disparity px, nearest measurable depth fx * B / it m), last camera."""
        if self._cam is None:
            return None
        d = self.searched_max_disparity()
        return d, float(self._cam.fx * self._cam.baseline / d)

    def _disparity_msg(self, cam: StereoCamera, header):
        """(DisparityImage, writable HxW view of its image data)."""
        info = self.matcher.info
        return disparity_image(
            cam,
            header,
            self._config.min_disparity,
            self.searched_max_disparity(),
            info.delta_d or DEFAULT_DELTA_D,
            info.valid_window,
        )

    def _cloud_msg(self, depth: np.ndarray, cam: StereoCamera, rgb: np.ndarray, header):
        cfg = self._config
        data, h, w = self._cloud.fill(
            depth,
            cam,
            rgb if cfg.use_color else None,
            cfg.organized_cloud,
            cfg.min_depth,
            cfg.max_depth,
        )
        return point_cloud(self._cloud, data, h, w, header)


def tune_allocator() -> bool:
    """Keep large freed blocks in the process heap (glibc only), once per process.

    Called once at start-up by the programs that run the pipeline (stereo_node's main, ffs-ros
    bench, demo and bag), not by the pipeline itself: a library should not change process-wide
    allocator settings.

    Every frame creates multi-megabyte message buffers. With glibc's defaults each one is a fresh
    mmap whose pages fault in again (measured: cloud + serialisation 3.5+8 ms instead of
    1.7+1.4 ms at 640x480). Raising the mmap and trim thresholds lets malloc reuse the freed
    blocks; RSS then holds about one frame's worth of buffers more. Set FFS_ROS_NO_MALLOC_TUNING=1
    to leave the allocator alone. Returns True when the thresholds were set.
    """
    global _TUNED
    if _TUNED is not None:
        return _TUNED
    _TUNED = False
    if os.environ.get('FFS_ROS_NO_MALLOC_TUNING') or not sys.platform.startswith('linux'):
        return False
    if platform.libc_ver()[0] != 'glibc':
        return False
    try:
        libc = ctypes.CDLL('libc.so.6')
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)  # glibc's maximum
        ok &= libc.mallopt(m_trim_threshold, 256 * 1024 * 1024)
        _TUNED = bool(ok)
    except (OSError, AttributeError):
        pass
    return _TUNED


_TUNED: bool | None = None


def release_free_memory() -> bool:
    """Give freed heap memory back to the OS (glibc malloc_trim; a few ms).

    Called once after the image size changes: one huge frame would otherwise keep the process
    hundreds of MB larger for the rest of the run.
    """
    if not sys.platform.startswith('linux') or platform.libc_ver()[0] != 'glibc':
        return False
    try:
        return bool(ctypes.CDLL('libc.so.6').malloc_trim(0))
    except (OSError, AttributeError):
        return False
