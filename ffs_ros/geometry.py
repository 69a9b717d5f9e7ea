"""Stereo geometry in plain numpy (no ROS): disparity -> depth -> points -> cloud buffers.

Conventions (ROS, REP 103/118): rectified pair, left optical frame (x right, y down, z forward),
depth in metres along z, invalid = NaN. The raw disparity from a matcher is d = x_left - x_right;
with a principal-point offset doffs = cx_left - cx_right the corrected disparity is d - doffs and
Z = fx * B / (d - doffs).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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

    @classmethod
    def from_projection(cls, p_left, p_right, width: int, height: int) -> 'StereoCamera':
        """From the 3x4 (or flat 12) rectified projection matrices of the left and right camera.

        baseline = -P_right[0,3] / P_right[0,0]. Raises ValueError for NaN/inf or zero fx/fy,
        and for a zero or negative baseline (left and right may be swapped).
        """
        raise NotImplementedError


def valid_disparity_mask(disp: np.ndarray, cam: StereoCamera, min_disparity: float,
                         max_disparity: float) -> np.ndarray:
    """Boolean HxW: True where the raw disparity is usable.

    Invalid: NaN; corrected disparity d - doffs <= 0 or outside [min_disparity, max_disparity]
    (the range applies to the corrected disparity, as in stereo_msgs/DisparityImage); no match in
    the right image (x - d < 0 or x - d > width - 1).
    """
    raise NotImplementedError


def corrected_disparity(disp: np.ndarray, cam: StereoCamera, min_disparity: float,
                        max_disparity: float, out: np.ndarray | None = None) -> np.ndarray:
    """float32 d - doffs (the DisparityImage convention) with NaN where invalid."""
    raise NotImplementedError


def disparity_to_depth(disp: np.ndarray, cam: StereoCamera, min_disparity: float = 0.0,
                       max_disparity: float = np.inf, out: np.ndarray | None = None) -> np.ndarray:
    """float32 depth in metres, Z = fx*B / (d - doffs), NaN where the disparity is invalid."""
    raise NotImplementedError


def depth_to_points(depth: np.ndarray, cam: StereoCamera) -> np.ndarray:
    """HxWx3 float32 points in the left optical frame: X=(u-cx)Z/fx, Y=(v-cy)Z/fy, Z."""
    raise NotImplementedError


class CloudBuffer:
    """Reusable structured array for PointCloud2 data: x, y, z float32 (+ rgb float32 holding the
    packed uint32 0x00RRGGBB, as RViz and PCL expect).

    `fields` is a list of (name, offset, datatype, count) with PointField datatypes
    (FLOAT32 = 7); `point_step` the bytes per point. Buffers are kept between frames and only
    reallocated when the image size changes.
    """

    FLOAT32 = 7

    def __init__(self, use_color: bool = True) -> None:
        self.use_color = use_color
        raise NotImplementedError

    @property
    def fields(self) -> list[tuple[str, int, int, int]]:
        raise NotImplementedError

    @property
    def point_step(self) -> int:
        raise NotImplementedError

    def fill(self, depth: np.ndarray, cam: StereoCamera, rgb: np.ndarray | None = None,
             organized: bool = True, min_depth: float = 0.0, max_depth: float = np.inf
             ) -> tuple[bytes, int, int]:
        """Cloud data for `depth` (HxW metres, NaN invalid): returns (data, height, width).

        Points with NaN depth or depth outside [min_depth, max_depth] are NaN (organized, HxW)
        or dropped (dense, 1xN). `rgb` (HxWx3 uint8 RGB) is required when use_color.
        """
        raise NotImplementedError


def color_map_disparity(disp: np.ndarray, max_disparity: float) -> np.ndarray:
    """HxWx3 uint8 RGB colour-mapped disparity (near = warm), invalid/NaN black."""
    raise NotImplementedError
