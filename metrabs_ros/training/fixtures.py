"""Small, deterministic contract pose models for tests of the library, the CLI and the ROS node.

`make_random_pose_model` exports a PoseGraph with the tiny test backbone (random weights from `seed`). With
`pose_prior=True` (default) the head is set up so that every crop decodes to a plausible standing person filling
about 65 % of the crop, plus small image-dependent random perturbations (the backbone ends with two coordinate
channels; the head's weights on them place each joint's heatmap mass). Its outputs therefore have sane depths,
bone lengths and left/right symmetry, so the plausibility filter keeps them; they do NOT follow the image's
content (rotated crops give a person rotated with the crop). With `pose_prior=False` the head is purely random
(poses are degenerate, all joints close together).
"""
import json
import os
from typing import Sequence, Union

import numpy as np
import torch

from metrabs_ros.skeletons import get_skeleton
from metrabs_ros.training.backbones import TinyBackbone
from metrabs_ros.training.export import contract_metadata, export_pose_model, skeleton_entry
from metrabs_ros.training.heads import MetrabsHead, last_receptive_center_px
from metrabs_ros.training.pose_graph import PoseGraph

# Standing person facing the camera, pelvis at the origin, mm, camera-like axes (x right = the person's left,
# y down, z away from the camera). Unknown joint names fall back to the mid-spine point.
_TEMPLATE_MM = {
    'pelv': (0, 0, 0), 'spinebase': (0, 0, 0), 'spi1': (0, -100, 10), 'spi2': (0, -230, 20),
    'spin': (0, -230, 20), 'spinemid': (0, -230, 20), 'spi3': (0, -290, 20), 'thor': (0, -330, 10),
    'spi4': (0, -380, 10), 'spineshoulder': (0, -420, 0), 'neck': (0, -500, 0), 'head': (0, -600, -20),
    'htop': (0, -720, 0), 'nose': (0, -600, -100), 'leye': (30, -630, -80), 'reye': (-30, -630, -80),
    'lear': (70, -610, 0), 'rear': (-70, -610, 0), 'lcla': (70, -440, 0), 'rcla': (-70, -440, 0),
    'lsho': (170, -440, 0), 'rsho': (-170, -440, 0), 'lelb': (220, -200, 0), 'relb': (-220, -200, 0),
    'lwri': (250, 30, -30), 'rwri': (-250, 30, -30), 'lhan': (260, 110, -40), 'rhan': (-260, 110, -40),
    'lthu': (230, 90, -80), 'rthu': (-230, 90, -80), 'lfin': (265, 150, -40), 'rfin': (-265, 150, -40),
    'lhandtip': (265, 160, -40), 'rhandtip': (-265, 160, -40), 'lhip': (90, 30, 0), 'rhip': (-90, 30, 0),
    'lkne': (100, 440, -20), 'rkne': (-100, 440, -20), 'lank': (100, 850, 20), 'rank': (-100, 850, 20),
    'lfoo': (105, 900, -60), 'rfoo': (-105, 900, -60), 'ltoe': (110, 920, -100), 'rtoe': (-110, 920, -100),
}
_FALLBACK_MM = (0, -230, 20)
_PRIOR_SPAN = 0.65          # fraction of the crop side covered by the template's larger extent
_PRIOR_DEPTH_MM = 5000.0    # depth at which the template is imagined when building its 2D projection
_PERTURBATION_STD = 0.3     # std of the random, image-dependent part of every logit


def template_pose_mm(joint_names: Sequence[str]) -> np.ndarray:
    """[J, 3] standing template (mm) for the given joint names, centred on its bounding box."""
    pose = np.array([_TEMPLATE_MM.get(n, _FALLBACK_MM) for n in joint_names], np.float64)
    return pose - (pose.min(0) + pose.max(0)) / 2


def _tilt_for_mean(target01: np.ndarray, n: int) -> np.ndarray:
    """Slope a (per target) such that softmax(a·g) on g = linspace(0, 1, n) has expectation target01."""
    grid = np.linspace(0.0, 1.0, n) if n > 1 else np.array([0.5])
    lo = np.full(target01.shape, -200.0)
    hi = np.full(target01.shape, 200.0)
    for _ in range(80):
        mid = (lo + hi) / 2
        logits = mid[..., None] * grid
        p = np.exp(logits - logits.max(-1, keepdims=True))
        mean = (p * grid).sum(-1) / p.sum(-1)
        lo = np.where(mean < target01, mid, lo)
        hi = np.where(mean < target01, hi, mid)
    return (lo + hi) / 2


def _set_pose_prior(head: MetrabsHead, joint_names: Sequence[str], feature_std: float,
                    generator: torch.Generator) -> None:
    """Head weights: coordinate channels (last two inputs) place each joint at the template; the rest is a
    small random perturbation of std _PERTURBATION_STD in logit units."""
    res = head.resolution
    heat = res // head.stride
    num_j = head.num_points
    depth = head.depth_bins
    template = template_pose_mm(joint_names)
    span = np.max(template.max(0)[:2] - template.min(0)[:2])
    focal_px = _PRIOR_SPAN * res * _PRIOR_DEPTH_MM / span
    px = template[:, :2] * focal_px / (_PRIOR_DEPTH_MM + template[:, 2:]) + res / 2
    lrc = last_receptive_center_px(res, head.stride)
    u2d = (px - head.stride // 2) / lrc                                  # 2D heatmap targets, 0..1
    xy_mm01 = (template[:, :2] + head.depth_cube_mm / 2) * res / head.depth_cube_mm
    u3d = np.concatenate([(xy_mm01 - head.stride // 2) / lrc,
                          template[:, 2:] / head.depth_cube_mm + 0.5], axis=1)  # 3D targets, 0..1
    # At small resolutions the metric range (u·L + stride/2)·cube/res is narrower than a tall person (128 px:
    # 1650 mm): clip the extreme joints a little (a few tens of mm) instead of requiring infinite logits.
    u2d = np.clip(u2d, 0.04, 0.96)
    u3d = np.clip(u3d, 0.04, 0.96)
    a2d = _tilt_for_mean(u2d, heat)           # [J, 2] slopes for x, y
    a3d_xy = _tilt_for_mean(u3d[:, :2], heat)
    a3d_z = _tilt_for_mean(u3d[:, 2], depth)  # [J]

    weight = head.conv.weight.data  # [C_out, C_in, 1, 1]
    bias = head.conv.bias.data
    c_in = weight.shape[1]
    weight.normal_(0.0, _PERTURBATION_STD / (feature_std * np.sqrt(c_in - 2)), generator=generator)
    weight[:, c_in - 2:] = 0.0
    bias.zero_()
    t = lambda a: torch.as_tensor(a, dtype=weight.dtype)  # noqa: E731
    weight[:num_j, c_in - 2, 0, 0] = t(a2d[:, 0])
    weight[:num_j, c_in - 1, 0, 0] = t(a2d[:, 1])
    z_grid = np.linspace(0.0, 1.0, depth)
    for d in range(depth):
        channels = slice(num_j + d * num_j, num_j + (d + 1) * num_j)
        weight[channels, c_in - 2, 0, 0] = t(a3d_xy[:, 0])
        weight[channels, c_in - 1, 0, 0] = t(a3d_xy[:, 1])
        bias[channels] = t(a3d_z * z_grid[d])
    if head.with_uncertainty:
        bias[num_j * (1 + depth):] = float(np.log(np.expm1(0.1)))  # softplus → 0.1 → 100 mm


def _raw_joints_and_formats(skeleton: Union[str, Sequence[str]]):
    names = [skeleton] if isinstance(skeleton, str) else list(skeleton)
    if not names:
        raise ValueError('skeleton must name at least one format')
    formats = [get_skeleton(n) for n in names]
    raw = []
    for fmt in formats:
        raw.extend(j for j in fmt.joint_names if j not in raw)
    skeletons = {fmt.name: skeleton_entry(raw, fmt.joint_names, fmt.edges) for fmt in formats}
    raw_edges = []
    for fmt in formats:
        for i, j in fmt.edges:
            edge = [raw.index(fmt.joint_names[i]), raw.index(fmt.joint_names[j])]
            if edge not in raw_edges and edge[::-1] not in raw_edges:
                raw_edges.append(edge)
    return raw, raw_edges, skeletons, names[0]


def build_random_pose_graph(resolution: int = 128, skeleton: Union[str, Sequence[str]] = 'smpl_24',
                            seed: int = 0, with_uncertainty: bool = False, pose_prior: bool = True):
    """(PoseGraph, metadata dict) of the fixture model; see make_random_pose_model."""
    raw, raw_edges, skeletons, default = _raw_joints_and_formats(skeleton)
    generator = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        backbone = TinyBackbone(out_channels=64, stride=32, coord_channels=pose_prior)
        head = MetrabsHead(backbone.out_channels, len(raw), resolution, with_uncertainty=with_uncertainty)
    finally:
        torch.random.set_rng_state(torch_state)
    if pose_prior:
        with torch.no_grad():
            probe = torch.rand(4, 3, resolution, resolution, generator=generator)
            features = backbone(probe)[:, :-2]
            feature_std = float(features.square().mean().sqrt().clamp_min(1e-6))
            _set_pose_prior(head, raw, feature_std, generator)
    graph = PoseGraph(backbone, head, raw, resolution).eval()
    kind = 'pose prior + random perturbation' if pose_prior else 'random'
    meta = contract_metadata(
        graph, name=f'fixture-{"-".join(skeletons)}-{resolution}px-seed{seed}',
        description=f'Test fixture: tiny random backbone ({kind}); outputs do not follow the image content.',
        training='none (random initialisation)', joint_edges=raw_edges, skeletons=skeletons,
        default_skeleton=default)
    if pose_prior:
        # Reference bone lengths (plausibility filter) of the template the prior places.
        template = template_pose_mm(raw)
        meta['bone_lengths_mm'] = [round(float(np.linalg.norm(template[i] - template[j])), 1)
                                   for i, j in raw_edges]
    return graph, meta


def make_random_pose_model(path, resolution: int = 128, skeleton: Union[str, Sequence[str]] = 'smpl_24',
                           seed: int = 0, with_uncertainty: bool = False, pose_prior: bool = True) -> str:
    """Export a deterministic fixture pose model (contract pose/1) to `path` and return the path.

    skeleton: a registered format name, or several (the raw joints are then the ordered union of their joints,
      each format an `indices` selection of them; the first is the default). The metadata always contains the
      model's own format(s) with their `indices`; formats whose joints are not all present are not offered
      (e.g. h36m_17 is not a subset of smpl_24: it has 'spin' and 'htop').
    Takes well under a second (tiny backbone, 64 feature channels, legacy exporter).
    """
    graph, meta = build_random_pose_graph(resolution, skeleton, seed, with_uncertainty, pose_prior)
    path = os.fspath(path)
    export_pose_model(graph, path, meta)
    return path


def two_point_logits(target01: np.ndarray, n: int) -> np.ndarray:
    """[..., n] logits whose softmax has expectation exactly `target01` on linspace(0, 1, n): all mass on the
    two grid points around the target (1e-30 elsewhere)."""
    pos = np.asarray(target01, np.float64) * (n - 1)
    low = np.clip(np.floor(pos), 0, n - 2).astype(int)
    frac = pos - low
    probs = np.zeros(np.shape(target01) + (n,))
    np.put_along_axis(probs, low[..., None], (1 - frac)[..., None], axis=-1)
    np.put_along_axis(probs, (low + 1)[..., None], frac[..., None], axis=-1)
    return np.log(np.maximum(probs, 1e-30))


def oracle_head_logits(pose_cam_mm: np.ndarray, rotations: np.ndarray, crop_intrinsics: np.ndarray,
                       crop_flips: np.ndarray, joint_names: Sequence[str], resolution: int,
                       depth_bins: int = 8, stride: int = 32, depth_cube_mm: float = 2200.0) -> np.ndarray:
    """Head logits [N, J·(1+D), h, w] of a perfect network that sees the camera-frame pose `pose_cam_mm` [J, 3]
    through N crops (rotations, crop_intrinsics [N, 3, 3]; crop_flips bool [N]).

    A mirrored crop shows the person's left side where the right side is, so a perfect network labels the real
    joint perm[j] as joint j (perm = mirror_permutation). The 2D targets are the crop projections, the 3D targets
    the crop-frame pose about its mean, shifted into the middle of the metric cube. Decoding them (MetrabsHead)
    gives these coordinates exactly; raises ValueError when a target falls outside the representable range.
    """
    from metrabs_ros.skeletons import mirror_permutation
    perm = mirror_permutation(joint_names)
    heat = resolution // stride
    lrc = last_receptive_center_px(resolution, stride)
    num_j = len(joint_names)
    out = []
    for r, k, flipped in zip(np.asarray(rotations, np.float64), np.asarray(crop_intrinsics, np.float64),
                             np.asarray(crop_flips, bool)):
        pose_crop = np.asarray(pose_cam_mm, np.float64) @ r.T
        if flipped:
            pose_crop = pose_crop[perm]
        proj = pose_crop @ k.T
        u2d = (proj[:, :2] / proj[:, 2:] - stride // 2) / lrc
        rel = pose_crop - pose_crop.mean(0) + depth_cube_mm / 2
        u3d = np.concatenate([(rel[:, :2] * resolution / depth_cube_mm - stride // 2) / lrc,
                              rel[:, 2:] / depth_cube_mm], axis=1)
        if not (np.all((u2d > 0) & (u2d < 1)) and np.all((u3d > 0) & (u3d < 1))):
            raise ValueError('pose does not fit the heatmap range of this crop')
        l2x, l2y = two_point_logits(u2d[:, 0], heat), two_point_logits(u2d[:, 1], heat)
        l3x, l3y = two_point_logits(u3d[:, 0], heat), two_point_logits(u3d[:, 1], heat)
        l3z = two_point_logits(u3d[:, 2], depth_bins)
        logits2d = l2y[:, :, None] + l2x[:, None, :]                                          # [J, h, w]
        logits3d = l3z[:, :, None, None] + l3y[:, None, :, None] + l3x[:, None, None, :]     # [J, D, h, w]
        logits3d = logits3d.transpose(1, 0, 2, 3).reshape(depth_bins * num_j, heat, heat)   # channel P + d·P + j
        out.append(np.concatenate([logits2d, logits3d]))
    return np.stack(out).astype(np.float32)


class FixedFeatures(torch.nn.Module):
    """Backbone stand-in returning fixed head logits (use with head.conv = nn.Identity()): an 'oracle' crop
    model for geometry tests. Only valid for the number of crops the logits were built for."""

    def __init__(self, logits: np.ndarray):
        super().__init__()
        self.register_buffer('logits', torch.as_tensor(np.asarray(logits, np.float32)))
        self.out_channels = int(self.logits.shape[1])
        self.stride = 32

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        # Tie the output to the input so exporters keep the warp (the term is exactly zero).
        return self.logits + crops.sum() * 0.0


def build_oracle_pose_graph(logits: np.ndarray, joint_names: Sequence[str], resolution: int,
                            ridge: float = 1e-2) -> PoseGraph:
    """PoseGraph whose crop model returns `logits` (see oracle_head_logits)."""
    head = MetrabsHead(1, len(joint_names), resolution)
    head.conv = torch.nn.Identity()
    return PoseGraph(FixedFeatures(logits), head, joint_names, resolution, ridge=ridge).eval()


def read_metadata(path) -> dict:
    """metadata_props of an ONNX file as a dict, JSON values decoded (strings stay strings)."""
    import onnx
    model = onnx.load(os.fspath(path), load_external_data=False)
    out = {}
    for prop in model.metadata_props:
        try:
            out[prop.key] = json.loads(prop.value)
        except ValueError:
            out[prop.key] = prop.value
    return out
