"""Issue 10 at the node: narrow sgbm frames, camera_info arriving just after the images, stamps
jumping ahead, frame_id mismatches and camera_info matched to images by stamp."""
import itertools

import pytest
from rclpy.parameter import Parameter

from ffs_ros.convert import make_camera_infos, numpy_to_image
from ffs_ros.node.stereo_node import StereoNode
from ffs_ros.synth import plane_pair
from test_node_bad_input import assert_recovers, error_status, good

_ns = itertools.count()


def stamp(m):
    return m.header.stamp.sec * 10**9 + m.header.stamp.nanosec


@pytest.fixture
def rig_with(ros_context, spin_nodes, make_player):
    """`rig_with(**params)` -> (node, player): an sgbm stereo node (max_disparity 48) and a player."""
    def make(**params):
        ns = f'/timing{next(_ns)}'
        values = {'backend': 'sgbm', 'max_disparity': 48.0, 'diagnostics_period_seconds': 0.1,
                  'diagnostics_window_seconds': 30.0, **params}
        node = spin_nodes(StereoNode(context=ros_context, namespace=ns, parameter_overrides=[
            Parameter(k, value=v) for k, v in values.items()]))
        player = make_player(namespace=ns, outputs=('disparity',))
        assert player.wait_connected(node)
        return node, player
    return make


def test_narrow_sgbm_pair_is_bad_input_and_the_next_pair_is_processed(rig_with):
    node, player = rig_with()
    s = plane_pair(96, 33, 8.0, seed=5)   # 33 px < the 48-px disparity range (cv2.error before the fix)
    li, ri = make_camera_infos(33, 96, 400.0, 0.12)
    player.send(node, numpy_to_image(s.left, 'rgb8'), numpy_to_image(s.right, 'rgb8'), li, ri,
                stamp_ns=1_000_000_000)
    assert error_status(player, ['width 33 px', 'too narrow']) is not None
    log = player.out['rosout'].wait_for(lambda m: 'too narrow' in m.msg and 'max_disparity to 32.0' in m.msg)
    assert log is not None and log.level == 40
    assert node.wait_idle(5)
    assert node.health.errors_total == 0
    assert not any('processing failed' in m.msg for m in player.out['rosout'].msgs)
    assert_recovers(node, player, 2_000_000_000)
