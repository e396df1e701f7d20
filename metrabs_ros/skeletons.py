"""Skeleton formats: joint names (official order), bones and the left/right mirror mapping.

Joint orders follow the official MeTRAbs skeleton keys (docs: shared reference §7). A model file carries the
formats it can output in its metadata; this registry provides names, edges and validation.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Sequence, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class Skeleton:
    name: str
    joint_names: Tuple[str, ...]
    edges: Tuple[Tuple[int, int], ...]

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)


def _make(name: str, joints: str, bones: str) -> Skeleton:
    names = tuple(joints.split())
    index = {n: i for i, n in enumerate(names)}
    edges = []
    for chain in bones.split(','):
        parts = chain.split('-')
        edges.extend((index[a], index[b]) for a, b in zip(parts[:-1], parts[1:]))
    return Skeleton(name, names, tuple(edges))


SKELETONS: Dict[str, Skeleton] = {s.name: s for s in [
    _make('smpl_24',
          'pelv lhip rhip spi1 lkne rkne spi2 lank rank spi3 ltoe rtoe neck lcla rcla head lsho rsho lelb relb '
          'lwri rwri lhan rhan',
          'pelv-spi1-spi2-spi3-neck-head,pelv-lhip-lkne-lank-ltoe,pelv-rhip-rkne-rank-rtoe,'
          'spi3-lcla-lsho-lelb-lwri-lhan,spi3-rcla-rsho-relb-rwri-rhan'),
    _make('h36m_17',
          'pelv rhip rkne rank lhip lkne lank spin neck head htop lsho lelb lwri rsho relb rwri',
          'pelv-spin-neck-head-htop,pelv-rhip-rkne-rank,pelv-lhip-lkne-lank,neck-lsho-lelb-lwri,'
          'neck-rsho-relb-rwri'),
    _make('h36m_25',
          'rhip rkne rank rfoo rtoe lhip lkne lank lfoo ltoe spin neck head htop lsho lelb lwri lthu lfin rsho relb '
          'rwri rthu rfin pelv',
          'pelv-spin-neck-head-htop,pelv-rhip-rkne-rank-rfoo-rtoe,pelv-lhip-lkne-lank-lfoo-ltoe,'
          'neck-lsho-lelb-lwri-lfin,lwri-lthu,neck-rsho-relb-rwri-rfin,rwri-rthu'),
    _make('mpi_inf_3dhp_17',
          'htop neck rsho relb rwri lsho lelb lwri rhip rkne rank lhip lkne lank pelv spin head',
          'pelv-spin-neck-head-htop,neck-rsho-relb-rwri,neck-lsho-lelb-lwri,pelv-rhip-rkne-rank,'
          'pelv-lhip-lkne-lank'),
    _make('mpi_inf_3dhp_28',
          'thor spi4 spi2 spin pelv neck head htop lcla lsho lelb lwri lhan rcla rsho relb rwri rhan lhip lkne lank '
          'lfoo ltoe rhip rkne rank rfoo rtoe',
          'pelv-spin-spi2-spi4-thor-neck-head-htop,thor-lcla-lsho-lelb-lwri-lhan,thor-rcla-rsho-relb-rwri-rhan,'
          'pelv-lhip-lkne-lank-lfoo-ltoe,pelv-rhip-rkne-rank-rfoo-rtoe'),
    _make('coco_19',
          'neck nose pelv lsho lelb lwri lhip lkne lank rsho relb rwri rhip rkne rank leye lear reye rear',
          'pelv-neck-nose,nose-leye-lear,nose-reye-rear,neck-lsho-lelb-lwri,neck-rsho-relb-rwri,'
          'pelv-lhip-lkne-lank,pelv-rhip-rkne-rank'),
    _make('kinectv2_25',
          'spinebase spinemid neck head lsho lelb lwri lhan rsho relb rwri rhan lhip lkne lank lfoo rhip rkne '
          'rank rfoo spineshoulder lhandtip lthu rhandtip rthu',
          'spinebase-spinemid-spineshoulder-neck-head,spineshoulder-lsho-lelb-lwri-lhan-lhandtip,lwri-lthu,'
          'spineshoulder-rsho-relb-rwri-rhan-rhandtip,rwri-rthu,spinebase-lhip-lkne-lank-lfoo,'
          'spinebase-rhip-rkne-rank-rfoo'),
]}


def get_skeleton(name: str) -> Skeleton:
    """The registered skeleton ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        return SKELETONS[name]
    except KeyError:
        raise ValueError(
            f'unknown skeleton {name!r}; valid skeletons: {", ".join(sorted(SKELETONS))}') from None


def mirror_permutation(joint_names: Sequence[str]) -> np.ndarray:
    """Index permutation that swaps left and right joints (``l``/``r`` name prefix), e.g. lhip <-> rhip.

    Joints without a counterpart (centre joints) map to themselves.
    """
    names = list(joint_names)
    index = {n: i for i, n in enumerate(names)}
    perm = np.arange(len(names), dtype=np.int64)
    for i, n in enumerate(names):
        if n[:1] in ('l', 'r'):
            other = ('r' if n[0] == 'l' else 'l') + n[1:]
            if other in index:
                perm[i] = index[other]
    return perm
