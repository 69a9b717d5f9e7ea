"""ffs_ros.geometry: analytic planes, invalid rules, clouds (pure numpy, no ROS)."""

import numpy as np
import pytest

from ffs_ros.geometry import (
    StereoCamera,
    color_map_disparity,
    corrected_disparity,
    depth_to_points,
    disparity_to_depth,
    valid_disparity_mask,
)
from ffs_ros.messages import CloudBuffer

W, H = 64, 48
FX, FY, B = 400.0, 410.0, 0.12
CX_L, CX_R, CY = 30.5, 20.5, 22.0  # doffs = 10 px


def _cam(cx_r=CX_R):
    return StereoCamera(
        fx=FX, fy=FY, cx_left=CX_L, cy=CY, cx_right=cx_r, baseline=B, width=W, height=H
    )


def _grid():
    return np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))


def _p(fx, fy, cx, cy, tx=0.0):
    return [fx, 0, cx, tx, 0, fy, cy, 0, 0, 0, 1, 0]


def test_from_projection():
    cam = StereoCamera.from_projection(_p(FX, FY, CX_L, CY), _p(FX, FY, CX_R, CY, -FX * B), W, H)
    assert cam == _cam()
    assert cam.doffs == pytest.approx(10.0)
    assert cam.baseline == pytest.approx(0.12)


@pytest.mark.parametrize(
    'pl,pr,match',
    [
        (_p(np.nan, FY, CX_L, CY), _p(FX, FY, CX_R, CY, -48), 'NaN'),
        (_p(0, FY, CX_L, CY), _p(FX, FY, CX_R, CY, -48), 'fx=0'),
        (_p(FX, 0, CX_L, CY), _p(FX, FY, CX_R, CY, -48), 'fy=0'),
        (_p(FX, FY, CX_L, CY), _p(0, FY, CX_R, CY, -48), 'fx=0'),
        (_p(FX, FY, CX_L, CY), _p(FX, FY, CX_R, CY, 0.0), 'baseline is 0'),
        (_p(FX, FY, CX_L, CY), _p(FX, FY, CX_R, CY, +48), 'swapped'),
    ],
)
def test_from_projection_rejects_bad_calibration(pl, pr, match):
    with pytest.raises(ValueError, match=match):
        StereoCamera.from_projection(pl, pr, W, H)


def test_fronto_parallel_plane_exact_depth_and_points():
    cam = _cam()
    z_true = 2.0
    d_corr = FX * B / z_true  # 24 px
    raw = np.full((H, W), d_corr + cam.doffs, np.float32)  # matcher sees x_l - x_r = 24 + doffs
    depth = disparity_to_depth(raw, cam, 0.0, 256.0)
    u, v = _grid()
    valid = u - raw >= 0  # matches must land inside the right image
    np.testing.assert_allclose(depth[valid], z_true, rtol=1e-6)
    assert np.all(np.isnan(depth[~valid]))
    pts = depth_to_points(depth, cam)
    np.testing.assert_allclose(
        pts[..., 0][valid], ((u - CX_L) * z_true / FX)[valid], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        pts[..., 1][valid], ((v - CY) * z_true / FY)[valid], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(pts[..., 2][valid], z_true, rtol=1e-6)
    # the DisparityImage convention: corrected disparity = raw - doffs
    np.testing.assert_allclose(corrected_disparity(raw, cam)[valid], d_corr, rtol=1e-6)


def test_slanted_plane_exact_depth_and_points():
    """Plane Z = Z0 + a X + b Y.

    With X = (u-cx) Z/fx, Y = (v-cy) Z/fy: Z = Z0 / (1 - a (u-cx)/fx - b (v-cy)/fy) and the
    corrected disparity fB/Z is linear in u, v.
    """
    cam = _cam()
    z0, a, b = 3.0, 0.4, -0.3
    u, v = _grid()
    denom = 1 - a * (u - CX_L) / FX - b * (v - CY) / FY
    z_true = z0 / denom
    raw = (FX * B / z_true + cam.doffs).astype(np.float32)
    depth = disparity_to_depth(raw, cam, 0.0, 256.0)
    valid = u - raw >= 0
    assert valid.sum() > 0.5 * W * H
    np.testing.assert_allclose(depth[valid], z_true[valid], rtol=1e-5)
    pts = depth_to_points(depth, cam)[valid]
    # every reconstructed point lies on the plane
    np.testing.assert_allclose(pts[:, 2] - a * pts[:, 0] - b * pts[:, 1], z0, rtol=1e-5)
    np.testing.assert_allclose(pts[:, 0], ((u - CX_L) * z_true / FX)[valid], rtol=1e-5, atol=1e-6)


def test_invalid_rules():
    cam = _cam()  # doffs = 10
    raw = np.full((H, W), 30.0, np.float32)  # corrected 20: valid unless x - d < 0
    raw[0, 40] = np.nan  # NaN
    raw[1, 40] = 10.0  # corrected 0: non-positive
    raw[2, 40] = 5.0  # corrected -5
    raw[3, 40] = 10.0 + 2.0  # corrected 2 < min_disparity 3
    raw[4, 40] = 10.0 + 51.0  # corrected 51 > max_disparity 50 (and still inside the image)
    raw[5, 40] = 10.0 + 3.0  # corrected 3 == min: valid
    raw[6, 63] = 10.0 + 50.0  # corrected 50 == max: valid
    raw[7, 20] = 21.0  # x - d = -1 < 0: no match in the right image
    raw[8, 20] = 20.0  # x - d = 0: valid
    mask = valid_disparity_mask(raw, cam, 3.0, 50.0)
    u, _ = _grid()
    expected = u - raw >= 0
    for r in range(5):
        expected[r, 40] = False
    expected[7, 20] = False
    expected[5, 40] = expected[6, 63] = expected[8, 20] = True
    np.testing.assert_array_equal(mask, expected)
    depth = disparity_to_depth(raw, cam, 3.0, 50.0)
    np.testing.assert_array_equal(np.isnan(depth), ~expected)
    assert depth[5, 40] == pytest.approx(FX * B / 3.0)


def test_no_match_beyond_the_right_image_edge_with_negative_offset():
    cam = _cam(cx_r=CX_L + 8)  # doffs = -8: raw disparity can be negative yet valid
    raw = np.full((H, W), -4.0, np.float32)  # corrected 4 px
    mask = valid_disparity_mask(raw, cam)
    u, _ = _grid()
    np.testing.assert_array_equal(mask, u - raw <= W - 1)  # x_r = x + 4 must stay in the image
    depth = disparity_to_depth(raw, cam)
    np.testing.assert_allclose(depth[mask], FX * B / 4.0, rtol=1e-6)


def test_out_buffer_is_reused():
    cam = _cam()
    raw = np.full((H, W), 34.0, np.float32)
    out = np.empty((H, W), np.float32)
    assert disparity_to_depth(raw, cam, out=out) is out


def _depth_field(cam, z=2.0):
    depth = np.full((H, W), z, np.float32)
    depth[0,:5] = np.nan
    depth[3, 7] = 0.5
    depth[4, 9] = 50.0
    return depth


def test_cloud_fields_and_rgb_packing():
    cb = CloudBuffer(use_color=True)
    assert [f[0] for f in cb.fields] == ['x', 'y', 'z', 'rgb']
    assert [f[1] for f in cb.fields] == [0, 4, 8, 12]
    assert all(f[2] == 7 and f[3] == 1 for f in cb.fields)  # PointField.FLOAT32, count 1
    assert cb.point_step == 16
    assert CloudBuffer(use_color=False).point_step == 12
    assert [f[0] for f in CloudBuffer(use_color=False).fields] == ['x', 'y', 'z']
    cam = _cam()
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[10, 11] = (0x12, 0x34, 0x56)
    data, h, w = cb.fill(np.full((H, W), 2.0, np.float32), cam, rgb)
    pts = np.frombuffer(
        data, np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('rgb', '<u4')])
    ).reshape(h, w)
    assert hex(int(pts['rgb'][10, 11])) == hex(0x00123456)  # uint32 0x00RRGGBB
    assert pts['z'][10, 11] == 2.0
    assert pts['x'][10, 11] == pytest.approx((11 - CX_L) * 2.0 / FX)
    assert pts['y'][10, 11] == pytest.approx((10 - CY) * 2.0 / FY)


def test_organized_cloud_keeps_nan_points_and_filters_depth():
    cam = _cam()
    cb = CloudBuffer(use_color=False)
    data, h, w = cb.fill(_depth_field(cam), cam, organized=True, min_depth=1.0, max_depth=10.0)
    assert (h, w) == (H, W) and len(data) == H * W * 12
    pts = np.frombuffer(data, np.float32).reshape(H, W, 3)
    nan = np.isnan(pts[..., 2])
    assert nan.sum() == 5 + 2 and nan[3, 7] and nan[4, 9]  # NaN + too near + too far
    assert np.all(np.isnan(pts[nan]))  # x, y NaN too
    assert cb.valid_count == H * W - 7


def test_dense_cloud_drops_invalid_points():
    cam = _cam()
    cb = CloudBuffer(use_color=True)
    rgb = np.full((H, W, 3), 200, np.uint8)
    data, h, w = cb.fill(
        _depth_field(cam), cam, rgb, organized=False, min_depth=1.0, max_depth=10.0
    )
    assert (h, w) == (1, H * W - 7) and len(data) == w * 16
    pts = np.frombuffer(data, np.float32).reshape(-1, 4)
    assert np.all(np.isfinite(pts[:,:3])) and np.all(pts[:, 2] == 2.0)
    assert np.all(pts[:, 3].view(np.uint32) == 0x00C8C8C8)
    # all valid -> every point, in pixel order
    data, h, w = cb.fill(np.full((H, W), 2.0, np.float32), cam, rgb, organized=False)
    assert (h, w) == (1, H * W)


def test_cloud_results_are_independent_between_frames():
    """Messages keep the returned data: a later fill must not overwrite an earlier result."""
    cam = _cam()
    cb = CloudBuffer(use_color=False)
    for organized in (True, False):
        d1 = np.full((H, W), 2.0, np.float32)
        d1[0, 0] = np.nan
        first, _, _ = cb.fill(d1, cam, organized=organized)
        snapshot = bytes(first)
        cb.fill(np.full((H, W), 5.0, np.float32), cam, organized=organized)
        assert bytes(first) == snapshot


def test_cloud_needs_rgb_when_colored():
    cam = _cam()
    with pytest.raises(ValueError, match='use_color needs'):
        CloudBuffer(use_color=True).fill(np.ones((H, W), np.float32), cam, None)


def test_color_map_disparity():
    disp = np.tile(np.linspace(1, 60, W, dtype=np.float32), (H, 1))
    disp[0, 0] = np.nan
    disp[0, 1] = -3
    col = color_map_disparity(disp, 64)
    assert col.shape == (H, W, 3) and col.dtype == np.uint8
    assert np.all(col[0, 0] == 0) and np.all(col[0, 1] == 0)
    assert not np.array_equal(col[5, 3], col[5, W - 3])  # near and far differ
    assert col[5, W - 3, 0] > col[5, W - 3, 2]  # near is warm (red > blue)
