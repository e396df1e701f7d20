"""MeTRAbs heatmap head: one 1×1 convolution, 2D and 3D soft-argmax and the official pixel / metric mappings.

Channel layout of the head output for P_pts points and D depth bins (default 8):
  channels [0, P_pts)                      2D logits of point j
  channel  P_pts + d·P_pts + j             3D logits of point j at depth bin d
  channels [P_pts·(1+D), P_pts·(2+D))      (optional) uncertainty logits of point j

Mappings (stride 32, centred stride; res = crop side in px):
  2D: px = u·L + stride/2 with L = (res−1) − ((res−1) mod stride)
  3D: X = (u·L + stride/2)·cube/res mm, Y likewise, Z = w·cube mm (cube = 2200 mm)
where u, w are expectations on 0..1 grids (linspace(0, 1, n)). Softmax and expectations run in float32.
"""
import torch
import torch.nn as nn


def unit_grid(n: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """linspace(0, 1, n); for n == 1 the midpoint 0.5 (as the official decoder)."""
    if n == 1:
        return torch.full((1,), 0.5, dtype=dtype, device=device)
    return torch.arange(n, dtype=dtype, device=device) / float(n - 1)


def soft_argmax_2d(logits: torch.Tensor) -> torch.Tensor:
    """logits [B, J, h, w] → expectations [B, J, 2] = (x along w, y along h) on 0..1 grids."""
    _, j, h, w = logits.shape
    logits = logits.float()
    probs = torch.softmax(logits.reshape(-1, j, h * w), dim=-1).reshape(-1, j, h, w)
    x = (probs.sum(2) * unit_grid(w, device=probs.device)).sum(-1)
    y = (probs.sum(3) * unit_grid(h, device=probs.device)).sum(-1)
    return torch.stack([x, y], dim=-1)


def soft_argmax_3d(logits: torch.Tensor) -> torch.Tensor:
    """logits [B, J, D, h, w] (softmax jointly over D·h·w) → expectations [B, J, 3] = (x, y, depth) on 0..1."""
    _, j, d, h, w = logits.shape
    logits = logits.float()
    probs = torch.softmax(logits.reshape(-1, j, d * h * w), dim=-1).reshape(-1, j, d, h, w)
    x = (probs.sum((2, 3)) * unit_grid(w, device=probs.device)).sum(-1)
    y = (probs.sum((2, 4)) * unit_grid(h, device=probs.device)).sum(-1)
    z = (probs.sum((3, 4)) * unit_grid(d, device=probs.device)).sum(-1)
    return torch.stack([x, y, z], dim=-1)


def last_receptive_center_px(resolution: int, stride: int = 32) -> int:
    """L = (res − 1) − ((res − 1) mod stride): 224 for 256 px, 352 for 384 px, 96 for 128 px."""
    return (resolution - 1) - ((resolution - 1) % stride)


def heatmap_to_image_px(coords01: torch.Tensor, resolution: int, stride: int = 32,
                        offset_px: float | None = None) -> torch.Tensor:
    """0..1 heatmap coordinates → crop pixels: u·L + offset (default offset stride/2, the centred stride).

    The official code adds stride/2 once for `centered_stride` and once more for `legacy_centered_stride_bug`
    (so 0, 16 or 32 px for stride 32)."""
    offset = float(stride // 2) if offset_px is None else float(offset_px)
    return coords01 * float(last_receptive_center_px(resolution, stride)) + offset


def heatmap_to_metric_mm(coords01_xyz: torch.Tensor, resolution: int, stride: int = 32,
                         depth_cube_mm: float = 2200.0, offset_px: float | None = None) -> torch.Tensor:
    """0..1 (x, y, depth) → relative metric coordinates in mm (crop camera axes, unknown common offset)."""
    xy_mm = heatmap_to_image_px(coords01_xyz[..., :2], resolution, stride, offset_px) * (depth_cube_mm / resolution)
    z_mm = coords01_xyz[..., 2:] * depth_cube_mm
    return torch.cat([xy_mm, z_mm], dim=-1)


class MetrabsHead(nn.Module):
    """1×1 conv + decoding. forward(features [B, C, h, w]) → (coords2d_px [B,J,2] crop px,
    coords3d_rel_mm [B,J,3], uncertainty_mm [B,J] or None).

    Uncertainty (optional, our extension, not in the official 28-dataset models): one extra channel per point;
    uncertainty_mm = 1000 · Σ_hw softmax2d_j · softplus(channel_j), i.e. the softplus map read out at the 2D
    heatmap's mass.
    offset_px: pixel offset of the heatmap-to-image mapping (default stride/2; see heatmap_to_image_px).
    The 1×1 conv may run in float16 (module.half()); decoding always runs in float32.
    """

    def __init__(self, in_channels: int, num_points: int, resolution: int, depth_bins: int = 8,
                 stride: int = 32, depth_cube_mm: float = 2200.0, with_uncertainty: bool = False,
                 offset_px: float | None = None):
        super().__init__()
        self.offset_px = float(stride // 2) if offset_px is None else float(offset_px)
        self.num_points = num_points
        self.resolution = resolution
        self.depth_bins = depth_bins
        self.stride = stride
        self.depth_cube_mm = depth_cube_mm
        self.with_uncertainty = with_uncertainty
        out_channels = num_points * (1 + depth_bins) + (num_points if with_uncertainty else 0)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, features: torch.Tensor):
        return self.decode(self.conv(features))

    def decode(self, logits: torch.Tensor):
        """Head output [B, C_out, h, w] (layout in the module docstring) → decoded coordinates."""
        j = self.num_points
        d = self.depth_bins
        _, _, h, w = logits.shape
        logits = logits.float()
        logits2d = logits[:, :j]
        logits3d = logits[:, j:j * (1 + d)].reshape(-1, d, j, h, w).transpose(1, 2)  # [B, J, D, h, w]
        coords2d_px = heatmap_to_image_px(soft_argmax_2d(logits2d), self.resolution, self.stride, self.offset_px)
        coords3d_mm = heatmap_to_metric_mm(
            soft_argmax_3d(logits3d), self.resolution, self.stride, self.depth_cube_mm, self.offset_px)
        uncertainty = None
        if self.with_uncertainty:
            probs2d = torch.softmax(logits2d.reshape(-1, j, h * w), dim=-1)
            unc_map = nn.functional.softplus(logits[:, j * (1 + d):j * (2 + d)].reshape(-1, j, h * w))
            uncertainty = 1000.0 * (probs2d * unc_map).sum(-1)
        return coords2d_px, coords3d_mm, uncertainty
