"""Crop geometry and absolute reconstruction against independent computations (OpenCV projection, exact
synthetic inputs)."""

import cv2
import numpy as np
import pytest

from metrabs_ros.absolute_pose import reconstruct_absolute
from metrabs_ros.augmentation import tta_parameters
from metrabs_ros.camera import CameraModel
from metrabs_ros.crops import crop_geometry, crop_sampling_grid_px, lookat_rotation

K = np.array([[700.0, 0.0, 330.0], [0.0, 700.0, 245.0], [0.0, 0.0, 1.0]])
D8 = np.array([0.3, -0.1, 0.001, 0.0008, 0.02, 0.6, -0.08, 0.04])
UP = np.array([0.0, -1.0, 0.0])
CAMERAS = {
    'pinhole': CameraModel.create(K),
    'opencv8': CameraModel.create(K, D8),
    'fisheye': CameraModel.create(K, [0.05, -0.01, 0.002, -0.0005], distortion_model='fisheye'),
}


def cv_project(camera, points_mm):
    points = np.asarray(points_mm, np.float64).reshape(-1, 1, 3)
    if camera.distortion_model == 'fisheye':
        px, _ = cv2.fisheye.projectPoints(points, np.zeros(3), np.zeros(3), K, camera.distortion_coeffs[:4])
    else:
        px, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), K, camera.distortion_coeffs[:8])
    return px.reshape(np.shape(points_mm)[:-1] + (2,))


def skeleton_mm(centre_mm, seed=0):
    """A human-sized random point cloud (24 'joints', ~1.7 m tall) around ``centre_mm``."""
    rng = np.random.default_rng(seed)
    offsets = rng.uniform([-300, -900, -200], [300, 800, 200], size=(24, 3))
    return np.asarray(centre_mm, np.float64) + offsets


def test_tta_constants_match_reference():
    tta = tta_parameters(5)
    np.testing.assert_allclose(np.rad2deg(tta.angles_rad), [-25, -12.5, 0, 12.5, 25])
    np.testing.assert_allclose(tta.scales, [0.8, 0.9, 1.0, 1.05, 1.1])
    assert tta.flips.tolist() == [False, True, False, True, False]
    np.testing.assert_allclose(tta.gammas, [0.6, 0.7, 0.8, 0.9, 1.0], rtol=1e-6)
    one = tta_parameters(1)
    assert one.angles_rad.tolist() == [0.0] and one.scales.tolist() == [1.0] and not one.flips[0]
    assert one.gammas[0] == pytest.approx(0.8)
    with pytest.raises(ValueError):
        tta_parameters(0)


def test_lookat_rotation_is_orthonormal_and_looks_forward():
    forward = np.array([[0.0, 0.0, 1.0], [0.3, -0.2, 1.0], [0.0, -1.0, 0.0]])  # last one is parallel to up
    R = lookat_rotation(forward, UP)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0)
    np.testing.assert_allclose(R[:, 2], forward / np.linalg.norm(forward, axis=1, keepdims=True))
    np.testing.assert_allclose(R[0], np.eye(3))


@pytest.mark.parametrize('camera_name', CAMERAS)
def test_crop_pixels_sample_where_the_camera_projects(camera_name):
    """A 3D point seen at crop pixel q is sampled from the image pixel where OpenCV projects it (< 0.5 px)."""
    camera = CAMERAS[camera_name]
    boxes = np.array([[40.0, 60.0, 150.0, 300.0], [420.0, 200.0, 120.0, 220.0]])
    tta = tta_parameters(5)
    res = 128
    geometry = crop_geometry(boxes, camera, UP, res, tta)
    qs = np.array([[5, 7], [64, 64], [100, 30], [127, 127]])
    for p in range(len(boxes)):
        for a in range(tta.num_aug):
            R = geometry.rotations[p, a].astype(np.float64)
            K_crop = geometry.intrinsics[p, a].astype(np.float64)
            grid = crop_sampling_grid_px(camera, R, K_crop, res)
            rays = (R.T @ np.linalg.inv(K_crop) @ np.c_[qs, np.ones(len(qs))].T).T
            points = rays / rays[:, 2:] * 3000.0
            expected = cv_project(camera, points)
            np.testing.assert_allclose(grid[qs[:, 1], qs[:, 0]], expected, atol=0.02)


@pytest.mark.parametrize('camera_name', CAMERAS)
def test_unaugmented_crop_centres_the_box_and_fits_it(camera_name):
    camera = CAMERAS[camera_name]
    box = np.array([[200.0, 100.0, 100.0, 250.0]])
    geometry = crop_geometry(box, camera, UP, 256, tta_parameters(1))
    R, K_crop = geometry.rotations[0, 0].astype(np.float64), geometry.intrinsics[0, 0].astype(np.float64)
    mid = np.array([[250.0, 225.0], [250.0, 100.0], [250.0, 350.0], [200.0, 225.0], [300.0, 225.0]])
    rays = camera.pixels_to_rays(mid)
    in_crop = (K_crop @ R @ rays.T).T
    in_crop = in_crop[:, :2] / in_crop[:, 2:]
    np.testing.assert_allclose(in_crop[0], [128, 128], atol=1e-3)
    vertical = np.linalg.norm(in_crop[1] - in_crop[2])
    horizontal = np.linalg.norm(in_crop[3] - in_crop[4])
    assert max(vertical, horizontal) == pytest.approx(256, abs=1e-3)


def test_flipped_augmentation_mirrors_left_and_right():
    camera = CAMERAS['pinhole']
    geometry = crop_geometry(np.array([[280.0, 150.0, 100.0, 200.0]]), camera, UP, 256, tta_parameters(5))
    centre_ray = camera.pixels_to_rays(np.array([330.0, 250.0]))
    right_point = centre_ray * 3000 + np.array([200.0, 0, 0])   # to the camera's right of the box centre
    for a, flipped in enumerate(tta_parameters(5).flips):
        p = geometry.intrinsics[0, a] @ geometry.rotations[0, a] @ right_point
        x = p[0] / p[2]
        assert (x < 128) == flipped


@pytest.mark.parametrize('camera_name', CAMERAS)
@pytest.mark.parametrize('centre', [(0.0, 200.0, 4000.0), (2600.0, -300.0, 3000.0), (-900.0, 900.0, 9000.0)])
def test_reconstruct_absolute_recovers_known_pose(camera_name, centre):
    """Exact 2D/3D inputs made from a known camera-frame pose: the absolute pose comes back within 1 mm,
    including people partly outside the image (joints outside the validity box)."""
    camera = CAMERAS[camera_name]
    pose_cam = skeleton_mm(centre)
    pixels = cv_project(camera, pose_cam)
    lo, hi = pixels.min(0), pixels.max(0)
    box = np.array([[lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]])
    tta = tta_parameters(5)
    res = 256
    geometry = crop_geometry(box, camera, UP, res, tta)
    R = geometry.rotations[0].astype(np.float64)            # [A, 3, 3]
    K_crop = geometry.intrinsics[0].astype(np.float64)
    pose_crop = np.einsum('aij,nj->ani', R, pose_cam)        # [A, J, 3]
    coords2d = np.einsum('aij,anj->ani', K_crop, pose_crop)
    coords2d = coords2d[..., :2] / coords2d[..., 2:]
    rel = pose_crop - pose_crop[:, :1] + np.array([1100.0, 1100.0, 1100.0])   # unknown reference offset
    # Without the ridge term the solve is exact; the official ridge (1e-2 on the normalised unknowns) stabilises
    # noisy predictions at the price of a small shrinkage bias (<= 0.15 % of the distance) on perfect inputs.
    for ridge, relative_tolerance in [(0.0, 1e-7), (1e-2, 1.5e-3)]:
        result = reconstruct_absolute(coords2d, rel, K_crop, resolution=res, ridge=ridge)
        back_in_camera = np.einsum('anj,aji->ani', result, R)
        error_mm = np.linalg.norm(back_in_camera - pose_cam, axis=-1)
        assert np.all(error_mm <= max(relative_tolerance * np.linalg.norm(centre), 1e-3))
        if ridge == 0.0:
            assert error_mm.max() < 1.0


def test_reconstruct_absolute_uses_3d_offsets_outside_the_validity_box():
    """Joints outside [24, res-24] must not use their 2D prediction: corrupting their 2D input changes little."""
    rng = np.random.default_rng(3)
    K_crop = np.array([[[900.0, 0, 128], [0, 900.0, 128], [0, 0, 1]]])
    pose = rng.uniform([-400, -800, 4500], [400, 800, 5500], (1, 17, 3))
    px = np.einsum('bij,bnj->bni', K_crop, pose)
    px = px[..., :2] / px[..., 2:]
    outside = (px < 24).any(-1) | (px > 232).any(-1)
    assert outside.any() and (~outside).sum() >= 6
    rel = pose - pose[:, :1]
    reference = reconstruct_absolute(px, rel, K_crop, ridge=0.0)
    np.testing.assert_allclose(reference, pose, atol=1e-3)
    corrupted = px.copy()
    corrupted[outside] += np.where(corrupted[outside] < 24, -5.0, 5.0)  # still outside, different values
    result = reconstruct_absolute(corrupted, rel, K_crop, ridge=0.0)
    # Only the 1e-4 row weights of outside joints see the corruption.
    np.testing.assert_allclose(result, reference, atol=0.05)


def test_boxes_beyond_the_invertible_field_of_view_are_flagged():
    from metrabs_ros.crops import valid_boxes
    camera = CameraModel.create([[320.0, 0, 320], [0, 320.0, 240], [0, 0, 1]], [-0.25, 0, 0, 0, 0])
    boxes = np.array([[250.0, 150.0, 100.0, 200.0], [500.0, 100.0, 400.0, 300.0]])   # second reaches x = 900
    geometry = crop_geometry(boxes, camera, UP, 256, tta_parameters(1))
    assert valid_boxes(geometry).tolist() == [True, False]
    assert CameraModel.create(K, camera.distortion_coeffs[:4], 'fisheye').distortion_model == 'fisheye'
    padded = CameraModel.create(K, [0.1, 0.01, 0, 0], 'fisheye').distortion_coeffs
    assert CameraModel.create(K, padded, 'fisheye').distortion_coeffs.tolist() == padded.tolist()
