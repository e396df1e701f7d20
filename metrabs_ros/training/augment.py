"""Training crops: the inference crop geometry (metrabs_ros.crops) plus random augmentation, applied consistently to
the image and the ground truth. numpy + OpenCV; no torch (runs in DataLoader workers).

A training example is one person in a source image:
  image      uint8 [H, W, 3] RGB (a full scene, or an already perspective-correct person crop)
  camera     CameraModel of that image (a crop sample: its pinhole K_crop; a scene: K + distortion)
  box_xywh   float [4] the person's box in image px (a crop sample: the whole crop [0, 0, S, S])
  joints_mm  float [J_raw, 3] ground truth in the source camera frame (mm), NaN rows = unlabelled joints

`make_training_crop` then does what inference does (look-at rotation to the box centre, zoom so that the box fills
the crop, crop intrinsics with the principal point at res/2, the 2×2-average anti-aliasing pyramid level
clip(floor(−log2 scale), 0, 2), bilinear warp with zero padding in linear light, gamma re-encoding), with random
box shift / zoom, in-plane rotation and horizontal mirroring added to the geometry, and colour (brightness,
per-channel gain, contrast, saturation, gamma), blur, noise and random erasing / occluders added to the pixels.
The ground truth follows exactly: joints_crop = R · joints_cam (R camera → crop, incl. the mirror), and a mirrored
crop swaps left/right joints (the network sees a person whose left side is the original right side; the pose graph
swaps them back, PoseGraph.to_camera).
"""
from __future__ import annotations

import dataclasses
import glob
import os
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from metrabs_ros.augmentation import FLIP_MATRIX, rotation_z
from metrabs_ros.camera import CameraModel
from metrabs_ros.crops import NUM_PYRAMID_LEVELS, box_rotation_and_scale
from metrabs_ros.training.synth.derived_formats import derived_joints

GAMMA_LINEAR = 2.2
UP_VECTOR_CAM = np.array([0.0, -1.0, 0.0])
_LINEAR_LUT = np.power(np.arange(256, dtype=np.float32) / 255.0, GAMMA_LINEAR).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation ranges (all recorded in the run's config). `enabled=False` gives the deterministic
    inference crop (no jitter, no mirroring, gamma `eval_gamma`, no colour changes)."""
    enabled: bool = True
    shift_sigma: float = 0.06            # box-centre shift, normal sigma as a fraction of the box size
    zoom_log_sigma: float = 0.12         # crop zoom factor exp(N(0, sigma)), clipped to zoom_range
    zoom_range: Sequence[float] = (0.7, 1.4)
    rotation_sigma_deg: float = 10.0     # in-plane rotation N(0, sigma) ...
    rotation_uniform_prob: float = 0.15  # ... or uniform in ±rotation_max_deg with this probability
    rotation_max_deg: float = 40.0
    flip_prob: float = 0.5
    gamma_range: Sequence[float] = (0.55, 1.3)   # crop = linear^(gamma/2.2); inference TTA uses 0.6..1.0
    eval_gamma: float = 0.8                      # = tta_parameters(1).gammas[0]
    brightness_range: Sequence[float] = (0.6, 1.4)
    channel_gain_range: Sequence[float] = (0.85, 1.15)
    contrast_range: Sequence[float] = (0.7, 1.3)
    saturation_range: Sequence[float] = (0.4, 1.4)
    blur_prob: float = 0.25
    blur_sigma_range: Sequence[float] = (0.3, 1.5)   # in crop px
    noise_prob: float = 0.3
    noise_sigma_max: float = 0.04
    erase_prob: float = 0.3              # random rectangle(s) of noise / flat colour
    occluder_prob: float = 0.3           # random filled ellipse / polygon (limb-like occluders)
    max_erase_fraction: float = 0.3      # of the crop side

    @staticmethod
    def from_dict(d) -> 'AugmentConfig':
        names = {f.name for f in dataclasses.fields(AugmentConfig)}
        unknown = set(d or {}) - names
        if unknown:
            raise ValueError(f'unknown augmentation option(s) {sorted(unknown)}; valid: {sorted(names)}')
        return AugmentConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in (d or {}).items()})

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class TrainingCrop:
    image: np.ndarray         # float32 [res, res, 3] gamma-encoded RGB in [0, 1] (the backbone's input)
    intrinsics: np.ndarray    # float32 [3, 3] K_crop (principal point res/2)
    rotation: np.ndarray      # float32 [3, 3] R camera → crop (incl. the mirror)
    joints_mm: np.ndarray     # float32 [J, 3] GT in the crop frame (mm), left/right swapped when mirrored, 0 if invalid
    joint_valid: np.ndarray   # bool [J] labelled (finite GT)
    flipped: bool
    pyramid_level: int


def crop_geometry_for_box(box_xywh, camera: CameraModel, resolution: int, zoom: float = 1.0,
                          rotation_deg: float = 0.0, flip: bool = False, shift_xy_frac=(0.0, 0.0),
                          up_vector_cam=UP_VECTOR_CAM):
    """(R camera→crop [3,3], K_crop [3,3], pyramid level) for one box with explicit augmentation parameters, the
    same construction as metrabs_ros.crops.crop_geometry (R = F · Rz(−θ) · R0, focal = K[:2,:2]·scale·zoom)."""
    box = np.asarray(box_xywh, np.float64).reshape(4).copy()
    size = max(box[2], box[3])
    box[:2] += np.asarray(shift_xy_frac, np.float64) * size
    R0, scale = box_rotation_and_scale(box[None], camera, up_vector_cam, resolution)
    rotflip = rotation_z(np.deg2rad(-rotation_deg))
    if flip:
        rotflip = FLIP_MATRIX @ rotflip
    R = rotflip @ R0[0]
    crop_scale = float(scale[0]) * zoom
    K_crop = np.eye(3)
    K_crop[:2, :2] = camera.intrinsic_matrix[:2, :2] * crop_scale
    K_crop[:2, 2] = resolution / 2.0
    level = int(np.clip(np.floor(-np.log2(crop_scale)), 0, NUM_PYRAMID_LEVELS - 1)) \
        if np.isfinite(crop_scale) and crop_scale > 0 else 0
    return R, K_crop, level


def _pyramid_level_image(image_lin: np.ndarray, level: int):
    """2×2 average pooling `level` times (cv2.INTER_AREA at exactly half size) and the pixel map of that level
    x_l = x / 2^l + (1/2^l − 1)/2 as a 3×3 matrix."""
    out = image_lin
    for _ in range(level):
        h, w = out.shape[0] // 2, out.shape[1] // 2
        out = cv2.resize(out[:2 * h, :2 * w], (w, h), interpolation=cv2.INTER_AREA)
    s = 0.5 ** level
    A = np.array([[s, 0.0, (s - 1.0) / 2.0], [0.0, s, (s - 1.0) / 2.0], [0.0, 0.0, 1.0]])
    return out, A


def warp_linear(image_uint8: np.ndarray, camera: CameraModel, R: np.ndarray, K_crop: np.ndarray, resolution: int,
                level: int = 0) -> np.ndarray:
    """Crop in linear light, float32 [res, res, 3]: crop pixel q samples the image at
    K · distort(π(Rᵀ K_crop⁻¹ q)) (bilinear, zeros outside), from pyramid level `level`."""
    lin = _LINEAR_LUT[image_uint8]
    src, A = _pyramid_level_image(lin, level)
    M = R.T @ np.linalg.inv(K_crop)                                 # crop px → camera ray
    if not camera.is_distorted:
        H = A @ camera.intrinsic_matrix @ M                          # crop px → source px (homography)
        return cv2.warpPerspective(src, H, (resolution, resolution), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    cols, rows = np.meshgrid(np.arange(resolution, dtype=np.float64), np.arange(resolution, dtype=np.float64))
    rays = np.stack([cols, rows, np.ones_like(cols)], -1) @ M.T
    with np.errstate(invalid='ignore', divide='ignore'):
        px = camera.project_px(rays)
    px = px * A[0, 0] + A[0, 2]
    px = np.where(np.isfinite(px) & (rays[..., 2:] > 0), px, -16.0).astype(np.float32)
    return cv2.remap(src, px[..., 0], px[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _colour_jitter(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    img = img * rng.uniform(*cfg.brightness_range) * rng.uniform(*cfg.channel_gain_range, size=3).astype(np.float32)
    grey = img.mean(axis=2, keepdims=True)
    img = grey + (img - grey) * rng.uniform(*cfg.saturation_range)
    mean = img.mean()
    img = mean + (img - mean) * rng.uniform(*cfg.contrast_range)
    return img


def _erase_and_occlude(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    res = img.shape[0]
    if rng.uniform() < cfg.erase_prob:
        w, h = (rng.uniform(0.05, cfg.max_erase_fraction, 2) * res).astype(int) + 1
        x, y = rng.integers(0, res - w + 1), rng.integers(0, res - h + 1)
        if rng.uniform() < 0.5:
            img[y:y + h, x:x + w] = rng.uniform(0, 1, size=(h, w, 3)).astype(np.float32)
        else:
            img[y:y + h, x:x + w] = rng.uniform(0, 1, size=3).astype(np.float32)
    if rng.uniform() < cfg.occluder_prob:
        colour = tuple(float(c) for c in rng.uniform(0, 1, size=3))
        centre = tuple(int(c) for c in rng.uniform(0, res, size=2))
        if rng.uniform() < 0.5:
            axes = tuple(int(a) for a in rng.uniform(0.03, cfg.max_erase_fraction / 1.5, size=2) * res + 1)
            cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
        else:
            n = int(rng.integers(3, 7))
            radius = rng.uniform(0.05, cfg.max_erase_fraction / 1.5) * res
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            pts = np.stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)], 1)
            cv2.fillPoly(img, [np.round(pts).astype(np.int32)], colour)
    return img


def make_training_crop(image_uint8: np.ndarray, camera: CameraModel, box_xywh, joints_mm: np.ndarray,
                       mirror_perm: np.ndarray, resolution: int, rng: Optional[np.random.Generator],
                       cfg: AugmentConfig = AugmentConfig(), up_vector_cam=UP_VECTOR_CAM) -> TrainingCrop:
    """One (augmented) training crop and its ground truth; see the module docstring.

    joints_mm [J, 3] source camera frame, NaN = unlabelled; mirror_perm [J] the left/right permutation of the raw
    joints (metrabs_ros.skeletons.mirror_permutation). rng None or cfg.enabled False → the inference crop."""
    augment = cfg.enabled and rng is not None
    if augment:
        shift = rng.normal(0.0, cfg.shift_sigma, size=2)
        zoom = float(np.clip(np.exp(rng.normal(0.0, cfg.zoom_log_sigma)), *cfg.zoom_range))
        if rng.uniform() < cfg.rotation_uniform_prob:
            angle = float(rng.uniform(-cfg.rotation_max_deg, cfg.rotation_max_deg))
        else:
            angle = float(rng.normal(0.0, cfg.rotation_sigma_deg))
        flip = bool(rng.uniform() < cfg.flip_prob)
        gamma = float(rng.uniform(*cfg.gamma_range))
    else:
        shift, zoom, angle, flip, gamma = (0.0, 0.0), 1.0, 0.0, False, cfg.eval_gamma
    R, K_crop, level = crop_geometry_for_box(box_xywh, camera, resolution, zoom, angle, flip, shift, up_vector_cam)
    img = warp_linear(image_uint8, camera, R, K_crop, resolution, level)
    img = np.power(np.maximum(img, 0.0), gamma / GAMMA_LINEAR, dtype=np.float32)
    if augment:
        img = _colour_jitter(img, rng, cfg)
        if rng.uniform() < cfg.blur_prob:
            img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(*cfg.blur_sigma_range)))
        if rng.uniform() < cfg.noise_prob:
            img = img + rng.normal(0.0, rng.uniform(0.0, cfg.noise_sigma_max), img.shape).astype(np.float32)
        img = _erase_and_occlude(np.ascontiguousarray(img, dtype=np.float32), rng, cfg)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)

    joints = np.asarray(joints_mm, np.float64)
    valid = np.all(np.isfinite(joints), axis=1)
    joints_crop = np.where(valid[:, None], joints, 0.0) @ R.T
    if flip:
        joints_crop = joints_crop[mirror_perm]
        valid = valid[mirror_perm]
    return TrainingCrop(img, K_crop.astype(np.float32), R.astype(np.float32), joints_crop.astype(np.float32),
                        valid, flip, level)


def project_to_crop_px(joints_crop_mm: np.ndarray, K_crop: np.ndarray) -> np.ndarray:
    """[J, 3] crop-frame points → [J, 2] crop pixels (pinhole; the crop has no distortion)."""
    p = np.asarray(joints_crop_mm, np.float64) @ np.asarray(K_crop, np.float64).T
    with np.errstate(divide='ignore', invalid='ignore'):
        return p[:, :2] / p[:, 2:]


def random_seed_sequence(seed: int, *keys: int) -> np.random.Generator:
    """The per-sample generator: a pure function of (seed, keys...), e.g. (seed, step, slot), so a resumed run draws
    exactly the augmentations an uninterrupted one would."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF] + [int(k) & 0xFFFFFFFF for k in keys])


# ---------------------------------------------------------------------------------------------------------------
# Raw joint layout (multi-format training) and sources of training examples
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class JointLayout:
    """The model's raw joints: the concatenation of the trained formats' joints, named '<joint>.<format>'
    (a joint of one format is a different point from the same-named joint of another: each format is defined
    separately from the body model). Anny's 'name.L' / 'name.R' bones become 'lname' / 'rname' so that the
    l/r-prefix mirror rule (metrabs_ros.skeletons.mirror_permutation) applies."""
    formats: Tuple[str, ...]
    format_joint_names: Dict[str, Tuple[str, ...]]    # plain names per format
    raw_names: Tuple[str, ...]
    offsets: Dict[str, int]

    @staticmethod
    def create(formats: Sequence[str], format_joint_names: Optional[Dict[str, Sequence[str]]] = None
               ) -> 'JointLayout':
        from metrabs_ros.skeletons import get_skeleton
        names, raw, offsets = {}, [], {}
        for fmt in formats:
            if format_joint_names and fmt in format_joint_names:
                plain = tuple(format_joint_names[fmt])
            else:
                plain = get_skeleton(fmt).joint_names
            names[fmt] = plain
            offsets[fmt] = len(raw)
            raw.extend(f'{_mirror_style(n)}.{fmt}' for n in plain)
        if len(set(raw)) != len(raw):
            raise ValueError(f'duplicate raw joint names for formats {formats}')
        return JointLayout(tuple(formats), names, tuple(raw), offsets)

    def indices(self, fmt: str) -> List[int]:
        return list(range(self.offsets[fmt], self.offsets[fmt] + len(self.format_joint_names[fmt])))

    def edges(self, fmt: str) -> List[List[int]]:
        """Bones of `fmt` in its own joint indices (registry formats; [] for others)."""
        from metrabs_ros.skeletons import SKELETONS
        return [list(e) for e in SKELETONS[fmt].edges] if fmt in SKELETONS else []

    def raw_edges(self) -> List[List[int]]:
        return [[self.offsets[f] + i, self.offsets[f] + j] for f in self.formats for i, j in self.edges(f)]

    def skeletons_metadata(self) -> dict:
        """Contract metadata 'skeletons': one 'indices' entry per format, plain joint names."""
        return {f: {'indices': self.indices(f), 'joint_names': list(self.format_joint_names[f]),
                    'edges': self.edges(f)} for f in self.formats}

    def gather(self, joints_by_format: Dict[str, np.ndarray]) -> np.ndarray:
        """{format: [J_f, 3]} → [J_raw, 3] with NaN for formats the sample lacks."""
        out = np.full((len(self.raw_names), 3), np.nan)
        for fmt, joints in joints_by_format.items():
            if fmt in self.offsets:
                out[self.offsets[fmt]:self.offsets[fmt] + len(self.format_joint_names[fmt])] = joints
        return out


def _mirror_style(name: str) -> str:
    if name.endswith('.L'):
        return 'l' + name[:-2]
    if name.endswith('.R'):
        return 'r' + name[:-2]
    return name


@dataclasses.dataclass
class Example:
    """One person in a source image (see the module docstring)."""
    image: np.ndarray
    camera: CameraModel
    box_xywh: np.ndarray
    joints_by_format: Dict[str, np.ndarray]   # {format: [J, 3]} source camera frame, mm
    truncated: bool = False


def sample_kind(sample) -> str:
    """'scenes' (full image, 'people/...' arrays) or 'crops' (one person-centred crop with 'K' and 'R')."""
    keys = set(sample.keys())
    if 'people/box_xywh' in keys or 'num_people' in keys and 'R' not in keys:
        return 'scenes'
    if 'K' in keys and 'image' in keys:
        return 'crops'
    raise ValueError(f'unrecognised sample (keys {sorted(keys)[:12]}...): expected a data-engine crops or scenes '
                     'sample')


def formats_in_sample(sample, prefix: str = '') -> List[str]:
    suffix = '/joints3d_mm'
    return sorted(k[len(prefix):-len(suffix)] for k in sample.keys() if k.startswith(prefix) and k.endswith(suffix)
                  and '/' not in k[len(prefix):-len(suffix)])


def crop_sample_example(sample) -> Example:
    """Data-engine `crops` sample → Example: the crop is the source image, its K_crop the (pinhole) camera, the box
    the whole crop, the GT '<format>/joints3d_mm' already in the crop frame."""
    image = np.asarray(sample['image'])
    size = image.shape[0]
    joints = {f: np.asarray(sample[f'{f}/joints3d_mm'], np.float64) for f in formats_in_sample(sample)}
    joints.update(derived_joints(joints))      # h36m_25, kinectv2_25, ... approximated from the stored formats
    return Example(image, CameraModel(np.asarray(sample['K'], np.float64)),
                   np.array([0.0, 0.0, image.shape[1], size]), joints, bool(sample.get('truncated', False)))


def scene_people_count(sample) -> int:
    return int(len(sample['people/box_xywh'])) if 'people/box_xywh' in sample else 0


def scene_sample_camera(sample) -> CameraModel:
    dist = np.asarray(sample['dist'], np.float64) if 'dist' in sample else None
    model = str(sample['distortion_model']) if 'distortion_model' in sample else 'opencv'
    return CameraModel(np.asarray(sample['K'], np.float64), dist, model)


def scene_sample_example(sample, person: int) -> Example:
    """Data-engine `scenes` sample, person `person` → Example (box = its visible-silhouette box)."""
    fmts = formats_in_sample(sample, 'people/')
    joints = {f: np.asarray(sample[f'people/{f}/joints3d_mm'][person], np.float64) for f in fmts}
    joints.update(derived_joints(joints))
    truncated = bool(np.asarray(sample['people/truncated'])[person]) if 'people/truncated' in sample else False
    return Example(np.asarray(sample['image']), scene_sample_camera(sample),
                   np.asarray(sample['people/box_xywh'][person], np.float64), joints, truncated)


def scene_to_sample(scene, min_pixels: int = 1) -> dict:
    """metrabs_ros.synthetic_scene.Scene → a `scenes` sample dict with the data engine's keys (smpl_24 GT only;
    boxes converted to the pixel-edge convention). Test and development data source."""
    people = [p for p in scene.people if p.num_pixels >= min_pixels]
    h, w = scene.image_rgb.shape[:2]
    boxes = np.array([p.box_xywh_px + np.array([0.5, 0.5, 0.0, 0.0]) for p in people], np.float32).reshape(-1, 4)
    j3d = np.array([p.joints3d_mm for p in people], np.float32).reshape(-1, 24, 3)
    j2d = np.array([p.joints2d_px for p in people], np.float32).reshape(-1, 24, 2)
    inside = np.all(np.isfinite(j2d), -1) & (j2d[..., 0] >= -0.5) & (j2d[..., 0] < w - 0.5) \
        & (j2d[..., 1] >= -0.5) & (j2d[..., 1] < h - 0.5)
    return {'image': scene.image_rgb, 'K': scene.camera.intrinsic_matrix.astype(np.float32),
            'dist': scene.camera.distortion_coeffs.astype(np.float32),
            'image_hw': np.array([h, w], np.int32), 'up_cam': np.asarray(scene.up_vector_cam, np.float32),
            'num_people': np.int32(len(people)), 'people/box_xywh': boxes,
            'people/truncated': ~np.all(inside, axis=1),
            'people/num_pixels': np.array([p.num_pixels for p in people], np.int32),
            'people/distance_m': np.linalg.norm(j3d[:, 0], axis=-1).astype(np.float32) / 1000.0,
            'people/smpl_24/joints3d_mm': j3d, 'people/smpl_24/joints2d_px': j2d}


def scene_sample_to_crop_sample(sample, person: int, resolution: int = 256) -> dict:
    """A `crops`-style sample (inference crop of one person of a scene, GT in the crop frame): development data
    in the engine's crop layout."""
    ex = scene_sample_example(sample, person)
    out = {}
    R, K_crop, level = crop_geometry_for_box(ex.box_xywh, ex.camera, resolution)
    lin = warp_linear(ex.image, ex.camera, R, K_crop, resolution, level)
    out['image'] = np.clip(np.rint(np.power(lin, 1 / GAMMA_LINEAR) * 255), 0, 255).astype(np.uint8)
    out['K'], out['R'] = K_crop.astype(np.float32), R.astype(np.float32)
    out['box_xywh'] = ex.box_xywh.astype(np.float32)
    out['truncated'] = ex.truncated
    for fmt, joints in ex.joints_by_format.items():
        out[f'{fmt}/joints3d_mm'] = (joints @ R.T).astype(np.float32)
    return out


class NpzSamples:
    """A folder of one-sample .npz files (keys as the data engine's samples): the development / test format."""

    def __init__(self, folder: str):
        self.paths = sorted(glob.glob(os.path.join(os.fspath(folder), '*.npz')))
        if not self.paths:
            raise FileNotFoundError(f'no .npz samples in {folder}')

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        with np.load(self.paths[i], allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


def write_npz_samples(samples, folder: str) -> List[str]:
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, s in enumerate(samples):
        path = os.path.join(folder, f'{i:06d}.npz')
        np.savez(path, **{k: np.asarray(v) for k, v in s.items()})
        paths.append(path)
    return paths


def open_samples(path: str):
    """Random-access samples of a data folder: the data engine's shards (its `open_dataset`) or a folder of .npz
    samples. The result supports len() and indexing → dict of numpy arrays."""
    path = os.fspath(path)
    if glob.glob(os.path.join(path, '*.npz')) and not os.path.exists(os.path.join(path, 'manifest.json')):
        return NpzSamples(path)
    try:
        from metrabs_ros.training.synth.shards import open_dataset
    except ImportError as e:
        raise FileNotFoundError(f'{path}: no .npz samples, and the data engine reader is unavailable ({e})') from e
    return open_dataset(path)
