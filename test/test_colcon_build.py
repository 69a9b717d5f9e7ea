"""`colcon build` of the package as on a ROS workspace (colcon from PyPI), then a start.

After the build, the installed stereo_node finds its shipped files through the ament index and
starts.

Needs colcon-core, colcon-ros and colcon-python-setup-py importable (not in requirements.txt by
default: they add ~45 MB and pytest plugins); runs whenever they are installed.
"""

import os
from pathlib import Path
import subprocess
import sys

import pytest

pytest.importorskip('colcon_core')
pytest.importorskip('colcon_ros')
pytest.importorskip('colcon_python_setup_py')

from conftest import colcon_build, start_until_listening, unique_domain_id  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def test_colcon_build_installs_a_working_package(tmp_path):
    ws = tmp_path / 'ws'
    r = colcon_build(REPO, ws)
    assert r.returncode == 0, r.stdout + r.stderr
    prefix = ws / 'install' / 'ffs_ros'
    share = prefix / 'share' / 'ffs_ros'
    for f in (
        'package.xml',
        'launch/stereo.launch.py',
        'config/stereo.yaml',
        'config/fastdds_shm.xml',
        'config/stereo.rviz',
    ):
        assert (share / f).is_file(), f
    assert (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'ffs_ros').is_file()
    exe = prefix / 'lib' / 'ffs_ros' / 'stereo_node'  # where `ros2 run ffs_ros stereo_node` looks
    assert exe.is_file()
    site = next(prefix.glob('lib/python3*/site-packages'))
    env = dict(
        os.environ,
        PYTHONPATH=str(site),
        AMENT_PREFIX_PATH=str(prefix),
        ROS_DOMAIN_ID=str(unique_domain_id(401)),
        ROS_AUTOMATIC_DISCOVERY_RANGE='OFF',
        ROS_LOG_DIR=str(tmp_path / 'log'),
    )
    probe = subprocess.run(
        [sys.executable, '-c', 'import ffs_ros.paths as p; print(p.config_file())'],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert Path(probe.stdout.strip()) == share / 'config' / 'stereo.yaml', (
        probe.stdout + probe.stderr
    )
    line, rest = start_until_listening(
        [
            sys.executable,
            str(exe),
            '--ros-args',
            '--params-file',
            str(share / 'config' / 'stereo.yaml'),
        ],
        env,
        cwd=tmp_path,
    )
    assert 'listening on /left/image_rect' in line, line + rest
