"""MeTRAbs training losses (paper, T-BIOM 2021 and the official training code; reference metrabs.md §6).

All inputs live in one crop's camera frame (x right, y down, z forward), 3D in millimetres, 2D in crop pixels.
`joint_valid` [B, J] bool marks the joints a sample labels (datasets label different subsets); every loss is a
masked mean over labelled entries, 0 for a batch that labels none.

  relative_l1_m    mean-centred L1 in metres: both poses centred on the mean of the sample's labelled joints
                   (no root joint), mean |Δ| over labelled joints and the 3 axes.
  absolute_l1_m    L1 in metres on the absolute (reconstructed) pose, x and y weighted 2, z 1, only joints whose
                   true depth exceeds 300 mm: mean over those joints of (2|Δx| + 2|Δy| + |Δz|) / 3.
  projection_l1    L1 of the 2D heatmap prediction on joints whose true projection lies inside the crop, in
                   units of the metric cube: |Δpx| · (cube_mm / 1000) / res (as the official code), mean over
                   those joints and the 2 axes.
  acae_consistency_loss   |P − P·W| with W = W_enc·W_dec of an ACAE over the model's joints (WACV'23 consistency
                   regulariser): 3D in metres (mean over joints and axes) + 2D in cube metres per px as above.
  skeleton_size_l1_m   |size(pred) − size(true)| in metres (size: mean distance of the labelled joints from their
                   mean), optional (LossSchedule.size_weight, default 0).
  metrabs_loss     relative + w_abs(step) · absolute + projection (+ size_weight · size), with w_abs = 0 before step
                   5000, 0.1 after;
                   the absolute pose uses weak-perspective reconstruction for the first 500 steps.
"""
from dataclasses import dataclass
from typing import Dict, Sequence

import torch

from metrabs_ros.training.absolute_pose import reconstruct_absolute


@dataclass(frozen=True)
class LossSchedule:
    absolute_weight: float = 0.1
    absolute_start_step: int = 5000
    weak_perspective_steps: int = 500
    min_depth_mm: float = 300.0
    absolute_xyz_weights: Sequence[float] = (2.0, 2.0, 1.0)
    depth_cube_mm: float = 2200.0
    size_weight: float = 0.0

    def absolute_weight_at(self, step: int) -> float:
        return self.absolute_weight if step >= self.absolute_start_step else 0.0

    def weak_perspective_at(self, step: int) -> bool:
        return step < self.weak_perspective_steps


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` [B, J, C] over the entries where mask [B, J] is True (all C entries of a masked joint);
    0 when nothing is masked in."""
    w = mask.to(values.dtype).unsqueeze(-1).expand_as(values)
    return (values * w).sum() / w.sum().clamp_min(1.0)


def _centre(points: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    w = mask.to(points.dtype).unsqueeze(-1)
    mean = (points * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1.0)
    return points - mean


def relative_l1_m(pred_mm: torch.Tensor, true_mm: torch.Tensor, joint_valid: torch.Tensor) -> torch.Tensor:
    """Mean-centred L1 (m): [B, J, 3] poses (any common offset), centred on the labelled joints' mean."""
    diff_m = torch.abs(_centre(pred_mm, joint_valid) - _centre(true_mm, joint_valid)) / 1000.0
    return masked_mean(diff_m, joint_valid)


def skeleton_size_l1_m(pred_mm: torch.Tensor, true_mm: torch.Tensor, joint_valid: torch.Tensor) -> torch.Tensor:
    """|size(pred) − size(true)| (m), mean over samples with ≥ 2 labelled joints; size = mean distance of the
    labelled joints from their mean. Per-joint L1 under uncertainty pulls limbs towards the body (a shrunken
    skeleton, hence a too-near absolute pose); this term penalises only the overall scale."""
    w = joint_valid.to(pred_mm.dtype)
    count = w.sum(1)

    def size(points):
        centred = _centre(points, joint_valid)
        return (torch.linalg.vector_norm(centred, dim=-1) * w).sum(1) / count.clamp_min(1.0)

    ok = (count >= 2).to(pred_mm.dtype)
    return (torch.abs(size(pred_mm) - size(true_mm)) / 1000.0 * ok).sum() / ok.sum().clamp_min(1.0)


def absolute_l1_m(pred_mm: torch.Tensor, true_mm: torch.Tensor, joint_valid: torch.Tensor,
                  min_depth_mm: float = 300.0, xyz_weights: Sequence[float] = (2.0, 2.0, 1.0)) -> torch.Tensor:
    """Weighted absolute L1 (m) over labelled joints with true z > min_depth_mm: mean_j Σ_c w_c|Δ_c| / 3."""
    mask = joint_valid & (true_mm[..., 2] > min_depth_mm)
    weights = torch.as_tensor(xyz_weights, dtype=pred_mm.dtype, device=pred_mm.device)
    diff_m = torch.abs(pred_mm - true_mm) * weights / 1000.0
    return masked_mean(diff_m, mask)


def project_px(points_mm: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """[B, J, 3] camera-frame points → [B, J, 2] pixels with [B, 3, 3] intrinsics (no distortion: crops are
    undistorted by construction)."""
    z = points_mm[..., 2:].clamp_min(1e-3)
    xy1 = torch.cat([points_mm[..., :2] / z, torch.ones_like(z)], dim=-1)
    return torch.matmul(xy1, intrinsics.transpose(1, 2))[..., :2]


def projection_l1(pred_px: torch.Tensor, true_px: torch.Tensor, joint_valid: torch.Tensor, resolution: int,
                  depth_cube_mm: float = 2200.0) -> torch.Tensor:
    """2D L1 on labelled joints whose true projection lies in the crop [0, res−1]², in cube metres per px."""
    inside = ((true_px >= 0) & (true_px <= resolution - 1)).all(-1)
    scale = depth_cube_mm / 1000.0 / resolution
    return masked_mean(torch.abs(pred_px - true_px) * scale, joint_valid & inside)


def acae_consistency_loss(coords2d_px: torch.Tensor, coords3d_rel_mm: torch.Tensor, consistency: torch.Tensor,
                          resolution: int, depth_cube_mm: float = 2200.0) -> torch.Tensor:
    """Distance of the predicted joints (all formats, [B, J, 2] px and [B, J, 3] mm) from their ACAE
    reconstruction (consistency [J, J], columns summing to 1): predictions that the autoencoder cannot reproduce
    are inconsistent between formats."""
    recon3d = torch.einsum('bjc,jk->bkc', coords3d_rel_mm, consistency)
    recon2d = torch.einsum('bjc,jk->bkc', coords2d_px, consistency)
    scale = depth_cube_mm / 1000.0 / resolution
    return (torch.mean(torch.abs(recon3d - coords3d_rel_mm)) / 1000.0
            + torch.mean(torch.abs(recon2d - coords2d_px)) * scale)


def metrabs_loss(coords2d_px: torch.Tensor, coords3d_rel_mm: torch.Tensor, crop_intrinsics: torch.Tensor,
                 true_mm: torch.Tensor, joint_valid: torch.Tensor, step: int, resolution: int,
                 schedule: LossSchedule = LossSchedule(), stride: int = 32) -> Dict[str, torch.Tensor]:
    """The MeTRAbs objective for one batch of crops.

    coords2d_px [B, J, 2], coords3d_rel_mm [B, J, 3]: the head's outputs; crop_intrinsics [B, 3, 3];
    true_mm [B, J, 3]: ground truth in the crop camera frame (mm); joint_valid [B, J] bool; step: training step.
    Returns {'relative', 'absolute', 'projection', 'total'} (scalars; 'absolute' is reported even while its
    weight is 0).
    """
    joint_valid = joint_valid.bool()
    true_px = project_px(true_mm, crop_intrinsics)
    abs_pred = reconstruct_absolute(coords2d_px, coords3d_rel_mm, crop_intrinsics, resolution=resolution,
                                    stride=stride, weak_perspective=schedule.weak_perspective_at(step))
    losses = {
        'relative': relative_l1_m(coords3d_rel_mm, true_mm, joint_valid),
        'absolute': absolute_l1_m(abs_pred, true_mm, joint_valid, schedule.min_depth_mm,
                                  schedule.absolute_xyz_weights),
        'projection': projection_l1(coords2d_px, true_px, joint_valid, resolution, schedule.depth_cube_mm),
    }
    losses['total'] = (losses['relative'] + schedule.absolute_weight_at(step) * losses['absolute']
                       + losses['projection'])
    if schedule.size_weight:
        losses['size'] = skeleton_size_l1_m(coords3d_rel_mm, true_mm, joint_valid)
        losses['total'] = losses['total'] + schedule.size_weight * losses['size']
    return losses
