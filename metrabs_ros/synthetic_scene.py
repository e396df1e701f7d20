"""Synthetic people with exact ground truth: a small numpy ray caster for the demo camera and end-to-end tests.

Each person is a parametric articulated skeleton in the ``smpl_24`` joint format (plausible adult bone lengths,
scaled by a height parameter) posed by a standing / walking-cycle / random-joint-angle generator and dressed in
capsules (limbs, torso, neck) plus an ellipsoid head. Images are made by casting one ray per pixel centre through
the :class:`~metrabs_ros.camera.CameraModel` (pixels are undistorted to rays, so a distorted camera yields exactly
the distorted view) and intersecting it analytically with every primitive whose culling box it may touch
(z-buffer; Lambert shading or flat per-person colours). No torch, no OpenGL: numpy only.

Frames and units:

* camera frame: x right, y down, z forward, millimetres (the frame of ``joints3d_mm``);
* world frame (internal): the camera sits at the origin; X right, Y down (gravity), Z forward and horizontal;
  the ground is the plane ``Y = camera_height_mm``; the camera is pitched down by ``camera_pitch_deg`` about X;
* body frame (internal, per person, as SMPL): x = the person's left, y = up, z = the person's forward;
* pixels: the centre of the top-left pixel is (0, 0). Boxes are pixel-*area* extents: a silhouette covering
  pixel columns ``x0..x1`` has ``x = x0 - 0.5`` and ``w = x1 - x0 + 1``.

Main entry points: :func:`render_scene` (one random scene, deterministic from a seed), :func:`animate_scene` /
:func:`walking_frames` (people walking smoothly on closed paths; frame at time ``t`` is reproducible),
:func:`compose_scene` (explicitly placed people), :func:`render_primitives` (the ray caster itself) and
:func:`save_scene_example`. ``python -m metrabs_ros.synthetic_scene --out x.png --benchmark 10`` writes an example
and times the renderer (640x480, 3 people: roughly 30-60 ms of one CPU core, depending on the background).

The per-pixel rays of a camera are computed once and cached (a distorted camera: about 0.2-0.6 s for 640x480,
Newton-refined so that every ray re-projects onto its pixel centre to < 1e-4 px; pixels outside the lens model's
valid field stay black).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from metrabs_ros.camera import CameraModel
from metrabs_ros.skeletons import get_skeleton

# ----------------------------------------------------------------------------------------------------------------
# Skeleton
# ----------------------------------------------------------------------------------------------------------------

JOINT_NAMES: Tuple[str, ...] = get_skeleton('smpl_24').joint_names
NUM_JOINTS = len(JOINT_NAMES)
_J = {name: i for i, name in enumerate(JOINT_NAMES)}

_PARENT_NAMES = {
    'pelv': None, 'lhip': 'pelv', 'rhip': 'pelv', 'spi1': 'pelv', 'lkne': 'lhip', 'rkne': 'rhip',
    'spi2': 'spi1', 'lank': 'lkne', 'rank': 'rkne', 'spi3': 'spi2', 'ltoe': 'lank', 'rtoe': 'rank',
    'neck': 'spi3', 'lcla': 'spi3', 'rcla': 'spi3', 'head': 'neck', 'lsho': 'lcla', 'rsho': 'rcla',
    'lelb': 'lsho', 'relb': 'rsho', 'lwri': 'lelb', 'rwri': 'relb', 'lhan': 'lwri', 'rhan': 'rwri'}
PARENTS = np.array([-1 if _PARENT_NAMES[n] is None else _J[_PARENT_NAMES[n]] for n in JOINT_NAMES], np.int64)

REFERENCE_HEIGHT_MM = 1700.0

# Offset of each joint from its parent in the parent's rest frame (body frame: x left, y up, z forward), mm, for
# a 1700 mm adult standing upright with the arms hanging. Left-side values; the right side mirrors x.
_LEFT_OFFSETS_MM = {
    'pelv': (0, 0, 0), 'lhip': (88, -80, 5), 'spi1': (0, 105, -15), 'lkne': (0, -405, 0),
    'spi2': (0, 130, 5), 'lank': (0, -400, -20), 'spi3': (0, 55, 10), 'ltoe': (5, -40, 130),
    'neck': (0, 195, -25), 'lcla': (70, 115, -15), 'head': (0, 85, 25), 'lsho': (105, -15, -10),
    'lelb': (0, -275, 0), 'lwri': (0, -250, 0), 'lhan': (0, -85, 0)}


def _rest_offsets() -> np.ndarray:
    offsets = np.zeros((NUM_JOINTS, 3), np.float64)
    for name, i in _J.items():
        if name in _LEFT_OFFSETS_MM:
            offsets[i] = _LEFT_OFFSETS_MM[name]
        else:  # right side: mirror the left joint across the sagittal plane
            offsets[i] = _LEFT_OFFSETS_MM['l' + name[1:]]
            offsets[i, 0] *= -1
    return offsets


REST_OFFSETS_MM = _rest_offsets()

_depths = np.zeros(NUM_JOINTS, np.int64)
for _i in range(NUM_JOINTS):  # module set-up, not per frame
    _p = PARENTS[_i]
    _depths[_i] = 0 if _p < 0 else _depths[_p] + 1
_FK_LEVELS = [np.flatnonzero(_depths == d) for d in range(1, int(_depths.max()) + 1)]


def rotation_matrices_zxy(angles_rad: np.ndarray) -> np.ndarray:
    """Rotation matrices ``Rz(a[...,2]) @ Rx(a[...,0]) @ Ry(a[...,1])``, shape ``[..., 3, 3]``.

    For a limb hanging along -y this applies the twist about the limb first, then the flexion, then the side
    (ab-/adduction) rotation.
    """
    a = np.asarray(angles_rad, np.float64)
    cx, sx = np.cos(a[..., 0]), np.sin(a[..., 0])
    cy, sy = np.cos(a[..., 1]), np.sin(a[..., 1])
    cz, sz = np.cos(a[..., 2]), np.sin(a[..., 2])
    one, zero = np.ones_like(cx), np.zeros_like(cx)
    rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).reshape(a.shape[:-1] + (3, 3))
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(a.shape[:-1] + (3, 3))
    rz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).reshape(a.shape[:-1] + (3, 3))
    return rz @ rx @ ry


def forward_kinematics(angles_rad: np.ndarray, offsets_mm: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Joint positions and global rotations of poses ``angles_rad [..., 24, 3]`` (body frame, pelvis at origin).

    ``angles_rad[..., j]`` are joint ``j``'s local rotation angles (see :func:`rotation_matrices_zxy`); the
    rotation at a joint moves its children (``pos_child = pos_j + R_j @ offset_child``). The loop runs over the
    depth levels of the kinematic tree (8), vectorised over joints and poses.

    Returns ``(positions_mm [..., 24, 3], rotations [..., 24, 3, 3])`` in the body frame.
    """
    local = rotation_matrices_zxy(angles_rad)
    offsets = np.broadcast_to(np.asarray(offsets_mm, np.float64), local.shape[:-1])
    rotations = np.empty_like(local)
    positions = np.empty(local.shape[:-1], np.float64)
    rotations[..., 0, :, :] = local[..., 0, :, :]
    positions[..., 0, :] = offsets[..., 0, :]
    for idx in _FK_LEVELS:
        par = PARENTS[idx]
        positions[..., idx, :] = positions[..., par, :] + np.einsum(
            '...ij,...j->...i', rotations[..., par, :, :], offsets[..., idx, :])
        rotations[..., idx, :, :] = rotations[..., par, :, :] @ local[..., idx, :, :]
    return positions, rotations


# ----------------------------------------------------------------------------------------------------------------
# Pose generators (angles [24, 3] in radians; anatomical conventions -> local rotation angles)
# ----------------------------------------------------------------------------------------------------------------

def _set_limb(angles, side: str, joint: str, flex_deg=0.0, abduct_deg=0.0, twist_deg=0.0, flex_sign=-1.0):
    """Anatomical angles of a left/right limb joint. flex: forward (hip, shoulder, elbow: ``flex_sign=-1``) or
    backward (knee: ``flex_sign=+1``); abduct: away from the midline; twist: about the bone, outwards."""
    mirror = 1.0 if side == 'l' else -1.0
    j = _J[side + joint]
    angles[j, 0] = flex_sign * math.radians(flex_deg)
    angles[j, 1] = mirror * math.radians(twist_deg)
    angles[j, 2] = mirror * math.radians(abduct_deg)


def _set_spine(angles, joint: str, forward_deg=0.0, left_bend_deg=0.0, twist_left_deg=0.0):
    j = _J[joint]
    angles[j, 0] = math.radians(forward_deg)
    angles[j, 1] = math.radians(twist_left_deg)
    angles[j, 2] = -math.radians(left_bend_deg)


def standing_pose(rng: np.random.Generator) -> np.ndarray:
    """A relaxed upright pose with small random variation, ``[24, 3]`` radians."""
    a = np.zeros((NUM_JOINTS, 3))
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    for s in 'lr':
        _set_limb(a, s, 'hip', u(-4, 6), u(0, 6), u(-8, 8))
        _set_limb(a, s, 'kne', u(0, 8), flex_sign=1.0)
        _set_limb(a, s, 'ank', u(-5, 5), flex_sign=1.0)
        _set_limb(a, s, 'sho', u(-10, 15), u(4, 15), u(-10, 10))
        _set_limb(a, s, 'elb', u(5, 35))
        _set_limb(a, s, 'wri', u(-10, 10))
    for j in ('spi1', 'spi2', 'spi3'):
        _set_spine(a, j, u(-2, 4), u(-2, 2), u(-4, 4))
    _set_spine(a, 'neck', u(-5, 10), u(-4, 4), u(-15, 15))
    _set_spine(a, 'head', u(-5, 10), u(-3, 3), u(-10, 10))
    return a


def walking_pose(phase_rad: float, arm_swing_deg: float = 22.0, hip_swing_deg: float = 21.0) -> np.ndarray:
    """One instant of a walking cycle, ``[24, 3]`` radians; ``phase_rad`` advances by 2π per stride (two steps).

    Phase 0: the left leg swings forward through the vertical with the knee most flexed; the arms swing opposite
    to the legs.
    """
    a = np.zeros((NUM_JOINTS, 3))
    for s, ph in (('l', phase_rad), ('r', phase_rad + math.pi)):
        sin, cos = math.sin(ph), math.cos(ph)
        _set_limb(a, s, 'hip', 4.0 + hip_swing_deg * sin, 2.0)
        _set_limb(a, s, 'kne', 6.0 + 52.0 * max(0.0, math.cos(ph - 0.35)) ** 2, flex_sign=1.0)
        _set_limb(a, s, 'ank', -4.0 + 10.0 * sin, flex_sign=1.0)
        _set_limb(a, s, 'sho', -arm_swing_deg * sin, 6.0)
        _set_limb(a, s, 'elb', 14.0 + 16.0 * max(0.0, -sin))
    sin = math.sin(phase_rad)
    _set_spine(a, 'pelv', 0.0, 0.0, 5.0 * sin)
    _set_spine(a, 'spi1', 4.0, 0.0, 0.0)
    _set_spine(a, 'spi3', 0.0, 0.0, -6.0 * sin)
    _set_spine(a, 'neck', 3.0)
    return a


def random_pose(rng: np.random.Generator) -> np.ndarray:
    """Random joint angles within (conservative) anatomical limits, ``[24, 3]`` radians."""
    a = np.zeros((NUM_JOINTS, 3))
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    for s in 'lr':
        _set_limb(a, s, 'hip', u(-20, 80), u(-5, 35), u(-25, 25))
        _set_limb(a, s, 'kne', u(0, 110), flex_sign=1.0)
        _set_limb(a, s, 'ank', u(-20, 20), flex_sign=1.0)
        _set_limb(a, s, 'sho', u(-40, 150), u(0, 120), u(-40, 40))
        _set_limb(a, s, 'elb', u(0, 135), 0.0, u(-30, 30))
        _set_limb(a, s, 'wri', u(-30, 30), u(-15, 15))
        _set_limb(a, s, 'cla', 0.0, u(-5, 10))
    _set_spine(a, 'spi1', u(-8, 25), u(-10, 10), u(-15, 15))
    _set_spine(a, 'spi2', u(-5, 15), u(-8, 8), u(-12, 12))
    _set_spine(a, 'spi3', u(-5, 10), u(-5, 5), u(-10, 10))
    _set_spine(a, 'neck', u(-20, 30), u(-10, 10), u(-40, 40))
    _set_spine(a, 'head', u(-15, 20), u(-8, 8), u(-20, 20))
    return a


# ----------------------------------------------------------------------------------------------------------------
# Body primitives
# ----------------------------------------------------------------------------------------------------------------

# Capsules: (joint a, offset a in joint a's frame, joint b, offset b, radius at 1700 mm, clothing part).
_SKIN, _SHIRT, _PANTS, _SHOES, _SLEEVE = range(5)
_CAPSULE_TABLE = [
    ('lhip', (0, 0, 0), 'rhip', (0, 0, 0), 92, _PANTS),
    ('pelv', (0, 20, 0), 'spi2', (0, 0, 0), 120, _SHIRT),
    ('spi2', (0, 0, 0), 'spi3', (0, 60, -5), 128, _SHIRT),
    ('lcla', (0, 0, 0), 'rcla', (0, 0, 0), 80, _SHIRT),
    ('neck', (0, -10, 0), 'head', (0, 0, 0), 52, _SKIN),
]
for _s in 'lr':
    _CAPSULE_TABLE += [
        (_s + 'cla', (0, 0, 0), _s + 'sho', (0, 0, 0), 66, _SHIRT),
        (_s + 'sho', (0, 0, 0), _s + 'elb', (0, 0, 0), 48, _SHIRT),
        (_s + 'elb', (0, 0, 0), _s + 'wri', (0, 0, 0), 40, _SLEEVE),
        (_s + 'wri', (0, 0, 0), _s + 'han', (0, 0, 0), 37, _SKIN),
        (_s + 'hip', (0, 0, 0), _s + 'kne', (0, 0, 0), 78, _PANTS),
        (_s + 'kne', (0, 0, 0), _s + 'ank', (0, 0, 0), 55, _PANTS),
        (_s + 'ank', (0, -25, -45), _s + 'toe', (0, 0, 0), 41, _SHOES),
    ]
_CAP_JA = np.array([_J[r[0]] for r in _CAPSULE_TABLE])
_CAP_OA = np.array([r[1] for r in _CAPSULE_TABLE], np.float64)
_CAP_JB = np.array([_J[r[2]] for r in _CAPSULE_TABLE])
_CAP_OB = np.array([r[3] for r in _CAPSULE_TABLE], np.float64)
_CAP_R = np.array([r[4] for r in _CAPSULE_TABLE], np.float64)
_CAP_PART = np.array([r[5] for r in _CAPSULE_TABLE])
# Head ellipsoid: centre offset in the head joint's frame, radii (left-right, up-down, front-back).
_HEAD_CENTRE_OFFSET_MM = np.array([0.0, 60.0, 20.0])
_HEAD_RADII_MM = np.array([78.0, 105.0, 92.0])


@dataclasses.dataclass
class Primitives:
    """Capsules and ellipsoids in the camera frame (mm), each with an albedo (RGB 0..255) and an owner index."""

    capsule_a_mm: np.ndarray         # [C, 3] segment start
    capsule_b_mm: np.ndarray         # [C, 3] segment end
    capsule_radius_mm: np.ndarray    # [C]
    capsule_rgb: np.ndarray          # [C, 3]
    capsule_owner: np.ndarray        # [C] int
    ellipsoid_centre_mm: np.ndarray  # [E, 3]
    ellipsoid_axes: np.ndarray       # [E, 3, 3] columns = the unit axes in the camera frame
    ellipsoid_radii_mm: np.ndarray   # [E, 3] radius along each axis
    ellipsoid_rgb: np.ndarray        # [E, 3]
    ellipsoid_owner: np.ndarray      # [E] int

    @staticmethod
    def empty() -> 'Primitives':
        return Primitives(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros((0, 3)),
                          np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 3, 3)), np.zeros((0, 3)),
                          np.zeros((0, 3)), np.zeros(0, np.int64))

    @staticmethod
    def concatenate(items: Sequence['Primitives']) -> 'Primitives':
        if not items:
            return Primitives.empty()
        return Primitives(*[np.concatenate([getattr(p, f.name) for p in items])
                            for f in dataclasses.fields(Primitives)])


@dataclasses.dataclass
class BodyParams:
    """Shape and appearance of one synthetic person."""

    height_mm: float = REFERENCE_HEIGHT_MM
    girth: float = 1.0                          # radius multiplier of torso and limbs
    clothing_rgb: np.ndarray = dataclasses.field(  # [5, 3]: skin, shirt, pants, shoes, forearm (sleeve or skin)
        default_factory=lambda: np.array([[224, 172, 140], [60, 110, 170], [50, 50, 60], [30, 30, 30],
                                          [224, 172, 140]], np.float64))

    @property
    def colour_rgb(self) -> np.ndarray:
        """The person's key colour: the shirt colour (the only colour when rendered flat)."""
        return np.asarray(self.clothing_rgb[_SHIRT], np.float64)


_SKIN_TONES = np.array([[241, 194, 167], [224, 172, 140], [198, 134, 96], [160, 104, 70], [110, 70, 45],
                        [80, 52, 36]], np.float64)


def random_body(rng: np.random.Generator) -> BodyParams:
    """Random adult body height (1550..1950 mm), girth and clothing colours."""
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))]
    shirt = _hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.3, 0.9), rng.uniform(0.35, 0.95))
    pants = _hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.1, 0.6), rng.uniform(0.15, 0.55))
    shoes = _hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.3), rng.uniform(0.05, 0.35))
    sleeve = shirt if rng.uniform() < 0.5 else skin
    return BodyParams(height_mm=float(rng.uniform(1550, 1950)), girth=float(rng.uniform(0.88, 1.18)),
                      clothing_rgb=np.stack([skin, shirt, pants, shoes, sleeve]))


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return 255.0 * v * (1.0 - s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))


def pose_person(angles_rad: np.ndarray, body: BodyParams, ground_xz_mm: Sequence[float], yaw_rad: float,
                world_to_camera: np.ndarray, camera_height_mm: float, owner: int = 0,
                flat_rgb: Optional[Sequence[float]] = None) -> Tuple[np.ndarray, Primitives]:
    """Pose a person, stand it on the ground and express it in the camera frame.

    Args:
      angles_rad: ``[24, 3]`` joint angles (from the pose generators).
      body: shape and colours.
      ground_xz_mm: where the pelvis stands on the ground, world (X right, Z forward) mm.
      yaw_rad: heading; 0 = facing the camera, positive turns the person's forward towards +X.
      world_to_camera: ``[3, 3]`` rotation (see :func:`world_to_camera_rotation`).
      camera_height_mm: height of the camera above the ground.
      owner: index written to the primitives (person id in the rendered index map).
      flat_rgb: if given, every primitive gets this colour (flat colour-key rendering).

    Returns ``(joints3d_mm [24, 3] camera frame, primitives camera frame)``. The lowest point of the body surface
    touches the ground plane.
    """
    scale = body.height_mm / REFERENCE_HEIGHT_MM
    joints_b, rots_b = forward_kinematics(angles_rad, REST_OFFSETS_MM * scale)
    cap_a = joints_b[_CAP_JA] + np.einsum('nij,nj->ni', rots_b[_CAP_JA], _CAP_OA * scale)
    cap_b = joints_b[_CAP_JB] + np.einsum('nij,nj->ni', rots_b[_CAP_JB], _CAP_OB * scale)
    cap_r = _CAP_R * scale * body.girth
    head_rot = rots_b[_J['head']]
    head_c = joints_b[_J['head']] + head_rot @ (_HEAD_CENTRE_OFFSET_MM * scale)
    head_radii = _HEAD_RADII_MM * scale
    # Lowest surface point (body y is up): capsule ends minus radius; ellipsoid support along -y.
    head_low = head_c[1] - np.linalg.norm(head_rot[1, :] * head_radii)
    lowest = min(float(np.min(np.minimum(cap_a[:, 1], cap_b[:, 1]) - cap_r)), float(head_low))

    forward = np.array([math.sin(yaw_rad), 0.0, -math.cos(yaw_rad)])
    up = np.array([0.0, -1.0, 0.0])
    body_to_world = np.stack([np.cross(up, forward), up, forward], axis=1)  # columns: left, up, forward
    body_to_cam = world_to_camera @ body_to_world
    origin_world = np.array([ground_xz_mm[0], camera_height_mm, ground_xz_mm[1]]) + body_to_world @ [0, -lowest, 0]
    origin_cam = world_to_camera @ origin_world

    to_cam = lambda p: p @ body_to_cam.T + origin_cam  # noqa: E731
    if flat_rgb is not None:
        cap_rgb = np.broadcast_to(np.asarray(flat_rgb, np.float64), (len(cap_r), 3)).copy()
        head_rgb = np.asarray(flat_rgb, np.float64)[None]
    else:
        cap_rgb = np.asarray(body.clothing_rgb, np.float64)[_CAP_PART]
        head_rgb = np.asarray(body.clothing_rgb, np.float64)[[_SKIN]]
    prims = Primitives(
        to_cam(cap_a), to_cam(cap_b), cap_r, cap_rgb, np.full(len(cap_r), owner, np.int64),
        to_cam(head_c[None]), (body_to_cam @ head_rot)[None], head_radii[None], head_rgb,
        np.array([owner], np.int64))
    return to_cam(joints_b), prims


def world_to_camera_rotation(camera_pitch_deg: float) -> np.ndarray:
    """Rotation world → camera for a level camera pitched down by ``camera_pitch_deg`` (rows: camera axes)."""
    p = math.radians(camera_pitch_deg)
    return np.array([[1.0, 0.0, 0.0], [0.0, math.cos(p), -math.sin(p)], [0.0, math.sin(p), math.cos(p)]])


# ----------------------------------------------------------------------------------------------------------------
# Ray caster
# ----------------------------------------------------------------------------------------------------------------

_TILE_PX = 8
_MAX_PAIRS_PER_CHUNK = 400_000
_NEAR_MM = 1.0
_LIGHT_DIR_CAM = np.array([-0.35, -0.75, -0.56]) / np.linalg.norm([-0.35, -0.75, -0.56])  # towards the light
_AMBIENT = 0.32
_RAY_CACHE: dict = {}


@dataclasses.dataclass
class _PixelRays:
    rays: np.ndarray       # [H*W, 3] undistorted ray of each pixel centre, z = 1 (NaN where invalid)
    tile_lo: np.ndarray    # [Ty, Tx, 2] min of the rays' (x, y) over each tile (+inf for an all-invalid tile)
    tile_hi: np.ndarray    # [Ty, Tx, 2] max


def _distortion_jacobian(camera: CameraModel, xy: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Finite-difference Jacobian ``[N, 2, 2]`` of the camera's distortion at normalised points ``xy [N, 2]``."""
    base = camera.distort_normalized(xy)
    dx = (camera.distort_normalized(xy + [eps, 0.0]) - base) / eps
    dy = (camera.distort_normalized(xy + [0.0, eps]) - base) / eps
    return np.stack([dx, dy], axis=-1)


def _undistort_checked(camera: CameraModel, xy_distorted: np.ndarray, newton_steps: int = 12) -> np.ndarray:
    """Undistort normalised points ``[N, 2]`` exactly: the camera's fixed-point inverse, refined by Newton steps on
    the forward model; NaN where no orientation-preserving inverse exists (outside the lens model's valid field,
    e.g. beyond the fold of a strong barrel polynomial)."""
    xy_fp = camera.undistort_normalized(xy_distorted)
    with np.errstate(all='ignore'):
        err_fp = np.linalg.norm(camera.distort_normalized(xy_fp) - xy_distorted, axis=-1)
        err_id = np.linalg.norm(camera.distort_normalized(xy_distorted) - xy_distorted, axis=-1)
        xy = np.where((err_fp <= err_id)[:, None] & np.isfinite(xy_fp), xy_fp, xy_distorted)
        for _ in range(newton_steps):  # Newton iterations (a fixed small number), vectorised over pixels
            residual = camera.distort_normalized(xy) - xy_distorted
            todo = np.flatnonzero(~(np.linalg.norm(residual, axis=-1) < 1e-11))
            if len(todo) == 0:
                break
            jac = _distortion_jacobian(camera, xy[todo])
            step = np.linalg.solve(jac + 1e-15 * np.eye(2), residual[todo][..., None])[..., 0]
            xy[todo] = xy[todo] - step
        residual_px = np.linalg.norm(camera.distort_normalized(xy) - xy_distorted, axis=-1) * \
            camera.intrinsic_matrix[0, 0]
        valid = (residual_px < 1e-4) & (np.linalg.det(_distortion_jacobian(camera, xy)) > 0)
    xy[~valid] = np.nan
    return xy


def _pixel_rays(camera: CameraModel, image_hw: Tuple[int, int]) -> _PixelRays:
    key = (camera.intrinsic_matrix.tobytes(), camera.distortion_coeffs.tobytes(), camera.distortion_model,
           int(image_hw[0]), int(image_hw[1]))
    cached = _RAY_CACHE.get(key)
    if cached is not None:
        return cached
    h, w = key[3], key[4]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    if camera.is_distorted:
        K = camera.intrinsic_matrix
        y_d = (ys - K[1, 2]) / K[1, 1]
        x_d = (xs - K[0, 2] - K[0, 1] * y_d) / K[0, 0]
        xy = _undistort_checked(camera, np.stack([x_d, y_d], axis=-1).reshape(-1, 2)).reshape(h, w, 2)
        rays = np.concatenate([xy, np.ones((h, w, 1))], axis=-1)
    else:
        rays = camera.pixels_to_rays(np.stack([xs, ys], axis=-1))
    ty, tx = -(-h // _TILE_PX), -(-w // _TILE_PX)
    padded = np.full((ty * _TILE_PX, tx * _TILE_PX, 2), np.nan)
    padded[:h, :w] = rays[..., :2]
    tiles = padded.reshape(ty, _TILE_PX, tx, _TILE_PX, 2)
    finite = np.isfinite(tiles)
    tile_lo = np.where(finite, tiles, np.inf).min(axis=(1, 3))
    tile_hi = np.where(finite, tiles, -np.inf).max(axis=(1, 3))
    result = _PixelRays(rays.reshape(-1, 3), tile_lo, tile_hi)
    if len(_RAY_CACHE) >= 8:
        _RAY_CACHE.pop(next(iter(_RAY_CACHE)))
    _RAY_CACHE[key] = result
    return result


def _pixel_rects(lo_mm: np.ndarray, hi_mm: np.ndarray, pr: _PixelRays, image_hw) -> np.ndarray:
    """Pixel rectangles ``[N, 4]`` (row0, row1, col0, col1; end-exclusive) that contain every pixel whose ray can
    meet the axis-aligned 3D box ``[lo_mm, hi_mm]`` (conservative, at tile granularity)."""
    h, w = image_hw
    n = len(lo_mm)
    with np.errstate(divide='ignore', invalid='ignore'):
        zs = np.stack([lo_mm[:, 2], hi_mm[:, 2]], -1)[:, None, :]           # [N, 1, 2]
        ratios_lo = lo_mm[:, :2, None] / zs                                  # [N, 2, 2]
        ratios_hi = hi_mm[:, :2, None] / zs
    nlo = np.minimum(ratios_lo.min(-1), ratios_hi.min(-1))                   # [N, 2] normalised x, y
    nhi = np.maximum(ratios_lo.max(-1), ratios_hi.max(-1))
    crosses = lo_mm[:, 2] <= _NEAR_MM
    nlo[crosses] = -np.inf
    nhi[crosses] = np.inf
    behind = hi_mm[:, 2] <= _NEAR_MM
    ok = ((pr.tile_hi[None, ..., 0] >= nlo[:, None, None, 0]) & (pr.tile_lo[None, ..., 0] <= nhi[:, None, None, 0])
          & (pr.tile_hi[None, ..., 1] >= nlo[:, None, None, 1]) & (pr.tile_lo[None, ..., 1] <= nhi[:, None, None, 1]))
    ok &= ~behind[:, None, None]
    rows_any, cols_any = ok.any(axis=2), ok.any(axis=1)                      # [N, Ty], [N, Tx]
    has = rows_any.any(axis=1)
    r0 = np.argmax(rows_any, axis=1)
    r1 = rows_any.shape[1] - np.argmax(rows_any[:, ::-1], axis=1)
    c0 = np.argmax(cols_any, axis=1)
    c1 = cols_any.shape[1] - np.argmax(cols_any[:, ::-1], axis=1)
    rects = np.stack([r0 * _TILE_PX, np.minimum(r1 * _TILE_PX, h), c0 * _TILE_PX, np.minimum(c1 * _TILE_PX, w)], -1)
    rects[~has] = 0
    return rects.reshape(n, 4)


def _enumerate_pairs(rects: np.ndarray, image_w: int, prim_ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """All (pixel index, primitive index) pairs of the given rectangles, vectorised."""
    heights = rects[prim_ids, 1] - rects[prim_ids, 0]
    widths = rects[prim_ids, 3] - rects[prim_ids, 2]
    areas = heights * widths
    total = int(areas.sum())
    prim = np.repeat(prim_ids, areas)
    local = np.arange(total) - np.repeat(np.cumsum(areas) - areas, areas)
    w_rep = np.repeat(widths, areas)
    rows = rects[prim, 0] + local // np.maximum(w_rep, 1)
    cols = rects[prim, 2] + local % np.maximum(w_rep, 1)
    return rows * image_w + cols, prim


def _chunks(rects: np.ndarray) -> List[np.ndarray]:
    areas = (rects[:, 1] - rects[:, 0]) * (rects[:, 3] - rects[:, 2])
    ids = np.flatnonzero(areas > 0)
    chunks, start, acc = [], 0, 0
    for k, i in enumerate(ids):  # loop over primitives (tens), only to bound memory
        acc += areas[i]
        if acc > _MAX_PAIRS_PER_CHUNK and k > start:
            chunks.append(ids[start:k])
            start, acc = k, areas[i]
    if start < len(ids):
        chunks.append(ids[start:])
    return chunks


def _intersect_capsules(d, a, b, r):
    """Nearest hit of rays ``t·d`` (origin at the camera) with capsules; returns (t, hit, normal)."""
    with np.errstate(divide='ignore', invalid='ignore'):
        ba = b - a
        oa = -a
        baba = np.einsum('ij,ij->i', ba, ba)
        bard = np.einsum('ij,ij->i', ba, d)
        baoa = np.einsum('ij,ij->i', ba, oa)
        rdoa = np.einsum('ij,ij->i', d, oa)
        oaoa = np.einsum('ij,ij->i', oa, oa)
        rr = np.einsum('ij,ij->i', d, d)
        r2 = r * r
        qa = baba * rr - bard * bard
        qb = baba * rdoa - baoa * bard
        qc = baba * oaoa - baoa * baoa - r2 * baba
        disc = qb * qb - qa * qc
        t_cyl = (-qb - np.sqrt(disc)) / qa
        axial = baoa + t_cyl * bard
        on_body = (disc >= 0) & (axial > 0) & (axial < baba)
        # End caps: the sphere at the end beyond which the infinite-cylinder hit lies (or a when degenerate).
        use_a = ~(axial > 0)
        centre = np.where(use_a[:, None], a, b)
        oc = -centre
        cb = np.einsum('ij,ij->i', d, oc)
        cc = np.einsum('ij,ij->i', oc, oc) - r2
        disc_s = cb * cb - rr * cc
        t_sph = (-cb - np.sqrt(disc_s)) / rr
        cap_hit = ~on_body & (disc_s >= 0) & ((disc >= 0) | ~(baba > 0))
        t = np.where(on_body, t_cyl, t_sph)
        hit = (on_body | cap_hit) & (t > 0)
        p = t[:, None] * d
        foot = np.where(on_body[:, None], a + ba * (axial / np.where(baba > 0, baba, 1.0))[:, None], centre)
        normal = (p - foot) / r[:, None]
    return t, hit, normal


def _intersect_ellipsoids(d, centre, axes, radii):
    """Nearest hit of rays ``t·d`` with ellipsoids; returns (t, hit, unit normal)."""
    with np.errstate(divide='ignore', invalid='ignore'):
        o_l = np.einsum('nji,nj->ni', axes, -centre) / radii    # axes.T @ (0 - c), scaled to the unit sphere
        d_l = np.einsum('nji,nj->ni', axes, d) / radii
        qa = np.einsum('ij,ij->i', d_l, d_l)
        qb = np.einsum('ij,ij->i', o_l, d_l)
        qc = np.einsum('ij,ij->i', o_l, o_l) - 1.0
        disc = qb * qb - qa * qc
        t = (-qb - np.sqrt(disc)) / qa
        hit = (disc >= 0) & (t > 0)
        p_l = o_l + t[:, None] * d_l
        normal = np.einsum('nij,nj->ni', axes, p_l / radii)
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    return t, hit, normal


@dataclasses.dataclass
class RenderResult:
    """Output of :func:`render_primitives`."""

    image_rgb: np.ndarray   # uint8 [H, W, 3]
    depth_mm: np.ndarray    # float32 [H, W], z of the visible surface (camera frame), inf on the background
    owner: np.ndarray       # int32 [H, W], owner index of the visible primitive, -1 on the background


def render_primitives(camera: CameraModel, image_hw: Tuple[int, int], primitives: Primitives,
                      background_rgb: Optional[np.ndarray] = None, shading: bool = True) -> RenderResult:
    """Ray-cast capsules and ellipsoids (camera frame, mm) through ``camera``, one ray per pixel centre.

    Each pixel's ray is the camera's undistorted back-projection of the pixel (so lens distortion is rendered
    exactly); the visible surface is the nearest analytic intersection (z-buffer on the z coordinate). Work is
    vectorised over all (pixel, primitive) pairs inside each primitive's conservative pixel rectangle.

    Args:
      background_rgb: ``uint8 [H, W, 3]`` (default: mid grey).
      shading: Lambert shading (ambient + directional light); False writes each primitive's colour exactly.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    pr = _pixel_rays(camera, (h, w))
    depth = np.full(h * w, np.inf)
    owner = np.full(h * w, -1, np.int32)
    if background_rgb is None:
        colour = np.full((h * w, 3), 128, np.uint8)
    else:
        background_rgb = np.asarray(background_rgb)
        if background_rgb.shape != (h, w, 3):
            raise ValueError(f'background must be [{h}, {w}, 3], got {background_rgb.shape}')
        colour = np.array(background_rgb, np.uint8).reshape(-1, 3)

    p = primitives
    cap_lo = np.minimum(p.capsule_a_mm, p.capsule_b_mm) - p.capsule_radius_mm[:, None]
    cap_hi = np.maximum(p.capsule_a_mm, p.capsule_b_mm) + p.capsule_radius_mm[:, None]
    ell_half = np.sqrt(np.einsum('nij,nj->ni', p.ellipsoid_axes ** 2, p.ellipsoid_radii_mm ** 2))
    passes = [
        ('capsule', _pixel_rects(cap_lo, cap_hi, pr, (h, w)), p.capsule_rgb, p.capsule_owner),
        ('ellipsoid', _pixel_rects(p.ellipsoid_centre_mm - ell_half, p.ellipsoid_centre_mm + ell_half, pr, (h, w)),
         p.ellipsoid_rgb, p.ellipsoid_owner),
    ]
    for kind, rects, rgb, own in passes:
        for ids in _chunks(rects):
            pix, prim = _enumerate_pairs(rects, w, ids)
            d = pr.rays[pix]
            if kind == 'capsule':
                t, hit, normal = _intersect_capsules(
                    d, p.capsule_a_mm[prim], p.capsule_b_mm[prim], p.capsule_radius_mm[prim])
            else:
                t, hit, normal = _intersect_ellipsoids(
                    d, p.ellipsoid_centre_mm[prim], p.ellipsoid_axes[prim], p.ellipsoid_radii_mm[prim])
            hit &= t < depth[pix]
            pix, prim, t, normal = pix[hit], prim[hit], t[hit], normal[hit]
            order = np.lexsort((t, pix))                    # nearest hit per pixel within this chunk
            pix_sorted = pix[order]
            first = np.ones(len(order), bool)
            first[1:] = pix_sorted[1:] != pix_sorted[:-1]
            win = order[first]
            pix, prim, t, normal = pix[win], prim[win], t[win], normal[win]
            depth[pix] = t
            owner[pix] = own[prim]
            if shading:
                lambert = np.clip(normal @ _LIGHT_DIR_CAM, 0.0, 1.0)
                shaded = rgb[prim] * (_AMBIENT + (1.0 - _AMBIENT) * lambert)[:, None]
            else:
                shaded = rgb[prim]
            colour[pix] = np.clip(np.rint(shaded), 0, 255).astype(np.uint8)
    return RenderResult(colour.reshape(h, w, 3), depth.reshape(h, w).astype(np.float32), owner.reshape(h, w))


# ----------------------------------------------------------------------------------------------------------------
# Backgrounds
# ----------------------------------------------------------------------------------------------------------------

BACKGROUNDS = ('plain', 'gradient', 'noise', 'checker')


def _muted_colour(rng: np.random.Generator, v_lo=0.25, v_hi=0.9) -> np.ndarray:
    """A low-saturation colour (max - min channel <= 0.3·255), far from saturated colour keys."""
    return _hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.3), rng.uniform(v_lo, v_hi))


def _smooth_interp_matrix(n: int, cells: int) -> np.ndarray:
    """[n, cells + 1] weights that interpolate a 1D lattice of ``cells`` cells at ``n`` samples (smoothstep)."""
    g = np.linspace(0.0, cells, n)
    i = np.minimum(g.astype(np.int64), cells - 1)
    f = g - i
    f = f * f * (3 - 2 * f)
    m = np.zeros((n, cells + 1))
    m[np.arange(n), i] = 1 - f
    m[np.arange(n), i + 1] = f
    return m


def render_background(kind: str, rng: np.random.Generator, camera: CameraModel, image_hw: Tuple[int, int],
                      world_to_camera: np.ndarray, camera_height_mm: float) -> np.ndarray:
    """Background ``uint8 [H, W, 3]``: ``plain``, vertical ``gradient``, smooth colour ``noise`` or ``checker``
    (a checkerboard ground plane seen through the camera, with a sky gradient above the horizon).

    All colours are muted (low saturation), so they never match a saturated colour key.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    if kind == 'plain':
        return np.broadcast_to(np.rint(_muted_colour(rng)).astype(np.uint8), (h, w, 3)).copy()
    if kind == 'gradient':
        top, bottom = _muted_colour(rng, 0.5, 0.95), _muted_colour(rng, 0.15, 0.6)
        s = np.linspace(0.0, 1.0, h)[:, None, None]
        return np.broadcast_to(np.rint(top * (1 - s) + bottom * s), (h, w, 3)).astype(np.uint8)
    if kind == 'noise':
        image = np.zeros((h, w, 3))
        for cells, amp in ((4, 1.0), (9, 0.5), (21, 0.25)):  # value noise octaves, separable interpolation
            grid = rng.uniform(0, 1, (cells + 1, cells + 1, 3))
            rows = np.einsum('hi,ijc->hcj', _smooth_interp_matrix(h, cells), grid)   # [H, 3, cells+1]
            image += amp * (rows @ _smooth_interp_matrix(w, cells).T).transpose(0, 2, 1)
        image /= 1.75
        grey = image.mean(axis=2, keepdims=True)
        image = grey + 0.3 * (image - grey)   # keep it muted
        lo, hi = _muted_colour(rng, 0.1, 0.4), _muted_colour(rng, 0.6, 0.95)
        return np.rint(np.clip(lo + (hi - lo) * image, 0, 255)).astype(np.uint8)
    if kind == 'checker':
        rays = _pixel_rays(camera, (h, w)).rays.reshape(h, w, 3)
        world_dir = rays @ world_to_camera                        # rows: each ray in the world frame
        tile_mm = rng.uniform(400, 900)
        c1, c2 = _muted_colour(rng, 0.45, 0.85), _muted_colour(rng, 0.15, 0.45)
        sky_top, sky_horizon = _muted_colour(rng, 0.7, 0.95), _muted_colour(rng, 0.5, 0.8)
        with np.errstate(divide='ignore', invalid='ignore'):
            on_floor = world_dir[..., 1] > 1e-9                   # ray goes down: meets the ground Y = cam_h
            t = np.where(on_floor, camera_height_mm / world_dir[..., 1], 0.0)
            gx, gz = world_dir[..., 0] * t, world_dir[..., 2] * t
            parity = (np.floor(gx / tile_mm) + np.floor(gz / tile_mm)) % 2 == 0
            fog = np.clip((np.hypot(gx, gz) - 4000.0) / 20000.0, 0.0, 1.0)[..., None]  # fade far tiles (aliasing)
        floor = np.where(parity[..., None], c1, c2) * (1 - fog) + (0.5 * (c1 + c2)) * fog
        s = np.linspace(0.0, 1.0, h)[:, None, None]
        sky = sky_top * (1 - s) + sky_horizon * s
        out = np.where(on_floor[..., None], floor, sky)
        out[~np.isfinite(rays[..., 0])] = 0.0
        return np.rint(np.clip(out, 0, 255)).astype(np.uint8)
    raise ValueError(f'unknown background {kind!r}; valid: {BACKGROUNDS}')


# ----------------------------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------------------------

FLAT_PALETTE_RGB = np.array([[255, 0, 0], [0, 200, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255],
                             [0, 255, 255], [255, 128, 0], [128, 0, 255]], np.uint8)
POSE_KINDS = ('mixed', 'standing', 'walking', 'random')


@dataclasses.dataclass
class PersonGT:
    """Exact ground truth of one rendered person."""

    joints3d_mm: np.ndarray     # float64 [24, 3] smpl_24 joints, camera frame, mm
    joints2d_px: np.ndarray     # float64 [24, 2] projection through the camera (with its distortion), px
    joint_visible: np.ndarray   # bool [24] in the image and not occluded by another person
    box_xywh_px: np.ndarray     # float64 [4] tight pixel-area box of the rendered silhouette (zeros if unseen)
    colour_rgb: np.ndarray      # uint8 [3] the key colour (flat colour, or the shirt colour when shaded)
    num_pixels: int             # rendered silhouette area
    height_mm: float
    yaw_rad: float
    pose_kind: str


@dataclasses.dataclass
class Scene:
    """A rendered frame and the ground truth of every person in it."""

    image_rgb: np.ndarray       # uint8 [H, W, 3]
    camera: CameraModel
    people: List[PersonGT]
    depth_mm: np.ndarray        # float32 [H, W] visible surface z, inf on the background
    person_index: np.ndarray    # int32 [H, W] index into ``people``, -1 on the background
    up_vector_cam: np.ndarray   # [3] world "up" in the camera frame (for ``world_up_vector``)
    camera_height_mm: float
    camera_pitch_deg: float
    time_s: float = 0.0

    @property
    def joint_names(self) -> Tuple[str, ...]:
        return JOINT_NAMES


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """Everything that defines a random scene; :func:`render_scene` is a pure function of it.

    ``None`` fields are drawn from the seed: ``camera_height_mm`` in [1200, 2000], ``camera_pitch_deg`` in
    [0, 15], ``person_colours_rgb`` from :data:`FLAT_PALETTE_RGB` (flat) or random clothing.
    """

    seed: int = 0
    image_hw: Tuple[int, int] = (480, 640)
    num_people: int = 1
    camera: Optional[CameraModel] = None         # default: CameraModel.create(image_hw=..., fov_degrees=...)
    fov_degrees: float = 55.0
    camera_height_mm: Optional[float] = None
    camera_pitch_deg: Optional[float] = None
    flat_colours: bool = False
    background: str = 'gradient'
    pose: str = 'mixed'
    distance_range_mm: Tuple[float, float] = (3000.0, 7000.0)
    min_separation_mm: float = 1000.0
    person_colours_rgb: Optional[Tuple[Tuple[int, int, int], ...]] = None


def _default_camera(spec_camera, image_hw, fov_degrees) -> CameraModel:
    if spec_camera is not None:
        return spec_camera
    return CameraModel.create(image_hw=image_hw, fov_degrees=fov_degrees)


def _horizontal_view(camera: CameraModel, image_w: int) -> Tuple[float, float]:
    K = camera.intrinsic_matrix
    return (0.0 - K[0, 2]) / K[0, 0], (image_w - 1.0 - K[0, 2]) / K[0, 0]


@dataclasses.dataclass
class PersonPlacement:
    """One person to put into a scene: pose, body, where it stands and which way it faces."""

    angles_rad: np.ndarray                  # [24, 3] joint angles (standing_pose / walking_pose / random_pose)
    body: BodyParams
    ground_xz_mm: Tuple[float, float]       # world X (right) and Z (forward, horizontal) of the pelvis, mm
    yaw_rad: float = 0.0                    # 0 = facing the camera; positive turns the forward towards +X
    colour_rgb: Optional[Sequence[int]] = None  # key colour (flat rendering); default: the body's shirt colour
    pose_kind: str = 'custom'


def compose_scene(people: Sequence[PersonPlacement], camera: CameraModel, image_hw: Tuple[int, int] = (480, 640),
                  camera_height_mm: float = 1500.0, camera_pitch_deg: float = 0.0,
                  background_rgb: Optional[np.ndarray] = None, flat_colours: bool = False,
                  time_s: float = 0.0) -> Scene:
    """Render explicitly placed people and compute their ground truth.

    Args:
      people: the people (their order is the order of ``Scene.people`` and the values of ``person_index``).
      camera: the camera (its distortion is rendered exactly).
      camera_height_mm, camera_pitch_deg: the camera above the ground plane, pitched down.
      background_rgb: ``uint8 [H, W, 3]`` (default mid grey), e.g. from :func:`render_background`.
      flat_colours: every person in exactly one colour (``colour_rgb``), no shading (for colour keys).
    """
    image_hw = (int(image_hw[0]), int(image_hw[1]))
    h, w = image_hw
    world_to_camera = world_to_camera_rotation(camera_pitch_deg)
    joints_list, prims_list, colours = [], [], []
    for i, person in enumerate(people):  # loop over people (a handful)
        colour = np.asarray(person.body.colour_rgb if person.colour_rgb is None else person.colour_rgb, np.float64)
        body = person.body
        if not flat_colours and person.colour_rgb is not None:
            body = dataclasses.replace(body, clothing_rgb=np.array(body.clothing_rgb, np.float64))
            body.clothing_rgb[_SHIRT] = colour
        j3d, prims = pose_person(person.angles_rad, body, person.ground_xz_mm, person.yaw_rad, world_to_camera,
                                 camera_height_mm, owner=i, flat_rgb=colour if flat_colours else None)
        joints_list.append(j3d)
        prims_list.append(prims)
        colours.append(np.clip(np.rint(colour), 0, 255).astype(np.uint8))
    result = render_primitives(camera, image_hw, Primitives.concatenate(prims_list), background_rgb,
                               shading=not flat_colours)
    ground_truth = []
    for i, (person, joints) in enumerate(zip(people, joints_list)):  # loop over people
        joints2d = camera.project_px(joints)
        px = np.rint(joints2d)
        in_image = (np.all(np.isfinite(px), axis=1) & (px[:, 0] >= 0) & (px[:, 0] < w)
                    & (px[:, 1] >= 0) & (px[:, 1] < h) & (joints[:, 2] > 0))
        ix = np.where(in_image, px[:, 0], 0).astype(np.int64)
        iy = np.where(in_image, px[:, 1], 0).astype(np.int64)
        at_owner, at_depth = result.owner[iy, ix], result.depth_mm[iy, ix]
        occluded = (at_owner >= 0) & (at_owner != i) & (at_depth < joints[:, 2])
        mask = result.owner == i
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if len(rows):
            box = np.array([cols[0] - 0.5, rows[0] - 0.5, cols[-1] - cols[0] + 1.0, rows[-1] - rows[0] + 1.0])
        else:
            box = np.zeros(4)
        ground_truth.append(PersonGT(joints, joints2d, in_image & ~occluded, box, colours[i], int(mask.sum()),
                                     float(person.body.height_mm), float(person.yaw_rad), person.pose_kind))
    return Scene(result.image_rgb, camera, ground_truth, result.depth_mm, result.owner,
                 world_to_camera @ np.array([0.0, -1.0, 0.0]), float(camera_height_mm), float(camera_pitch_deg),
                 float(time_s))


def _person_appearance(rng, index: int, flat: bool, colours) -> Tuple[BodyParams, np.ndarray]:
    body = random_body(rng)
    if colours is not None:
        colour = np.asarray(colours[index % len(colours)], np.float64)
    elif flat:
        colour = FLAT_PALETTE_RGB[index % len(FLAT_PALETTE_RGB)].astype(np.float64)
    else:
        colour = body.colour_rgb
    return body, colour


def render_scene(spec_or_seed: Union[SceneSpec, int] = 0, **overrides) -> Scene:
    """Render a random scene of synthetic people with exact ground truth; deterministic from the spec's seed.

    Args:
      spec_or_seed: a :class:`SceneSpec` or a seed.
      **overrides: any :class:`SceneSpec` field, e.g. ``image_hw=(480, 640)``, ``camera=CameraModel(...)``,
        ``num_people=3``, ``flat_colours=True``, ``background='checker'``, ``pose='walking'``.

    People stand on the ground plane at ``distance_range_mm`` (horizontal distance), inside the horizontal field
    of view, at least ``min_separation_mm`` apart (when possible), with random heading and pose.
    """
    spec = spec_or_seed if isinstance(spec_or_seed, SceneSpec) else SceneSpec(seed=int(spec_or_seed))
    unknown = set(overrides) - {f.name for f in dataclasses.fields(SceneSpec)}
    if unknown:
        raise TypeError(f'unknown scene option(s) {sorted(unknown)}; valid: '
                        f'{[f.name for f in dataclasses.fields(SceneSpec)]}')
    spec = dataclasses.replace(spec, **overrides)
    if spec.pose not in POSE_KINDS:
        raise ValueError(f'unknown pose kind {spec.pose!r}; valid: {POSE_KINDS}')
    if spec.num_people < 0:
        raise ValueError(f'num_people must be >= 0, got {spec.num_people}')
    image_hw = (int(spec.image_hw[0]), int(spec.image_hw[1]))
    rng = np.random.default_rng(spec.seed)
    camera = _default_camera(spec.camera, image_hw, spec.fov_degrees)
    cam_h = float(rng.uniform(1200, 2000) if spec.camera_height_mm is None else spec.camera_height_mm)
    pitch = float(rng.uniform(0, 15) if spec.camera_pitch_deg is None else spec.camera_pitch_deg)
    world_to_camera = world_to_camera_rotation(pitch)
    background_rgb = render_background(spec.background, rng, camera, image_hw, world_to_camera, cam_h)

    xn_lo, xn_hi = _horizontal_view(camera, image_hw[1])
    positions = []
    for _ in range(spec.num_people):  # loop over people; rejection sampling for the separation
        for _attempt in range(50):
            z = rng.uniform(*spec.distance_range_mm)
            x = z * rng.uniform(0.85 * xn_lo, 0.85 * xn_hi)
            if all(math.hypot(x - px, z - pz) >= spec.min_separation_mm for px, pz in positions):
                break
        positions.append((x, z))

    placements = []
    for i, (x, z) in enumerate(positions):  # loop over people
        body, colour = _person_appearance(rng, i, spec.flat_colours, spec.person_colours_rgb)
        kind = spec.pose if spec.pose != 'mixed' else ('standing', 'walking', 'random')[
            int(rng.choice(3, p=[0.3, 0.4, 0.3]))]
        if kind == 'standing':
            angles = standing_pose(rng)
        elif kind == 'walking':
            angles = walking_pose(rng.uniform(0, 2 * math.pi), arm_swing_deg=rng.uniform(10, 30))
        else:
            angles = random_pose(rng)
        yaw = float(rng.uniform(-math.pi, math.pi))
        placements.append(PersonPlacement(angles, body, (x, z), yaw, colour, kind))
    return compose_scene(placements, camera, image_hw, cam_h, pitch, background_rgb, spec.flat_colours)


# ----------------------------------------------------------------------------------------------------------------
# Animation: people walking on closed elliptic paths
# ----------------------------------------------------------------------------------------------------------------

def _ellipse_arclength_table(ax_mm: float, az_mm: float, samples: int = 2048):
    theta = np.linspace(0.0, 2 * math.pi, samples + 1)
    pts = np.stack([ax_mm * np.cos(theta), az_mm * np.sin(theta)], -1)
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    return theta, cum


_ANIMATION_BACKGROUNDS: dict = {}


def animate_scene(seed: int, t_s: float, image_hw: Tuple[int, int] = (480, 640), num_people: int = 2,
                  camera: Optional[CameraModel] = None, fov_degrees: float = 55.0, flat_colours: bool = False,
                  background: str = 'checker', person_colours_rgb=None) -> Scene:
    """Frame at time ``t_s`` of people walking smoothly on closed elliptic paths (reproducible for any ``t_s``).

    Everything except time (camera height/pitch, bodies, colours, paths, speeds, background) is drawn from
    ``seed``; position along the path is ``speed · t``, heading follows the path's tangent and the walking cycle
    phase is tied to the distance walked (one stride ≈ 0.72 · body height).
    """
    image_hw = (int(image_hw[0]), int(image_hw[1]))
    rng = np.random.default_rng(seed)
    camera = _default_camera(camera, image_hw, fov_degrees)
    cam_h = float(rng.uniform(1300, 1900))
    pitch = float(rng.uniform(3, 12))
    world_to_camera = world_to_camera_rotation(pitch)
    # The background does not change over time: own random stream, cached for the following frames.
    bg_key = (int(seed), background, image_hw, camera.intrinsic_matrix.tobytes(), camera.distortion_coeffs.tobytes(),
              camera.distortion_model)
    background_rgb = _ANIMATION_BACKGROUNDS.get(bg_key)
    if background_rgb is None:
        background_rgb = render_background(background, np.random.default_rng([int(seed), 1]), camera, image_hw,
                                           world_to_camera, cam_h)
        if len(_ANIMATION_BACKGROUNDS) >= 4:
            _ANIMATION_BACKGROUNDS.pop(next(iter(_ANIMATION_BACKGROUNDS)))
        _ANIMATION_BACKGROUNDS[bg_key] = background_rgb
    xn_lo, xn_hi = _horizontal_view(camera, image_hw[1])

    placements = []
    for i in range(num_people):  # loop over people
        body, colour = _person_appearance(rng, i, flat_colours, person_colours_rgb)
        zc = rng.uniform(4500, 5500)
        slot_lo = xn_lo + (xn_hi - xn_lo) * (0.12 + 0.76 * i / max(num_people, 1))
        slot_hi = xn_lo + (xn_hi - xn_lo) * (0.12 + 0.76 * (i + 1) / max(num_people, 1))
        xc = zc * 0.5 * (slot_lo + slot_hi)
        ax = max(250.0, 0.3 * zc * (slot_hi - slot_lo))
        az = rng.uniform(900, 1600)
        speed = rng.uniform(900, 1400)
        direction = 1.0 if rng.uniform() < 0.5 else -1.0
        s0 = rng.uniform(0, 1)
        swing = rng.uniform(15, 28)
        theta_tab, cum = _ellipse_arclength_table(ax, az)
        s = (s0 * cum[-1] + speed * t_s) % cum[-1]
        theta = direction * float(np.interp(s, cum, theta_tab))
        x, z = xc + ax * math.cos(theta), zc + az * math.sin(theta)
        tx, tz = -ax * math.sin(theta) * direction, az * math.cos(theta) * direction
        yaw = math.atan2(tx, -tz)
        phase = 2 * math.pi * (s0 * cum[-1] + speed * t_s) / (0.72 * body.height_mm)
        placements.append(PersonPlacement(walking_pose(phase, arm_swing_deg=swing), body, (x, z), yaw, colour,
                                          'walking'))
    return compose_scene(placements, camera, image_hw, cam_h, pitch, background_rgb, flat_colours, t_s)


def walking_frames(seed: int, fps: float = 15.0, start_s: float = 0.0, num_frames: Optional[int] = None,
                   **animate_kwargs) -> Iterator[Scene]:
    """Yield frames ``i = 0, 1, ...`` of :func:`animate_scene` at ``t = start_s + i / fps`` (endless if
    ``num_frames`` is None)."""
    i = 0
    while num_frames is None or i < num_frames:
        yield animate_scene(seed, start_s + i / fps, **animate_kwargs)
        i += 1


# ----------------------------------------------------------------------------------------------------------------
# Example / benchmark command
# ----------------------------------------------------------------------------------------------------------------

def draw_ground_truth(scene: Scene) -> np.ndarray:
    """RGB copy of the scene image with boxes, bones and joints (visible: filled) drawn (needs OpenCV)."""
    import cv2
    image = np.ascontiguousarray(scene.image_rgb.copy())
    edges = get_skeleton('smpl_24').edges
    for person in scene.people:
        if person.num_pixels == 0:
            continue
        x, y, w, h = person.box_xywh_px
        cv2.rectangle(image, (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h))),
                      (255, 255, 255), 1)
        pts = person.joints2d_px
        for i, j in edges:
            if np.all(np.isfinite(pts[[i, j]])):
                cv2.line(image, tuple(int(v) for v in np.rint(pts[i])), tuple(int(v) for v in np.rint(pts[j])),
                         (255, 255, 255), 1, cv2.LINE_AA)
        for k in range(NUM_JOINTS):
            if np.all(np.isfinite(pts[k])):
                cv2.circle(image, tuple(int(v) for v in np.rint(pts[k])), 2, (255, 60, 60),
                           -1 if person.joint_visible[k] else 1)
    return image


def save_scene_example(path_png: str, seed: int = 0, overlay: bool = True, **scene_options) -> Scene:
    """Render :func:`render_scene` ``(seed, **scene_options)`` and write it as a PNG (optionally with the ground
    truth drawn on it); returns the scene."""
    import cv2
    scene = render_scene(seed, **scene_options)
    image = draw_ground_truth(scene) if overlay else scene.image_rgb
    if not cv2.imwrite(str(path_png), image[..., ::-1]):
        raise OSError(f'could not write {path_png}')
    return scene


def main(argv=None) -> int:
    import argparse
    import time
    parser = argparse.ArgumentParser(description='Render a synthetic scene (numpy ray caster) and/or time it.')
    parser.add_argument('--out', help='PNG path to write')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--people', type=int, default=3)
    parser.add_argument('--size', default='480x640', help='HxW')
    parser.add_argument('--background', default='checker', choices=BACKGROUNDS)
    parser.add_argument('--flat', action='store_true')
    parser.add_argument('--benchmark', type=int, default=0, help='time this many renders (different seeds)')
    args = parser.parse_args(argv)
    hw = tuple(int(v) for v in args.size.lower().split('x'))
    options = dict(image_hw=hw, num_people=args.people, background=args.background, flat_colours=args.flat)
    if args.out:
        scene = save_scene_example(args.out, args.seed, **options)
        print(f'wrote {args.out}: {len(scene.people)} people, '
              f'boxes {[p.box_xywh_px.round(1).tolist() for p in scene.people]}')
    if args.benchmark:
        render_scene(args.seed, **options)  # warm the ray cache
        wall, cpu = [], []
        for k in range(args.benchmark):
            t0, c0 = time.perf_counter(), time.process_time()
            render_scene(args.seed + k, **options)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        print(f'render_scene {hw[1]}x{hw[0]}, {args.people} people, {args.background}, {len(wall)} seeds: '
              f'wall median {1000 * np.median(wall):.1f} ms (min {1000 * np.min(wall):.1f}), '
              f'CPU median {1000 * np.median(cpu):.1f} ms')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
