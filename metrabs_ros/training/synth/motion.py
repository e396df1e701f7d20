"""Body poses: DeepMimic motion clips (from the installed ``pybullet`` wheel) and procedural poses within joint
limits, retargeted to Anny ``local-ref`` pose deltas.

The DeepMimic humanoid frame is x = forward, y = up, z = the body's right; its zero pose stands upright with the
arms hanging. A clip frame (44 floats) is: duration, root position (3), root quaternion (w, x, y, z), then the
local rotations of chest, neck, r_hip (quaternions), r_knee (angle about z), r_ankle, r_shoulder (quaternions),
r_elbow (angle), l_hip, l_knee, l_ankle, l_shoulder, l_elbow. Each local rotation is relative to the parent joint
in the zero pose.

Retargeting: the global rotation of each DeepMimic joint (relative to the zero pose) is rotated into Anny's axes
and given to the corresponding Anny bone (torso bend spread over three spine bones, the neck over two). The arms
carry a fixed correction taking Anny's reference A-pose arm directions to DeepMimic's hanging arms.
"""

from __future__ import annotations

import functools
import glob
import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

# DeepMimic joints in clip order (after the root) and their parents.
DM_JOINTS = ('root', 'chest', 'neck', 'r_hip', 'r_knee', 'r_ankle', 'r_shoulder', 'r_elbow',
             'l_hip', 'l_knee', 'l_ankle', 'l_shoulder', 'l_elbow')
DM_PARENT = {'root': None, 'chest': 'root', 'neck': 'chest', 'r_hip': 'root', 'r_knee': 'r_hip',
             'r_ankle': 'r_knee', 'r_shoulder': 'chest', 'r_elbow': 'r_shoulder', 'l_hip': 'root',
             'l_knee': 'l_hip', 'l_ankle': 'l_knee', 'l_shoulder': 'chest', 'l_elbow': 'l_shoulder'}
_REVOLUTE = ('r_knee', 'r_elbow', 'l_knee', 'l_elbow')
# DeepMimic axes -> Anny axes: forward (+x) -> -y, up (+y) -> +z, right (+z) -> -x.
DM_TO_ANNY = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])

# Anny bone <- (DeepMimic joint, fraction of that joint's *local* rotation already applied at this bone).
_BONE_MAP = {
    'root': ('root', 1.0),
    'spine04': ('chest', 1 / 3), 'spine03': ('chest', 2 / 3), 'spine02': ('chest', 1.0),
    'neck01': ('neck', 0.5), 'neck03': ('neck', 1.0),
    'upperleg01.R': ('r_hip', 1.0), 'lowerleg01.R': ('r_knee', 1.0), 'foot.R': ('r_ankle', 1.0),
    'upperleg01.L': ('l_hip', 1.0), 'lowerleg01.L': ('l_knee', 1.0), 'foot.L': ('l_ankle', 1.0),
    'upperarm01.R': ('r_shoulder', 1.0), 'lowerarm01.R': ('r_elbow', 1.0),
    'upperarm01.L': ('l_shoulder', 1.0), 'lowerarm01.L': ('l_elbow', 1.0),
}
# Arm bones whose reference direction (head -> head of the named bone) is corrected to hang down.
_ARM_CORRECTION = {'upperarm01.L': 'lowerarm01.L', 'lowerarm01.L': 'wrist.L',
                   'upperarm01.R': 'lowerarm01.R', 'lowerarm01.R': 'wrist.R'}

VAL_CLIPS = ('humanoid3d_dance_b', 'humanoid3d_spinkick', 'humanoid3d_getup_faceup')


# ------------------------------------------------------------------------------------------------ rotations
def quat_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)], -2)


def axis_angle_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues: ``[..., 3]`` rotation vectors (radians) -> ``[..., 3, 3]``."""
    v = np.asarray(rotvec, np.float64)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    axis = v / np.maximum(angle, 1e-12)
    x, y, z = np.moveaxis(axis, -1, 0)
    zero = np.zeros_like(x)
    Kx = np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)], -2)
    s = np.sin(angle)[..., None]
    c = np.cos(angle)[..., None]
    return np.eye(3) + s * Kx + (1 - c) * (Kx @ Kx)


def matrix_to_axis_angle(R: np.ndarray) -> np.ndarray:
    R = np.asarray(R, np.float64)
    cos = np.clip((np.trace(R, axis1=-2, axis2=-1) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    v = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    sin = np.sin(angle)
    small = sin < 1e-6
    axis = v / np.where(small, 1.0, 2 * sin)[..., None]
    # Near pi: axis from the diagonal.
    near_pi = small & (angle > 3.0)
    if np.any(near_pi):
        diag = np.sqrt(np.maximum((np.diagonal(R, axis1=-2, axis2=-1) + 1) / 2, 0))
        sign = np.sign(v + (v == 0))
        axis = np.where(near_pi[..., None], diag * sign, axis)
    return np.where((small & ~near_pi)[..., None], v / 2, axis * angle[..., None])


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation taking direction ``a`` to direction ``b`` (``[3]`` each)."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    axis = np.cross(a, b)
    s = np.linalg.norm(axis)
    angle = np.arctan2(s, float(a @ b))
    if s < 1e-9:
        return np.eye(3)
    return axis_angle_to_matrix(axis / s * angle)


def euler_dm(flex_deg, abd_deg, twist_deg) -> np.ndarray:
    """DeepMimic-frame local rotation ``Ry(twist) @ Rz(flex) @ Rx(abduction)`` (degrees; broadcasting)."""
    f, a, t = (np.radians(np.asarray(x, np.float64)) for x in (flex_deg, abd_deg, twist_deg))
    shape = np.broadcast(f, a, t).shape
    f, a, t = (np.broadcast_to(x, shape) for x in (f, a, t))
    ex = np.zeros(shape + (3,))
    ey = ex.copy()
    ez = ex.copy()
    ex[..., 0] = a
    ey[..., 1] = t
    ez[..., 2] = f
    return axis_angle_to_matrix(ey) @ axis_angle_to_matrix(ez) @ axis_angle_to_matrix(ex)


# ------------------------------------------------------------------------------------------------ clips
def motion_dir() -> str:
    """Folder of the DeepMimic clips inside the installed ``pybullet_data`` package."""
    try:
        import pybullet_data
    except ImportError as exc:
        raise RuntimeError('the synthetic data engine needs the pybullet wheel (pip install pybullet) for its '
                           'DeepMimic motion clips') from exc
    path = os.path.join(pybullet_data.getDataPath(), 'data', 'motions')
    if not glob.glob(os.path.join(path, 'humanoid3d_*.txt')):
        raise RuntimeError(f'no humanoid3d_*.txt motion clips under {path}')
    return path


@functools.lru_cache(maxsize=1)
def load_clips() -> Dict[str, np.ndarray]:
    """All humanoid3d clips as DeepMimic-frame local rotations ``{name: [T, 13, 3, 3]}`` (root = orientation)."""
    clips = {}
    for path in sorted(glob.glob(os.path.join(motion_dir(), 'humanoid3d_*.txt'))):
        with open(path) as f:
            frames = np.asarray(json.load(f)['Frames'], np.float64)
        if frames.ndim != 2 or frames.shape[1] != 44:
            raise ValueError(f'{path}: expected 44 values per frame, got shape {frames.shape}')
        clips[os.path.splitext(os.path.basename(path))[0]] = _frames_to_local(frames)
    return clips


def _frames_to_local(frames: np.ndarray) -> np.ndarray:
    T = len(frames)
    local = np.zeros((T, len(DM_JOINTS), 3, 3))
    col = 4
    local[:, 0] = quat_wxyz_to_matrix(frames[:, col:col + 4])
    col += 4
    for j, name in enumerate(DM_JOINTS[1:], start=1):
        if name in _REVOLUTE:
            rv = np.zeros((T, 3))
            rv[:, 2] = frames[:, col]
            local[:, j] = axis_angle_to_matrix(rv)
            col += 1
        else:
            local[:, j] = quat_wxyz_to_matrix(frames[:, col:col + 4])
            col += 4
    assert col == 44
    return local


def clip_names(split: str) -> List[str]:
    names = sorted(load_clips())
    if split == 'val':
        return [n for n in names if n in VAL_CLIPS]
    return [n for n in names if n not in VAL_CLIPS]


# ------------------------------------------------------------------------------------------------ procedural
# (flex, abduction, twist) limits in degrees per DeepMimic joint, for the left side; the right side mirrors
# abduction and twist. Flexion: hips/shoulders/elbows forward positive, knees negative, spine/neck forward negative.
_LIMITS = {
    'chest': ((-60, 20), (-25, 25), (-35, 35)),
    'neck': ((-40, 30), (-25, 25), (-60, 60)),
    'hip': ((-25, 120), (-10, 45), (-30, 30)),
    'knee': ((-145, 0), (0, 0), (0, 0)),
    'ankle': ((-30, 40), (-15, 15), (-10, 10)),
    'shoulder': ((-50, 170), (-20, 150), (-70, 70)),
    'elbow': ((0, 145), (0, 0), (0, 0)),
}


def _template_angles(kind: str, rng: np.random.Generator) -> Dict[str, Tuple[float, float, float]]:
    """Mean angles of a pose family (degrees, left side; right side given as 'r_...')."""
    u = rng.uniform
    a: Dict[str, Tuple[float, float, float]] = {}
    if kind == 'stand':
        for s in 'lr':
            a[s + '_shoulder'] = (u(-20, 40), u(0, 40), 0)
            a[s + '_elbow'] = (u(0, 60), 0, 0)
    elif kind == 'sit':
        for s in 'lr':
            h = u(70, 100)
            a[s + '_hip'] = (h, u(0, 20), 0)
            a[s + '_knee'] = (-u(h - 10, h + 20), 0, 0)
            a[s + '_shoulder'] = (u(0, 50), u(0, 20), 0)
            a[s + '_elbow'] = (u(20, 90), 0, 0)
        a['chest'] = (u(-20, 10), 0, 0)
    elif kind == 'squat':
        for s in 'lr':
            a[s + '_hip'] = (u(80, 120), u(10, 40), 0)
            a[s + '_knee'] = (-u(100, 145), 0, 0)
            a[s + '_ankle'] = (u(10, 35), 0, 0)
            a[s + '_shoulder'] = (u(0, 80), u(0, 30), 0)
            a[s + '_elbow'] = (u(0, 100), 0, 0)
        a['chest'] = (u(-40, 0), 0, 0)
    elif kind == 'bend':
        for s in 'lr':
            a[s + '_hip'] = (u(20, 80), u(0, 15), 0)
            a[s + '_knee'] = (-u(0, 40), 0, 0)
            a[s + '_shoulder'] = (u(30, 110), u(0, 20), 0)
            a[s + '_elbow'] = (u(0, 60), 0, 0)
        a['chest'] = (-u(20, 60), 0, 0)
        a['neck'] = (u(0, 30), 0, 0)
    elif kind == 'reach':
        for s in 'lr':
            a[s + '_shoulder'] = (u(-20, 40), u(0, 30), 0)
            a[s + '_elbow'] = (u(0, 60), 0, 0)
        s = 'l' if rng.uniform() < 0.5 else 'r'
        a[s + '_shoulder'] = (u(60, 170), u(0, 100), u(-40, 40))
        a[s + '_elbow'] = (u(0, 50), 0, 0)
        if rng.uniform() < 0.4:
            o = 'r' if s == 'l' else 'l'
            a[o + '_shoulder'] = (u(60, 170), u(0, 100), u(-40, 40))
        a['chest'] = (-u(0, 30), 0, u(-30, 30))
    elif kind == 'kneel':
        s = 'l' if rng.uniform() < 0.5 else 'r'
        o = 'r' if s == 'l' else 'l'
        a[s + '_hip'] = (u(70, 100), u(0, 15), 0)
        a[s + '_knee'] = (-u(80, 100), 0, 0)
        a[o + '_hip'] = (u(-10, 10), u(0, 15), 0)
        a[o + '_knee'] = (-u(80, 110), 0, 0)
        for t in 'lr':
            a[t + '_shoulder'] = (u(-10, 60), u(0, 30), 0)
            a[t + '_elbow'] = (u(0, 90), 0, 0)
    elif kind == 'random':
        for joint, limits in _LIMITS.items():
            sides = ('',) if joint in ('chest', 'neck') else ('l_', 'r_')
            for s in sides:
                a[s + joint] = tuple(u(lo, hi) for lo, hi in limits)
    else:
        raise ValueError(f'unknown pose family {kind!r}')
    return a


POSE_FAMILIES = ('stand', 'sit', 'squat', 'bend', 'reach', 'kneel', 'random')
_FAMILY_P = np.array([0.15, 0.2, 0.12, 0.15, 0.18, 0.08, 0.12])


def procedural_pose(rng: np.random.Generator) -> np.ndarray:
    """One plausible pose in DeepMimic local rotations ``[13, 3, 3]`` (identity root), clipped to joint limits."""
    family = POSE_FAMILIES[rng.choice(len(POSE_FAMILIES), p=_FAMILY_P)]
    angles = _template_angles(family, rng)
    names = DM_JOINTS[1:]
    mean = np.array([angles.get(name, (0.0, 0.0, 0.0)) for name in names], np.float64)     # [12, 3]
    lim = np.array([_LIMITS[name.split('_', 1)[-1]] for name in names], np.float64)      # [12, 3, 2]
    jitter = rng.normal(0.0, 6.0, (len(names), 3)) * (lim[..., 1] > lim[..., 0])
    flex, abd, twist = np.clip(mean + jitter, lim[..., 0], lim[..., 1]).T
    right = np.array([name.startswith('r_') for name in names])
    abd = np.where(right, -abd, abd)        # mirror: abduction / twist (about x / y) change sign on the right
    twist = np.where(right, -twist, twist)
    local = np.tile(np.eye(3), (len(DM_JOINTS), 1, 1))
    local[1:] = euler_dm(flex, abd, twist)
    return local


def sample_pose_dm(rng: np.random.Generator, split: str, p_clip: float = 0.55,
                   noise_deg: float = 6.0) -> np.ndarray:
    """A DeepMimic-frame local pose ``[13, 3, 3]``: a random clip frame (p_clip) or a procedural pose, plus
    per-joint rotation noise (normal, ``noise_deg`` per axis); root orientation kept, yaw is applied later."""
    if rng.uniform() < p_clip:
        clips = load_clips()
        names = clip_names(split)
        clip = clips[names[rng.integers(len(names))]]
        local = clip[rng.integers(len(clip))].copy()
    else:
        local = procedural_pose(rng)
    noise = axis_angle_to_matrix(np.radians(rng.normal(0.0, noise_deg, (len(DM_JOINTS), 3))))
    noise[0] = axis_angle_to_matrix(np.radians(rng.normal(0.0, 3.0, 3)))
    return local @ noise


# ------------------------------------------------------------------------------------------------ retarget
@functools.lru_cache(maxsize=4)
def _retarget_tables(bone_labels: Tuple[str, ...], ref_heads_key: bytes, parents_key: bytes):
    heads = np.frombuffer(ref_heads_key, np.float32).reshape(-1, 3).astype(np.float64)
    parents = np.frombuffer(parents_key, np.int64)
    bi = {n: i for i, n in enumerate(bone_labels)}
    correction = np.tile(np.eye(3), (len(bone_labels), 1, 1))
    down = np.array([0.0, 0.0, -1.0])
    for bone, child in _ARM_CORRECTION.items():
        correction[bi[bone]] = rotation_between(heads[bi[child]] - heads[bi[bone]], down)
    mapped = np.array([bi[b] for b in _BONE_MAP], np.int64)
    return bi, parents, correction, mapped


def _fraction(R: np.ndarray, frac: float) -> np.ndarray:
    if frac == 1.0:
        return R
    return axis_angle_to_matrix(matrix_to_axis_angle(R) * frac)


def retarget_to_anny(local_dm: np.ndarray, bone_labels: Sequence[str], ref_heads_m: np.ndarray,
                     bone_parents: np.ndarray, rng: np.random.Generator = None,
                     bone_noise_deg: float = 3.0) -> np.ndarray:
    """DeepMimic local rotations ``[B, 13, 3, 3]`` -> Anny ``local-ref`` deltas ``[B, 104, 4, 4]``.

    Unmapped bones follow their parent (identity delta) except for small normal noise (``bone_noise_deg``) on the
    non-finger, non-toe bones when ``rng`` is given.
    """
    local_dm = np.asarray(local_dm, np.float64)
    B = local_dm.shape[0]
    bi, parents, correction, _ = _retarget_tables(tuple(bone_labels), np.ascontiguousarray(ref_heads_m, np.float32)
                                                  .tobytes(), np.ascontiguousarray(bone_parents, np.int64).tobytes())
    # DeepMimic global rotations (relative to its zero pose) with partial rotations for split joints.
    glob_dm = {}
    for j, name in enumerate(DM_JOINTS):
        p = DM_PARENT[name]
        glob_dm[name] = local_dm[:, j] if p is None else glob_dm[p] @ local_dm[:, j]
    M = DM_TO_ANNY
    H = np.tile(np.eye(3), (B, len(bone_labels), 1, 1))   # global rotation relative to the reference pose
    for b in range(len(bone_labels)):                       # bones are in topological order (parents first)
        label = bone_labels[b]
        p = parents[b]
        if label in _BONE_MAP:
            joint, frac = _BONE_MAP[label]
            parent_joint = DM_PARENT[joint]
            g = glob_dm[joint] if frac == 1.0 else glob_dm[parent_joint] @ _fraction(
                local_dm[:, DM_JOINTS.index(joint)], frac)
            H[:, b] = M @ g @ M.T @ correction[b]
        elif p >= 0:
            H[:, b] = H[:, p]
    parent_H = np.where((parents >= 0)[None, :, None, None], H[:, np.maximum(parents, 0)], np.eye(3))
    D = np.swapaxes(parent_H, -1, -2) @ H
    if rng is not None and bone_noise_deg > 0:
        noisy = np.array([not any(k in lab for k in ('finger', 'toe', 'metacarpal', 'eye')) for lab in bone_labels])
        noise = rng.normal(0.0, bone_noise_deg, (B, len(bone_labels), 3)) * noisy[None, :, None]
        D = D @ axis_angle_to_matrix(np.radians(noise))
    out = np.zeros((B, len(bone_labels), 4, 4))
    out[..., :3, :3] = D
    out[..., 3, 3] = 1.0
    return out
