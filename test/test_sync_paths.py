"""The same pairing semantics and the same diagnostics from both synchronizer paths.

Ours (pip installs) and ROS 2's real message_filters (a distro; here from
../shared/wheels/message-filters, imported from the wheel).
"""

from pathlib import Path
import sys

import pytest

from ffs_ros.node.sync import LEFT, RIGHT, MessageFiltersSynchronizer, StereoSynchronizer

MS = 1_000_000
WHEEL = (
    Path(__file__).resolve().parents[2]
    / 'shared'
    / 'wheels'
    / 'message-filters'
    / 'message_filters-4.11.2-py3-none-any.whl'
)


@pytest.fixture(scope='module')
def real_mf():
    """Yield ROS 2 message_filters: installed, else imported from the wheel for this module.

    Installed: Jazzy venv, distro. The wheel import is for this module only (removed again
    afterwards, so later tests in this process keep the synchronizer their venv gives).
    """
    try:
        import message_filters as mf

        yield mf
        return
    except ImportError:
        pass
    if not WHEEL.is_file():
        pytest.skip(f'ROS 2 message_filters is not installed and {WHEEL} is absent (../shared)')
    sys.path.insert(0, str(WHEEL))  # a pure-Python wheel imports straight from the zip
    try:
        import message_filters as mf

        yield mf
    finally:
        sys.path.remove(str(WHEEL))
        for name in [
            n for n in sys.modules if n == 'message_filters' or n.startswith('message_filters.')
        ]:
            del sys.modules[name]


def msg(t_ns, tag=''):
    """Return a real sensor_msgs/Image header.

    message_filters reads stamps with rclpy.time.Time.from_msg.
    """
    from sensor_msgs.msg import Image

    m = Image()
    m.header.stamp.sec, m.header.stamp.nanosec = divmod(t_ns, 1_000_000_000)
    m.header.frame_id = tag
    return m


@pytest.fixture(params=['ffs_ros', 'message_filters'])
def make(request):
    mf = request.getfixturevalue('real_mf') if request.param == 'message_filters' else None

    def build(queue_size=5, approximate=False, tolerance=0.0):
        pairs = []

        def cb(left, right):
            pairs.append((left.header.frame_id, right.header.frame_id))

        if request.param == 'ffs_ros':
            sync = StereoSynchronizer(cb, queue_size, approximate, tolerance)
        else:
            sync = MessageFiltersSynchronizer(cb, queue_size, approximate, tolerance, module=mf)
        return sync, pairs

    return build


def test_exact_pairs_in_either_order_and_nothing_else(make):
    sync, pairs = make()
    sync.add(LEFT, msg(10 * MS, 'l10'))
    sync.add(RIGHT, msg(10 * MS + 1, 'r10+1ns'))
    sync.add(RIGHT, msg(10 * MS, 'r10'))
    sync.add(RIGHT, msg(20 * MS, 'r20'))
    sync.add(LEFT, msg(20 * MS, 'l20'))
    assert pairs == [('l10', 'r10'), ('l20', 'r20')]


def test_approximate_pairs_within_the_tolerance_only(make):
    sync, pairs = make(approximate=True, tolerance=0.005)
    sync.add(LEFT, msg(100 * MS, 'l100'))
    sync.add(RIGHT, msg(103 * MS, 'r103'))
    sync.add(LEFT, msg(200 * MS, 'l200'))
    sync.add(RIGHT, msg(220 * MS, 'r220'))  # 20 ms: too far
    assert pairs[:1] == [('l100', 'r103')] and ('l200', 'r220') not in pairs


def test_overflow_counts_as_sync_failures_the_same_way(make):
    """Diagnostics mean the same on both paths.

    Images pushed out of the queue without a partner.
    """
    sync, pairs = make(queue_size=3)
    for i in range(10):
        sync.add(LEFT, msg((i + 1) * 10 * MS, f'l{i}'))
    assert pairs == [] and sync.sync_failures == 7 and sync.queued(LEFT) == 3


def test_clearing_one_side_keeps_the_other_sides_new_timeline(make):
    """Stamps went back on the right.

    Its old images go; the left's new-timeline image still pairs.
    """
    sync, pairs = make()
    sync.add(LEFT, msg(4100 * MS, 'l4.1'))
    sync.add(RIGHT, msg(9000 * MS, 'r9'))  # old timeline, waiting
    sync.clear(RIGHT)
    assert sync.sync_failures == 1
    sync.add(RIGHT, msg(4100 * MS, 'r4.1'))
    assert pairs == [('l4.1', 'r4.1')]
