"""Pairing of left/right images by header stamp (exact or approximate).

Why this exists: on a ROS distro `message_filters` provides TimeSynchronizer and
ApproximateTimeSynchronizer, but there is no ROS 2 message_filters for pip installs (PyPI has
none; Debian's python3-message-filters is the ROS 1 package and imports rospy). The node only
ever pairs TWO topics (camera infos are cached, not synchronized), so a small synchronizer of our
own with the same semantics is simpler than two code paths, behaves identically on both install
styles, and reports the numbers diagnostics need (sync failures = images that never found a
partner). `make_synchronizer` prefers message_filters where the ROS 2 package imports (a distro
install) and falls back to this class otherwise.

Semantics (as message_filters):
- exact: a pair is emitted when a left and a right image carry the identical stamp;
- approximate: a pair is emitted when the stamps differ by at most `tolerance` seconds
  (the partner with the closest stamp is chosen; `approximate_sync_tolerance_seconds`, the
  `slop` of ApproximateTimeSynchronizer);
- each side keeps at most `queue_size` unpaired messages (oldest evicted first);
- after a pair is emitted, every waiting message not newer than the pair is discarded (it can
  no longer form a newer pair; the node always wants the newest pair).
Not thread-safe by itself: call `add` from one thread (the executor's callbacks), or hold a lock.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

LEFT, RIGHT = 0, 1


def stamp_ns(msg: Any) -> int:
    """Header stamp of a ROS message in integer nanoseconds."""
    s = msg.header.stamp
    return int(s.sec) * 1_000_000_000 + int(s.nanosec)


def _check_arguments(queue_size: int, tolerance: float) -> None:
    if queue_size < 1:
        raise ValueError(f'queue_size must be >= 1, got {queue_size}')
    if tolerance < 0:
        raise ValueError(f'tolerance must be >= 0 s, got {tolerance}')


class _Counted:
    """What both synchronizers report to diagnostics."""

    unmatched: list

    @property
    def sync_failures(self) -> int:
        """Return the images discarded without ever being paired (both sides)."""
        return self.unmatched[LEFT] + self.unmatched[RIGHT]


class StereoSynchronizer(_Counted):
    """Pair left and right messages by stamp and call `callback(left, right)` for each pair."""

    name = 'ffs_ros StereoSynchronizer'

    def __init__(
        self,
        callback: Callable[[Any, Any], None],
        queue_size: int = 5,
        approximate: bool = False,
        tolerance: float = 0.0,
        stamp: Callable[[Any], int] = stamp_ns,
    ) -> None:
        _check_arguments(queue_size, tolerance)
        self._callback = callback
        self._stamp = stamp
        self.queue_size = int(queue_size)
        self.approximate = bool(approximate)
        self.tolerance_ns = int(round(tolerance * 1e9)) if approximate else 0
        # per side: deque of (stamp_ns, msg), kept sorted by arrival (normally = stamp order)
        self._queues: tuple[deque, deque] = (deque(), deque())
        self.pairs = 0
        self.unmatched = [0, 0]  # messages discarded without a partner, per side


    def queued(self, side: int) -> int:
        """Return the number of unpaired messages waiting on `side`.

        Never more than queue_size.
        """
        return len(self._queues[side])

    def add_left(self, msg: Any) -> None:
        self.add(LEFT, msg)

    def add_right(self, msg: Any) -> None:
        self.add(RIGHT, msg)

    def clear(self, side: int | None = None) -> None:
        """Forget the messages waiting on `side` (both sides when None); counted as unmatched.

        After one side's stamps went backwards only that side's queue belongs to the old timeline:
        the other side may already hold a message of the new one (topics are not ordered among
        themselves), and its own jump back clears its own queue.
        """
        for s in (LEFT, RIGHT) if side is None else (side,):
            self.unmatched[s] += len(self._queues[s])
            self._queues[s].clear()

    def add(self, side: int, msg: Any) -> None:
        """Offer one message from `side` (LEFT or RIGHT); may call the callback once."""
        t = self._stamp(msg)
        other = self._queues[1 - side]
        best = None
        best_dt = None
        for i, (to, _) in enumerate(other):
            dt = abs(to - t)
            if dt <= self.tolerance_ns and (best_dt is None or dt < best_dt):
                best, best_dt = i, dt
        if best is None:
            mine = self._queues[side]
            mine.append((t, msg))
            while len(mine) > self.queue_size:
                mine.popleft()
                self.unmatched[side] += 1
            return
        t_other, partner = other[best]
        del other[best]  # the partner is paired, not a failure
        self._discard_upto(1 - side, t_other)
        self._discard_upto(side, t)
        self.pairs += 1
        left, right = (msg, partner) if side == LEFT else (partner, msg)
        self._callback(left, right)

    def _discard_upto(self, side: int, t: int) -> None:
        """Drop (and count) every waiting message on `side` with a stamp <= t."""
        q = self._queues[side]
        while q and q[0][0] <= t:
            q.popleft()
            self.unmatched[side] += 1
        if any(e[0] <= t for e in q):  # out-of-order arrivals: rare, do it the slow way
            kept = [e for e in q if e[0] > t]
            self.unmatched[side] += len(q) - len(kept)
            q.clear()
            q.extend(kept)


class MessageFiltersSynchronizer(_Counted):
    """The same interface as StereoSynchronizer, backed by ROS 2 `message_filters` (on a distro).

    Our own subscriptions feed two `message_filters.SimpleFilter`s, so the node keeps one code path
    for QoS, the stamps-backwards check and the camera-info cache, and only the pairing is
    delegated. Only the public API of message_filters is used: this class keeps its own record of
    the last `queue_size` unpaired images per side (what message_filters holds at most), so
    `sync_failures` means what it means with our synchronizer (images discarded without ever being
    paired: pushed out of the queue, or cleared), and `clear(side)` recreates the synchronizer and
    offers it again the other side's waiting images.
    """

    name = 'message_filters'

    def __init__(
        self,
        callback: Callable[[Any, Any], None],
        queue_size: int = 5,
        approximate: bool = False,
        tolerance: float = 0.0,
        module: Any = None,
    ) -> None:
        _check_arguments(queue_size, tolerance)
        self._mf = module if module is not None else __import__('message_filters')
        self._callback = callback
        self.queue_size = int(queue_size)
        self.approximate = bool(approximate)
        self.tolerance = float(tolerance)
        self.pairs = 0
        self.unmatched = [0, 0]
        self._pending: tuple[deque, deque] = (
            deque(),
            deque(),
        )  # unpaired messages offered, per side
        self._build()

    def _build(self) -> None:
        mf = self._mf
        self._inputs = (mf.SimpleFilter(), mf.SimpleFilter())
        if self.approximate:
            self._sync = mf.ApproximateTimeSynchronizer(
                list(self._inputs), self.queue_size, self.tolerance
            )
        else:
            self._sync = mf.TimeSynchronizer(list(self._inputs), self.queue_size)
        self._sync.registerCallback(self._paired)

    def _paired(self, left: Any, right: Any) -> None:
        for side, msg in ((LEFT, left), (RIGHT, right)):
            q = self._pending[side]
            for i, m in enumerate(q):
                if m is msg:
                    del q[i]
                    break
        self.pairs += 1
        self._callback(left, right)


    def queued(self, side: int) -> int:
        """Return the number of unpaired messages waiting on `side`.

        Never more than queue_size.
        """
        return len(self._pending[side])

    def add(self, side: int, msg: Any) -> None:
        q = self._pending[side]
        q.append(msg)
        while len(q) > self.queue_size:  # message_filters has let it go too
            q.popleft()
            self.unmatched[side] += 1
        self._inputs[side].signalMessage(msg)

    def clear(self, side: int | None = None) -> None:
        """Forget the messages waiting on `side` (both when None).

        A new synchronizer, offered again the other side's waiting messages (they may already
        belong to the new timeline).
        """
        keep = [] if side is None else list(self._pending[1 - side])
        for s in (LEFT, RIGHT) if side is None else (side,):
            self.unmatched[s] += len(self._pending[s])
        self._pending = (deque(), deque())
        self._build()
        for msg in keep:
            self.add(1 - side, msg)


def make_synchronizer(
    callback: Callable[[Any, Any], None],
    queue_size: int = 5,
    approximate: bool = False,
    tolerance: float = 0.0,
):
    """message_filters' synchronizers where the ROS 2 package is importable, else ours.

    Debian's python3-message-filters is the ROS 1 package (it imports rospy) and fails to import
    or lacks the ROS 2 API; any such failure falls back to StereoSynchronizer.
    """
    try:
        import message_filters as mf

        if all(
            hasattr(mf, n)
            for n in ('SimpleFilter', 'TimeSynchronizer', 'ApproximateTimeSynchronizer')
        ):
            return MessageFiltersSynchronizer(
                callback, queue_size, approximate, tolerance, module=mf
            )
    except Exception:  # noqa: BLE001 - ImportError, or the ROS 1 package failing on rospy
        pass
    return StereoSynchronizer(
        callback, queue_size=queue_size, approximate=approximate, tolerance=tolerance
    )
