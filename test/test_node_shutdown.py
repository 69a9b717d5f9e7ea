"""Issue 10.2: SIGINT / SIGTERM while a pair is in the matcher stop stereo_node cleanly.

The real `stereo_node` entry point (`ffs_ros.node.stereo_node.main`) runs in a subprocess with an
injected matcher that blocks inside `match` (the native call of a real backend cannot be
interrupted either), fed by a camera-player subprocess over DDS. Required: exit code 0 within 2 s
of the signal whatever the matcher is doing, nothing published once shutdown begins (the frame in
the matcher is abandoned), no traceback, one INFO line saying that the node stops.
"""

import os
from pathlib import Path
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time

from conftest import unique_domain_id
import pytest

REPO = Path(__file__).resolve().parent.parent

NODE = textwrap.dedent('''
    """stereo_node's main() with a matcher that blocks in match() until RELEASE exists (or 60
    s)."""
    import os, sys, time
    import numpy as np
    from rclpy.publisher import Publisher
    from ffs_ros.inference.base import MatcherInfo, StereoMatcher
    from ffs_ros.node.stereo_node import main

    release = sys.argv[1]
    _publish = Publisher.publish

    def publish(self, msg):   # every publish of the node, in order with its log lines
        print(f'PUBLISH {self.topic_name}', flush=True)
        return _publish(self, msg)

    Publisher.publish = publish

    class BlockingMatcher(StereoMatcher):
        info = MatcherInfo(backend='blocking-test', device='cpu', model='blocks in match()')

        def match(self, left, right):
            print('MATCHER ENTERED', flush=True)
            end = time.monotonic() + 60
            while not os.path.exists(release) and time.monotonic() < end:
                time.sleep(0.01)
            print('MATCHER RETURNS', flush=True)
            return np.full(left.shape[:2], 8.0, np.float32)

    sys.exit(main(['stereo_node', '--ros-args', '-p', 'log_throttle_seconds:=0.0'],
                  matcher=BlockingMatcher()))
''')

PLAYER = textwrap.dedent('''
    """Publishes 64x48 stereo pairs at 20 Hz (infos first, same stamp) and subscribes to
    disparity."""
    import time
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image
    from stereo_msgs.msg import DisparityImage
    from ffs_ros.convert import make_camera_infos, numpy_to_image
    from ffs_ros.synth import plane_pair

    rclpy.init()
    n = Node('camera_player')
    pubs = {t: n.create_publisher(c, t, 10) for t, c in (
        ('left/image_rect', Image), ('right/image_rect', Image),
        ('left/camera_info', CameraInfo), ('right/camera_info', CameraInfo))}
    n.create_subscription(DisparityImage, 'disparity', lambda m: print('GOT', flush=True), 10)
    s = plane_pair(48, 64, 8.0, seed=1)
    li, ri = make_camera_infos(64, 48, 50.0, 0.1)
    msgs = {'left/camera_info': li, 'right/camera_info': ri,
            'left/image_rect': numpy_to_image(s.left, 'rgb8'), 'right/image_rect':
            numpy_to_image(s.right, 'rgb8')}
    try:
        while rclpy.ok():
            t = n.get_clock().now().to_msg()
            for topic, m in msgs.items():
                m.header.stamp = t
                pubs[topic].publish(m)
            end = time.monotonic() + 0.05
            while time.monotonic() < end:
                rclpy.spin_once(n, timeout_sec=0.01)
    except KeyboardInterrupt:
        pass
''')


class Proc:
    """A subprocess whose merged output lines are collected by a reader thread."""

    def __init__(self, args, env) -> None:
        self.p = subprocess.Popen(
            [sys.executable, *args],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines = []
        self._q = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.p.stdout:
            self.lines.append(line.rstrip('\n'))
            self._q.put(line)
        self._q.put(None)

    def wait_line(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return True
            try:
                self._q.get(timeout=0.05)
            except queue.Empty:
                pass
        return any(text in line for line in self.lines)

    def output(self) -> str:
        return '\n'.join(self.lines)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=10)


@pytest.fixture
def procs(tmp_path):
    started = []
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(unique_domain_id(150)),
        ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
        ROS_LOG_DIR=str(tmp_path / 'ros_log'),
        PYTHONUNBUFFERED='1',
    )
    (tmp_path / 'node.py').write_text(NODE)
    (tmp_path / 'player.py').write_text(PLAYER)

    def start(name, *args):
        p = Proc([str(tmp_path / name), *map(str, args)], env)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def stop_node_mid_frame(procs, tmp_path, sig, release_after_shutdown):
    release = tmp_path / 'release'
    node = procs('node.py', release)
    player = procs('player.py')
    assert node.wait_line('MATCHER ENTERED', 60), (
        f'no frame reached the matcher:\n{node.output()}\nplayer:\n{player.output()}'
    )
    t0 = time.monotonic()
    node.p.send_signal(sig)
    if (
        release_after_shutdown
    ):  # the matcher returns while the node is stopping: its result is dropped
        assert node.wait_line('stopping', 10), node.output()
        release.touch()
    try:
        rc = node.p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        rc = None
    elapsed = time.monotonic() - t0
    node.wait_line('\x00', 0.2)  # let the reader thread take the last lines
    return rc, elapsed, node.output()


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
@pytest.mark.parametrize(
    'release_after_shutdown', [False, True], ids=['matcher-blocked', 'matcher-returns']
)
def test_signal_while_a_pair_is_in_the_matcher_exits_cleanly(
    procs, tmp_path, sig, release_after_shutdown
):
    rc, elapsed, out = stop_node_mid_frame(procs, tmp_path, sig, release_after_shutdown)
    assert rc == 0, f'exit code {rc}:\n{out}'
    # the requirement is 2 s; the bound leaves room for a loaded CI machine while still failing
    # any shutdown that waits for the matcher (it blocks for 60 s)
    assert elapsed < 5.0, f'took {elapsed:.1f} s:\n{out}'
    assert (
        'Traceback' not in out and 'processing failed' not in out and 'terminate called' not in out
    ), out
    lines = out.splitlines()
    stopping = [i for i, line in enumerate(lines) if 'stopping' in line]
    assert len(stopping) == 1 and '[INFO]' in lines[stopping[0]], out
    assert signal.Signals(sig).name in lines[stopping[0]], out
    assert not any(line.startswith('PUBLISH') for line in lines[stopping[0]:]), out
    assert not any(line.startswith('PUBLISH /disparity') for line in lines), out
    if release_after_shutdown:
        assert 'MATCHER RETURNS' in out


ORT_NODE = textwrap.dedent('''
    """stereo_node's main() with the shipped default model on ONNX Runtime (announcing each
    frame)."""
    import sys
    from ffs_ros.inference import load_matcher
    from ffs_ros.node.stereo_node import main

    m = load_matcher(None, backend='onnxruntime')
    run = m.match_full

    def match_full(left, right):
        print('MATCHER ENTERED', left.shape, flush=True)
        return run(left, right)

    m.match_full = match_full
    sys.exit(main(['stereo_node'], matcher=m))
''')


def test_sigint_while_onnxruntime_runs_a_large_frame_exits_cleanly(procs, tmp_path):
    """The case that aborted ("terminate called without an active exception", exit -6).

    A 1600x1200 frame takes seconds in ONNX Runtime on a CPU, longer than the node waits for it.
    """
    pytest.importorskip('onnxruntime')
    from ffs_ros.paths import default_model_dir

    if not any(default_model_dir().glob('*.onnx')):
        pytest.skip('no default model installed')
    (tmp_path / 'ort_node.py').write_text(ORT_NODE)
    (tmp_path / 'player.py').write_text(
        PLAYER.replace('plane_pair(48, 64', 'plane_pair(1200, 1600').replace(
            'make_camera_infos(64, 48', 'make_camera_infos(1600, 1200'
        )
    )
    node = procs('ort_node.py')
    procs('player.py')
    assert node.wait_line('MATCHER ENTERED', 120), node.output()
    t0 = time.monotonic()
    node.p.send_signal(signal.SIGINT)
    rc = node.p.wait(timeout=60)
    elapsed = time.monotonic() - t0
    node.wait_line('\x00', 0.2)
    out = node.output()
    assert rc == 0, f'exit code {rc}:\n{out}'
    assert elapsed < 5.0, f'took {elapsed:.1f} s:\n{out}'
    assert 'Traceback' not in out and 'terminate called' not in out, out


SLOW_START_NODE = textwrap.dedent('''
    """stereo_node's main() whose matcher takes 3 s to load (like a model)."""
    import sys
    import time

    from ffs_ros.node import stereo_node

    real = stereo_node.build_matcher

    def slow_build(values, logger=None):
        print('LOADING MODEL', flush=True)
        time.sleep(3.0)
        return real(values, logger)

    stereo_node.build_matcher = slow_build
    sys.exit(stereo_node.main(['stereo_node', '--ros-args', '-p', 'backend:=sgbm']))
''')


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_signal_during_start_up_exits_cleanly(procs, tmp_path, sig):
    """Stop cleanly on Ctrl-C while the node is still starting (loading its model).

    Exit 0, no traceback, no abort: handlers are installed before rclpy.init and the model load.
    """
    (tmp_path / 'slow_node.py').write_text(SLOW_START_NODE)
    node = procs('slow_node.py')
    assert node.wait_line('LOADING MODEL', 60), node.output()
    node.p.send_signal(sig)
    rc = node.p.wait(timeout=30)
    node.wait_line('\x00', 0.2)
    out = node.output()
    assert rc == 0, f'exit code {rc}:\n{out}'
    assert 'Traceback' not in out and 'terminate called' not in out, out
    assert f'stopping on {sig.name}' in out, out
