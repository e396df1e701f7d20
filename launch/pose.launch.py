"""Launch the metrabs_ros pose node (and optionally the demo camera and RViz).

    ros2 launch metrabs_ros pose.launch.py image:=/camera/color/image_raw camera_info:=/camera/color/camera_info \
        model:=/path/pose.onnx
    ros2 launch metrabs_ros pose.launch.py demo:=true rviz:=true model:=/path/pose.onnx   # synthetic camera

Arguments (``ros2 launch metrabs_ros pose.launch.py --show-args``):
  image, camera_info   input topics (the node subscribes ``image`` or ``image/compressed`` and ``camera_info``)
  compressed           subscribe ``<image>/compressed`` (sensor_msgs/CompressedImage) instead of ``<image>``
  model, detector      ONNX files; '' = the value in params_file (default: $METRABS_ROS_MODEL / embedded)
  skeleton, backend    override params_file ('' = keep)
  namespace            namespace of the nodes (outputs: <ns>/poses3d, <ns>/markers, <ns>/debug_image)
  params_file          parameter file (default: share/metrabs_ros/config/pose.yaml, every parameter documented)
  demo                 also start demo_camera (synthetic people) publishing on image/camera_info
  rviz                 also start RViz with share/metrabs_ros/rviz/pose.rviz (when rviz2 is not installed: a
                       warning, and the rest of the launch runs)
  fixed_frame          RViz fixed frame (the image's optical frame; the demo camera uses camera_optical_frame)
  fastdds_profile      Fast DDS XML profile for the started processes (default: large shared-memory segments,
                       needed for full-size images over SHM); '' = leave the environment alone
"""

import os

import launch.logging
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from metrabs_ros.ros.launch_support import find_executable, missing_message

PACKAGE = 'metrabs_ros'


def _nodes(context, *args, **kwargs):
    """Build the node actions from the evaluated arguments (so that empty arguments do not override the
    parameter file)."""
    arg = {name: LaunchConfiguration(name).perform(context) for name in (
        'image', 'camera_info', 'compressed', 'model', 'detector', 'skeleton', 'backend', 'namespace',
        'params_file', 'demo', 'rviz', 'fixed_frame')}
    compressed = arg['compressed'].lower() in ('true', '1', 'yes')
    overrides = {'compressed': compressed}
    for launch_name, parameter in (('model', 'model_path'), ('detector', 'detector_path'),
                                   ('skeleton', 'skeleton'), ('backend', 'backend')):
        if arg[launch_name]:
            overrides[parameter] = arg[launch_name]
    image = arg['image']
    pose_node = Node(
        package=PACKAGE, executable='pose_node', name='pose_node', namespace=arg['namespace'], output='screen',
        parameters=[arg['params_file'], overrides],
        # the node derives <image>/compressed from the resolved image topic itself
        remappings=[('image', image), ('camera_info', arg['camera_info'])],
    )
    actions = []
    profile = LaunchConfiguration('fastdds_profile').perform(context)
    if profile:
        actions.append(SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', profile))
    actions.append(pose_node)
    if arg['demo'].lower() in ('true', '1', 'yes'):
        actions.append(Node(
            package=PACKAGE, executable='demo_camera', name='demo_camera', namespace=arg['namespace'],
            output='screen', parameters=[{'num_people': 2, 'rate_hz': 15.0}],
            remappings=[('image', image), ('camera_info', arg['camera_info'])],
        ))
    if arg['rviz'].lower() in ('true', '1', 'yes'):
        # Resolved now, not by the Node action: an unresolvable package would abort the whole launch (after the
        # pose node started, leaving it orphaned). RViz is optional: warn and go on without it.
        rviz_path, reason = find_executable('rviz2', 'rviz2')
        if rviz_path is None:
            launch.logging.get_logger('launch').warning(missing_message(
                'rviz', 'rviz2', reason, 'Install it (e.g. apt install ros-$ROS_DISTRO-rviz2) or run RViz '
                'elsewhere with share/metrabs_ros/rviz/pose.rviz.'))
            return actions
        share = FindPackageShare(PACKAGE).perform(context)
        actions.append(Node(
            package='rviz2', executable='rviz2', name='rviz', output='screen',
            arguments=['-d', os.path.join(share, 'rviz', 'pose.rviz'), '-f', arg['fixed_frame']],
        ))
    return actions


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument('image', default_value='/camera/image_raw',
                              description='input image topic (sensor_msgs/Image)'),
        DeclareLaunchArgument('camera_info', default_value='/camera/camera_info',
                              description='CameraInfo topic of the image'),
        DeclareLaunchArgument('compressed', default_value='false', choices=['true', 'false'],
                              description='subscribe <image>/compressed (sensor_msgs/CompressedImage)'),
        DeclareLaunchArgument('model', default_value='', description="pose model .onnx ('' = params_file)"),
        DeclareLaunchArgument('detector', default_value='', description="detector .onnx ('' = params_file)"),
        DeclareLaunchArgument('skeleton', default_value='',
                              description="output skeleton, e.g. smpl_24, coco_19 ('' = params_file)"),
        DeclareLaunchArgument('backend', default_value='',
                              description="auto, onnxruntime, cuda, ort-tensorrt ('' = params_file)"),
        DeclareLaunchArgument('namespace', default_value='', description='namespace of the nodes'),
        DeclareLaunchArgument('params_file', default_value=[share, '/config/pose.yaml'],
                              description='pose_node parameter file'),
        DeclareLaunchArgument('demo', default_value='false', choices=['true', 'false'],
                              description='also start the synthetic demo camera'),
        DeclareLaunchArgument('rviz', default_value='false', choices=['true', 'false'],
                              description='also start RViz'),
        DeclareLaunchArgument('fixed_frame', default_value='camera_optical_frame',
                              description='RViz fixed frame (the image frame_id)'),
        DeclareLaunchArgument('fastdds_profile', default_value=[share, '/config/fastdds_large_shm.xml'],
                              description="Fast DDS profile for the started nodes ('' = unchanged)"),
        OpaqueFunction(function=_nodes),
    ])
