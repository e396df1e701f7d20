"""Affine-combining autoencoder (ACAE) between skeleton formats — the numpy side (no torch).

Sárándi et al., "Learning 3D Human Pose Estimation from Dozens of Datasets using a Geometry-Aware Autoencoder to
Bridge Between Skeleton Formats" (WACV 2023); reference metrabs.md §8.

Joints of several formats (the *encoder formats*) are concatenated into one list of J_in points; the encoder turns
them into L latent points, each an affine combination of the joints; the decoder turns the latents into the joints
of the *decoder formats* (J_out points), each an affine combination of the latents:

    latents[l] = Σ_j  joints_in[j] · encoder[j, l]      Σ_j encoder[j, l] = 1   (every column sums to 1)
    joints_out[k] = Σ_l latents[l] · decoder[l, k]      Σ_l decoder[l, k] = 1

Affine combinations with weights summing to 1 commute with every rotation and translation of the 3D input, so
encoding and decoding are exactly equivariant to rigid motion (units pass through: millimetres in, millimetres
out). Chirality: joints and latents are each grouped left | right | centre and both matrices are built from shared
blocks [[S, Q, X], [Q, S, X], [C, C, Z]] (rows: left, right, centre inputs; columns: left, right, centre outputs),
so mirroring the input (swapping left and right joints and negating x) mirrors the latents and the output.

File format (`.npz`, written by `metrabs-ros acae fit`): encoder [J_in, L] and decoder [L, J_out] float64,
encoder_formats / decoder_formats (names), encoder_joint_names / decoder_joint_names ('<joint>.<format>'),
latent_sides (one of 'l', 'r', 'c' per latent), format_version and a JSON 'info' string (fit settings and errors).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

FORMAT_VERSION = 'metrabs_ros.acae/1'
COLUMN_SUM_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class JointList:
    """Concatenated joints of several formats: '<joint>.<format>' names and each format's slice."""
    formats: Tuple[str, ...]
    format_joint_names: Dict[str, Tuple[str, ...]]

    @staticmethod
    def create(formats: Sequence[str], format_joint_names: Optional[Dict[str, Sequence[str]]] = None
               ) -> 'JointList':
        """Joint names from `format_joint_names` or else the skeleton registry (metrabs_ros.skeletons)."""
        from metrabs_ros.skeletons import get_skeleton
        names = {}
        for fmt in formats:
            if format_joint_names and fmt in format_joint_names:
                names[fmt] = tuple(format_joint_names[fmt])
            else:
                names[fmt] = tuple(get_skeleton(fmt).joint_names)
        if len(set(formats)) != len(formats):
            raise ValueError(f'duplicate formats in {list(formats)}')
        return JointList(tuple(formats), names)

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(f'{n}.{f}' for f in self.formats for n in self.format_joint_names[f])

    def __len__(self) -> int:
        return sum(len(v) for v in self.format_joint_names.values())

    def slice(self, fmt: str) -> slice:
        start = 0
        for f in self.formats:
            n = len(self.format_joint_names[f])
            if f == fmt:
                return slice(start, start + n)
            start += n
        raise ValueError(f'format {fmt!r} not in {list(self.formats)}')

    def concatenate(self, joints_by_format: Dict[str, np.ndarray]) -> np.ndarray:
        """{format: [..., J_f, 3]} → [..., J, 3] in this order (every format must be present)."""
        missing = [f for f in self.formats if f not in joints_by_format]
        if missing:
            raise ValueError(f'joints missing for formats {missing}')
        return np.concatenate([np.asarray(joints_by_format[f]) for f in self.formats], axis=-2)

    def split(self, joints: np.ndarray) -> Dict[str, np.ndarray]:
        return {f: joints[..., self.slice(f), :] for f in self.formats}


def chirality_order(names: Sequence[str]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the left joints, their right counterparts (same position) and the centre joints.

    A joint counts as left/right only when its mirrored name exists; the rest are centre joints."""
    index = {n: i for i, n in enumerate(names)}
    left, right, centre = [], [], []
    for i, n in enumerate(names):
        if n[:1] == 'l' and ('r' + n[1:]) in index:
            left.append(i)
            right.append(index['r' + n[1:]])
        elif n[:1] == 'r' and ('l' + n[1:]) in index:
            continue
        else:
            centre.append(i)
    return np.array(left, np.int64), np.array(right, np.int64), np.array(centre, np.int64)


def latent_sides(num_left: int, num_centre: int) -> Tuple[str, ...]:
    return ('l',) * num_left + ('r',) * num_left + ('c',) * num_centre


@dataclasses.dataclass(frozen=True)
class Acae:
    """A fitted ACAE. encoder [J_in, L], decoder [L, J_out] (float64); see the module docstring."""
    encoder: np.ndarray
    decoder: np.ndarray
    encoder_joints: JointList
    decoder_joints: JointList
    latent_sides: Tuple[str, ...]
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        validate_weights(self.encoder, self.decoder, len(self.encoder_joints), len(self.decoder_joints))
        if len(self.latent_sides) != self.encoder.shape[1]:
            raise ValueError(f'{len(self.latent_sides)} latent sides for {self.encoder.shape[1]} latents')

    @property
    def num_latents(self) -> int:
        return int(self.encoder.shape[1])

    @property
    def formats(self) -> Tuple[str, ...]:
        return self.decoder_joints.formats

    def encode(self, joints_in: np.ndarray) -> np.ndarray:
        """[..., J_in, 3] (any unit) → latents [..., L, 3] (same unit)."""
        return np.einsum('...jc,jl->...lc', np.asarray(joints_in, np.float64), self.encoder)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """[..., L, 3] → [..., J_out, 3]."""
        return np.einsum('...lc,lk->...kc', np.asarray(latents, np.float64), self.decoder)

    def reconstruct(self, joints_in: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(joints_in))

    def format_matrix(self, fmt: str) -> np.ndarray:
        """[J_in, J_fmt]: the joints of decoder format `fmt` as affine combinations of the encoder joints
        (columns sum to 1) — the contract's 'matrix' skeleton mapping (docs/model_contract.md)."""
        return self.encoder @ self.decoder[:, self.decoder_joints.slice(fmt)]

    def mirror_permutations(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input joints, latents, output joints) index permutations that swap left and right."""
        sides = self.latent_sides
        nl = sides.count('l')
        lat = np.arange(len(sides))
        lat[:nl], lat[nl:2 * nl] = np.arange(nl, 2 * nl), np.arange(nl)
        from metrabs_ros.skeletons import mirror_permutation
        return mirror_permutation(self.encoder_joints.names), lat, mirror_permutation(self.decoder_joints.names)


def validate_weights(encoder: np.ndarray, decoder: np.ndarray, num_in: int, num_out: int) -> None:
    """Shapes [J_in, L] / [L, J_out], finite, every column summing to 1 (affine combinations)."""
    encoder, decoder = np.asarray(encoder), np.asarray(decoder)
    if encoder.ndim != 2 or encoder.shape[0] != num_in:
        raise ValueError(f'ACAE encoder must be [{num_in}, L], got {encoder.shape}')
    if decoder.ndim != 2 or decoder.shape != (encoder.shape[1], num_out):
        raise ValueError(f'ACAE decoder must be [{encoder.shape[1]}, {num_out}], got {decoder.shape}')
    for name, w in (('encoder', encoder), ('decoder', decoder)):
        if not np.all(np.isfinite(w)):
            raise ValueError(f'ACAE {name} has non-finite weights')
        worst = float(np.max(np.abs(w.sum(0) - 1.0)))
        if worst > COLUMN_SUM_TOLERANCE:
            raise ValueError(f'ACAE {name} columns must sum to 1 (affine combinations); worst deviation {worst:.2e}')


def save_acae(path: str, acae: Acae) -> str:
    path = os.fspath(path)
    if not path.endswith('.npz'):
        raise ValueError(f'ACAE files are .npz, got {path!r}')
    tmp = path[:-4] + '.tmp.npz'
    np.savez(tmp, format_version=np.array(FORMAT_VERSION), encoder=acae.encoder, decoder=acae.decoder,
             encoder_formats=np.array(acae.encoder_joints.formats), decoder_formats=np.array(acae.decoder_joints.formats),
             encoder_joint_names=np.array(acae.encoder_joints.names),
             decoder_joint_names=np.array(acae.decoder_joints.names),
             latent_sides=np.array(acae.latent_sides), info=np.array(json.dumps(acae.info)))
    os.replace(tmp, path)
    return path


def _joint_list(formats: Sequence[str], qualified: Sequence[str], path: str) -> JointList:
    per_format: Dict[str, List[str]] = {f: [] for f in formats}
    for q in qualified:
        joint, _, fmt = q.rpartition('.')
        if fmt not in per_format:
            raise ValueError(f'{path}: joint {q!r} names a format outside {list(formats)}')
        per_format[fmt].append(joint)
    return JointList.create(formats, per_format)


def load_acae(path: str) -> Acae:
    """Read an ACAE file; a missing, foreign or inconsistent file raises ValueError naming the problem."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f'ACAE file not found: {path}')
    try:
        data = np.load(path, allow_pickle=False)
        version = str(data['format_version'])
    except Exception as e:  # not a zip / not our keys
        raise ValueError(f'{path}: not an ACAE file ({type(e).__name__}: {e})') from None
    if version != FORMAT_VERSION:
        raise ValueError(f'{path}: ACAE format {version!r}, expected {FORMAT_VERSION!r}')
    enc_formats = [str(f) for f in data['encoder_formats']]
    dec_formats = [str(f) for f in data['decoder_formats']]
    enc = _joint_list(enc_formats, [str(n) for n in data['encoder_joint_names']], path)
    dec = _joint_list(dec_formats, [str(n) for n in data['decoder_joint_names']], path)
    try:
        return Acae(np.asarray(data['encoder'], np.float64), np.asarray(data['decoder'], np.float64), enc, dec,
                    tuple(str(s) for s in data['latent_sides']), json.loads(str(data['info'])))
    except ValueError as e:
        raise ValueError(f'{path}: {e}') from None


def encoder_rows(acae: Acae, raw_joint_names: Sequence[str],
                 model_skeletons: Optional[Dict[str, Tuple[Sequence[int], Sequence[str]]]] = None) -> np.ndarray:
    """The model's raw-joint index of every ACAE encoder joint.

    A joint '<joint>.<format>' is found by that exact raw name (our training's naming) or else through the model's
    own skeleton entry for <format> (`model_skeletons[format] = (indices, joint_names)`, an 'indices' mapping of
    the contract metadata, as fixture and imported official models have). Missing joints raise ValueError: fit the
    ACAE with --encoder-formats set to formats the model predicts."""
    raw_index = {n: i for i, n in enumerate(raw_joint_names)}
    rows, missing = [], []
    for fmt in acae.encoder_joints.formats:
        via = None
        if model_skeletons and fmt in model_skeletons:
            indices, names = model_skeletons[fmt]
            via = dict(zip(names, indices))
        for joint in acae.encoder_joints.format_joint_names[fmt]:
            qualified = f'{joint}.{fmt}'
            if qualified in raw_index:
                rows.append(raw_index[qualified])
            elif via is not None and joint in via:
                rows.append(int(via[joint]))
            else:
                missing.append(qualified)
    if missing:
        raise ValueError(f'the model lacks {len(missing)} joints the ACAE encoder reads (e.g. {missing[:4]}); '
                         f'fit the ACAE with --encoder-formats set to formats the model predicts')
    return np.asarray(rows, np.int64)


def skeleton_mappings(acae: Acae, num_raw: int, rows: np.ndarray, formats: Optional[Sequence[str]] = None
                      ) -> Dict[str, dict]:
    """Contract metadata 'skeletons' entries ({'matrix', 'joint_names', 'edges'}) that produce the ACAE's decoder
    formats from a model's raw joints: [num_raw, J_fmt] matrices (zero rows for raw joints the encoder does not
    read, `rows` from encoder_rows), columns summing to 1."""
    from metrabs_ros.skeletons import SKELETONS
    out = {}
    for fmt in formats or acae.formats:
        m = np.zeros((int(num_raw), len(acae.decoder_joints.format_joint_names[fmt])))
        np.add.at(m, rows, acae.format_matrix(fmt))
        edges = [list(e) for e in SKELETONS[fmt].edges] if fmt in SKELETONS else []
        out[fmt] = {'matrix': m.tolist(), 'joint_names': list(acae.decoder_joints.format_joint_names[fmt]),
                    'edges': edges}
    return out
