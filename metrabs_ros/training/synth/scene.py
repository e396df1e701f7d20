"""Scene sampling, rendering and ground truth for the two sample kinds (``crops`` and ``scenes``).

Frames and units:

* world frame: z up, the ground is ``z = 0``, metres; the camera stands at ``(0, 0, height)`` and looks along +y
  before pitch and roll;
* body frame: Anny's (x = the body's left, y = its back, z = up), feet on the ground, root above the origin;
  a person is placed by a yaw about z and a ground position;
* camera frame: OpenCV optical frame (x right, y down, z forward); ground truth is in millimetres;
  ``X_cam = R_w2c @ X_world + t_w2c``;
* crop frame: the crop camera of :mod:`metrabs_ros.crops`: ``X_crop = R @ X_cam`` with ``K_crop`` (principal
  point at ``res / 2``);
* pixels: centre of the top-left pixel at (0, 0) for joints; boxes use the detectors' pixel-edge convention: a
  silhouette covering columns ``x0..x1`` has ``x = x0``, ``w = x1 - x0 + 1``.

Every sample is a pure function of ``(seed, split, kind, index)`` (one ``numpy`` generator per sample, consumed in
a fixed order); bodies of several samples are skinned in one batch, which does not change the result.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from metrabs_ros.camera import CameraModel
from metrabs_ros.crops import box_rotation_and_scale
from metrabs_ros.training.synth import appearance, backgrounds, motion, raster
from metrabs_ros.training.synth.body_model import FORMATS, BodyModel, height_parameter_for_stature, skin_bodies

KINDS = ('crops', 'scenes')
SPLITS = ('train', 'val')
SCENE_SIZES_HW = ((480, 640), (360, 640), (640, 480), (512, 512), (720, 960))
CROP_SOURCE_SIZES_HW = ((480, 640), (720, 1280), (1080, 1920), (640, 480), (1024, 1024), (600, 800))


@dataclasses.dataclass
class Settings:
    """Generator settings (recorded in the manifest)."""
    crop_size: int = 256
    scene_hw: Optional[Tuple[int, int]] = (480, 640)   # None = random from SCENE_SIZES_HW
    hfov_deg: Tuple[float, float] = (40.0, 100.0)
    camera_height_m: Tuple[float, float] = (0.3, 3.0)
    distance_m: Tuple[float, float] = (1.5, 12.0)
    p_distortion: float = 0.15
    p_clip_motion: float = 0.55
    max_people_scene: int = 6
    box_scale_jitter: float = 0.08     # log-normal sigma of the crop zoom
    box_shift_jitter: float = 0.05     # normal sigma of the box centre shift, fraction of the box size
    rotation_jitter_deg: float = 6.0
    jpeg_quality: int = 92
    background: str = 'random'         # 'random' (photos / procedural) or 'flat:<grey level>' (tests)


@dataclasses.dataclass
class PersonPlan:
    phenotype: np.ndarray          # [6]; for adults the height entry is set from stature_m when skinning
    pose_dm: np.ndarray            # [13, 3, 3]
    stature_m: float = float('nan')   # wanted standing height of an adult (NaN: children keep their parameter)
    vertices_m: Optional[np.ndarray] = None      # [V, 3] body frame, grounded
    joints_m: Optional[Dict[str, np.ndarray]] = None   # format -> [J, 3] body frame


@dataclasses.dataclass
class SamplePlan:
    seed: int
    split: str
    kind: str
    index: int
    rng: np.random.Generator
    people: List[PersonPlan]


def sample_rng(seed: int, split: str, kind: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    if kind not in KINDS:
        raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
    return np.random.default_rng([int(seed), SPLITS.index(split), KINDS.index(kind), int(index), 0x5E7])


def sample_phenotype(rng: np.random.Generator) -> Tuple[np.ndarray, float]:
    """(gender, age, muscle, weight, height, proportions in [0, 1]; wanted stature in m or NaN for children).

    Mostly adults (age 0.55-1) whose stature is drawn around 1.76 m (gender 0 = male) .. 1.63 m (gender 1),
    sd 7 cm, clipped to 1.48-1.98 m; 15 % children (age 0.3-0.55) with a random height parameter."""
    gender = rng.beta(0.4, 0.4)
    adult = rng.uniform() < 0.85
    age = rng.uniform(0.55, 1.0) if adult else rng.uniform(0.3, 0.55)
    pheno = np.array([gender, age, rng.beta(2, 2), rng.beta(2, 2.5), rng.uniform(0.2, 0.8), 0.6 * rng.beta(2, 3)])
    stature = float(np.clip(rng.normal(1.76 - 0.13 * gender, 0.07), 1.48, 1.98)) if adult else float('nan')
    return pheno, stature


def plan_sample(seed: int, split: str, kind: str, index: int, settings: Settings) -> SamplePlan:
    rng = sample_rng(seed, split, kind, index)
    if kind == 'crops':
        num = 1 + rng.choice(5, p=[0.25, 0.3, 0.25, 0.12, 0.08])
    else:
        num = int(rng.integers(1, settings.max_people_scene + 1))
    people = []
    for _ in range(num):
        pheno, stature = sample_phenotype(rng)
        people.append(PersonPlan(pheno, motion.sample_pose_dm(rng, split, settings.p_clip_motion), stature))
    return SamplePlan(seed, split, kind, index, rng, people)


def skin_plans(body: BodyModel, plans: Sequence[SamplePlan]) -> None:
    """Skin every person of ``plans`` in one batch; fills ``vertices_m`` (grounded: min z = 0) and ``joints_m``."""
    people = [p for plan in plans for p in plan.people]
    if not people:
        return
    pheno = np.stack([p.phenotype for p in people])
    stature = np.array([p.stature_m for p in people])
    adult = np.isfinite(stature)
    if np.any(adult):
        pheno[adult, 4] = height_parameter_for_stature(body, pheno[adult], stature[adult])
    for p, ph in zip(people, pheno):
        p.phenotype = ph
    dm = np.stack([p.pose_dm for p in people])
    deltas = motion.retarget_to_anny(dm, body.bone_labels, body.ref_bone_heads_m, body.bone_parents)
    verts, heads = skin_bodies(body, pheno, deltas)
    ground = verts[:, :, 2].min(axis=1)
    verts[:, :, 2] -= ground[:, None]
    heads[:, :, 2] -= ground[:, None]
    joints = {f: body.regressors[f](heads, verts) for f in FORMATS}
    for i, p in enumerate(people):
        p.vertices_m = verts[i]
        p.joints_m = {f: joints[f][i] for f in FORMATS}


# ------------------------------------------------------------------------------------------------ camera
@dataclasses.dataclass
class SceneCamera:
    K: np.ndarray            # [3, 3]
    dist: np.ndarray         # [12] OpenCV coefficients
    image_hw: Tuple[int, int]
    R_w2c: np.ndarray        # [3, 3]
    t_w2c_m: np.ndarray      # [3]
    height_m: float
    max_radius: float        # normalised image radius beyond which the distortion model is not used

    @property
    def model(self) -> CameraModel:
        return CameraModel(self.K, self.dist)

    @property
    def up_cam(self) -> np.ndarray:
        return self.R_w2c @ np.array([0.0, 0.0, 1.0])


def _rot_x(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_z(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


_BASE = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])   # rows: camera x, y, z in world (right, down, fwd)


def sample_camera(rng: np.random.Generator, settings: Settings, image_hw, target_dist_m: float,
                  target_azimuth: Optional[float] = None) -> Tuple[SceneCamera, float]:
    """Random intrinsics / height / pitch / roll; returns the camera and the azimuth (radians, + = right) at
    which the target stands."""
    H, W = image_hw
    hfov = math.radians(rng.uniform(*settings.hfov_deg))
    f = W / 2 / math.tan(hfov / 2)
    K = np.array([[f, 0, W / 2 + rng.normal(0, 0.02 * W)], [0, f, H / 2 + rng.normal(0, 0.02 * H)], [0, 0, 1]])
    dist = np.zeros(12)
    if rng.uniform() < settings.p_distortion and hfov < math.radians(85):
        dist[0] = rng.uniform(-0.15, 0.05)
        dist[1] = rng.uniform(-0.02, 0.02)
    lo, hi = settings.camera_height_m
    r = rng.uniform()
    h = rng.uniform(max(lo, 1.2), min(hi, 2.0)) if r < 0.6 else (
        rng.uniform(2.0, hi) if r < 0.85 else rng.uniform(lo, 1.2))
    vfov = 2 * math.atan(H / 2 / f)
    # pitch (positive = looking up) that puts the target's middle (~0.9 m) at a random image height
    pitch = math.atan2(0.9 - h, target_dist_m) + rng.uniform(-0.4, 0.4) * vfov
    pitch = float(np.clip(pitch, math.radians(-70), math.radians(30)))
    roll = rng.normal(0, math.radians(4)) if rng.uniform() < 0.9 else rng.uniform(-0.45, 0.45)
    azimuth = rng.uniform(-0.55, 0.55) * hfov if target_azimuth is None else target_azimuth
    # camera rotation: base (looking along +y) then pitch about camera x (up = negative about x), roll about z
    R = _rot_z(roll) @ _rot_x(pitch) @ _BASE
    position = np.array([0.0, 0.0, h])
    # valid radius of the distortion model: where d(r_d)/dr > 0, capped at 1.3x the image corner radius
    corners = (np.array([[0, 0], [W, 0], [0, H], [W, H]]) - K[:2, 2]) / f
    r_corner = float(np.linalg.norm(corners, axis=1).max())
    max_radius = 1.3 * r_corner
    if np.any(dist):
        rr = np.linspace(0, 3 * r_corner, 300)
        rd = rr * (1 + dist[0] * rr ** 2 + dist[1] * rr ** 4)
        bad = np.nonzero(np.diff(rd) <= 0)[0]
        if bad.size:
            max_radius = min(max_radius, float(rr[bad[0]]) * 0.95)
    return SceneCamera(K, dist, (H, W), R, -R @ position, h, max_radius), azimuth


def _ground_position(dist_m: float, azimuth: float) -> np.ndarray:
    return np.array([dist_m * math.sin(azimuth), dist_m * math.cos(azimuth)])


def _sample_distance(rng: np.random.Generator, settings: Settings) -> float:
    lo, hi = settings.distance_m
    if rng.uniform() < 0.5:
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


@dataclasses.dataclass
class Placement:
    yaw: float
    position_m: np.ndarray    # [2] ground position (x, y)


def body_to_world(placement: Placement):
    R = _rot_z(placement.yaw)
    t = np.array([placement.position_m[0], placement.position_m[1], 0.0])
    return R, t


def place_people(rng: np.random.Generator, camera: SceneCamera, target_pos: np.ndarray, num: int,
                 kind: str, settings: Settings) -> List[Placement]:
    """Target first; the others as occluders (in front), neighbours or random people in the view."""
    hfov = 2 * math.atan(camera.image_hw[1] / 2 / camera.K[0, 0])
    placed = [Placement(rng.uniform(-math.pi, math.pi), target_pos)]
    d_t = float(np.linalg.norm(target_pos))
    fwd = target_pos / max(d_t, 1e-6)
    side = np.array([fwd[1], -fwd[0]])
    for _ in range(num - 1):
        for _attempt in range(20):
            mode = rng.choice(4, p=[0.35, 0.25, 0.2, 0.2]) if kind == 'crops' else 3
            if mode == 0:     # occluder between camera and target
                d = d_t - rng.uniform(0.7, 3.0)
                pos = fwd * d + side * rng.uniform(-0.8, 0.8)
            elif mode == 1:   # behind the target
                pos = fwd * (d_t + rng.uniform(0.6, 4.0)) + side * rng.uniform(-1.5, 1.5)
            elif mode == 2:   # next to the target
                pos = fwd * (d_t + rng.uniform(-0.5, 0.5)) + side * rng.choice([-1, 1]) * rng.uniform(0.6, 1.5)
            else:             # anywhere in the view
                pos = _ground_position(_sample_distance(rng, settings), rng.uniform(-0.6, 0.6) * hfov)
            if pos[1] < 0.8 or np.linalg.norm(pos) < 0.9:
                continue
            if all(np.linalg.norm(pos - q.position_m) > 0.6 for q in placed):
                placed.append(Placement(rng.uniform(-math.pi, math.pi), pos))
                break
    return placed


# ------------------------------------------------------------------------------------------------ projection
def project_points(points_cam: np.ndarray, K: np.ndarray, dist: np.ndarray, max_radius: float = np.inf):
    """Pixels ``[N, 2]`` of camera-frame points (any unit) with the OpenCV model; NaN behind the camera or beyond
    the valid radius of the distortion model."""
    z = points_cam[:, 2]
    with np.errstate(divide='ignore', invalid='ignore'):
        xy = points_cam[:, :2] / z[:, None]
    bad = (z <= 1e-6) | (np.linalg.norm(xy, axis=1) > max_radius)
    if np.any(dist):
        from metrabs_ros.camera import distort_normalized
        xy = distort_normalized(xy, dist)
    px = xy * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
    px[:, 0] += K[0, 1] * xy[:, 1]
    px[bad] = np.nan
    return px


@dataclasses.dataclass
class View:
    """A rendering camera: world -> view rotation/translation, intrinsics, distortion, size."""
    R: np.ndarray
    t_m: np.ndarray
    K: np.ndarray
    dist: np.ndarray
    hw: Tuple[int, int]
    max_radius: float = np.inf

    def ground_px_to_world(self, u, v):
        Kinv = np.linalg.inv(self.K)
        rays_view = np.stack([u, v, np.ones_like(u)], -1) @ Kinv.T
        if np.any(self.dist):
            from metrabs_ros.camera import undistort_normalized
            rays_view[..., :2] = undistort_normalized(rays_view[..., :2], self.dist, iterations=5)
        rays_w = rays_view @ self.R     # R^T applied to row vectors
        origin = -self.R.T @ self.t_m
        with np.errstate(divide='ignore', invalid='ignore'):
            s = -origin[2] / rays_w[..., 2]
        ok = s > 0
        gx = np.where(ok, origin[0] + s * rays_w[..., 0], np.nan)
        gy = np.where(ok, origin[1] + s * rays_w[..., 1], np.nan)
        return gx, gy


def _to_view(view: View, placement: Placement, points_body_m: np.ndarray) -> np.ndarray:
    Rb, tb = body_to_world(placement)
    A = view.R @ Rb
    b = view.R @ tb + view.t_m
    return points_body_m @ A.T + b


def render_people(body: BodyModel, view: View, people: Sequence[PersonPlan], placements: Sequence[Placement],
                  rng: np.random.Generator, background: np.ndarray):
    """Render all people over ``background``; returns image float32, depth (m), ids, per-person view vertices."""
    H, W = view.hw
    light_w = np.array([math.cos(a := rng.uniform(0, 2 * math.pi)), math.sin(a), 0.0])
    elev = rng.uniform(math.radians(15), math.radians(85))
    to_light = np.array([light_w[0] * math.cos(elev), light_w[1] * math.cos(elev), math.sin(elev)])
    light_dir_view = -(view.R @ to_light)
    ambient, diffuse = rng.uniform(0.25, 0.6), rng.uniform(0.4, 0.9)
    tint = rng.uniform(0.85, 1.15, 3).astype(np.float32)
    V = body.num_vertices
    all_px, all_z, all_col, all_faces, all_ids, view_verts = [], [], [], [], [], []
    for i, (person, placement) in enumerate(zip(people, placements)):
        albedo = appearance.sample_albedo(body, rng)
        verts_view = _to_view(view, placement, person.vertices_m)
        view_verts.append(verts_view)
        px = project_points(verts_view, view.K, view.dist, view.max_radius)
        finite = np.isfinite(px[:, 0])
        if not np.any(finite):
            continue
        pmin, pmax = np.nanmin(px, 0), np.nanmax(px, 0)
        if pmax[0] < -1 or pmax[1] < -1 or pmin[0] > W or pmin[1] > H:
            continue
        normals = raster.vertex_normals(person.vertices_m.astype(np.float32), body.faces)
        Rb, _ = body_to_world(placement)
        normals_view = normals @ (view.R @ Rb).T.astype(np.float32)
        colours = appearance.shade(albedo, normals_view, light_dir_view.astype(np.float32), ambient, diffuse, tint)
        z = np.where(finite, verts_view[:, 2], -1.0)
        all_px.append(np.where(finite[:, None], px, 0.0))
        all_z.append(z)
        all_col.append(colours)
        all_faces.append(body.faces + V * len(all_faces))
        all_ids.append(np.full(len(body.faces), i, np.int16))
    if all_px:
        image, depth, ids = raster.rasterize(np.concatenate(all_px), np.concatenate(all_z), np.concatenate(all_col),
                                             np.concatenate(all_faces), np.concatenate(all_ids), H, W, background)
    else:
        image, depth, ids = background.astype(np.float32), np.full((H, W), np.inf, np.float32), np.full(
            (H, W), -1, np.int16)
    return image, depth, ids, view_verts


def finish_image(image: np.ndarray, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cheap anti-aliasing at silhouette edges (3x3 mean where the id changes), blur, noise -> uint8."""
    edge = np.zeros(ids.shape, bool)
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    edge[:, 1:] |= ids[:, :-1] != ids[:, 1:]
    edge[:-1] |= ids[:-1] != ids[1:]
    edge[1:] |= ids[:-1] != ids[1:]
    blurred = cv2.blur(image, (3, 3))
    image = np.where(edge[..., None], 0.5 * image + 0.5 * blurred, image)
    if rng.uniform() < 0.3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.0))
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise *= np.float32(rng.uniform(0.5, 3.0))
    image = image + noise + np.float32(rng.normal(0, 4))
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def joint_ground_truth(joints_view_m: np.ndarray, view: View, ids: np.ndarray, person_index: int,
                       extra_valid=None) -> Dict[str, np.ndarray]:
    """3D (mm), 2D (px), in-image and visible (own silhouette within the 3x3 neighbourhood) per joint."""
    H, W = view.hw
    px = project_points(joints_view_m, view.K, view.dist, view.max_radius)
    finite = np.all(np.isfinite(px), axis=1)
    in_image = finite & (px[:, 0] >= -0.5) & (px[:, 0] < W - 0.5) & (px[:, 1] >= -0.5) & (px[:, 1] < H - 0.5)
    if extra_valid is not None:
        in_image &= extra_valid
    cx = np.clip(np.round(np.nan_to_num(px[:, 0])).astype(np.int64), 0, W - 1)
    cy = np.clip(np.round(np.nan_to_num(px[:, 1])).astype(np.int64), 0, H - 1)
    offsets = np.array([-1, 0, 1])
    rows = np.clip(cy[:, None, None] + offsets[None, :, None], 0, H - 1)
    cols = np.clip(cx[:, None, None] + offsets[None, None, :], 0, W - 1)
    own = np.any(ids[rows, cols] == person_index, axis=(1, 2))
    return dict(joints3d_mm=(joints_view_m * 1000.0).astype(np.float32),
                joints2d_px=np.nan_to_num(px, nan=-1e4).astype(np.float32),
                in_image=in_image, visible=in_image & own)


def silhouette_box(ids: np.ndarray, person_index: int) -> Tuple[np.ndarray, int]:
    """Tight box of the visible silhouette (pixel-edge convention x0, y0, w, h) and its pixel count."""
    mask = ids == person_index
    count = int(mask.sum())
    if count == 0:
        return np.zeros(4, np.float32), 0
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    return np.array([cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1], np.float32), count


def projected_box(px: np.ndarray, hw) -> Tuple[np.ndarray, bool]:
    """Box of projected vertices clipped to the image (pixel-edge convention) and whether it was clipped."""
    H, W = hw
    finite = px[np.all(np.isfinite(px), axis=1)]
    if len(finite) == 0:
        return np.zeros(4, np.float32), True
    x0, y0 = finite.min(0) + 0.5
    x1, y1 = finite.max(0) + 0.5
    truncated = bool(x0 < 0 or y0 < 0 or x1 > W or y1 > H or len(finite) < len(px))
    x0, x1 = np.clip([x0, x1], 0, W)
    y0, y1 = np.clip([y0, y1], 0, H)
    return np.array([x0, y0, x1 - x0, y1 - y0], np.float32), truncated


# ------------------------------------------------------------------------------------------------ samples
def _layout(plan: SamplePlan, settings: Settings, image_hw):
    """Camera and placements: the target (person 0) is placed first, the camera pitched towards it; retried
    until at least half (crops) / a quarter (scenes) of the target's vertices project into the image."""
    rng = plan.rng
    need = 0.5 if plan.kind == 'crops' else 0.25
    target = plan.people[0]
    sub = target.vertices_m[::16]
    for attempt in range(30):
        d = _sample_distance(rng, settings)
        camera, az = sample_camera(rng, settings, image_hw, d)
        pos = _ground_position(d, az)
        placements = place_people(rng, camera, pos, len(plan.people), plan.kind, settings)
        view = View(camera.R_w2c, camera.t_w2c_m, camera.K, camera.dist, camera.image_hw, camera.max_radius)
        px = project_points(_to_view(view, placements[0], sub), camera.K, camera.dist, camera.max_radius)
        H, W = image_hw
        inside = np.isfinite(px[:, 0]) & (px[:, 0] >= 0) & (px[:, 0] < W) & (px[:, 1] >= 0) & (px[:, 1] < H)
        if inside.mean() >= need:
            break
    people = [plan.people[i] for i in range(len(placements))]
    return camera, view, people, placements


def render_scene_sample(body: BodyModel, plan: SamplePlan, settings: Settings) -> Dict[str, np.ndarray]:
    """A full image with every visible person's ground truth (camera frame, mm; image px)."""
    rng = plan.rng
    hw = settings.scene_hw or SCENE_SIZES_HW[rng.integers(len(SCENE_SIZES_HW))]
    camera, view, people, placements = _layout(plan, settings, hw)
    return _render_full(body, plan, settings, camera, view, people, placements)


def render_source_view(body: BodyModel, plan: SamplePlan, settings: Settings) -> Dict[str, np.ndarray]:
    """The full source image of a *crops* plan (same camera and people as :func:`render_crop_sample`), with
    scene-style ground truth; for consistency checks between the two sample kinds."""
    rng = plan.rng
    hw = CROP_SOURCE_SIZES_HW[rng.integers(len(CROP_SOURCE_SIZES_HW))]
    camera, view, people, placements = _layout(plan, settings, hw)
    return _render_full(body, plan, settings, camera, view, people, placements)


def _background(rng, settings: Settings, split: str, hw, view: View) -> np.ndarray:
    if settings.background.startswith('flat:'):
        return np.full((hw[0], hw[1], 3), float(settings.background[5:]), np.float32)
    if settings.background != 'random':
        raise ValueError(f"background must be 'random' or 'flat:<level>', got {settings.background!r}")
    return backgrounds.sample_background(rng, split, hw[0], hw[1], view.ground_px_to_world)


def _render_full(body, plan, settings, camera, view, people, placements):
    rng = plan.rng
    hw = camera.image_hw
    bg = _background(rng, settings, plan.split, hw, view)
    image, depth, ids, view_verts = render_people(body, view, people, placements, rng, bg)
    image = finish_image(image, ids, rng)
    per_person: Dict[str, list] = {}
    for i, person in enumerate(people):
        box, count = silhouette_box(ids, i)
        if count == 0:
            continue
        full_box, truncated = projected_box(project_points(view_verts[i][::4], view.K, view.dist, view.max_radius), hw)
        rec = dict(box_xywh=box, box_full_xywh=full_box, num_pixels=np.int32(count), truncated=truncated,
                   person_index=np.int32(i), phenotype=person.phenotype.astype(np.float32),
                   distance_m=np.float32(np.linalg.norm(placements[i].position_m)))
        for f in FORMATS:
            gt = joint_ground_truth(_to_view(view, placements[i], person.joints_m[f]), view, ids, i)
            rec.update({f'{f}/{k}': v for k, v in gt.items()})
        for k, v in rec.items():
            per_person.setdefault(k, []).append(v)
    sample = dict(image=image, K=camera.K.astype(np.float32), dist=camera.dist.astype(np.float32),
                  image_hw=np.array(hw, np.int32), R_w2c=camera.R_w2c.astype(np.float32),
                  t_w2c_mm=(camera.t_w2c_m * 1000).astype(np.float32), up_cam=camera.up_cam.astype(np.float32),
                  num_people=np.int32(len(per_person.get('box_xywh', []))))
    for k, v in per_person.items():
        sample['people/' + k] = np.stack(v)
    return sample


def crop_view(camera: SceneCamera, box_xywh: np.ndarray, size: int, rotation_deg: float):
    """The crop camera for a (detector-like) box: look-at rotation and zoom of :mod:`metrabs_ros.crops`, then an
    in-plane rotation. Returns ``(View, R cam->crop, K_crop, box_scale)``."""
    R0, scale = box_rotation_and_scale(box_xywh[None], camera.model, np.array([0.0, -1.0, 0.0]), size)
    th = math.radians(rotation_deg)
    c, s = math.cos(th), math.sin(th)
    Rz = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])     # Rz(-theta)
    R = Rz @ R0[0]
    K = np.array([[camera.K[0, 0] * scale[0], 0, size / 2], [0, camera.K[1, 1] * scale[0], size / 2], [0, 0, 1]])
    view = View(R @ camera.R_w2c, R @ camera.t_w2c_m, K, np.zeros(12), (size, size))
    return view, R, K, float(scale[0])


def render_crop_sample(body: BodyModel, plan: SamplePlan, settings: Settings) -> Dict[str, np.ndarray]:
    """A person-centred crop rendered directly through the crop camera, GT in the crop frame (mm) and crop px."""
    rng = plan.rng
    size = settings.crop_size
    hw = CROP_SOURCE_SIZES_HW[rng.integers(len(CROP_SOURCE_SIZES_HW))]
    camera, cam_view, people, placements = _layout(plan, settings, hw)
    px_full = project_points(_to_view(cam_view, placements[0], people[0].vertices_m[::4]), camera.K, camera.dist,
                             camera.max_radius)
    tight, truncated = projected_box(px_full, hw)
    box_size = max(tight[2], tight[3], 1.0)
    zoom = float(np.clip(np.exp(rng.normal(0, settings.box_scale_jitter)), 0.75, 1.3))
    centre = tight[:2] + tight[2:] / 2 + rng.normal(0, settings.box_shift_jitter, 2) * box_size
    wh = tight[2:] * zoom
    box = np.concatenate([centre - wh / 2, wh]).astype(np.float64)
    rot = rng.normal(0, settings.rotation_jitter_deg) if rng.uniform() < 0.9 else rng.uniform(-30, 30)
    view, R, K_crop, box_scale = crop_view(camera, box, size, rot)
    # crop pixels whose ray leaves the original image sample zeros, as the inference warp does
    grid = _crop_grid_in_image(camera, R, K_crop, size)
    bg = _background(rng, settings, plan.split, (size, size), view)
    image, depth, ids, view_verts = render_people(body, view, people, placements, rng, bg)
    if box_scale > 1.3:   # the source image had fewer pixels on the person than the crop: lose the detail
        small = max(8, int(round(size / box_scale)))
        image = cv2.resize(cv2.resize(image, (small, small), interpolation=cv2.INTER_AREA), (size, size),
                           interpolation=cv2.INTER_LINEAR)
    image = finish_image(image, ids, rng)
    image[~grid] = 0
    ids = np.where(grid, ids, -1).astype(np.int16)
    sample = dict(image=image, K=K_crop.astype(np.float32), R=R.astype(np.float32),
                  camera_K=camera.K.astype(np.float32), camera_dist=camera.dist.astype(np.float32),
                  camera_hw=np.array(hw, np.int32), R_w2c=camera.R_w2c.astype(np.float32),
                  t_w2c_mm=(camera.t_w2c_m * 1000).astype(np.float32), up_cam=camera.up_cam.astype(np.float32),
                  box_xywh=box.astype(np.float32), box_tight_xywh=tight, truncated=truncated,
                  rotation_deg=np.float32(rot), box_scale=np.float32(box_scale),
                  phenotype=people[0].phenotype.astype(np.float32),
                  distance_m=np.float32(np.linalg.norm(placements[0].position_m)),
                  num_people=np.int32(len(people)))
    for f in FORMATS:
        joints_view = _to_view(view, placements[0], people[0].joints_m[f])
        joints_cam = _to_view(cam_view, placements[0], people[0].joints_m[f])
        src_px = project_points(joints_cam, camera.K, camera.dist, camera.max_radius)
        H, W = hw
        in_source = (np.all(np.isfinite(src_px), 1) & (src_px[:, 0] >= -0.5) & (src_px[:, 0] < W - 0.5)
                     & (src_px[:, 1] >= -0.5) & (src_px[:, 1] < H - 0.5))
        gt = joint_ground_truth(joints_view, view, ids, 0, in_source)
        sample.update({f'{f}/{k}': v for k, v in gt.items()})
    return sample


def _crop_grid_in_image(camera: SceneCamera, R: np.ndarray, K_crop: np.ndarray, size: int) -> np.ndarray:
    """``[size, size]`` bool: the crop pixel's ray lands inside the original image."""
    M = (R.T @ np.linalg.inv(K_crop)).astype(np.float32)      # crop pixel (col, row, 1) -> camera ray
    ar = np.arange(size, dtype=np.float32)
    cols, rows = ar[None, :], ar[:, None]
    x = M[0, 0] * cols + M[0, 1] * rows + M[0, 2]
    y = M[1, 0] * cols + M[1, 1] * rows + M[1, 2]
    z = M[2, 0] * cols + M[2, 1] * rows + M[2, 2]
    front = z > 1e-6
    with np.errstate(divide='ignore', invalid='ignore'):
        xn, yn = x / z, y / z
    if np.any(camera.dist):
        from metrabs_ros.camera import distort_normalized
        front &= np.hypot(xn, yn) <= camera.max_radius
        xy = distort_normalized(np.stack([xn, yn], -1), camera.dist)
        xn, yn = xy[..., 0], xy[..., 1]
    K = camera.K
    u = K[0, 0] * xn + K[0, 1] * yn + K[0, 2]
    v = K[1, 1] * yn + K[1, 2]
    H, W = camera.image_hw
    with np.errstate(invalid='ignore'):
        return front & (u >= -0.5) & (u < W - 0.5) & (v >= -0.5) & (v < H - 0.5)


def render_sample(body: BodyModel, plan: SamplePlan, settings: Settings) -> Dict[str, np.ndarray]:
    if plan.kind == 'crops':
        return render_crop_sample(body, plan, settings)
    return render_scene_sample(body, plan, settings)


def generate_samples(body: BodyModel, seed: int, split: str, kind: str, indices: Sequence[int],
                     settings: Settings, batch_size: int = 16) -> List[Dict[str, np.ndarray]]:
    """Samples ``indices`` (bodies skinned ``batch_size`` samples at a time, aligned to multiples of it)."""
    out = []
    indices = list(indices)
    for start in range(0, len(indices), batch_size):
        plans = [plan_sample(seed, split, kind, i, settings) for i in indices[start:start + batch_size]]
        skin_plans(body, plans)
        out.extend(render_sample(body, p, settings) for p in plans)
    return out
