"""Lifting head: 2D heatmaps read off real-image keypoint features, 3D from a small network that lifts the 2D
skeleton (plus whole-crop context) to metric, root-relative 3D. Config `model.head: lifting`.

Why not the volumetric MeTRAbs head here: with MoveNet's trunk and pyramid frozen (training them on synthetic renders
wrecked their real-image keypoints within 100 steps: PCK vs a real-image teacher on vtest 0.85 → 0.58,
docs/training.md §6), a 1×1 head on fixed local features cannot move heatmap mass away from where the joint appears
in the image, but a MeTRAbs volume needs exactly that — its x/y are metric (crop span ≈ 1.0–1.8 m at the person's
depth in our data, not the cube's 2.2 m) and its depth comes from the whole body. 2D joint positions look the same
in renders and in photos, so a lifter learnt on synthetic people transfers; the image features stay MoveNet's.

  coords2d_px      soft-argmax of a 1×1 conv on the first `keypoint_channels` features (MoveNet's keypoint
                   channels; started from its keypoint logits, train_pose model.head_init), mapped to crop px as the
                   MeTRAbs head does (heads.heatmap_to_image_px)
  coords3d_rel_mm  base + lifter(u, context): base = ((coords2d_px − res/2)·base_span_mm/res, 0), the image-aligned
                   skeleton at a typical scale; u = the 2D joints normalised to the crop (detached: the 3D loss
                   does not move the 2D maps), context = the mean over the map of the remaining feature channels
                   (MoveNetFPN's context branch); the lifter's last layer starts at zero, so step 0 = the base.
  centre_prior     optional fixed logit penalty centre_prior · d² (d: distance from the crop centre in half crop
                   sides) against a neighbour's keypoints in the same map; chosen on synthetic validation crops
                   (docs/training.md §6), 0 = off.
Outputs in float32 (the conv and the lifter may run in float16: PoseGraph.set_compute_dtype); same call signature and attributes (num_points, resolution, stride, depth_cube_mm,
with_uncertainty) as heads.MetrabsHead, so PoseGraph, export and the runtime contract do not change.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from metrabs_ros.training.heads import heatmap_to_image_px, soft_argmax_2d


class LiftingHead(nn.Module):
    def __init__(self, in_channels: int, num_points: int, resolution: int, stride: int = 4,
                 keypoint_channels: int = 96, hidden: int = 1024, base_span_mm: float = 1900.0,
                 offset_px: float | None = None, centre_prior: float = 0.0):
        super().__init__()
        if not 0 < keypoint_channels <= in_channels:
            raise ValueError(f'keypoint_channels {keypoint_channels} must be in 1..{in_channels}')
        self.num_points = int(num_points)
        self.resolution = int(resolution)
        self.stride = int(stride)
        self.offset_px = float(stride // 2) if offset_px is None else float(offset_px)
        self.keypoint_channels = int(keypoint_channels)
        self.context_channels = int(in_channels - keypoint_channels)
        self.base_span_mm = float(base_span_mm)
        self.depth_cube_mm = float(base_span_mm)     # export metadata: the metric scale of the base skeleton
        self.with_uncertainty = False
        self.centre_prior = float(centre_prior)
        self.conv = nn.Conv2d(keypoint_channels, num_points, kernel_size=1)
        self.lifter = nn.Sequential(
            nn.Linear(2 * num_points + self.context_channels, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 3 * num_points))
        nn.init.zeros_(self.lifter[-1].weight)
        nn.init.zeros_(self.lifter[-1].bias)

    def forward(self, features: torch.Tensor, lifter_input_px: torch.Tensor | None = None):
        """features [B, C, h, w] → (coords2d_px, coords3d_rel_mm, None). lifter_input_px [B, P, 2] (training only):
        2D joints the lifter reads instead of the predicted ones (train_pose feeds it noisy ground truth for a
        fraction of the crops, loss.lifter_true_2d_fraction, so the lifter learns the 2D→3D mapping from clean
        skeletons as well as from its own maps' mistakes)."""
        # the 1x1 conv and the lifter run in their own dtype (float16 in an FP16 export), everything else in float32
        logits = self.conv(features[:, :self.keypoint_channels].to(self.conv.weight.dtype)).float()
        features = features.float()
        if self.centre_prior:
            logits = logits - self.centre_prior * self.centre_distance_sq(logits.shape[-2], logits.shape[-1])
        coords2d_px = heatmap_to_image_px(soft_argmax_2d(logits), self.resolution, self.stride, self.offset_px)
        lifter_px = coords2d_px
        if lifter_input_px is not None:   # NaN entries: that joint reads the prediction
            lifter_px = torch.where(torch.isnan(lifter_input_px), coords2d_px, lifter_input_px)
        centred_px = lifter_px - self.resolution / 2.0
        u = (centred_px / self.resolution).detach()
        inputs = [u.flatten(1)]
        if self.context_channels:
            inputs.append(features[:, self.keypoint_channels:].mean(dim=(2, 3)))
        lifter_in = torch.cat(inputs, dim=1).to(self.lifter[0].weight.dtype)
        delta_m = self.lifter(lifter_in).float().reshape(-1, self.num_points, 3)
        base_xy = centred_px.detach() * (self.base_span_mm / self.resolution)
        base = torch.cat([base_xy, torch.zeros_like(base_xy[..., :1])], dim=-1)
        return coords2d_px, base + 1000.0 * delta_m, None

    def centre_distance_sq(self, h: int, w: int) -> torch.Tensor:
        """[h, w] squared distance of each heatmap cell's crop pixel from the crop centre, in units of half the crop
        side (1 at the middle of an edge). The crop is centred on the detected person; a neighbour whose keypoints
        compete in the same map lies off-centre, and the prior (logit − centre_prior · d²) tilts each joint's
        soft-argmax towards the centred person, as MoveNet's own decoder weights keypoints by distance."""
        half = self.resolution / 2.0
        ys = heatmap_to_image_px(torch.linspace(0.0, 1.0, h), self.resolution, self.stride, self.offset_px)
        xs = heatmap_to_image_px(torch.linspace(0.0, 1.0, w), self.resolution, self.stride, self.offset_px)
        return ((ys[:, None] - half) / half) ** 2 + ((xs[None, :] - half) / half) ** 2
