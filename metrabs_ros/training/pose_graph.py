"""The pose model graph of docs/model_contract.md §1 as one torch module.

image + camera + per-crop geometry → warp (all P·A crops at once) → backbone → MeTRAbs head → absolute
reconstruction in each crop's own camera → left/right swap for mirrored crops → back-rotation to the camera
frame → poses3d_aug_mm [P, A, J, 3] (mm, camera frame) and optionally uncertainty_aug [P, A, J] (mm).
"""
from typing import Sequence

import torch
import torch.nn as nn

from metrabs_ros.skeletons import mirror_permutation
from metrabs_ros.training.absolute_pose import reconstruct_absolute
from metrabs_ros.training.heads import MetrabsHead
from metrabs_ros.training.warp import warp_crops

INPUT_NAMES = ('image', 'intrinsics', 'distortion_coeffs', 'distortion_model', 'crop_rotations',
               'crop_intrinsics', 'pyramid_levels', 'aug_gammas', 'aug_flips')
POSES_OUTPUT = 'poses3d_aug_mm'
UNCERTAINTY_OUTPUT = 'uncertainty_aug'


class PoseGraph(nn.Module):
    """Contract-level pose model.

    Args:
      backbone: crops [N, 3, res, res] in [0, 1] → features [N, C, res/32, res/32].
      head: MetrabsHead with num_points == len(joint_names).
      joint_names: raw joint order of the outputs (left/right mirroring by the l/r name prefix).
      resolution: crop side in px.
      mix_3d_inside_fov, border_factor, ridge: reconstruction constants (official 0.5, 0.75, 1e-2).
    forward(image uint8 [H,W,3], intrinsics [3,3], distortion_coeffs [12], distortion_model [1],
            crop_rotations [P,A,3,3], crop_intrinsics [P,A,3,3], pyramid_levels int32 [P,A], aug_gammas [A],
            aug_flips [A]) → poses3d_aug_mm [P,A,J,3] (, uncertainty_aug [P,A,J] when the head has one).
    P ≥ 1 and A ≥ 1: with no boxes, callers skip the model (P = 0 fails in ONNX Runtime's MatMul).
    """

    def __init__(self, backbone: nn.Module, head: MetrabsHead, joint_names: Sequence[str], resolution: int,
                 mix_3d_inside_fov: float = 0.5, border_factor: float = 0.75, ridge: float = 1e-2):
        super().__init__()
        if head.num_points != len(joint_names):
            raise ValueError(f'head predicts {head.num_points} points but {len(joint_names)} joint names given')
        if head.resolution != resolution:
            raise ValueError(f'head resolution {head.resolution} != graph resolution {resolution}')
        self.backbone = backbone
        self.head = head
        self.joint_names = tuple(joint_names)
        self.resolution = int(resolution)
        self.mix_3d_inside_fov = mix_3d_inside_fov
        self.border_factor = border_factor
        self.ridge = ridge
        perm = torch.as_tensor(mirror_permutation(self.joint_names), dtype=torch.int64)
        self.register_buffer('mirror_perm', perm, persistent=False)

    @property
    def with_uncertainty(self) -> bool:
        return bool(self.head.with_uncertainty)

    @property
    def output_names(self) -> tuple:
        return (POSES_OUTPUT, UNCERTAINTY_OUTPUT) if self.with_uncertainty else (POSES_OUTPUT,)

    def warp(self, image, intrinsics, distortion_coeffs, distortion_model, crop_rotations, crop_intrinsics,
             pyramid_levels, aug_gammas) -> torch.Tensor:
        """Crops [P·A, 3, res, res] in [0, 1] (person-major: crop index p·A + a)."""
        gammas = torch.zeros_like(crop_rotations[..., 0, 0]) + aug_gammas.to(crop_rotations.dtype)  # [P, A]
        return warp_crops(image, intrinsics, distortion_coeffs, distortion_model,
                          crop_rotations.reshape(-1, 3, 3), crop_intrinsics.reshape(-1, 3, 3),
                          pyramid_levels.reshape(-1), gammas.reshape(-1), self.resolution)

    def crop_poses(self, crops: torch.Tensor, crop_intrinsics_flat: torch.Tensor):
        """crops [N,3,res,res] → (absolute poses [N,J,3] mm in each crop's camera frame, uncertainty [N,J] | None)."""
        coords2d_px, coords3d_rel_mm, uncertainty = self.head(self.backbone(crops))
        poses = reconstruct_absolute(
            coords2d_px, coords3d_rel_mm, crop_intrinsics_flat, resolution=self.resolution,
            mix_3d_inside_fov=self.mix_3d_inside_fov, stride=self.head.stride,
            border_factor=self.border_factor, ridge=self.ridge)
        return poses, uncertainty

    def to_camera(self, poses_crop_mm: torch.Tensor, uncertainty, crop_rotations: torch.Tensor,
                  aug_flips: torch.Tensor):
        """Swap left/right joints of mirrored crops, rotate to the camera frame, reshape to [P, A, J, ...]."""
        num_aug = aug_flips.shape[0]
        num_joints = len(self.joint_names)
        flips = (torch.zeros_like(crop_rotations[..., 0, 0]) + aug_flips.to(crop_rotations.dtype)) > 0.5
        flips = flips.reshape(-1, 1, 1)  # [N,1,1]
        swapped = poses_crop_mm.index_select(1, self.mirror_perm)
        poses = torch.where(flips, swapped, poses_crop_mm)
        poses_cam = torch.matmul(poses, crop_rotations.reshape(-1, 3, 3))  # row vectors: P_cam = P_crop @ R
        poses_cam = poses_cam.reshape(-1, num_aug, num_joints, 3)
        if uncertainty is None:
            return poses_cam, None
        unc = torch.where(flips[..., 0], uncertainty.index_select(1, self.mirror_perm), uncertainty)
        return poses_cam, unc.reshape(-1, num_aug, num_joints)

    def forward(self, image, intrinsics, distortion_coeffs, distortion_model, crop_rotations, crop_intrinsics,
                pyramid_levels, aug_gammas, aug_flips):
        crops = self.warp(image, intrinsics, distortion_coeffs, distortion_model, crop_rotations,
                          crop_intrinsics, pyramid_levels, aug_gammas)
        poses_crop, uncertainty = self.crop_poses(crops, crop_intrinsics.reshape(-1, 3, 3))
        poses, uncertainty = self.to_camera(poses_crop, uncertainty, crop_rotations, aug_flips)
        if uncertainty is None:
            return poses
        return poses, uncertainty


def build_pose_graph(joint_names: Sequence[str], resolution: int = 256, backbone: nn.Module | None = None,
                     with_uncertainty: bool = False, depth_bins: int = 8, depth_cube_mm: float = 2200.0
                     ) -> PoseGraph:
    """PoseGraph with a MeTRAbs head on `backbone` (default: the tiny test backbone, stride 32)."""
    from metrabs_ros.training.backbones import Backbone
    if backbone is None:
        backbone = Backbone(out_channels=96, stride=32)
    head = MetrabsHead(backbone.out_channels, len(joint_names), resolution, depth_bins=depth_bins,
                       stride=backbone.stride, depth_cube_mm=depth_cube_mm, with_uncertainty=with_uncertainty)
    return PoseGraph(backbone, head, joint_names, resolution)
