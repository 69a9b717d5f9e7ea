"""Shared fixtures for tests that use real rclpy (pattern: shared/docs/ros2-without-a-distro.md).

- One rclpy Context per test session, created lazily by the `ros_context` fixture, with
  SignalHandlerOptions.NO (pytest keeps Ctrl-C) on a domain id unique to this process.
- ROS_AUTOMATIC_DISCOVERY_RANGE=OFF before any context exists: single-process tests only match
  entities of this process, so concurrent test runs on one machine never see each other. Tests
  that start subprocesses set LOCALHOST and their own unique ROS_DOMAIN_ID in the child env.
- `spin_nodes` spins nodes in a MultiThreadedExecutor on a daemon thread and, at teardown, shuts
  the executor down, joins the thread and destroys the nodes: a spinning executor leaked at exit
  aborts the interpreter (exit 134) after pytest already printed 'passed'.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading

import pytest

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'OFF'
os.environ.setdefault(
    'ROS_LOG_DIR', os.path.join(tempfile.gettempdir(), f'ffs_ros_test_logs_{os.getuid()}')
)
os.environ.setdefault(
    'AMENT_PREFIX_PATH', os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))
)


def unique_domain_id(offset: int = 0) -> int:
    """Return a ROS_DOMAIN_ID (1..229, Fast DDS allows 0..232) derived from the process id."""
    return 1 + (os.getpid() * 7 + offset) % 229


def start_until_listening(cmd, env, cwd=None) -> tuple[str, str]:
    """Start a stereo_node command, read its output up to 'listening on', then stop it.

    Returns (that line, the rest of the output) for assertions and failure messages.
    """
    import subprocess

    p = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        line = ''
        for line in p.stdout:
            if 'listening on' in line:
                break
    finally:
        p.terminate()
        rest, _ = p.communicate(timeout=20)
    return line, rest


def copy_package(repo, dest) -> None:
    """Copy the package's git-tracked (and untracked, not ignored) files from `repo` to `dest`."""
    from pathlib import Path
    import shutil
    import subprocess

    repo, dest = Path(repo), Path(dest)
    files = subprocess.run(
        ['git', 'ls-files', '-co', '--exclude-standard'],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for f in files:
        if (repo / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / f, dest / f)


def colcon_build(repo, ws, timeout: float = 240):
    """Copy the package to `ws`/src/ffs_ros and `colcon build` it there.

    colcon comes from this interpreter's environment. Returns the CompletedProcess (the caller
    asserts on returncode; the install prefix is `ws`/install/ffs_ros).
    """
    from pathlib import Path
    import subprocess

    copy_package(repo, Path(ws) / 'src' / 'ffs_ros')
    return subprocess.run(
        [
            sys.executable,
            '-c',
            'import sys; from colcon_core.command import main; sys.exit(main())',
            'build',
            '--event-handlers',
            'console_direct-',
        ],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope='session')
def ros_context():
    """Yield the session's initialized rclpy Context (shut down at session end)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    ctx = Context()
    rclpy.init(
        context=ctx, domain_id=unique_domain_id(), signal_handler_options=SignalHandlerOptions.NO
    )
    yield ctx
    rclpy.try_shutdown(context=ctx)


class Spinner:
    """Spins added nodes on one MultiThreadedExecutor in a daemon thread."""

    def __init__(self, context) -> None:
        from rclpy.executors import MultiThreadedExecutor

        self.context = context
        self.executor = MultiThreadedExecutor(num_threads=3, context=context)
        self.nodes = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._started = False

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        if not self._started:
            self._started = True
            self._thread.start()
        return node

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5)
        if self._started:
            self._thread.join(timeout=10)
        for node in reversed(self.nodes):
            node.destroy_node()
        self.nodes.clear()


@pytest.fixture
def spin_nodes(ros_context):
    """`spin_nodes(node)` adds a node to this test's spinning executor; cleaned up at teardown."""
    spinner = Spinner(ros_context)
    yield spinner.add
    spinner.close()


# ---------------------------------------------------------------- stereo node harness
class Collector:
    """Thread-safe list of received messages with a blocking wait."""

    def __init__(self) -> None:
        self.msgs = []
        self._cond = threading.Condition()

    def __call__(self, msg) -> None:
        with self._cond:
            self.msgs.append(msg)
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = 10.0):
        """Return the first message satisfying `predicate` (waits up to `timeout` s), else None."""
        with self._cond:
            hit = []

            def check():
                hit[:] = [m for m in self.msgs if predicate(m)][:1]
                return bool(hit)

            self._cond.wait_for(check, timeout)
            return hit[0] if hit else None

    def clear(self) -> None:
        with self._cond:
            self.msgs.clear()


def same_info(a, b) -> bool:
    """CameraInfo equality where NaN == NaN (message == is False for NaN entries)."""
    import numpy as np

    if a is None or b is None:
        return a is b
    return (a.width, a.height, a.header.frame_id) == (
        b.width,
        b.height,
        b.header.frame_id,
    ) and all(
        np.array_equal(np.asarray(getattr(a, f)), np.asarray(getattr(b, f)), equal_nan=True)
        for f in ('k', 'p', 'r', 'd')
    )


class StereoPlayer:
    """A test node: publishes stereo pairs + CameraInfo to a stereo node, records its outputs."""

    def __init__(
        self,
        context,
        namespace: str = '',
        reliable: bool = True,
        outputs=('disparity', 'depth', 'depth_info', 'points2', 'color'),
    ) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rcl_interfaces.msg import Log
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, QoSReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from stereo_msgs.msg import DisparityImage

        self.node = Node('stereo_player', namespace=namespace, context=context)
        pq = QoSProfile(
            depth=10,
            reliability=(
                QoSReliabilityPolicy.RELIABLE if reliable else QoSReliabilityPolicy.BEST_EFFORT
            ),
        )
        n = self.node
        self.pubs = {
            k: n.create_publisher(t, k, pq)
            for k, t in (
                ('left/image_rect', Image),
                ('right/image_rect', Image),
                ('left/camera_info', CameraInfo),
                ('right/camera_info', CameraInfo),
            )
        }
        self.out = {
            k: Collector()
            for k in (
                'disparity',
                'depth',
                'depth_info',
                'points2',
                'color',
                'confidence',
                'diagnostics',
                'rosout',
            )
        }
        rq = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
        topics = {
            'disparity': ('disparity', DisparityImage),
            'depth': ('depth/image_rect', Image),
            'depth_info': ('depth/camera_info', CameraInfo),
            'points2': ('points2', PointCloud2),
            'color': ('disparity/color', Image),
            'confidence': ('confidence', Image),
        }
        self.subs = [
            n.create_subscription(t, name, self.out[k], rq)
            for k, (name, t) in topics.items()
            if k in outputs
        ]
        node_pub = {
            'disparity': 'pub_disparity',
            'depth': 'pub_depth',
            'depth_info': 'pub_depth_info',
            'points2': 'pub_points',
            'color': 'pub_color',
            'confidence': 'pub_confidence',
        }
        self._node_pubs = [node_pub[k] for k in topics if k in outputs]
        self.subs.append(
            n.create_subscription(DiagnosticArray, '/diagnostics', self.out['diagnostics'], 10)
        )
        self.subs.append(n.create_subscription(Log, '/rosout', self.out['rosout'], 100))

    def wait_connected(self, node, timeout: float = 10.0) -> bool:
        """Wait until the stereo node subscribes to our four topics and we to its outputs."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # both ends of every link: the node skips frames while its own publishers see no
            # subscriber, so its side of the output topics must have matched too
            if (
                all(p.get_subscription_count() > 0 for p in self.pubs.values())
                and all(s.get_publisher_count() > 0 for s in self.subs)
                and all(getattr(node, pub).get_subscription_count() > 0 for pub in self._node_pubs)
            ):
                return True
            time.sleep(0.02)
        return False

    def publish_infos(self, node, left_info, right_info, timeout: float = 10.0) -> bool:
        """Publish the camera infos and wait until `node` (a StereoNode) has cached these two."""
        import time

        self.publish(left_info=left_info, right_info=right_info)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cached = node.camera_infos()
            if same_info(cached[0], left_info) and same_info(cached[1], right_info):
                return True
            time.sleep(0.01)
        return False

    def send(self, node, left, right, left_info, right_info, stamp_ns) -> None:
        """Camera infos first (waiting until the node has them), then the image pair."""
        assert self.publish_infos(node, left_info, right_info), 'camera infos did not arrive'
        self.publish(left=left, right=right, stamp_ns=stamp_ns)

    def publish(
        self, left=None, right=None, left_info=None, right_info=None, stamp_ns=None
    ) -> None:
        """Publish whichever messages are given; `stamp_ns` sets all their header stamps."""
        for topic, msg in (
            ('left/camera_info', left_info),
            ('right/camera_info', right_info),
            ('left/image_rect', left),
            ('right/image_rect', right),
        ):
            if msg is None:
                continue
            if stamp_ns is not None:
                msg.header.stamp.sec = int(stamp_ns // 1_000_000_000)
                msg.header.stamp.nanosec = int(stamp_ns % 1_000_000_000)
            self.pubs[topic].publish(msg)


@pytest.fixture
def make_player(ros_context, spin_nodes):
    """`make_player(namespace='', reliable=True)` -> a spinning StereoPlayer."""

    def make(**kw):
        p = StereoPlayer(ros_context, **kw)
        spin_nodes(p.node)
        return p

    return make
