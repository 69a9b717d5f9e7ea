"""Launch one stereo_node per camera pair.

    ros2 launch ffs_ros stereo.launch.py namespace:=front \
        left_image:=/front/left/image_rect right_image:=/front/right/image_rect \
        left_camera_info:=/front/left/camera_info right_camera_info:=/front/right/camera_info

Several pairs = several launches (or includes) with different `namespace`s. `params_file`
defaults to the shipped config/stereo.yaml (every parameter with a comment). With
`shm_transport:=true` (default) FASTDDS_DEFAULT_PROFILES_FILE is set to the shipped 16 MB
shared-memory profile (config/fastdds_shm.xml) for this node and everything launched after it
in the same launch (put your camera driver there too: both sides need it for large images).
`rviz:=true` also opens RViz with config/stereo.rviz (cloud + depth image).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

# (launch argument, topic the node subscribes to, description)
CAMERA_REMAPS = (
    ('left_image', 'left/image_rect', 'rectified left image topic'),
    ('right_image', 'right/image_rect', 'rectified right image topic'),
    (
        'left_camera_info',
        'left/camera_info',
        'left CameraInfo topic (rectified: P holds the projection)',
    ),
    ('right_camera_info', 'right/camera_info', 'right CameraInfo topic (P[0,3] = -fx * baseline)'),
)


def generate_launch_description():
    share = get_package_share_directory('ffs_ros')
    default_params = os.path.join(share, 'config', 'stereo.yaml')
    shm_profile = os.path.join(share, 'config', 'fastdds_shm.xml')
    rviz_config = os.path.join(share, 'config', 'stereo.rviz')

    args = [
        DeclareLaunchArgument(
            'params_file',
            default_value=default_params,
            description='stereo_node parameters (YAML with a /** key)',
        ),
        DeclareLaunchArgument(
            'namespace',
            default_value='',
            description='namespace of this camera pair: topics become <ns>/disparity, ...',
        ),
        DeclareLaunchArgument('node_name', default_value='stereo_node', description='node name'),
        DeclareLaunchArgument(
            'shm_transport',
            default_value='true',
            description='point FASTDDS_/FASTRTPS_DEFAULT_PROFILES_FILE at the shipped SHM profile',
        ),
        DeclareLaunchArgument('rviz', default_value='false', description='also start RViz'),
    ]
    args += [
        DeclareLaunchArgument(arg, default_value=topic, description=desc)
        for arg, topic, desc in CAMERA_REMAPS
    ]

    node = Node(
        package='ffs_ros',
        executable='stereo_node',
        name=LaunchConfiguration('node_name'),
        namespace=LaunchConfiguration('namespace'),
        parameters=[LaunchConfiguration('params_file')],
        remappings=[(topic, LaunchConfiguration(arg)) for arg, topic, _ in CAMERA_REMAPS],
        output='screen',
        emulate_tty=True,
    )
    rviz = Node(
        package='rviz2',
        executable='rviz2',
        arguments=['-d', rviz_config],
        namespace=LaunchConfiguration('namespace'),
        condition=IfCondition(LaunchConfiguration('rviz')),
    )
    # Fast DDS 3.x (Kilted and later) reads FASTDDS_DEFAULT_PROFILES_FILE (and warns about the old
    # name); 2.x (Humble, Jazzy, JetPack 6) only FASTRTPS_DEFAULT_PROFILES_FILE
    names = ['FASTDDS_DEFAULT_PROFILES_FILE']
    if os.environ.get('ROS_DISTRO', '').lower() in ('humble', 'iron', 'jazzy'):
        names.append('FASTRTPS_DEFAULT_PROFILES_FILE')
    shm = [
        SetEnvironmentVariable(
            name, shm_profile, condition=IfCondition(LaunchConfiguration('shm_transport'))
        )
        for name in names
    ]
    return LaunchDescription(args + shm + [node, rviz])
