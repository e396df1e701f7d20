"""More skeleton formats, derived from the joints every data-engine sample already stores.

Each joint of a derived format is an *affine* combination (weights summing to 1, negative weights allowed for
extrapolation, e.g. a fingertip beyond the last finger bone) of stored joints: Anny's 104 bone heads
(``anny_104``) and the ``smpl_24``, ``coco_19`` and ``h36m_17`` joints (see ``body_model``). Affine weights make
the derived joints exactly equivariant to rotations and translations of the body, and the recipes are left/right
symmetric, so mirroring a body mirrors its derived joints.

Recipes are keyed by joint NAME; the joint ORDER comes from the registry (``metrabs_ros.skeletons.get_skeleton``)
at call time, so a reordered registry cannot misplace joints, and a registry name without a recipe raises.
The definitions approximate, not reproduce, the data sets' own joints (mocap markers, annotator conventions);
docs/synthetic_data.md lists them. numpy only (no torch, no Anny): runs in DataLoader workers.
"""

from __future__ import annotations

import functools
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from metrabs_ros.skeletons import get_skeleton

# Anny 0.6.2's bone labels in its own order: the rows of a sample's 'anny_104/joints3d_mm' (also in the dataset
# manifest's joint_names; test_derived_formats checks this list against the loaded body model).
_ANNY_SIDE = ('pelvis upperleg01 upperleg02 lowerleg01 lowerleg02 foot toe1-1 toe1-2 toe2-1 toe2-2 toe2-3 toe3-1 '
              'toe3-2 toe3-3 toe4-1 toe4-2 toe4-3 toe5-1 toe5-2 toe5-3').split()
_ANNY_ARM = ('clavicle shoulder01 upperarm01 upperarm02 lowerarm01 lowerarm02 wrist finger1-1 finger1-2 finger1-3 '
             'metacarpal1 finger2-1 finger2-2 finger2-3 metacarpal2 finger3-1 finger3-2 finger3-3 metacarpal3 '
             'finger4-1 finger4-2 finger4-3 metacarpal4 finger5-1 finger5-2 finger5-3').split()
ANNY_104_JOINT_NAMES: Tuple[str, ...] = tuple(
    ['root'] + [f'{b}.L' for b in _ANNY_SIDE] + [f'{b}.R' for b in _ANNY_SIDE]
    + 'spine05 spine04 spine03 spine02 spine01'.split()
    + [f'{b}.L' for b in _ANNY_ARM] + [f'{b}.R' for b in _ANNY_ARM]
    + 'neck01 neck02 neck03 head eye.L eye.R'.split())

SOURCE_FORMATS: Tuple[str, ...] = ('anny_104', 'smpl_24', 'coco_19', 'h36m_17')

Recipe = Dict[str, float]     # 'source_format/joint' -> weight


def source_joint_names(fmt: str) -> Tuple[str, ...]:
    """Joint names (in the stored order) of a source format."""
    if fmt not in SOURCE_FORMATS:
        raise ValueError(f'{fmt!r} is not a source format; valid: {", ".join(SOURCE_FORMATS)}')
    return ANNY_104_JOINT_NAMES if fmt == 'anny_104' else get_skeleton(fmt).joint_names


# --- recipes ---------------------------------------------------------------------------------------------------
# Templates: '{s}' = the registry's side prefix (l / r), '{A}' = Anny's side suffix (L / R).

def _anny(**weights) -> Recipe:
    """Anny bones given as keyword names with '_' for '-' and a trailing side placeholder added."""
    return {f'anny_104/{k.replace("_", "-")}.{{A}}': float(w) for k, w in weights.items()}


def _anny_centre(**weights) -> Recipe:
    return {f'anny_104/{k}': float(w) for k, w in weights.items()}


def _copy(fmt: str, joint: str) -> Recipe:
    return {f'{fmt}/{joint}': 1.0}


def _plus(*recipes: Recipe, weights: Sequence[float]) -> Recipe:
    out: Recipe = {}
    for r, w in zip(recipes, weights):
        for k, v in r.items():
            out[k] = out.get(k, 0.0) + w * v
    return out


TOE_BALL = {f'anny_104/toe{k}-1.{{A}}': 0.2 for k in range(1, 6)}           # mean of the 5 toe MTP joints
# tip of the big toe and of the second toe, each one distal phalanx beyond its last joint (the mesh's big-toe tip
# is 1.1 bone lengths beyond toe1-2), averaged
TOE_TIP = _anny(toe1_2=1.0, toe1_1=-0.5, toe2_3=1.0, toe2_2=-0.5)
MIDFOOT = _plus(_anny(foot=1.0), TOE_BALL, weights=(0.5, 0.5))               # ankle / ball of the foot midpoint
HAND_CENTRE = _anny(wrist=0.5, finger3_1=0.5)                                # wrist / middle knuckle midpoint
MIDDLE_KNUCKLE = _anny(finger3_1=1.0)                                        # middle-finger MCP joint
FINGER_TIP = _anny(finger3_3=1.8, finger3_2=-0.8)     # middle fingertip: 0.8 of the middle phalanx beyond the DIP
THUMB_IP = _anny(finger1_3=1.0)                                              # thumb interphalangeal joint
THUMB_TIP = _anny(finger1_3=1.7, finger1_2=-0.7)      # thumb tip: 0.7 of the proximal phalanx beyond the IP joint
CLAVICLE = _anny(clavicle=0.5, shoulder01=0.5)                               # as smpl_24 lcla / rcla
STERNAL_NOTCH = _anny_centre(**{'clavicle.L': 0.5, 'clavicle.R': 0.5})      # between the clavicles' inner heads
NECK_BASE = _anny_centre(**{'neck01': 0.5, 'clavicle.L': 0.25, 'clavicle.R': 0.25})
LOWER_NECK = _anny_centre(neck01=0.5, neck02=0.5)                            # as smpl_24 neck
MID_NECK = _anny_centre(neck02=0.5, neck03=0.5)
HEAD_CENTRE = {'coco_19/lear': 0.35, 'coco_19/rear': 0.35, 'h36m_17/htop': 0.3}   # between the ears, raised


def _table(centre: Mapping[str, Recipe], sided: Mapping[str, Recipe]) -> Dict[str, Recipe]:
    """Name -> recipe; ``sided`` holds '{s}'-templated names and '{s}'/'{A}'-templated recipes for both sides."""
    out = dict(centre)
    for name, recipe in sided.items():
        for s, a in (('l', 'L'), ('r', 'R')):
            out[name.format(s=s)] = {k.format(s=s, A=a): w for k, w in recipe.items()}
    return out


def _h36m(joint: str) -> Recipe:
    return _copy('h36m_17', joint)


_H36M_LIMBS = {f'{{s}}{j}': _copy('h36m_17', f'{{s}}{j}') for j in ('hip', 'kne', 'ank', 'sho', 'elb', 'wri')}

_MPI = _table(
    {'pelv': _h36m('pelv'), 'spin': _anny_centre(spine03=1.0), 'spi2': _anny_centre(spine02=1.0),
     'spi4': _anny_centre(spine01=1.0), 'thor': STERNAL_NOTCH, 'neck': LOWER_NECK, 'head': _h36m('head'),
     'htop': _h36m('htop')},
    {**_H36M_LIMBS, '{s}cla': CLAVICLE, '{s}han': HAND_CENTRE, '{s}foo': TOE_BALL, '{s}toe': TOE_TIP})

RECIPES: Dict[str, Dict[str, Recipe]] = {
    'h36m_25': _table(
        {j: _h36m(j) for j in ('pelv', 'spin', 'neck', 'head', 'htop')},
        {**_H36M_LIMBS, '{s}foo': TOE_BALL, '{s}toe': TOE_TIP, '{s}thu': THUMB_IP, '{s}fin': MIDDLE_KNUCKLE}),
    'mpi_inf_3dhp_17': _MPI,     # the 17 test-set joints are a subset of the 28, with the same definitions
    'mpi_inf_3dhp_28': _MPI,
    'kinectv2_25': _table(
        {'spinebase': _h36m('pelv'), 'spinemid': _anny_centre(spine02=0.5, spine01=0.5), 'spineshoulder': NECK_BASE,
         'neck': MID_NECK, 'head': HEAD_CENTRE},
        {**_H36M_LIMBS, '{s}han': HAND_CENTRE, '{s}handtip': FINGER_TIP, '{s}thu': THUMB_TIP, '{s}foo': MIDFOOT}),
    # LSP order (via 3DOH50K): limbs from the COCO (surface-annotation) regressor, 'head' is LSP's head top
    'lsp_14': _table(
        {'neck': MID_NECK, 'head': _h36m('htop')},
        {f'{{s}}{j}': _copy('coco_19', f'{{s}}{j}') for j in ('sho', 'elb', 'wri', 'hip', 'kne', 'ank')}),
    # SMPL's official names (bell / spin / thor = spine1 / spine2 / spine3 = smpl_24 spi1 / spi2 / spi3)
    'smpl+head_30': {
        **{j: _copy('smpl_24', j) for j in get_skeleton('smpl_24').joint_names if not j.startswith('spi')},
        'bell': _copy('smpl_24', 'spi1'), 'spin': _copy('smpl_24', 'spi2'), 'thor': _copy('smpl_24', 'spi3'),
        'htop': _h36m('htop'), **{j: _copy('coco_19', j) for j in ('nose', 'leye', 'reye', 'lear', 'rear')}},
}


def _availability() -> Tuple[Tuple[str, ...], Dict[str, str]]:
    available, missing = [], {}
    for fmt in RECIPES:
        try:
            get_skeleton(fmt)
        except ValueError:
            missing[fmt] = 'not registered in metrabs_ros.skeletons (no joint names/order to follow)'
        else:
            available.append(fmt)
    return tuple(available), missing


#: The derived formats this installation can produce (registered in metrabs_ros.skeletons), and why others cannot.
DERIVED_FORMATS, UNAVAILABLE_FORMATS = _availability()


# --- matrices --------------------------------------------------------------------------------------------------

def _recipes_in_order(fmt: str, joint_names: Sequence[str]):
    if fmt not in RECIPES:
        raise ValueError(f'no derivation recipes for {fmt!r}; derivable formats: {", ".join(RECIPES)}')
    missing = [n for n in joint_names if n not in RECIPES[fmt]]
    if missing:
        raise ValueError(f'{fmt}: the registry (metrabs_ros.skeletons) has joint(s) {missing} without a recipe in '
                         'metrabs_ros.training.synth.derived_formats.RECIPES; add their definitions')
    return [RECIPES[fmt][n] for n in joint_names]


def required_sources(fmt: str) -> Tuple[str, ...]:
    """The source formats the recipes of ``fmt``'s registered joints use, in :data:`SOURCE_FORMATS` order."""
    used = {k.split('/', 1)[0] for r in _recipes_in_order(fmt, get_skeleton(fmt).joint_names) for k in r}
    return tuple(f for f in SOURCE_FORMATS if f in used)


def _layout_names(source_layout) -> Dict[str, Tuple[str, ...]]:
    if isinstance(source_layout, Mapping):
        return {f: tuple(n) for f, n in source_layout.items()}
    return {f: source_joint_names(f) for f in source_layout}


def derivation_matrix(fmt: str, source_layout: Union[Sequence[str], Mapping[str, Sequence[str]]]
                      ) -> np.ndarray:
    """float64 ``[J_fmt, S]``: derived = M @ sources, the sources being the concatenation of the ``source_layout``
    formats' joints (a sequence of source-format names in stored order, or {format: joint names}); rows in the
    registry's joint order of ``fmt``. Every row sums to 1."""
    names = _layout_names(source_layout)
    columns, start = {}, 0
    for f, joint_names in names.items():
        columns.update({f'{f}/{n}': start + i for i, n in enumerate(joint_names)})
        start += len(joint_names)
    recipes = _recipes_in_order(fmt, get_skeleton(fmt).joint_names)
    M = np.zeros((len(recipes), start))
    for j, recipe in enumerate(recipes):
        for key, w in recipe.items():
            if key not in columns:
                raise ValueError(f'{fmt}: source joint {key!r} is not in the source layout '
                                 f'({", ".join(names)})')
            M[j, columns[key]] += w
    return M


@functools.lru_cache(maxsize=None)
def _compact_matrix(fmt: str, registry_names: Tuple[str, ...]):
    """(sources used, their joint counts, matrix over just those sources) for the current registry order."""
    sources = required_sources(fmt)
    return sources, tuple(len(source_joint_names(f)) for f in sources), derivation_matrix(fmt, sources)


def derived_joints(joints_by_format: Mapping[str, np.ndarray], formats: Optional[Sequence[str]] = None
                   ) -> Dict[str, np.ndarray]:
    """The derived formats' joints from stored ones: {format: [..., J, 3]} (any leading batch shape, any units;
    the anny_104 rows in Anny's bone order) → {derived format: [..., J_fmt, 3]}.

    ``formats`` None: every :data:`DERIVED_FORMATS` entry that ``joints_by_format`` lacks and whose source formats
    it has (others are skipped). Explicit ``formats``: exactly those (a missing source format raises). A non-finite
    source joint makes NaN exactly the derived joints that use it."""
    explicit = formats is not None
    out = {}
    for fmt in (formats if explicit else DERIVED_FORMATS):
        if not explicit and fmt in joints_by_format:
            continue
        sources, counts, M = _compact_matrix(fmt, get_skeleton(fmt).joint_names)
        lacking = [f for f in sources if f not in joints_by_format]
        if lacking:
            if explicit:
                raise ValueError(f'{fmt} needs source format(s) {lacking}; given {sorted(joints_by_format)}')
            continue
        arrays = []
        for f, n in zip(sources, counts):
            a = np.asarray(joints_by_format[f])
            if a.ndim < 2 or a.shape[-2:] != (n, 3):
                raise ValueError(f'{f}: expected joints of shape [..., {n}, 3], got {a.shape}')
            arrays.append(a)
        batch = np.broadcast_shapes(*(a.shape[:-2] for a in arrays))
        x = np.concatenate([np.broadcast_to(a, batch + a.shape[-2:]) for a in arrays], axis=-2)
        dtype = np.result_type(x.dtype, np.float32)
        finite = np.all(np.isfinite(x), axis=-1)                                   # [..., S]
        y = np.einsum('js,...sc->...jc', M, np.where(finite[..., None], x, 0.0))
        bad = np.einsum('js,...s->...j', (M != 0).astype(np.float64), (~finite).astype(np.float64)) > 0
        out[fmt] = np.where(bad[..., None], np.nan, y).astype(dtype)
    return out
