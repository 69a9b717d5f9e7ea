"""Each bad input: a log line, diagnostics ERROR, frame dropped, node alive.

The log line names the problem and the fix; the next good pair is published.
"""

import itertools
import math
import time

import numpy as np
import pytest
from rclpy.parameter import Parameter

from ffs_ros.convert import make_camera_infos, numpy_to_image
from ffs_ros.node.stereo_node import StereoNode
from ffs_ros.synth import plane_pair

H, W, FX, BASELINE = 96, 128, 400.0, 0.12
_ns = itertools.count()
_SAMPLE = plane_pair(H, W, 24.0, seed=5)


def good():
    left = numpy_to_image(_SAMPLE.left, 'rgb8')
    right = numpy_to_image(_SAMPLE.right, 'rgb8')
    left.header.frame_id = right.header.frame_id = 'left_optical'
    li, ri = make_camera_infos(W, H, FX, BASELINE)
    return left, right, li, ri


def _unsupported_encoding(lft, r, li, ri):
    lft.encoding = '16SC1'
    lft.step = W * 2
    lft.data = bytes(H * W * 2)
    return lft, r, li, ri


def _size_mismatch(lft, r, li, ri):
    small = plane_pair(H, W - 8, 24.0, seed=5)
    return lft, numpy_to_image(small.right, 'rgb8'), li, ri


def _info_size_mismatch(lft, r, li, ri):
    li2, ri2 = make_camera_infos(2 * W, 2 * H, FX, BASELINE)
    return lft, r, li2, ri2


def _data_length(lft, r, li, ri):
    lft.data = bytes(lft.data)[: -W * 3]  # one row short
    return lft, r, li, ri


def _step_too_small(lft, r, li, ri):
    lft.step = W * 3 - 3
    lft.data = bytes(lft.data)[: lft.step * H]
    return lft, r, li, ri


def _empty(lft, r, li, ri):
    lft.height = lft.width = lft.step = 0
    lft.data = b''
    return lft, r, li, ri


def _nan_k(lft, r, li, ri):
    k = list(li.k)
    k[0] = math.nan
    li.k = k
    return lft, r, li, ri


def _zero_p(lft, r, li, ri):
    p = list(ri.p)
    p[0] = 0.0
    ri.p = p
    return lft, r, li, ri


def _negative_baseline(lft, r, li, ri):
    li2, ri2 = make_camera_infos(W, H, FX, -BASELINE)
    return lft, r, li2, ri2


def _big_endian_16(lft, r, li, ri):
    grey = (_SAMPLE.left.mean(axis=2) * 256).astype('>u2')
    lft = numpy_to_image(grey.astype(np.uint16), 'mono16')
    lft.data = grey.tobytes()
    lft.is_bigendian = 1
    return lft, r, li, ri


BAD = {  # name -> (mutation, words the ERROR / log line must contain)
    'unsupported encoding': (_unsupported_encoding, ['16SC1']),
    'left/right size mismatch': (_size_mismatch, ['128x96', f'{W - 8}x96']),
    'image vs camera_info size': (_info_size_mismatch, ['camera_info']),
    'data length != step*height': (_data_length, ['step']),
    'step < width*bpp': (_step_too_small, ['step']),
    'empty image': (_empty, ['empty']),
    'NaN in K': (_nan_k, ['K']),
    'zero in P': (_zero_p, ['P']),
    'negative baseline': (_negative_baseline, ['swapped']),
    'big-endian 16-bit': (_big_endian_16, ['endian']),
}


def make_node(ros_context, spin_nodes, ns):
    overrides = [
        Parameter('backend', value='sgbm'),
        Parameter('max_disparity', value=48.0),
        Parameter('diagnostics_period_seconds', value=0.1),
        Parameter('diagnostics_window_seconds', value=30.0),
    ]
    return spin_nodes(StereoNode(context=ros_context, namespace=ns, parameter_overrides=overrides))


def error_status(player, words, timeout=10.0):
    """Return the first diagnostics input status at ERROR whose message contains all `words`."""

    def pred(arr):
        return any(
            s.level == b'\x02'
            and s.name == 'stereo_node: input'
            and all(w.lower() in s.message.lower() for w in words)
            for s in arr.status
        )

    return player.out['diagnostics'].wait_for(pred, timeout)


def assert_recovers(node, player, stamp_ns):
    assert node.context.ok()
    lft, r, li, ri = good()
    player.send(node, lft, r, li, ri, stamp_ns=stamp_ns)
    got = player.out['disparity'].wait_for(
        lambda m: m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == stamp_ns
    )
    assert got is not None, 'the next good pair was not published'


@pytest.fixture
def rig(ros_context, spin_nodes, make_player):
    ns = f'/badtest{next(_ns)}'
    node = make_node(ros_context, spin_nodes, ns)
    player = make_player(namespace=ns, outputs=('disparity',))
    assert player.wait_connected(node)
    return node, player


@pytest.mark.parametrize('name', list(BAD))
def test_bad_input_is_reported_dropped_and_survived(rig, name):
    node, player = rig
    mutate, words = BAD[name]
    player.send(node, *mutate(*good()), stamp_ns=1_000_000_000)
    st = error_status(player, words)
    assert st is not None, f'no diagnostics ERROR naming {words} for {name}'
    log = player.out['rosout'].wait_for(
        lambda m: (
            m.name.endswith('stereo_node')
            and 'fix:' in m.msg
            and all(w.lower() in m.msg.lower() for w in words)
        )
    )
    assert log is not None and log.level >= 40, 'no ERROR log line naming the problem and the fix'
    assert node.wait_idle(5)
    assert player.out['disparity'].msgs == [] and node.bad_frames >= 1
    assert_recovers(node, player, 2_000_000_000)


def test_camera_info_not_received_names_the_topic(rig):
    node, player = rig
    lft, r, li, ri = good()
    player.publish(left_info=li)
    time.sleep(0.2)
    topic = node.sub_right_info.topic_name
    st = None  # quiet at first (start-up: infos often trail the images); ERROR once it persists
    for i in range(40):  # pairs at ~10 Hz: persisting means > 1 s or more than 3 pairs
        player.publish(left=lft, right=r, stamp_ns=(i + 1) * 10_000_000)  # no right camera_info
        st = error_status(player, ['camera_info not yet received', topic], timeout=0.1)
        if st is not None:
            break
    assert st is not None
    log = player.out['rosout'].wait_for(lambda m: topic in m.msg and 'fix:' in m.msg)
    assert log is not None
    assert player.out['disparity'].msgs == []
    assert_recovers(node, player, 2_000_000_000)  # send() publishes the right camera_info too


def test_stamps_going_backwards(rig):
    node, player = rig
    assert_recovers(node, player, 5_000_000_000)
    lft, r, li, ri = good()
    player.send(node, lft, r, li, ri, stamp_ns=4_000_000_000)  # time went back 1 s
    assert error_status(player, ['backwards']) is not None
    assert node.wait_idle(5)
    assert len(player.out['disparity'].msgs) == 1
    assert_recovers(node, player, 4_100_000_000)  # the new timeline is processed normally


def test_bad_input_log_is_throttled(rig):
    node, player = rig
    import time

    for i in range(5):
        player.send(node, *_empty(*good()), stamp_ns=(i + 1) * 1_000_000_000)
        time.sleep(0.05)
    assert error_status(player, ['empty']) is not None
    assert node.wait_idle(5)
    time.sleep(0.3)
    lines = [m for m in player.out['rosout'].msgs if 'empty' in m.msg.lower()]
    assert node.bad_frames + node.dropped == 5 and node.bad_frames >= 2 and len(lines) == 1
