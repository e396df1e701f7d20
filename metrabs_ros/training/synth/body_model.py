"""Anny body model wrapper: batched skinning and the skeleton formats defined from it.

Frames and units: the *body frame* is Anny's world frame: x = the body's left, y = the body's back (the body faces
-y), z = up, metres. Anny's identity pose (all pose deltas = identity, ``pose_parameterization='local-ref'``) is
its reference pose (an A-pose); posing is expressed as world-aligned delta rotations at each bone head.

The model is loaded once per process (CPU, float32). Its first build writes a ~790 MB cache under
``ANNY_CACHE_DIR`` (default ``~/.cache/anny``, about 40 s); later loads take ~0.3 s. Only Anny's own topology is
used (the smpl/smplx topologies would download non-commercial data and are never requested).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Dict, Tuple

import numpy as np

from metrabs_ros.skeletons import get_skeleton

PHENOTYPE_LABELS = ('gender', 'age', 'muscle', 'weight', 'height', 'proportions')
FORMATS = ('anny_104', 'coco_19', 'h36m_17', 'smpl_24')


@dataclasses.dataclass(frozen=True, eq=False)
class JointRegressor:
    """A skeleton format as a linear map from bone heads and vertices: ``J = Wb @ heads + Wv @ vertices[idx]``."""
    name: str
    joint_names: Tuple[str, ...]
    bone_weights: np.ndarray      # float32 [J, num_bones]
    vertex_indices: np.ndarray    # int64 [S] vertices used by any joint
    vertex_weights: np.ndarray    # float32 [J, S]

    def __call__(self, bone_heads: np.ndarray, vertices: np.ndarray) -> np.ndarray:
        """``[B, J, 3]`` joints (same frame/units as the inputs ``bone_heads [B,104,3]``, ``vertices [B,V,3]``)."""
        out = np.matmul(self.bone_weights, bone_heads)
        if self.vertex_indices.size:
            out += np.matmul(self.vertex_weights, vertices[:, self.vertex_indices])
        return out.astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class BodyModel:
    """The loaded Anny model plus the per-vertex tables the renderer and the formats need."""
    model: object                   # anny.Anny (torch module, float32, CPU)
    faces: np.ndarray               # int32 [F, 3], counter-clockwise seen from outside
    bone_labels: Tuple[str, ...]    # 104 names
    bone_parents: np.ndarray        # int64 [104], -1 for the root
    ref_bone_heads_m: np.ndarray    # float32 [104, 3] bone heads of the reference pose, average phenotype
    ref_vertices_m: np.ndarray      # float32 [V, 3] reference-pose vertices, average phenotype
    dominant_bone: np.ndarray       # int64 [V] bone with the largest skinning weight per vertex
    regressors: Dict[str, JointRegressor]

    @property
    def num_vertices(self) -> int:
        return len(self.ref_vertices_m)

    def bone_index(self, name: str) -> int:
        return self.bone_labels.index(name)


def _torch():
    import torch
    return torch


@functools.lru_cache(maxsize=1)
def load_body_model() -> BodyModel:
    """Load Anny (float32, CPU, one torch thread) and build the format regressors; cached per process."""
    torch = _torch()
    import anny
    torch.set_num_threads(1)
    model = anny.Anny().to(torch.float32).eval()
    labels = tuple(model.bone_labels)
    parents = np.asarray(model.bone_parents, np.int64)
    with torch.no_grad():
        out = model(pose_parameters=torch.eye(4)[None, None].expand(1, len(labels), 4, 4),
                    phenotype_kwargs=torch.full((1, len(PHENOTYPE_LABELS)), 0.5))
    heads = out['bone_poses'][0, :, :3, 3].numpy().astype(np.float32)
    verts = out['vertices'][0].numpy().astype(np.float32)
    weights = model.vertex_bone_weights.numpy()
    indices = model.vertex_bone_indices.numpy()
    dominant = indices[np.arange(len(indices)), np.argmax(weights, axis=1)].astype(np.int64)
    faces = model.faces.numpy().astype(np.int32)
    coco = anny.KeypointsRegressor.coco(model)
    coco_weights = coco.regression_weights.numpy().astype(np.float64)
    regs = _build_regressors(labels, heads, verts, dominant, coco_weights, list(coco.labels))
    return BodyModel(model, faces, labels, parents, heads, verts, dominant, regs)


def _build_regressors(labels, heads, verts, dominant, coco_weights, coco_labels) -> Dict[str, JointRegressor]:
    nb = len(labels)
    bi = {n: i for i, n in enumerate(labels)}

    # Head top: mean of the skull vertices within 1 cm of the highest head vertex (reference pose, upright).
    head_ids = np.nonzero(dominant == bi['head'])[0]
    top = head_ids[verts[head_ids, 2] > verts[head_ids, 2].max() - 0.01]
    coco_row = {n: coco_weights[coco_labels.index(n)] for n in coco_labels}

    # Each joint: (dict bone name -> weight, dense per-vertex weight vector).
    def mid(a, b):
        return {a: 0.5, b: 0.5}

    defs: Dict[str, Dict[str, tuple]] = {}
    num_v = len(verts)
    zero_v = np.zeros(num_v)
    topv = np.zeros(num_v)
    topv[top] = 1.0 / len(top)

    # --- h36m_17 (approximation from Anny bones; see docs/synthetic_data.md) ---
    h36m = {}
    for s, p in (('L', 'l'), ('R', 'r')):
        h36m[p + 'hip'] = ({f'upperleg01.{s}': 1.0}, zero_v)
        h36m[p + 'kne'] = ({f'lowerleg01.{s}': 1.0}, zero_v)
        h36m[p + 'ank'] = ({f'foot.{s}': 1.0}, zero_v)
        h36m[p + 'sho'] = ({f'upperarm01.{s}': 1.0}, zero_v)
        h36m[p + 'elb'] = ({f'lowerarm01.{s}': 1.0}, zero_v)
        h36m[p + 'wri'] = ({f'wrist.{s}': 1.0}, zero_v)
    h36m['pelv'] = (mid('upperleg01.L', 'upperleg01.R'), zero_v)
    h36m['spin'] = ({'spine03': 0.5, 'spine02': 0.5}, zero_v)
    h36m['neck'] = ({'neck01': 1.0}, zero_v)
    face = 0.5 * coco_row['nose'] + 0.25 * coco_row['left_ear'] + 0.25 * coco_row['right_ear']
    h36m['head'] = ({'head': 0.5}, 0.5 * face)
    h36m['htop'] = ({}, topv)
    defs['h36m_17'] = h36m

    smpl = {}
    for s, p in (('L', 'l'), ('R', 'r')):
        smpl[p + 'hip'] = ({f'upperleg01.{s}': 1.0}, zero_v)
        smpl[p + 'kne'] = ({f'lowerleg01.{s}': 1.0}, zero_v)
        smpl[p + 'ank'] = ({f'foot.{s}': 1.0}, zero_v)
        smpl[p + 'toe'] = ({f'toe{k}-1.{s}': 0.2 for k in range(1, 6)}, zero_v)
        smpl[p + 'cla'] = (mid(f'clavicle.{s}', f'shoulder01.{s}'), zero_v)
        smpl[p + 'sho'] = ({f'upperarm01.{s}': 1.0}, zero_v)
        smpl[p + 'elb'] = ({f'lowerarm01.{s}': 1.0}, zero_v)
        smpl[p + 'wri'] = ({f'wrist.{s}': 1.0}, zero_v)
        smpl[p + 'han'] = ({f'wrist.{s}': 0.5, f'finger3-1.{s}': 0.5}, zero_v)
    smpl['pelv'] = ({'upperleg01.L': 0.25, 'upperleg01.R': 0.25, 'upperleg02.L': 0.25, 'upperleg02.R': 0.25},
                    zero_v)
    smpl['spi1'] = ({'spine04': 1.0}, zero_v)
    smpl['spi2'] = ({'spine02': 1.0}, zero_v)
    smpl['spi3'] = ({'spine01': 1.0}, zero_v)
    smpl['neck'] = ({'neck01': 0.5, 'neck02': 0.5}, zero_v)
    smpl['head'] = ({'head': 1.0}, zero_v)
    defs['smpl_24'] = smpl

    coco = {'nose': ({}, coco_row['nose']),
            'neck': ({}, 0.5 * (coco_row['left_shoulder'] + coco_row['right_shoulder'])),
            'pelv': ({}, 0.5 * (coco_row['left_hip'] + coco_row['right_hip']))}
    for s, p in (('left', 'l'), ('right', 'r')):
        for short, long_ in (('sho', 'shoulder'), ('elb', 'elbow'), ('wri', 'wrist'), ('hip', 'hip'),
                             ('kne', 'knee'), ('ank', 'ankle'), ('eye', 'eye'), ('ear', 'ear')):
            coco[p + short] = ({}, coco_row[f'{s}_{long_}'])
    defs['coco_19'] = coco

    regs = {}
    for fmt, table in defs.items():
        names = get_skeleton(fmt).joint_names
        missing = set(names) ^ set(table)
        if missing:
            raise RuntimeError(f'{fmt}: joint definitions do not match metrabs_ros.skeletons: {sorted(missing)}')
        wb = np.zeros((len(names), nb))
        wv = np.zeros((len(names), num_v))
        for j, n in enumerate(names):
            for b, w in table[n][0].items():
                wb[j, bi[b]] += w
            wv[j] = table[n][1]
        used = np.nonzero(np.any(wv != 0, axis=0))[0]
        regs[fmt] = JointRegressor(fmt, names, wb.astype(np.float32), used.astype(np.int64),
                                   wv[:, used].astype(np.float32))
    regs['anny_104'] = JointRegressor('anny_104', labels, np.eye(nb, dtype=np.float32),
                                      np.zeros(0, np.int64), np.zeros((nb, 0), np.float32))
    return regs


def format_joint_names(body: BodyModel) -> Dict[str, Tuple[str, ...]]:
    return {f: body.regressors[f].joint_names for f in FORMATS}


def skin_bodies(body: BodyModel, phenotypes: np.ndarray, pose_deltas: np.ndarray):
    """Skin a batch of bodies.

    Args:
      phenotypes: ``[B, 6]`` in [0, 1], order :data:`PHENOTYPE_LABELS`.
      pose_deltas: ``[B, 104, 4, 4]`` Anny ``local-ref`` delta transforms (rotation part used; root translation 0).
    Returns:
      ``(vertices_m [B, V, 3], bone_heads_m [B, 104, 3])`` float32, body frame, metres.
    """
    torch = _torch()
    with torch.no_grad():
        out = body.model(pose_parameters=torch.from_numpy(np.ascontiguousarray(pose_deltas, np.float32)),
                         phenotype_kwargs=torch.from_numpy(np.ascontiguousarray(phenotypes, np.float32)))
    return out['vertices'].numpy(), out['bone_poses'][:, :, :3, 3].numpy()


def _stature_features(phenotypes: np.ndarray) -> np.ndarray:
    g, a, m, w, _, p = np.asarray(phenotypes, np.float64).T
    a2 = np.maximum(a - 2 / 3, 0)
    return np.stack([np.ones_like(g), g, a, a2, m, w, p, g * a, g * a2, g * w, g * m, a * w, a2 * w], -1)


@functools.lru_cache(maxsize=2)
def _stature_fit(body_id: int, body: BodyModel):
    """Least-squares model of the reference-pose stature at height parameter 0 and 1 (adult ages 0.5..1)."""
    rng = np.random.default_rng(1234)
    n = 96
    ph = np.column_stack([rng.uniform(0, 1, n), rng.uniform(0.5, 1, n), rng.uniform(0, 1, (n, 2)),
                          np.zeros(n), rng.uniform(0, 0.6, n)])
    both = np.concatenate([ph, ph])
    both[n:, 4] = 1.0
    deltas = np.tile(np.eye(4, dtype=np.float32), (2 * n, len(body.bone_labels), 1, 1))
    verts, _ = skin_bodies(body, both, deltas)
    stature = verts[:, :, 2].max(1) - verts[:, :, 2].min(1)
    X = _stature_features(ph)
    c0 = np.linalg.lstsq(X, stature[:n], rcond=None)[0]
    c1 = np.linalg.lstsq(X, stature[n:], rcond=None)[0]
    return c0, c1


def height_parameter_for_stature(body: BodyModel, phenotypes: np.ndarray, stature_m: np.ndarray) -> np.ndarray:
    """The Anny ``height`` parameter (clipped to [0, 1]) that gives each adult body (age >= 0.5) the wanted
    reference-pose stature (metres, vertex top to bottom; about +-2 cm from a linear model fitted at load)."""
    c0, c1 = _stature_fit(id(body), body)
    X = _stature_features(phenotypes)
    s0, s1 = X @ c0, X @ c1
    return np.clip((np.asarray(stature_m) - s0) / np.maximum(s1 - s0, 1e-3), 0.0, 1.0)
