"""Synthetic data engine: ground-truth geometry checked against independent computations.

Needs the training extras (anny, numba, pybullet); the first Anny build (~40 s, ~790 MB cache) happens once.
"""

import numpy as np
import pytest

pytest.importorskip('anny')
pytest.importorskip('numba')
pytest.importorskip('pybullet_data')

from metrabs_ros.skeletons import get_skeleton  # noqa: E402
from metrabs_ros.training.synth import body_model, scene  # noqa: E402

FORMATS = ('coco_19', 'h36m_17', 'smpl_24', 'anny_104')


@pytest.fixture(scope='module')
def body():
    return body_model.load_body_model()


@pytest.fixture(scope='module')
def crops(body):
    return scene.generate_samples(body, 3, 'train', 'crops', range(16), scene.Settings())


@pytest.fixture(scope='module')
def scenes(body):
    settings = scene.Settings(p_distortion=0.5)    # exercise the distortion path often
    return scene.generate_samples(body, 4, 'val', 'scenes', range(16), settings)


def pinhole_with_distortion(points, K, d):
    """Independent projection: OpenCV radial-tangential model (k1, k2, p1, p2, k3), then K."""
    x = points[..., 0] / points[..., 2]
    y = points[..., 1] / points[..., 2]
    r2 = x * x + y * y
    k1, k2, p1, p2, k3 = d[:5]
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([K[0, 0] * xd + K[0, 1] * yd + K[0, 2], K[1, 1] * yd + K[1, 2]], -1)


def test_format_joint_names_match_registry(body):
    for fmt in ('coco_19', 'h36m_17', 'smpl_24'):
        assert body.regressors[fmt].joint_names == get_skeleton(fmt).joint_names
    assert len(body.regressors['anny_104'].joint_names) == 104


def test_crop_2d_is_projection_of_3d(crops):
    for s in crops:
        assert s['image'].shape == (256, 256, 3) and s['image'].dtype == np.uint8
        K = s['K'].astype(np.float64)
        assert K[0, 2] == 128 and K[1, 2] == 128
        for fmt in FORMATS:
            j3 = s[f'{fmt}/joints3d_mm'].astype(np.float64)
            ok = s[f'{fmt}/in_image']
            expected = pinhole_with_distortion(j3, K, np.zeros(5))
            np.testing.assert_allclose(s[f'{fmt}/joints2d_px'][ok], expected[ok], atol=0.02)
            assert np.all(expected[ok] >= -0.5) and np.all(expected[ok] < 255.5)


def test_scene_2d_is_projection_of_3d_with_distortion(scenes):
    distorted = 0
    for s in scenes:
        distorted += bool(np.any(s['dist']))
        for fmt in FORMATS:
            j3 = s[f'people/{fmt}/joints3d_mm'].astype(np.float64)
            ok = s[f'people/{fmt}/in_image']
            expected = pinhole_with_distortion(j3, s['K'].astype(np.float64), s['dist'].astype(np.float64))
            np.testing.assert_allclose(s[f'people/{fmt}/joints2d_px'][ok], expected[ok], atol=0.05)
    assert distorted > 0


def test_crop_ground_truth_matches_full_scene_render(body):
    """Crop-frame GT mapped back through R and the source camera equals the GT of a full render of the same
    seed (the two code paths share only the sampled plan)."""
    settings = scene.Settings()
    for index in range(4):
        plans = [scene.plan_sample(7, 'train', 'crops', index, settings)]
        scene.skin_plans(body, plans)
        crop = scene.render_crop_sample(body, plans[0], settings)
        plans = [scene.plan_sample(7, 'train', 'crops', index, settings)]
        scene.skin_plans(body, plans)
        full = scene.render_source_view(body, plans[0], settings)
        target = int(np.nonzero(full['people/person_index'] == 0)[0][0])
        R = crop['R'].astype(np.float64)
        np.testing.assert_allclose(crop['camera_K'], full['K'])
        for fmt in ('h36m_17', 'coco_19'):
            cam3d = crop[f'{fmt}/joints3d_mm'].astype(np.float64) @ R    # R^T applied to row vectors
            np.testing.assert_allclose(cam3d, full[f'people/{fmt}/joints3d_mm'][target], atol=0.5)
            px = pinhole_with_distortion(cam3d, crop['camera_K'].astype(np.float64),
                                         crop['camera_dist'].astype(np.float64))
            ok = full[f'people/{fmt}/in_image'][target]
            np.testing.assert_allclose(px[ok], full[f'people/{fmt}/joints2d_px'][target][ok], atol=0.05)


def test_visible_joints_lie_on_the_rendered_person(body):
    """Render the same crops over two flat backgrounds (grey 40 and 220): a pixel whose value changes by less than
    half of that difference is mostly person (blur / low-resolution simulation mix a little background in).
    Every visible joint has such a pixel in its 3x3 neighbourhood."""
    a = scene.generate_samples(body, 11, 'train', 'crops', range(8), scene.Settings(background='flat:40'))
    b = scene.generate_samples(body, 11, 'train', 'crops', range(8), scene.Settings(background='flat:220'))
    checked = 0
    for sa, sb in zip(a, b):
        person = np.all(np.abs(sa['image'].astype(int) - sb['image'].astype(int)) < 90, axis=-1)
        person = person & (sa['image'].sum(-1) > 0)   # exclude zeroed pixels outside the source image
        for fmt in ('h36m_17', 'coco_19'):
            vis = sa[f'{fmt}/visible']
            px = np.round(sa[f'{fmt}/joints2d_px'][vis]).astype(int)
            for x, y in px:
                patch = person[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]
                assert patch.any(), f'visible joint at ({x}, {y}) is not on a rendered person'
                checked += 1
    assert checked > 100


def test_scene_boxes_contain_visible_joints(scenes):
    for s in scenes:
        for box, j2, vis in zip(s['people/box_xywh'], s['people/h36m_17/joints2d_px'], s['people/h36m_17/visible']):
            x, y, w, h = box
            p = j2[vis]
            assert np.all(p[:, 0] >= x - 1.5) and np.all(p[:, 0] <= x + w + 0.5)
            assert np.all(p[:, 1] >= y - 1.5) and np.all(p[:, 1] <= y + h + 0.5)
        H, W = s['image'].shape[:2]
        assert tuple(s['image_hw']) == (H, W)
        boxes = s['people/box_xywh']
        assert np.all(boxes[:, 0] >= 0) and np.all(boxes[:, 0] + boxes[:, 2] <= W)


def test_adult_bone_lengths_and_sides(body):
    settings = scene.Settings()
    plans = [scene.plan_sample(0, 'train', 'crops', i, settings) for i in range(12)]
    scene.skin_plans(body, plans)
    people = [p for plan in plans for p in plan.people if np.isfinite(p.stature_m)]
    assert len(people) >= 8
    names = get_skeleton('h36m_17').joint_names
    ix = {n: i for i, n in enumerate(names)}
    # standing reference pose of the same bodies for the stature
    pheno = np.stack([p.phenotype for p in people])
    verts, heads = body_model.skin_bodies(body, pheno, np.tile(np.eye(4), (len(people), 104, 1, 1)))
    stature = verts[:, :, 2].max(1) - verts[:, :, 2].min(1)
    assert np.all(stature > 1.45) and np.all(stature < 2.0), stature
    h36 = body.regressors['h36m_17'](heads, verts)
    for a, b, lo, hi in (('lhip', 'lkne', 0.30, 0.55), ('lkne', 'lank', 0.30, 0.52), ('lsho', 'lelb', 0.20, 0.36),
                         ('lelb', 'lwri', 0.17, 0.32), ('lhip', 'rhip', 0.15, 0.30), ('head', 'htop', 0.06, 0.2)):
        length = np.linalg.norm(h36[:, ix[a]] - h36[:, ix[b]], axis=-1)
        assert np.all(length > lo) and np.all(length < hi), (a, b, length)
    # bone lengths are pose-independent: posed vs reference pose of the same body
    posed = np.stack([p.joints_m['h36m_17'] for p in people])
    for a, b in (('lkne', 'lank'), ('relb', 'rwri')):
        np.testing.assert_allclose(np.linalg.norm(posed[:, ix[a]] - posed[:, ix[b]], axis=-1),
                                   np.linalg.norm(h36[:, ix[a]] - h36[:, ix[b]], axis=-1), atol=0.02)
    # left joints on the body's left (+x in Anny's reference pose) for every format
    for fmt in ('coco_19', 'h36m_17', 'smpl_24'):
        j = body.regressors[fmt](heads, verts)
        fnames = body.regressors[fmt].joint_names
        left = [i for i, n in enumerate(fnames) if n.startswith('l')]
        right = [i for i, n in enumerate(fnames) if n.startswith('r')]
        assert np.all(j[:, left, 0] > 0) and np.all(j[:, right, 0] < 0)


def test_samples_are_deterministic(body):
    a = scene.generate_samples(body, 5, 'train', 'crops', [3, 4], scene.Settings())
    b = scene.generate_samples(body, 5, 'train', 'crops', [3, 4], scene.Settings())
    c = scene.generate_samples(body, 6, 'train', 'crops', [3, 4], scene.Settings())
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    assert not np.array_equal(a[0]['image'], c[0]['image'])
