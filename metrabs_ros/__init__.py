"""metrabs_ros: metric, absolute 3D human pose estimation (MeTRAbs) as a library, a CLI and a ROS 2 node.

Public API::

    from metrabs_ros import PoseEstimator, CameraModel, reconstruct_absolute
    estimator = PoseEstimator()                      # embedded default models
    result = estimator.detect_poses(image_rgb, intrinsic_matrix=K)
    result.poses3d_mm                                # [people, joints, 3] millimetres, camera frame

The ROS interface (generated ``metrabs_ros.msg``) is installed by the ROS build into another directory of the
same package; ``extend_path`` lets it join this source package.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = '0.1.0'

_LAZY = {
    'PoseEstimator': 'metrabs_ros.estimator',
    'PoseResult': 'metrabs_ros.estimator',
    'CameraModel': 'metrabs_ros.camera',
    'intrinsics_from_fov': 'metrabs_ros.camera',
    'reconstruct_absolute': 'metrabs_ros.absolute_pose',
    'suppress_implausible_poses': 'metrabs_ros.plausibility',
    'get_skeleton': 'metrabs_ros.skeletons',
    'tta_parameters': 'metrabs_ros.augmentation',
}

__all__ = sorted(_LAZY) + ['__version__']


def __getattr__(name):
    # Lazy imports keep `import metrabs_ros.msg` (ROS) and the CLI's start-up free of ONNX Runtime.
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    import importlib
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
