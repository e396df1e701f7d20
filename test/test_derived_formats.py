"""Derived skeleton formats (metrabs_ros.training.synth.derived_formats): affine recipes, rigid and mirror
equivariance, NaN locality, name-keyed ordering, real data-engine samples and the augment.py hook."""

import numpy as np
import pytest

from metrabs_ros import skeletons
from metrabs_ros.skeletons import get_skeleton, mirror_permutation
from metrabs_ros.training import augment as aug
from metrabs_ros.training.synth import derived_formats as dfm

SOURCES = dfm.SOURCE_FORMATS


def random_sources(rng, batch=()):
    """Random stored joints (mm) for every source format, anny_104 in Anny's bone order."""
    return {f: rng.normal(0.0, 400.0, batch + (len(dfm.source_joint_names(f)), 3)) for f in SOURCES}


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def side_swap_permutation(names):
    """l<->r permutation written independently of the registry helper: registry names by their l/r prefix, Anny
    names by their .L/.R suffix."""
    index = {n: i for i, n in enumerate(names)}

    def other(n):
        if n.endswith('.L'):
            return n[:-2] + '.R'
        if n.endswith('.R'):
            return n[:-2] + '.L'
        if n[:1] in ('l', 'r') and (('r' if n[0] == 'l' else 'l') + n[1:]) in index:
            return ('r' if n[0] == 'l' else 'l') + n[1:]
        return n
    return np.array([index[other(n)] for n in names])


def test_available_formats_are_the_registered_ones():
    assert set(dfm.DERIVED_FORMATS) >= {'h36m_25', 'mpi_inf_3dhp_17', 'mpi_inf_3dhp_28', 'kinectv2_25'}
    for fmt in dfm.RECIPES:
        registered = fmt in skeletons.SKELETONS
        assert (fmt in dfm.DERIVED_FORMATS) == registered
        assert (fmt in dfm.UNAVAILABLE_FORMATS) == (not registered)
        if not registered:
            assert 'not registered' in dfm.UNAVAILABLE_FORMATS[fmt]


@pytest.mark.parametrize('fmt', dfm.DERIVED_FORMATS)
def test_every_registered_joint_has_an_affine_recipe(fmt):
    M = dfm.derivation_matrix(fmt, SOURCES)
    assert M.shape == (get_skeleton(fmt).num_joints, sum(len(dfm.source_joint_names(f)) for f in SOURCES))
    np.testing.assert_allclose(M.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(np.abs(M).sum(axis=1) > 0)
    # the compact layout (only the needed sources) gives the same rows
    cols = np.concatenate([np.full(len(dfm.source_joint_names(f)), f in dfm.required_sources(fmt)) for f in SOURCES])
    np.testing.assert_array_equal(dfm.derivation_matrix(fmt, dfm.required_sources(fmt)), M[:, cols])
    assert not np.any(M[:, ~cols])


def test_derived_joints_are_the_matrix_applied_to_the_sources():
    rng = np.random.default_rng(0)
    src = random_sources(rng)
    x = np.concatenate([src[f] for f in SOURCES], axis=0)
    out = dfm.derived_joints(src)
    assert set(out) == set(dfm.DERIVED_FORMATS)
    for fmt, joints in out.items():
        np.testing.assert_allclose(joints, dfm.derivation_matrix(fmt, SOURCES) @ x, rtol=1e-12, atol=1e-9)


def test_rigid_transform_equivariance_batched():
    rng = np.random.default_rng(1)
    src = random_sources(rng, batch=(4, 2))
    R, t = random_rotation(rng), rng.normal(0.0, 3000.0, 3)
    moved = {f: v @ R.T + t for f, v in src.items()}
    a, b = dfm.derived_joints(src), dfm.derived_joints(moved)
    for fmt in dfm.DERIVED_FORMATS:
        assert a[fmt].shape == (4, 2, get_skeleton(fmt).num_joints, 3)
        np.testing.assert_allclose(b[fmt], a[fmt] @ R.T + t, atol=1e-8)
        # batched == one sample at a time
        single = dfm.derived_joints({f: v[3, 1] for f, v in src.items()}, [fmt])[fmt]
        np.testing.assert_allclose(a[fmt][3, 1], single, atol=1e-9)


def test_mirrored_body_gives_the_mirrored_derived_format():
    rng = np.random.default_rng(2)
    src = random_sources(rng, batch=(3,))
    flip = np.array([-1.0, 1.0, 1.0])
    mirrored = {f: v[..., side_swap_permutation(dfm.source_joint_names(f)), :] * flip for f, v in src.items()}
    a, b = dfm.derived_joints(src), dfm.derived_joints(mirrored)
    for fmt in dfm.DERIVED_FORMATS:
        perm = mirror_permutation(get_skeleton(fmt).joint_names)
        assert np.any(perm != np.arange(len(perm)))
        np.testing.assert_allclose(b[fmt], a[fmt][..., perm, :] * flip, atol=1e-9, err_msg=fmt)


def test_nan_source_joint_only_spoils_the_joints_using_it():
    rng = np.random.default_rng(3)
    src = random_sources(rng)
    wrist = dfm.ANNY_104_JOINT_NAMES.index('wrist.L')
    src['anny_104'][wrist] = np.nan
    out = dfm.derived_joints(src)
    col = wrist    # anny_104 comes first in SOURCES
    for fmt, joints in out.items():
        uses = dfm.derivation_matrix(fmt, SOURCES)[:, col] != 0
        np.testing.assert_array_equal(np.isnan(joints).any(-1), uses, err_msg=fmt)
        assert np.all(np.isnan(joints[uses])) and np.all(np.isfinite(joints[~uses]))
    kinect = dict(zip(get_skeleton('kinectv2_25').joint_names, out['kinectv2_25']))
    assert np.all(np.isnan(kinect['lhan'])) and np.all(np.isfinite(kinect['lhandtip']))
    assert np.all(np.isfinite(kinect['rhan'])) and np.all(np.isfinite(kinect['lwri']))   # lwri = h36m_17 lwri


def test_recipes_follow_joint_names_not_positions(monkeypatch):
    rng = np.random.default_rng(4)
    src = random_sources(rng)
    before = dfm.derived_joints(src, ['kinectv2_25'])['kinectv2_25']
    sk = get_skeleton('kinectv2_25')
    monkeypatch.setitem(skeletons.SKELETONS, 'kinectv2_25',
                        skeletons.Skeleton('kinectv2_25', sk.joint_names[::-1], ()))
    after = dfm.derived_joints(src, ['kinectv2_25'])['kinectv2_25']
    np.testing.assert_array_equal(after, before[::-1])


def test_registry_joint_without_recipe_raises(monkeypatch):
    sk = get_skeleton('h36m_25')
    monkeypatch.setitem(skeletons.SKELETONS, 'h36m_25',
                        skeletons.Skeleton('h36m_25', sk.joint_names + ('lelbow_marker',), ()))
    with pytest.raises(ValueError, match='lelbow_marker'):
        dfm.derived_joints(random_sources(np.random.default_rng(5)), ['h36m_25'])


def test_missing_sources_skip_or_raise():
    rng = np.random.default_rng(6)
    src = random_sources(rng)
    assert dfm.derived_joints({'smpl_24': src['smpl_24']}) == {}
    with pytest.raises(ValueError, match='anny_104'):
        dfm.derived_joints({'smpl_24': src['smpl_24'], 'h36m_17': src['h36m_17']}, ['h36m_25'])
    # without coco_19 the formats that need only anny_104 + h36m_17 are still derived
    partial = dfm.derived_joints({f: src[f] for f in ('anny_104', 'h36m_17')})
    assert set(partial) == {f for f in dfm.DERIVED_FORMATS if set(dfm.required_sources(f)) <= {'anny_104', 'h36m_17'}}
    assert 'h36m_25' in partial and 'kinectv2_25' not in partial
    with pytest.raises(ValueError, match=r'\[\.\.\., 104, 3\]'):
        dfm.derived_joints({**src, 'anny_104': src['anny_104'][:100]}, ['h36m_25'])


def test_crop_sample_hook_adds_only_missing_derivable_formats():
    rng = np.random.default_rng(7)
    src = random_sources(rng)
    sample = {'image': np.zeros((32, 32, 3), np.uint8), 'K': np.diag([40.0, 40.0, 1.0]),
              **{f'{f}/joints3d_mm': v.astype(np.float32) for f, v in src.items()}}
    stored_h36m_25 = rng.normal(size=(25, 3))
    sample['h36m_25/joints3d_mm'] = stored_h36m_25
    ex = aug.crop_sample_example(sample)
    assert set(ex.joints_by_format) == set(SOURCES) | set(dfm.DERIVED_FORMATS)
    np.testing.assert_array_equal(ex.joints_by_format['h36m_25'], stored_h36m_25)     # stored data wins
    expected = dfm.derived_joints({f: sample[f'{f}/joints3d_mm'].astype(np.float64) for f in SOURCES})
    for fmt in set(dfm.DERIVED_FORMATS) - {'h36m_25'}:
        np.testing.assert_allclose(ex.joints_by_format[fmt], expected[fmt])
    only_smpl = {'image': sample['image'], 'K': sample['K'], 'smpl_24/joints3d_mm': sample['smpl_24/joints3d_mm']}
    assert set(aug.crop_sample_example(only_smpl).joints_by_format) == {'smpl_24'}


# --- real bodies from the data engine --------------------------------------------------------------------------

def _engine():
    pytest.importorskip('anny')
    pytest.importorskip('numba')
    pytest.importorskip('pybullet_data')
    from metrabs_ros.training.synth import body_model, scene
    return body_model, scene


@pytest.fixture(scope='module')
def body():
    body_model, _ = _engine()
    return body_model.load_body_model()


@pytest.fixture(scope='module')
def engine_samples(body):
    _, scene = _engine()
    crops = scene.generate_samples(body, 11, 'train', 'crops', range(3), scene.Settings(crop_size=96))
    scenes = scene.generate_samples(body, 12, 'val', 'scenes', range(2), scene.Settings(scene_hw=(120, 160)))
    return crops, scenes


def test_anny_bone_names_match_the_body_model(body):
    assert dfm.ANNY_104_JOINT_NAMES == tuple(body.bone_labels)
    assert dfm.ANNY_104_JOINT_NAMES == body.regressors['anny_104'].joint_names


def _dist(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def check_plausible(joints_by_format):
    for fmt in dfm.DERIVED_FORMATS:
        joints = joints_by_format[fmt]
        assert np.all(np.isfinite(joints)), fmt
        sk = get_skeleton(fmt)
        lengths = [_dist(joints[i], joints[j]) for i, j in sk.edges]
        assert 10.0 < min(lengths) and max(lengths) < 650.0, (fmt, lengths)
    smpl = dict(zip(get_skeleton('smpl_24').joint_names, joints_by_format['smpl_24']))
    kin = dict(zip(get_skeleton('kinectv2_25').joint_names, joints_by_format['kinectv2_25']))
    h25 = dict(zip(get_skeleton('h36m_25').joint_names, joints_by_format['h36m_25']))
    mpi = dict(zip(get_skeleton('mpi_inf_3dhp_28').joint_names, joints_by_format['mpi_inf_3dhp_28']))
    assert _dist(kin['spinebase'], smpl['pelv']) < 100.0
    for s in 'lr':
        assert _dist(kin[s + 'handtip'], kin[s + 'elb']) > _dist(kin[s + 'han'], kin[s + 'elb']) \
            > _dist(kin[s + 'wri'], kin[s + 'elb'])
        assert 30.0 < _dist(kin[s + 'thu'], kin[s + 'wri']) < 200.0
        assert _dist(h25[s + 'toe'], h25[s + 'ank']) > _dist(h25[s + 'foo'], h25[s + 'ank'])
        assert _dist(kin[s + 'foo'], kin[s + 'ank']) < _dist(h25[s + 'foo'], h25[s + 'ank'])
    # spine chain: each joint farther from the pelvis than the one below it (no pose bends the spine that much)
    chain = [_dist(mpi[n], mpi['pelv']) for n in ('spin', 'spi2', 'spi4', 'thor', 'neck', 'htop')]
    assert np.all(np.diff(chain) > 0), chain


def test_engine_crop_and_scene_samples_get_plausible_derived_formats(engine_samples):
    crops, scenes = engine_samples
    for sample in crops:
        ex = aug.crop_sample_example(sample)
        assert set(dfm.DERIVED_FORMATS) <= set(ex.joints_by_format)
        check_plausible(ex.joints_by_format)
    for sample in scenes:
        for person in range(aug.scene_people_count(sample)):
            ex = aug.scene_sample_example(sample, person)
            assert set(dfm.DERIVED_FORMATS) <= set(ex.joints_by_format)
            check_plausible(ex.joints_by_format)


def test_rest_pose_derived_bones_are_left_right_symmetric(body):
    """Anny's reference body is symmetric, so left and right derived bones must have equal lengths."""
    from metrabs_ros.training.synth.body_model import FORMATS
    src = {f: body.regressors[f](body.ref_bone_heads_m[None].astype(np.float64) * 1000,
                                 body.ref_vertices_m[None].astype(np.float64) * 1000)[0].astype(np.float64)
           for f in FORMATS}
    out = dfm.derived_joints(src)
    for fmt, joints in out.items():
        sk = get_skeleton(fmt)
        perm = mirror_permutation(sk.joint_names)
        length = {(i, j): _dist(joints[i], joints[j]) for i, j in sk.edges}
        for (i, j), v in length.items():
            mi, mj = perm[i], perm[j]
            w = length.get((mi, mj), length.get((mj, mi)))
            assert w is not None and abs(v - w) < 1.0, (fmt, sk.joint_names[i], sk.joint_names[j], v, w)
