"""PoseEstimator end to end through real ONNX Runtime sessions with fixture models and rendered scenes."""

import numpy as np
import pytest

from metrabs_ros.augmentation import tta_parameters
from metrabs_ros.camera import CameraModel, intrinsics_from_fov
from metrabs_ros.crops import crop_geometry, sampling_window_px
from metrabs_ros.estimator import PoseEstimator
from metrabs_ros.onnx_backend import ModelLoadError
from metrabs_ros.synthetic_scene import render_scene


@pytest.fixture(scope='module')
def estimator(fixture_pose_model, colour_key_detector):
    return PoseEstimator(fixture_pose_model, colour_key_detector, backend='cpu', num_threads=1)


@pytest.fixture(scope='module')
def scene():
    return render_scene(seed=7, num_people=2, flat_colours=True, pose='standing',
                        distance_range_mm=(3000.0, 5000.0), background='gradient')


def box_iou(a, b):
    x1, y1 = np.maximum(a[:2], b[:2])
    x2, y2 = np.minimum(a[:2] + a[2:4], b[:2] + b[2:4])
    inter = max(x2 - x1, 0) * max(y2 - y1, 0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@pytest.mark.parametrize('num_aug', [1, 3, 5])
def test_detect_poses_finds_people_where_the_scene_has_them(estimator, scene, num_aug):
    result = estimator.detect_poses(scene.image_rgb, camera=scene.camera, world_up_vector=scene.up_vector_cam,
                                    num_aug=num_aug, suppress_implausible_poses=False)
    assert len(result) == len(scene.people)
    assert result.poses3d_mm.shape == (2, 24, 3) and result.poses2d_px.shape == (2, 24, 2)
    assert result.skeleton == 'smpl_24' and len(result.joint_names) == 24
    for person in scene.people:
        ious = [box_iou(box, person.box_xywh_px) for box in result.boxes]
        i = int(np.argmax(ious))
        assert ious[i] > 0.9
        # The fixture network's poses do not follow the image, but the reconstruction is geometric: the pose
        # lies along the box's viewing ray, in front of the camera, and its projection is inside the box.
        centre_px = scene.camera.project_px(result.poses3d_mm[i].mean(axis=0))
        x, y, w, h = person.box_xywh_px
        assert x <= centre_px[0] <= x + w and y <= centre_px[1] <= y + h
        assert np.all(result.poses3d_mm[i][:, 2] > 500)


def test_2d_output_is_the_projection_of_the_3d_output_for_one_augmentation(estimator, scene):
    result = estimator.detect_poses(scene.image_rgb, camera=scene.camera, num_aug=1)
    np.testing.assert_allclose(scene.camera.project_px(result.poses3d_mm.astype(np.float64)),
                               result.poses2d_px, atol=0.05)


def test_extrinsics_give_world_frame_poses(estimator, scene):
    boxes = np.stack([p.box_xywh_px for p in scene.people])
    camera_frame = estimator.estimate_poses(scene.image_rgb, boxes, camera=scene.camera, num_aug=1)
    angle = np.deg2rad(30)
    R = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    t = np.array([100.0, -1500.0, 250.0])
    extrinsic = np.eye(4)
    extrinsic[:3, :3], extrinsic[:3, 3] = R, t           # world -> camera, mm
    world = estimator.estimate_poses(scene.image_rgb, boxes, camera=scene.camera, num_aug=1,
                                     extrinsic_matrix=extrinsic, world_up_vector=R.T @ [0, -1, 0])
    expected = (camera_frame.poses3d_mm.astype(np.float64) - t) @ R      # X_world = R^T (X_cam - t)
    np.testing.assert_allclose(world.poses3d_mm, expected, atol=0.05)
    np.testing.assert_allclose(world.poses2d_px, camera_frame.poses2d_px, atol=1e-3)


def test_unknown_intrinsics_use_the_fov_guess(estimator, scene):
    boxes = np.stack([p.box_xywh_px for p in scene.people])
    guessed = estimator.estimate_poses(scene.image_rgb, boxes, default_fov_degrees=60)
    explicit = estimator.estimate_poses(scene.image_rgb, boxes,
                                        intrinsic_matrix=intrinsics_from_fov(60, scene.image_rgb.shape[:2]))
    np.testing.assert_allclose(guessed.poses3d_mm, explicit.poses3d_mm, atol=1e-3)


def test_skeleton_selection_and_errors(fixture_pose_model_multi, scene):
    estimator = PoseEstimator(fixture_pose_model_multi, detector_path=None, backend='cpu', num_threads=1)
    assert estimator.skeleton_names == ['coco_19', 'smpl_24']
    boxes = np.stack([p.box_xywh_px for p in scene.people])
    smpl = estimator.estimate_poses(scene.image_rgb, boxes, camera=scene.camera, skeleton='smpl_24')
    coco = estimator.estimate_poses(scene.image_rgb, boxes, camera=scene.camera, skeleton='coco_19')
    assert coco.poses3d_mm.shape == (2, 19, 3) and coco.uncertainty.shape == (2, 19)
    for name in ('pelv', 'lwri', 'rank'):   # joints shared by both formats come from the same raw joint
        np.testing.assert_allclose(coco.poses3d_mm[:, coco.joint_names.index(name)],
                                   smpl.poses3d_mm[:, smpl.joint_names.index(name)])
    with pytest.raises(ValueError, match='valid skeletons: coco_19, smpl_24'):
        estimator.estimate_poses(scene.image_rgb, boxes, skeleton='h36m_99')


def test_no_people_and_bad_inputs(estimator, scene):
    empty = estimator.estimate_poses(scene.image_rgb, np.zeros((0, 4)))
    assert empty.poses3d_mm.shape == (0, 24, 3)
    blank = estimator.detect_poses(np.zeros((120, 160, 3), np.uint8))
    assert len(blank) == 0
    with pytest.raises(ValueError, match='uint8'):
        estimator.detect_poses(scene.image_rgb.astype(np.float32))
    with pytest.raises(ValueError, match='empty'):
        estimator.detect_poses(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(ValueError, match='NaN'):
        estimator.detect_poses(scene.image_rgb, intrinsic_matrix=np.full((3, 3), np.nan))


def test_model_loading_errors(tmp_path, colour_key_detector):
    with pytest.raises(ModelLoadError, match='not found'):
        PoseEstimator(tmp_path / 'missing.onnx')
    corrupt = tmp_path / 'corrupt.onnx'
    corrupt.write_bytes(b'this is not an onnx file')
    with pytest.raises(ModelLoadError, match='cannot load'):
        PoseEstimator(corrupt)
    with pytest.raises(ModelLoadError, match='person detector'):
        PoseEstimator(colour_key_detector)


@pytest.mark.parametrize('distorted', [False, True])
def test_feeding_only_the_sampled_window_gives_identical_poses(fixture_pose_model, distorted):
    """The estimator passes only the image window the crops sample (shifted principal point); the graph's
    output must equal the full-frame computation, also for rotated/zoomed augmentations, distortion, pyramid
    levels > 0 (large people) and people at the image border."""
    camera = CameraModel.create(intrinsics_from_fov(70, (480, 640)),
                                [-0.12, 0.03, 0.001, -0.001, 0.0] if distorted else None)
    scene = render_scene(seed=5, num_people=3, camera=camera, distance_range_mm=(1500.0, 6000.0),
                         min_separation_mm=600.0)
    boxes = np.stack([p.box_xywh_px for p in scene.people if p.num_pixels > 0])
    boxes = np.concatenate([boxes, [[560.0, 200.0, 120.0, 300.0]]])   # reaches beyond the right border
    estimator = PoseEstimator(fixture_pose_model, detector_path=None, backend='cpu', num_threads=1)
    windowed_levels = []
    for subset in [boxes] + [box[None] for box in boxes]:
        geometry = crop_geometry(subset, scene.camera, scene.up_vector_cam, 128, tta_parameters(5))
        if sampling_window_px(scene.camera, geometry, 128, scene.image_rgb.shape[:2]) is not None:
            windowed_levels.append(int(geometry.pyramid_levels.max()))
        results = []
        for window in (False, True):
            estimator.crop_to_window = window
            results.append(estimator.estimate_poses(scene.image_rgb, subset, camera=scene.camera, num_aug=5,
                                                    world_up_vector=scene.up_vector_cam))
        np.testing.assert_allclose(results[1].poses3d_mm, results[0].poses3d_mm, atol=0.05)
        np.testing.assert_allclose(results[1].poses2d_px, results[0].poses2d_px, atol=0.01)
    assert len(windowed_levels) >= 3 and max(windowed_levels) >= 1   # the test did exercise windows + pyramid
