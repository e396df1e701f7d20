"""pip install of the metrabs_ros library (no ROS needed). The ROS package (messages, node, launch) is built by
CMake/colcon from CMakeLists.txt + package.xml; see README."""

from setuptools import find_packages, setup

setup(
    name='metrabs_ros',
    version='0.1.0',
    description='Real-time metric absolute 3D human pose estimation (MeTRAbs) for Python and ROS 2',
    license='MIT',
    python_requires='>=3.10',
    packages=find_packages(include=['metrabs_ros', 'metrabs_ros.*']),
    package_data={'metrabs_ros': ['models/*.onnx', 'models/*.md', 'models/*.npz', 'models/NOTICE',
                                  'models/licenses/*.txt']},
    install_requires=['numpy>=1.24', 'onnxruntime>=1.17', 'opencv-python-headless>=4.8'],
    extras_require={
        'train': ['torch>=2.2', 'onnx>=1.15', 'anny==0.6.2', 'pybullet>=3.2', 'numba>=0.60', 'scikit-image>=0.22'],
        'test': ['pytest>=8', 'onnx>=1.15', 'torch>=2.2', 'pyyaml'],
    },
    entry_points={'console_scripts': [
        'metrabs-ros = metrabs_ros.cli:main',
        # ROS executables (need rclpy and the built messages; a ROS build installs them as lib/metrabs_ros/*)
        'metrabs-ros-pose-node = metrabs_ros.ros.pose_node:main',
        'metrabs-ros-pose-lifecycle-node = metrabs_ros.ros.pose_lifecycle_node:main',
        'metrabs-ros-demo-camera = metrabs_ros.ros.demo_camera:main',
        'metrabs-ros-demo = metrabs_ros.ros.demo_main:main',
    ]},
)
