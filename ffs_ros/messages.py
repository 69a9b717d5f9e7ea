"""Building the node's output messages (ROS types) from numpy results.

The inverse direction is convert.py.

* :func:`disparity_image` -- stereo_msgs/DisparityImage with f, t, range, delta_d and the valid
  window;
* :func:`depth_image_mm` -- 16UC1 millimetre depth (0 invalid);
* :class:`CloudBuffer` + :func:`point_cloud` -- sensor_msgs/PointCloud2 (x, y, z float32 + packed
  rgb), its PointField layout, and the data written straight into rclpy's storage type
  (array.array) with reused buffers;
* :func:`copy_camera_info` -- a CameraInfo with another header;
* :func:`cloud_points` -- the finite points (and colours) of a PointCloud2, e.g. for a PLY file.

The geometry (rays, depth, bounds) is ffs_ros.geometry's, pure numpy.
"""

from __future__ import annotations

import array
import sys

import numpy as np

from .convert import new_image, set_data
from .geometry import StereoCamera, bounds, check_shape, nan_outside


def disparity_image(
    cam: StereoCamera,
    header,
    min_disparity: float,
    max_disparity: float,
    delta_d: float,
    window=None,
):
    """(DisparityImage, writable HxW float32 view of its image data) for `cam`'s image size."""
    from stereo_msgs.msg import DisparityImage

    msg = DisparityImage()
    msg.header = header
    msg.image, view = new_image(cam.height, cam.width, '32FC1', header)
    msg.f = float(cam.fx)
    msg.t = float(cam.baseline)
    msg.min_disparity = float(min_disparity)
    msg.max_disparity = float(max_disparity)
    msg.delta_d = float(delta_d)
    x, y, vw, vh = valid_window(window, cam.width, cam.height)
    msg.valid_window.x_offset, msg.valid_window.y_offset = int(x), int(y)
    msg.valid_window.width, msg.valid_window.height = int(vw), int(vh)
    return msg, view


def point_cloud(cloud: 'CloudBuffer', data, height: int, width: int, header):
    """PointCloud2 around `data` from :meth:`CloudBuffer.fill` (no copy of the buffer)."""
    from sensor_msgs.msg import PointCloud2, PointField

    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = height, width
    msg.fields = [PointField(name=n, offset=o, datatype=t, count=c) for n, o, t, c in cloud.fields]
    msg.is_bigendian = CloudBuffer.is_bigendian
    msg.point_step = cloud.point_step
    msg.row_step = msg.point_step * width
    msg.is_dense = cloud.valid_count == height * width
    set_data(msg, data)  # no copy of the multi-megabyte buffer
    return msg


def cloud_points(cloud) -> tuple[np.ndarray, np.ndarray]:
    """Return (N x 3 float32 xyz, N x 3 uint8 rgb) of the finite points of a PointCloud2.

    The colours are grey when the cloud has no rgb.
    """
    off = {f.name: f.offset for f in cloud.fields}
    n = cloud.width * cloud.height
    raw = np.frombuffer(bytes(cloud.data), np.uint8).reshape(n, cloud.point_step)
    xyz = np.stack([raw[:, off[c]: off[c] + 4].copy().view('<f4').ravel() for c in 'xyz'], axis=1)
    if 'rgb' in off:
        rgb = raw[:, off['rgb']: off['rgb'] + 4].copy().view('<u4').ravel()
        cols = np.stack([(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255], axis=1).astype(np.uint8)
    else:
        cols = np.full((n, 3), 200, np.uint8)
    keep = np.all(np.isfinite(xyz), axis=1)
    return xyz[keep], cols[keep]


def depth_image_mm(depth: np.ndarray, header):
    """16UC1 depth image in millimetres; 0 where invalid or not representable (> 65.535 m)."""
    mm = depth * np.float32(1000.0)
    np.rint(mm, out=mm)
    with np.errstate(invalid='ignore'):
        ok = (mm >= 1.0) & (mm <= 65535.0)  # NaN fails both
    msg, view = new_image(depth.shape[0], depth.shape[1], '16UC1', header)
    np.copyto(view, mm, casting='unsafe', where=ok)  # the fresh data is zero elsewhere
    return msg


def copy_camera_info(info, header):
    """Return a copy of a CameraInfo with another header (the input message is left untouched)."""
    from sensor_msgs.msg import CameraInfo

    c = CameraInfo()
    c.header = header
    c.height, c.width = info.height, info.width
    c.distortion_model = info.distortion_model
    c.d, c.k, c.r, c.p = info.d, info.k, info.r, info.p
    c.binning_x, c.binning_y = info.binning_x, info.binning_y
    c.roi = info.roi
    return c


def valid_window(window, width: int, height: int) -> tuple[int, int, int, int]:
    """Return the matcher's (x, y, width, height) clipped to a width x height image.

    The full image when the matcher reports none.
    """
    if window is None:
        return 0, 0, width, height
    x, y, w, h = (int(v) for v in window)
    x, y = min(max(x, 0), width), min(max(y, 0), height)
    return x, y, max(0, min(w, width - x)), max(0, min(h, height - y))


class CloudBuffer:
    """Reusable buffers for PointCloud2 data.

    x, y, z float32 (+ rgb float32 holding the packed uint32 0x00RRGGBB, as RViz and PCL expect).

    `fields` is a list of (name, offset, datatype, count) with PointField datatypes (FLOAT32 = 7);
    `point_step` the bytes per point. Buffers are kept between frames and only reallocated when the
    image size changes. Data is in host byte order (`is_bigendian`).
    """

    FLOAT32 = 7
    is_bigendian = sys.byteorder == 'big'

    def __init__(self, use_color: bool = True) -> None:
        self.use_color = bool(use_color)
        names = ['x', 'y', 'z'] + (['rgb'] if self.use_color else [])
        self._dtype = np.dtype([(n, np.float32) for n in names])
        self._buf: np.ndarray | None = None  # HxW structured, organized layout
        self._mask: np.ndarray | None = None
        self._bgra: np.ndarray | None = None
        self.valid_count = 0

    @property
    def fields(self) -> list[tuple[str, int, int, int]]:
        return [(n, self._dtype.fields[n][1], self.FLOAT32, 1) for n in self._dtype.names]

    @property
    def point_step(self) -> int:
        return self._dtype.itemsize

    def _ensure(self, h: int, w: int) -> np.ndarray:
        if self._buf is None or self._buf.shape != (h, w):
            self._buf = np.zeros((h, w), self._dtype)  # dense clouds are compacted from here
            self._mask = np.empty((h, w), bool)
            self._z = np.empty((h, w), np.float32)
            self._x = np.empty((h, w), np.float32)
            self._y = np.empty((h, w), np.float32)
            self._rgb = np.empty((h, w), np.uint32)
            self._bgra = np.empty((h, w, 4), np.uint8)
        return self._buf

    def fill(
        self,
        depth: np.ndarray,
        cam: StereoCamera,
        rgb: np.ndarray | None = None,
        organized: bool = True,
        min_depth: float = 0.0,
        max_depth: float = np.inf,
    ) -> tuple[array.array, int, int]:
        """Cloud data for `depth` (HxW metres, NaN invalid): returns (data, height, width).

        Points with NaN depth or depth outside [min_depth, max_depth] are NaN (organized, HxW)
        or dropped (dense, 1xN). `rgb` (HxWx3 uint8 RGB) is required when use_color.
        `data` is a fresh array.array('B') (assign it to PointCloud2.data: rclpy keeps it without
        a copy); organized clouds are written straight into it, dense ones are compacted into it
        from the reused buffer. `valid_count` holds the number of finite points afterwards.
        """
        import cv2

        check_shape(depth, cam, 'depth')
        h, w = depth.shape
        self._ensure(h, w)
        if self.use_color and (rgb is None or rgb.shape != (h, w, 3) or rgb.dtype != np.uint8):
            raise ValueError(
                'use_color needs an HxWx3 uint8 RGB image of the depth size, got '
                f'{None if rgb is None else (rgb.shape, rgb.dtype)}'
            )
        b = bounds(cam, 0.0, np.inf)
        z = self._z
        if min_depth > 0 or max_depth < np.inf:
            np.copyto(z, depth)
            # float32 bounds, exactly as the depth values compare
            n_valid = nan_outside(z, np.float32(min_depth), np.float32(max_depth), b)
            ok = b.m1
        else:
            if depth.dtype == np.float32 and depth.flags.c_contiguous:
                z = depth
            else:
                np.copyto(z, depth)  # contiguous float32, whatever depth's layout
            mask = np.isnan(z, out=self._mask)
            n_valid = h * w - int(np.count_nonzero(mask))
            ok = None
        self.valid_count = n_valid
        compact = not organized and n_valid < h * w
        k = len(self._dtype.names)
        if compact:
            data = None
            dst = self._buf.view(np.int32).reshape(h, w, k)
        else:
            data = _new_data(h * w * self.point_step)
            dst = np.frombuffer(data, np.int32).reshape(h, w, k)
        # x, y into contiguous scratch (full-size ray factors), then one interleaving pass
        # (cv2.merge copies 32-bit elements as integers: NaN and packed rgb bits are kept)
        np.multiply(z, b.full('ray_x'), out=self._x)
        np.multiply(z, b.full('ray_y'), out=self._y)
        planes = [self._x.view(np.int32), self._y.view(np.int32), z.view(np.int32)]
        if self.use_color:
            # packed uint32 0x00RRGGBB: BGRA bytes read as a little-endian uint32 are
            # 0xAARRGGBB; mask the alpha away
            code = cv2.COLOR_RGB2RGBA if self.is_bigendian else cv2.COLOR_RGB2BGRA
            cv2.cvtColor(rgb, code, dst=self._bgra)
            packed = self._bgra.view(np.uint32).reshape(h, w)
            if self.is_bigendian:  # bytes R,G,B,A read big-endian = 0xRRGGBBAA
                np.right_shift(packed, np.uint32(8), out=self._rgb)
            else:
                np.bitwise_and(packed, np.uint32(0x00FFFFFF), out=self._rgb)
            planes.append(self._rgb.view(np.int32))
        merged = cv2.merge(planes, dst=dst)
        if merged is not dst and not np.shares_memory(merged, dst):  # never expected; stay correct
            np.copyto(dst, merged.reshape(h, w, k))
        if not compact:
            return data, (h if organized else 1), (w if organized else h * w)
        if ok is not None:
            mask = ok
        else:
            np.logical_not(mask, out=mask)
        # compress a plain float32 (N, fields) view: much faster than on the structured dtype
        data = _new_data(n_valid * self.point_step)
        np.compress(
            mask.ravel(),
            self._buf.view(np.float32).reshape(-1, k),
            axis=0,
            out=np.frombuffer(data, np.float32).reshape(-1, k),
        )
        return data, 1, n_valid


def _new_data(nbytes: int) -> array.array:
    """Return a zeroed array.array('B') (rclpy's storage type for uint8[]; ~0.05 ms for 5 MB)."""
    return array.array('B', b'\0') * int(nbytes)
