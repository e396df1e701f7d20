"""Perspective-correct, distortion-aware crop warp of all people × augmentations at once (torch, ONNX-exportable).

Frames and units (docs/model_contract.md): image pixels with the centre of the top-left pixel at (0, 0), x = column;
camera frame x right, y down, z forward; `R` maps camera to crop coordinates (`p_crop = R @ p_cam`).

Crop pixel `q` (integer grid 0..res-1) samples the image at `K · distort(π(R.T · K_crop⁻¹ · [q, 1]))`; at
pyramid level `l` that point becomes `x / 2^l + (1 / 2^l − 1) / 2`. Rays with z ≤ 0 (behind the camera) sample
zeros.

Anti-aliasing by supersampling (`antialias_factor` f, fixed when the graph is built/exported): the crop is rendered
at f·res, sample `Q` at crop coordinate `(Q + 0.5) / f − 0.5`, from the pyramid level chosen for that larger
render, and average-pooled f × f in linear light (before the gamma re-encoding) — the official MeTRAbs scheme
(`corner_aligned_scale_mat(1/f)`, then `avg_pool2d(f)`). f = 1 is the plain warp.
"""
import torch
import torch.nn.functional as F

from metrabs_ros.training.matrix3 import inv3

NUM_PYRAMID_LEVELS = 3
GAMMA_LINEAR = 2.2
# Pixel coordinate (at any level) used for rays that must sample zeros: far enough outside for bilinear weights
# to vanish, small enough to stay exact in float32 / int64 conversions inside GridSample implementations.
_OUTSIDE_PX = -16.0
# |x/z| and |y/z| are clamped to this before distortion so that the polynomials cannot overflow float32
# (1e3 is 89.94° off-axis, beyond any pinhole-like camera).
_MAX_NORMALIZED = 1e3


def gamma_lookup_table() -> torch.Tensor:
    """float32 [256]: (v / 255)^2.2 for every uint8 value v."""
    return torch.pow(torch.arange(256, dtype=torch.float32) * (1.0 / 255.0), GAMMA_LINEAR)


def linearize_gamma(image_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 RGB [H, W, 3] → linear-light float32 [1, 3, H, W] = (x / 255)^2.2.

    A 256-entry lookup table (one Gather in ONNX) instead of a per-pixel pow: exact (the table holds the same
    float32 values) and several times cheaper on the full frame. The channel-first transpose runs on the uint8
    image (a quarter of the bytes of the float image)."""
    chw = image_uint8.permute(2, 0, 1).to(torch.int32)
    return gamma_lookup_table()[chw].unsqueeze(0)


def build_pyramid(image_lin: torch.Tensor, num_levels: int = NUM_PYRAMID_LEVELS) -> list[torch.Tensor]:
    """2×2 average-pooled pyramid of a [1, C, H, W] image; level l has size floor(H/2^l) × floor(W/2^l)."""
    levels = [image_lin]
    for _ in range(1, num_levels):
        levels.append(F.avg_pool2d(levels[-1], kernel_size=2, stride=2))
    return levels


def distort_normalized(xy: torch.Tensor, distortion_coeffs: torch.Tensor,
                       distortion_model: torch.Tensor) -> torch.Tensor:
    """Apply lens distortion to normalised image coordinates xy [..., 2] (x/z, y/z).

    distortion_coeffs [12]: OpenCV k1,k2,p1,p2,k3,k4,k5,k6,s1,s2,s3,s4 (model 0) or fisheye k1..k4 + zeros
    (model 1). distortion_model [1] float: 0 = OpenCV rational/tangential/thin prism, 1 = equidistant fisheye.
    Both models are evaluated and selected with torch.where (so both live in an exported graph).
    """
    d = distortion_coeffs.to(xy.dtype)
    k1, k2, p1, p2, k3, k4, k5, k6, s1, s2, s3, s4 = d.unbind(0)
    x = xy[..., 0]
    y = xy[..., 1]
    r2 = x * x + y * y

    # OpenCV: x' = x·(1+k1r²+k2r⁴+k3r⁶)/(1+k4r²+k5r⁴+k6r⁶) + 2p1xy + p2(r²+2x²) + s1r² + s2r⁴, y' likewise.
    radial = (((k3 * r2 + k2) * r2 + k1) * r2 + 1.0) / (((k6 * r2 + k5) * r2 + k4) * r2 + 1.0)
    xy2 = 2.0 * x * y
    x_cv = x * radial + p1 * xy2 + p2 * (r2 + 2.0 * x * x) + (s2 * r2 + s1) * r2
    y_cv = y * radial + p2 * xy2 + p1 * (r2 + 2.0 * y * y) + (s4 * r2 + s3) * r2

    # Equidistant fisheye: θ = atan(r), θ_d = θ(1 + k1θ² + k2θ⁴ + k3θ⁶ + k4θ⁸), xy' = xy·θ_d/r.
    # r is clamped away from 0 (no Where on the full grid): for r < 1e-8, atan(r)/r = 1 in float32.
    r = torch.sqrt(r2).clamp_min(1e-8)
    theta = torch.atan(r)
    t2 = theta * theta
    f1, f2, f3, f4 = k1, k2, p1, p2  # fisheye k1..k4 occupy the first four slots
    theta_d = theta * ((((f4 * t2 + f3) * t2 + f2) * t2 + f1) * t2 + 1.0)
    fish_scale = theta_d / r
    x_fe = x * fish_scale
    y_fe = y * fish_scale

    is_fisheye = distortion_model.to(xy.dtype).reshape(()) > 0.5
    return torch.stack([torch.where(is_fisheye, x_fe, x_cv), torch.where(is_fisheye, y_fe, y_cv)], dim=-1)


def crop_pixel_grid(resolution: int, dtype=torch.float32, antialias_factor: int = 1) -> torch.Tensor:
    """Homogeneous crop pixel coordinates [res, res, 3]: (column, row, 1).

    antialias_factor f > 1: the supersampling grid [f·res, f·res, 3] of crop coordinates (Q + 0.5) / f − 0.5."""
    f = int(antialias_factor)
    coords = torch.arange(resolution * f, dtype=dtype)
    if f > 1:
        coords = (coords + 0.5) * (1.0 / f) - 0.5
    ys, xs = torch.meshgrid(coords, coords, indexing='ij')
    return torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)


def crop_sampling_grid_px(intrinsics: torch.Tensor, distortion_coeffs: torch.Tensor,
                          distortion_model: torch.Tensor, crop_rotations: torch.Tensor,
                          crop_intrinsics: torch.Tensor, resolution: int,
                          antialias_factor: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-resolution image pixel sampled by every crop pixel.

    intrinsics [3,3] px; crop_rotations / crop_intrinsics [N,3,3]. Returns (points_px [N, S, S, 2] as (x, y),
    valid [N, S, S] bool: False where the ray points behind the camera (z ≤ 0) — those must sample zeros), with
    S = antialias_factor · res (the supersampling grid of crop_pixel_grid).
    """
    dtype = crop_rotations.dtype
    side = resolution * int(antialias_factor)
    # Ray directions in the camera frame for each crop pixel: R.T · K_crop⁻¹ · [q, 1] (column vectors).
    backproj = crop_rotations.transpose(1, 2) @ inv3(crop_intrinsics.to(dtype))  # [N,3,3]
    q = crop_pixel_grid(resolution, dtype, antialias_factor).reshape(1, side * side, 3)
    rays = torch.matmul(q, backproj.transpose(1, 2)).reshape(-1, side, side, 3)  # [N,S,S,3]
    z = rays[..., 2]
    ray_norm = torch.sqrt((rays * rays).sum(-1))
    valid = z > 1e-6 * ray_norm
    z_safe = torch.where(valid, z, torch.ones_like(z))
    xy = rays[..., :2] / z_safe.unsqueeze(-1)
    xy = torch.clamp(xy, -_MAX_NORMALIZED, _MAX_NORMALIZED)
    xy_d = distort_normalized(xy, distortion_coeffs, distortion_model)
    k = intrinsics.to(dtype)
    px_x = k[0, 0] * xy_d[..., 0] + k[0, 1] * xy_d[..., 1] + k[0, 2]
    px_y = k[1, 0] * xy_d[..., 0] + k[1, 1] * xy_d[..., 1] + k[1, 2]
    return torch.stack([px_x, px_y], dim=-1), valid


def level_coordinates_px(points_px: torch.Tensor, level: int) -> torch.Tensor:
    """Full-resolution pixel coordinates → coordinates at pyramid level l: x / 2^l + (1 / 2^l − 1) / 2."""
    f = 1.0 / (2 ** level)
    return points_px * f + (f - 1.0) / 2.0


def pyramid_atlas(levels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pack the 3 pyramid levels [1, C, H_l, W_l] into one zero-padded image so that a single GridSample serves
    every crop whatever its level.

    Layout: level 0 at (0, 0); level 1 at x = W + 2, y = 0; level 2 at x = W + 2, y = H_1 + 2; at least one row /
    column of zeros separates the levels and follows the last pixel of each, so bilinear sampling within one pixel
    outside a level reads zeros exactly as GridSample's zero padding on that level alone would.
    Returns (atlas [1, C, H + 3, W + 2 + W_1 + 1], offsets_px [3, 2] (x, y), sizes_px [3, 2] (W_l, H_l)).
    """
    l0, l1, l2 = levels
    h, w = l0.shape[2], l0.shape[3]
    h1, w1 = l1.shape[2], l1.shape[3]
    h2, w2 = l2.shape[2], l2.shape[3]
    right = torch.cat([F.pad(l1, (0, 1, 0, 2)), F.pad(l2, (0, 1 + w1 - w2, 0, 0))], dim=2)  # [H1 + 2 + H2, W1 + 1]
    right = F.pad(right, (0, 0, 0, h + 3 - (h1 + 2 + h2)))
    atlas = torch.cat([F.pad(l0, (0, 2, 0, 3)), right], dim=3)
    as_float = lambda v: torch.as_tensor(v, dtype=l0.dtype)  # noqa: E731  (traced shape values stay dynamic)
    zero = as_float(0)
    offsets = torch.stack([torch.stack([zero, zero]), torch.stack([as_float(w + 2), zero]),
                           torch.stack([as_float(w + 2), as_float(h1 + 2)])])
    sizes = torch.stack([torch.stack([as_float(w), as_float(h)]), torch.stack([as_float(w1), as_float(h1)]),
                         torch.stack([as_float(w2), as_float(h2)])])
    return atlas, offsets, sizes


def warp_crops(image_uint8: torch.Tensor, intrinsics: torch.Tensor, distortion_coeffs: torch.Tensor,
               distortion_model: torch.Tensor, crop_rotations: torch.Tensor, crop_intrinsics: torch.Tensor,
               pyramid_levels: torch.Tensor, crop_gammas: torch.Tensor, resolution: int,
               antialias_factor: int = 1) -> torch.Tensor:
    """Warp N = P·A crops out of one frame.

    image_uint8 [H, W, 3] RGB; intrinsics [3,3] px; distortion_coeffs [12]; distortion_model [1];
    crop_rotations, crop_intrinsics [N,3,3]; pyramid_levels int [N] (0..2); crop_gammas [N].
    Returns crops [N, 3, res, res] float32 in [0, 1], gamma-encoded with crop = linear^(gamma/2.2).
    antialias_factor f (a Python int: a constant of the exported graph): render each crop at f·res and
    average-pool f × f in linear light; pyramid_levels must then be the levels chosen for the f·res render.

    One GridSample covers all crops and levels: the pyramid is packed into one atlas image (pyramid_atlas), each
    crop's sampling points are mapped to its level (selected by exact one-hot weights) and offset into the atlas;
    points that cannot touch their level (and rays behind the camera) are sent outside the atlas (zeros). The N
    grids are stacked along the height of a batch-1 grid [1, N·res, res, 2], so the image is never copied per crop.
    """
    f = int(antialias_factor)
    if f < 1:
        raise ValueError(f'antialias_factor must be an integer >= 1, got {antialias_factor}')
    side = resolution * f
    points_px, valid = crop_sampling_grid_px(
        intrinsics, distortion_coeffs, distortion_model, crop_rotations, crop_intrinsics, resolution, f)
    levels = build_pyramid(linearize_gamma(image_uint8))
    atlas, offsets, sizes = pyramid_atlas(levels)
    dtype = points_px.dtype
    one_hot = (pyramid_levels.reshape(-1, 1) == torch.arange(NUM_PYRAMID_LEVELS).reshape(1, -1)).to(dtype)  # [N,3]
    factor = one_hot @ torch.tensor([1.0, 0.5, 0.25], dtype=dtype)                                      # [N]
    offset = (one_hot @ offsets).reshape(-1, 1, 1, 2)
    size = (one_hot @ sizes).reshape(-1, 1, 1, 2)
    factor = factor.reshape(-1, 1, 1, 1)
    pts = points_px * factor + (factor - 1.0) * 0.5          # level coordinates, x / 2^l + (1/2^l − 1) / 2
    inside = ((pts > -1.0) & (pts < size)).all(-1, keepdim=True) & valid.unsqueeze(-1)
    pts = torch.where(inside, pts + offset, torch.full_like(pts, _OUTSIDE_PX))
    height = atlas.shape[2]
    width = atlas.shape[3]
    # align_corners=True: -1 and +1 are the centres of the first and last pixel.
    scale = torch.stack([2.0 / (torch.as_tensor(width, dtype=dtype) - 1.0),
                         2.0 / (torch.as_tensor(height, dtype=dtype) - 1.0)])
    grid = (pts * scale - 1.0).reshape(1, -1, side, 2)  # [1, N·S, S, 2]
    sampled = F.grid_sample(atlas, grid, mode='bilinear', padding_mode='zeros', align_corners=True)
    if f > 1:
        # Each crop fills f·res rows of the stacked grid, so the f × f blocks never straddle two crops.
        sampled = F.avg_pool2d(sampled, kernel_size=f, stride=f)  # [1, 3, N·res, res]
    result = sampled.reshape(3, -1, resolution, resolution).transpose(0, 1)  # [N,3,res,res]
    exponent = (crop_gammas.to(result.dtype) / GAMMA_LINEAR).reshape(-1, 1, 1, 1)
    return torch.pow(torch.clamp(result, 0.0, 1.0), exponent)
