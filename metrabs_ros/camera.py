"""Camera model: intrinsics, lens distortion, projection and back-projection (vectorised numpy).

Conventions (see docs/model_contract.md):

* camera frame: x right, y down, z forward (a ROS ``*_optical_frame``); 3D points in any length unit
  (the pipeline uses millimetres), projection is scale-invariant;
* pixels: x right, y down, the centre of the top-left pixel is (0, 0);
* distortion: OpenCV's rational / tangential / thin-prism model with coefficients
  ``k1, k2, p1, p2, k3, k4, k5, k6, s1, s2, s3, s4`` (5, 8 or 12 given; the rest are zero), or the equidistant
  fisheye model (OpenCV ``cv2.fisheye``, ROS ``equidistant``) with ``k1..k4``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

DISTORTION_MODELS = ('opencv', 'fisheye')
_ROS_DISTORTION_MODELS = {
    'plumb_bob': 'opencv', 'rational_polynomial': 'opencv', 'opencv': 'opencv', '': 'opencv',
    'equidistant': 'fisheye', 'fisheye': 'fisheye', 'kannala_brandt': 'fisheye'}


def intrinsics_from_fov(fov_degrees: float, image_hw: Sequence[int]) -> np.ndarray:
    """Intrinsic matrix for an unknown camera, exactly as the official MeTRAbs API guesses it.

    The field of view spans the *larger* image side: ``f = max(H, W) / (2 tan(fov/2))`` pixels, and the
    principal point is ``(W/2, H/2)``.
    """
    fov_degrees = float(fov_degrees)
    if not 0.0 < fov_degrees < 180.0:
        raise ValueError(f'default_fov_degrees must be in (0, 180), got {fov_degrees}')
    height, width = int(image_hw[0]), int(image_hw[1])
    if height <= 0 or width <= 0:
        raise ValueError(f'image size must be positive, got {height}x{width}')
    focal_px = max(height, width) / (2.0 * math.tan(math.radians(fov_degrees) / 2.0))
    return np.array([[focal_px, 0.0, width / 2.0],
                     [0.0, focal_px, height / 2.0],
                     [0.0, 0.0, 1.0]], dtype=np.float64)


def _pad_coeffs(distortion_coeffs, model: str) -> np.ndarray:
    if distortion_coeffs is None:
        return np.zeros(12, np.float64)
    d = np.asarray(distortion_coeffs, dtype=np.float64).reshape(-1)
    if model == 'fisheye':
        if d.size == 12 and not np.any(d[4:]):
            d = d[:4]   # our own zero-padded storage form
        if d.size not in (0, 4):
            raise ValueError(f'fisheye distortion needs 4 coefficients (k1..k4), got {d.size}')
    elif d.size not in (0, 4, 5, 8, 12, 14):
        raise ValueError(
            f'OpenCV distortion needs 4, 5, 8 or 12 coefficients (k1,k2,p1,p2[,k3[,k4,k5,k6[,s1..s4]]]), '
            f'got {d.size}')
    if d.size == 14:
        if np.any(d[12:] != 0):
            raise ValueError('tilted-sensor distortion (tauX, tauY) is not supported')
        d = d[:12]
    if not np.all(np.isfinite(d)):
        raise ValueError(f'distortion coefficients must be finite, got {d.tolist()}')
    return np.pad(d, (0, 12 - d.size))


def distort_normalized(xy: np.ndarray, coeffs12: np.ndarray, model: str = 'opencv') -> np.ndarray:
    """Apply lens distortion to normalised image coordinates ``xy`` (= X/Z, Y/Z), shape ``[..., 2]``."""
    xy = np.asarray(xy, dtype=np.float64)
    d = coeffs12
    if not np.any(d):
        return xy.copy()
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    if model == 'fisheye':
        r = np.sqrt(r2)
        theta = np.arctan(r)
        t2 = theta * theta
        theta_d = theta * (1 + t2 * (d[0] + t2 * (d[1] + t2 * (d[2] + t2 * d[3]))))
        scale = np.where(r > 1e-12, theta_d / np.maximum(r, 1e-12), 1.0)
        return xy * scale[..., np.newaxis]
    k1, k2, p1, p2, k3, k4, k5, k6, s1, s2, s3, s4 = d
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) + s1 * r2 + s2 * r2 * r2
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y + s3 * r2 + s4 * r2 * r2
    return np.stack([xd, yd], axis=-1)


UNDISTORTION_METHODS = ('converged', 'official')
#: fixed-point iterations of the official MeTRAbs box-point undistortion (``warping.undistort_points``)
OFFICIAL_UNDISTORT_ITERATIONS = 5


def check_undistortion_method(method: str) -> str:
    """``method`` if it is one of :data:`UNDISTORTION_METHODS`, else ValueError listing them."""
    if method not in UNDISTORTION_METHODS:
        raise ValueError(f'unknown undistortion method {method!r}; valid: {", ".join(UNDISTORTION_METHODS)}')
    return method


def undistort_normalized_official(xy_distorted: np.ndarray, coeffs12: np.ndarray) -> np.ndarray:
    """The official MeTRAbs inverse of the OpenCV model: 5 fixed-point steps ``x = (x_d - tangential(x)) /
    radial(x)`` from ``x = x_d``, without a convergence test (the official TF and PyTorch ``undistort_points``).

    Agrees with the converged solution for mild distortion; for strong distortion near or past the image border
    it stops short (0.1-2 px for k1 = -0.28 at the border). Non-finite values are passed through, as there.
    """
    xy_d = np.asarray(xy_distorted, dtype=np.float64)
    d = np.asarray(coeffs12, dtype=np.float64)
    if not np.any(d):
        return xy_d.copy()
    k1, k2, p1, p2, k3, k4, k5, k6, s1, s2, s3, s4 = d
    xy = xy_d.copy()
    with np.errstate(all='ignore'):
        for _ in range(OFFICIAL_UNDISTORT_ITERATIONS):
            x, y = xy[..., 0], xy[..., 1]
            r2 = x * x + y * y
            radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
            dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x) + s1 * r2 + s2 * r2 * r2
            dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y + s3 * r2 + s4 * r2 * r2
            xy = np.stack([(xy_d[..., 0] - dx) / radial, (xy_d[..., 1] - dy) / radial], axis=-1)
    return xy


def undistort_normalized(xy_distorted: np.ndarray, coeffs12: np.ndarray, model: str = 'opencv',
                         iterations: int = 20, method: str = 'converged') -> np.ndarray:
    """Invert :func:`distort_normalized`.

    ``method='converged'`` (default): the OpenCV model starts with OpenCV's fixed-point update
    ``x = (x_d - tangential(x)) / radial(x)`` and is then refined by Newton steps (the fixed point alone oscillates
    or stops short for strong barrel lenses near the edge of the image); the fisheye model uses Newton iterations on
    ``theta_d(theta)``. Where the distortion polynomial is not invertible (outside the lens' valid field of view)
    the closest point found is returned.

    ``method='official'``: the OpenCV model is inverted exactly as the official MeTRAbs code does
    (:func:`undistort_normalized_official`, 5 fixed-point steps, not converged for strong distortion); the official
    code has no fisheye model, so fisheye lenses use the converged solver in both methods.
    """
    check_undistortion_method(method)
    xy_d = np.asarray(xy_distorted, dtype=np.float64)
    d = coeffs12
    if not np.any(d):
        return xy_d.copy()
    if method == 'official' and model != 'fisheye':
        return undistort_normalized_official(xy_d, d)
    if model == 'fisheye':
        theta_d = np.linalg.norm(xy_d, axis=-1)
        theta_d = np.minimum(theta_d, np.pi / 2)
        theta = theta_d.copy()
        for _ in range(iterations):
            t2 = theta * theta
            poly = 1 + t2 * (d[0] + t2 * (d[1] + t2 * (d[2] + t2 * d[3])))
            dpoly = 1 + t2 * (3 * d[0] + t2 * (5 * d[1] + t2 * (7 * d[2] + t2 * 9 * d[3])))
            theta = theta - (theta * poly - theta_d) / np.where(np.abs(dpoly) > 1e-12, dpoly, 1e-12)
        scale = np.where(theta_d > 1e-12, np.tan(theta) / np.maximum(theta_d, 1e-12), 1.0)
        return xy_d * scale[..., np.newaxis]
    k1, k2, p1, p2, k3, k4, k5, k6, s1, s2, s3, s4 = d
    xy = xy_d.copy()
    for _ in range(min(iterations, 8)):   # fixed-point start (OpenCV's scheme)
        x, y = xy[..., 0], xy[..., 1]
        r2 = x * x + y * y
        inv_radial = (1 + r2 * (k4 + r2 * (k5 + r2 * k6))) / (1 + r2 * (k1 + r2 * (k2 + r2 * k3)))
        dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x) + s1 * r2 + s2 * r2 * r2
        dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y + s3 * r2 + s4 * r2 * r2
        candidate = np.stack([(xy_d[..., 0] - dx) * inv_radial, (xy_d[..., 1] - dy) * inv_radial], axis=-1)
        xy = np.where(np.isfinite(candidate), candidate, xy)
    # Newton refinement with a finite-difference Jacobian: converges where the fixed point oscillates (strong
    # barrel distortion near the edge of the valid field of view). Keeps the better of old/new per point.
    eps = 1e-7
    for _ in range(iterations):
        residual = distort_normalized(xy, d, model) - xy_d
        jx = (distort_normalized(xy + [eps, 0.0], d, model) - distort_normalized(xy - [eps, 0.0], d, model)) / (2 * eps)
        jy = (distort_normalized(xy + [0.0, eps], d, model) - distort_normalized(xy - [0.0, eps], d, model)) / (2 * eps)
        det = jx[..., 0] * jy[..., 1] - jy[..., 0] * jx[..., 1]
        safe = np.abs(det) > 1e-12
        det = np.where(safe, det, 1.0)
        step_x = (jy[..., 1] * residual[..., 0] - jy[..., 0] * residual[..., 1]) / det
        step_y = (-jx[..., 1] * residual[..., 0] + jx[..., 0] * residual[..., 1]) / det
        candidate = xy - np.where(safe[..., None], np.stack([step_x, step_y], -1), 0.0)
        better = (np.linalg.norm(distort_normalized(candidate, d, model) - xy_d, axis=-1)
                  < np.linalg.norm(residual, axis=-1))
        xy = np.where(better[..., None], candidate, xy)
        if not np.any(better):
            break
    return xy


@dataclasses.dataclass(frozen=True, eq=False)
class CameraModel:
    """A calibrated camera: intrinsic matrix (pixels) plus lens distortion.

    Build it with :meth:`create` (from K or a field-of-view guess) or :meth:`from_camera_info` (ROS).
    """

    intrinsic_matrix: np.ndarray
    distortion_coeffs: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(12))
    distortion_model: str = 'opencv'

    def __post_init__(self):
        K = np.asarray(self.intrinsic_matrix, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f'intrinsic matrix must be 3x3, got shape {K.shape}')
        if not np.all(np.isfinite(K)):
            raise ValueError(f'intrinsic matrix contains NaN or inf: {K.tolist()}')
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f'focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}')
        if K[1, 0] != 0 or K[2, 0] != 0 or K[2, 1] != 0 or K[2, 2] != 1:
            raise ValueError(f'intrinsic matrix must be upper triangular with K[2,2]=1, got {K.tolist()}')
        if self.distortion_model not in DISTORTION_MODELS:
            raise ValueError(f'unknown distortion model {self.distortion_model!r}; valid: {DISTORTION_MODELS}')
        object.__setattr__(self, 'intrinsic_matrix', K)
        object.__setattr__(
            self, 'distortion_coeffs', _pad_coeffs(self.distortion_coeffs, self.distortion_model))

    @staticmethod
    def create(intrinsic_matrix=None, distortion_coeffs=None, distortion_model: str = 'opencv',
               image_hw: Optional[Sequence[int]] = None, fov_degrees: float = 55.0) -> 'CameraModel':
        """Camera from an explicit ``K`` or, when ``intrinsic_matrix`` is None, from ``fov_degrees`` and the image
        size (the official API's UNKNOWN intrinsics)."""
        if intrinsic_matrix is None:
            if image_hw is None:
                raise ValueError('either intrinsic_matrix or image_hw (for the FOV fallback) is required')
            intrinsic_matrix = intrinsics_from_fov(fov_degrees, image_hw)
        else:
            intrinsic_matrix = np.asarray(intrinsic_matrix, dtype=np.float64)
            if intrinsic_matrix.size == 9:
                intrinsic_matrix = intrinsic_matrix.reshape(3, 3)
        return CameraModel(intrinsic_matrix, distortion_coeffs, distortion_model)

    @staticmethod
    def from_camera_info(k, d, distortion_model: str, image_hw=None, p=None,
                         rectified: bool = False) -> 'CameraModel':
        """Camera from ROS ``sensor_msgs/CameraInfo`` fields.

        Args:
          k: the 9 row-major values of ``K`` (raw image).
          d: distortion coefficients ``D`` of the raw image.
          distortion_model: ``plumb_bob``, ``rational_polynomial`` or ``equidistant``.
          image_hw: (height, width) of CameraInfo, only for validation.
          p: the 12 row-major values of the projection matrix ``P``.
          rectified: the image is rectified: use ``P[:3,:3]`` and no distortion.
        """
        if rectified:
            if p is None or np.asarray(p).size != 12:
                raise ValueError('rectified images need a 12-element projection matrix P')
            P = np.asarray(p, dtype=np.float64).reshape(3, 4)
            return CameraModel(P[:, :3].copy(), None, 'opencv')
        k = np.asarray(k, dtype=np.float64)
        if k.size != 9:
            raise ValueError(f'CameraInfo.k must have 9 elements, got {k.size}')
        model = _ROS_DISTORTION_MODELS.get(str(distortion_model).lower())
        if model is None:
            raise ValueError(
                f'unsupported distortion model {distortion_model!r}; '
                f'supported: plumb_bob, rational_polynomial, equidistant')
        if image_hw is not None and (int(image_hw[0]) <= 0 or int(image_hw[1]) <= 0):
            raise ValueError(f'CameraInfo image size must be positive, got {tuple(image_hw)}')
        return CameraModel(k.reshape(3, 3), np.asarray(d, dtype=np.float64), model)

    # --- properties ---------------------------------------------------------------------------------------
    @property
    def is_distorted(self) -> bool:
        return bool(np.any(self.distortion_coeffs))

    @property
    def model_id(self) -> float:
        """0.0 for the OpenCV model, 1.0 for fisheye (the ``distortion_model`` input of the pose graph)."""
        return 1.0 if self.distortion_model == 'fisheye' else 0.0

    def scaled(self, factor: float) -> 'CameraModel':
        """The same camera for an image resized by ``factor`` (pixel-centre convention)."""
        S = np.array([[factor, 0, (factor - 1) / 2], [0, factor, (factor - 1) / 2], [0, 0, 1]])
        return CameraModel(S @ self.intrinsic_matrix, self.distortion_coeffs, self.distortion_model)

    # --- geometry ------------------------------------------------------------------------------------------
    def distort_normalized(self, xy: np.ndarray) -> np.ndarray:
        return distort_normalized(xy, self.distortion_coeffs, self.distortion_model)

    def undistort_normalized(self, xy: np.ndarray, iterations: int = 20, method: str = 'converged') -> np.ndarray:
        return undistort_normalized(xy, self.distortion_coeffs, self.distortion_model, iterations, method)

    def project_px(self, points_cam: np.ndarray) -> np.ndarray:
        """Project camera-frame 3D points ``[..., 3]`` to (distorted) pixel coordinates ``[..., 2]``.

        Points at or behind the camera plane (z <= 0) give NaN.
        """
        points = np.asarray(points_cam, dtype=np.float64)
        z = points[..., 2:3]
        with np.errstate(divide='ignore', invalid='ignore'):
            xy = np.where(z > 0, points[..., :2] / z, np.nan)
        xy = self.distort_normalized(xy)
        K = self.intrinsic_matrix
        return np.stack([K[0, 0] * xy[..., 0] + K[0, 1] * xy[..., 1] + K[0, 2],
                         K[1, 1] * xy[..., 1] + K[1, 2]], axis=-1)

    def pixels_to_rays(self, pixels: np.ndarray, method: str = 'converged') -> np.ndarray:
        """Back-project (distorted) pixels ``[..., 2]`` to undistorted rays ``[..., 3]`` with z = 1.

        ``method``: ``converged`` (default) or ``official`` (5 fixed-point steps, see :func:`undistort_normalized`).
        """
        px = np.asarray(pixels, dtype=np.float64)
        K = self.intrinsic_matrix
        y_d = (px[..., 1] - K[1, 2]) / K[1, 1]
        x_d = (px[..., 0] - K[0, 2] - K[0, 1] * y_d) / K[0, 0]
        xy = self.undistort_normalized(np.stack([x_d, y_d], axis=-1), method=method)
        return np.concatenate([xy, np.ones_like(xy[..., :1])], axis=-1)

    def back_project_mm(self, pixels: np.ndarray, depth_mm: np.ndarray) -> np.ndarray:
        """3D points at depth ``depth_mm`` (z, not range) along the rays of ``pixels``."""
        return self.pixels_to_rays(pixels) * np.asarray(depth_mm, dtype=np.float64)[..., np.newaxis]
