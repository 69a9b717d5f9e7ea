"""ffs_ros: Fast-FoundationStereo stereo depth for ROS 2 (ament_python package).

Installs two ways: `colcon build` in a ROS workspace, or `pip install -e .` into a venv
(the `ros-*` wheels from PyPI then provide rclpy and the messages; see requirements.txt).
"""
import os
from glob import glob

from setuptools import find_packages, setup

package_name = 'ffs_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.py')),
        ('share/' + package_name + '/config', glob('config/*')),
        ('share/' + package_name + '/models', [f for f in glob('models/*') if os.path.isfile(f)]),
    ],
    # Dependencies are listed in package.xml (ROS) and requirements.txt (pip); on a ROS
    # system rclpy & co. come from the distro, so nothing is forced here.
    install_requires=['setuptools', 'numpy', 'pyyaml'],
    zip_safe=True,
    maintainer='ffs_ros developers',
    maintainer_email='ffs-ros@example.com',
    description='Fast-FoundationStereo disparity, depth and point clouds for ROS 2',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'stereo_node = ffs_ros.node.stereo_node:main',
            'ffs-ros = ffs_ros.cli:main',
        ],
    },
)
