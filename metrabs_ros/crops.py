"""Perspective-correct crops: the per-box geometry that the pose graph's warp consumes.

For every box, a virtual camera is rotated to look at the box centre (look-at rotation ``R0``), zoomed so the box
fills the crop, then rotated in-plane / mirrored / zoomed per test-time augmentation. The crop of augmentation
``a`` has intrinsics ``K_crop`` and rotation ``R = F_a · Rz(-θ_a) · R0`` (camera → crop, column vectors): a
camera-frame point ``X`` appears in the crop at ``K_crop · R · X``. Everything here is a handful of 3×3
matrices per box; the per-pixel warp happens inside the ONNX graph (docs/model_contract.md).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from metrabs_ros.augmentation import TTAParams
from metrabs_ros.camera import CameraModel

NUM_PYRAMID_LEVELS = 3


def lookat_rotation(forward: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Rotation matrices whose rows are the new x, y, z axes: z along ``forward``, x = z × up, y = z × x.

    Args:
      forward: ``[N, 3]`` viewing directions (camera frame, any length).
      up: ``[3]`` or ``[N, 3]`` up vector in the camera frame (``(0, -1, 0)`` for an upright camera).
    Returns:
      ``[N, 3, 3]``; when ``forward`` is parallel to ``up``, x falls back to ``z × e`` with ``e`` the coordinate
      axis least aligned with z (the official fallback, z rotated about y, degenerates when z is along y).
    """
    forward = np.asarray(forward, dtype=np.float64)
    new_z = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    up = np.broadcast_to(np.asarray(up, dtype=np.float64), new_z.shape)
    new_x = np.cross(new_z, up)
    least_aligned_axis = np.eye(3)[np.argmin(np.abs(new_z), axis=-1)]
    fallback = np.cross(new_z, least_aligned_axis)
    norm = np.linalg.norm(new_x, axis=-1, keepdims=True)
    new_x = np.where(norm < 1e-12, fallback, new_x)
    new_x = new_x / np.linalg.norm(new_x, axis=-1, keepdims=True)
    new_y = np.cross(new_z, new_x)
    return np.stack([new_x, new_y, new_z], axis=1)


@dataclasses.dataclass(frozen=True, eq=False)
class CropGeometry:
    """Per crop (person ``p``, augmentation ``a``) matrices for the pose graph."""
    rotations: np.ndarray       # float32 [P, A, 3, 3]  camera -> crop rotation R
    intrinsics: np.ndarray      # float32 [P, A, 3, 3]  crop intrinsics K_crop (pixels of the res x res crop)
    pyramid_levels: np.ndarray  # int32   [P, A]        anti-aliasing pyramid level (0, 1, 2)
    box_scales: np.ndarray      # float64 [P]           crop pixels per image pixel before augmentation zoom


def box_rotation_and_scale(boxes_xywh_px: np.ndarray, camera: CameraModel, up_vector_cam,
                           resolution: int):
    """Look-at rotation ``R0 [P,3,3]`` and zoom ``scale [P]`` that make each box fill a ``resolution`` crop.

    The box centre and the midpoints of its four sides are undistorted to rays; ``R0`` looks at the centre ray;
    the side midpoints are reprojected through ``K · R0`` and the larger of the vertical and horizontal extents
    is mapped to ``resolution`` pixels.
    """
    boxes = np.asarray(boxes_xywh_px, dtype=np.float64).reshape(-1, 4)
    x, y, w, h = boxes.T
    points_px = np.stack([
        np.stack([x + w / 2, y + h / 2], 1),   # centre
        np.stack([x + w / 2, y], 1),           # top
        np.stack([x + w, y + h / 2], 1),       # right
        np.stack([x + w / 2, y + h], 1),       # bottom
        np.stack([x, y + h / 2], 1)], 1)       # left
    rays = camera.pixels_to_rays(points_px)                        # [P, 5, 3]
    if camera.is_distorted:
        # Box points outside the lens' invertible field of view have no exact ray: mark such boxes invalid.
        residual = np.linalg.norm(camera.project_px(rays) - points_px, axis=-1).max(axis=-1)
        rays[residual > 1.0] = np.nan
    R0 = lookat_rotation(rays[:, 0], up_vector_cam)                # [P, 3, 3]
    side = np.einsum('pij,pkj->pki', camera.intrinsic_matrix @ R0, rays[:, 1:])
    side = side[..., :2] / side[..., 2:]
    vertical = np.linalg.norm(side[:, 0] - side[:, 2], axis=-1)
    horizontal = np.linalg.norm(side[:, 1] - side[:, 3], axis=-1)
    size = np.maximum(vertical, horizontal)
    with np.errstate(divide='ignore', invalid='ignore'):
        scale = resolution / size
    return R0, scale


def valid_boxes(geometry: 'CropGeometry') -> np.ndarray:
    """``[P]`` bool: boxes whose crop geometry is finite (False e.g. for a box reaching beyond the invertible
    field of view of a strongly distorted lens, or a degenerate box)."""
    return (np.isfinite(geometry.box_scales) & (geometry.box_scales > 0)
            & np.all(np.isfinite(geometry.rotations), axis=(1, 2, 3)))


def crop_geometry(boxes_xywh_px: np.ndarray, camera: CameraModel, up_vector_cam, resolution: int,
                  tta: TTAParams, antialias_factor: float = 1.0) -> CropGeometry:
    """Crop rotations, crop intrinsics and pyramid levels for every box and augmentation.

    Args:
      boxes_xywh_px: ``[P, 4]`` boxes (x, y, width, height) in pixels of the (distorted) image.
      camera: the image's camera.
      up_vector_cam: ``[3]`` world up direction expressed in the camera frame.
      resolution: crop side in pixels (the model's ``input_resolution``).
      tta: :func:`metrabs_ros.augmentation.tta_parameters` output.
      antialias_factor: official parameter; here it biases the pyramid level choice
        ``clip(floor(-log2(scale · aug_scale · antialias_factor)), 0, 2)``.
    """
    R0, box_scales = box_rotation_and_scale(boxes_xywh_px, camera, up_vector_cam, resolution)
    num_boxes = len(box_scales)
    crop_scales = box_scales[:, np.newaxis] * tta.scales[np.newaxis, :]          # [P, A]
    K = camera.intrinsic_matrix
    crop_K = np.zeros((num_boxes, tta.num_aug, 3, 3))
    crop_K[..., :2, :2] = K[:2, :2] * crop_scales[..., np.newaxis, np.newaxis]
    crop_K[..., :2, 2] = resolution / 2.0
    crop_K[..., 2, 2] = 1.0
    rotations = np.einsum('aij,pjk->paik', tta.rotflip_matrices, R0)
    with np.errstate(divide='ignore', invalid='ignore'):
        levels = np.floor(-np.log2(crop_scales * antialias_factor))
    levels = np.clip(np.nan_to_num(levels, nan=0.0), 0, NUM_PYRAMID_LEVELS - 1).astype(np.int32)
    return CropGeometry(rotations.astype(np.float32), crop_K.astype(np.float32), levels, box_scales)


def crop_sampling_grid_px(camera: CameraModel, rotation: np.ndarray, crop_intrinsics: np.ndarray,
                          resolution: int) -> np.ndarray:
    """Reference implementation of the warp: the image pixel that each crop pixel samples, ``[res, res, 2]``.

    Crop pixel ``q = (column, row)`` looks along ``R^T · K_crop^-1 · [q, 1]`` in the camera frame; that ray is
    distorted and projected with the image's ``K``. Rays behind the camera give NaN.
    """
    cols, rows = np.meshgrid(np.arange(resolution, dtype=np.float64),
                             np.arange(resolution, dtype=np.float64), indexing='xy')
    q = np.stack([cols, rows, np.ones_like(cols)], axis=-1)
    M = np.asarray(rotation, np.float64).T @ np.linalg.inv(np.asarray(crop_intrinsics, np.float64))
    rays = q @ M.T
    return camera.project_px(rays)
