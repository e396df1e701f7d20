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
      head: MetrabsHead with num_points == len(joint_names), or == L when `latent_decoder` is given.
      joint_names: raw joint order of the outputs (left/right mirroring by the l/r name prefix).
      resolution: crop side in px.
      mix_3d_inside_fov, border_factor, ridge: reconstruction constants (official 0.5, 0.75, 1e-2).
      fov_offset_px: FOV-box offset of the reconstruction (0 for the centred stride; see is_within_fov).
      latent_decoder: optional [L, J] affine decoding matrix (ACAE; columns sum to 1): the head predicts L latent
        points, reconstructed in each crop's camera, and the joints are their affine combinations
        (joints_j = Σ_l latents_l · M[l, j]) before the left/right swap and back-rotation.
      antialias_factor: supersampling factor f of the warp (render each crop at f·res, average-pool f × f; see
        training.warp). A constant of the exported graph (metadata `antialias_factor`), not a learned parameter and
        not in the state dict: `set_antialias_factor` before export. Default 1 (no supersampling).
    Precision: `set_compute_dtype(torch.float16)` runs backbone and head convolution in float16; the warp inputs,
    the gamma maps, softmax / soft-argmax, the reconstruction and the 3×3 solve stay float32 (the casts are part
    of the module, so an exported graph carries them: a strongly typed FP16 ONNX graph).
    forward(image uint8 [H,W,3], intrinsics [3,3], distortion_coeffs [12], distortion_model [1],
            crop_rotations [P,A,3,3], crop_intrinsics [P,A,3,3], pyramid_levels int32 [P,A], aug_gammas [A],
            aug_flips [A]) → poses3d_aug_mm [P,A,J,3] (, uncertainty_aug [P,A,J] when the head has one).
    P ≥ 1 and A ≥ 1: with no boxes, callers skip the model (P = 0 fails in ONNX Runtime's MatMul).
    """

    def __init__(self, backbone: nn.Module, head: MetrabsHead, joint_names: Sequence[str], resolution: int,
                 mix_3d_inside_fov: float = 0.5, border_factor: float = 0.75, ridge: float = 1e-2,
                 fov_offset_px: float = 0.0, latent_decoder=None, antialias_factor: int = 1):
        super().__init__()
        if latent_decoder is not None:
            decoder = torch.as_tensor(latent_decoder, dtype=torch.float32)
            if decoder.ndim != 2 or decoder.shape != (head.num_points, len(joint_names)):
                raise ValueError(f'latent_decoder must be [{head.num_points}, {len(joint_names)}] (latent points × '
                                 f'joints), got {tuple(decoder.shape)}')
            if not torch.allclose(decoder.sum(0), torch.ones(len(joint_names)), atol=1e-4):
                raise ValueError('latent_decoder columns must sum to 1 (affine combinations)')
            self.register_buffer('latent_decoder', decoder)
        else:
            self.latent_decoder = None
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
        self.fov_offset_px = float(fov_offset_px)
        self.compute_dtype = torch.float32
        self.antialias_factor = 1
        self.set_antialias_factor(antialias_factor)
        perm = torch.as_tensor(mirror_permutation(self.joint_names), dtype=torch.int64)
        self.register_buffer('mirror_perm', perm, persistent=False)

    def set_compute_dtype(self, dtype: torch.dtype) -> 'PoseGraph':
        """Run backbone and head convolution in `dtype` (float32 or float16); the rest stays float32."""
        if dtype not in (torch.float32, torch.float16):
            raise ValueError(f'compute dtype must be float32 or float16, got {dtype}')
        self.backbone.to(dtype)
        self.head.to(dtype)
        self.compute_dtype = dtype
        return self

    def set_antialias_factor(self, factor: int) -> 'PoseGraph':
        """Supersample the crops f × f (integer f >= 1; 1 = plain warp). Costs f² times the warp's sampling work."""
        if isinstance(factor, bool) or int(factor) != factor or factor < 1:
            raise ValueError(f'antialias_factor must be an integer >= 1, got {factor!r}')
        self.antialias_factor = int(factor)
        return self

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
                          pyramid_levels.reshape(-1), gammas.reshape(-1), self.resolution,
                          self.antialias_factor)

    def decode_latents(self, points: torch.Tensor) -> torch.Tensor:
        """[N, L, C] latent points → [N, J, C] joints (affine combinations) when the graph has a latent decoder;
        other graphs return `points` unchanged."""
        if self.latent_decoder is None:
            return points
        return torch.einsum('nlc,lj->njc', points, self.latent_decoder.to(points.dtype))

    def crop_poses(self, crops: torch.Tensor, crop_intrinsics_flat: torch.Tensor):
        """crops [N,3,res,res] float32 in [0, 1] → (absolute poses [N,J,3] mm in each crop's camera frame,
        uncertainty [N,J] | None). Backbone and head conv run in `compute_dtype`, decoding in float32."""
        features = self.backbone(crops.to(self.compute_dtype))
        coords2d_px, coords3d_rel_mm, uncertainty = self.head(features)
        poses = reconstruct_absolute(
            coords2d_px, coords3d_rel_mm, crop_intrinsics_flat.to(torch.float32), resolution=self.resolution,
            mix_3d_inside_fov=self.mix_3d_inside_fov, stride=self.head.stride,
            border_factor=self.border_factor, ridge=self.ridge, fov_offset_px=self.fov_offset_px)
        if self.latent_decoder is not None:
            poses = torch.matmul(poses.transpose(1, 2), self.latent_decoder).transpose(1, 2)  # [N,J,3]
            if uncertainty is not None:
                uncertainty = torch.matmul(uncertainty, self.latent_decoder.abs())
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
                     with_uncertainty: bool = False, depth_bins: int = 8, depth_cube_mm: float = 2200.0,
                     latent_decoder=None, heatmap_offset_px: float | None = None, fov_offset_px: float = 0.0,
                     mix_3d_inside_fov: float = 0.5, head: str = 'metrabs',
                     head_options: dict | None = None) -> PoseGraph:
    """PoseGraph with a MeTRAbs head (or, head='lifting', the lifting head of metrabs_ros.training.lifting_head
    with `head_options`) on `backbone` (default: the tiny test backbone, stride 32).

    latent_decoder [L, J]: the head predicts L latent points decoded to the J joints (see PoseGraph)."""
    from metrabs_ros.training.backbones import Backbone
    if backbone is None:
        backbone = Backbone(kind='tiny', out_channels=96, stride=32)
    num_points = len(joint_names) if latent_decoder is None else int(torch.as_tensor(latent_decoder).shape[0])
    if head == 'lifting':
        from metrabs_ros.training.lifting_head import LiftingHead
        if with_uncertainty:
            raise ValueError('the lifting head has no uncertainty output')
        head_module = LiftingHead(backbone.out_channels, num_points, resolution, stride=backbone.stride,
                                  offset_px=heatmap_offset_px, **dict(head_options or {}))
    elif head == 'metrabs':
        head_module = MetrabsHead(backbone.out_channels, num_points, resolution, depth_bins=depth_bins,
                                  stride=backbone.stride, depth_cube_mm=depth_cube_mm,
                                  with_uncertainty=with_uncertainty, offset_px=heatmap_offset_px)
    else:
        raise ValueError(f"unknown head {head!r}; valid: metrabs, lifting")
    head = head_module
    return PoseGraph(backbone, head, joint_names, resolution, mix_3d_inside_fov=mix_3d_inside_fov,
                     fov_offset_px=fov_offset_px, latent_decoder=latent_decoder)
