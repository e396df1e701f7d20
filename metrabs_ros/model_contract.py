"""The pose-model contract (docs/model_contract.md): tensor names, metadata parsing and validation."""

from __future__ import annotations

import dataclasses
import json
from typing import Dict, List, Optional, Tuple

import numpy as np

from metrabs_ros.onnx_backend import ModelLoadError

POSE_CONTRACT = 'pose/1'
DETECTOR_CONTRACT = 'detector/1'
CONTRACT_KEY = 'metrabs_ros.contract'

#: name -> (ONNX element type string, rank)
POSE_INPUTS = {
    'image': ('tensor(uint8)', 3),
    'intrinsics': ('tensor(float)', 2),
    'distortion_coeffs': ('tensor(float)', 1),
    'distortion_model': ('tensor(float)', 1),
    'crop_rotations': ('tensor(float)', 4),
    'crop_intrinsics': ('tensor(float)', 4),
    'pyramid_levels': ('tensor(int32)', 2),
    'aug_gammas': ('tensor(float)', 1),
    'aug_flips': ('tensor(float)', 1),
}
POSE_OUTPUT = 'poses3d_aug_mm'
UNCERTAINTY_OUTPUT = 'uncertainty_aug'


@dataclasses.dataclass(frozen=True, eq=False)
class SkeletonMapping:
    """How to get one named output format from the model's raw joints."""
    name: str
    joint_names: Tuple[str, ...]
    edges: np.ndarray                       # int64 [E, 2]
    indices: Optional[np.ndarray] = None    # int64 [J_out] into raw joints, or
    matrix: Optional[np.ndarray] = None     # float32 [J_raw, J_out] affine weights (columns sum to 1)

    def convert(self, raw: np.ndarray) -> np.ndarray:
        """``[..., J_raw, C]`` raw joints -> ``[..., J_out, C]``."""
        if self.indices is not None:
            return raw[..., self.indices, :]
        return np.einsum('...jc,jk->...kc', raw, self.matrix)

    def convert_scalar(self, raw: np.ndarray) -> np.ndarray:
        """``[..., J_raw]`` per-joint values (e.g. uncertainty) -> ``[..., J_out]``."""
        if self.indices is not None:
            return raw[..., self.indices]
        return raw @ np.abs(self.matrix)


@dataclasses.dataclass(frozen=True, eq=False)
class PoseModelInfo:
    path: str
    resolution: int
    joint_names: Tuple[str, ...]
    joint_edges: np.ndarray
    skeletons: Dict[str, SkeletonMapping]
    default_skeleton: str
    has_uncertainty: bool
    bone_lengths_mm: Optional[np.ndarray]   # reference length per raw edge, for the plausibility filter
    metadata: Dict[str, str]

    @property
    def name(self) -> str:
        return self.metadata.get('name', '')

    def skeleton(self, name: str) -> SkeletonMapping:
        """The mapping for ``name`` ('' = the model's default); unknown names raise listing the valid ones."""
        key = name or self.default_skeleton
        try:
            return self.skeletons[key]
        except KeyError:
            raise ValueError(f'unknown skeleton {name!r} for model {self.path}; valid skeletons: '
                             f'{", ".join(sorted(self.skeletons))}') from None


def _json(metadata: Dict[str, str], key: str, path: str, default=None):
    if key not in metadata:
        if default is not None:
            return default
        raise ModelLoadError(f'{path}: metadata key {key!r} is missing (see docs/model_contract.md)')
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as error:
        raise ModelLoadError(f'{path}: metadata {key!r} is not valid JSON: {error}') from None


def _check_io(session, path: str) -> bool:
    inputs = {i.name: i for i in session.get_inputs()}
    problems = []
    for name, (dtype, rank) in POSE_INPUTS.items():
        if name not in inputs:
            problems.append(f'missing input {name!r}')
        elif inputs[name].type != dtype or len(inputs[name].shape) != rank:
            problems.append(f'input {name!r} is {inputs[name].type} rank {len(inputs[name].shape)}, '
                            f'expected {dtype} rank {rank}')
    extra = sorted(set(inputs) - set(POSE_INPUTS))
    if extra:
        problems.append(f'unexpected inputs {extra}')
    outputs = {o.name: o for o in session.get_outputs()}
    if POSE_OUTPUT not in outputs:
        problems.append(f'missing output {POSE_OUTPUT!r} (outputs: {sorted(outputs)})')
    elif len(outputs[POSE_OUTPUT].shape) != 4:
        problems.append(f'output {POSE_OUTPUT!r} must have rank 4 [P, A, J, 3]')
    if problems:
        raise ModelLoadError(f'{path} does not follow the pose model contract {POSE_CONTRACT}: '
                             + '; '.join(problems))
    return UNCERTAINTY_OUTPUT in outputs


def read_pose_model_info(session, path: str) -> PoseModelInfo:
    """Validate a loaded pose-model session against the contract and parse its metadata."""
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    contract = metadata.get(CONTRACT_KEY)
    if contract != POSE_CONTRACT:
        hint = ' (this looks like a person detector)' if contract == DETECTOR_CONTRACT else ''
        raise ModelLoadError(f'{path}: metadata {CONTRACT_KEY!r} is {contract!r}, expected {POSE_CONTRACT!r}{hint}')
    has_uncertainty = _check_io(session, path)
    try:
        resolution = int(metadata['input_resolution'])
    except (KeyError, ValueError):
        raise ModelLoadError(f'{path}: metadata input_resolution missing or not an integer') from None
    joint_names = tuple(_json(metadata, 'joint_names', path))
    num_raw = len(joint_names)
    joint_edges = np.asarray(_json(metadata, 'joint_edges', path, default=[]), np.int64).reshape(-1, 2)
    skeletons: Dict[str, SkeletonMapping] = {}
    for name, spec in _json(metadata, 'skeletons', path, default={}).items():
        names = tuple(spec.get('joint_names', ()))
        edges = np.asarray(spec.get('edges', []), np.int64).reshape(-1, 2)
        if 'indices' in spec:
            indices = np.asarray(spec['indices'], np.int64)
            if indices.size and (indices.min() < 0 or indices.max() >= num_raw):
                raise ModelLoadError(f'{path}: skeleton {name!r} indexes joints outside 0..{num_raw - 1}')
            mapping = SkeletonMapping(name, names or tuple(joint_names[i] for i in indices), edges, indices=indices)
        elif 'matrix' in spec:
            matrix = np.asarray(spec['matrix'], np.float32)
            if matrix.ndim != 2 or matrix.shape[0] != num_raw:
                raise ModelLoadError(f'{path}: skeleton {name!r} matrix must be [{num_raw}, J_out]')
            mapping = SkeletonMapping(name, names, edges, matrix=matrix)
        else:
            raise ModelLoadError(f'{path}: skeleton {name!r} needs "indices" or "matrix"')
        if len(mapping.joint_names) != (len(mapping.indices) if mapping.indices is not None
                                        else mapping.matrix.shape[1]):
            raise ModelLoadError(f'{path}: skeleton {name!r} joint_names do not match its size')
        skeletons[name] = mapping
    default = metadata.get('default_skeleton', '')
    if not skeletons or default not in skeletons:
        # The raw joints are always available as a format of their own.
        default = default or 'raw'
        skeletons.setdefault(default, SkeletonMapping(
            default, joint_names, joint_edges, indices=np.arange(num_raw, dtype=np.int64)))
    bone_lengths = metadata.get('bone_lengths_mm')
    bone_lengths = np.asarray(json.loads(bone_lengths), np.float64) if bone_lengths else None
    if bone_lengths is not None and len(bone_lengths) != len(joint_edges):
        raise ModelLoadError(f'{path}: bone_lengths_mm must have one entry per joint edge')
    return PoseModelInfo(path, resolution, joint_names, joint_edges, skeletons, default, has_uncertainty,
                         bone_lengths, metadata)
