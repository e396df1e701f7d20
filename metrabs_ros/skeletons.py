"""Skeleton formats: joint names (official order), bones, the left/right mirror mapping and provenance.

The registry holds the 23 skeleton keys of the official multi-skeleton MeTRAbs models (shared reference §7),
each with its joint names in the order the official models output them (``model.per_skeleton_joint_names``,
without the ``_<dataset>`` suffix of the 580-joint ``''`` list), a bone tree and a one-line ``source``.

Where the orders come from. The official skeleton table is built by ``posepile/merging/create_skeleton_info_file.py``
(repository isarandi/PosePile): seven formats list their joints explicitly there (smpl_24 and kinectv2_25 renamed
to the names used here); every other format takes the joints of the merged 'huge8' joint set whose name ends in
the format's suffix, in merged order. The merge (``posepile/merging/merged_dataset3d.py``, ``get_unique_elements``)
keeps each data set's own joint order, so those formats follow the ``JointInfo`` of the data set's loader
(``posepile/ds/<dataset>/main.py``). Two of them are confirmed against names read from a released model:
berkeley_mhad_43 (levineuwirth/neuropose ``src/neuropose/analyzer/segment.py``, checked by its test against
``per_skeleton_joint_names``) and bml_movi_87 (flodelaplace/lab-camera-dynamic-calibrator ``core/skeletons.py``).

Names. Short lowercase names; a leading ``l``/``r`` marks the left/right joint of a pair (``lhip``/``rhip``),
which ``mirror_permutation`` uses. Every official name already follows this rule (PosePile's ``JointInfo`` builds
its mirror map the same way), so no name had to be converted. A name is plain within its format only: ``spin`` of
smpl+head_30 (SMPL spine2, official name ``spin_smpl``) is not ``spin`` of h36m_17.

Bones. The official edge lists are not always trees (several leave the face or markers unconnected, some contain
cycles), so every format here has its own tree over all joints that follows the body chains and is left/right
symmetric; they are for drawing and bone-length statistics, not part of any official definition.

Body-model approximations. ``BODY_MODEL_APPROXIMATIONS`` names the formats that our own synthetic data (the data
engine, ``metrabs_ros/training/synth``) defines from the Anny body model: our models produce these as
approximations defined from the Anny body model, not the datasets' own definitions.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Sequence, Tuple

import numpy as np

# Formats whose joints our synthetic data defines (approximately) from the Anny body model.
BODY_MODEL_APPROXIMATIONS = frozenset({
    'smpl_24', 'coco_19', 'h36m_17',                                     # produced by the data engine
    'h36m_25', 'mpi_inf_3dhp_17', 'mpi_inf_3dhp_28', 'kinectv2_25',      # derived formats (in progress)
    'smpl+head_30', 'lsp_14',
})

# The 23 official skeleton keys, in the order of the official documentation (shared reference §7).
_OFFICIAL_ORDER = (
    'smpl_24', 'kinectv2_25', 'h36m_17', 'h36m_25', 'mpi_inf_3dhp_17', 'mpi_inf_3dhp_28', 'coco_19',
    'smplx_42', 'ghum_35', 'lsp_14', 'sailvos_26', 'gpa_34', 'aspset_17', 'bml_movi_87', 'mads_19',
    'berkeley_mhad_43', 'total_capture_21', 'jta_22', 'ikea_asm_17', 'human4d_32', '3dpeople_29', 'umpm_15',
    'smpl+head_30')


def is_body_model_approximation(name: str) -> bool:
    """True when our models produce format ``name`` as an approximation defined from the Anny body model,
    not from the data set's own definition (see ``BODY_MODEL_APPROXIMATIONS``)."""
    return name in BODY_MODEL_APPROXIMATIONS


@dataclasses.dataclass(frozen=True)
class Skeleton:
    name: str
    joint_names: Tuple[str, ...]
    edges: Tuple[Tuple[int, int], ...]
    source: str = ''          # one line: where the joint order comes from

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def approximate_from_body_model(self) -> bool:
        """Our models produce this format as an approximation defined from the Anny body model."""
        return is_body_model_approximation(self.name)


def _make(name: str, joints: str, bones: str, source: str = '') -> Skeleton:
    """``joints``: names separated by whitespace; ``bones``: comma-separated chains such as 'a-b-c'."""
    names = tuple(joints.split())
    index = {n: i for i, n in enumerate(names)}
    edges = []
    for chain in bones.split(','):
        parts = chain.strip().split('-')
        edges.extend((index[a], index[b]) for a, b in zip(parts[:-1], parts[1:]))
    return Skeleton(name, names, tuple(edges), source)


_TABLE = 'isarandi/PosePile posepile/merging/create_skeleton_info_file.py'


def _posepile(dataset_path: str, note: str = '') -> str:
    return (f'isarandi/PosePile {dataset_path} joint order, kept by the huge8 merge '
            f'(posepile/merging/merged_dataset3d.py){note}')


SKELETONS: Dict[str, Skeleton] = {s.name: s for s in [
    _make('smpl_24',
          'pelv lhip rhip spi1 lkne rkne spi2 lank rank spi3 ltoe rtoe neck lcla rcla head lsho rsho lelb relb '
          'lwri rwri lhan rhan',
          'pelv-spi1-spi2-spi3-neck-head,pelv-lhip-lkne-lank-ltoe,pelv-rhip-rkne-rank-rtoe,'
          'spi3-lcla-lsho-lelb-lwri-lhan,spi3-rcla-rsho-relb-rwri-rhan',
          f'{_TABLE} (SMPL order; bell/spin/thor renamed spi1/spi2/spi3 there)'),
    _make('h36m_17',
          'pelv rhip rkne rank lhip lkne lank spin neck head htop lsho lelb lwri rsho relb rwri',
          'pelv-spin-neck-head-htop,pelv-rhip-rkne-rank,pelv-lhip-lkne-lank,neck-lsho-lelb-lwri,'
          'neck-rsho-relb-rwri',
          f'{_TABLE} (explicit joint list)'),
    _make('h36m_25',
          'rhip rkne rank rfoo rtoe lhip lkne lank lfoo ltoe spin neck head htop lsho lelb lwri lthu lfin rsho relb '
          'rwri rthu rfin pelv',
          'pelv-spin-neck-head-htop,pelv-rhip-rkne-rank-rfoo-rtoe,pelv-lhip-lkne-lank-lfoo-ltoe,'
          'neck-lsho-lelb-lwri-lfin,lwri-lthu,neck-rsho-relb-rwri-rfin,rwri-rthu',
          f'{_TABLE} (explicit joint list)'),
    _make('mpi_inf_3dhp_17',
          'htop neck rsho relb rwri lsho lelb lwri rhip rkne rank lhip lkne lank pelv spin head',
          'pelv-spin-neck-head-htop,neck-rsho-relb-rwri,neck-lsho-lelb-lwri,pelv-rhip-rkne-rank,'
          'pelv-lhip-lkne-lank',
          f'{_TABLE} (explicit joint list)'),
    _make('mpi_inf_3dhp_28',
          'thor spi4 spi2 spin pelv neck head htop lcla lsho lelb lwri lhan rcla rsho relb rwri rhan lhip lkne lank '
          'lfoo ltoe rhip rkne rank rfoo rtoe',
          'pelv-spin-spi2-spi4-thor-neck-head-htop,thor-lcla-lsho-lelb-lwri-lhan,thor-rcla-rsho-relb-rwri-rhan,'
          'pelv-lhip-lkne-lank-lfoo-ltoe,pelv-rhip-rkne-rank-rfoo-rtoe',
          f'{_TABLE} (explicit joint list)'),
    _make('coco_19',
          'neck nose pelv lsho lelb lwri lhip lkne lank rsho relb rwri rhip rkne rank leye lear reye rear',
          'pelv-neck-nose,nose-leye-lear,nose-reye-rear,neck-lsho-lelb-lwri,neck-rsho-relb-rwri,'
          'pelv-lhip-lkne-lank,pelv-rhip-rkne-rank',
          f'{_TABLE} (explicit joint list, CMU Panoptic order)'),
    _make('kinectv2_25',
          'spinebase spinemid neck head lsho lelb lwri lhan rsho relb rwri rhan lhip lkne lank lfoo rhip rkne '
          'rank rfoo spineshoulder lhandtip lthu rhandtip rthu',
          'spinebase-spinemid-spineshoulder-neck-head,spineshoulder-lsho-lelb-lwri-lhan-lhandtip,lwri-lthu,'
          'spineshoulder-rsho-relb-rwri-rhan-rhandtip,rwri-rthu,spinebase-lhip-lkne-lank-lfoo,'
          'spinebase-rhip-rkne-rank-rfoo',
          f'{_TABLE} (Kinect v2 SDK order, new_joint_names)'),
    # ---- formats taken from the merged joint set by suffix (order = the data set loader's JointInfo) ----
    _make('smplx_42',
          'pelv lhip rhip bell lkne rkne spin lank rank thor ltoe rtoe neck lcla rcla head lsho rsho lelb relb '
          'lwri rwri jaw leyehf reyehf lmiddle1 rmiddle1 nose reye leye rear lear lto2 lto3 lhee rto2 rto3 rhee '
          'lthu lmiddle rthu rmiddle',
          'pelv-bell-spin-thor-neck-jaw-head-nose,nose-leye-lear,nose-reye-rear,head-leyehf,head-reyehf,'
          'thor-lcla-lsho-lelb-lwri-lmiddle1-lmiddle,lwri-lthu,thor-rcla-rsho-relb-rwri-rmiddle1-rmiddle,rwri-rthu,'
          'pelv-lhip-lkne-lank-ltoe-lto2,ltoe-lto3,lank-lhee,pelv-rhip-rkne-rank-rtoe-rto2,rtoe-rto3,rank-rhee',
          _posepile('posepile/ds/rich/main.py',
                    ' (SMPL-X joints selected by make_rich_body; agora/main.py selects the same)')),
    _make('ghum_35',
          'pelv spin1 spin2 spin3 neck head head2 lbrow1 rbrow1 lcla lsho lelb lwri lmiddle1 lmiddle3 lthu rcla '
          'rsho relb rwri rmiddle1 rmiddle3 rthu lhip lkne lank lhee lfoo ltoe rhip rkne rank rhee rfoo rtoe',
          'pelv-spin1-spin2-spin3-neck-head-head2,head-lbrow1,head-rbrow1,'
          'spin3-lcla-lsho-lelb-lwri-lmiddle1-lmiddle3,lwri-lthu,spin3-rcla-rsho-relb-rwri-rmiddle1-rmiddle3,'
          'rwri-rthu,pelv-lhip-lkne-lank-lhee-lfoo-ltoe,pelv-rhip-rkne-rank-rhee-rfoo-rtoe',
          _posepile('posepile/ds/hspace/main.py', ' (the selection in make_joint_info)')),
    _make('lsp_14',
          'rank rkne rhip lhip lkne lank rwri relb rsho lsho lelb lwri neck head',
          'neck-head,neck-lsho-lelb-lwri,neck-rsho-relb-rwri,lsho-lhip-lkne-lank,rsho-rhip-rkne-rank',
          _posepile('posepile/ds/tdoh/main.py', ' (3DOH50K, suffix 3doh, LSP joint order)')),
    _make('sailvos_26',
          'htop neck rsho relb rwri lsho lelb lwri rhip rkne rank lhip lkne lank spin head pelv rtoe ltoe nose '
          'reye leye rear lear rhan lhan',
          'pelv-spin-neck-head-htop,head-nose,nose-leye-lear,nose-reye-rear,neck-lsho-lelb-lwri-lhan,'
          'neck-rsho-relb-rwri-rhan,pelv-lhip-lkne-lank-ltoe,pelv-rhip-rkne-rank-rtoe',
          _posepile('posepile/ds/sailvos/main.py')),
    _make('gpa_34',
          'pelv spin spi1 spi2 spi3 neck head htop rcla rsho relb rwri rhan rfin rthu rthu2 lcla lsho lelb lwri '
          'lhan lfin lthu lthu2 rhip rkne rank rfoo rtoe lhip lkne lank lfoo ltoe',
          'pelv-spin-spi1-spi2-spi3-neck-head-htop,spi3-lcla-lsho-lelb-lwri-lhan-lfin,lwri-lthu-lthu2,'
          'spi3-rcla-rsho-relb-rwri-rhan-rfin,rwri-rthu-rthu2,pelv-lhip-lkne-lank-lfoo-ltoe,'
          'pelv-rhip-rkne-rank-rfoo-rtoe',
          _posepile('posepile/ds/gpa/main.py')),
    _make('aspset_17',
          'rank rkne rhip rwri relb rsho lank lkne lhip lwri lelb lsho htop head neck spin pelv',
          'pelv-spin-neck-head-htop,neck-lsho-lelb-lwri,neck-rsho-relb-rwri,pelv-lhip-lkne-lank,'
          'pelv-rhip-rkne-rank',
          _posepile('posepile/ds/aspset/main.py')),
    _make('bml_movi_87',
          # 67 surface markers followed by 20 virtual joint centres
          'backneck upperback clavicle sternum umbilicus lfronthead lbackhead lback lshom lupperarm lelbm lforearm '
          'lwrithumbside lwripinkieside lfin lasis lpsis lfrontthigh lthigh lknem lankm lhee lfifthmetatarsal '
          'ltoe lcheek lbreast lelbinner lwaist lthumb lfrontinnerthigh linnerknee lshin lfirstmetatarsal '
          'lfourthtoe lscapula lbum rfronthead rbackhead rback rshom rupperarm relbm rforearm rwrithumbside '
          'rwripinkieside rfin rasis rpsis rfrontthigh rthigh rknem rankm rhee rfifthmetatarsal rtoe rcheek '
          'rbreast relbinner rwaist rthumb rfrontinnerthigh rinnerknee rshin rfirstmetatarsal rfourthtoe '
          'rscapula rbum head mhip pelv thor lank lelb lhip lhan lkne lsho lwri lfoo rank relb rhip rhan rkne rsho '
          'rwri rfoo',
          # virtual-joint tree (official chains), then each marker hangs off the joint of its body segment
          'head-thor-pelv-mhip,thor-lsho-lelb-lwri-lhan,thor-rsho-relb-rwri-rhan,mhip-lhip-lkne-lank-lfoo,'
          'mhip-rhip-rkne-rank-rfoo,'
          'thor-backneck,thor-upperback,thor-clavicle,thor-sternum,pelv-umbilicus,'
          'head-lfronthead,head-lbackhead,head-lcheek,head-rfronthead,head-rbackhead,head-rcheek,'
          'thor-lback,thor-lbreast,thor-rback,thor-rbreast,pelv-lwaist,pelv-lasis,pelv-lpsis,'
          'pelv-rwaist,pelv-rasis,pelv-rpsis,'
          'lsho-lshom,lsho-lupperarm,lsho-lscapula,lelb-lelbm,lelb-lelbinner,lelb-lforearm,'
          'lwri-lwrithumbside,lwri-lwripinkieside,lhan-lfin,lhan-lthumb,'
          'rsho-rshom,rsho-rupperarm,rsho-rscapula,relb-relbm,relb-relbinner,relb-rforearm,'
          'rwri-rwrithumbside,rwri-rwripinkieside,rhan-rfin,rhan-rthumb,'
          'lhip-lbum,lhip-lfrontthigh,lhip-lthigh,lhip-lfrontinnerthigh,lkne-lknem,lkne-linnerknee,lkne-lshin,'
          'lank-lankm,lank-lhee,lfoo-lfifthmetatarsal,lfoo-lfirstmetatarsal,lfoo-ltoe,lfoo-lfourthtoe,'
          'rhip-rbum,rhip-rfrontthigh,rhip-rthigh,rhip-rfrontinnerthigh,rkne-rknem,rkne-rinnerknee,rkne-rshin,'
          'rank-rankm,rank-rhee,rfoo-rfifthmetatarsal,rfoo-rfirstmetatarsal,rfoo-rtoe,rfoo-rfourthtoe',
          _posepile('posepile/ds/bml_movi/main.py',
                    '; confirmed by flodelaplace/lab-camera-dynamic-calibrator core/skeletons.py')),
    _make('mads_19',
          'neck pelv lhip lkne lank ltoe rhip rkne rank rtoe lsho lelb lwri lhan rsho relb rwri rhan head',
          'pelv-neck-head,neck-lsho-lelb-lwri-lhan,neck-rsho-relb-rwri-rhan,pelv-lhip-lkne-lank-ltoe,'
          'pelv-rhip-rkne-rank-rtoe',
          _posepile('posepile/ds/mads/main.py')),
    _make('berkeley_mhad_43',
          # mocap markers: backl/backt = lower/upper back (centre), lhipb/lhipf/lhipl = back/front/lateral hip
          'head lhead rhead rback backl backt lback lside bell chest rside lsho1 lsho2 larm lelb lwri lhan1 lhan2 '
          'lhan3 rsho1 rsho2 rarm relb rwri rhan1 rhan2 rhan3 lhipb lhipf lhipl lleg lkne lank lhee lfoo rhipb '
          'rhipf rhipl rleg rkne rank rhee rfoo',
          'backl-backt-chest-bell,backt-head,head-lhead,head-rhead,backl-lback,backl-rback,bell-lside,bell-rside,'
          'backt-lsho1-lsho2-larm-lelb-lwri-lhan1,lwri-lhan2,lwri-lhan3,'
          'backt-rsho1-rsho2-rarm-relb-rwri-rhan1,rwri-rhan2,rwri-rhan3,'
          'lback-lhipb-lhipl-lhipf-lleg-lkne-lank-lhee-lfoo,rback-rhipb-rhipl-rhipf-rleg-rkne-rank-rhee-rfoo',
          _posepile('posepile/ds/bmhad/main.py',
                    '; confirmed by levineuwirth/neuropose src/neuropose/analyzer/segment.py')),
    _make('total_capture_21',
          'pelv spin spin1 spin2 spin3 neck head rcla rsho relb rwri lcla lsho lelb lwri rhip rkne rank lhip lkne '
          'lank',
          'pelv-spin-spin1-spin2-spin3-neck-head,neck-lcla-lsho-lelb-lwri,neck-rcla-rsho-relb-rwri,'
          'pelv-lhip-lkne-lank,pelv-rhip-rkne-rank',
          _posepile('posepile/ds/totalcapture/main.py')),
    _make('jta_22',
          'htop head neck rcla rsho relb rwri lcla lsho lelb lwri spin0 spin1 spin2 spin3 pelv rhip rkne rank lhip '
          'lkne lank',
          'pelv-spin3-spin2-spin1-spin0-neck-head-htop,neck-lcla-lsho-lelb-lwri,neck-rcla-rsho-relb-rwri,'
          'pelv-lhip-lkne-lank,pelv-rhip-rkne-rank',
          _posepile('posepile/ds/jta/main.py')),
    _make('ikea_asm_17',
          'nose leye reye lear rear lsho rsho lelb relb lwri rwri lhip rhip lkne rkne lank rank',
          'nose-leye-lear,nose-reye-rear,nose-lsho-lelb-lwri,nose-rsho-relb-rwri,lsho-lhip-lkne-lank,'
          'rsho-rhip-rkne-rank',
          _posepile('posepile/ds/ikea/main.py', ' (COCO-17 order)')),
    _make('human4d_32',
          'pelv spin0 spin1 spin2 spin3 neck neck2 head htop neck3 rsho relb rwri rpinkie rthu lsho lelb lwri '
          'lpinkie lthu rhip rkne rank rfoo rtoe rtoe2 lhip lkne lank lfoo ltoe ltoe2',
          'pelv-spin0-spin1-spin2-spin3-neck-neck2-head-htop,spin3-neck3,neck3-lsho-lelb-lwri-lpinkie-lthu,'
          'neck3-rsho-relb-rwri-rpinkie-rthu,pelv-lhip-lkne-lank-lfoo-ltoe-ltoe2,'
          'pelv-rhip-rkne-rank-rfoo-rtoe-rtoe2',
          _posepile('posepile/ds/human4d/main.py', ' (without the dropped neck4_del)')),
    _make('3dpeople_29',
          'pelv spin spi1 spi2 neck head reye leye htop lcla lsho lelb lwri lhan rcla rsho relb rwri rhan lhip '
          'lkne lank lfoo ltoe rhip rkne rank rfoo rtoe',
          'pelv-spin-spi1-spi2-neck-head-htop,head-leye,head-reye,spi2-lcla-lsho-lelb-lwri-lhan,'
          'spi2-rcla-rsho-relb-rwri-rhan,pelv-lhip-lkne-lank-lfoo-ltoe,pelv-rhip-rkne-rank-rfoo-rtoe',
          _posepile('posepile/ds/tdpeople/main.py')),
    _make('umpm_15',
          'pelv neck head rsho relb rwri lsho lelb lwri rhip lhip rkne lkne rank lank',
          'pelv-neck-head,neck-lsho-lelb-lwri,neck-rsho-relb-rwri,pelv-lhip-lkne-lank,pelv-rhip-rkne-rank',
          _posepile('posepile/ds/umpm/main.py')),
    _make('smpl+head_30',
          # official names: <smpl joint>_smpl, htop_mpi_inf_3dhp, then the COCO face joints (lear leye nose rear reye)
          'pelv lhip rhip bell lkne rkne spin lank rank thor ltoe rtoe neck lcla rcla head lsho rsho lelb relb '
          'lwri rwri lhan rhan htop lear leye nose rear reye',
          'pelv-bell-spin-thor-neck-head-htop,head-nose,nose-leye-lear,nose-reye-rear,'
          'neck-lcla-lsho-lelb-lwri-lhan,neck-rcla-rsho-relb-rwri-rhan,pelv-lhip-lkne-lank-ltoe,'
          'pelv-rhip-rkne-rank-rtoe',
          f'{_TABLE} create_viz_joint_info (SMPL 24 with pelvis first, htop of 3DHP, COCO face); '
          'order as the released models print it'),
]}

if set(SKELETONS) != set(_OFFICIAL_ORDER):
    raise RuntimeError(f'skeleton registry out of sync with the official key list: '
                       f'{sorted(set(SKELETONS) ^ set(_OFFICIAL_ORDER))}')


def skeleton_names() -> Tuple[str, ...]:
    """The registered skeleton names in the official order (smpl_24, kinectv2_25, h36m_17, ..., smpl+head_30)."""
    return tuple(n for n in _OFFICIAL_ORDER if n in SKELETONS)


def get_skeleton(name: str) -> Skeleton:
    """The registered skeleton ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        return SKELETONS[name]
    except KeyError:
        raise ValueError(
            f'unknown skeleton {name!r}; valid skeletons: {", ".join(skeleton_names())}') from None


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
