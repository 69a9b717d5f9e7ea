"""stereo_node in-process over real rclpy.

A textured plane at 2.0 m (fx 400 px, baseline 0.12 m -> 24 px disparity) goes in; disparity,
depth, cloud and diagnostics come out with the right values.
"""

import itertools
import time

import numpy as np
import pytest
from rclpy.parameter import Parameter

from ffs_ros.convert import make_camera_infos, numpy_to_image
from ffs_ros.node.stereo_node import StereoNode
from ffs_ros.synth import plane_pair

H, W, FX, BASELINE, Z = 120, 160, 400.0, 0.12, 2.0
DISP = FX * BASELINE / Z  # 24 px
_ns = itertools.count()


def make_node(ros_context, spin_nodes, ns, matcher=None, **params):
    base = {
        'backend': 'sgbm',
        'max_disparity': 64.0,
        'diagnostics_period_seconds': 0.2,
        'expected_rate': 0.0,
    }
    base.update(params)
    overrides = [Parameter(k, value=v) for k, v in base.items()]
    node = StereoNode(
        context=ros_context, namespace=ns, parameter_overrides=overrides, matcher=matcher
    )
    return spin_nodes(node)


def plane_msgs(stamp_ns=1_000_000_000, frame='left_optical', disparity=DISP, h=H, w=W):
    s = plane_pair(h, w, disparity, seed=3)
    left = numpy_to_image(s.left, 'rgb8')
    right = numpy_to_image(s.right, 'rgb8')
    left.header.frame_id = right.header.frame_id = frame
    li, ri = make_camera_infos(w, h, FX, BASELINE, frame_id=frame)
    return left, right, li, ri


@pytest.fixture
def setup(ros_context, spin_nodes, make_player):
    def go(player_kw=None, **params):
        ns = f'/itest{next(_ns)}'
        node = make_node(ros_context, spin_nodes, ns, **params)
        player = make_player(namespace=ns, **(player_kw or {}))
        assert player.wait_connected(node), 'player and stereo node did not connect'
        return node, player

    return go


def test_plane_at_two_metres(setup):
    node, player = setup()
    left, right, li, ri = plane_msgs()
    player.send(node, left, right, li, ri, stamp_ns=5_000_000_123)
    disp_msg = player.out['disparity'].wait_for(lambda m: True)
    depth_msg = player.out['depth'].wait_for(lambda m: True)
    cloud = player.out['points2'].wait_for(lambda m: True)
    info = player.out['depth_info'].wait_for(lambda m: True)
    assert (
        disp_msg is not None and depth_msg is not None and cloud is not None and info is not None
    )

    # headers: left image stamp and left optical frame
    for m in (disp_msg, depth_msg, cloud, info):
        assert (m.header.stamp.sec, m.header.stamp.nanosec) == (5, 123)
        assert m.header.frame_id == 'left_optical'

    # DisparityImage fields
    assert disp_msg.f == pytest.approx(FX) and disp_msg.t == pytest.approx(BASELINE)
    assert disp_msg.image.encoding == '32FC1' and (
        disp_msg.image.height,
        disp_msg.image.width,
    ) == (H, W)
    assert disp_msg.max_disparity > disp_msg.min_disparity >= 0
    d = np.frombuffer(bytes(disp_msg.image.data), np.float32).reshape(H, W)
    valid = np.isfinite(d)
    assert valid.mean() > 0.5
    assert np.median(d[valid]) == pytest.approx(DISP, rel=0.02)
    assert np.all(
        d[:,: int(DISP)][np.isfinite(d[:,: int(DISP)])]
        <= np.arange(int(DISP))[None,:].repeat(H, 0)[np.isfinite(d[:,: int(DISP)])] + 1e-3
    )  # no match beyond the left edge

    # depth image: metres, NaN invalid, within 2 %
    assert depth_msg.encoding == '32FC1'
    z = np.frombuffer(bytes(depth_msg.data), np.float32).reshape(H, W)
    zv = z[np.isfinite(z)]
    assert zv.size > 0.5 * H * W
    assert np.median(zv) == pytest.approx(Z, rel=0.02)
    assert np.mean(np.abs(zv - Z) < 0.02 * Z) > 0.9
    assert np.array_equal(np.isfinite(z), valid)

    # cloud: x y z float32 + packed rgb, organized HxW
    names = [f.name for f in cloud.fields]
    assert names[:3] == ['x', 'y', 'z'] and 'rgb' in names
    assert all(f.datatype == 7 for f in cloud.fields if f.name in 'xyz')  # FLOAT32
    assert (cloud.height, cloud.width) == (H, W)
    assert len(cloud.data) == cloud.row_step * cloud.height == H * W * cloud.point_step
    off = {f.name: f.offset for f in cloud.fields}
    raw = np.frombuffer(bytes(cloud.data), np.uint8).reshape(H * W, cloud.point_step)
    zc = raw[:, off['z']: off['z'] + 4].copy().view(np.float32).ravel()
    assert np.median(zc[np.isfinite(zc)]) == pytest.approx(Z, rel=0.02)
    assert info.k[0] == pytest.approx(FX) and (info.width, info.height) == (W, H)
    color = player.out['color'].wait_for(lambda m: True)
    assert color is not None and color.encoding == 'rgb8' and (color.height, color.width) == (H, W)
    assert color.header.frame_id == 'left_optical'

    # diagnostics: three statuses named after the node, processing has per-stage times
    diag = player.out['diagnostics'].wait_for(
        lambda a: any(
            s.name == 'stereo_node: processing'
            and any(kv.key == 'match p50 (ms)' and kv.value != 'nan' for kv in s.values)
            for s in a.status
        )
    )
    assert diag is not None
    names = {s.name for s in diag.status}
    assert {'stereo_node: input', 'stereo_node: processing', 'stereo_node: model'} <= names
    model = next(s for s in diag.status if s.name == 'stereo_node: model')
    assert {kv.key: kv.value for kv in model.values}['backend'] == 'sgbm'


def test_dense_cloud_16bit_depth_and_best_effort_publisher(setup):
    node, player = setup(
        player_kw={'reliable': False},
        organized_cloud=False,
        depth_encoding='16UC1',
        use_color=False,
        max_depth=10.0,
    )
    left, right, li, ri = plane_msgs()
    player.send(node, left, right, li, ri, stamp_ns=7_000_000_000)
    cloud = player.out['points2'].wait_for(lambda m: True)
    depth = player.out['depth'].wait_for(lambda m: True)
    assert cloud is not None and depth is not None
    assert [f.name for f in cloud.fields] == ['x', 'y', 'z']
    assert cloud.height == 1 and 0.5 * H * W < cloud.width < H * W
    pts = np.frombuffer(bytes(cloud.data), np.float32).reshape(-1, cloud.point_step // 4)[:,:3]
    assert np.all(np.isfinite(pts))
    assert np.median(pts[:, 2]) == pytest.approx(Z, rel=0.02)
    assert depth.encoding == '16UC1'
    mm = np.frombuffer(bytes(depth.data), np.uint16).reshape(H, W)
    assert np.median(mm[mm > 0]) == pytest.approx(Z * 1000, rel=0.02)


def test_outputs_only_computed_while_someone_subscribes(ros_context, spin_nodes, make_player):
    ns = f'/itest{next(_ns)}'
    node = make_node(ros_context, spin_nodes, ns)
    player = make_player(namespace=ns, outputs=())  # publishes inputs, subscribes to no output
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(
        p.get_subscription_count() for p in player.pubs.values()
    ):
        time.sleep(0.02)
    left, right, li, ri = plane_msgs()
    assert player.publish_infos(node, li, ri)
    for i in range(3):
        player.publish(left, right, stamp_ns=(i + 1) * 100_000_000)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and node.health.pairs_total < 3:
        time.sleep(0.02)
    assert node.wait_idle(5)
    assert node.health.pairs_total == 3 and node.health.published_total == 0


class SlowMatcher:
    """Wraps a matcher and sleeps, to make the camera outrun inference."""

    def __init__(self, inner, delay):
        self.inner, self.delay = inner, delay
        self.last_timings = {}

    @property
    def info(self):
        return self.inner.info

    def match(self, left, right):
        time.sleep(self.delay)
        return self.inner.match(left, right)

    def match_full(self, left, right):
        time.sleep(self.delay)
        return self.inner.match_full(left, right)

    __call__ = match

    def close(self):
        pass


def test_latest_pair_wins_when_the_camera_outruns_the_matcher(setup):
    from ffs_ros.inference import load_matcher

    node, player = setup(
        matcher=SlowMatcher(load_matcher(backend='sgbm', max_disparity=64), 0.15), queue_size=2
    )
    left, right, li, ri = plane_msgs()
    assert player.publish_infos(node, li, ri)
    n = 15
    for i in range(n):
        player.publish(left, right, stamp_ns=(i + 1) * 10_000_000)
        time.sleep(0.01)
    last = player.out['disparity'].wait_for(
        lambda m: m.header.stamp.nanosec == n * 10_000_000, timeout=10
    )
    assert last is not None, 'the newest pair must be processed'
    assert node.wait_idle(5)
    got = len(player.out['disparity'].msgs)
    assert got < n and node.dropped >= 1
    # every synchronized pair is either published or counted as dropped (a few may already be
    # lost in the subscription's KEEP_LAST queue when the machine is loaded: queues never grow)
    assert got + node.dropped == node.health.pairs_total <= n


def test_approximate_sync_pairs_offset_stamps_exact_does_not(setup):
    node, player = setup(approximate_sync=True, approximate_sync_tolerance_seconds=0.005)
    left, right, li, ri = plane_msgs()
    assert player.publish_infos(node, li, ri)
    player.publish(left=left, stamp_ns=1_000_000_000)
    player.publish(right=right, stamp_ns=1_003_000_000)  # 3 ms later
    assert player.out['disparity'].wait_for(lambda m: True) is not None

    node2, player2 = setup()  # exact sync (default)
    assert player2.publish_infos(node2, li, ri)
    player2.publish(left=left, stamp_ns=1_000_000_000)
    player2.publish(right=right, stamp_ns=1_003_000_000)
    diag = player2.out['diagnostics'].wait_for(
        lambda a: any(kv.key == 'pairs received' for s in a.status for kv in s.values), timeout=5
    )
    assert diag is not None
    time.sleep(0.3)
    assert player2.out['disparity'].msgs == [] and node2.health.pairs_total == 0
    assert node2.values['approximate_sync'] is False


def test_qos_defaults(setup):
    from rclpy.qos import QoSReliabilityPolicy

    node, _ = setup()
    assert node.sub_left.qos_profile.reliability == QoSReliabilityPolicy.BEST_EFFORT
    assert node.pub_points.qos_profile.reliability == QoSReliabilityPolicy.RELIABLE
    assert node.pub_disparity.topic_name.endswith('/disparity')
    assert node.sub_left_info.topic_name.endswith('/left/camera_info')


def test_model_backend_through_parameters(ros_context, spin_nodes, make_player, tmp_path):
    """backend/model parameters load a two-stage ONNX export; the node reports it.

    The export is the tiny matching model from the inference tests; the node reports it in
    diagnostics; a constant-disparity pair comes back as that disparity.
    """
    from test_inference_models import make_two_stage, shifted_pair

    _, _, model_dir = make_two_stage(tmp_path / 'model', 128, 256, 64, use_16=False)
    ns = f'/itest{next(_ns)}'
    node = make_node(
        ros_context,
        spin_nodes,
        ns,
        backend='onnxruntime',
        model=str(model_dir),
        threads=1,
        max_disparity=64.0,
    )
    player = make_player(namespace=ns, outputs=('disparity',))
    assert player.wait_connected(node)
    left_np, right_np = shifted_pair(128, 256, 8, seed=2)
    left, right = numpy_to_image(left_np, 'rgb8'), numpy_to_image(right_np, 'rgb8')
    li, ri = make_camera_infos(256, 128, FX, BASELINE)
    player.send(node, left, right, li, ri, stamp_ns=3_000_000_000)
    disp = player.out['disparity'].wait_for(lambda m: True, timeout=30)
    assert disp is not None
    d = np.frombuffer(bytes(disp.image.data), np.float32).reshape(128, 256)
    assert np.nanmedian(d[:, 32:]) == pytest.approx(8.0, abs=0.5)
    diag = player.out['diagnostics'].wait_for(
        lambda a: any(s.name == 'stereo_node: model' for s in a.status)
    )
    model = {
        kv.key: kv.value for s in diag.status if s.name == 'stereo_node: model' for kv in s.values
    }
    assert model['backend'] == 'onnxruntime' and model['network resolution'] == '256x128'


def test_unknown_parameter_names_are_warned_about(ros_context, spin_nodes, make_player):
    ns = f'/itest{next(_ns)}'
    player = make_player(namespace=ns, outputs=())
    node = make_node(
        ros_context, spin_nodes, ns, approximate_synk=True
    )  # typo of approximate_sync
    log = player.out['rosout'].wait_for(lambda m: 'approximate_synk' in m.msg, timeout=10)
    assert log is not None and log.level == 30 and 'approximate_sync' in log.msg
    assert node.values['approximate_sync'] is False


def test_diagnostics_error_when_no_pairs_arrive(ros_context, spin_nodes, make_player):
    ns = f'/itest{next(_ns)}'
    player = make_player(namespace=ns, outputs=())
    make_node(ros_context, spin_nodes, ns, no_pairs_timeout_seconds=0.3)
    diag = player.out['diagnostics'].wait_for(
        lambda a: any(
            s.name == 'stereo_node: input'
            and s.level == b'\x02'
            and 'no synchronized pairs' in s.message
            for s in a.status
        ),
        timeout=10,
    )
    assert diag is not None


def test_matcher_is_prepared_for_the_camera_size_before_the_first_pair(
    ros_context, spin_nodes, make_player
):
    """The first camera_info tells the node the input size.

    The matcher builds its engines then (in the background, once per size), not when the first pair
    arrives.
    """
    import threading

    from ffs_ros.inference import load_matcher

    class Preparing(type(load_matcher(None, 'sgbm'))):
        prepares = True

        def __init__(self):
            super().__init__(max_disparity=64)
            self.prepared = []
            self.done = threading.Event()

        def prepare(self, in_hw):
            self.prepared.append(tuple(in_hw))
            self.done.set()

    m = Preparing()
    ns = f'/itest{next(_ns)}'
    node = make_node(ros_context, spin_nodes, ns, matcher=m)
    player = make_player(namespace=ns)
    assert player.wait_connected(node)
    left, right, li, ri = plane_msgs()
    player.send(node, left, right, li, ri, stamp_ns=5_000_000_123)
    assert m.done.wait(10.0) and m.prepared[0] == (H, W)
    assert player.out['disparity'].wait_for(lambda msg: True) is not None
    player.send(node, left, right, li, ri, stamp_ns=6_000_000_123)
    player.out['disparity'].wait_for(lambda msg: msg.header.stamp.sec == 6)
    assert m.prepared == [(H, W)]


def test_node_pairs_with_message_filters_where_it_imports(setup):
    """The node pairs with ROS 2's message_filters where it imports, else with ours.

    That is on a distro and in the Jazzy venv of make test. The start-up line names it.
    """
    import importlib.util

    node, player = setup()
    expected = (
        'message_filters'
        if importlib.util.find_spec('message_filters')
        else 'ffs_ros StereoSynchronizer'
    )
    assert node._sync.name == expected
    left, right, li, ri = plane_msgs()
    assert player.publish_infos(node, li, ri)
    player.publish(left, right, stamp_ns=7_000_000_000)
    assert player.out['disparity'].wait_for(lambda m: m.header.stamp.sec == 7) is not None


def test_console_warns_when_no_pairs_arrive_and_names_the_cause(
    ros_context, spin_nodes, make_player
):
    """Warn on the console, not only on /diagnostics: topics, publishers, the likely cause."""
    from rcl_interfaces.msg import Log
    ns = f'/itest{next(_ns)}'
    player = make_player(namespace=ns, outputs=())
    make_node(ros_context, spin_nodes, ns, no_pairs_timeout_seconds=0.3)
    log = player.out['rosout'].wait_for(lambda m: 'no stereo pairs' in m.msg, timeout=10)
    assert log is not None and log.level == Log.WARN
    assert f'{ns}/left/image_rect: 1 publisher(s) (reliable)' in log.msg, log.msg
    assert 'images received: 0' in log.msg and 'shared-memory profile in BOTH processes' in log.msg


def test_reported_disparity_range_is_what_the_matcher_searches(setup):
    """Report the disparity range the matcher searches (64), not the config's (256).

    The log and diagnostics state the nearest measurable depth fx * B / 64.
    """
    from ffs_ros.inference import load_matcher
    matcher = load_matcher(backend='sgbm', max_disparity=64)
    node, player = setup(matcher=matcher, max_disparity=256.0)
    left, right, li, ri = plane_msgs()
    assert player.publish_infos(node, li, ri)
    player.publish(left, right, stamp_ns=8_000_000_000)
    msg = player.out['disparity'].wait_for(lambda m: m.header.stamp.sec == 8)
    assert msg is not None and msg.max_disparity == 64.0
    near = FX * BASELINE / 64
    log = player.out['rosout'].wait_for(lambda m: 'nearest measurable depth' in m.msg, timeout=5)
    assert log is not None and f'{near:.2f} m' in log.msg
    assert node.health.model_values['nearest measurable depth'] == f'{near:.2f} m'


class RampConfidenceMatcher:
    """Stands in for a model matcher: the plane's disparity and a left-to-right confidence ramp."""

    def __init__(self):
        from ffs_ros.inference.base import MatcherInfo

        self.info = MatcherInfo(backend='fake', confidence='network')
        self.prepares = False
        self.last_timings = {}
        self.ramp = np.tile(np.linspace(0, 1, W, dtype=np.float32), (H, 1))

    def match_full(self, left, right):
        from ffs_ros.inference.base import MatchResult

        d = np.full((H, W), DISP, np.float32)
        d[:, :30] = np.nan
        c = self.ramp.copy()
        c[:, :30] = np.nan
        return MatchResult(d, c)

    def match(self, left, right):
        return self.match_full(left, right).disparity

    def close(self):
        pass


def test_confidence_topic_threshold_and_diagnostics(ros_context, spin_nodes, make_player):
    """The confidence topic (32FC1, left header), the mask on disparity/cloud, diagnostics."""
    ns = f'/itest{next(_ns)}'
    matcher = RampConfidenceMatcher()
    node = make_node(
        ros_context, spin_nodes, ns, matcher=matcher, backend='onnxruntime',
        confidence_threshold=0.5,
    )
    player = make_player(namespace=ns, outputs=('disparity', 'points2', 'confidence'))
    assert player.wait_connected(node)
    player.send(node, *plane_msgs(), stamp_ns=7_000_000_000)
    conf = player.out['confidence'].wait_for(lambda m: True, timeout=20)
    disp = player.out['disparity'].wait_for(lambda m: True, timeout=20)
    cloud = player.out['points2'].wait_for(lambda m: True, timeout=20)
    assert conf is not None and disp is not None and cloud is not None
    assert conf.encoding == '32FC1' and conf.header.frame_id == 'left_optical'
    assert (conf.header.stamp.sec, conf.header.stamp.nanosec) == (7, 0)
    c = np.frombuffer(bytes(conf.data), np.float32).reshape(H, W)
    np.testing.assert_array_equal(c[:, 30:], matcher.ramp[:, 30:])
    keep = (matcher.ramp >= 0.5) & (np.arange(W) >= 30)[None, :]
    d = np.frombuffer(bytes(disp.image.data), np.float32).reshape(H, W)
    np.testing.assert_array_equal(np.isfinite(d), keep)
    off = {f.name: f.offset for f in cloud.fields}
    raw = np.frombuffer(bytes(cloud.data), np.uint8).reshape(H * W, cloud.point_step)
    zc = raw[:, off['z']: off['z'] + 4].copy().view(np.float32).reshape(H, W)
    np.testing.assert_array_equal(np.isfinite(zc), keep)
    diag = player.out['diagnostics'].wait_for(
        lambda a: any(
            s.name == 'stereo_node: processing'
            and any(kv.key == 'mean confidence' for kv in s.values)
            for s in a.status
        )
    )
    assert diag is not None
    proc = {
        kv.key: kv.value
        for s in diag.status
        if s.name == 'stereo_node: processing'
        for kv in s.values
    }
    model = {
        kv.key: kv.value for s in diag.status if s.name == 'stereo_node: model' for kv in s.values
    }
    valid = np.arange(W) >= 30
    assert float(proc['mean confidence']) == pytest.approx(matcher.ramp[0, valid].mean(), abs=1e-3)
    masked = 100 * (1 - keep[0].sum() / valid.sum())
    assert float(proc['masked by confidence_threshold (%)']) == pytest.approx(masked, abs=0.1)
    assert model['confidence'] == 'network'


def test_confidence_threshold_without_confidence_refused_at_start_up(ros_context, spin_nodes):
    from ffs_ros.node import params as P

    with pytest.raises(P.ParamError, match='confidence_threshold 0.3 needs a confidence'):
        make_node(ros_context, spin_nodes, f'/itest{next(_ns)}', confidence_threshold=0.3)
