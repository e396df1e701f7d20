"""ROS 2 node ``demo_camera``: publishes ``image`` (sensor_msgs/Image) + ``camera_info`` (same stamp and frame_id)
at a fixed rate from a synthetic scene with known ground truth, a video file or a folder of images.

With ``source:=synthetic`` (default) people walk through a scene rendered by :mod:`metrabs_ros.synthetic_scene`
(exact intrinsics, exact 3D joints); the ground truth is published as metrabs_ros/Poses3D (METRES, the image's
stamp and optical frame) on ``ground_truth/poses3d`` so that tests and benchmarks can compare. The clip
(``synthetic_frames`` frames, animation time step 1/rate_hz) is rendered once at start-up and then looped, so the
publish rate does not depend on the renderer's speed.

Video/folder sources: CameraInfo from ``camera_info_file`` (JSON/YAML, e.g. a ROS camera_calibration file) or a
``fov_degrees`` guess.

``max_frames`` > 0 ends the node after that many frames (exit code 0); ``wait_for_subscribers`` > 0 holds
publishing until that many subscribers listen on ``image``.
"""

from __future__ import annotations

import itertools
import sys
from typing import List, Optional, Sequence

import numpy as np

from metrabs_ros.camera import CameraModel

DEMO_PARAMETERS = {
    # name: (default, description)
    'source': ('synthetic', "'synthetic', a video file, an image file or a folder of images"),
    'rate_hz': (30.0, 'publish rate (frames per second)'),
    'frame_id': ('camera_optical_frame', 'frame_id of image and camera_info (an optical frame)'),
    'width': (640, 'synthetic image width in pixels'),
    'height': (480, 'synthetic image height in pixels'),
    'num_people': (1, 'synthetic: number of people'),
    'seed': (0, 'synthetic: random seed of the scene'),
    'flat_colours': (True, 'synthetic: flat per-person colours (for the colour-key test detector) instead of '
                           'shaded clothing'),
    'background': ('checker', 'synthetic: plain, gradient, noise or checker'),
    'synthetic_frames': (60, 'synthetic: frames rendered at start-up and looped (animation step 1/rate_hz)'),
    'fov_degrees': (55.0, 'field of view of the larger image side (synthetic camera, and the CameraInfo of '
                          'video/folder sources without camera_info_file)'),
    'camera_info_file': ('', 'video/folder: camera intrinsics (JSON/YAML, see metrabs_ros.io_utils)'),
    'encoding': ('rgb8', 'published encoding: rgb8, bgr8, rgba8, bgra8 or mono8'),
    'loop': (True, 'restart the clip/video at its end (false: stop after the last frame)'),
    'max_frames': (0, 'stop after this many published frames; 0 = never'),
    'wait_for_subscribers': (0, "publish only once 'image' has at least this many subscribers"),
    'wait_for_ground_truth_subscribers': (0, "synthetic: also wait until 'ground_truth/poses3d' has this many "
                                              'subscribers'),
    'publish_ground_truth': (True, "synthetic: publish the ground truth on 'ground_truth/poses3d'"),
    'qos': ('reliable', 'QoS of the publishers: reliable or sensor_data (best effort)'),
}


def synthetic_clip(num_frames: int, rate_hz: float, image_hw, num_people: int, seed: int, fov_degrees: float,
                   flat_colours: bool, background: str) -> list:
    """Render ``num_frames`` frames of :func:`metrabs_ros.synthetic_scene.animate_scene` at ``t = i / rate_hz``."""
    from metrabs_ros.synthetic_scene import animate_scene
    camera = CameraModel.create(image_hw=image_hw, fov_degrees=fov_degrees)
    return [animate_scene(seed, i / rate_hz, image_hw=image_hw, num_people=num_people, camera=camera,
                          fov_degrees=fov_degrees, flat_colours=flat_colours, background=background)
            for i in range(num_frames)]


def fill_camera_info(msg, camera: CameraModel, image_hw):
    """Fill a sensor_msgs/CameraInfo (K, D, R = I, P = [K|0], distortion model) for ``camera``; returns ``msg``."""
    K = camera.intrinsic_matrix
    msg.height, msg.width = int(image_hw[0]), int(image_hw[1])
    if camera.distortion_model == 'fisheye':
        msg.distortion_model, d = 'equidistant', camera.distortion_coeffs[:4]
    elif np.any(camera.distortion_coeffs[5:]):
        msg.distortion_model, d = 'rational_polynomial', camera.distortion_coeffs[:8]
    else:
        msg.distortion_model, d = 'plumb_bob', camera.distortion_coeffs[:5]
    msg.d = [float(v) for v in d]
    msg.k = [float(v) for v in K.reshape(-1)]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [float(v) for v in np.concatenate([K, np.zeros((3, 1))], axis=1).reshape(-1)]
    return msg


def ground_truth_poses3d_msg(scene, header):
    """metrabs_ros/Poses3D (metres) of a synthetic :class:`~metrabs_ros.synthetic_scene.Scene`: every person
    with at least one rendered pixel, joints in the camera (optical) frame, ``in_image`` = visible."""
    from geometry_msgs.msg import Point
    from std_msgs.msg import Header

    from metrabs_ros.msg import Keypoint2D, Person3D, Poses3D
    from metrabs_ros.skeletons import get_skeleton
    skeleton = get_skeleton('smpl_24')
    msg = Poses3D(header=Header(stamp=header.stamp, frame_id=header.frame_id), skeleton='smpl_24',
                  joint_names=list(scene.joint_names),
                  edges=np.asarray(skeleton.edges, np.int64).reshape(-1).astype(np.uint16).tolist(),
                  image_height_px=int(scene.image_rgb.shape[0]), image_width_px=int(scene.image_rgb.shape[1]))
    people = []
    for index, person in enumerate(scene.people):
        if person.num_pixels == 0:
            continue
        joints_m = np.asarray(person.joints3d_mm, np.float64) / 1000.0
        x, y, w, h = np.asarray(person.box_xywh_px, np.float64).tolist()
        px, py, pz = joints_m[0].tolist()       # smpl_24 joint 0 = pelvis
        people.append(Person3D(
            id=index, score=1.0, box_x_px=x, box_y_px=y, box_width_px=w, box_height_px=h,
            position=Point(x=px, y=py, z=pz),
            joints=[Point(x=a, y=b, z=c) for a, b, c in joints_m.tolist()],
            joints_2d=[Keypoint2D(x_px=u, y_px=v, in_image=bool(vis)) for (u, v), vis in
                       zip(np.asarray(person.joints2d_px, np.float64).tolist(), person.joint_visible.tolist())]))
    msg.people = people
    return msg


def _make_node_class():
    from rclpy.node import Node

    class DemoCamera(Node):
        def __init__(self):
            super().__init__('demo_camera')
            for name, (default, description) in DEMO_PARAMETERS.items():
                from rcl_interfaces.msg import ParameterDescriptor
                self.declare_parameter(name, default, ParameterDescriptor(description=description, read_only=True))
            self.p = {name: self.get_parameter(name).value for name in DEMO_PARAMETERS}
            self.published = 0
            self.finished = False

        def start(self):
            from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
            from sensor_msgs.msg import CameraInfo, Image

            from metrabs_ros.msg import Poses3D
            p = self.p
            if p['rate_hz'] <= 0:
                raise ValueError(f'rate_hz must be > 0, got {p["rate_hz"]}')
            if p['encoding'] not in ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8'):
                raise ValueError(f'unsupported encoding {p["encoding"]!r}: rgb8, bgr8, rgba8, bgra8 or mono8')
            qos = qos_profile_sensor_data if p['qos'] == 'sensor_data' else QoSProfile(
                depth=5, reliability=QoSReliabilityPolicy.RELIABLE)
            self.image_publisher = self.create_publisher(Image, 'image', qos)
            self.info_publisher = self.create_publisher(CameraInfo, 'camera_info', qos)
            self.gt_publisher = None
            self.scenes: Optional[List] = None
            self.frames = None
            if p['source'] == 'synthetic':
                hw = (int(p['height']), int(p['width']))
                self.get_logger().info(f'rendering {p["synthetic_frames"]} synthetic frames '
                                       f'({hw[1]}x{hw[0]}, {p["num_people"]} people)...')
                self.scenes = synthetic_clip(int(p['synthetic_frames']), float(p['rate_hz']), hw,
                                             int(p['num_people']), int(p['seed']), float(p['fov_degrees']),
                                             bool(p['flat_colours']), p['background'])
                self.camera, self.image_hw = self.scenes[0].camera, hw
                if p['publish_ground_truth']:
                    self.gt_publisher = self.create_publisher(
                        Poses3D, 'ground_truth/poses3d', QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE))
            else:
                self._open_file_source()
            self.CameraInfo, self.Image = CameraInfo, Image
            self.index = 0
            self.timer = self.create_timer(1.0 / float(p['rate_hz']), self._tick)
            self.get_logger().info(f'publishing {self.image_publisher.topic_name} + {self.info_publisher.topic_name} '
                                   f'at {p["rate_hz"]} Hz from {p["source"]}')

        def _open_file_source(self):
            from metrabs_ros.io_utils import iterate_frames, load_intrinsics
            self._iterate = lambda: (image for _, image, _ in iterate_frames(self.p['source']))
            frames = self._iterate()
            first = next(frames)
            self.frames = itertools.chain([first], frames)
            self.image_hw = first.shape[:2]
            if self.p['camera_info_file']:
                self.camera = CameraModel.create(**load_intrinsics(self.p['camera_info_file']))
            else:
                self.camera = CameraModel.create(image_hw=self.image_hw, fov_degrees=float(self.p['fov_degrees']))

        def _next_image(self):
            if self.scenes is not None:
                if self.index >= len(self.scenes):
                    if not self.p['loop']:
                        return None, None
                    self.index = 0
                scene = self.scenes[self.index]
                self.index += 1
                return scene.image_rgb, scene
            image = next(self.frames, None)
            if image is None and self.p['loop']:
                self.frames = self._iterate()
                image = next(self.frames, None)
            return image, None

        def _tick(self):
            from std_msgs.msg import Header

            from metrabs_ros.ros.image_conversion import fill_image_msg
            if self.finished:
                return
            if self.image_publisher.get_subscription_count() < int(self.p['wait_for_subscribers']):
                return
            if self.gt_publisher is not None and self.published == 0 and \
                    self.gt_publisher.get_subscription_count() < int(self.p['wait_for_ground_truth_subscribers']):
                return
            image, scene = self._next_image()
            if image is None:
                self.get_logger().info('end of the input')
                self.finished = True
                return
            header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.p['frame_id'])
            image_msg = fill_image_msg(self.Image(header=header), image, self.p['encoding'])
            info_msg = fill_camera_info(self.CameraInfo(header=header), self.camera, image.shape[:2])
            if scene is not None and self.gt_publisher is not None:
                self.gt_publisher.publish(ground_truth_poses3d_msg(scene, header))
            self.info_publisher.publish(info_msg)
            self.image_publisher.publish(image_msg)
            self.published += 1
            if 0 < int(self.p['max_frames']) <= self.published:
                self.get_logger().info(f'published {self.published} frames (max_frames)')
                self.finished = True

    return DemoCamera


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``demo_camera`` executable; returns the exit code (0 also after Ctrl-C, once or twice)."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from metrabs_ros.ros.shutdown import ShutdownSignals
    signals = ShutdownSignals('demo_camera').install()   # before rclpy.init: rclpy's handler chains to it
    rclpy.init(args=list(sys.argv if argv is None else argv))
    node = None
    exit_code = 0
    try:
        node = _make_node_class()()
        try:
            node.start()
        except Exception as error:
            if signals.requested.is_set():
                return exit_code
            node.get_logger().fatal(f'cannot start: {type(error).__name__}: {error}')
            exit_code = 1
            return exit_code
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not node.finished and not signals.requested.is_set():
            executor.spin_once(timeout_sec=0.1)
        if not signals.requested.is_set():
            # Give reliable subscribers a moment to receive the last frames before the publishers disappear.
            for _ in range(5):
                executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    except Exception:
        if rclpy.ok() and not signals.requested.is_set():
            raise
        # SIGINT/SIGTERM shut the context down while a timer callback was publishing: a normal shutdown.
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        signals.ignore_interrupts_from_now()
    return exit_code


if __name__ == '__main__':
    sys.exit(main())
