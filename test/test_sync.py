"""StereoSynchronizer: exact and approximate pairing, tolerance, bounded queues, failure counts."""

from types import SimpleNamespace

import pytest

from ffs_ros.node.sync import LEFT, RIGHT, StereoSynchronizer, stamp_ns


def msg(t_ns, tag=''):
    """Return a minimal message with header.stamp (sec, nanosec) like sensor_msgs/Image."""
    return SimpleNamespace(
        tag=tag,
        header=SimpleNamespace(
            stamp=SimpleNamespace(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)
        ),
    )


MS = 1_000_000


def collect(**kw):
    pairs = []
    sync = StereoSynchronizer(lambda lft, r: pairs.append((stamp_ns(lft), stamp_ns(r))), **kw)
    return sync, pairs


def test_stamp_ns_combines_sec_and_nanosec():
    assert stamp_ns(msg(3_000_000_123)) == 3_000_000_123


def test_exact_pairs_identical_stamps_in_either_order():
    sync, pairs = collect()
    sync.add_left(msg(10 * MS))
    assert pairs == []
    sync.add_right(msg(10 * MS))
    sync.add_right(msg(20 * MS))
    sync.add_left(msg(20 * MS))
    assert pairs == [(10 * MS, 10 * MS), (20 * MS, 20 * MS)]
    assert sync.sync_failures == 0 and sync.queued(LEFT) == sync.queued(RIGHT) == 0


def test_exact_rejects_stamps_one_nanosecond_apart():
    sync, pairs = collect()
    sync.add_left(msg(10 * MS))
    sync.add_right(msg(10 * MS + 1))
    assert pairs == []
    assert sync.queued(LEFT) == 1 and sync.queued(RIGHT) == 1


def test_approximate_pairs_within_tolerance_and_picks_closest():
    sync, pairs = collect(approximate=True, tolerance=0.005)
    sync.add_right(msg(96 * MS))
    sync.add_right(msg(103 * MS))
    sync.add_left(msg(100 * MS))  # 96 is 4 ms away, 103 is 3 ms away -> 103
    assert pairs == [(100 * MS, 103 * MS)]
    # the older right image can no longer form a newer pair: discarded and counted
    assert sync.queued(RIGHT) == 0 and sync.unmatched[RIGHT] == 1


def test_approximate_tolerance_is_a_hard_limit():
    sync, pairs = collect(approximate=True, tolerance=0.005)
    sync.add_left(msg(100 * MS))
    sync.add_right(msg(106 * MS))  # 6 ms > 5 ms
    assert pairs == []
    sync.add_left(msg(105 * MS + 500_000))  # 0.5 ms from the waiting right
    assert pairs == [(105 * MS + 500_000, 106 * MS)]
    assert sync.unmatched[LEFT] == 1  # the 100 ms left image never found a partner


def test_tolerance_is_ignored_when_not_approximate():
    sync, pairs = collect(approximate=False, tolerance=0.5)
    sync.add_left(msg(100 * MS))
    sync.add_right(msg(101 * MS))
    assert pairs == []


@pytest.mark.parametrize('approximate', [False, True])
def test_queues_are_bounded_and_overflow_counts_as_sync_failure(approximate):
    sync, pairs = collect(queue_size=3, approximate=approximate, tolerance=0.001)
    for i in range(50):  # left images whose partners never come
        sync.add_left(msg(i * 100 * MS))
    assert sync.queued(LEFT) == 3
    assert sync.unmatched[LEFT] == 47 and sync.sync_failures == 47
    # the newest ones are kept: a right image matching the last left still pairs
    sync.add_right(msg(49 * 100 * MS))
    assert pairs == [(4900 * MS, 4900 * MS)]
    assert sync.queued(LEFT) == 0  # older waiting lefts were discarded
    assert sync.sync_failures == 49


def test_clear_forgets_waiting_messages():
    sync, pairs = collect()
    sync.add_left(msg(1 * MS))
    sync.add_right(msg(2 * MS))
    sync.clear()
    sync.add_right(msg(1 * MS))
    assert pairs == [] and sync.sync_failures == 2


def test_callback_gets_left_then_right_objects():
    got = []
    sync = StereoSynchronizer(lambda lft, r: got.append((lft.tag, r.tag)))
    sync.add_right(msg(5, 'R'))
    sync.add_left(msg(5, 'L'))
    assert got == [('L', 'R')]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='queue_size'):
        StereoSynchronizer(lambda lft, r: None, queue_size=0)
    with pytest.raises(ValueError, match='tolerance'):
        StereoSynchronizer(lambda lft, r: None, approximate=True, tolerance=-1)


class _FakeMessageFilters:
    """Stand-in for ROS 2 message_filters (not installable here) with its documented Python API.

    SimpleFilter.registerCallback/signalMessage; TimeSynchronizer(fs, queue_size) pairing equal
    stamps from bounded per-input queues kept in `queues` under `lock`.
    """

    class SimpleFilter:
        def __init__(self):
            self.callbacks = []

        def registerCallback(self, cb):
            self.callbacks.append(cb)

        def signalMessage(self, *m):
            for cb in self.callbacks:
                cb(*m)

    class TimeSynchronizer(SimpleFilter):
        def __init__(self, fs, queue_size):
            super().__init__()
            import threading

            self.lock = threading.Lock()
            self.queue_size = queue_size
            self.queues = [{} for _ in fs]
            for i, f in enumerate(fs):
                f.registerCallback(lambda m, i=i: self.add(m, i))

        def add(self, m, i):
            with self.lock:
                q = self.queues[i]
                q[stamp_ns(m)] = m
                while len(q) > self.queue_size:
                    del q[min(q)]
                common = set.intersection(*(set(q) for q in self.queues))
                if not common:
                    return
                t = max(common)
                ms = [q[t] for q in self.queues]
                for q in self.queues:
                    for k in [k for k in q if k <= t]:
                        del q[k]
            self.signalMessage(*ms)

    ApproximateTimeSynchronizer = None  # only the exact policy is exercised here


def test_make_synchronizer_uses_message_filters_when_importable(monkeypatch):
    import sys

    from ffs_ros.node.sync import MessageFiltersSynchronizer, make_synchronizer

    fake = _FakeMessageFilters()
    fake.ApproximateTimeSynchronizer = object  # present, like the real module
    monkeypatch.setitem(sys.modules, 'message_filters', fake)
    pairs = []
    sync = make_synchronizer(lambda lft, r: pairs.append((lft.tag, r.tag)), queue_size=3)
    assert isinstance(sync, MessageFiltersSynchronizer)
    sync.add(LEFT, msg(10 * MS, 'l10'))
    sync.add(RIGHT, msg(11 * MS, 'r11'))
    sync.add(RIGHT, msg(10 * MS, 'r10'))
    assert pairs == [('l10', 'r10')]
    assert (
        sync.sync_failures == 0 and sync.queued(RIGHT) == 1
    )  # r11 is still waiting, not a failure
    sync.clear()
    assert sync.sync_failures == 1  # r11 was discarded by clear()
    sync.add(LEFT, msg(11 * MS, 'l11'))  # r11 was forgotten by clear(): no pair
    assert pairs == [('l10', 'r10')]


def test_make_synchronizer_falls_back_without_message_filters(monkeypatch):
    import sys

    from ffs_ros.node.sync import make_synchronizer

    monkeypatch.setitem(sys.modules, 'message_filters', None)  # import raises ImportError
    assert isinstance(make_synchronizer(lambda lft, r: None), StereoSynchronizer)


def test_clear_one_side_keeps_the_other_sides_new_timeline():
    # time jumped back: the left 4.0 image was seen, then the left 4.1 image arrived before the
    # late right
    # 4.0 image (topics are not ordered among themselves); clearing the right side must keep left
    # 4.1
    sync, pairs = collect()
    sync.add_left(msg(4100 * MS))
    sync.add_right(msg(9000 * MS))  # an old-timeline image still waiting on the right
    sync.clear(RIGHT)
    sync.add_right(msg(4100 * MS))
    assert pairs == [(4100 * MS, 4100 * MS)]
