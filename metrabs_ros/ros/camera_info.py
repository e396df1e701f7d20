"""sensor_msgs/CameraInfo -> :class:`metrabs_ros.camera.CameraModel`, with validation.

Raw images (``image_raw``, ``image_color``, ...) use ``K`` and ``D`` with the message's ``distortion_model``:
``plumb_bob`` (5 coefficients k1 k2 p1 p2 k3), ``rational_polynomial`` (8: + k4 k5 k6) or ``equidistant``
(4: fisheye k1..k4). Rectified images (``*_rect*`` topics, or ``use_rectified=True``) use ``P[:3, :3]`` and no
distortion, as image_proc produces them.

Binning and a region of interest (CameraInfo ``binning_x/y``, ``roi``) are applied to the intrinsics, so the
camera describes the image as published. Reads only message attributes (no ROS import; unit-testable).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from metrabs_ros.camera import CameraModel

# ROS distortion model -> (CameraModel distortion model, accepted numbers of coefficients)
DISTORTION_MODELS = {
    'plumb_bob': ('opencv', (5,)),
    'rational_polynomial': ('opencv', (8, 12, 14)),
    'equidistant': ('fisheye', (4,)),
    'fisheye': ('fisheye', (4,)),
}


class CameraInfoError(ValueError):
    """The CameraInfo cannot describe the image (invalid intrinsics, distortion or size)."""


class UncalibratedCameraInfo(CameraInfoError):
    """The CameraInfo is the standard "uncalibrated" one (K, or P for rectified images, all zeros): the camera
    driver has no calibration. Treat it like a missing CameraInfo (field-of-view guess), not as bad input."""


def is_uncalibrated(info, use_rectified: bool = False) -> bool:
    """True when the intrinsics of ``info`` are all zeros (what camera drivers publish without a calibration)."""
    try:
        values = np.asarray(info.p if use_rectified else info.k, np.float64).reshape(-1)
    except (TypeError, ValueError):
        return False
    return values.size > 0 and bool(np.all(values == 0.0))


def is_rectified_topic(topic_name: str) -> bool:
    """True for image topics that carry rectified images by ROS convention (``image_rect``, ``image_rect_color``,
    ``.../rect/...``), also with a transport suffix such as ``/compressed``."""
    parts = [p for p in str(topic_name).split('/') if p and p not in ('compressed', 'theora', 'zstd')]
    return bool(parts) and ('rect' in parts[-1].split('_') or 'rect' in parts)


def _matrix(values, n: int, name: str) -> np.ndarray:
    array = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64).reshape(-1)
    if array.size != n:
        raise CameraInfoError(f'CameraInfo.{name} must have {n} elements, got {array.size}')
    if not np.all(np.isfinite(array)):
        raise CameraInfoError(f'CameraInfo.{name} contains NaN or inf: {array.tolist()}')
    return array


def camera_model_from_camera_info(info, image_hw: Optional[Sequence[int]] = None,
                                  use_rectified: bool = False) -> CameraModel:
    """Build the camera model of the image that ``info`` (``sensor_msgs/CameraInfo``) belongs to.

    Args:
      info: the CameraInfo message (or any object with its fields: ``k``, ``d``, ``p``, ``distortion_model``,
        ``width``, ``height``, ``binning_x``, ``binning_y``, ``roi``).
      image_hw: (height, width) of the image in pixels, to check that the CameraInfo belongs to it.
      use_rectified: the image is rectified: intrinsics from ``P[:3, :3]``, no distortion.
    Raises:
      UncalibratedCameraInfo: K (P with ``use_rectified``) is all zeros: no calibration (a subclass of
        CameraInfoError).
      CameraInfoError: NaN/inf or non-positive focal lengths, a ``D`` whose length does not fit the distortion
        model, an unknown distortion model, or a size that does not match the image.
    """
    if is_uncalibrated(info, use_rectified):
        what = 'p' if use_rectified else 'k'
        raise UncalibratedCameraInfo(f'CameraInfo.{what} is all zeros (uncalibrated camera)')
    binning_x = max(int(getattr(info, 'binning_x', 0) or 0), 1)
    binning_y = max(int(getattr(info, 'binning_y', 0) or 0), 1)
    roi = getattr(info, 'roi', None)
    calib_w, calib_h = int(info.width), int(info.height)
    roi_x = roi_y = 0
    full_w, full_h = calib_w, calib_h
    if roi is not None and int(roi.width) > 0 and int(roi.height) > 0:
        roi_x, roi_y = int(roi.x_offset), int(roi.y_offset)
        full_w, full_h = int(roi.width), int(roi.height)
    expected_w, expected_h = full_w // binning_x, full_h // binning_y
    if image_hw is not None:
        image_h, image_w = int(image_hw[0]), int(image_hw[1])
        if image_h <= 0 or image_w <= 0:
            raise CameraInfoError(f'image size must be positive, got {image_w}x{image_h}')
        if calib_w > 0 and calib_h > 0 and (expected_w, expected_h) != (image_w, image_h):
            raise CameraInfoError(
                f'CameraInfo describes a {expected_w}x{expected_h} image (width x height'
                f'{", after roi/binning" if (binning_x, binning_y, roi_x, roi_y) != (1, 1, 0, 0) else ""}) '
                f'but the image is {image_w}x{image_h}')

    if use_rectified:
        P = _matrix(info.p, 12, 'p').reshape(3, 4)
        K = P[:, :3].copy()
        coeffs, model = None, 'opencv'
        what = 'P'
    else:
        K = _matrix(info.k, 9, 'k').reshape(3, 3)
        what = 'K'
        ros_model = str(info.distortion_model).strip().lower()
        d = _matrix(info.d, len(info.d), 'd') if len(info.d) else np.zeros(0)
        if d.size == 0 or not np.any(d):
            coeffs, model = None, ('fisheye' if ros_model in ('equidistant', 'fisheye') else 'opencv')
        else:
            if ros_model not in DISTORTION_MODELS:
                raise CameraInfoError(
                    f'unsupported CameraInfo.distortion_model {info.distortion_model!r}; supported: '
                    f'{", ".join(DISTORTION_MODELS)}')
            model, lengths = DISTORTION_MODELS[ros_model]
            if d.size not in lengths:
                raise CameraInfoError(
                    f'CameraInfo.d has {d.size} coefficients but distortion_model {ros_model!r} needs '
                    f'{" or ".join(str(n) for n in lengths)}')
            coeffs = d

    if not np.any(K):
        raise CameraInfoError(f'CameraInfo.{what.lower()} is all zeros (uncalibrated camera)')
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not (math.isfinite(K[0, 0]) and math.isfinite(K[1, 1])):
        raise CameraInfoError(f'focal lengths in CameraInfo.{what.lower()} must be positive, got '
                              f'fx={K[0, 0]}, fy={K[1, 1]}')
    if K[2, 2] != 1.0:
        if K[2, 2] == 0:
            raise CameraInfoError(f'CameraInfo.{what.lower()}[2,2] is 0: {K.tolist()}')
        K = K / K[2, 2]

    # Region of interest and binning (pixel-centre convention: x_binned = (x + 0.5) / b - 0.5).
    if (roi_x, roi_y) != (0, 0):
        K[0, 2] -= roi_x
        K[1, 2] -= roi_y
    if (binning_x, binning_y) != (1, 1):
        S = np.array([[1.0 / binning_x, 0, (1.0 / binning_x - 1) / 2],
                      [0, 1.0 / binning_y, (1.0 / binning_y - 1) / 2],
                      [0, 0, 1]])
        K = S @ K
    try:
        return CameraModel(K, coeffs, model)
    except ValueError as error:
        raise CameraInfoError(f'invalid CameraInfo: {error}') from error
