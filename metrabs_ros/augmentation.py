"""Test-time augmentation (TTA) constants of MeTRAbs.

For ``n = num_aug`` augmentations (reference: official ``multiperson_model.py``):

* in-plane rotation angles ``linspace(-25°, 25°, n)``;
* zoom factors ``linspace(0.8, 1.0, n//2, endpoint=False) ++ linspace(1.0, 1.1, n - n//2)``;
* augmentation ``i`` is mirrored iff ``(i - n//2)`` is odd;
* gammas ``linspace(0.6, 1.0, n)``.

``n = 1`` follows the official PyTorch models: angle 0, zoom 1.0, gamma 0.8 (the midpoint), no flip.
(The TF SavedModels use zoom 1.05 there, because TF's linspace returns the midpoint for n = 1.)
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

MAX_ROTATION_DEGREES = 25.0
FLIP_MATRIX = np.diag([-1.0, 1.0, 1.0])


def _linspace(start: float, stop: float, num: int, endpoint: bool = True) -> np.ndarray:
    """Official ``ptu.linspace``: the midpoint when ``num == 1`` and ``endpoint``."""
    if num == 1 and endpoint:
        return np.array([(start + stop) / 2.0])
    return np.linspace(start, stop, num, endpoint=endpoint)


def rotation_z(angle_rad: np.ndarray) -> np.ndarray:
    """Rotation matrices about the optical axis (z), ``[..., 3, 3]``: ``[[c, -s, 0], [s, c, 0], [0, 0, 1]]``."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    zero, one = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, -s, zero], -1), np.stack([s, c, zero], -1),
                     np.stack([zero, zero, one], -1)], -2)


@dataclasses.dataclass(frozen=True, eq=False)
class TTAParams:
    """Per-augmentation constants, each with leading dimension ``A = num_aug``."""
    angles_rad: np.ndarray        # float64 [A], in-plane rotation angle
    scales: np.ndarray            # float64 [A], zoom factor applied to the crop focal length
    flips: np.ndarray             # bool [A], mirrored crop
    gammas: np.ndarray            # float32 [A], crop = linear_rgb ** (gamma / 2.2)
    rotflip_matrices: np.ndarray  # float64 [A, 3, 3] = F_a @ Rz(-angle_a)

    @property
    def num_aug(self) -> int:
        return len(self.angles_rad)


@functools.lru_cache(maxsize=32)
def tta_parameters(num_aug: int) -> TTAParams:
    """The official TTA constants for ``num_aug`` augmentations (cached: computed once per value)."""
    num_aug = int(num_aug)
    if num_aug < 1:
        raise ValueError(f'num_aug must be >= 1, got {num_aug}')
    max_angle = np.deg2rad(MAX_ROTATION_DEGREES)
    angles = _linspace(-max_angle, max_angle, num_aug)
    scales = np.concatenate([
        np.linspace(0.8, 1.0, num_aug // 2, endpoint=False),
        np.linspace(1.0, 1.1, num_aug - num_aug // 2)])
    flips = (np.arange(num_aug) - num_aug // 2) % 2 != 0
    gammas = _linspace(0.6, 1.0, num_aug).astype(np.float32)
    flipmats = np.where(flips[:, np.newaxis, np.newaxis], FLIP_MATRIX, np.eye(3))
    rotflip = flipmats @ rotation_z(-angles)
    for array in (angles, scales, flips, gammas, rotflip):
        array.setflags(write=False)
    return TTAParams(angles, scales, flips, gammas, rotflip)
