"""End-to-end and robustness tests of pose_node / demo_camera: real rclpy nodes in separate processes, each test
on its own ROS domain (localhost discovery, large-SHM Fast DDS profile), this process subscribing/publishing.

Models are the test fixtures (random-weight pose model, colour-key detector): the checks are geometric (where the
people are, metres vs millimetres, stamps/frames), not accuracy.
"""

import itertools
import os
import re
import time

import numpy as np
import pytest

from metrabs_ros.ros.node_processes import (default_fastdds_profile, ensure_messages, pick_domain_id, read_log,
                                            ros_environment, shared_memory_files, start_node, stop_node)

pytestmark = [pytest.mark.ros, pytest.mark.slow]

# Before this process creates any DDS participant: localhost discovery, the large shared-memory profile.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
if default_fastdds_profile():
    os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', default_fastdds_profile())

_DOMAIN_SEEDS = itertools.count(1)
IMAGE_HW = (480, 640)


@pytest.fixture(scope='module', autouse=True)
def messages():
    ensure_messages()


class Harness:
    """This test's ROS domain: an rclpy context + node in this process, node processes started in it."""

    def __init__(self, tmp_path):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        self.domain_id = pick_domain_id(next(_DOMAIN_SEEDS) * 7919)
        self.env = ros_environment(self.domain_id)
        self.tmp_path = tmp_path
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=self.domain_id)
        self.node = rclpy.create_node('metrabs_ros_test', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.processes = []

    # processes -------------------------------------------------------------------------------------------
    def start(self, executable, params=None, remaps=None, name=None):
        args = []
        for key, value in (params or {}).items():
            if isinstance(value, bool):
                value = 'true' if value else 'false'
            args += ['-p', f'{key}:={value}']
        for source, target in (remaps or {}).items():
            args += ['-r', f'{source}:={target}']
        log = self.tmp_path / f'{name or executable}.log'
        process = start_node(executable, args, env=self.env, log_path=log)
        self.processes.append(process)
        return process

    def stop(self, process, expect_code=0):
        """SIGINT; the exit code must be ``expect_code`` and the Fast DDS segments it mapped must be gone."""
        segments = shared_memory_files(process.pid)
        code = stop_node(process)
        assert code == expect_code, f'exit code {code}; log:\n{read_log(process)[-3000:]}'
        leftovers = [f for f in segments if os.path.exists(f)]
        assert not leftovers, f'shared-memory files left behind: {leftovers}'
        return code

    # communication ---------------------------------------------------------------------------------------
    def spin_until(self, predicate, timeout_s, what='condition', process=None, fail=True):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            if process is not None and process.poll() is not None:
                pytest.fail(f'node exited ({process.returncode}) while waiting for {what}:\n'
                            f'{read_log(process)[-3000:]}')
            self.executor.spin_once(timeout_sec=0.05)
        if not fail:
            return predicate()
        logs = '\n'.join(f'--- {p.args[2]}:\n{read_log(p)[-2500:]}' for p in self.processes)
        pytest.fail(f'timed out after {timeout_s} s waiting for {what}\n{logs}')

    def subscribe(self, msg_type, topic, depth=50):
        from rclpy.qos import QoSProfile, QoSReliabilityPolicy
        received = []
        self.node.create_subscription(
            msg_type, topic, lambda m: received.append((m, self.node.get_clock().now().nanoseconds)),
            QoSProfile(depth=depth, reliability=QoSReliabilityPolicy.RELIABLE))
        return received

    def publisher(self, msg_type, topic):
        from rclpy.qos import QoSProfile, QoSReliabilityPolicy
        return self.node.create_publisher(msg_type, topic, QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE))

    def close(self):
        import rclpy
        for process in self.processes:
            if process.poll() is None:
                stop_node(process)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def ros(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def stamp_ns(msg):
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def diagnostics_values(received, node_name='pose_node'):
    """key -> value of the newest DiagnosticStatus of ``node_name``, or {}."""
    for msg, _ in reversed(received):
        for status in msg.status:
            if status.name.startswith(node_name):
                return {kv.key: kv.value for kv in status.values}
    return {}


def pose_params(pose_model, detector, **extra):
    params = {'model_path': pose_model, 'detector_path': detector, 'suppress_implausible_poses': False}
    params.update(extra)
    return params


# ------------------------------------------------------------------------------------------------------------
def test_end_to_end_demo_camera_to_poses_and_markers(ros, fixture_pose_model, colour_key_detector):
    from diagnostic_msgs.msg import DiagnosticArray
    from visualization_msgs.msg import Marker, MarkerArray

    from metrabs_ros.msg import Poses3D
    from metrabs_ros.ros.pose_messages import poses3d_msg_to_arrays
    poses = ros.subscribe(Poses3D, 'poses3d')
    markers = ros.subscribe(MarkerArray, 'markers')
    truth = ros.subscribe(Poses3D, 'ground_truth/poses3d', depth=200)
    diagnostics = ros.subscribe(DiagnosticArray, '/diagnostics')
    pose = ros.start('pose_node', pose_params(fixture_pose_model, colour_key_detector, diagnostics_period_s=0.5))
    ros.spin_until(lambda: ros.node.count_publishers('poses3d') > 0 and ros.node.count_publishers('markers') > 0,
                   60, 'pose_node publishers', pose)
    demo = ros.start('demo_camera', {'num_people': 2, 'synthetic_frames': 8, 'rate_hz': 10.0, 'seed': 3,
                                     'wait_for_subscribers': 1, 'wait_for_ground_truth_subscribers': 1})
    ros.spin_until(lambda: sum(len(m.people) > 0 for m, _ in poses) >= 6, 60, 'six poses3d messages', pose)
    ros.spin_until(lambda: diagnostics_values(diagnostics).get('frames_processed', '0') != '0', 10, 'diagnostics')

    truth_by_stamp = {stamp_ns(m): m for m, _ in truth}
    markers_by_stamp = {}
    for m, _ in markers:
        for marker in m.markers:
            if marker.action == Marker.ADD:
                markers_by_stamp.setdefault(stamp_ns(marker), []).append(marker)
    checked = with_markers = 0
    for msg, _ in poses:
        if not msg.people:
            continue
        assert msg.header.frame_id == 'camera_optical_frame'
        gt = truth_by_stamp.get(stamp_ns(msg))
        assert gt is not None, 'poses3d stamp is not the stamp of a published image'
        assert msg.skeleton == 'smpl_24' and len(msg.joint_names) == 24
        assert (msg.image_width_px, msg.image_height_px) == (640, 480)
        assert 0 < msg.inference_time_s < msg.latency_s < 30
        arrays, gt_arrays = poses3d_msg_to_arrays(msg), poses3d_msg_to_arrays(gt)
        assert len(gt_arrays['boxes_xywh_px']) == 2 and len(arrays['boxes_xywh_px']) == 2
        # metres, in front of the camera, at a few metres like the ground truth (not millimetres)
        assert np.all(arrays['joints_m'][..., 2] > 0.5) and np.all(arrays['joints_m'][..., 2] < 30)
        assert np.all(gt_arrays['joints_m'][..., 2] < 15)
        # every ground-truth person has exactly one published person whose mean 3D joint projects into its box
        # (K of the demo camera: 55 degrees over the larger side, principal point at the centre)
        f = max(IMAGE_HW) / (2 * np.tan(np.radians(55.0) / 2))
        means = arrays['joints_m'].mean(axis=1)
        uv = means[:, :2] / means[:, 2:] * f + [IMAGE_HW[1] / 2, IMAGE_HW[0] / 2]
        for x, y, w, h in gt_arrays['boxes_xywh_px']:
            inside = (uv[:, 0] > x) & (uv[:, 0] < x + w) & (uv[:, 1] > y) & (uv[:, 1] < y + h)
            assert inside.sum() == 1, (uv, (x, y, w, h))
        # the published detection boxes are the ground-truth silhouettes' boxes
        order = np.argsort(arrays['boxes_xywh_px'][:, 0])
        gt_order = np.argsort(gt_arrays['boxes_xywh_px'][:, 0])
        np.testing.assert_allclose(arrays['boxes_xywh_px'][order], gt_arrays['boxes_xywh_px'][gt_order], atol=2.0)
        # markers of the same image: joints and bones in metres, in the image's frame, one namespace per person
        checked += 1
        frame_markers = markers_by_stamp.get(stamp_ns(msg), [])
        if not frame_markers:
            continue            # (markers of the very first results may precede the subscription's match)
        with_markers += 1
        assert len(frame_markers) == 2 * len(msg.people)
        for person in msg.people:
            by_id = {mk.id: mk for mk in frame_markers if mk.ns == f'person_{person.id}'}
            assert by_id[0].type == Marker.SPHERE_LIST and by_id[1].type == Marker.LINE_LIST
            assert by_id[0].header.frame_id == msg.header.frame_id
            np.testing.assert_allclose([(p.x, p.y, p.z) for p in by_id[0].points],
                                       [(j.x, j.y, j.z) for j in person.joints], atol=1e-9)
            assert len(by_id[1].points) == len(msg.edges)       # 2 points per edge = len(flattened edges)
    assert checked >= 6 and with_markers >= 4, (checked, with_markers)

    values = diagnostics_values(diagnostics)
    assert 'CPUExecutionProvider' in values['backend']
    assert float(values['latency_p50_ms']) > 0 and values['camera_model'].startswith('camera_info')
    ros.stop(demo)
    ros.stop(pose)


def _set_parameters(ros, node_name, **values):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    client = ros.node.create_client(SetParameters, f'/{node_name}/set_parameters')
    ros.spin_until(lambda: client.service_is_ready(), 30, 'set_parameters service')
    future = client.call_async(SetParameters.Request(
        parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]))
    ros.spin_until(future.done, 30, 'set_parameters reply')
    ros.node.destroy_client(client)
    return future.result().results


def test_runtime_parameters_are_validated(ros, fixture_pose_model_multi, colour_key_detector):
    from metrabs_ros.msg import Poses3D
    poses = ros.subscribe(Poses3D, 'poses3d')
    pose = ros.start('pose_node', pose_params(fixture_pose_model_multi, colour_key_detector, warmup=False))
    demo = ros.start('demo_camera', {'num_people': 1, 'synthetic_frames': 3, 'rate_hz': 10.0,
                                     'wait_for_subscribers': 1, 'publish_ground_truth': False})
    ros.spin_until(lambda: len(poses) >= 2, 60, 'poses3d', pose)
    assert poses[-1][0].skeleton == 'smpl_24' and len(poses[-1][0].joint_names) == 24

    (result,) = _set_parameters(ros, 'pose_node', skeleton='smpl_99')
    assert not result.successful and 'smpl_24' in result.reason and 'coco_19' in result.reason
    (result,) = _set_parameters(ros, 'pose_node', num_aug=0)
    assert not result.successful
    (result,) = _set_parameters(ros, 'pose_node', detector_threshold=1.5)
    assert not result.successful
    (result,) = _set_parameters(ros, 'pose_node', model_path='/elsewhere.onnx')
    assert not result.successful                               # start-up only (read-only)

    results = _set_parameters(ros, 'pose_node', skeleton='coco_19', num_aug=2)
    assert all(r.successful for r in results), [r.reason for r in results]
    count = len(poses)
    ros.spin_until(lambda: any(m.skeleton == 'coco_19' for m, _ in poses[count:]), 30, 'coco_19 poses', pose)
    msg = next(m for m, _ in poses[count:] if m.skeleton == 'coco_19')
    assert len(msg.joint_names) == 19 and msg.joint_names[0] == 'neck'
    assert all(len(p.joints) == 19 and len(p.joint_uncertainty_m) == 19 for p in msg.people)
    assert 'parameters changed' in read_log(pose)

    from sensor_msgs.msg import Image
    debug = ros.subscribe(Image, 'debug_image')
    results = _set_parameters(ros, 'pose_node', publish_debug_image=True)
    assert results[0].successful
    ros.spin_until(lambda: len(debug) >= 1, 30, 'debug_image', pose)
    image = debug[0][0]
    assert (image.encoding, image.width, image.height) == ('rgb8', 640, 480) and len(image.data) == 640 * 480 * 3
    assert image.header.frame_id == 'camera_optical_frame'
    ros.stop(demo)
    ros.stop(pose)


def _image_msg(image, stamp, frame='cam_optical'):
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from metrabs_ros.ros.image_conversion import fill_image_msg
    return fill_image_msg(Image(header=Header(stamp=stamp, frame_id=frame)), image, 'rgb8')


def _info_msg(camera, stamp, hw=IMAGE_HW, frame='cam_optical'):
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Header

    from metrabs_ros.ros.demo_camera import fill_camera_info
    return fill_camera_info(CameraInfo(header=Header(stamp=stamp, frame_id=frame)), camera, hw)


def _scene():
    from metrabs_ros.synthetic_scene import render_scene
    return render_scene(5, image_hw=IMAGE_HW, num_people=1, flat_colours=True, background='checker')


def test_bad_inputs_are_skipped_and_the_node_survives(ros, fixture_pose_model, colour_key_detector):
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image

    from metrabs_ros.msg import Poses3D
    scene = _scene()
    poses = ros.subscribe(Poses3D, 'poses3d')
    diagnostics = ros.subscribe(DiagnosticArray, '/diagnostics')
    image_pub, info_pub = ros.publisher(Image, 'image'), ros.publisher(CameraInfo, 'camera_info')
    pose = ros.start('pose_node', pose_params(fixture_pose_model, colour_key_detector, diagnostics_period_s=0.2,
                                              camera_info_timeout_s=30.0, warmup=False, qos='reliable'))
    ros.spin_until(lambda: image_pub.get_subscription_count() > 0 and info_pub.get_subscription_count() > 0,
                   60, 'pose_node subscriptions', pose)

    def skipped(reason):
        text = diagnostics_values(diagnostics).get('skipped_by_reason', '')
        match = re.search(rf'{reason}=(\d+)', text)
        return int(match.group(1)) if match else 0

    def send(image_msg, info_msg, reason):
        # CameraInfo and Image travel on two topics, and a freshly matched subscription may miss a first sample:
        # resend until the node reports the skip (each attempt waits for the node's diagnostics, no fixed sleep).
        before = skipped(reason)
        for _ in range(6):
            info_pub.publish(info_msg)
            image_pub.publish(image_msg)
            if ros.spin_until(lambda: skipped(reason) > before, 5, f'a frame skipped for {reason}', pose,
                              fail=False):
                return
        pytest.fail(f'the node reported no {reason} skip:\n{read_log(pose)}')

    good_image = _image_msg(scene.image_rgb, Time(sec=100))
    good_info = _info_msg(scene.camera, Time(sec=100))
    cases = []
    msg = _image_msg(scene.image_rgb, Time(sec=1))
    msg.encoding = 'bayer_rggb8'
    cases.append((msg, 'bad_image', 'unsupported image encoding'))
    msg = _image_msg(scene.image_rgb, Time(sec=2))
    msg.data = msg.data[:1000]
    cases.append((msg, 'bad_image', 'truncated image data'))
    msg = _image_msg(scene.image_rgb, Time(sec=3))
    msg.height, msg.width, msg.step, msg.data = 0, 0, 0, []
    cases.append((msg, 'bad_image', 'empty image'))
    for sec, (msg, reason, _) in enumerate(cases, start=1):
        send(msg, _info_msg(scene.camera, Time(sec=sec)), reason)

    info_cases = []
    # (K all zeros is the standard uncalibrated CameraInfo: FOV guess, not a skip; test_ros_faults.py)
    for sec, mutate, text in [(11, lambda i: setattr(i, 'k', [float('nan')] * 9), 'NaN'),
                              (12, lambda i: setattr(i, 'k', [-1.0, 0, 320, 0, -1.0, 240, 0, 0, 1]), 'positive'),
                              (13, lambda i: (setattr(i, 'width', 320), setattr(i, 'height', 240)),
                               '320x240 image')]:
        info = _info_msg(scene.camera, Time(sec=sec))
        mutate(info)
        send(_image_msg(scene.image_rgb, Time(sec=sec)), info, 'invalid_camera_info')
        info_cases.append(text)
    assert pose.poll() is None, 'the node died on bad input'
    assert not poses, 'bad frames must not produce poses3d'

    info_pub.publish(good_info)
    image_pub.publish(good_image)
    ros.spin_until(lambda: len(poses) >= 1, 30, 'poses3d for the good frame', pose)
    msg = poses[0][0]
    assert stamp_ns(msg) == 100 * 1_000_000_000 and msg.header.frame_id == 'cam_optical'
    assert len(msg.people) == 1
    log = read_log(pose)
    for _, _, text in cases:
        assert text in log
    for text in info_cases:
        assert text in log
    values = diagnostics_values(diagnostics)
    assert skipped('bad_image') >= 3 and skipped('invalid_camera_info') >= 3, values
    ros.stop(pose)


def test_compressed_images(ros, fixture_pose_model, colour_key_detector):
    import cv2
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CameraInfo, CompressedImage
    from std_msgs.msg import Header

    from metrabs_ros.msg import Poses3D
    scene = _scene()
    poses = ros.subscribe(Poses3D, 'poses3d')
    image_pub = ros.publisher(CompressedImage, '/cam/image_raw/compressed')
    info_pub = ros.publisher(CameraInfo, '/cam/camera_info')
    pose = ros.start('pose_node', pose_params(fixture_pose_model, colour_key_detector, compressed=True,
                                              warmup=False, qos='reliable'),
                     remaps={'image/compressed': '/cam/image_raw/compressed', 'camera_info': '/cam/camera_info'})
    ros.spin_until(lambda: image_pub.get_subscription_count() > 0 and info_pub.get_subscription_count() > 0,
                   60, 'pose_node subscriptions', pose)
    corrupt = CompressedImage(header=Header(stamp=Time(sec=1), frame_id='cam'), format='jpeg',
                              data=b'\xff\xd8\xff' + bytes(500))
    for _ in range(6):      # resend until a freshly matched subscription has it (no fixed sleep)
        info_pub.publish(_info_msg(scene.camera, Time(sec=1), frame='cam'))
        image_pub.publish(corrupt)
        if ros.spin_until(lambda: 'cannot decode compressed image' in read_log(pose), 5, 'decode error', pose,
                          fail=False):
            break
    assert 'cannot decode compressed image' in read_log(pose)
    ok, png = cv2.imencode('.png', scene.image_rgb[..., ::-1])
    good = CompressedImage(header=Header(stamp=Time(sec=2), frame_id='cam'), format='rgb8; png compressed bgr8',
                           data=png.tobytes())
    info_pub.publish(_info_msg(scene.camera, Time(sec=2), frame='cam'))
    image_pub.publish(good)
    ros.spin_until(lambda: len(poses) >= 1, 30, 'poses3d from a compressed image', pose)
    msg = poses[0][0]
    assert stamp_ns(msg) == 2_000_000_000 and len(msg.people) == 1
    ros.stop(pose)


def test_startup_errors_exit_with_a_clear_message(ros, tmp_path, colour_key_detector, fixture_pose_model):
    corrupt = tmp_path / 'corrupt.onnx'
    corrupt.write_bytes(b'this is not an onnx file' * 10)
    missing = tmp_path / 'does_not_exist.onnx'
    cases = [
        ({'model_path': str(missing), 'detector_path': colour_key_detector}, str(missing)),
        ({'model_path': str(corrupt), 'detector_path': colour_key_detector}, 'corrupt.onnx'),
        ({'model_path': fixture_pose_model, 'detector_path': colour_key_detector, 'qos': 'fastest'}, "qos='fastest'"),
        ({'model_path': fixture_pose_model, 'detector_path': colour_key_detector, 'num_aug': 0}, 'num_aug'),
        ({'model_path': fixture_pose_model, 'detector_path': colour_key_detector, 'skeleton': 'smpl_99'},
         'valid skeletons'),
    ]
    processes = [ros.start('pose_node', params, name=f'startup_{i}') for i, (params, _) in enumerate(cases)]
    for process, (_, text) in zip(processes, cases):
        code = process.wait(60)
        log = read_log(process)
        assert code == 1, log
        assert 'cannot start' in log and text in log, log


def test_input_faster_than_processing_keeps_latency_bounded(ros, fixture_pose_model, colour_key_detector):
    from diagnostic_msgs.msg import DiagnosticArray

    from metrabs_ros.msg import Poses3D
    poses = ros.subscribe(Poses3D, 'poses3d', depth=500)
    diagnostics = ros.subscribe(DiagnosticArray, '/diagnostics')
    # 3 people and 8 augmentations: each frame takes far longer than the 1/60 s between frames
    pose = ros.start('pose_node', pose_params(fixture_pose_model, colour_key_detector, num_aug=8,
                                              diagnostics_period_s=0.5))
    demo = ros.start('demo_camera', {'num_people': 3, 'synthetic_frames': 6, 'rate_hz': 60.0,
                                     'wait_for_subscribers': 1, 'publish_ground_truth': False})
    ros.spin_until(lambda: len(poses) >= 1, 60, 'first poses3d', pose)
    start = time.monotonic()
    ros.spin_until(lambda: time.monotonic() - start > 8.0 and len(poses) >= 12, 60, '8 s of results', pose)
    ros.spin_until(lambda: int(diagnostics_values(diagnostics).get('frames_dropped', '0')) > 0, 10, 'drops')
    values = diagnostics_values(diagnostics)
    ros.stop(demo)
    ros.stop(pose)

    latency_s = np.array([(t - stamp_ns(m)) / 1e9 for m, t in poses])
    inference_s = np.array([m.inference_time_s for m, _ in poses])
    received, processed = int(values['frames_received']), int(values['frames_processed'])
    assert int(values['frames_dropped']) > received // 3        # most input frames were dropped, not queued
    assert processed < received
    third = len(latency_s) // 3
    early, late = np.median(latency_s[:third]), np.median(latency_s[-third:])
    # no growth: with a queue, latency would rise by ~(1 - processing rate / 60 Hz) s every second
    assert late < 1.5 * early + 0.15, (early, late)
    # each result is at most ~two inference times old (wait for the worker + own inference) plus transport
    assert np.all(latency_s < 2.0 * inference_s.max() + 0.3), (latency_s.max(), inference_s.max())
    print(f"overload: {received} frames in, {processed} processed, {values['frames_dropped']} dropped; latency "
          f"early {early:.3f} s, late {late:.3f} s, max {latency_s.max():.3f} s; inference max {inference_s.max():.3f} s")


def test_demo_camera_replays_an_image_folder_with_its_camera_file(ros, tmp_path):
    import json

    import cv2
    from sensor_msgs.msg import CameraInfo, Image

    from metrabs_ros.ros.image_conversion import image_msg_to_rgb
    folder = tmp_path / 'frames'
    folder.mkdir()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(2)]
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f'{i:03d}.png'), frame[..., ::-1])
    K = [[80.0, 0.0, 31.5], [0.0, 81.0, 23.5], [0.0, 0.0, 1.0]]
    (tmp_path / 'camera.json').write_text(json.dumps({'K': K, 'dist': [0.1, -0.05, 0.0, 0.0, 0.01]}))
    images = ros.subscribe(Image, 'image')
    infos = ros.subscribe(CameraInfo, 'camera_info')
    demo = ros.start('demo_camera', {'source': str(folder), 'camera_info_file': str(tmp_path / 'camera.json'),
                                     'rate_hz': 20.0, 'frame_id': 'folder_cam', 'wait_for_subscribers': 1})
    ros.spin_until(lambda: len(images) >= 5 and len(infos) >= 5, 30, 'five frames', demo)
    ros.stop(demo)
    info_by_stamp = {stamp_ns(m): m for m, _ in infos}
    first = stamp_ns(images[0][0])
    for msg, _ in images[:5]:
        index = next(i for i, f in enumerate(frames) if np.array_equal(image_msg_to_rgb(msg), f))  # loops over both
        assert index in (0, 1)
        info = info_by_stamp[stamp_ns(msg)]                      # same stamp as the image
        assert info.header.frame_id == msg.header.frame_id == 'folder_cam'
        np.testing.assert_allclose(np.reshape(info.k, (3, 3)), K)
        assert info.distortion_model == 'plumb_bob' and np.allclose(info.d, [0.1, -0.05, 0.0, 0.0, 0.01])
        assert (info.width, info.height) == (64, 48)
    sequence = [next(i for i, f in enumerate(frames) if np.array_equal(image_msg_to_rgb(m), f)) for m, _ in images[:5]]
    assert sequence[:4] in ([0, 1, 0, 1], [1, 0, 1, 0]) and first > 0
