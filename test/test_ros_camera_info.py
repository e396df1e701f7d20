"""sensor_msgs/CameraInfo -> CameraModel (pure python; no DDS). Projections are checked against OpenCV's
projectPoints / fisheye.projectPoints with the message's own K and D."""

import types

import cv2
import numpy as np
import pytest

from metrabs_ros.ros.camera_info import CameraInfoError, camera_model_from_camera_info, is_rectified_topic

K = np.array([[520.0, 0.0, 318.5], [0.0, 515.0, 241.0], [0.0, 0.0, 1.0]])
POINTS_M = np.array([[0.3, -0.2, 2.0], [-0.8, 0.5, 3.5], [0.05, 0.9, 4.0], [1.0, 0.6, 2.5]])


def make_info(d=(), model='plumb_bob', k=K, p=None, width=640, height=480, binning=(0, 0), roi=None):
    p = np.concatenate([k, np.zeros((3, 1))], axis=1) if p is None else np.asarray(p)
    roi = roi or (0, 0, 0, 0)
    return types.SimpleNamespace(
        k=list(np.asarray(k, float).reshape(-1)), d=list(d), distortion_model=model,
        p=list(np.asarray(p, float).reshape(-1)), width=width, height=height, binning_x=binning[0],
        binning_y=binning[1],
        roi=types.SimpleNamespace(x_offset=roi[0], y_offset=roi[1], width=roi[2], height=roi[3], do_rectify=False))


@pytest.mark.parametrize('model,d', [
    ('plumb_bob', (-0.28, 0.09, 0.001, -0.0005, -0.012)),
    ('rational_polynomial', (0.5, -0.2, 0.001, 0.0007, 0.03, 0.8, -0.1, 0.05)),
])
def test_opencv_models_project_like_opencv(model, d):
    camera = camera_model_from_camera_info(make_info(d, model), image_hw=(480, 640))
    expected, _ = cv2.projectPoints(POINTS_M, np.zeros(3), np.zeros(3), K, np.array(d))
    np.testing.assert_allclose(camera.project_px(POINTS_M), expected.reshape(-1, 2), atol=1e-6)


def test_equidistant_projects_like_cv2_fisheye():
    d = (0.05, -0.01, 0.003, -0.0007)
    camera = camera_model_from_camera_info(make_info(d, 'equidistant'), image_hw=(480, 640))
    assert camera.distortion_model == 'fisheye'
    expected, _ = cv2.fisheye.projectPoints(POINTS_M.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, np.array(d))
    np.testing.assert_allclose(camera.project_px(POINTS_M), expected.reshape(-1, 2), atol=1e-6)


def test_no_distortion_and_empty_d():
    for d in ((), (0.0,) * 5):
        camera = camera_model_from_camera_info(make_info(d), image_hw=(480, 640))
        assert not camera.is_distorted
        uv = POINTS_M[:, :2] / POINTS_M[:, 2:] @ K[:2, :2].T + K[:2, 2]
        np.testing.assert_allclose(camera.project_px(POINTS_M), uv, atol=1e-9)


def test_rectified_uses_p_without_distortion():
    P = np.array([[600.0, 0, 330.0, -36.0], [0, 600.0, 235.0, 0], [0, 0, 1, 0]])   # right stereo camera (Tx)
    info = make_info((-0.3, 0.1, 0, 0, 0), p=P)
    camera = camera_model_from_camera_info(info, image_hw=(480, 640), use_rectified=True)
    assert not camera.is_distorted
    uv = POINTS_M[:, :2] / POINTS_M[:, 2:] * 600.0 + [330.0, 235.0]
    np.testing.assert_allclose(camera.project_px(POINTS_M), uv, atol=1e-9)


def test_binning_and_roi_describe_the_published_image():
    d = (-0.2, 0.05, 0.0, 0.0, 0.0)
    full = camera_model_from_camera_info(make_info(d, width=1280, height=960,
                                                   k=[[1040, 0, 637], [0, 1030, 482], [0, 0, 1]]))
    binned = camera_model_from_camera_info(
        make_info(d, width=1280, height=960, k=[[1040, 0, 637], [0, 1030, 482], [0, 0, 1]], binning=(2, 2)),
        image_hw=(480, 640))
    expected = (full.project_px(POINTS_M) + 0.5) / 2 - 0.5          # pixel centres at integers
    np.testing.assert_allclose(binned.project_px(POINTS_M), expected, atol=1e-9)
    cropped = camera_model_from_camera_info(
        make_info(d, width=1280, height=960, k=[[1040, 0, 637], [0, 1030, 482], [0, 0, 1]],
                  roi=(100, 50, 640, 480)), image_hw=(480, 640))
    np.testing.assert_allclose(cropped.project_px(POINTS_M), full.project_px(POINTS_M) - [100, 50], atol=1e-9)


@pytest.mark.parametrize('kwargs,image_hw,match', [
    (dict(k=np.full((3, 3), np.nan)), (480, 640), 'NaN'),
    (dict(k=np.zeros((3, 3))), (480, 640), 'all zeros'),
    (dict(k=[[0, 0, 320], [0, 500, 240], [0, 0, 1]]), (480, 640), 'focal lengths'),
    (dict(k=[[-500, 0, 320], [0, 500, 240], [0, 0, 1]]), (480, 640), 'focal lengths'),
    (dict(d=(0.1, 0.2, 0.0)), (480, 640), 'needs 5'),
    (dict(d=(0.1, 0.2, 0.0, 0.0, 0.0), model='equidistant'), (480, 640), 'needs 4'),
    (dict(d=(0.1,) * 5, model='unified'), (480, 640), 'unsupported CameraInfo.distortion_model'),
    (dict(d=(np.nan, 0, 0, 0, 0)), (480, 640), 'NaN'),
    (dict(width=320, height=240), (480, 640), '320x240 image.*640x480'),
    (dict(), (0, 640), 'positive'),
])
def test_invalid_camera_info_raises_clear_errors(kwargs, image_hw, match):
    with pytest.raises(CameraInfoError, match=match):
        camera_model_from_camera_info(make_info(**kwargs), image_hw=image_hw)


def test_rectified_needs_valid_p():
    with pytest.raises(CameraInfoError, match='p'):
        camera_model_from_camera_info(make_info(p=np.zeros((3, 4))), image_hw=(480, 640), use_rectified=True)


def test_unknown_size_is_not_checked():
    camera = camera_model_from_camera_info(make_info(width=0, height=0), image_hw=(480, 640))
    np.testing.assert_allclose(camera.intrinsic_matrix, K)


@pytest.mark.parametrize('topic,expected', [
    ('/camera/image_rect', True), ('/camera/image_rect_color', True), ('/cam/image_rect/compressed', True),
    ('/camera/image_raw', False), ('/camera/image_color', False), ('image', False), ('/direct/image', False),
])
def test_rectified_topic_names(topic, expected):
    assert is_rectified_topic(topic) is expected
