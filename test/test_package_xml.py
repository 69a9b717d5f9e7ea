"""package.xml lists exactly what the code imports (a ROS distro installs from it with rosdep)."""

import ast
from pathlib import Path
import sys
import xml.etree.ElementTree as ET

REPO = Path(__file__).resolve().parent.parent
# import name -> rosdep key
KEYS = {
    'rclpy': 'rclpy',
    'rcl_interfaces': 'rcl_interfaces',
    'sensor_msgs': 'sensor_msgs',
    'stereo_msgs': 'stereo_msgs',
    'diagnostic_msgs': 'diagnostic_msgs',
    'std_msgs': 'std_msgs',
    'message_filters': 'message_filters',
    'launch': 'launch',
    'launch_ros': 'launch_ros',
    'ament_index_python': 'ament_index_python',
    'numpy': 'python3-numpy',
    'cv2': 'python3-opencv',
    'yaml': 'python3-yaml',
    'psutil': 'python3-psutil',
    'skimage': 'python3-skimage',
    'onnx': 'python3-onnx',
    'onnxruntime': 'python3-onnxruntime-pip',
}
# imported only by optional features, documented in package.xml and the README instead of being
# required
OPTIONAL = {'torch', 'tensorrt', 'onnxconverter_common', 'rosbags'}


def imported_top_level() -> set:
    names = set()
    for path in list((REPO / 'ffs_ros').rglob('*.py')) + list((REPO / 'launch').glob('*.py')):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split('.')[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split('.')[0])
    return {
        n for n in names if n not in sys.stdlib_module_names and n not in ('ffs_ros', '__future__')
    }


def test_package_xml_matches_the_imports():
    deps = {e.text for e in ET.parse(REPO / 'package.xml').getroot().iter('exec_depend')}
    used = imported_top_level()
    unknown = used - set(KEYS) - OPTIONAL
    assert not unknown, f'imported but neither in package.xml nor optional: {sorted(unknown)}'
    needed = {KEYS[n] for n in used if n in KEYS}
    assert deps == needed, (
        f'missing: {sorted(needed - deps)}, not imported: {sorted(deps - needed)}'
    )
