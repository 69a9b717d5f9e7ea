"""ffs_ros.convert: Image <-> numpy for every supported encoding, padded rows, bad input."""

import sys

import numpy as np
import pytest
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ffs_ros.convert import (
    ENCODINGS,
    ImageError,
    bytes_per_pixel,
    image_to_numpy,
    image_to_rgb,
    make_camera_infos,
    new_image,
    numpy_to_image,
)

RNG = np.random.default_rng(7)
H, W = 5, 7


def _array(encoding):
    dtype, ch = ENCODINGS[encoding]
    shape = (H, W) if ch == 1 else (H, W, ch)
    hi = 65535 if dtype == np.uint16 else 255
    return RNG.integers(0, hi + 1, shape).astype(dtype)


def _raw_msg(arr, encoding, pad=0, big_endian=False, fill=0xAB):
    """Build an Image by hand (like a driver would), rows padded with `pad` garbage bytes."""
    rows = (
        arr.reshape(arr.shape[0], -1).view(np.uint8)
        if arr.dtype.itemsize == 1
        else arr.astype(arr.dtype.newbyteorder('>') if big_endian else arr.dtype)
        .reshape(arr.shape[0], -1)
        .view(np.uint8)
    )
    padded = np.full((rows.shape[0], rows.shape[1] + pad), fill, np.uint8)
    padded[:,: rows.shape[1]] = rows
    msg = Image(
        height=arr.shape[0],
        width=arr.shape[1],
        encoding=encoding,
        is_bigendian=big_endian,
        step=padded.shape[1],
    )
    msg.data = padded.tobytes()
    return msg


@pytest.mark.parametrize('encoding', sorted(ENCODINGS))
@pytest.mark.parametrize('pad', [0, 3, 64])
def test_every_encoding_round_trips_zero_copy(encoding, pad):
    arr = _array(encoding)
    msg = _raw_msg(arr, encoding, pad=pad)
    view = image_to_numpy(msg)
    assert view.shape == arr.shape and view.dtype == arr.dtype
    np.testing.assert_array_equal(view, arr)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8)), 'must be a view, not a copy'
    assert not view.flags.writeable, 'the view must not let callers modify the message'


@pytest.mark.parametrize('encoding', sorted(ENCODINGS))
def test_numpy_to_image_then_back(encoding):
    arr = _array(encoding)
    header = Header(frame_id='cam')
    header.stamp.sec = 12
    msg = numpy_to_image(arr, encoding, header)
    assert (msg.height, msg.width, msg.encoding) == (H, W, encoding)
    assert msg.step == W * bytes_per_pixel(encoding)
    assert msg.header.frame_id == 'cam' and msg.header.stamp.sec == 12
    assert not msg.is_bigendian
    assert type(msg.data).__name__ == 'array'  # rclpy's own storage: no element-wise conversion
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


def test_float_images_round_trip_and_byteswap_input():
    arr = RNG.normal(size=(H, W)).astype(np.float32)
    arr[1, 2] = np.nan
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(arr, '32FC1')), arr)
    swapped = arr.astype('>f4')  # non-native input arrays are written in host order
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(swapped, '32FC1')), arr)


def test_new_image_view_fills_message():
    msg, view = new_image(3, 4, '32FC1')
    view[:] = 2.5
    np.testing.assert_array_equal(image_to_numpy(msg), np.full((3, 4), 2.5, np.float32))


@pytest.mark.parametrize('pad', [0, 5])
def test_image_to_rgb_channel_orders(pad):
    rgb = _array('rgb8')
    cases = {
        'rgb8': rgb,
        'bgr8': rgb[...,::-1],
        '8UC3': rgb[...,::-1],  # generic 3-channel images come from OpenCV: BGR
        'rgba8': np.dstack([rgb, np.full((H, W), 9, np.uint8)]),
        'bgra8': np.dstack([rgb[...,::-1], np.full((H, W), 9, np.uint8)]),
    }
    for enc, arr in cases.items():
        out = image_to_rgb(_raw_msg(np.ascontiguousarray(arr), enc, pad=pad))
        assert out.shape == (H, W, 3) and out.dtype == np.uint8, enc
        np.testing.assert_array_equal(out, rgb, err_msg=enc)


def test_rgb8_is_not_copied():
    msg = _raw_msg(_array('rgb8'), 'rgb8', pad=4)
    assert np.shares_memory(image_to_rgb(msg), np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize('encoding', ['mono8', '8UC1', 'mono16', '16UC1'])
def test_grey_is_replicated_and_16bit_scaled(encoding):
    arr = _array(encoding)
    out = image_to_rgb(_raw_msg(arr, encoding, pad=2))
    grey = (arr >> 8).astype(np.uint8) if arr.dtype == np.uint16 else arr
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


@pytest.mark.parametrize(
    'encoding,pattern',
    [
        ('bayer_rggb8', 'RGGB'),
        ('bayer_bggr8', 'BGGR'),
        ('bayer_gbrg8', 'GBRG'),
        ('bayer_grbg8', 'GRBG'),
    ],
)
def test_bayer_mosaic_of_flat_colour_decodes_to_that_colour(encoding, pattern):
    colour = {'R': 200, 'G': 100, 'B': 30}
    h, w = 12, 16
    mosaic = np.empty((h, w), np.uint8)
    for dy in range(2):
        for dx in range(2):
            mosaic[dy::2, dx::2] = colour[pattern[2 * dy + dx]]
    out = image_to_rgb(_raw_msg(mosaic, encoding))
    np.testing.assert_array_equal(out[4:-4, 4:-4].reshape(-1, 3) - [200, 100, 30], 0)


@pytest.mark.parametrize(
    'encoding,order',
    [
        ('uyvy', 'UYVY'),
        ('yuyv', 'YUYV'),  # current ROS names
        ('yuv422', 'UYVY'),
        ('yuv422_yuy2', 'YUYV'),
    ],
)  # deprecated
def test_yuv422_decodes_chroma_in_the_right_order(encoding, order):
    # BT.601 video range (cameras): R = 1.164 (Y-16) + 1.596 (V-128) ~ 213, G = 1.164 (Y-16)
    # - 0.813 (V-128) - 0.391 (U-128) ~ 39, B = 1.164 (Y-16) + 2.018 (U-128) ~ 98
    y, u, v = 100, 128, 200
    h, w = 4, 8
    vals = {'Y': y, 'U': u, 'V': v}
    packed = np.array([vals[c] for c in order] * (w // 2), np.uint8).reshape(1, w, 2)
    msg = _raw_msg(np.repeat(packed, h, axis=0), encoding)
    out = image_to_rgb(msg).astype(int)
    assert np.all(np.abs(out - [213, 39, 98]) <= 2), out[0, 0]


def test_unsupported_encoding_names_supported_ones():
    msg = _raw_msg(_array('rgb8'), 'rgb8')
    msg.encoding = 'bgr16'
    with pytest.raises(ImageError, match='unsupported image encoding') as e:
        image_to_numpy(msg)
    assert 'rgb8' in e.value.fix and 'bgr16' in e.value.problem


def test_32fc1_is_readable_but_not_a_matcher_input():
    msg = numpy_to_image(np.zeros((2, 3), np.float32), '32FC1')
    assert image_to_numpy(msg).shape == (2, 3)
    with pytest.raises(ImageError, match='cannot be used for matching'):
        image_to_rgb(msg)


def test_empty_image():
    msg = Image(height=0, width=640, encoding='rgb8', step=1920)
    with pytest.raises(ImageError, match='empty image') as e:
        image_to_numpy(msg)
    assert e.value.fix


def test_data_length_mismatch():
    msg = _raw_msg(_array('rgb8'), 'rgb8')
    msg.data = bytes(len(msg.data) - 1)
    with pytest.raises(ImageError, match=r'data has \d+ bytes but step\*height'):
        image_to_numpy(msg)


def test_step_smaller_than_row():
    msg = _raw_msg(_array('mono16'), 'mono16')
    msg.step = W * 2 - 1
    msg.data = bytes(msg.step * H)
    with pytest.raises(ImageError, match='step .* smaller than width\\*bytes_per_pixel'):
        image_to_numpy(msg)


@pytest.mark.parametrize('encoding', ['mono16', '16UC1'])
def test_big_endian_16bit_is_reported_with_fix(encoding):
    arr = _array(encoding)
    msg = _raw_msg(arr, encoding, big_endian=True)
    with pytest.raises(ImageError, match='big-endian 16-bit') as e:
        image_to_rgb(msg)
    assert 'is_bigendian=0' in e.value.fix
    assert 'fix:' in str(e.value)


def test_big_endian_flag_is_irrelevant_for_8bit():
    arr = _array('rgb8')
    msg = _raw_msg(arr, 'rgb8', big_endian=True)
    np.testing.assert_array_equal(image_to_rgb(msg), arr)


def test_numpy_to_image_rejects_mismatched_array():
    with pytest.raises(ImageError, match='does not fit encoding rgb8'):
        numpy_to_image(np.zeros((2, 3), np.uint8), 'rgb8')
    with pytest.raises(ImageError, match='does not fit encoding mono16'):
        numpy_to_image(np.zeros((2, 3), np.uint8), 'mono16')


def test_make_camera_infos_rectified_pair():
    left, right = make_camera_infos(640, 480, 400.0, 0.12, cx=300.0, cy=250.0, cx_right=290.0)
    assert (left.width, left.height) == (640, 480) and (right.width, right.height) == (640, 480)
    pl, pr = np.reshape(left.p, (3, 4)), np.reshape(right.p, (3, 4))
    assert (
        pl[0, 0] == 400
        and pl[1, 1] == 400
        and pl[0, 2] == 300
        and pl[1, 2] == 250
        and pl[0, 3] == 0
    )
    assert pr[0, 2] == 290 and pr[0, 3] == pytest.approx(-400 * 0.12)
    assert -pr[0, 3] / pr[0, 0] == pytest.approx(0.12)
    np.testing.assert_array_equal(np.reshape(left.r, (3, 3)), np.eye(3))
    assert left.header.frame_id == 'left_optical' and right.header.frame_id == 'right_optical'
    default_l, _ = make_camera_infos(640, 480, 400.0, 0.12)
    assert default_l.k[2] == pytest.approx(319.5) and default_l.k[5] == pytest.approx(239.5)


def test_host_is_little_endian_for_these_tests():
    assert sys.byteorder == 'little'
