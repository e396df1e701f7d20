"""Absolute 3D pose reconstruction, the heart of MeTRAbs.

The network predicts, per crop, 2D joint positions in crop pixels (from the 2D heatmaps) and metric 3D joint
offsets relative to an unknown reference point (from the volumetric heatmaps). The camera-frame translation of
that reference point is the least-squares solution that makes the 3D offsets project onto the 2D predictions.
"""

from __future__ import annotations

import numpy as np

from metrabs_ros.heatmap_decoding import DEFAULT_STRIDE


def is_within_fov(coords2d_px: np.ndarray, resolution: int, stride: int = DEFAULT_STRIDE,
                  border_factor: float = 0.75) -> np.ndarray:
    """Joints whose predicted crop pixel lies in ``[stride·b, res − stride·b]`` in both axes (``[24, res−24]``)."""
    lower = stride * border_factor
    upper = resolution - stride * border_factor
    coords = np.asarray(coords2d_px)
    return np.all((coords >= lower) & (coords <= upper), axis=-1)


def reconstruct_absolute(coords2d_px: np.ndarray, coords3d_rel_mm: np.ndarray, crop_intrinsics: np.ndarray,
                         resolution: int = 256, mix_3d_inside_fov: float = 0.5, stride: int = DEFAULT_STRIDE,
                         border_factor: float = 0.75, ridge: float = 1e-2) -> np.ndarray:
    """Absolute camera-frame 3D joints from 2D crop-pixel predictions and root-relative metric 3D predictions.

    Args:
      coords2d_px: ``[B, J, 2]`` predicted joint positions in **crop pixels** (x = column, y = row; pixel centres
        at integers), i.e. what the 2D soft-argmax gives after :func:`heatmap_to_image_px`.
      coords3d_rel_mm: ``[B, J, 3]`` predicted 3D joint positions in **millimetres**, in the crop camera's frame
        (x right, y down, z forward along the crop's optical axis), relative to an unknown reference point (the
        volumetric soft-argmax after :func:`heatmap_to_metric_mm`). Only differences between joints matter.
      crop_intrinsics: ``[B, 3, 3]`` intrinsic matrix of each crop's virtual camera (pixels).
      resolution: crop side in pixels (defines the validity box).
      mix_3d_inside_fov: weight of the 3D-based estimate for joints inside the validity box (official 0.5).
      stride, border_factor: validity box ``[stride·border_factor, res − stride·border_factor]``.
      ridge: L2 regulariser on the normalised translation (official 1e-2).

    Returns:
      ``[B, J, 3]`` absolute joint positions in millimetres in the crop camera's frame. (To get the original
      camera frame, multiply row vectors by the crop rotation: ``P_cam = P_crop @ R``.)

    Method (the official one): with ``(u_j, v_j)`` the normalised image coordinates ``K⁻¹·[x_j, 1]`` and
    ``(X_j, Y_j, Z_j)`` the relative 3D joints, the translation ``t`` solves the weighted ridge least squares
    ``[1, 0, −u_j]·t = u_j·Z_j − X_j``, ``[0, 1, −v_j]·t = v_j·Z_j − Y_j`` with row weights ``valid_j + 1e-4``,
    after scaling the ``u, v`` column and the right-hand side by their RMS over the whole batch. Every joint takes
    part (no special root). Inside the validity box a joint's output mixes ``r_j + t`` with the back-projection
    of its 2D prediction at depth ``Z_j + t_z``; outside it is ``r_j + t``.
    """
    coords2d = np.asarray(coords2d_px, dtype=np.float64)
    rel = np.asarray(coords3d_rel_mm, dtype=np.float64)
    K = np.asarray(crop_intrinsics, dtype=np.float64)
    homog = np.concatenate([coords2d, np.ones_like(coords2d[..., :1])], axis=-1)
    normalized = np.einsum('bij,bkj->bki', np.linalg.inv(K), homog)[..., :2]       # [B, J, 2]
    valid = is_within_fov(coords2d, resolution, stride, border_factor)              # [B, J]

    # Whole-batch RMS conditioning, as in the official code.
    scale2d = np.sqrt(np.mean(np.square(normalized)))
    rhs = normalized * rel[..., 2:] - rel[..., :2]                                   # [B, J, 2]
    scale_rhs = np.sqrt(np.mean(np.square(rhs)))
    scale2d = scale2d if scale2d > 0 else 1.0
    scale_rhs = scale_rhs if scale_rhs > 0 else 1.0
    uv = normalized / scale2d
    b = rhs / scale_rhs
    w2 = np.square(valid.astype(np.float64) + 1e-4)                                 # squared row weights

    # Normal equations (A^T W^2 A + ridge I) t = A^T W^2 b, rows [1,0,-u] and [0,1,-v].
    sw = w2.sum(-1)
    AtA = np.zeros(coords2d.shape[:1] + (3, 3))
    AtA[:, 0, 0] = AtA[:, 1, 1] = sw
    AtA[:, 0, 2] = AtA[:, 2, 0] = -(w2 * uv[..., 0]).sum(-1)
    AtA[:, 1, 2] = AtA[:, 2, 1] = -(w2 * uv[..., 1]).sum(-1)
    AtA[:, 2, 2] = (w2 * np.square(uv).sum(-1)).sum(-1)
    AtA += ridge * np.eye(3)
    Atb = np.stack([(w2 * b[..., 0]).sum(-1), (w2 * b[..., 1]).sum(-1),
                    -(w2 * (uv * b).sum(-1)).sum(-1)], axis=-1)
    t_scaled = np.linalg.solve(AtA, Atb[..., np.newaxis])[..., 0]
    t = np.stack([t_scaled[:, 0] * scale_rhs, t_scaled[:, 1] * scale_rhs,
                  t_scaled[:, 2] * scale_rhs / scale2d], axis=-1)                   # [B, 3] mm

    abs_3d_based = rel + t[:, np.newaxis]
    depth = rel[..., 2] + t[:, np.newaxis, 2]
    abs_2d_based = np.concatenate([normalized, np.ones_like(normalized[..., :1])], -1) * depth[..., np.newaxis]
    mixed = mix_3d_inside_fov * abs_3d_based + (1 - mix_3d_inside_fov) * abs_2d_based
    return np.where(valid[..., np.newaxis], mixed, abs_3d_based)
