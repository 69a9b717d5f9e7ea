"""ffs_ros: Fast-FoundationStereo stereo depth for ROS 2 (ament_python package).

Installs two ways: `colcon build` in a ROS workspace, or `pip install -e .` into a venv
(the `ros-*` wheels from PyPI then provide rclpy and the messages; see requirements.txt).
"""

from glob import glob
import os

from setuptools import find_packages, setup
from setuptools.command.install_scripts import install_scripts

package_name = 'ffs_ros'


class InstallScripts(install_scripts):
    """The scripts, plus a `lib/ffs_ros/stereo_node` launcher where they are installed elsewhere.

    `ros2 launch` / `ros2 run` look for executables in <prefix>/lib/ffs_ros. colcon installs the
    scripts there (setup.cfg); a pip install (a wheel) puts them in <prefix>/bin and the data
    files in <prefix>, so for it a small launcher beside the data runs <prefix>/bin/stereo_node.
    """

    def run(self):
        super().run()
        data_dir = self.get_finalized_command('install').install_data
        libexec = os.path.join(data_dir, 'lib', package_name)
        if os.path.abspath(self.install_dir) == os.path.abspath(libexec):
            return  # colcon / `setup.py install`: the real scripts are already there
        self.mkpath(libexec)
        launcher = os.path.join(libexec, 'stereo_node')
        if not self.dry_run:
            with open(launcher, 'w') as f:
                f.write(
                    '#!/bin/sh\n# pip install: the console script is in <prefix>/bin\n'
                    'exec "$(dirname "$0")/../../bin/stereo_node" "$@"\n'
                )
            os.chmod(launcher, 0o755)
        self.outfiles.append(launcher)


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
    ]
    # one folder per shipped model tier (ffs_ros.paths.MODEL_TIERS): models/ffs_fast, ffs_small
    + [
        ('share/' + package_name + '/' + d, [f for f in glob(d + '/*') if os.path.isfile(f)])
        for d in sorted(glob('models/*'))
        if os.path.isdir(d)
    ],
    # Dependencies are listed in package.xml (ROS) and requirements.txt (pip); on a ROS
    # system rclpy & co. come from the distro, so nothing is forced here.
    install_requires=['setuptools', 'numpy', 'pyyaml'],
    zip_safe=True,
    cmdclass={'install_scripts': InstallScripts},
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
