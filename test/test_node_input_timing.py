"""Issue 10 at the node.

Narrow sgbm frames, camera_info arriving just after the images, stamps jumping ahead, frame_id
mismatches and camera_info matched to images by stamp.
"""

import itertools
import time

import pytest
from rclpy.parameter import Parameter
from test_node_bad_input import assert_recovers, error_status

from ffs_ros.convert import make_camera_infos, numpy_to_image
from ffs_ros.node.stereo_node import StereoNode
from ffs_ros.synth import plane_pair

_ns = itertools.count()


def stamp(m):
    return m.header.stamp.sec * 10**9 + m.header.stamp.nanosec


@pytest.fixture
def rig_with(ros_context, spin_nodes, make_player):
    """Return a factory: `rig_with(**params)` -> (node, player).

    The node is an sgbm stereo node (max_disparity 48) and a player.
    """

    def make(**params):
        ns = f'/timing{next(_ns)}'
        values = {
            'backend': 'sgbm',
            'max_disparity': 48.0,
            'diagnostics_period_seconds': 0.1,
            'diagnostics_window_seconds': 30.0,
            **params,
        }
        node = spin_nodes(
            StereoNode(
                context=ros_context,
                namespace=ns,
                parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
            )
        )
        player = make_player(namespace=ns, outputs=('disparity',))
        assert player.wait_connected(node)
        return node, player

    return make


def test_narrow_sgbm_pair_is_bad_input_and_the_next_pair_is_processed(rig_with):
    node, player = rig_with()
    s = plane_pair(
        96, 33, 8.0, seed=5
    )  # 33 px < the 48-px disparity range (cv2.error before the fix)
    li, ri = make_camera_infos(33, 96, 400.0, 0.12)
    player.send(
        node,
        numpy_to_image(s.left, 'rgb8'),
        numpy_to_image(s.right, 'rgb8'),
        li,
        ri,
        stamp_ns=1_000_000_000,
    )
    assert error_status(player, ['width 33 px', 'too narrow']) is not None
    log = player.out['rosout'].wait_for(
        lambda m: 'too narrow' in m.msg and 'max_disparity to 32.0' in m.msg
    )
    assert log is not None and log.level == 40
    assert node.wait_idle(5)
    assert node.health.errors_total == 0
    assert not any('processing failed' in m.msg for m in player.out['rosout'].msgs)
    assert_recovers(node, player, 2_000_000_000)


def pair(w=128, h=96, fx=400.0, seed=5):
    s = plane_pair(h, w, 24.0, seed=seed)
    left, right = numpy_to_image(s.left, 'rgb8'), numpy_to_image(s.right, 'rgb8')
    left.header.frame_id = right.header.frame_id = 'left_optical'
    return (left, right, *make_camera_infos(w, h, fx, 0.12))


def published(player, t, timeout=10.0):
    return player.out['disparity'].wait_for(lambda m: stamp(m) == t, timeout)


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def errors(player, word):
    return [m for m in player.out['rosout'].msgs if m.level >= 40 and word in m.msg]


def test_images_just_before_their_first_camera_info_are_processed_without_an_error(rig_with):
    node, player = rig_with()
    lft, r, li, ri = pair()
    player.publish(left=lft, right=r, stamp_ns=1_000_000_000)  # a driver: image first,
    player.publish(left_info=li, right_info=ri, stamp_ns=1_000_000_000)  # its info just after
    assert published(player, 1_000_000_000) is not None
    assert node.wait_idle(5)
    assert errors(player, 'camera_info') == [] and node.bad_frames == 0


def test_camera_info_missing_at_start_up_is_quiet_until_it_persists(rig_with):
    node, player = rig_with(camera_info_wait_seconds=0.0)  # no waiting: the first pair has no info
    lft, r, li, ri = pair()
    player.publish(left=lft, right=r, stamp_ns=1_000_000_000)
    assert wait_until(lambda: node.health.pairs_total == 1) and node.wait_idle(5)
    player.publish(left_info=li, right_info=ri, stamp_ns=1_000_000_000)
    player.send(node, lft, r, li, ri, stamp_ns=2_000_000_000)
    assert published(player, 2_000_000_000) is not None
    assert published(player, 1_000_000_000, timeout=0.1) is None  # dropped, quietly
    assert errors(player, 'camera_info') == [] and node.bad_frames == 0


def test_one_future_stamp_does_not_poison_the_stream(rig_with):
    node, player = rig_with()
    future = 2_140_000_000 * 10**9  # January 2038
    for t in (5_000_000_000, future, 5_100_000_000, 5_200_000_000):
        player.send(node, *pair(), stamp_ns=t)
        assert published(player, t) is not None, f'pair {t} not published'
        assert node.wait_idle(5)
    warn = player.out['rosout'].wait_for(
        lambda m: 'jumped' in m.msg and 'max_stamp_jump_seconds' in m.msg
    )
    assert warn is not None and warn.level == 30
    assert errors(player, 'backwards') == [] and node.bad_frames == 0


def test_a_confirmed_jump_ahead_becomes_the_new_timeline(rig_with):
    node, player = rig_with(max_stamp_jump_seconds=10.0)
    for t in (5_000_000_000, 100_000_000_000, 100_100_000_000):  # +95 s, then confirmed
        player.send(node, *pair(), stamp_ns=t)
        assert published(player, t) is not None
        assert node.wait_idle(5)
    player.send(node, *pair(), stamp_ns=5_200_000_000)  # the old timeline is gone now
    assert error_status(player, ['backwards']) is not None
    assert node.wait_idle(5)
    assert published(player, 5_200_000_000, timeout=0.1) is None


def test_camera_info_is_matched_to_the_images_by_stamp(rig_with):
    """Drivers publish each image before its camera_info; size and K change from frame to frame."""
    node, player = rig_with()
    frames = [
        (128, 96, 400.0),
        (112, 80, 300.0),
        (128, 96, 350.0),
        (112, 80, 300.0),
        (112, 80, 320.0),
        (128, 96, 400.0),
    ]
    for i, (w, h, fx) in enumerate(frames):
        t = (i + 1) * 1_000_000_000
        lft, r, li, ri = pair(w, h, fx)
        player.publish(left=lft, right=r, stamp_ns=t)
        player.publish(left_info=li, right_info=ri, stamp_ns=t)
        d = published(player, t)
        assert d is not None, f'frame {i} ({w}x{h}) was not published'
        assert (d.image.width, d.image.height, d.f) == (w, h, fx), i
        assert node.wait_idle(5)
    assert node.bad_frames == 0 and errors(player, 'camera_info') == []


def test_frame_ids_that_differ_get_one_warning(rig_with):
    node, player = rig_with()
    for t, (lf, rf) in (
        (1_000_000_000, ('cam_left_optical', 'cam_right_optical')),  # usual naming
        (2_000_000_000, ('left_optical', 'rear_optical')),
        (3_000_000_000, ('left_optical', 'rear_optical')),
    ):
        lft, r, li, ri = pair()
        lft.header.frame_id, r.header.frame_id = lf, rf
        player.send(node, lft, r, li, ri, stamp_ns=t)
        assert published(player, t) is not None
        assert node.wait_idle(5)
    warns = [m for m in player.out['rosout'].msgs if 'frame_id' in m.msg]
    assert len(warns) == 1 and warns[0].level == 30, [m.msg for m in warns]
    assert "'rear_optical'" in warns[0].msg and 'swapped' in warns[0].msg
