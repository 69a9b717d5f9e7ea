"""`ros2 launch ffs_ros stereo.launch.py` through the real ROS 2 launch system, end to end.

The package is built with colcon (as on a ROS workspace), then `ros2 launch` starts stereo_node
with a namespace, camera remaps and a params file (backend sgbm, max_disparity 64). A helper
process (same discovery settings and the same Fast DDS shared-memory profile the launch file
sets for the node) publishes a small textured plane at a known disparity and its camera infos on
the remapped input topics and receives /front/disparity and /front/points2. Then the launch is
stopped with SIGINT and must exit 0 with the node "finished cleanly" and no traceback. A second
test starts and stops the launch the same way from a plain (non-editable) `pip install --prefix`,
through the lib/ffs_ros/stereo_node launcher that setup.py adds for pip installs.

launch, launch_ros and ros2cli are not on PyPI: they come from ../shared/wheels/ros2-launch
(installed into the venv by `make venv` when that folder exists; otherwise installed here with
`pip install --target` into a temporary folder used only by the subprocesses). Without the wheels
(and without launch_ros in the environment) the tests are skipped.
"""

import contextlib
import importlib.util
import json
import os
from pathlib import Path
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip('colcon_core')
pytest.importorskip('colcon_ros')
pytest.importorskip('colcon_python_setup_py')

from conftest import colcon_build, copy_package, unique_domain_id  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
WHEELS = REPO.parent / 'shared' / 'wheels' / 'ros2-launch'
WHEEL_NAMES = (
    'launch',
    'launch_ros',
    'ros2launch',
    'ros2cli',
    'ros2pkg',
    'composition_interfaces_stub',
)
# PyPI dependencies of the wheels (shared/wheels/ros2-launch/README.md) -> the module each provides
# (importlib-metadata is left out: ros2cli and launch use the stdlib importlib.metadata on 3.10+)
WHEEL_DEPS = {
    'ros-ament-index-python': 'ament_index_python',
    'ros-lifecycle-msgs': 'lifecycle_msgs',
    'osrf-pycommon': 'osrf_pycommon',
    'pyyaml': 'yaml',
    'argcomplete': 'argcomplete',
    'packaging': 'packaging',
}

NS = 'front'
W, H, FX, BASELINE, DISP = 192, 96, 160.0, 0.12, 16.0  # a plane at FX*B/DISP = 1.2 m
INPUTS = {
    'left_image': '/cams/front/left/image_rect_color',
    'right_image': '/cams/front/right/image_rect_color',
    'left_camera_info': '/cams/front/left/camera_info',
    'right_camera_info': '/cams/front/right/camera_info',
}
# the launch file's remap arguments -> the node's own topic names
NODE_INPUTS = {
    'left_image': 'left/image_rect',
    'right_image': 'right/image_rect',
    'left_camera_info': 'left/camera_info',
    'right_camera_info': 'right/camera_info',
}
START_TIMEOUT, PEER_TIMEOUT, STOP_TIMEOUT = 120, 90, 20  # seconds
FRAME = 'cam_front_left_optical'

# The camera + consumer side, run as its own process (discovery range LOCALHOST, like the launch).
PEER = r"""
import json, sys, time
import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from stereo_msgs.msg import DisparityImage
from ffs_ros.convert import make_camera_infos, numpy_to_image
from ffs_ros.synth import plane_pair

cfg = json.loads(sys.argv[1])
W, H, FX, B, D, ns = cfg['W'], cfg['H'], cfg['FX'], cfg['B'], cfg['D'], cfg['ns']
rclpy.init()
node = Node('launch_test_camera')
qos = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE)
pubs = {k: node.create_publisher(CameraInfo if k.endswith('info') else Image, t, qos)
        for k, t in cfg['inputs'].items()}
got = {}


def keep(key):
    return lambda msg: got.setdefault(key, msg)


subs = [node.create_subscription(DisparityImage, f'/{ns}/disparity', keep('disparity'), qos),
        node.create_subscription(PointCloud2, f'/{ns}/points2', keep('points2'), qos)]
s = plane_pair(H, W, D, seed=1)
infos = make_camera_infos(W, H, FX, B, frame_id=cfg['frame'])
sent, next_pub = 0, 0.0
deadline = time.monotonic() + cfg['timeout']
while time.monotonic() < deadline and len(got) < 2:
    if time.monotonic() >= next_pub:          # 5 Hz: infos first (as most drivers), then the pair
        sent += 1
        msgs = {'left_camera_info': infos[0], 'right_camera_info': infos[1],
                'left_image': numpy_to_image(s.left, 'rgb8'),
                'right_image': numpy_to_image(s.right, 'rgb8')}
        for k, m in msgs.items():
            m.header.frame_id = infos[0 if k.startswith('left') else 1].header.frame_id
            m.header.stamp.sec, m.header.stamp.nanosec = 100 + sent, 0
            pubs[k].publish(m)
        next_pub = time.monotonic() + 0.2
    rclpy.spin_once(node, timeout_sec=0.05)

out = {'sent': sent,
       'disparity_publishers': node.count_publishers(f'/{ns}/disparity'),
       'input_subscribers': {k: p.get_subscription_count() for k, p in pubs.items()}}
if 'disparity' in got:
    m = got['disparity']
    img = np.frombuffer(m.image.data, np.uint8).reshape(m.image.height, m.image.step)
    d = img[:, :m.image.width * 4].copy().view(np.float32)
    inner = d[8:-8, 64 + 8:-8]   # off the borders and sgbm's unmatched left strip (D = 64)
    out['disparity'] = {'frame_id': m.header.frame_id, 'stamp_sec': m.header.stamp.sec,
                        'size': [m.image.width, m.image.height], 'encoding': m.image.encoding,
                        'f': m.f, 't': m.t, 'median': float(np.nanmedian(inner)),
                        'valid': float(np.isfinite(inner).mean())}
if 'points2' in got:
    m = got['points2']
    fields = {f.name: f.offset for f in m.fields}
    raw = np.frombuffer(m.data, np.uint8).reshape(-1, m.point_step)
    z = raw[:, fields['z']:fields['z'] + 4].copy().view(np.float32).ravel()
    out['points2'] = {'frame_id': m.header.frame_id, 'fields': sorted(fields),
                      'points': int(raw.shape[0]), 'z_median': float(np.nanmedian(z)),
                      'z_finite': int(np.isfinite(z).sum())}
print('RESULT ' + json.dumps(out), flush=True)
node.destroy_node()
rclpy.shutdown()
"""


def _real_launch_importable() -> bool:
    """launch_ros, ros2launch and ROS 2's `launch` (not PyPI's unrelated `launch`) importable."""
    needed = ('launch_ros', 'ros2launch', 'ros2cli', 'osrf_pycommon')
    if not all(importlib.util.find_spec(m) for m in needed):
        return False
    spec = importlib.util.find_spec('launch')
    return (
        spec is not None
        and spec.origin is not None
        and (Path(spec.origin).parent / 'launch_description.py').is_file()
    )


def _pip(*args):
    r = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, f'pip install {" ".join(args)} failed:\n{r.stdout}{r.stderr}'


@pytest.fixture(scope='module')
def launch_pythonpath(tmp_path_factory):
    """Extra PYTHONPATH entries that make the ROS 2 launch system importable for subprocesses."""
    if _real_launch_importable():
        return []
    wheels = sorted(WHEELS.glob('*.whl'))
    missing = [n for n in WHEEL_NAMES if n not in {w.name.split('-')[0] for w in wheels}]
    if missing:
        pytest.skip(
            f'ROS 2 launch wheels absent ({", ".join(missing)} not in {WHEELS}) and '
            'launch_ros not installed: see shared/wheels/ros2-launch/README.md'
        )
    target = tmp_path_factory.mktemp('ros2_launch')
    paths = [str(target / 'wheels')]
    _pip('--no-deps', '--target', paths[0], *map(str, wheels))
    deps = [pkg for pkg, mod in WHEEL_DEPS.items() if importlib.util.find_spec(mod) is None]
    if deps:
        paths.append(str(target / 'deps'))
        _pip('--target', paths[1], *deps)
    return paths


class Output:
    """Collects a process's output lines on a thread; `wait_for(text)` with a timeout."""

    def __init__(self, stream):
        self.lines = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in stream:
            with self._cond:
                self.lines.append(re.sub(r'\x1b\[[0-9;]*m', '', line))  # emulate_tty colours
                self._cond.notify_all()
        with self._cond:
            self.lines.append(None)  # end of stream
            self._cond.notify_all()

    def wait_for(self, text, timeout):
        """Return the first line containing `text` (waiting up to `timeout` s), else None."""

        def seen():
            return any(ln is None or text in ln for ln in self.lines)

        with self._cond:
            self._cond.wait_for(seen, timeout)
            return next((ln for ln in self.lines if ln is not None and text in ln), None)

    def text(self, join_timeout=10.0):
        self._thread.join(join_timeout)
        with self._cond:
            return ''.join(ln for ln in self.lines if ln is not None)


def launch_env(tmp_path, prefix, site, launch_pythonpath, domain_offset):
    """Env for `ros2 launch` and the peer: the installed package, own domain, LOCALHOST."""
    venv_prefix = str(Path(sys.executable).parent.parent)

    def paths(*first, var):  # ours first, then what the environment already had
        return os.pathsep.join(filter(None, [*first, *os.environ.get(var, '').split(os.pathsep)]))

    env = dict(
        os.environ,
        PYTHONPATH=paths(*launch_pythonpath, str(site), var='PYTHONPATH'),
        AMENT_PREFIX_PATH=paths(str(prefix), venv_prefix, var='AMENT_PREFIX_PATH'),
        ROS_DOMAIN_ID=str(unique_domain_id(domain_offset)),
        ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
        ROS_LOG_DIR=str(tmp_path / 'log'),
        PYTHONUNBUFFERED='1',
    )
    env.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)  # the launch file sets it for the node
    return env


def ros2_launch_cmd(*args):
    return [
        sys.executable,
        '-c',
        'import sys; from ros2cli.cli import main; sys.exit(main())',
        'launch',
        'ffs_ros',
        'stereo.launch.py',
        *args,
    ]


@contextlib.contextmanager
def running(cmd, env, cwd):
    """Start `cmd` in a new process group; yields (process, Output); the group is always killed."""
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc, Output(proc.stdout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the launch and the node it started
            proc.wait(timeout=10)


def wait_started(out):
    started = out.wait_for('listening on', START_TIMEOUT)
    assert started, f'stereo_node did not start within {START_TIMEOUT} s:\n' + out.text(0)
    return started


def stop_cleanly(proc, out):
    """SIGINT (Ctrl-C on `ros2 launch`), then: exit 0, node finished cleanly, no traceback."""
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=STOP_TIMEOUT)
    text = out.text()
    assert rc == 0, f'ros2 launch exited {rc}:\n{text}'
    assert 'Traceback' not in text and 'process has died' not in text, text
    assert 'stopping on SIGINT' in text and 'process has finished cleanly' in text, text


def check_outputs(env, share, ns, inputs, out):
    """Run the peer: a plane at DISP px on `inputs`; /<ns>/disparity and /<ns>/points2 must match.

    Also proves that the node is spinning (its SIGINT handler is installed only then).
    """
    peer_env = dict(env, FASTDDS_DEFAULT_PROFILES_FILE=str(share / 'config/fastdds_shm.xml'))
    cfg = {
        'W': W,
        'H': H,
        'FX': FX,
        'B': BASELINE,
        'D': DISP,
        'ns': ns,
        'inputs': inputs,
        'frame': FRAME,
        'timeout': PEER_TIMEOUT - 30,
    }
    peer = subprocess.run(
        [sys.executable, '-c', PEER, json.dumps(cfg)],
        env=peer_env,
        capture_output=True,
        text=True,
        timeout=PEER_TIMEOUT,
    )
    result = next(
        (
            json.loads(ln[len('RESULT '):])
            for ln in peer.stdout.splitlines()
            if ln.startswith('RESULT ')
        ),
        None,
    )
    why = f'peer rc {peer.returncode}\n{peer.stdout}{peer.stderr}\n--- launch:\n' + ''.join(
        ln for ln in out.lines if ln
    )
    assert peer.returncode == 0 and result is not None, why
    assert 'disparity' in result and 'points2' in result, why
    disp, cloud = result['disparity'], result['points2']
    assert disp['frame_id'] == FRAME and disp['stamp_sec'] > 100, why
    assert disp['size'] == [W, H] and disp['encoding'] == '32FC1', why
    assert disp['f'] == pytest.approx(FX) and disp['t'] == pytest.approx(BASELINE), why
    assert disp['valid'] > 0.9 and abs(disp['median'] - DISP) < 0.5, why
    assert cloud['frame_id'] == FRAME and {'x', 'y', 'z'} <= set(cloud['fields']), why
    assert cloud['z_finite'] > 0.5 * W * H, why
    assert cloud['z_median'] == pytest.approx(FX * BASELINE / DISP, rel=0.05), why


def sgbm_params(tmp_path):
    params = tmp_path / 'stereo_sgbm.yaml'
    params.write_text("/**:\n  ros__parameters:\n    backend: 'sgbm'\n    max_disparity: 64.0\n")
    return params


def test_ros2_launch_namespace_remaps_params_outputs_and_clean_sigint(tmp_path, launch_pythonpath):
    """Colcon build; ros2 launch with namespace, remaps, params file; outputs; SIGINT."""
    t0 = time.monotonic()
    built = colcon_build(REPO, tmp_path / 'ws')
    assert built.returncode == 0, built.stdout + built.stderr
    prefix = tmp_path / 'ws' / 'install' / 'ffs_ros'
    site = next(prefix.glob('lib/python3*/site-packages'))
    env = launch_env(tmp_path, prefix, site, launch_pythonpath, 501)
    cmd = ros2_launch_cmd(
        f'namespace:={NS}',
        f'params_file:={sgbm_params(tmp_path)}',
        *(f'{arg}:={topic}' for arg, topic in INPUTS.items()),
    )
    with running(cmd, env, tmp_path) as (launch, out):
        started = wait_started(out)
        t_started = time.monotonic()
        # namespace, node name, params file (D=64, not the shipped 256) and the remaps all applied
        assert f'[{NS}.stereo_node]' in started, started
        assert 'OpenCV StereoSGBM (D=64)' in started, started
        assert f'listening on {INPUTS["left_image"]}, {INPUTS["right_image"]}' in started, started
        check_outputs(env, prefix / 'share' / 'ffs_ros', NS, INPUTS, out)
        t_outputs = time.monotonic()
        stop_cleanly(launch, out)
        t_stopped = time.monotonic()
    assert t_stopped - t_outputs < 10
    print(
        f'build+start {t_started - t0:.1f} s, outputs {t_outputs - t_started:.1f} s, '
        f'stop {t_stopped - t_outputs:.1f} s'
    )


def test_ros2_launch_from_a_plain_pip_install(tmp_path, launch_pythonpath):
    """Launch from `pip install .` (a wheel, not editable) into a prefix.

    ros2 launch finds share/ffs_ros and the lib/ffs_ros/stereo_node launcher (setup.py) that runs
    <prefix>/bin/stereo_node.
    """
    src, prefix = tmp_path / 'src', tmp_path / 'prefix'
    copy_package(REPO, src)
    # --ignore-installed: with --prefix alone, pip uninstalls the ffs_ros of the running venv
    _pip(
        '--no-deps',
        '--no-build-isolation',
        '--ignore-installed',
        '--prefix',
        str(prefix),
        str(src),
    )
    assert (prefix / 'bin' / 'stereo_node').is_file()
    assert (prefix / 'lib' / 'ffs_ros' / 'stereo_node').is_file()
    site = next(prefix.glob('lib/python3*/site-packages'))
    env = launch_env(tmp_path, prefix, site, launch_pythonpath, 502)
    ns = 'pip_cam'
    cmd = ros2_launch_cmd(f'namespace:={ns}', f'params_file:={sgbm_params(tmp_path)}')
    with running(cmd, env, tmp_path) as (launch, out):
        started = wait_started(out)
        assert f'[{ns}.stereo_node]' in started, started
        assert f'listening on /{ns}/left/image_rect' in started, started
        # no remaps: the node's own (relative) input topics under the namespace
        inputs = {arg: f'/{ns}/{topic}' for arg, topic in NODE_INPUTS.items()}
        check_outputs(env, prefix / 'share' / 'ffs_ros', ns, inputs, out)
        stop_cleanly(launch, out)
