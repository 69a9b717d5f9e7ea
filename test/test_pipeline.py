"""ffs_ros.pipeline: the node's processing path on plain messages (no DDS, no node)."""

import numpy as np
import pytest
from sensor_msgs.msg import PointField
from std_msgs.msg import Header

from ffs_ros.convert import image_to_numpy, make_camera_infos, numpy_to_image
from ffs_ros.inference.base import MatcherInfo, StereoMatcher
from ffs_ros.pipeline import InputError, Outputs, PipelineConfig, StereoPipeline, Wanted

W, H = 96, 64
FX, B, Z = 400.0, 0.12, 2.0  # plane at 2.0 m -> 24 px
D = FX * B / Z


class FakeMatcher(StereoMatcher):
    """Returns a fixed raw disparity (x_l - x_r) and remembers what it was given."""

    def __init__(self, disparity, extra=None, stages=None):
        super().__init__()
        self.disparity = np.asarray(disparity, np.float32)
        self.info_fields = extra or {}
        self.stages = stages or {}
        self.calls = []

    @property
    def info(self):
        return MatcherInfo(backend='fake', **self.info_fields)

    def match(self, left, right):
        assert left.flags.c_contiguous and right.flags.c_contiguous
        self.calls.append((left.copy(), right.copy()))
        self.last_timings = dict(self.stages)
        return self.disparity.copy()


def _header(sec=5, frame='left_optical'):
    h = Header(frame_id=frame)
    h.stamp.sec, h.stamp.nanosec = sec, 123
    return h


def _pair(w=W, h=H, encoding='rgb8', seed=0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    left = numpy_to_image(rgb, 'rgb8', _header())
    right = numpy_to_image(rgb, 'rgb8', _header(frame='right_optical'))
    return left, right, rgb


def _run(raw=None, config=None, wanted=None, cx_right=None, **kw):
    left, right, rgb = _pair()
    li, ri = make_camera_infos(W, H, FX, B, cx_right=cx_right)
    doffs = li.k[2] - ri.k[2]
    raw = np.full((H, W), D + doffs, np.float32) if raw is None else raw
    pipe = StereoPipeline(FakeMatcher(raw, **kw), config or PipelineConfig())
    return pipe.process(left, right, li, ri, wanted or Wanted()), rgb, pipe


@pytest.mark.parametrize('cx_right', [None, (W - 1) / 2 - 6.0])
def test_plane_at_2m_gives_24px_and_2m_depth(cx_right):
    out, _, _ = _run(cx_right=cx_right)
    assert isinstance(out, Outputs)
    disp = image_to_numpy(out.disparity.image)
    u = np.arange(W)[None,:].repeat(H, 0)
    doffs = 0.0 if cx_right is None else 6.0
    valid = u - (D + doffs) >= 0  # no match left of the raw disparity
    np.testing.assert_allclose(disp[valid], 24.0, rtol=1e-6)  # principal-point offset removed
    assert np.all(np.isnan(disp[~valid]))
    depth = image_to_numpy(out.depth)
    assert out.depth.encoding == '32FC1'
    np.testing.assert_allclose(depth[valid], 2.0, rtol=0.02)
    assert np.all(np.isnan(depth[~valid]))
    assert out.valid_fraction == pytest.approx(valid.mean())


def test_disparity_image_fields():
    out, _, _ = _run(config=PipelineConfig(min_disparity=1.0, max_disparity=96.0))
    msg = out.disparity
    assert msg.f == pytest.approx(FX)
    assert msg.t == pytest.approx(B)  # -P_right[0,3] / P_right[0,0]
    assert (msg.min_disparity, msg.max_disparity) == (1.0, 96.0)
    assert msg.delta_d == pytest.approx(1 / 16)
    assert (
        msg.valid_window.x_offset,
        msg.valid_window.y_offset,
        msg.valid_window.width,
        msg.valid_window.height,
    ) == (0, 0, W, H)
    assert msg.image.encoding == '32FC1' and (msg.image.height, msg.image.width) == (H, W)
    # Z = f T / d holds on the published disparity
    d = image_to_numpy(msg.image)
    np.testing.assert_allclose(msg.f * msg.t / d[np.isfinite(d)], Z, rtol=1e-6)


def test_matcher_reported_delta_d_and_valid_window():
    out, _, _ = _run(extra={'delta_d': 0.25, 'valid_window': (4, 2, 80, 60)})
    assert out.disparity.delta_d == 0.25
    vw = out.disparity.valid_window
    assert (vw.x_offset, vw.y_offset, vw.width, vw.height) == (4, 2, 80, 60)
    out, _, _ = _run(extra={'valid_window': (10, 0, 500, 60)})  # clipped to the image
    vw = out.disparity.valid_window
    assert (vw.x_offset, vw.y_offset, vw.width, vw.height) == (10, 0, W - 10, 60)


def test_outputs_carry_the_left_header():
    out, _, _ = _run(wanted=Wanted(color=True))
    for msg in (
        out.disparity,
        out.disparity.image,
        out.depth,
        out.depth_info,
        out.cloud,
        out.disparity_color,
    ):
        assert msg.header.frame_id == 'left_optical'
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (5, 123)
    assert out.depth_info.k[0] == FX and (out.depth_info.width, out.depth_info.height) == (W, H)
    assert out.disparity_color.encoding == 'rgb8'


def test_cloud_fields_count_and_colour():
    out, rgb, _ = _run()
    c = out.cloud
    assert [f.name for f in c.fields] == ['x', 'y', 'z', 'rgb']
    assert [f.offset for f in c.fields] == [0, 4, 8, 12]
    assert all(f.datatype == PointField.FLOAT32 and f.count == 1 for f in c.fields)
    assert (c.height, c.width, c.point_step, c.row_step) == (H, W, 16, 16 * W)
    assert len(c.data) == H * W * 16 and not c.is_bigendian
    pts = np.frombuffer(c.data, np.float32).reshape(H, W, 4)
    n_valid = int(np.isfinite(pts[..., 2]).sum())
    assert n_valid == round(out.valid_fraction * H * W) and n_valid < H * W
    assert c.is_dense is False  # organized with NaN points
    v, u = 30, 60
    assert pts[v, u, 2] == pytest.approx(2.0, rel=1e-6)
    assert pts[v, u, 0] == pytest.approx((u - (W - 1) / 2) * 2.0 / FX, rel=1e-5)
    assert pts[v, u, 1] == pytest.approx((v - (H - 1) / 2) * 2.0 / FX, rel=1e-5)
    r, g, b = (int(x) for x in rgb[v, u])
    assert int(pts[v, u, 3].view(np.uint32)) == (r << 16) | (g << 8) | b


def test_dense_cloud_without_colour():
    out, _, _ = _run(config=PipelineConfig(organized_cloud=False, use_color=False))
    c = out.cloud
    assert [f.name for f in c.fields] == ['x', 'y', 'z'] and c.point_step == 12
    assert c.height == 1 and c.width == round(out.valid_fraction * H * W)
    assert c.is_dense is True and len(c.data) == c.width * 12
    assert np.all(np.isfinite(np.frombuffer(c.data, np.float32)))


def test_cloud_depth_filter():
    raw = np.full((H, W), D, np.float32)
    raw[:, W // 2:] = D / 4  # right half at 8 m
    out, _, _ = _run(raw=raw, config=PipelineConfig(max_depth=5.0, organized_cloud=False))
    pts = np.frombuffer(out.cloud.data, np.float32).reshape(-1, 4)
    assert np.all(pts[:, 2] <= 5.0)
    # the depth image itself is not range-filtered
    assert np.nanmax(image_to_numpy(out.depth)) == pytest.approx(8.0)


def test_depth_16uc1_millimetres():
    raw = np.full((H, W), D, np.float32)
    raw[5, 50] = np.nan
    raw[6, 50] = FX * B / 70.0  # 70 m does not fit 16 bit mm -> 0
    out, _, _ = _run(raw=raw, config=PipelineConfig(depth_encoding='16UC1', max_depth=200.0))
    assert out.depth.encoding == '16UC1'
    mm = image_to_numpy(out.depth)
    assert mm.dtype == np.uint16
    assert mm[10, 50] == 2000 and mm[5, 50] == 0 and mm[6, 50] == 0
    assert mm[10, 0] == 0  # no match in the right image


def test_only_wanted_outputs_are_computed():
    out, _, _ = _run(wanted=Wanted(disparity=True, depth=False, cloud=False, color=False))
    assert out.disparity is not None
    assert (
        out.depth is None
        and out.depth_info is None
        and out.cloud is None
        and out.disparity_color is None
    )
    assert 'cloud' not in out.timings
    out, _, _ = _run(wanted=Wanted(disparity=False, depth=False, cloud=True))
    assert out.disparity is None and out.depth is None and out.cloud is not None


def test_timings_and_matcher_stages():
    out, _, _ = _run(stages={'feature': 1.5, 'post': 0.5})
    for stage in ('convert', 'match', 'depth', 'cloud'):
        assert out.timings[stage] >= 0
    assert out.timings['match/feature'] == 1.5 and out.timings['match/post'] == 0.5


def test_mono_and_bgr_inputs_reach_the_matcher_as_rgb():
    left, right, rgb = _pair()
    li, ri = make_camera_infos(W, H, FX, B)
    m = FakeMatcher(np.full((H, W), D, np.float32))
    pipe = StereoPipeline(m)
    pipe.process(
        numpy_to_image(rgb[...,::-1].copy(), 'bgr8'),
        numpy_to_image(rgb[..., 0].copy(), 'mono8'),
        li,
        ri,
    )
    got_l, got_r = m.calls[-1]
    np.testing.assert_array_equal(got_l, rgb)
    np.testing.assert_array_equal(got_r, np.repeat(rgb[...,:1], 3, axis=2))


def test_padded_rows_reach_the_matcher_as_contiguous_rgb():
    from sensor_msgs.msg import Image

    _, _, rgb = _pair()
    rows = np.zeros((H, W * 3 + 10), np.uint8)
    rows[:,: W * 3] = rgb.reshape(H, -1)
    msg = Image(height=H, width=W, encoding='rgb8', step=W * 3 + 10)
    msg.data = rows.tobytes()
    m = FakeMatcher(np.full((H, W), D, np.float32))
    li, ri = make_camera_infos(W, H, FX, B)
    StereoPipeline(m).process(msg, msg, li, ri)
    np.testing.assert_array_equal(m.calls[-1][0], rgb)


def test_sgbm_on_a_textured_plane_recovers_2m():
    from ffs_ros.inference import load_matcher

    try:
        from ffs_ros.synth import plane_pair

        s = plane_pair(120, 160, D, seed=3)
        left_rgb, right_rgb = s.left, s.right
    except ImportError:  # generator not on this branch yet: shift a random texture
        rng = np.random.default_rng(3)
        tex = rng.integers(0, 256, (120, 160 + 24, 3), dtype=np.uint8)
        left_rgb, right_rgb = tex[:, 24:].copy(), tex[:,:-24].copy()
    h, w = left_rgb.shape[:2]
    li, ri = make_camera_infos(w, h, FX, B)
    pipe = StereoPipeline(
        load_matcher(backend='sgbm', max_disparity=64), PipelineConfig(max_disparity=64)
    )
    out = pipe.process(
        numpy_to_image(left_rgb, 'rgb8', _header()),
        numpy_to_image(right_rgb, 'rgb8', _header()),
        li,
        ri,
    )
    depth = image_to_numpy(out.depth)[:, 64:]  # SGBM leaves the first max_disparity columns empty
    good = np.isfinite(depth)
    assert good.mean() > 0.8
    assert np.median(np.abs(depth[good] - Z)) / Z < 0.02
    assert np.mean(np.abs(depth[good] - Z) / Z < 0.02) > 0.9


# ---- bad input: one InputError each, then the next good pair is processed normally ------------


def _bad_cases():
    def enc(lft, r, li, ri):
        lft.encoding = 'yuv444'

    def size(lft, r, li, ri):
        r.height, r.width, r.step = H // 2, W // 2, W // 2 * 3
        r.data = bytes(r.step * r.height)

    def info_size(lft, r, li, ri):
        li.width, li.height = 2 * W, 2 * H

    def length(lft, r, li, ri):
        lft.data = bytes(len(lft.data) - 3)

    def step(lft, r, li, ri):
        r.step = W * 3 - 1
        r.data = bytes(r.step * H)

    def empty(lft, r, li, ri):
        lft.height, lft.width, lft.step, lft.data = 0, 0, 0, b''

    def nan_k(lft, r, li, ri):
        k = list(li.k)
        k[0] = float('nan')
        li.k = k

    def zero_p(lft, r, li, ri):
        ri.p = [0.0] * 12

    def zero_baseline(lft, r, li, ri):
        p = list(ri.p)
        p[3] = 0.0
        ri.p = p

    def negative_baseline(lft, r, li, ri):
        p = list(ri.p)
        p[3] = +FX * B
        ri.p = p

    def big_endian(lft, r, li, ri):
        g = np.full((H, W), 1000, np.uint16)
        for m in (lft, r):
            m.encoding, m.step, m.is_bigendian = 'mono16', W * 2, True
            m.data = g.astype('>u2').tobytes()

    return [
        (enc, 'unsupported encoding', 'publish one of'),
        (size, 'left image is .* but right image is', 'equal size'),
        (info_size, 'left camera_info is 192x128 but the images are 96x64', 'rescale K and P'),
        (length, r'data has \d+ bytes but step\*height', 'height rows'),
        (step, 'step .* smaller than width', 'row length'),
        (empty, 'empty image', 'camera driver'),
        (nan_k, 'left camera_info K contains NaN', 'calibrate'),
        (zero_p, 'right camera_info P has fx=0', 'calibrate'),
        (zero_baseline, 'baseline is 0 m.*swapped', 'left/\\* topics'),
        (negative_baseline, 'baseline is -0.12 m.*swapped', 'left/\\* topics'),
        (big_endian, 'big-endian 16-bit', 'is_bigendian=0'),
    ]


@pytest.mark.parametrize(
    'spoil,problem,fix', _bad_cases(), ids=lambda c: getattr(c, '__name__', None)
)
def test_bad_input_raises_input_error_then_recovers(spoil, problem, fix):
    matcher = FakeMatcher(np.full((H, W), D, np.float32))
    pipe = StereoPipeline(matcher)
    left, right, _ = _pair()
    li, ri = make_camera_infos(W, H, FX, B)
    spoil(left, right, li, ri)
    with pytest.raises(InputError) as e:
        pipe.process(left, right, li, ri)
    assert e.value.problem and e.value.fix
    assert __import__('re').search(problem, e.value.problem), e.value.problem
    assert __import__('re').search(fix, e.value.fix), e.value.fix
    assert 'fix:' in str(e.value)
    assert not matcher.calls  # rejected before matching
    left, right, _ = _pair()
    li, ri = make_camera_infos(W, H, FX, B)
    out = pipe.process(left, right, li, ri)
    np.testing.assert_allclose(np.nanmedian(image_to_numpy(out.depth)), Z, rtol=1e-6)


def test_camera_change_is_picked_up():
    left, right, _ = _pair()
    pipe = StereoPipeline(FakeMatcher(np.full((H, W), D, np.float32)))
    li, ri = make_camera_infos(W, H, FX, B)
    assert pipe.process(left, right, li, ri).disparity.t == pytest.approx(B)
    li, ri = make_camera_infos(W, H, FX, 2 * B)
    out = pipe.process(left, right, li, ri)
    assert out.disparity.t == pytest.approx(2 * B)
    assert np.nanmedian(image_to_numpy(out.depth)) == pytest.approx(2 * Z)


@pytest.mark.parametrize(
    'kwargs,match',
    [
        ({'min_depth': 5.0, 'max_depth': 5.0}, 'min_depth .* must be smaller than max_depth'),
        ({'min_depth': -1.0}, 'min_depth must be >= 0'),
        ({'depth_encoding': '32FC3'}, 'depth_encoding must be one of 32FC1, 16UC1'),
        ({'min_disparity': 10.0, 'max_disparity': 5.0}, 'max_disparity .* must be greater'),
        ({'min_disparity': -1.0}, 'min_disparity must be >= 0'),
        ({'max_disparity': float('nan')}, 'max_disparity must be a finite number'),
        ({'use_color': 'yes'}, 'use_color must be true or false'),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PipelineConfig(**kwargs).validate()
    with pytest.raises(ValueError, match=match):
        StereoPipeline(FakeMatcher(np.zeros((H, W), np.float32)), PipelineConfig(**kwargs))


def test_config_defaults_are_valid():
    cfg = PipelineConfig().validate()
    assert (cfg.min_disparity, cfg.max_disparity, cfg.min_depth, cfg.max_depth) == (
        0.0,
        256.0,
        0.0,
        100.0,
    )
    assert cfg.depth_encoding == '32FC1' and cfg.use_color and cfg.organized_cloud


def test_outputs_survive_rclpy_serialization():
    """Message data is attached without the setter's copy: it must serialize like any message."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image, PointCloud2
    from stereo_msgs.msg import DisparityImage

    out, _, _ = _run(wanted=Wanted(color=True))
    for msg, cls in ((out.depth, Image), (out.cloud, PointCloud2), (out.disparity_color, Image)):
        assert deserialize_message(serialize_message(msg), cls) == msg
    back = deserialize_message(serialize_message(out.disparity), DisparityImage)
    assert back.image == out.disparity.image  # float32 fields: t 0.12 -> 0.11999..
    assert (
        back.f == pytest.approx(FX)
        and back.t == pytest.approx(B)
        and back.header == out.disparity.header
    )
    back = deserialize_message(serialize_message(out.cloud), PointCloud2)
    assert bytes(back.data) == bytes(out.cloud.data) and len(back.data) == H * W * 16
    d = image_to_numpy(deserialize_message(serialize_message(out.depth), Image))
    np.testing.assert_array_equal(d, image_to_numpy(out.depth))


def test_allocator_tuning_applies_on_glibc():
    import platform
    import sys

    from ffs_ros.pipeline import tune_allocator

    expected = (
        sys.platform.startswith('linux')
        and platform.libc_ver()[0] == 'glibc'
        and not __import__('os').environ.get('FFS_ROS_NO_MALLOC_TUNING')
    )
    assert tune_allocator() is expected


def test_sgbm_valid_window_reaches_the_disparity_image():
    """SGBM reports where it can match; the DisparityImage carries it.

    That is stereo_image_proc's window: no match in the leftmost numDisparities + border - 1
    columns, in output-image pixels.
    """
    from ffs_ros.inference import load_matcher

    left, right, _ = _pair()
    li, ri = make_camera_infos(W, H, FX, B)
    pipe = StereoPipeline(load_matcher(None, 'sgbm', max_disparity=64), PipelineConfig())
    out = pipe.process(left, right, li, ri, Wanted())
    vw = out.disparity.valid_window
    assert (vw.x_offset, vw.y_offset, vw.width, vw.height) == (
        64 + 2 - 1,
        2,
        W - 1 - 2 - 65,
        H - 1 - 2 - 2,
    )
    assert pipe.matcher.info.max_disparity == 64.0


def test_frames_above_max_input_pixels_are_refused_with_the_limit():
    with pytest.raises(
        InputError,
        match=rf'image is {W}x{H} = {W * H} pixels, more than max_input_pixels '
        rf'\({W * H - 1}\).*raise max_input_pixels',
    ):
        _run(config=PipelineConfig(max_input_pixels=W * H - 1))
    out, _, _ = _run(config=PipelineConfig(max_input_pixels=W * H))
    assert out.disparity is not None
    with pytest.raises(ValueError, match='max_input_pixels must be a positive integer'):
        PipelineConfig(max_input_pixels=0).validate()


def test_freed_memory_goes_back_once_after_a_size_change(monkeypatch):
    """One huge frame must not keep the process hundreds of MB larger.

    Two frames after the image size changed (the old size's buffers and messages are free by then)
    freed heap memory is returned to the OS, once.
    """
    import ffs_ros.pipeline as pl

    calls = []
    monkeypatch.setattr(pl, 'release_free_memory', lambda: calls.append(1) or True)
    pipe = StereoPipeline(FakeMatcher(np.full((H, W), 30.0, np.float32)), PipelineConfig())
    left, right, _ = _pair()
    li, ri = make_camera_infos(W, H, FX, B)
    for _ in range(3):
        pipe.process(left, right, li, ri, Wanted())
    assert calls == []  # the first size: nothing to give back
    l2, r2, _ = _pair(w=2 * W, h=2 * H)
    li2, ri2 = make_camera_infos(2 * W, 2 * H, FX, B)
    pipe.matcher = FakeMatcher(np.full((2 * H, 2 * W), 30.0, np.float32))
    pipe.process(l2, r2, li2, ri2, Wanted())
    assert calls == []
    pipe.process(l2, r2, li2, ri2, Wanted())
    assert calls == [1]
    for _ in range(3):
        pipe.process(l2, r2, li2, ri2, Wanted())
    assert calls == [1]
