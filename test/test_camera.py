"""Camera model against OpenCV (an independent implementation) and exact geometric identities."""

import cv2
import numpy as np
import pytest

from metrabs_ros.camera import CameraModel, intrinsics_from_fov

K = np.array([[600.0, 0.0, 322.5], [0.0, 610.0, 237.0], [0.0, 0.0, 1.0]])
RNG = np.random.default_rng(0)
POINTS_MM = np.stack([RNG.uniform(-1500, 1500, 200), RNG.uniform(-1000, 1000, 200),
                      RNG.uniform(1500, 8000, 200)], axis=1)
D5 = [-0.28, 0.09, 0.001, -0.0015, -0.012]
D8 = [0.3, -0.1, 0.001, 0.0008, 0.02, 0.6, -0.08, 0.04]
D12 = D8 + [0.001, -0.0005, 0.0007, 0.0002]


def test_fov_intrinsics_match_official_formula():
    K_fov = intrinsics_from_fov(55, (480, 640))
    f = 640 / (2 * np.tan(np.deg2rad(55) / 2))
    np.testing.assert_allclose(K_fov, [[f, 0, 320], [0, f, 240], [0, 0, 1]])
    K_portrait = intrinsics_from_fov(55, (1080, 720))
    assert K_portrait[0, 0] == pytest.approx(1080 / (2 * np.tan(np.deg2rad(27.5))))
    with pytest.raises(ValueError, match='fov'):
        intrinsics_from_fov(0, (480, 640))


@pytest.mark.parametrize('coeffs', [None, D5, D8, D12])
def test_projection_matches_opencv(coeffs):
    camera = CameraModel.create(K, coeffs)
    ours = camera.project_px(POINTS_MM)
    dist = np.zeros(5) if coeffs is None else np.asarray(coeffs, np.float64)
    theirs, _ = cv2.projectPoints(POINTS_MM.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, dist)
    np.testing.assert_allclose(ours, theirs.reshape(-1, 2), atol=1e-6)


def test_fisheye_projection_matches_opencv():
    d = [0.05, -0.01, 0.002, -0.0005]
    camera = CameraModel.create(K, d, distortion_model='fisheye')
    theirs, _ = cv2.fisheye.projectPoints(POINTS_MM.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K,
                                          np.asarray(d, np.float64))
    np.testing.assert_allclose(camera.project_px(POINTS_MM), theirs.reshape(-1, 2), atol=1e-6)
    rays = camera.pixels_to_rays(camera.project_px(POINTS_MM))
    np.testing.assert_allclose(rays[:, :2], POINTS_MM[:, :2] / POINTS_MM[:, 2:], atol=1e-7)


@pytest.mark.parametrize('coeffs', [D5, D8, D12])
def test_back_projection_inverts_projection(coeffs):
    camera = CameraModel.create(K, coeffs)
    pixels = camera.project_px(POINTS_MM)
    recovered = camera.back_project_mm(pixels, POINTS_MM[:, 2])
    np.testing.assert_allclose(recovered, POINTS_MM, atol=1e-3)
    # OpenCV's default stops after 5 iterations; ask it to converge for an exact comparison.
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-14)
    theirs = cv2.undistortPoints(pixels.reshape(-1, 1, 2), K, np.asarray(coeffs), None, None, None,
                                     criteria).reshape(-1, 2)
    np.testing.assert_allclose(camera.pixels_to_rays(pixels)[:, :2], theirs, atol=1e-5)


def test_behind_camera_projects_to_nan():
    camera = CameraModel.create(K)
    assert np.all(np.isnan(camera.project_px(np.array([[0.0, 0.0, -100.0]]))))


@pytest.mark.parametrize('bad, message', [
    (np.full((3, 3), np.nan), 'NaN'),
    (np.zeros((3, 3)), 'focal'),
    (np.eye(4), '3x3'),
])
def test_invalid_intrinsics_raise_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        CameraModel.create(bad)


def test_camera_info_conversion():
    k = K.reshape(-1).tolist()
    cam = CameraModel.from_camera_info(k, D5, 'plumb_bob', (480, 640))
    assert cam.distortion_model == 'opencv' and cam.is_distorted
    cam = CameraModel.from_camera_info(k, [0.1, 0, 0, 0], 'equidistant', (480, 640))
    assert cam.distortion_model == 'fisheye' and cam.model_id == 1.0
    P = np.hstack([K * 0.9, np.zeros((3, 1))]); P[2, 2] = 1
    rect = CameraModel.from_camera_info(k, D5, 'plumb_bob', (480, 640), p=P.reshape(-1), rectified=True)
    assert not rect.is_distorted
    np.testing.assert_allclose(rect.intrinsic_matrix, P[:, :3])
    with pytest.raises(ValueError, match='9 elements'):
        CameraModel.from_camera_info([1, 2, 3], D5, 'plumb_bob')
    with pytest.raises(ValueError, match='unsupported distortion model'):
        CameraModel.from_camera_info(k, D5, 'weird')
    with pytest.raises(ValueError, match='coefficients'):
        CameraModel.from_camera_info(k, [0.1, 0.2, 0.3], 'plumb_bob')


def test_undistortion_converges_for_strong_barrel_distortion_at_the_image_edge():
    """The plain fixed-point iteration oscillates here; every pixel of the image must invert exactly."""
    camera = CameraModel.create([[415.0, 0, 320], [0, 415.0, 240], [0, 0, 1]], [-0.3, 0.1, 0.0015, -0.001, -0.02])
    cols, rows = np.meshgrid(np.arange(0, 640, 4.0), np.arange(0, 480, 4.0))
    pixels = np.stack([cols, rows], -1).reshape(-1, 2)
    # r·(1 - 0.3r² + 0.1r⁴ - 0.02r⁶) peaks at 0.907: image corners beyond that have no undistorted preimage.
    pixels = pixels[np.hypot(pixels[:, 0] - 320, pixels[:, 1] - 240) / 415 < 0.88]
    rays = camera.pixels_to_rays(pixels)
    np.testing.assert_allclose(camera.project_px(rays), pixels, atol=1e-4)
