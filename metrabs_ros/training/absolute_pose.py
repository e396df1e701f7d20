"""Differentiable, ONNX/TensorRT-friendly MeTRAbs absolute pose reconstruction (torch).

Same algorithm as the numpy reference `metrabs_ros.absolute_pose.reconstruct_absolute` (docs: reference
metrabs.md §3): weighted ridge least squares for the unknown translation t of the relative 3D pose, conditioned
by batch-wide RMS scaling, solved through closed-form 3×3 normal equations (adjugate inverse, no torch.linalg), then
a 0.5 mix of the 3D-based and the 2D-back-projected result for joints predicted inside the field of view.
"""
import torch

from metrabs_ros.training.matrix3 import inv3


def is_within_fov(coords2d_px: torch.Tensor, resolution: int, stride: int = 32,
                  border_factor: float = 0.75, offset_px: float = 0.0) -> torch.Tensor:
    """[..., J, 2] crop px → bool [..., J]: both coordinates in [stride·bf, res − stride·bf] + offset_px.

    offset_px is 0 for the centred stride and −stride/2 for official configs with `centered_stride: false`."""
    lower = stride * border_factor + offset_px
    upper = resolution - stride * border_factor + offset_px
    inside = (coords2d_px >= lower) & (coords2d_px <= upper)
    return inside[..., 0] & inside[..., 1]


def reconstruct_absolute(coords2d_px: torch.Tensor, coords3d_rel_mm: torch.Tensor, crop_intrinsics: torch.Tensor,
                         resolution: int = 256, mix_3d_inside_fov: float = 0.5, stride: int = 32,
                         border_factor: float = 0.75, ridge: float = 1e-2, fov_offset_px: float = 0.0,
                         weak_perspective: bool = False) -> torch.Tensor:
    """Absolute 3D pose in the crop camera frame (mm).

    coords2d_px [B, J, 2]: predicted 2D joints in crop pixels; coords3d_rel_mm [B, J, 3]: relative 3D joints
    (crop camera axes, unknown offset); crop_intrinsics [B, 3, 3]. Returns [B, J, 3] mm.
    The RMS conditioning runs over the whole batch (as the official code), so crops of one call interact only
    through these two scalars. fov_offset_px: see is_within_fov. weak_perspective: estimate the translation from
    the 2D/3D spread of the in-FOV joints instead (used for the first training steps, when the full-perspective
    solve is still ill-conditioned); see weak_perspective_translation.
    """
    dtype = coords3d_rel_mm.dtype
    coords2d_px = coords2d_px.to(dtype)
    k_inv = inv3(crop_intrinsics.to(dtype))
    uv = (coords2d_px.unsqueeze(-2) * k_inv[:, None, :2, :2]).sum(-1) + k_inv[:, None, :2, 2]  # [B,J,2]
    valid = is_within_fov(coords2d_px, resolution, stride, border_factor, fov_offset_px)
    z_mm = coords3d_rel_mm[..., 2]
    if weak_perspective:
        t = weak_perspective_translation(uv, coords3d_rel_mm, valid)
    else:
        t = _full_perspective_translation(uv, coords3d_rel_mm, valid, ridge)
    abs_3d = coords3d_rel_mm + t.unsqueeze(1)
    depth = (z_mm + t[:, 2:3]).unsqueeze(-1)  # [B,J,1]
    abs_2d = torch.cat([uv, torch.ones_like(z_mm).unsqueeze(-1)], dim=-1) * depth
    mixed = mix_3d_inside_fov * abs_3d + (1.0 - mix_3d_inside_fov) * abs_2d
    return torch.where(valid.unsqueeze(-1), mixed, abs_3d)


def _masked_mean_and_spread(points: torch.Tensor, valid: torch.Tensor):
    """Mean over valid joints [B, 1, C] and spread sqrt(Σ_valid |p − mean|² / n_valid) [B, 1, 1] (official
    mean_stdev_masked); batches without valid joints give mean 0."""
    w = valid.to(points.dtype).unsqueeze(-1)  # [B,J,1]
    n = w.sum(1, keepdim=True)
    mean = (points * w).sum(1, keepdim=True) / n.clamp_min(1.0)
    sq = (torch.square(points - mean) * w).sum((1, 2), keepdim=True)
    spread = torch.sqrt(sq / n.clamp_min(1.0) + 1e-10)
    return mean, spread


def weak_perspective_translation(uv: torch.Tensor, coords3d_rel_mm: torch.Tensor, valid: torch.Tensor
                                 ) -> torch.Tensor:
    """Translation [B, 3] (mm) under weak perspective: the valid joints' normalised 2D spread s2 and metric xy
    spread s3 give depth s3/s2; t = [mean_uv, 1]·s3/s2 − mean_3d (means over valid joints)."""
    mean2d, spread2d = _masked_mean_and_spread(uv, valid)
    _, spread3d = _masked_mean_and_spread(coords3d_rel_mm[..., :2], valid)
    w = valid.to(uv.dtype).unsqueeze(-1)
    mean3d = (coords3d_rel_mm * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1.0)
    depth = spread3d.clamp_min(1e-5) / spread2d.clamp_min(1e-5)  # [B,1,1]
    new_mean = torch.cat([mean2d, torch.ones_like(mean2d[..., :1])], dim=-1) * depth
    return (new_mean - mean3d).squeeze(1)


def _full_perspective_translation(uv: torch.Tensor, coords3d_rel_mm: torch.Tensor, valid: torch.Tensor,
                                  ridge: float) -> torch.Tensor:
    """Weighted ridge least-squares translation [B, 3] (mm), batch-wide RMS conditioning (module docstring)."""
    dtype = coords3d_rel_mm.dtype
    z_mm = coords3d_rel_mm[..., 2]
    rhs = uv * z_mm.unsqueeze(-1) - coords3d_rel_mm[..., :2]  # rows: u·Z − X, v·Z − Y  [B,J,2]

    scale_uv = torch.sqrt(torch.mean(uv * uv))
    scale_rhs = torch.sqrt(torch.mean(rhs * rhs))
    scale_uv = torch.where(scale_uv > 0, scale_uv, torch.ones_like(scale_uv))  # degenerate input: no scaling
    scale_rhs = torch.where(scale_rhs > 0, scale_rhs, torch.ones_like(scale_rhs))
    uv_n = uv / scale_uv
    rhs_n = rhs / scale_rhs

    w2 = torch.square(valid.to(dtype) + 1e-4)  # row weights (valid + 1e-4), squared in the normal equations
    s_w = w2.sum(-1)
    s_u = (w2 * uv_n[..., 0]).sum(-1)
    s_v = (w2 * uv_n[..., 1]).sum(-1)
    s_uu = (w2 * (uv_n * uv_n).sum(-1)).sum(-1)
    zero = torch.zeros_like(s_w)
    normal = torch.stack([
        torch.stack([s_w + ridge, zero, -s_u], dim=-1),
        torch.stack([zero, s_w + ridge, -s_v], dim=-1),
        torch.stack([-s_u, -s_v, s_uu + ridge], dim=-1)], dim=-2)  # [B,3,3]
    rhs_vec = torch.stack([
        (w2 * rhs_n[..., 0]).sum(-1),
        (w2 * rhs_n[..., 1]).sum(-1),
        -(w2 * (uv_n * rhs_n).sum(-1)).sum(-1)], dim=-1)  # [B,3]
    t_n = (inv3(normal) * rhs_vec.unsqueeze(-2)).sum(-1)  # [B,3]
    return torch.stack([t_n[:, 0] * scale_rhs, t_n[:, 1] * scale_rhs, t_n[:, 2] * (scale_rhs / scale_uv)], dim=-1)
