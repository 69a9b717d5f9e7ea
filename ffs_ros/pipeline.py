"""The stereo node's processing path without DDS: messages in, output messages out.

Used by the node's worker thread and by `ffs-ros bench`. Everything here is synchronous and
allocation-light: buffers (depth, disparity, point cloud) are reused between frames of the same
size. The node itself handles what needs time or topics (camera_info not yet received, stamps
going backwards); every other bad input raises InputError naming the problem and the fix.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .inference.base import StereoMatcher

DEPTH_ENCODINGS = ('32FC1', '16UC1')


@dataclass
class PipelineConfig:
    """Processing parameters (the node declares them as ROS parameters of the same names).

    min_disparity/max_disparity: valid range of the corrected disparity (px).
    min_depth/max_depth: point cloud filter (m); depth images are not range-filtered.
    depth_encoding: '32FC1' (metres, NaN invalid, REP 118) or '16UC1' (millimetres, 0 invalid).
    use_color: add packed rgb to the cloud. organized_cloud: HxW cloud with NaN points, else dense 1xN.
    """
    min_disparity: float = 0.0
    max_disparity: float = 256.0
    min_depth: float = 0.0
    max_depth: float = 100.0
    depth_encoding: str = '32FC1'
    use_color: bool = True
    organized_cloud: bool = True

    def validate(self) -> 'PipelineConfig':
        """Raise ValueError naming the bad parameter and a valid choice; return self when fine."""
        raise NotImplementedError


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


@dataclass
class Outputs:
    """Output messages (None when not wanted) and per-stage times in milliseconds
    (convert, match, depth, cloud; plus any stages the matcher reports in last_timings,
    prefixed 'match/')."""
    disparity: object | None = None        # stereo_msgs/DisparityImage
    depth: object | None = None            # sensor_msgs/Image
    depth_info: object | None = None       # sensor_msgs/CameraInfo
    cloud: object | None = None            # sensor_msgs/PointCloud2
    disparity_color: object | None = None  # sensor_msgs/Image rgb8
    timings: dict[str, float] = field(default_factory=dict)
    valid_fraction: float = 0.0


class StereoPipeline:
    """Validate a synchronized pair, run the matcher, build disparity/depth/cloud messages."""

    def __init__(self, matcher: StereoMatcher, config: PipelineConfig | None = None) -> None:
        self.matcher = matcher
        self.config = (config or PipelineConfig()).validate()
        raise NotImplementedError

    def process(self, left, right, left_info, right_info, wanted: Wanted | None = None) -> Outputs:
        """Process one synchronized pair (sensor_msgs Image x2, CameraInfo x2).

        Raises InputError for: unsupported encoding, left/right size mismatch, image vs
        camera_info size mismatch, data length != step*height or step < width*bpp, empty image,
        NaN/zero in K or P, zero or negative baseline (left/right may be swapped), big-endian
        16-bit data. All outputs carry the left image header.
        """
        raise NotImplementedError
