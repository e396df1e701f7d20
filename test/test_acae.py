"""Affine-combining autoencoder: exact equivariance (rotation, translation, mirroring), affine columns, fitting on
multi-format poses, the file format, and attaching ACAE formats to a pose model (the estimator then outputs them)."""
import numpy as np
import pytest
import torch

from metrabs_ros import acae as A
from metrabs_ros.skeletons import get_skeleton
from metrabs_ros.synthetic_scene import REST_OFFSETS_MM, forward_kinematics, random_pose
from metrabs_ros.training import acae_fit as F

SMPL = get_skeleton('smpl_24').joint_names
H36M = get_skeleton('h36m_17').joint_names


def _h36m_from_smpl(smpl_mm: np.ndarray) -> np.ndarray:
    """A test-only 'h36m_17' defined as fixed affine combinations of smpl_24 joints (weights sum to 1)."""
    j = {n: smpl_mm[..., i, :] for i, n in enumerate(SMPL)}
    out = {'pelv': j['pelv'], 'spin': 0.5 * j['spi1'] + 0.5 * j['spi2'], 'neck': j['neck'], 'head': j['head'],
           'htop': 1.8 * j['head'] - 0.8 * j['neck']}
    for s in 'lr':
        out[s + 'hip'] = 0.8 * j[s + 'hip'] + 0.2 * j['pelv']
        out[s + 'kne'] = j[s + 'kne']
        out[s + 'ank'] = 0.9 * j[s + 'ank'] + 0.1 * j[s + 'toe']
        out[s + 'sho'] = 0.7 * j[s + 'sho'] + 0.3 * j[s + 'cla']
        out[s + 'elb'] = j[s + 'elb']
        out[s + 'wri'] = j[s + 'wri']
    return np.stack([out[n] for n in H36M], axis=-2)


def _random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _poses(n: int, seed: int) -> dict:
    """{format: [n, J, 3] mm} of random people 2–6 m in front of a camera."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        scale = rng.uniform(0.85, 1.15)
        joints, _ = forward_kinematics(random_pose(rng), REST_OFFSETS_MM * scale)
        rot = _random_rotation(rng) if rng.uniform() < 0.3 else np.eye(3)
        out.append(joints @ rot.T + np.array([rng.uniform(-800, 800), rng.uniform(-300, 300),
                                              rng.uniform(2000, 6000)]))
    smpl = np.array(out)
    return {'smpl_24': smpl, 'h36m_17': _h36m_from_smpl(smpl)}


def _random_acae(encoder_formats, decoder_formats, seed=0, spread=3.0) -> A.Acae:
    """An unfitted ACAE with strongly perturbed (still block-structured, affine) weights."""
    enc, dec = A.JointList.create(encoder_formats), A.JointList.create(decoder_formats)
    module = F.AcaeModule(enc, dec, num_left=5, num_centre=3, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(spread * p.abs().mean() * torch.randn(p.shape, generator=g, dtype=p.dtype))
        e, d = module.encoder().numpy(), module.decoder().numpy()
    return A.Acae(e, d, enc, dec, A.latent_sides(5, 3))


def _mirror(points: np.ndarray, perm: np.ndarray) -> np.ndarray:
    out = points[..., perm, :].copy()
    out[..., 0] *= -1.0
    return out


def test_weight_columns_sum_to_one_and_blocks_are_chiral():
    ae = _random_acae(['smpl_24', 'h36m_17'], ['smpl_24', 'h36m_17'])
    np.testing.assert_allclose(ae.encoder.sum(0), 1.0, atol=1e-12)
    np.testing.assert_allclose(ae.decoder.sum(0), 1.0, atol=1e-12)
    assert ae.encoder.shape == (41, 13) and ae.decoder.shape == (13, 41)
    # Block structure: swapping left/right joints and left/right latents leaves each matrix unchanged.
    p_in, p_lat, p_out = ae.mirror_permutations()
    np.testing.assert_allclose(ae.encoder[p_in][:, p_lat], ae.encoder, atol=1e-12)
    np.testing.assert_allclose(ae.decoder[p_lat][:, p_out], ae.decoder, atol=1e-12)
    assert np.abs(ae.encoder).max() > 0.2     # perturbed: not trivially uniform


def test_encoding_and_decoding_are_exactly_rigid_equivariant():
    ae = _random_acae(['smpl_24', 'h36m_17'], ['smpl_24', 'h36m_17'], seed=3)
    rng = np.random.default_rng(7)
    poses = _poses(6, seed=1)
    x = np.concatenate([poses['smpl_24'], poses['h36m_17']], axis=1)
    for _ in range(5):
        rot, t = _random_rotation(rng), rng.uniform(-5000, 5000, size=3)
        moved = x @ rot.T + t
        np.testing.assert_allclose(ae.encode(moved), ae.encode(x) @ rot.T + t, atol=1e-4)
        np.testing.assert_allclose(ae.reconstruct(moved), ae.reconstruct(x) @ rot.T + t, atol=1e-4)


def test_mirroring_the_input_mirrors_the_latents_and_the_output():
    ae = _random_acae(['smpl_24', 'h36m_17'], ['smpl_24', 'h36m_17'], seed=5)
    x = np.concatenate(list(_poses(4, seed=2).values()), axis=1)
    p_in, p_lat, p_out = ae.mirror_permutations()
    np.testing.assert_allclose(ae.encode(_mirror(x, p_in)), _mirror(ae.encode(x), p_lat), atol=1e-6)
    np.testing.assert_allclose(ae.reconstruct(_mirror(x, p_in)), _mirror(ae.reconstruct(x), p_out), atol=1e-6)


def test_chirality_order_pairs_left_and_right_joints():
    left, right, centre = A.chirality_order(['pelv.a', 'lhip.a', 'rhip.a', 'lfoo.a', 'neck.a', 'rfoo.a', 'lonly.a'])
    assert left.tolist() == [1, 3] and right.tolist() == [2, 5] and centre.tolist() == [0, 4, 6]


def test_fit_reconstructs_held_out_people_and_round_trips_through_the_file(tmp_path):
    torch.set_num_threads(1)
    train, held_out = _poses(300, seed=10), _poses(60, seed=11)
    ae, info = F.fit_acae(train, ['smpl_24'], ['smpl_24', 'h36m_17'], num_left=8, num_centre=4, steps=600,
                          batch_size=64, seed=0, log=lambda *a: None)
    np.testing.assert_allclose(ae.encoder.sum(0), 1.0, atol=1e-9)
    np.testing.assert_allclose(ae.decoder.sum(0), 1.0, atol=1e-9)
    errors = F.reconstruction_errors(ae, held_out)
    # The mean joint distance from the pose centre is ~400 mm: the 20-latent bottleneck keeps the structure.
    assert errors['smpl_24']['mean_mm'] < 25.0 and errors['h36m_17']['mean_mm'] < 25.0, errors
    # Independent check of h36m_17 through the smpl_24-only encoder: the format matrix applied to smpl joints.
    via_matrix = np.einsum('njc,jk->nkc', held_out['smpl_24'], ae.format_matrix('h36m_17'))
    assert np.mean(np.linalg.norm(via_matrix - held_out['h36m_17'], axis=-1)) < 25.0

    path = A.save_acae(str(tmp_path / 'ae.npz'), ae)
    loaded = A.load_acae(path)
    np.testing.assert_array_equal(loaded.encoder, ae.encoder)
    assert loaded.formats == ('smpl_24', 'h36m_17') and loaded.encoder_joints.formats == ('smpl_24',)
    assert loaded.info['num_left'] == 8


def test_unusable_acae_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='ACAE file not found'):
        A.load_acae(str(tmp_path / 'missing.npz'))
    np.savez(tmp_path / 'other.npz', x=np.zeros(3))
    with pytest.raises(ValueError, match='not an ACAE file'):
        A.load_acae(str(tmp_path / 'other.npz'))
    ae = _random_acae(['smpl_24'], ['smpl_24'])
    with pytest.raises(ValueError, match='columns must sum to 1'):
        A.Acae(ae.encoder * 1.01, ae.decoder, ae.encoder_joints, ae.decoder_joints, ae.latent_sides)


def test_attached_formats_come_out_of_the_estimator(tmp_path):
    from metrabs_ros.estimator import PoseEstimator
    from metrabs_ros.synthetic_scene import render_scene
    from metrabs_ros.training.acae_attach import attach_acae
    from metrabs_ros.training.fixtures import make_random_pose_model

    model = make_random_pose_model(tmp_path / 'm.onnx', resolution=64, skeleton='smpl_24')
    ae, _ = F.fit_acae(_poses(200, seed=4), ['smpl_24'], ['smpl_24', 'h36m_17'], num_left=8, num_centre=4,
                       steps=200, batch_size=64, log=lambda *a: None)
    acae_path = A.save_acae(str(tmp_path / 'ae.npz'), ae)
    out = str(tmp_path / 'm_acae.onnx')
    assert attach_acae(model, acae_path, out) == ['h36m_17']     # smpl_24 is the model's own

    scene = render_scene(0, num_people=1, image_hw=(240, 320))
    boxes = np.array([scene.people[0].box_xywh_px], np.float32)
    est = PoseEstimator(out, backend='cpu', num_threads=1)
    assert set(est.skeleton_names) == {'smpl_24', 'h36m_17'}
    smpl = est.estimate_poses(scene.image_rgb, boxes, intrinsic_matrix=scene.camera.intrinsic_matrix,
                              skeleton='smpl_24')
    h36m = est.estimate_poses(scene.image_rgb, boxes, intrinsic_matrix=scene.camera.intrinsic_matrix,
                              skeleton='h36m_17')
    assert h36m.poses3d_mm.shape == (1, 17, 3) and list(h36m.joint_names) == list(H36M)
    expected = np.einsum('pjc,jk->pkc', smpl.poses3d_mm.astype(np.float64), ae.format_matrix('h36m_17'))
    np.testing.assert_allclose(h36m.poses3d_mm, expected, atol=0.05)
    with pytest.raises(ValueError, match='valid skeletons: h36m_17, smpl_24'):
        est.validate_skeleton('kinectv2_25')

    wrong = _random_acae(['h36m_17'], ['h36m_17'])
    with pytest.raises(ValueError, match='lacks 17 joints the ACAE encoder reads'):
        attach_acae(model, A.save_acae(str(tmp_path / 'wrong.npz'), wrong), str(tmp_path / 'x.onnx'))


def test_shipped_acae_matches_the_embedded_pose_model():
    import onnxruntime as ort
    from metrabs_ros.embedded_models import DEFAULT_ACAE, DEFAULT_POSE_MODEL
    from metrabs_ros.model_contract import read_pose_model_info
    from metrabs_ros.skeletons import is_body_model_approximation
    ae = A.load_acae(str(DEFAULT_ACAE))
    assert ae.num_latents == 48 and ae.latent_sides.count('l') == ae.latent_sides.count('r') == 20
    assert all(is_body_model_approximation(f) for f in ae.formats)
    info = read_pose_model_info(ort.InferenceSession(str(DEFAULT_POSE_MODEL), providers=['CPUExecutionProvider']),
                                str(DEFAULT_POSE_MODEL))
    own = {n: (m.indices, m.joint_names) for n, m in info.skeletons.items() if m.indices is not None}
    rows = A.encoder_rows(ae, info.joint_names, own)         # every encoder joint is a joint the model predicts
    assert len(rows) == len(ae.encoder_joints)
    for fmt in ae.formats:                                    # the model offers every ACAE format
        assert fmt in info.skeletons, fmt
        np.testing.assert_allclose(info.skeletons[fmt].convert(np.eye(len(info.joint_names))[..., None])
                                   .sum(0)[..., 0], 1.0, atol=1e-5)


def test_consistency_error_measures_the_offset_between_formats():
    from metrabs_ros.training.format_consistency import consistency_errors_mm, shared_joint_pairs
    names = {'smpl_24': SMPL, 'h36m_17': H36M}
    pairs = shared_joint_pairs(names, ['smpl_24', 'h36m_17'])
    shared = sorted(set(SMPL) & set(H36M))
    assert sorted(p[0] for p in pairs) == shared and len(shared) == 15
    true = _poses(5, seed=3)
    # Each format shifted rigidly by its own offset: every shared joint's inter-format offset is off by 30-(-10) mm.
    pred = {'smpl_24': true['smpl_24'] + [30.0, 0, 0], 'h36m_17': true['h36m_17'] + [-10.0, 0, 0]}
    result = consistency_errors_mm(pred, true, names)
    assert result['num_pairs'] == 15
    np.testing.assert_allclose(result['mean_mm'], 40.0, atol=1e-9)
    # A common shift of all formats is no inconsistency (it is a root error, measured elsewhere).
    same = {f: v + [55.0, -20.0, 300.0] for f, v in true.items()}
    assert consistency_errors_mm(same, true, names)['mean_mm'] < 1e-9
