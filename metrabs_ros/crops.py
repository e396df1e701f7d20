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
from metrabs_ros.camera import CameraModel, check_undistortion_method

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
                           resolution: int, undistortion: str = 'converged'):
    """Look-at rotation ``R0 [P,3,3]`` and zoom ``scale [P]`` that make each box fill a ``resolution`` crop.

    The box centre and the midpoints of its four sides are undistorted to rays; ``R0`` looks at the centre ray;
    the side midpoints are reprojected through ``K · R0`` and the larger of the vertical and horizontal extents
    is mapped to ``resolution`` pixels.

    undistortion: ``converged`` (default) solves the lens model for the 5 box points to float precision;
      ``official`` uses the official MeTRAbs 5 fixed-point steps (``camera.undistort_normalized_official``), which
      stop short for strong distortion near or past the image border. Either way, a box is flagged invalid (NaN
      rays) when the converged solver finds a box point outside the lens' invertible field of view.
    """
    boxes = np.asarray(boxes_xywh_px, dtype=np.float64).reshape(-1, 4)
    x, y, w, h = boxes.T
    points_px = np.stack([
        np.stack([x + w / 2, y + h / 2], 1),   # centre
        np.stack([x + w / 2, y], 1),           # top
        np.stack([x + w, y + h / 2], 1),       # right
        np.stack([x + w / 2, y + h], 1),       # bottom
        np.stack([x, y + h / 2], 1)], 1)       # left
    check_undistortion_method(undistortion)
    rays = camera.pixels_to_rays(points_px)                        # [P, 5, 3]
    if camera.is_distorted:
        # Box points outside the lens' invertible field of view have no exact ray: mark such boxes invalid.
        residual = np.linalg.norm(camera.project_px(rays) - points_px, axis=-1).max(axis=-1)
        if undistortion == 'official':
            rays = camera.pixels_to_rays(points_px, method='official')
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
                  tta: TTAParams, antialias_factor: int = 1, undistortion: str = 'converged') -> CropGeometry:
    """Crop rotations, crop intrinsics and pyramid levels for every box and augmentation.

    Args:
      boxes_xywh_px: ``[P, 4]`` boxes (x, y, width, height) in pixels of the (distorted) image.
      camera: the image's camera.
      up_vector_cam: ``[3]`` world up direction expressed in the camera frame.
      resolution: crop side in pixels (the model's ``input_resolution``).
      tta: :func:`metrabs_ros.augmentation.tta_parameters` output.
      antialias_factor: supersampling factor ``f`` of the pose graph (docs/model_contract.md): the graph renders
        each crop at ``f · resolution`` and average-pools ``f × f``, so the pyramid level is the one for that larger
        render, ``clip(floor(-log2(scale · aug_scale · f)), 0, 2)`` (as the official code chooses it). It must be
        the graph's own factor (metadata ``antialias_factor``).
      undistortion: ``converged`` or ``official`` box-point undistortion (see :func:`box_rotation_and_scale`).
    """
    if int(antialias_factor) != antialias_factor or antialias_factor < 1:
        raise ValueError(f'antialias_factor must be an integer >= 1, got {antialias_factor}')
    R0, box_scales = box_rotation_and_scale(boxes_xywh_px, camera, up_vector_cam, resolution, undistortion)
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
                          resolution: int, antialias_factor: int = 1) -> np.ndarray:
    """Reference implementation of the warp: the image pixel that each crop pixel samples, ``[res, res, 2]``.

    Crop pixel ``q = (column, row)`` looks along ``R^T · K_crop^-1 · [q, 1]`` in the camera frame; that ray is
    distorted and projected with the image's ``K``. Rays behind the camera give NaN.
    With ``antialias_factor`` f > 1 the grid is the supersampled one, ``[f·res, f·res, 2]``: sample ``Q`` of the
    larger render sits at crop coordinate ``(Q + 0.5) / f - 0.5``, so each f × f block averages to crop pixel ``q``.
    """
    f = int(antialias_factor)
    coords = np.arange(resolution * f, dtype=np.float64)
    if f > 1:
        coords = (coords + 0.5) / f - 0.5
    cols, rows = np.meshgrid(coords, coords, indexing='xy')
    q = np.stack([cols, rows, np.ones_like(cols)], axis=-1)
    M = np.asarray(rotation, np.float64).T @ np.linalg.inv(np.asarray(crop_intrinsics, np.float64))
    rays = q @ M.T
    return camera.project_px(rays)


def sampling_window_px(camera: CameraModel, geometry: CropGeometry, resolution: int, image_hw,
                       samples_per_edge: int = 16, align: int = 4):
    """The part of the image that the crops of ``geometry`` can sample: ``(x0, y0, x1, y1)`` integer pixel bounds
    (half-open), or None when it is (nearly) the whole image.

    Feeding the pose graph ``image[y0:y1, x0:x1]`` with the principal point shifted by ``(-x0, -y0)`` gives the
    same crops as the full frame while the graph's full-frame work (gamma LUT, anti-aliasing pyramid) shrinks to
    the window. The window contains the projection of each crop's border (the outer edge of its pixels, which
    also covers the samples of a supersampled graph; sampled ``samples_per_edge`` times per edge, so curved
    borders of distorted lenses are covered), widened by the bilinear footprint of the coarsest
    pyramid level in use, and its origin is a multiple of ``align`` (= 2^(levels-1)) so that the 2×2 pyramid blocks
    stay aligned with those of the full frame.
    """
    height, width = int(image_hw[0]), int(image_hw[1])
    # The border of the crop pixels' footprint (-0.5 .. res - 0.5): supersampled graphs (antialias_factor > 1)
    # sample up to half a crop pixel beyond the outermost pixel centres.
    t = np.linspace(-0.5, resolution - 0.5, samples_per_edge)
    last = np.full_like(t, resolution - 0.5)
    first = np.full_like(t, -0.5)
    border = np.concatenate([np.stack([t, first], 1), np.stack([t, last], 1),
                             np.stack([first, t], 1), np.stack([last, t], 1)])             # [S, 2] crop px
    border_h = np.concatenate([border, np.ones((len(border), 1))], axis=1)
    M = np.linalg.inv(geometry.intrinsics.astype(np.float64) @ geometry.rotations.astype(np.float64))  # [P,A,3,3]
    rays = np.einsum('paij,sj->pasi', M, border_h)
    if np.any(rays[..., 2] <= 0):
        return None   # a crop looks partly behind the camera: keep the whole frame
    pixels = camera.project_px(rays)
    if not np.all(np.isfinite(pixels)):
        return None
    margin = 2.0 * 2 ** int(geometry.pyramid_levels.max()) + 2.0
    lo = np.floor(pixels.reshape(-1, 2).min(0) - margin)
    hi = np.ceil(pixels.reshape(-1, 2).max(0) + margin) + 1
    x0 = int(np.clip(lo[0], 0, width)) // align * align
    y0 = int(np.clip(lo[1], 0, height)) // align * align
    x1 = int(np.clip(hi[0], 0, width))
    y1 = int(np.clip(hi[1], 0, height))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return (0, 0, min(width, align), min(height, align))   # nothing visible: a tiny window samples zeros
    if (x1 - x0) * (y1 - y0) > 0.8 * width * height:
        return None
    return x0, y0, x1, y1
