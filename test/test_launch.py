"""launch/stereo.launch.py without launch_ros (not installable from PyPI).

Its AST, and its description built against small stand-ins for the launch modules; then the node is
started the way launch_ros would start it (params file, namespace, remaps) and must listen on the
remapped topics.
"""

import ast
import importlib.util
import os
from pathlib import Path
import sys
import types

from conftest import start_until_listening, unique_domain_id
import pytest

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / 'launch' / 'stereo.launch.py'
TOPICS = ('left/image_rect', 'right/image_rect', 'left/camera_info', 'right/camera_info')


class Rec:
    """Records constructor arguments (stand-in for launch actions/substitutions)."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __repr__(self):
        return f'{type(self).__name__}{self.args}{self.kwargs}'


def fake_modules(share):
    kinds = {
        'launch': ['LaunchDescription'],
        'launch.actions': ['DeclareLaunchArgument', 'SetEnvironmentVariable'],
        'launch.conditions': ['IfCondition'],
        'launch.substitutions': ['LaunchConfiguration'],
        'launch_ros.actions': ['Node'],
    }
    mods = {
        'launch_ros': types.ModuleType('launch_ros'),
        'ament_index_python.packages': types.ModuleType('ament_index_python.packages'),
    }
    for mod, names in kinds.items():
        m = types.ModuleType(mod)
        for n in names:
            setattr(m, n, type(n, (Rec,), {}))
        mods[mod] = m
    mods['ament_index_python.packages'].get_package_share_directory = lambda pkg: (
        str(share) if pkg == 'ffs_ros' else (_ for _ in ()).throw(LookupError(pkg))
    )
    return mods


@pytest.fixture(params=['', 'jazzy'])
def description(monkeypatch, request):
    """Return the launch description's entities by type and its arguments (ROS_DISTRO varied)."""
    monkeypatch.setenv('ROS_DISTRO', request.param)
    for name, mod in fake_modules(REPO).items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location('stereo_launch_under_test', LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    entities = ld.args[0]
    by_type = {}
    for e in entities:
        by_type.setdefault(type(e).__name__, []).append(e)
    args = {a.args[0]: a.kwargs for a in by_type['DeclareLaunchArgument']}
    return by_type, args


def test_launch_file_ast_uses_launch_ros_and_the_shipped_files():
    tree = ast.parse(LAUNCH.read_text())
    funcs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert 'generate_launch_description' in funcs
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {'launch', 'launch_ros.actions', 'ament_index_python.packages'} <= imported
    strings = {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }
    assert {
        'stereo.yaml',
        'fastdds_shm.xml',
        'stereo_node',
        'FASTDDS_DEFAULT_PROFILES_FILE',
    } <= strings


def test_launch_description_node_params_file_namespace_and_remaps(description):
    by_type, args = description
    assert Path(args['params_file']['default_value']) == REPO / 'config' / 'stereo.yaml'
    assert args['namespace']['default_value'] == ''
    nodes = [n for n in by_type['Node'] if n.kwargs.get('executable') == 'stereo_node']
    assert len(nodes) == 1
    node = nodes[0].kwargs
    assert node['package'] == 'ffs_ros'
    (params,) = node['parameters']
    assert params.args == ('params_file',)
    assert node['namespace'].args == ('namespace',)
    remaps = {src: dst.args[0] for src, dst in node['remappings']}
    assert set(remaps) == set(TOPICS)
    for src, arg in remaps.items():
        assert args[arg]['default_value'] == src  # default: no remap


def test_launch_sets_the_shipped_shm_profile(description):
    """Set FASTDDS_... (Fast DDS 3.x), and FASTRTPS_... too on 2.x distros (Humble, Jazzy)."""
    import os
    by_type, args = description
    envs = by_type['SetEnvironmentVariable']
    names = sorted(e.args[0] for e in envs)
    if os.environ['ROS_DISTRO'] == 'jazzy':
        assert names == ['FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE']
    else:
        assert names == ['FASTDDS_DEFAULT_PROFILES_FILE']
    for env in envs:
        assert Path(env.args[1]) == REPO / 'config' / 'fastdds_shm.xml'
        assert Path(env.args[1]).is_file()
        assert env.kwargs['condition'].args[0].args == ('shm_transport',)
    assert args['shm_transport']['default_value'] == 'true'


def test_setup_installs_launch_and_config():
    text = (REPO / 'setup.py').read_text()
    assert "glob('launch/*.py')" in text and "glob('config/*')" in text


def test_node_started_like_launch_ros_listens_on_remapped_topics(tmp_path, description):
    """launch_ros turns parameters/namespace/remappings into --params-file, -r __ns:=, -r a:=b."""
    by_type, args = description
    node = next(n for n in by_type['Node'] if n.kwargs.get('executable') == 'stereo_node').kwargs
    values = {
        'params_file': args['params_file']['default_value'],
        'namespace': '/front',
        'left_image': '/cams/front/left/image_rect_color',
        'right_image': '/cams/front/right/image_rect_color',
        'left_camera_info': '/cams/front/left/camera_info',
        'right_camera_info': '/cams/front/right/camera_info',
        'node_name': 'stereo_node',
    }
    cmd = [
        str(Path(sys.executable).with_name('stereo_node')),
        '--ros-args',
        '-r',
        f'__node:={values["node_name"]}',
        '-r',
        f'__ns:={values[node["namespace"].args[0]]}',
        '--params-file',
        values[node['parameters'][0].args[0]],
    ]
    for src, dst in node['remappings']:
        cmd += ['-r', f'{src}:={values[dst.args[0]]}']
    env = dict(
        os.environ,
        ROS_DOMAIN_ID=str(unique_domain_id(301)),
        ROS_AUTOMATIC_DISCOVERY_RANGE='OFF',
        ROS_LOG_DIR=str(tmp_path / 'log'),
    )
    line, rest = start_until_listening(cmd, env)
    assert (
        'listening on /cams/front/left/image_rect_color, /cams/front/right/image_rect_color'
        in line
    ), line + rest
    assert '[front.stereo_node]' in line
