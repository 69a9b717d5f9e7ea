"""ROS sensor_msgs Image/CameraInfo <-> numpy, without cv_bridge.

Received images become zero-copy numpy views that honour `step` (padded rows) and
`is_bigendian`; outgoing images are built with `arr.tobytes()` (assigning a numpy array or
memoryview to `msg.data` is ~100x slower). Works with the messages from a ROS distro and with
the PyPI `ros-*` wheels alike: the messages are plain Python objects here.
"""
from __future__ import annotations

import numpy as np

# encoding -> (dtype, channels). Inputs the node accepts natively (matchers need these).
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    'rgb8': (np.dtype(np.uint8), 3),
    'bgr8': (np.dtype(np.uint8), 3),
    'rgba8': (np.dtype(np.uint8), 4),
    'bgra8': (np.dtype(np.uint8), 4),
    'mono8': (np.dtype(np.uint8), 1),
    'mono16': (np.dtype(np.uint16), 1),
    '8UC1': (np.dtype(np.uint8), 1),
    '8UC3': (np.dtype(np.uint8), 3),
    '16UC1': (np.dtype(np.uint16), 1),
}
# Additionally readable/writable (outputs: depth, disparity; not accepted as matcher input).
OUTPUT_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    '32FC1': (np.dtype(np.float32), 1),
}


class ImageError(ValueError):
    """An Image message that cannot be converted; the message names the problem and the fix."""


def bytes_per_pixel(encoding: str) -> int:
    """Bytes per pixel of a supported encoding (raises ImageError for others)."""
    raise NotImplementedError


def image_to_numpy(msg) -> np.ndarray:
    """Zero-copy read-only view of `msg.data` as HxW (1 channel) or HxWxC.

    Honours `step` (rows may be padded) and `is_bigendian` (8-bit data: flag irrelevant;
    big-endian 16-bit data: ImageError with the fix). Supports ENCODINGS and 32FC1; other
    encodings (yuv422, bayer_*) go through cv_bridge when it imports and works, else
    ImageError. Raises ImageError for an empty image, data length != step*height, or
    step < width*bytes_per_pixel.
    """
    raise NotImplementedError


def image_to_rgb(msg) -> np.ndarray:
    """HxWx3 uint8 RGB for matchers: rgb8/8UC3 as a view, bgr/alpha reordered, grey replicated,
    16-bit scaled by >> 8. Copies only when the layout requires it."""
    raise NotImplementedError


def numpy_to_image(arr: np.ndarray, encoding: str, header=None):
    """sensor_msgs/Image from a HxW or HxWxC array (dtype must match `encoding`), data via tobytes()."""
    raise NotImplementedError


def make_camera_infos(width: int, height: int, fx: float, baseline: float, cx: float | None = None,
                      cy: float | None = None, fy: float | None = None, frame_id: str = 'left_optical',
                      cx_right: float | None = None):
    """A rectified (CameraInfo left, CameraInfo right) pair: K, R=I, P with P_right[0,3] = -fx*baseline.

    cx/cy default to the image centre, fy to fx, cx_right to cx (no principal-point offset).
    """
    raise NotImplementedError
