"""stereo_node as a separate process, started the documented way, over real DDS.

Between processes: `stereo_node --ros-args --params-file config/stereo.yaml`, unique ROS_DOMAIN_ID,
discovery limited to localhost, the shipped Fast DDS SHM profile on both sides, a best-effort
640x480 camera stream (the case that loses every frame without the profile). Also: bad parameters
exit non-zero with a message naming the parameter.
"""

import os
from pathlib import Path
import subprocess
import sys
import textwrap

from conftest import unique_domain_id
import pytest

REPO = Path(__file__).resolve().parent.parent
STEREO_NODE = Path(sys.executable).with_name('stereo_node')

PLAYER = textwrap.dedent('''
    """Publishes a best-effort stereo stream like a camera driver; exits 0 once outputs arrive."""
    import sys, time
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data, QoSProfile
    from sensor_msgs.msg import Image, CameraInfo, PointCloud2
    from stereo_msgs.msg import DisparityImage
    from diagnostic_msgs.msg import DiagnosticArray
    from ffs_ros.convert import make_camera_infos, numpy_to_image
    from ffs_ros.synth import plane_pair

    H, W = 480, 640
    rclpy.init()
    n = Node('camera_player')
    pubs = {t: n.create_publisher(c, t, qos_profile_sensor_data) for t, c in (
        ('left/image_rect', Image), ('right/image_rect', Image),
        ('left/camera_info', CameraInfo), ('right/camera_info', CameraInfo))}
    got = {}
    def keep(name):
        return lambda m: got.setdefault(name, m)
    n.create_subscription(DisparityImage, 'disparity', keep('disparity'), QoSProfile(depth=2))
    n.create_subscription(PointCloud2, 'points2', keep('points2'), QoSProfile(depth=2))
    n.create_subscription(DiagnosticArray, '/diagnostics', keep('diagnostics'), 10)
    s = plane_pair(H, W, 24.0, seed=1)
    left, right = numpy_to_image(s.left, 'rgb8'), numpy_to_image(s.right, 'rgb8')
    li, ri = make_camera_infos(W, H, 400.0, 0.12)
    deadline = time.monotonic() + float(sys.argv[1])
    i = 0
    while time.monotonic() < deadline and len(got) < 3:
        i += 1
        t = n.get_clock().now().to_msg()
        for m in (left, right, li, ri):
            m.header.stamp = t
            m.header.frame_id = 'left_optical'
        for topic, m in (('left/camera_info', li), ('right/camera_info', ri),
                         ('left/image_rect', left), ('right/image_rect', right)):
            pubs[topic].publish(m)
        end = time.monotonic() + 0.1
        while time.monotonic() < end:
            rclpy.spin_once(n, timeout_sec=0.02)
    d = got.get('disparity')
    print('sent', i, 'got', sorted(got),
          'disparity', (d.image.width, d.image.height, round(d.f, 3), round(d.t, 4)) if d else
          None, flush=True)
    ok = d is not None and 'points2' in got and (d.image.width, d.image.height) == (W, H) \\
        and abs(d.f - 400.0) < 1e-3 and abs(d.t - 0.12) < 1e-6
    n.destroy_node()
    rclpy.try_shutdown()
    sys.exit(0 if ok else 1)
''')


def ros_env(tmp_path, offset):
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(unique_domain_id(offset)),
        ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
        FASTDDS_DEFAULT_PROFILES_FILE=str(REPO / 'config' / 'fastdds_shm.xml'),
        ROS_LOG_DIR=str(tmp_path / 'ros_log'),
        PYTHONUNBUFFERED='1',
    )
    return env


def test_stereo_node_subprocess_with_params_file_gets_output(tmp_path):
    env = ros_env(tmp_path, offset=101)
    (tmp_path / 'player.py').write_text(PLAYER)
    node = subprocess.Popen(
        [str(STEREO_NODE), '--ros-args', '--params-file', str(REPO / 'config' / 'stereo.yaml')],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        player = subprocess.run(
            [sys.executable, str(tmp_path / 'player.py'), '60'],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        node.terminate()  # SIGTERM: rclpy's handler shuts the node down cleanly
        try:
            node_out, _ = node.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            node.kill()
            node_out, _ = node.communicate()
    assert player.returncode == 0, f'player: {player.stdout}{player.stderr}\nnode: {node_out}'
    assert 'listening on /left/image_rect' in node_out
    assert node.returncode in (0, -15), node_out


@pytest.mark.parametrize(
    'args, words',
    [
        (['-p', 'backend:=magic'], ['backend', 'sgbm']),
        (['-p', 'min_depth:=5.0', '-p', 'max_depth:=1.0'], ['min_depth', 'max_depth']),
        (['-p', 'max_depth:=10'], ['max_depth', '10.0']),
        (['-p', 'depth_encoding:=mono8'], ['depth_encoding', '16UC1']),
        (
            ['-p', 'backend:=onnxruntime', '-p', 'model:=/nonexistent/model.onnx'],
            ['onnxruntime', '/nonexistent/model.onnx'],
        ),
        (['-p', 'backend:=onnxruntime', '-p', 'precision:=fp32'], ['precision', 'tensorrt']),
        # backend auto never swaps an explicit request it cannot serve for sgbm (issue 14.2)
        (['-p', 'device:=cuda'], ['device', 'cuda']),
        (['-p', 'model:=/nonexistent/dir'], ['/nonexistent/dir', 'does not exist']),
        (['-p', 'net_width:=100', '-p', 'net_height:=64'], ['net_size', 'multiples of 32']),
    ],
)
def test_bad_parameters_exit_nonzero_with_a_clear_message(tmp_path, args, words):
    env = ros_env(tmp_path, offset=102)
    r = subprocess.run(
        [
            str(STEREO_NODE),
            '--ros-args',
            '--params-file',
            str(REPO / 'config' / 'stereo.yaml'),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert 'Traceback' not in r.stderr
    for w in words:
        assert w in r.stderr


@pytest.mark.parametrize('content, words', [
    (None, ['cannot be read', 'No such file']),
    ('/**:\n  ros__parameters:\n    backend: [unclosed\n', ['is not valid YAML']),
])
def test_missing_or_malformed_params_file_is_one_line_and_exit_2(tmp_path, content, words):
    """Refuse a params file that cannot be used: one line naming the file, exit 2."""
    path = tmp_path / 'params.yaml'
    if content is not None:
        path.write_text(content)
    r = subprocess.run(
        [str(STEREO_NODE), '--ros-args', '--params-file', str(path)],
        env=ros_env(tmp_path, offset=103), capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(path) in lines[0], r.stderr
    for w in words:
        assert w in lines[0]
