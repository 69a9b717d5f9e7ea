"""ROS sensor_msgs Image/CameraInfo <-> numpy, without cv_bridge.

Received images become zero-copy, read-only numpy views that honour `step` (padded rows) and
`is_bigendian`. Outgoing data is an `array.array('B')` (the type rclpy stores `uint8[]` in),
allocated per message, filled through a numpy view and attached without a copy (set_data): one
write instead of `tobytes()` plus the setter's copy. Never assign numpy arrays or memoryviews to
`msg.data` (rclpy converts them element by element: ~100x slower). Works with the messages from
a ROS distro and with the PyPI `ros-*` wheels alike: the messages are plain Python objects here.

cv_bridge is deliberately not used: the PyPI `cv-bridge` is a ROS-1-era shim that ignores
`step` and fails with numpy >= 2.3 / OpenCV 5. The few packed/mosaic encodings cameras
commonly emit (uyvy / yuyv, also under their deprecated names yuv422 / yuv422_yuy2, and
bayer_*8) are decoded with OpenCV directly instead.
"""

from __future__ import annotations

import array
import sys

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
# Camera encodings decoded to RGB with OpenCV (image_to_numpy gives their raw layout).
CAMERA_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    'uyvy': (np.dtype(np.uint8), 2),  # current ROS name (sensor_msgs image_encodings)
    'yuyv': (np.dtype(np.uint8), 2),  # current ROS name
    'yuv422': (np.dtype(np.uint8), 2),  # deprecated alias of uyvy
    'yuv422_yuy2': (np.dtype(np.uint8), 2),  # deprecated alias of yuyv
    'bayer_rggb8': (np.dtype(np.uint8), 1),
    'bayer_bggr8': (np.dtype(np.uint8), 1),
    'bayer_gbrg8': (np.dtype(np.uint8), 1),
    'bayer_grbg8': (np.dtype(np.uint8), 1),
}
# Readable/writable but not matcher inputs (outputs: depth, disparity).
OUTPUT_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    '32FC1': (np.dtype(np.float32), 1),
}
INPUT_ENCODINGS = {**ENCODINGS, **CAMERA_ENCODINGS}
_ALL = {**ENCODINGS, **CAMERA_ENCODINGS, **OUTPUT_ENCODINGS}
_HOST_BIG = sys.byteorder == 'big'


class ImageError(ValueError):
    """An Image message that cannot be converted.

    `problem` says what is wrong, `fix` what to do; str() gives both.
    """

    def __init__(self, problem: str, fix: str = '') -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f'{problem}; fix: {fix}' if fix else problem)


def _layout(encoding: str) -> tuple[np.dtype, int]:
    try:
        return _ALL[encoding]
    except KeyError:
        raise ImageError(
            f'unsupported image encoding {encoding!r}',
            f'publish one of {", ".join(INPUT_ENCODINGS)} (e.g. convert in the camera driver or '
            'with image_proc)',
        ) from None


def bytes_per_pixel(encoding: str) -> int:
    """Bytes per pixel of a supported encoding (raises ImageError for others)."""
    dtype, channels = _layout(encoding)
    return dtype.itemsize * channels


def check_image(msg) -> tuple[np.dtype, int]:
    """Validate an Image's encoding, size, step, data length and byte order.

    The pixels are not touched. Returns (dtype, channels); raises ImageError naming the problem and
    the fix.
    """
    dtype, channels = _layout(msg.encoding)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h == 0 or w == 0:
        raise ImageError(
            f'empty image ({w}x{h}, encoding {msg.encoding})',
            'check that the camera driver publishes frames with pixels',
        )
    bpp = dtype.itemsize * channels
    if step < w * bpp:
        raise ImageError(
            f'image step {step} is smaller than width*bytes_per_pixel = {w}*{bpp} = {w * bpp} '
            f'({msg.encoding})',
            f'set step to the row length in bytes (>= {w * bpp})',
        )
    n = len(msg.data)
    if n != step * h:
        raise ImageError(
            f'image data has {n} bytes but step*height = {step}*{h} = {step * h} '
            f'({msg.encoding} {w}x{h})',
            'the publisher must fill data with height rows '
            'of step bytes (check width/height/step against the buffer)',
        )
    if dtype.itemsize > 1 and bool(msg.is_bigendian) != _HOST_BIG:
        order = 'big' if msg.is_bigendian else 'little'
        raise ImageError(
            f'{order}-endian {8 * dtype.itemsize}-bit image data ({msg.encoding}, '
            f'is_bigendian={int(bool(msg.is_bigendian))}) is not supported on this '
            f'{sys.byteorder}-endian host',
            f'publish {sys.byteorder}-endian data '
            f'(is_bigendian={int(_HOST_BIG)}), e.g. byte-swap in the driver',
        )
    return dtype, channels


def image_to_numpy(msg) -> np.ndarray:
    """Zero-copy read-only view of `msg.data` as HxW (1 channel) or HxWxC.

    Honours `step` (rows may be padded) and `is_bigendian` (8-bit data: flag irrelevant;
    16/32-bit data in the other byte order: ImageError with the fix). Supports ENCODINGS,
    CAMERA_ENCODINGS (raw layout: uyvy/yuyv HxWx2, bayer HxW) and 32FC1. Raises ImageError for an
    unsupported encoding, an empty image, data length != step*height, or step < width*bpp.
    """
    dtype, channels = check_image(msg)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row = w * channels * dtype.itemsize
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if step == row:
        arr = buf.view(dtype) if dtype.itemsize > 1 else buf
    else:
        # padded rows: (h, step) view, crop each row to its pixel bytes; still no copy
        arr = buf.reshape(h, step)[:,:row]
        if dtype.itemsize > 1:
            arr = arr.view(dtype)
    arr = arr.reshape((h, w) if channels == 1 else (h, w, channels))
    arr.flags.writeable = False
    return arr


def image_to_rgb(msg) -> np.ndarray:
    """HxWx3 uint8 RGB for matchers.

    rgb8 is returned as the zero-copy view (non-contiguous when rows are padded); 8UC3 is read
    as BGR (OpenCV's convention, where such images come from); alpha is dropped; grey is
    replicated to 3 channels; 16-bit is scaled by >> 8; uyvy / yuyv (and their deprecated aliases
    yuv422 / yuv422_yuy2) and bayer_* are decoded with OpenCV. Copies only when the layout
    requires it.
    """
    import cv2

    enc = msg.encoding
    if enc not in INPUT_ENCODINGS:
        _layout(enc)  # raises the unsupported-encoding error
        raise ImageError(
            f'{enc} images cannot be used for matching',
            f'publish one of {", ".join(INPUT_ENCODINGS)}',
        )
    a = image_to_numpy(msg)
    if enc == 'rgb8':
        return a
    if enc in ('bgr8', '8UC3'):
        return cv2.cvtColor(a, cv2.COLOR_BGR2RGB)
    if enc == 'rgba8':
        return cv2.cvtColor(a, cv2.COLOR_RGBA2RGB)
    if enc == 'bgra8':
        return cv2.cvtColor(a, cv2.COLOR_BGRA2RGB)
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    if enc in _CV_CAMERA_CODES:
        return cv2.cvtColor(np.ascontiguousarray(a), getattr(cv2, _CV_CAMERA_CODES[enc]))
    return cv2.cvtColor(a, cv2.COLOR_GRAY2RGB)


# ROS camera encodings -> OpenCV conversion to RGB. OpenCV names Bayer patterns by the
# second row's first two pixels, so ROS bayer_rggb8 is OpenCV's BayerBG (as cv_bridge maps it).
_CV_CAMERA_CODES = {
    'uyvy': 'COLOR_YUV2RGB_UYVY',
    'yuyv': 'COLOR_YUV2RGB_YUYV',
    'yuv422': 'COLOR_YUV2RGB_UYVY',
    'yuv422_yuy2': 'COLOR_YUV2RGB_YUYV',
    'bayer_rggb8': 'COLOR_BayerBG2RGB',
    'bayer_bggr8': 'COLOR_BayerRG2RGB',
    'bayer_gbrg8': 'COLOR_BayerGR2RGB',
    'bayer_grbg8': 'COLOR_BayerGB2RGB',
}


def new_data(nbytes: int) -> array.array:
    """Return a zeroed array.array('B') of `nbytes` for a message's uint8[] data.

    Fast: ~0.05 ms for 5 MB. Fill it through `np.frombuffer(buf, dtype)` (a writable view) and
    attach it with set_data().
    """
    return array.array('B', b'\0') * int(nbytes)


def set_data(msg, buf: array.array) -> None:
    """Attach an array.array('B') as `msg.data` without a copy.

    The generated setter copies (`array.array('B', value)`) unless ROS_PYTHON_CHECK_FIELDS=1, and
    that copy costs ~0.3 ms per 5 MB cloud. rosidl_generator_py stores uint8[] in the `_data` slot
    as an array.array('B') on every distro (Foxy .. Kilted), so we store it there directly; the C
    conversion at publish time reads `msg.data` through the buffer protocol either way. Falls back
    to the public setter for anything else.
    """
    if (
        type(buf) is array.array
        and buf.typecode == 'B'
        and '_data' in getattr(type(msg), '__slots__', ())
    ):
        msg._data = buf
    else:
        msg.data = buf


def new_image(height: int, width: int, encoding: str, header=None):
    """(Image, view): an Image with fresh data and a writable HxW / HxWxC numpy view of it.

    Write the pixels into `view` (e.g. with a ufunc's `out=`) instead of building an array and
    copying it: the message is ready as soon as the view is filled.
    """
    from sensor_msgs.msg import Image

    dtype, channels = _layout(encoding)
    h, w = int(height), int(width)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = h, w
    msg.encoding = encoding
    msg.is_bigendian = _HOST_BIG and dtype.itemsize > 1
    msg.step = w * channels * dtype.itemsize
    data = new_data(msg.step * h)
    set_data(msg, data)
    view = np.frombuffer(data, dtype=dtype).reshape((h, w) if channels == 1 else (h, w, channels))
    return msg, view


def numpy_to_image(arr: np.ndarray, encoding: str, header=None):
    """sensor_msgs/Image from a HxW or HxWxC array whose dtype/channels match `encoding`.

    One copy of the pixels into the message's own array.array data; the step is the unpadded
    row length and is_bigendian follows the host. Raises ImageError when the array does not
    fit the encoding.
    """
    dtype, channels = _layout(encoding)
    arr = np.asarray(arr)
    shape_ok = (arr.ndim == 2 and channels == 1) or (arr.ndim == 3 and arr.shape[2] == channels)
    if not shape_ok or arr.dtype.base.kind != dtype.kind or arr.dtype.itemsize != dtype.itemsize:
        raise ImageError(
            f'array of shape {arr.shape} dtype {arr.dtype} does not fit encoding {encoding} '
            f'({channels} channel(s) of {dtype})',
            'convert the array or pick the matching encoding',
        )
    msg, view = new_image(arr.shape[0], arr.shape[1], encoding, header)
    np.copyto(view, arr, casting='equiv')  # byte-swaps non-native input
    return msg


def make_camera_infos(
    width: int,
    height: int,
    fx: float,
    baseline: float,
    cx: float | None = None,
    cy: float | None = None,
    fy: float | None = None,
    frame_id: str = 'left_optical',
    cx_right: float | None = None,
):
    """Return a rectified (CameraInfo left, CameraInfo right) pair.

    plumb_bob with zero distortion, K, R = I, P; P_right[0,3] = -fx*baseline (the ROS convention
    for the right camera).

    cx/cy default to the image centre ((w-1)/2, (h-1)/2), fy to fx, cx_right to cx. The right
    frame_id is frame_id with 'left' replaced by 'right'.
    """
    from sensor_msgs.msg import CameraInfo

    cx = (width - 1) / 2.0 if cx is None else float(cx)
    cy = (height - 1) / 2.0 if cy is None else float(cy)
    fy = float(fx) if fy is None else float(fy)
    cx_right = cx if cx_right is None else float(cx_right)
    infos = []
    for side_cx, tx, side in (
        (cx, 0.0, 'left'),
        (cx_right, -float(fx) * float(baseline), 'right'),
    ):
        info = CameraInfo()
        info.header.frame_id = frame_id.replace('left', 'right') if side == 'right' else frame_id
        info.width, info.height = int(width), int(height)
        info.distortion_model = 'plumb_bob'
        info.d = [0.0] * 5
        info.k = [float(fx), 0.0, side_cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [float(fx), 0.0, side_cx, tx, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        infos.append(info)
    return infos[0], infos[1]
