"""ROS 2 node ``pose_node``: images (+ CameraInfo) in, metric absolute 3D human poses out.

Topics (relative names: remap them, or push the node into a namespace):
  subscribes ``image`` (sensor_msgs/Image) or, with ``compressed:=true``, ``<resolved image>/compressed``
             (sensor_msgs/CompressedImage: ``-r image:=/cam/image_raw`` gives ``/cam/image_raw/compressed``), and
             ``camera_info`` (sensor_msgs/CameraInfo);
  publishes  ``poses3d`` (metrabs_ros/Poses3D, METRES, image stamp + optical frame_id),
             ``markers`` (visualization_msgs/MarkerArray), ``debug_image`` (sensor_msgs/Image, optional),
             ``/diagnostics`` (diagnostic_msgs/DiagnosticArray: fps, latency p50/p95, drops, backend).

Newest-frame policy: the subscription callback only stores the latest frame; a worker thread runs inference on
the newest one. Frames that arrive while the worker is busy replace the stored one and are counted as dropped, so
latency stays bounded when the input is faster than processing.

CameraInfo: matched to each image by stamp (small cache), else the nearest within
``camera_info_stamp_tolerance_s``, else the latest one (throttled warning). Without any CameraInfo after
``camera_info_timeout_s`` the intrinsics are guessed from ``default_fov_degrees`` (throttled warning).

Bad input (unsupported encoding, truncated data, empty image, NaN/zero intrinsics, CameraInfo of another size)
never stops the node: the frame is skipped and the reason logged (throttled per reason) and counted. A missing
or corrupt model file ends the node at start-up with exit code 1.

Timing: ``queue_time_s`` and ``inference_time_s`` are measured on the steady clock (right under ``use_sim_time``);
``latency_s`` = ROS time at publication - image stamp, NaN (and left out of the diagnostics percentiles, counted
in ``latency_skipped``) when the stamp is 0, the ROS clock reads 0 (sim time without ``/clock``) or the two are more
than an hour apart. ``/diagnostics`` runs on the steady clock.

An uncalibrated CameraInfo (K all zeros, what drivers publish without a calibration) is treated like a missing
one: FOV guess, and ``/diagnostics`` says so. The library's Python logging (e.g. a GPU backend falling back to the
CPU) goes to the node's ROS logger and ``/rosout``.

Optional outputs (start-up parameters, off by default): person TF frames on ``/tf`` (``publish_tf``) and the
ROS4HRI body interface (``publish_hri``): see :mod:`metrabs_ros.ros.person_outputs` and docs/ros.md.

Shutdown: Ctrl-C / SIGTERM (also twice) stops the worker before the context goes, nothing is published after it,
exit code 0 (:mod:`metrabs_ros.ros.shutdown`). A managed (lifecycle) variant: ``pose_lifecycle_node``.

Run: ``ros2 run metrabs_ros pose_node --ros-args -p model_path:=/path/model.onnx -r image:=/camera/image_raw``
(or ``python -m metrabs_ros.ros.pose_node ...``); parameters: config/pose.yaml and :data:`PARAMETERS`.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import math
import sys
import threading
import time
import traceback
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

EXIT_OK = 0
EXIT_STARTUP_ERROR = 1


@dataclasses.dataclass(frozen=True)
class ParameterSpec:
    """A node parameter: default value, description, optional numeric range, whether it can change at run time,
    and for strings the allowed values."""
    name: str
    default: Any
    description: str
    min_value: Optional[float] = None
    max_value: Optional[float] = None
    dynamic: bool = False
    choices: Tuple[str, ...] = ()


PARAMETERS: Tuple[ParameterSpec, ...] = (
    # --- models and backend (start-up only)
    ParameterSpec('model_path', '', "pose model (.onnx, docs/model_contract.md); '' = $METRABS_ROS_MODEL or the "
                  'embedded default model'),
    ParameterSpec('detector_path', '', "person detector (.onnx: native contract or a YOLO export); '' = "
                  '$METRABS_ROS_DETECTOR or the embedded default detector'),
    ParameterSpec('detector_format', 'auto', 'detector output layout: auto, native, yolov5, yolov8, yolox, end2end'),
    ParameterSpec('backend', 'auto', 'inference backend: auto (TensorRT, PyTorch CUDA, ONNX Runtime CUDA, else CPU: '
                  'the first this machine has), tensorrt, torch-cuda, cuda, onnxruntime/cpu, ort-tensorrt'),
    ParameterSpec('torch_checkpoint', '', "PyTorch checkpoint for backend torch-cuda; '' = MODEL.pt beside the model"),
    ParameterSpec('precision', 'auto', 'precision of the tensorrt / torch-cuda backends',
                  choices=('auto', 'fp16', 'fp32')),
    ParameterSpec('num_threads', 0, 'ONNX Runtime intra-op threads per session; 0 = ONNX Runtime default',
                  0, 256),
    ParameterSpec('warmup', True, 'run one inference on a blank image at start-up so the first frame is not slow'),
    # --- input (start-up only)
    ParameterSpec('compressed', False, "subscribe 'image/compressed' (sensor_msgs/CompressedImage, jpeg/png) "
                  "instead of 'image' (sensor_msgs/Image)"),
    ParameterSpec('qos', 'sensor_data', 'QoS of the image and camera_info subscriptions: sensor_data (best effort, '
                  'matches any publisher) or reliable', choices=('sensor_data', 'reliable')),
    ParameterSpec('use_rectified', False, 'the images are rectified: intrinsics from CameraInfo.P, no distortion '
                  "(automatic when the image topic name contains '_rect')"),
    ParameterSpec('camera_info_timeout_s', 2.0, 'seconds to wait for a CameraInfo (frames are skipped meanwhile) '
                  'before falling back to default_fov_degrees; 0 = use the FOV guess at once', 0.0, 3600.0),
    ParameterSpec('camera_info_stamp_tolerance_s', 0.02, 'a CameraInfo counts as matching an image if their stamps '
                  'differ by at most this (else the latest CameraInfo is used, with a warning)', 0.0, 10.0),
    ParameterSpec('frame_id', '', "frame_id of the outputs; '' = the image's frame_id (its optical frame)"),
    # --- estimation (changeable at run time)
    ParameterSpec('skeleton', '', "output skeleton format, e.g. smpl_24, h36m_17, coco_19; '' = the model's "
                  'default (unknown names are rejected, listing the valid ones)', dynamic=True),
    ParameterSpec('num_aug', 1, 'test-time augmentations per person (1 = fastest, 5 = official accuracy)',
                  1, 20, dynamic=True),
    ParameterSpec('detector_threshold', -1.0, "minimum person-detector confidence; negative = the detector's "
                  'recommended threshold (its score_threshold metadata: 0.5 for the embedded NanoDet; 0.3 for '
                  'detectors without one)', -1.0, 1.0, dynamic=True),
    ParameterSpec('detector_tiles', 'off', "small-people pass: 'off' or ROWSxCOLS; the detector also runs on each "
                  'tile of an overlapping grid (about 1.8x magnified at 2x2, costs one detector run per tile; '
                  'docs/detector.md)', choices=('off', '1x2', '2x1', '2x2', '2x3', '3x3'), dynamic=True),
    ParameterSpec('detector_nms_iou_threshold', 0.7, 'IoU above which overlapping detections are suppressed',
                  0.0, 1.0, dynamic=True),
    ParameterSpec('max_detections', -1, 'maximum number of people per image; -1 = unlimited', -1, 1000,
                  dynamic=True),
    ParameterSpec('default_fov_degrees', 55.0, 'field of view (of the larger image side) assumed when no '
                  'CameraInfo is available', 1.0, 179.0, dynamic=True),
    ParameterSpec('suppress_implausible_poses', True, 'drop implausible poses and pose-level duplicates',
                  dynamic=True),
    ParameterSpec('antialias_factor', 0, "crop supersampling factor f (render at f x resolution, average-pool f x f; "
                  "smoother crops of people large in the image). Fixed when the model is exported (metrabs-ros "
                  "export --antialias-factor F; 1 for models without that metadata): 0 = the model's f; other "
                  "values must equal it", 0, 4, dynamic=True),
    ParameterSpec('undistortion', 'converged', "box-point undistortion: 'converged' (float precision) or "
                  "'official' (the official MeTRAbs 5 fixed-point iterations, for agreement with published "
                  'results; differs only for strong distortion near the image border, docs/export.md)',
                  choices=('converged', 'official'), dynamic=True),
    # --- outputs (changeable at run time)
    ParameterSpec('publish_markers', True, "publish visualization_msgs/MarkerArray on 'markers'", dynamic=True),
    ParameterSpec('track_max_age_s', 2.0, 'a person keeps its id (Person3D.id, marker namespace and colour) while '
                  'unseen for at most this long; 0 = ids are the per-frame order', 0.0, 3600.0, dynamic=True),
    ParameterSpec('marker_lifetime_s', 0.5, 'lifetime of the RViz markers; 0 = until replaced/deleted',
                  0.0, 3600.0, dynamic=True),
    ParameterSpec('publish_debug_image', False, "publish the image with the 2D skeletons drawn on 'debug_image'",
                  dynamic=True),
    ParameterSpec('diagnostics_period_s', 1.0, "period of the '/diagnostics' status (steady clock: also without "
                  '/clock under use_sim_time)', 0.1, 60.0),
    # --- person TF frames and ROS4HRI (start-up only; need tf2_msgs / hri_msgs installed)
    ParameterSpec('publish_tf', False, "publish one TF frame per tracked person on '/tf' (tf2_msgs): child "
                  '<tf_frame_prefix><id> at the root joint, parent = the image\'s optical frame'),
    ParameterSpec('tf_frame_prefix', 'person_', 'name prefix of the person TF frames (frame = prefix + track id)'),
    ParameterSpec('publish_hri', False, 'publish the ROS4HRI (REP-155) body interface (hri_msgs): '
                  '/humans/bodies/tracked, /humans/bodies/<id>/skeleton2d and /roi, TF frames body_<id>'),
    ParameterSpec('hri_body_id_prefix', 'b', 'ROS4HRI body id = prefix + track id (a ROS name token must not start '
                  'with a digit)'),
)
PARAMETERS_BY_NAME = {spec.name: spec for spec in PARAMETERS}


# ----------------------------------------------------------------------------------------------------------
# Pure helpers (no rclpy): unit-testable.
class LatestFrameMailbox:
    """Single-slot hand-over between the subscription callback and the inference worker.

    ``put`` replaces an unprocessed frame (counted in ``dropped``); ``take`` blocks until a frame is there.
    """

    def __init__(self):
        self._condition = threading.Condition()
        self._item = None
        self._closed = False
        self.dropped = 0
        self.received = 0

    def put(self, item) -> None:
        with self._condition:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self.received += 1
            self._condition.notify()

    def take(self, timeout_s: Optional[float] = None):
        """The newest frame, or None on timeout / after :meth:`close`."""
        with self._condition:
            self._condition.wait_for(lambda: self._item is not None or self._closed, timeout_s)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()


class CameraInfoCache:
    """The last ``capacity`` CameraInfo messages by stamp (nanoseconds), for stamp-matched lookup."""

    def __init__(self, capacity: int = 30):
        self._items: 'collections.OrderedDict[int, Any]' = collections.OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()
        self.latest_stamp_ns: Optional[int] = None

    def add(self, stamp_ns: int, info) -> None:
        with self._lock:
            self._items[stamp_ns] = info
            self._items.move_to_end(stamp_ns)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
            self.latest_stamp_ns = stamp_ns

    def __len__(self) -> int:
        return len(self._items)

    def lookup(self, stamp_ns: int, tolerance_ns: int):
        """``(info, how, delta_ns)``: how = 'exact', 'nearest' (within tolerance) or 'latest'; ``(None, None, None)``
        when the cache is empty."""
        with self._lock:
            if not self._items:
                return None, None, None
            if stamp_ns in self._items:
                return self._items[stamp_ns], 'exact', 0
            stamps = np.fromiter(self._items.keys(), np.int64, len(self._items))
            deltas = np.abs(stamps - np.int64(stamp_ns))
            best = int(np.argmin(deltas))
            if deltas[best] <= tolerance_ns:
                return self._items[int(stamps[best])], 'nearest', int(deltas[best])
            latest = self.latest_stamp_ns
            return self._items[latest], 'latest', int(stamp_ns - latest)


class LogThrottle:
    """Allow one log line per key and period (rclpy's throttling is per call site, not per reason)."""

    def __init__(self, period_s: float = 5.0):
        self.period_s = period_s
        self._last: Dict[str, float] = {}
        self.suppressed: Dict[str, int] = collections.Counter()

    def __call__(self, key: str, now_s: Optional[float] = None) -> bool:
        now_s = time.monotonic() if now_s is None else now_s
        last = self._last.get(key)
        if last is not None and now_s - last < self.period_s:
            self.suppressed[key] += 1
            return False
        self._last[key] = now_s
        return True


def validate_parameter(spec: ParameterSpec, value, skeleton_names: Sequence[str] = ()) -> Optional[str]:
    """None if ``value`` is valid for ``spec``, else the reason (used at start-up and for run-time changes)."""
    default = spec.default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            return f'{spec.name} must be a bool, got {value!r}'
        return None
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f'{spec.name} must be a number, got {value!r}'
        if isinstance(default, int) and not isinstance(value, int):
            return f'{spec.name} must be an integer, got {value!r}'
        if not math.isfinite(float(value)):
            return f'{spec.name} must be finite, got {value!r}'
        if spec.min_value is not None and value < spec.min_value or \
                spec.max_value is not None and value > spec.max_value:
            return f'{spec.name}={value} is out of range [{spec.min_value}, {spec.max_value}]'
        return None
    if not isinstance(value, str):
        return f'{spec.name} must be a string, got {value!r}'
    if spec.choices and value not in spec.choices:
        return f'{spec.name}={value!r} is not one of {", ".join(spec.choices)}'
    if spec.name == 'skeleton' and value and skeleton_names and value not in skeleton_names:
        return f'unknown skeleton {value!r}; valid skeletons: {", ".join(skeleton_names)} (or \'\' = default)'
    return None


def percentile_ms(values_s: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values_s, np.float64), q) * 1000.0) if len(values_s) else float('nan')


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def latency_skip_reason(stamp_ns: int, now_ns: int, max_abs_latency_s: float = 3600.0) -> Optional[str]:
    """Why ``now - stamp`` is not a latency (None: it is one): ``stamp_zero`` (the image has no stamp),
    ``no_ros_time`` (the ROS clock reads 0: use_sim_time without /clock yet) or ``clock_mismatch`` (the stamp is
    more than ``max_abs_latency_s`` away from the node's clock, e.g. camera stamps from another clock)."""
    if stamp_ns == 0:
        return 'stamp_zero'
    if now_ns == 0:
        return 'no_ros_time'
    if abs(now_ns - stamp_ns) > max_abs_latency_s * 1e9:
        return 'clock_mismatch'
    return None


# ----------------------------------------------------------------------------------------------------------
class StartupError(RuntimeError):
    """The node cannot start (model missing/corrupt, invalid start-up parameter)."""


def _make_node_class(base=None):
    """The rclpy node class (defined lazily so that importing this module needs no rclpy). ``base``: the rclpy
    class to derive from (default ``rclpy.node.Node``; :mod:`pose_lifecycle_node` passes ``LifecycleNode``)."""
    if base is None:
        from rclpy.node import Node as base

    class PoseNode(base):
        """See the module docstring. Life cycle of the ROS interfaces (the lifecycle variant calls these from its
        transitions): :meth:`load_models` -> :meth:`create_outputs` -> :meth:`create_inputs` (subscriptions,
        worker, diagnostics timer) ... :meth:`destroy_inputs` -> :meth:`destroy_outputs` -> :meth:`close`."""

        def __init__(self, node_name: str = 'pose_node', **kwargs):
            super().__init__(node_name, **kwargs)
            # the library's logging (backend fallbacks, skipped boxes, ...) goes to this node's ROS logger
            self._undo_library_logging = forward_library_logging(self.get_logger())
            self._throttle = LogThrottle(5.0)
            self._stats_lock = threading.Lock()
            self._latencies_s = collections.deque(maxlen=600)
            self._inference_s = collections.deque(maxlen=600)
            self._publish_times = collections.deque(maxlen=2000)
            self._skipped = collections.Counter()
            self._latency_skipped = collections.Counter()
            self._processed = 0
            self._published = 0
            self._last_error = ''
            self._camera_source = 'none'
            self._marker_ids = set()
            # every published person needs an id at once (min_hits=1); the detector threshold has already
            # dropped the low-score detections, so all the tracker sees are high-score ones
            self._tracker = PersonTracker(min_hits=1, high_score=0.0, low_score=0.0)
            self._first_image_mono = None
            self._mailbox = LatestFrameMailbox()
            self._camera_infos = CameraInfoCache()
            self._worker = None
            self._stop = threading.Event()
            self._publish_lock = threading.Lock()
            self._inputs = []
            self._outputs = []
            self._timers = []
            self.tf_publisher = None
            self.hri_bodies = None
            self.image_subscription = self.camera_info_subscription = None
            self.estimator = None
            try:
                self._declare_parameters()
            except StartupError as error:
                self.get_logger().fatal(f'cannot start: {error}')
                self.close()
                self.destroy_node()
                raise
            self._params = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
            self.add_on_set_parameters_callback(self._on_set_parameters)

        # --- parameters ---------------------------------------------------------------------------------
        def _declare_parameters(self):
            from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
            for spec in PARAMETERS:
                descriptor = ParameterDescriptor(
                    name=spec.name, description=spec.description, read_only=not spec.dynamic)
                if spec.choices:
                    descriptor.additional_constraints = 'one of: ' + ', '.join(spec.choices)
                if spec.min_value is not None and not isinstance(spec.default, bool):
                    if isinstance(spec.default, int):
                        descriptor.integer_range = [IntegerRange(
                            from_value=int(spec.min_value), to_value=int(spec.max_value), step=1)]
                    else:
                        descriptor.floating_point_range = [FloatingPointRange(
                            from_value=float(spec.min_value), to_value=float(spec.max_value), step=0.0)]
                try:
                    self.declare_parameter(spec.name, spec.default, descriptor)
                except Exception as error:  # out-of-range / wrong type values from a params file or -p
                    raise StartupError(f'invalid parameter {spec.name}: {error}') from error
                problem = validate_parameter(spec, self.get_parameter(spec.name).value)
                if problem:
                    raise StartupError(f'invalid parameter: {problem}')

        def _on_set_parameters(self, parameters):
            from rcl_interfaces.msg import SetParametersResult
            skeleton_names = self.estimator.skeleton_names if self.estimator is not None else ()
            for parameter in parameters:
                spec = PARAMETERS_BY_NAME.get(parameter.name)
                if spec is None:
                    continue
                problem = validate_parameter(spec, parameter.value, skeleton_names)
                if problem:
                    return SetParametersResult(successful=False, reason=problem)
            updated = dict(self._params)
            updated.update({p.name: p.value for p in parameters if p.name in PARAMETERS_BY_NAME})
            self._params = updated          # atomic swap: the worker reads one consistent snapshot per frame
            changed = ', '.join(f'{p.name}={p.value!r}' for p in parameters)
            self.get_logger().info(f'parameters changed: {changed}')
            return SetParametersResult(successful=True)

        # --- start-up -----------------------------------------------------------------------------------
        def start(self):
            """Load the models, create the ROS interfaces and start the worker (raises StartupError)."""
            self.load_models()
            self.create_outputs()
            self.create_inputs()

        def load_models(self):
            """Load (and warm up) the models; check the skeleton parameter against them (raises StartupError)."""
            p = self._params
            self._load_estimator(p)
            if p['skeleton']:
                problem = validate_parameter(PARAMETERS_BY_NAME['skeleton'], p['skeleton'],
                                             self.estimator.skeleton_names)
                if problem:
                    raise StartupError(problem)

        def image_topic(self) -> str:
            """The topic the image subscription uses. With ``compressed``: ``<resolved image topic>/compressed``
            (image_transport's naming), so ``-r image:=/cam/image_raw`` gives ``/cam/image_raw/compressed``; an
            explicit remap of ``image/compressed`` still wins."""
            if not self._params['compressed']:
                return self.resolve_topic_name('image')
            remapped = self.resolve_topic_name('image/compressed')
            if remapped != self.resolve_topic_name('image/compressed', only_expand=True):
                return remapped
            return self.resolve_topic_name('image').rstrip('/') + '/compressed'

        def create_outputs(self):
            """Publishers (poses3d, markers, debug_image, /diagnostics; /tf and the ROS4HRI topics when enabled)."""
            from diagnostic_msgs.msg import DiagnosticArray
            from rclpy.qos import QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
            from sensor_msgs.msg import Image
            from visualization_msgs.msg import MarkerArray

            from metrabs_ros.msg import Poses3D
            p = self._params
            output_qos = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE,
                                    history=QoSHistoryPolicy.KEEP_LAST)
            self.poses_publisher = self.create_publisher(Poses3D, 'poses3d', output_qos)
            self.markers_publisher = self.create_publisher(MarkerArray, 'markers', output_qos)
            self.debug_publisher = self.create_publisher(
                Image, 'debug_image', QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE))
            self.diagnostics_publisher = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
            self._outputs = [self.poses_publisher, self.markers_publisher, self.debug_publisher,
                             self.diagnostics_publisher]
            tf_qos = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE,
                                history=QoSHistoryPolicy.KEEP_LAST)
            if p['publish_tf'] or p['publish_hri']:
                TFMessage, reason = import_message('tf2_msgs.msg', 'TFMessage')
                if TFMessage is None:
                    self.get_logger().warning(
                        f'publish_tf/publish_hri: the tf2_msgs package is not installed ({reason}); person TF '
                        f'frames are off (install tf2_msgs, e.g. ros-<distro>-tf2-msgs, or source a ROS install)')
                else:
                    self._TFMessage = TFMessage
                    self.tf_publisher = self.create_publisher(TFMessage, TF_TOPIC, tf_qos)
                    self._outputs.append(self.tf_publisher)
            if p['publish_hri']:
                reason = HriBodies.missing_reason()
                if reason:
                    self.get_logger().warning(
                        f'publish_hri: the hri_msgs package is not installed ({reason}); the ROS4HRI body '
                        f'topics are off (install hri_msgs, e.g. ros-<distro>-hri-msgs)')
                else:
                    self.hri_bodies = HriBodies(self, p['hri_body_id_prefix'], QoSProfile(
                        depth=10, reliability=QoSReliabilityPolicy.RELIABLE), forget_after_s=max(
                        float(p['track_max_age_s']), 0.5))
            self._publish_delete_all()

        def create_inputs(self):
            """Subscriptions, the inference worker and the diagnostics timer (steady clock: it runs without
            /clock under use_sim_time)."""
            from rclpy.clock import Clock, ClockType
            from rclpy.qos import QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
            from sensor_msgs.msg import CameraInfo, CompressedImage, Image
            p = self._params
            if p['qos'] == 'reliable':
                input_qos = QoSProfile(depth=2, reliability=QoSReliabilityPolicy.RELIABLE,
                                       history=QoSHistoryPolicy.KEEP_LAST)
            else:
                input_qos = qos_profile_sensor_data
            self._stop = threading.Event()
            self._mailbox = LatestFrameMailbox()
            self._first_image_mono = None
            image_topic = self.image_topic()
            self.image_subscription = self.create_subscription(
                CompressedImage if p['compressed'] else Image, image_topic, self._on_image, input_qos)
            self.camera_info_subscription = self.create_subscription(
                CameraInfo, 'camera_info', self._on_camera_info, input_qos)
            self._inputs = [self.image_subscription, self.camera_info_subscription]
            self._rectified = bool(p['use_rectified'])
            if not self._rectified and is_rectified_topic(image_topic):
                self._rectified = True
                self.get_logger().info(f'{image_topic} is a rectified image topic: using CameraInfo.P')
            self._worker = threading.Thread(target=self._worker_loop, name='pose_inference', daemon=True)
            self._worker.start()
            self._timers = [self.create_timer(float(p['diagnostics_period_s']), self._publish_diagnostics,
                                              clock=Clock(clock_type=ClockType.STEADY_TIME))]
            default_skeleton = self.estimator.validate_skeleton(p['skeleton'])
            extras = ''.join([', /tf' if self.tf_publisher is not None and p['publish_tf'] else '',
                              ', /humans/bodies/*' if self.hri_bodies is not None else ''])
            self.get_logger().info(
                f'ready: {image_topic} ({"CompressedImage" if p["compressed"] else "Image"}, qos {p["qos"]}) + '
                f'{self.camera_info_subscription.topic_name} -> {self.poses_publisher.topic_name}, '
                f'{self.markers_publisher.topic_name}{extras}; backend {self.backend_name}, '
                f'skeleton {default_skeleton}')

        def destroy_inputs(self):
            """Stop taking images: the worker ends (after its current frame), subscriptions and timers go."""
            self.request_stop()
            if self._worker is not None:
                self._worker.join(timeout=10.0)
                self._worker = None
            for timer in self._timers:
                self.destroy_timer(timer)
            for subscription in self._inputs:
                self.destroy_subscription(subscription)
            self._inputs, self._timers = [], []
            self.image_subscription = self.camera_info_subscription = None

        def destroy_outputs(self):
            if self.hri_bodies is not None:
                self.hri_bodies.close()
                self.hri_bodies = None
            for publisher in self._outputs:
                self.destroy_publisher(publisher)
            self._outputs, self.tf_publisher = [], None

        def _load_estimator(self, p):
            from metrabs_ros.estimator import PoseEstimator
            try:
                self.estimator = PoseEstimator(
                    model_path=p['model_path'] or None, detector_path=p['detector_path'] or None,
                    backend=p['backend'], num_threads=p['num_threads'] or None,
                    detector_format=p['detector_format'], torch_checkpoint=p['torch_checkpoint'] or None,
                    precision=p['precision'])
            except Exception as error:
                raise StartupError(f'cannot load the models (model_path={p["model_path"]!r}, '
                                   f'detector_path={p["detector_path"]!r}, backend={p["backend"]!r}): '
                                   f'{type(error).__name__}: {error}') from error
            if self.estimator.detector is None:
                raise StartupError('no person detector: set detector_path (no embedded default detector found)')
            try:
                providers = self.estimator.session.get_providers()
                self.backend_name = f'{p["backend"]} -> {self.estimator.backend_name} ({", ".join(providers)})'
            except Exception:
                self.backend_name = str(p['backend'])
            if p['warmup']:
                try:
                    self.estimator.detect_poses(np.zeros((480, 640, 3), np.uint8), num_aug=p['num_aug'],
                                                skeleton=p['skeleton'])
                except Exception as error:
                    raise StartupError(f'the models failed on a warm-up image: {type(error).__name__}: '
                                       f'{error}') from error

        # --- callbacks (executor thread) ----------------------------------------------------------------
        def _on_image(self, msg):
            receive_mono_ns = time.monotonic_ns()
            if self._first_image_mono is None:
                self._first_image_mono = time.monotonic()
            self._mailbox.put((msg, receive_mono_ns))

        def _on_camera_info(self, msg):
            self._camera_infos.add(stamp_to_ns(msg.header.stamp), msg)

        def _publish_delete_all(self):
            from std_msgs.msg import Header
            self.markers_publisher.publish(delete_all_marker_array(
                Header(stamp=self.get_clock().now().to_msg(), frame_id=self._params['frame_id'])))
            self._marker_ids = set()

        # --- worker -------------------------------------------------------------------------------------
        def request_stop(self):
            """Stop the worker at the next frame boundary; frames in flight are not published (safe to call from a
            signal handler: sets an event and wakes the worker)."""
            self._stop.set()
            self._mailbox.close()

        def stopping(self) -> bool:
            return self._stop.is_set() or not self.context.ok()

        def _worker_loop(self):
            while not self.stopping():
                frame = self._mailbox.take(timeout_s=0.2)
                if frame is None:
                    continue
                try:
                    self._process(*frame)
                except Exception as error:  # never let one frame kill the worker
                    if self.stopping():     # the context went down under this frame: a normal shutdown
                        break
                    self._skip('internal_error', f'unexpected {type(error).__name__}: {error}\n'
                               f'{traceback.format_exc()}', level='error')

        def _skip(self, reason: str, message: str, level: str = 'warning'):
            with self._stats_lock:
                self._skipped[reason] += 1
                self._last_error = f'{reason}: {message.splitlines()[0] if message else ""}'
            # throttled per kind of problem (e.g. 'bad_image: truncated image data'), not per call site
            key = f'{reason}: {message.split(":")[0][:80]}'
            if self._throttle(key):
                suppressed = self._throttle.suppressed.pop(key, 0)
                extra = f' ({suppressed} similar messages suppressed)' if suppressed else ''
                getattr(self.get_logger(), level)(f'frame skipped ({reason}): {message}{extra}')

        def _fov_fallback(self, p, why: str):
            """No usable CameraInfo: intrinsics from default_fov_degrees (returns None for the estimator)."""
            self._camera_source = f'fov {p["default_fov_degrees"]} deg ({why})'
            if self._throttle('fov_fallback: ' + why.split(':')[0]):
                self.get_logger().warning(
                    f'{why}: guessing the intrinsics from default_fov_degrees={p["default_fov_degrees"]} (metric '
                    f'depth will be off if the real field of view differs)')
            return None

        def _camera_for(self, stamp_ns: int, image_hw, p):
            """CameraModel for the image, None for the FOV fallback, or raises _SkipFrame."""
            info, how, delta_ns = self._camera_infos.lookup(
                stamp_ns, int(p['camera_info_stamp_tolerance_s'] * 1e9))
            if info is None:
                waited_s = time.monotonic() - (self._first_image_mono or time.monotonic())
                if waited_s < p['camera_info_timeout_s']:
                    raise _SkipFrame('waiting_for_camera_info',
                                     f'no CameraInfo on {self.camera_info_subscription.topic_name} yet '
                                     f'(waiting up to {p["camera_info_timeout_s"]} s)', 'info')
                return self._fov_fallback(p, f'no CameraInfo on {self.camera_info_subscription.topic_name}')
            if how == 'latest' and self._throttle('camera_info_stamp'):
                self.get_logger().warning(
                    f'no CameraInfo within {p["camera_info_stamp_tolerance_s"]} s of the image stamp; using the '
                    f'latest one ({delta_ns / 1e9:+.3f} s)')
            try:
                camera = camera_model_from_camera_info(info, image_hw, self._rectified)
            except UncalibratedCameraInfo as error:
                return self._fov_fallback(p, f'{error} on {self.camera_info_subscription.topic_name}')
            except CameraInfoError as error:
                raise _SkipFrame('invalid_camera_info', str(error)) from error
            self._camera_source = f'camera_info ({how})'
            return camera

        def _process(self, msg, receive_mono_ns: int):
            """One frame. Durations (queue, inference) on the steady clock; latency = ROS time - image stamp."""
            from std_msgs.msg import Header
            p = self._params
            start_mono_ns = time.monotonic_ns()
            stamp_ns = stamp_to_ns(msg.header.stamp)
            try:
                if p['compressed']:
                    image = compressed_image_msg_to_rgb(msg)
                else:
                    image = image_msg_to_rgb(msg)
                camera = self._camera_for(stamp_ns, image.shape[:2], p)
            except ImageConversionError as error:
                self._skip('bad_image', str(error))
                return
            except _SkipFrame as skip:
                self._skip(skip.reason, skip.message, skip.level)
                return
            try:
                result = self.estimator.detect_poses(
                    image, camera=camera, default_fov_degrees=p['default_fov_degrees'], num_aug=p['num_aug'],
                    skeleton=p['skeleton'],
                    detector_threshold=p['detector_threshold'] if p['detector_threshold'] >= 0 else None,
                    detector_nms_iou_threshold=p['detector_nms_iou_threshold'],
                    max_detections=p['max_detections'], detector_tiles=p['detector_tiles'],
                    suppress_implausible_poses=p['suppress_implausible_poses'],
                    antialias_factor=p['antialias_factor'] or None, undistortion=p['undistortion'])
            except Exception as error:
                if self.stopping():
                    return
                self._skip('inference_error', f'{type(error).__name__}: {error}', level='error')
                return
            end_mono_ns = time.monotonic_ns()
            header = Header(stamp=msg.header.stamp, frame_id=p['frame_id'] or msg.header.frame_id)
            if not header.frame_id and self._throttle('empty_frame_id'):
                self.get_logger().warning("the image has an empty frame_id: RViz cannot place the markers "
                                          "(set the 'frame_id' parameter)")
            if p['track_max_age_s'] > 0:
                self._tracker.max_age_s = float(p['track_max_age_s'])
                person_ids = self._tracker.update(result.poses3d_mm.mean(axis=1), stamp_ns / 1e9, result.boxes,
                                                  appearance=appearance_descriptors(image, result.boxes))
            else:
                person_ids = np.arange(len(result))
            inference_s = (end_mono_ns - start_mono_ns) / 1e9
            poses_msg = result_to_poses3d_msg(result, header, image.shape[:2], person_ids=person_ids, timing_s={
                'queue_time_s': (start_mono_ns - receive_mono_ns) / 1e9, 'inference_time_s': inference_s})
            if p['publish_markers']:
                markers, self._marker_ids = build_marker_array(
                    result, header, person_ids=person_ids, previous_ids=self._marker_ids,
                    lifetime_s=p['marker_lifetime_s'])
            if self.stopping():     # shutting down: nothing more goes out
                return
            try:
                if p['publish_debug_image'] and self.debug_publisher.get_subscription_count() > 0:
                    from sensor_msgs.msg import Image

                    from metrabs_ros.visualization import draw_poses_2d
                    debug = fill_image_msg(Image(header=header), draw_poses_2d(image, result, ids=person_ids),
                                           'rgb8')
                    self.debug_publisher.publish(debug)
                now_ns = self.get_clock().now().nanoseconds
                latency_skip = latency_skip_reason(stamp_ns, now_ns)
                latency_s = (now_ns - stamp_ns) / 1e9 if latency_skip is None else float('nan')
                poses_msg.latency_s = latency_s
                self.poses_publisher.publish(poses_msg)
                if p['publish_markers']:
                    self.markers_publisher.publish(markers)
                self._publish_person_outputs(poses_msg, p)
            except Exception:
                if self.stopping():  # the context was shut down while this frame was being published
                    return
                raise
            if latency_skip is not None:
                self._note_latency_skip(latency_skip)
            with self._stats_lock:
                self._processed += 1
                self._published += 1
                if latency_skip is None:
                    self._latencies_s.append(latency_s)
                else:
                    self._latency_skipped[latency_skip] += 1
                self._inference_s.append(inference_s)
                self._publish_times.append(time.monotonic())

        def _note_latency_skip(self, reason: str):
            if self._throttle(f'latency: {reason}'):
                text = {'stamp_zero': 'the image stamp is 0 (the camera does not stamp its images)',
                        'no_ros_time': 'the ROS clock reads 0 (use_sim_time without /clock?)',
                        'clock_mismatch': "the image stamp is more than an hour away from the node's clock "
                                          '(stamps from another clock, or use_sim_time mismatch?)'}[reason]
                self.get_logger().warning(f'{text}: latency not measured for this frame (poses3d.latency_s = '
                                          f'NaN; counted in /diagnostics latency_skipped)')

        def _publish_person_outputs(self, poses_msg, p):
            """/tf person frames and the ROS4HRI body topics (each when enabled and its package is installed)."""
            tracked = [person for person in poses_msg.people if person.id >= 0]
            if self.tf_publisher is not None:
                transforms = []
                if p['publish_tf']:
                    transforms += root_transforms(poses_msg, [person_frame(p['tf_frame_prefix'], person.id)
                                                              for person in tracked])
                if self.hri_bodies is not None:
                    transforms += root_transforms(poses_msg, [HRI_BODY_FRAME.format(
                        body_id=hri_body_id(p['hri_body_id_prefix'], person.id)) for person in tracked])
                if transforms:
                    self.tf_publisher.publish(self._TFMessage(transforms=transforms))
            if self.hri_bodies is not None:
                if len(tracked) != len(poses_msg.people):
                    poses_msg = copy.copy(poses_msg)
                    poses_msg.people = tracked
                self.hri_bodies.publish(poses_msg, time.monotonic())

        # --- diagnostics --------------------------------------------------------------------------------
        def diagnostics_values(self) -> Dict[str, str]:
            now = time.monotonic()
            with self._stats_lock:
                recent = [t for t in self._publish_times if now - t <= 5.0]
                fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] \
                    else 0.0
                latencies = list(self._latencies_s)[-300:]
                inference = list(self._inference_s)[-300:]
                values = {
                    'fps': f'{fps:.2f}',
                    'latency_p50_ms': f'{percentile_ms(latencies, 50):.1f}',
                    'latency_p95_ms': f'{percentile_ms(latencies, 95):.1f}',
                    'inference_p50_ms': f'{percentile_ms(inference, 50):.1f}',
                    'frames_received': str(self._mailbox.received),
                    'frames_processed': str(self._processed),
                    'frames_dropped': str(self._mailbox.dropped),
                    'frames_skipped': str(sum(self._skipped.values())),
                    'skipped_by_reason': ', '.join(f'{k}={v}' for k, v in sorted(self._skipped.items())),
                    'latency_skipped': str(sum(self._latency_skipped.values())),
                    'latency_skipped_by_reason': ', '.join(f'{k}={v}' for k, v in
                                                           sorted(self._latency_skipped.items())),
                    'last_error': self._last_error,
                    'camera_model': self._camera_source,
                    'backend': getattr(self, 'backend_name', ''),
                    'skeleton': self._params['skeleton'] or '(model default)',
                    'num_aug': str(self._params['num_aug']),
                }
            return values

        def _publish_diagnostics(self):
            from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
            values = self.diagnostics_values()
            status = DiagnosticStatus(name=f'{self.get_name()}: 3D human pose estimation',
                                      hardware_id=values['backend'])
            skipped_now = int(values['frames_skipped'])
            if self._mailbox.received == 0:
                status.level, status.message = DiagnosticStatus.WARN, 'no images received'
            elif skipped_now > getattr(self, '_last_skipped', 0):
                status.level, status.message = DiagnosticStatus.WARN, f'frames skipped: {values["last_error"]}'
            elif values['camera_model'].startswith('fov'):
                uncalibrated = 'uncalibrated' in values['camera_model']
                status.level = DiagnosticStatus.WARN
                status.message = 'uncalibrated camera: FOV guess' if uncalibrated else 'no CameraInfo: FOV guess'
            else:
                status.level, status.message = DiagnosticStatus.OK, f'{values["fps"]} fps'
            self._last_skipped = skipped_now
            status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
            self.diagnostics_publisher.publish(
                DiagnosticArray(header=self._diag_header(), status=[status]))

        def _diag_header(self):
            from std_msgs.msg import Header
            return Header(stamp=self.get_clock().now().to_msg())

        # --- shutdown -----------------------------------------------------------------------------------
        def close(self):
            """Stop the worker (bounded wait) and give the library's logging back; idempotent."""
            self.request_stop()
            if self._worker is not None:
                self._worker.join(timeout=10.0)
                self._worker = None
            if self._undo_library_logging is not None:
                self._undo_library_logging()
                self._undo_library_logging = None

    return PoseNode


class _SkipFrame(Exception):
    def __init__(self, reason: str, message: str, level: str = 'warning'):
        super().__init__(message)
        self.reason, self.message, self.level = reason, message, level


# Imported here (after the pure helpers) so that the module's pure parts stay importable without ROS messages.
from metrabs_ros.ros.camera_info import (CameraInfoError, UncalibratedCameraInfo,  # noqa: E402
                                         camera_model_from_camera_info, is_rectified_topic)
from metrabs_ros.ros.image_conversion import (ImageConversionError, compressed_image_msg_to_rgb,  # noqa: E402
                                              fill_image_msg, image_msg_to_rgb)
from metrabs_ros.ros.markers import build_marker_array, delete_all_marker_array  # noqa: E402
from metrabs_ros.person_appearance import appearance_descriptors  # noqa: E402
from metrabs_ros.tracking import PersonTracker  # noqa: E402
from metrabs_ros.ros.pose_messages import result_to_poses3d_msg  # noqa: E402
from metrabs_ros.ros.person_outputs import (HRI_BODY_FRAME, TF_TOPIC, HriBodies, hri_body_id,  # noqa: E402
                                            import_message, person_frame, root_transforms)
from metrabs_ros.ros.ros_logging import forward_library_logging  # noqa: E402
from metrabs_ros.ros.shutdown import ShutdownSignals  # noqa: E402


def run_until_shutdown(node, signals: ShutdownSignals, executor=None) -> None:
    """Spin ``node`` until SIGINT/SIGTERM (or another shutdown of its context)."""
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    executor = executor or SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        while not signals.requested.is_set() and node.context.ok():
            executor.spin_once(timeout_sec=0.5)
    except ExternalShutdownException:
        pass
    finally:
        executor.remove_node(node)
        executor.shutdown(timeout_sec=1.0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``pose_node`` executable; returns the process exit code (0 also after Ctrl-C)."""
    import rclpy

    signals = ShutdownSignals('pose_node').install()   # before rclpy.init: rclpy's handler chains to it
    rclpy.init(args=list(sys.argv if argv is None else argv))
    node = None
    exit_code = EXIT_OK
    try:
        node = _make_node_class()()
        signals.on_first_signal(node.request_stop)
        if not signals.requested.is_set():
            node.start()
        run_until_shutdown(node, signals)
    except StartupError as error:
        if node is not None:  # (errors inside the constructor were logged there)
            node.get_logger().fatal(f'cannot start: {error}')
        exit_code = EXIT_STARTUP_ERROR
    except Exception:
        if not signals.requested.is_set():
            raise
        # Ctrl-C while the models were loading: the context went away under start(); a normal shutdown
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
        signals.ignore_interrupts_from_now()
    return exit_code


if __name__ == '__main__':
    sys.exit(main())
