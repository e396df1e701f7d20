"""PoseEstimator: image + camera -> metric, absolute 3D skeletons of every person (the official API, in numpy +
ONNX Runtime)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Optional, Sequence

import numpy as np

from metrabs_ros import embedded_models
from metrabs_ros.augmentation import tta_parameters
from metrabs_ros.camera import CameraModel, check_undistortion_method, intrinsics_from_fov
from metrabs_ros.crops import CropGeometry, crop_geometry, sampling_window_px, valid_boxes
from metrabs_ros.model_contract import POSE_OUTPUT, UNCERTAINTY_OUTPUT, read_pose_model_info
from metrabs_ros.gpu.backend import OrtPoseBackend, create_pose_backend
from metrabs_ros.onnx_backend import ModelLoadError
from metrabs_ros.plausibility import suppress_implausible_poses

LOGGER = logging.getLogger(__name__)
DEFAULT_WORLD_UP = (0.0, -1.0, 0.0)


@dataclasses.dataclass
class PoseResult:
    """Poses of the people in one image.

    Attributes:
      boxes: ``float32 [P, 5]`` detection boxes x, y, width, height (pixels) and confidence.
      poses3d_mm: ``float32 [P, J, 3]`` joints in millimetres, camera frame (x right, y down, z forward) or the
        world frame when an extrinsic matrix was given.
      poses2d_px: ``float32 [P, J, 2]`` joints in pixels of the input image (projection of each augmentation's 3D
        pose through the camera, incl. distortion, averaged).
      uncertainty: ``float32 [P, J]`` per-joint uncertainty (mm) if the model predicts it, else None.
      skeleton, joint_names, joint_edges: the output format.
    """
    boxes: np.ndarray
    poses3d_mm: np.ndarray
    poses2d_px: np.ndarray
    uncertainty: Optional[np.ndarray]
    skeleton: str
    joint_names: Sequence[str]
    joint_edges: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)


@functools.lru_cache(maxsize=16)
def _fov_camera(image_hw, fov_degrees: float) -> CameraModel:
    return CameraModel(intrinsics_from_fov(fov_degrees, image_hw))


def _as_rgb_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f'image must be uint8 RGB, got dtype {image.dtype}')
    if image.ndim == 2:
        image = np.repeat(image[..., np.newaxis], 3, axis=-1)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'image must have shape [H, W, 3] (RGB), got {image.shape}')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f'image is empty: shape {image.shape}')
    return np.ascontiguousarray(image)


def _graph_antialias_factor(metadata, path) -> int:
    """Metadata ``antialias_factor`` of a pose model (an integer >= 1; absent in models exported before it existed,
    which do not supersample: 1)."""
    value = metadata.get('antialias_factor', '1')
    try:
        factor = float(value)
    except ValueError:
        factor = float('nan')
    if not (factor >= 1 and factor == int(factor)):
        raise ModelLoadError(f'{path}: metadata antialias_factor must be an integer >= 1, got {value!r}')
    return int(factor)


class PoseEstimator:
    """MeTRAbs multi-person 3D pose estimation with ONNX models that follow docs/model_contract.md.

    Args:
      model_path: pose model (.onnx); default: ``$METRABS_ROS_MODEL`` or the embedded model.
      detector_path: person detector (.onnx, native contract or a YOLO export); default: ``$METRABS_ROS_DETECTOR``
        or the embedded detector. Without a detector, :meth:`estimate_poses` still works.
      backend: ``auto`` (TensorRT, then PyTorch CUDA, then ONNX Runtime CUDA, then CPU — whatever this machine
        has; each skipped backend is logged with its reason), ``tensorrt``, ``torch-cuda`` (needs the PyTorch
        checkpoint: ``torch_checkpoint`` or MODEL.pt beside MODEL.onnx), ``cuda`` (ONNX Runtime CUDA EP),
        ``onnxruntime``/``cpu``, ``ort-tensorrt`` (ONNX Runtime's TensorRT EP). See docs/gpu.md.
      precision: ``auto``/``fp16``/``fp32`` for the TensorRT and PyTorch backends.
      engine_options: TensorRT engine build options (profiles, cache directory; metrabs_ros.gpu.trt_builder).
      num_threads: ONNX Runtime intra-op threads per session.
      detector_format: ``auto`` or one of the detector adapters (``native``, ``yolov5``, ``yolov8``, ``yolox``,
        ``end2end``).
    """

    def __init__(self, model_path=None, detector_path=None, backend: str = 'auto',
                 num_threads: Optional[int] = None, detector_format: str = 'auto', torch_checkpoint=None,
                 precision: str = 'auto', engine_options: Optional[dict] = None):
        model_path = os.fspath(model_path or embedded_models.default_pose_model_path())
        if not os.path.isfile(model_path):
            raise ModelLoadError(
                f'pose model not found: {model_path}' + (
                    ' (no embedded default model is installed in this build; pass model_path / --model)'
                    if not model_path or model_path == os.fspath(embedded_models.DEFAULT_POSE_MODEL) else ''))
        self.session = create_pose_backend(model_path, backend=backend, num_threads=num_threads,
                                           torch_checkpoint=torch_checkpoint, precision=precision,
                                           engine_options=engine_options)
        self.info = read_pose_model_info(self.session, model_path)
        #: the graph's crop supersampling factor, fixed at export (metadata ``antialias_factor``; absent = 1)
        self.antialias_factor = _graph_antialias_factor(self.info.metadata, model_path)
        graph = getattr(self.session, 'module', None)   # PyTorch backend: the PoseGraph built from the checkpoint
        if graph is not None and hasattr(graph, 'set_antialias_factor'):
            graph.set_antialias_factor(self.antialias_factor)
        self._output_names = [POSE_OUTPUT] + ([UNCERTAINTY_OUTPUT] if self.info.has_uncertainty else [])
        #: feed the pose graph only the image window its crops sample (exact; see crops.sampling_window_px);
        #: GPU backends keep the full frame so that input shapes (engine profiles, CUDA graphs) stay fixed
        self.crop_to_window = not getattr(self.session, 'wants_full_frame', False)
        self.detector = None
        explicit_detector = detector_path is not None
        detector_path = os.fspath(detector_path or embedded_models.default_detector_path())
        if explicit_detector or os.path.isfile(detector_path):
            from metrabs_ros.detection import PersonDetector
            self.detector = PersonDetector(detector_path, format=detector_format, num_threads=num_threads,
                                           providers=self._detector_providers())
        else:
            LOGGER.warning('no person detector at %s: detect_poses is unavailable, estimate_poses works',
                           detector_path)

    def _detector_providers(self):
        """ONNX Runtime providers for the detector: the pose session's when it is ONNX Runtime, else CUDA when
        this onnxruntime build has it."""
        if isinstance(self.session, OrtPoseBackend):
            return self.session.get_providers()
        import onnxruntime
        if 'CUDAExecutionProvider' in onnxruntime.get_available_providers():
            return ['CUDAExecutionProvider', 'CPUExecutionProvider']
        return ['CPUExecutionProvider']

    @property
    def backend_name(self) -> str:
        return getattr(self.session, 'name', 'onnxruntime')

    # --- model description -----------------------------------------------------------------------------
    @property
    def skeleton_names(self):
        return sorted(self.info.skeletons)

    @property
    def resolution(self) -> int:
        return self.info.resolution

    def skeleton_info(self, name: str = ''):
        """``(joint_names, edges [E, 2])`` of a format ('' = default); unknown names raise listing valid ones."""
        mapping = self.info.skeleton(name)
        return list(mapping.joint_names), mapping.edges

    def validate_skeleton(self, name: str) -> str:
        return self.info.skeleton(name).name

    # --- inference -------------------------------------------------------------------------------------
    def _camera(self, image_hw, camera, intrinsic_matrix, distortion_coeffs, distortion_model,
                default_fov_degrees) -> CameraModel:
        if camera is not None:
            return camera
        if intrinsic_matrix is None and distortion_coeffs is None:
            return _fov_camera(tuple(image_hw), float(default_fov_degrees))
        return CameraModel.create(intrinsic_matrix, distortion_coeffs, distortion_model, image_hw,
                                  default_fov_degrees)

    def detect_poses(self, image, intrinsic_matrix=None, distortion_coeffs=None, distortion_model='opencv',
                     camera: Optional[CameraModel] = None, extrinsic_matrix=None,
                     world_up_vector=DEFAULT_WORLD_UP, default_fov_degrees: float = 55.0, num_aug: int = 1,
                     skeleton: str = '', detector_threshold: Optional[float] = None,
                     detector_nms_iou_threshold: float = 0.7, max_detections: int = -1,
                     suppress_implausible_poses: bool = True, antialias_factor: Optional[int] = None,
                     undistortion: str = 'converged', detector_tiles=None) -> PoseResult:
        """Detect people and estimate their 3D poses (the official ``detect_poses``).

        Args:
          image: ``uint8 [H, W, 3]`` RGB image.
          intrinsic_matrix: 3×3 ``K`` in pixels; None = unknown: guessed from ``default_fov_degrees``.
          distortion_coeffs: OpenCV coefficients (5/8/12) or fisheye k1..k4 with ``distortion_model='fisheye'``.
          camera: a ready :class:`CameraModel` (overrides the previous three).
          extrinsic_matrix: 4×4 world→camera transform (translation in mm); outputs are then in the world frame.
          world_up_vector: the world's up direction (world frame); with no extrinsics the camera frame's
            ``(0, -1, 0)`` — crops are kept upright with respect to it.
          num_aug: test-time augmentations per person (1 = fastest, 5 = official default accuracy).
          skeleton: output format name ('' = the model's default); unknown names raise listing valid ones.
          detector_threshold, detector_nms_iou_threshold, max_detections: detector settings (-1 = unlimited;
            threshold None = the detector's recommended one, its ``score_threshold`` metadata, else 0.3).
          detector_tiles: small-people pass, None/'off' or ``'ROWSxCOLS'`` (e.g. ``'2x2'``): the detector also
            runs on each tile of an overlapping grid (see :meth:`PersonDetector.candidates`; costs one detector
            run per tile).
          suppress_implausible_poses: drop implausible poses and pose-level duplicates.
          antialias_factor: crop supersampling factor f; None = the model's (fixed when the model was exported:
            metadata ``antialias_factor``, 1 for older models). Any other value raises ValueError naming the
            export command (docs/export.md, "Anti-aliasing").
          undistortion: ``converged`` (default: box points undistorted to float precision) or ``official``
            (the official MeTRAbs 5 fixed-point iterations, for agreement with published results; differs only
            for strong distortion near or past the image border; docs/export.md).
        """
        image = _as_rgb_image(image)
        if self.detector is None:
            raise RuntimeError('no person detector is loaded; pass detector_path or use estimate_poses(boxes)')
        from metrabs_ros.detection.detector import parse_tiles
        mapping = self.info.skeleton(skeleton)
        boxes = self.detector.detect(image, threshold=detector_threshold,
                                     nms_iou_threshold=detector_nms_iou_threshold, max_detections=max_detections,
                                     tiles=parse_tiles(detector_tiles))
        return self._estimate(image, boxes, mapping, intrinsic_matrix, distortion_coeffs, distortion_model, camera,
                              extrinsic_matrix, world_up_vector, default_fov_degrees, num_aug, antialias_factor,
                              suppress_implausible_poses, undistortion)

    def estimate_poses(self, image, boxes, intrinsic_matrix=None, distortion_coeffs=None,
                       distortion_model='opencv', camera: Optional[CameraModel] = None, extrinsic_matrix=None,
                       world_up_vector=DEFAULT_WORLD_UP, default_fov_degrees: float = 55.0, num_aug: int = 1,
                       skeleton: str = '', antialias_factor: Optional[int] = None,
                       undistortion: str = 'converged') -> PoseResult:
        """3D poses for given boxes ``[P, 4]`` (x, y, w, h px) or ``[P, 5]`` (+ score); no detector, no
        plausibility filter (the official ``estimate_poses``). Other arguments as in :meth:`detect_poses`."""
        image = _as_rgb_image(image)
        mapping = self.info.skeleton(skeleton)
        boxes = np.asarray(boxes, np.float32).reshape(-1, np.shape(boxes)[-1] if np.size(boxes) else 4)
        if boxes.shape[1] == 4:
            boxes = np.concatenate([boxes, np.ones_like(boxes[:, :1])], axis=1)
        if boxes.shape[1] != 5:
            raise ValueError(f'boxes must be [P, 4] or [P, 5], got {boxes.shape}')
        return self._estimate(image, boxes, mapping, intrinsic_matrix, distortion_coeffs, distortion_model, camera,
                              extrinsic_matrix, world_up_vector, default_fov_degrees, num_aug, antialias_factor,
                              False, undistortion)

    def _estimate(self, image, boxes, mapping, intrinsic_matrix, distortion_coeffs, distortion_model, camera,
                  extrinsic_matrix, world_up_vector, default_fov_degrees, num_aug, antialias_factor,
                  suppress, undistortion='converged') -> PoseResult:
        antialias_factor = self._check_antialias_factor(antialias_factor)
        check_undistortion_method(undistortion)
        camera = self._camera(image.shape[:2], camera, intrinsic_matrix, distortion_coeffs, distortion_model,
                              default_fov_degrees)
        boxes = boxes[np.all(np.isfinite(boxes), axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)]
        if len(boxes) == 0:
            return self._no_people(mapping)
        tta = tta_parameters(num_aug)
        if extrinsic_matrix is not None:
            extrinsic_matrix = np.asarray(extrinsic_matrix, np.float64)
            if extrinsic_matrix.shape != (4, 4) or not np.all(np.isfinite(extrinsic_matrix)):
                raise ValueError(f'extrinsic_matrix must be a finite 4x4 matrix, got {extrinsic_matrix.shape}')
            up_cam = extrinsic_matrix[:3, :3] @ np.asarray(world_up_vector, np.float64)
        else:
            up_cam = np.asarray(world_up_vector, np.float64)
        geometry = crop_geometry(boxes[:, :4], camera, up_cam, self.info.resolution, tta, antialias_factor,
                                 undistortion)
        usable = valid_boxes(geometry)
        if not np.all(usable):
            LOGGER.warning('skipping %d box(es) whose crop cannot be formed (outside the lens model\'s valid '
                           'field of view): %s', np.count_nonzero(~usable), boxes[~usable, :4].tolist())
            boxes = boxes[usable]
            geometry = CropGeometry(geometry.rotations[usable], geometry.intrinsics[usable],
                                    geometry.pyramid_levels[usable], geometry.box_scales[usable])
            if len(boxes) == 0:
                return self._no_people(mapping)
        # Only the part of the frame that the crops sample goes into the graph (same crops, less full-frame work).
        intrinsics = camera.intrinsic_matrix.astype(np.float32)
        window = sampling_window_px(camera, geometry, self.info.resolution, image.shape[:2]) \
            if self.crop_to_window else None
        if window is not None:
            x0, y0, x1, y1 = window
            image = np.ascontiguousarray(image[y0:y1, x0:x1])
            intrinsics = intrinsics.copy()
            intrinsics[0, 2] -= x0
            intrinsics[1, 2] -= y0
        feeds = {
            'image': image,
            'intrinsics': intrinsics,
            'distortion_coeffs': camera.distortion_coeffs.astype(np.float32),
            'distortion_model': np.array([camera.model_id], np.float32),
            'crop_rotations': geometry.rotations,
            'crop_intrinsics': geometry.intrinsics,
            'pyramid_levels': geometry.pyramid_levels,
            'aug_gammas': tta.gammas,
            'aug_flips': tta.flips.astype(np.float32),
        }
        outputs = self.session.run(self._output_names, feeds)
        raw_aug = outputs[0].astype(np.float64)                                  # [P, A, J_raw, 3] mm camera
        if suppress:
            keep = self._plausible(boxes, raw_aug, camera)
            boxes, raw_aug = boxes[keep], raw_aug[keep]
            outputs = [o[keep] for o in outputs]
        poses_aug = mapping.convert(raw_aug)                                      # [P, A, J, 3]
        poses2d = np.mean(camera.project_px(poses_aug), axis=1)
        poses3d = np.mean(poses_aug, axis=1)
        uncertainty = None
        if self.info.has_uncertainty:
            uncertainty = mapping.convert_scalar(np.mean(outputs[1], axis=1)).astype(np.float32)
        if extrinsic_matrix is not None:
            cam_to_world = np.linalg.inv(extrinsic_matrix)
            poses3d = poses3d @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]
        return PoseResult(boxes.astype(np.float32), poses3d.astype(np.float32), poses2d.astype(np.float32),
                          uncertainty, mapping.name, list(mapping.joint_names), mapping.edges)

    def _check_antialias_factor(self, requested) -> int:
        """The graph's factor when ``requested`` is None or equal to it; else ValueError (it is fixed at export)."""
        if requested is None or requested == self.antialias_factor:
            return self.antialias_factor
        raise ValueError(
            f'antialias_factor {requested!r} requested, but {self.info.path} supersamples its crops with '
            f'antialias_factor {self.antialias_factor} (fixed when the model is exported). Pass '
            f'{self.antialias_factor} or None, or export a model with the factor you want: '
            f'metrabs-ros export CHECKPOINT --antialias-factor {requested} (or import-official ... '
            f'--antialias-factor {requested}); see docs/export.md')

    def _no_people(self, mapping) -> PoseResult:
        num_joints = len(mapping.joint_names)
        return PoseResult(np.zeros((0, 5), np.float32), np.zeros((0, num_joints, 3), np.float32),
                          np.zeros((0, num_joints, 2), np.float32),
                          np.zeros((0, num_joints), np.float32) if self.info.has_uncertainty else None,
                          mapping.name, list(mapping.joint_names), mapping.edges)

    def _plausible(self, boxes, raw_aug, camera) -> np.ndarray:
        raw_mean = raw_aug.mean(axis=1)
        raw_2d = np.mean(camera.project_px(raw_aug), axis=1)
        return suppress_implausible_poses(boxes, raw_mean, raw_aug, raw_2d, self.info.joint_edges,
                                          self.info.bone_lengths_mm)
