"""Pose training: crop geometry and GT consistency, deterministic batches, LR schedule, a short training run whose
loss decreases, and resuming that reproduces the uninterrupted run exactly."""
import numpy as np
import pytest
import torch

from metrabs_ros.camera import CameraModel
from metrabs_ros.skeletons import get_skeleton, mirror_permutation
from metrabs_ros.synthetic_scene import render_scene
from metrabs_ros.training import augment as aug
from metrabs_ros.training import train_pose as tp

FORMATS = ['smpl_24', 'coco_19', 'h36m_17']


@pytest.fixture(scope='module')
def scenes():
    cam = CameraModel.create(distortion_coeffs=[-0.12, 0.03, 0.001, -0.001, 0.0], image_hw=(240, 320),
                             fov_degrees=70)
    return [aug.scene_to_sample(render_scene(seed, num_people=2, image_hw=(240, 320), camera=cam,
                                             distance_range_mm=(2500, 5000)))
            for seed in range(4)]


def _layout():
    return aug.JointLayout.create(FORMATS)


def test_joint_layout_names_and_metadata():
    lay = _layout()
    assert len(lay.raw_names) == 24 + 19 + 17
    assert lay.raw_names[0] == 'pelv.smpl_24' and lay.raw_names[24] == 'neck.coco_19'
    perm = mirror_permutation(lay.raw_names)
    assert lay.raw_names[perm[lay.raw_names.index('lhip.h36m_17')]] == 'rhip.h36m_17'
    assert lay.raw_names[perm[lay.raw_names.index('lear.coco_19')]] == 'rear.coco_19'
    meta = lay.skeletons_metadata()
    assert meta['coco_19']['indices'][0] == 24 and meta['coco_19']['joint_names'][0] == 'neck'
    joints = lay.gather({'coco_19': np.ones((19, 3))})
    assert np.isnan(joints[:24]).all() and (joints[24:43] == 1).all() and np.isnan(joints[43:]).all()


@pytest.mark.parametrize('augment', [False, True])
def test_training_crop_gt_lands_on_the_image_joints(scenes, augment):
    """GT projected into the (augmented, possibly mirrored) crop, mapped back through the crop's rays and the
    distorted camera, gives the renderer's own 2D joints; mirrored crops carry the swapped joint there."""
    lay = _layout()
    perm = mirror_permutation(lay.raw_names)
    rng = np.random.default_rng(1)
    flips = 0
    for sample in scenes:
        for p in range(aug.scene_people_count(sample)):
            ex = aug.scene_sample_example(sample, p)
            cfg = aug.AugmentConfig(enabled=augment, flip_prob=0.5)
            crop = aug.make_training_crop(ex.image, ex.camera, ex.box_xywh, lay.gather(ex.joints_by_format), perm,
                                          96, rng, cfg)
            flips += crop.flipped
            assert crop.image.shape == (96, 96, 3) and crop.image.dtype == np.float32
            assert 0.0 <= crop.image.min() and crop.image.max() <= 1.0
            np.testing.assert_allclose(crop.intrinsics[:2, 2], 48.0)
            px_crop = aug.project_to_crop_px(crop.joints_mm, crop.intrinsics)[:24]      # smpl_24 block
            rays = np.concatenate([px_crop, np.ones((24, 1))], 1) @ np.linalg.inv(crop.intrinsics).T @ crop.rotation
            px_image = ex.camera.project_px(rays)
            expected = sample['people/smpl_24/joints2d_px'][p]
            if crop.flipped:
                expected = expected[mirror_permutation(lay.format_joint_names['smpl_24'])]
            np.testing.assert_allclose(px_image, expected, atol=2e-2)
            assert crop.joint_valid[:24].all() and not crop.joint_valid[24:].any()
    if augment:
        assert 0 < flips < 8


def test_unaugmented_training_crop_equals_the_inference_warp(scenes):
    """Without augmentation the training crop is the crop the exported graph makes (PoseGraph.warp, gamma 0.8)."""
    from metrabs_ros.augmentation import tta_parameters
    from metrabs_ros.crops import crop_geometry
    from metrabs_ros.training.pose_graph import build_pose_graph

    sample = scenes[0]
    ex = aug.scene_sample_example(sample, 0)
    res = 96
    crop = aug.make_training_crop(ex.image, ex.camera, ex.box_xywh, np.zeros((24, 3)), np.arange(24), res, None)
    tta = tta_parameters(1)
    geom = crop_geometry(ex.box_xywh[None], ex.camera, aug.UP_VECTOR_CAM, res, tta)
    np.testing.assert_allclose(crop.rotation, geom.rotations[0, 0], atol=1e-6)
    np.testing.assert_allclose(crop.intrinsics, geom.intrinsics[0, 0], rtol=1e-6)
    graph = build_pose_graph(get_names(), res)
    with torch.no_grad():
        ref = graph.warp(torch.from_numpy(ex.image), torch.from_numpy(ex.camera.intrinsic_matrix.astype(np.float32)),
                         torch.from_numpy(ex.camera.distortion_coeffs.astype(np.float32)), torch.zeros(1),
                         torch.from_numpy(geom.rotations), torch.from_numpy(geom.intrinsics),
                         torch.from_numpy(geom.pyramid_levels.copy()), torch.from_numpy(tta.gammas.copy()))
    ref = ref[0].permute(1, 2, 0).numpy()
    diff = np.abs(ref - crop.image)
    assert diff.mean() < 2e-3 and np.percentile(diff, 99) < 0.03


def get_names():
    return _layout().format_joint_names['smpl_24']


def test_step_batches_are_a_pure_function_of_seed_and_step():
    a = tp.StepBatches(10, 4, seed=3, start_step=0, end_step=5)
    b = tp.StepBatches(10, 4, seed=3, start_step=2, end_step=5)
    batches_a, batches_b = list(a), list(b)
    assert batches_a[2:] == batches_b
    first_epoch = [i for batch in batches_a[:2] for i, _, _ in batch] + [i for i, _, _ in batches_a[2][:2]]
    assert sorted(first_epoch) == list(range(10))          # each sample once per epoch
    assert [s for _, s, _ in batches_a[3]] == [3] * 4 and [k for _, _, k in batches_a[3]] == [0, 1, 2, 3]


def test_learning_rate_schedule_hand_values():
    cfg = tp.load_config(None, {'optim': {'steps': 110, 'lr': 1.0, 'warmup_steps': 10, 'min_lr_factor': 0.0}})
    assert tp.learning_rate(cfg, 0) == pytest.approx(0.1)
    assert tp.learning_rate(cfg, 9) == pytest.approx(1.0)
    assert tp.learning_rate(cfg, 10) == pytest.approx(1.0)
    assert tp.learning_rate(cfg, 60) == pytest.approx(0.5)          # half-way through the cosine
    assert tp.learning_rate(cfg, 110) == pytest.approx(0.0, abs=1e-12)
    cfg = tp.load_config(None, {'optim': {'steps': 100, 'lr': 1.0, 'warmup_steps': 0, 'schedule': 'step',
                                          'step_milestones': [0.5, 90], 'step_gamma': 0.1}})
    assert [tp.learning_rate(cfg, s) for s in (0, 49, 50, 89, 90)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match='optim.stpes'):
        tp.load_config(None, {'optim': {'stpes': 3}})
    with pytest.raises(ValueError, match='augment.flip'):
        tp.load_config(None, {'augment': {'flip': 0.5}})


def _crop_samples(scenes, res=96):
    return [aug.scene_sample_to_crop_sample(s, p, res) for s in scenes for p in range(aug.scene_people_count(s))]


def _smoke_config(steps, **run):
    return tp.load_config(None, {
        'seed': 5,
        'model': {'backbone': 'mobilenetv3-small', 'resolution': 64, 'formats': FORMATS},
        'augment': {'enabled': False},
        'optim': {'steps': steps, 'batch_size': 4, 'lr': 3e-3, 'warmup_steps': 2},
        'loss': {'absolute_start_step': 0.5, 'weak_perspective_steps': 0.25},
        'run': {'num_workers': 0, 'log_every': 2, 'validate_every': 0, 'checkpoint_every': 100, 'threads': 2,
                **run}})


def _logged_losses(run_dir):
    import json
    with open(run_dir / 'train_log.jsonl') as f:
        return [json.loads(line)['total'] for line in f]


def test_training_loss_decreases_and_resume_is_exact(scenes, tmp_path):
    torch.set_num_threads(2)
    data = _crop_samples(scenes)
    full = tp.train(_smoke_config(16), data, str(tmp_path / 'full'), log=lambda *a: None)
    losses = _logged_losses(tmp_path / 'full')
    assert len(losses) == 8
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2]), losses
    assert full['final_checkpoint'] and full['step'] == 16

    part = tp.train(_smoke_config(16), data, str(tmp_path / 'split'), log=lambda *a: None, max_steps_this_run=8)
    assert part['step'] == 8 and part['final_checkpoint'] is None
    rest = tp.train(_smoke_config(16), data, str(tmp_path / 'split'), resume=True, log=lambda *a: None)
    assert rest['step'] == 16
    a = torch.load(full['final_checkpoint'], weights_only=True)
    b = torch.load(rest['final_checkpoint'], weights_only=True)
    for key, value in a['state_dict'].items():
        assert torch.equal(value, b['state_dict'][key]), key
    opt_a, opt_b = a['training_state']['optimizer']['state'], b['training_state']['optimizer']['state']
    for k in opt_a:
        assert torch.equal(opt_a[k]['exp_avg_sq'], opt_b[k]['exp_avg_sq'])
    # the resumed log continues the same rows
    np.testing.assert_allclose(_logged_losses(tmp_path / 'split'), losses, rtol=1e-6)

    # the checkpoint is in our format: load_checkpoint builds the graph and its poses are finite
    from metrabs_ros.training.checkpoint import load_checkpoint
    graph, config = load_checkpoint(rest['final_checkpoint'])
    assert config['skeletons']['h36m_17']['indices'][0] == 43 and config['default_skeleton'] == 'smpl_24'
    assert config['joint_names'] == list(_layout().raw_names)


def test_resume_refuses_a_changed_configuration(scenes, tmp_path):
    data = _crop_samples(scenes[:1])
    cfg = _smoke_config(4)
    tp.train(cfg, data, str(tmp_path), log=lambda *a: None, max_steps_this_run=2)
    changed = tp.load_config(cfg, {'optim': {'lr': 1e-2}})
    with pytest.raises(ValueError, match='optim'):
        tp.train(changed, data, str(tmp_path), resume=True, log=lambda *a: None)


def test_shipped_configs_load_and_describe_exportable_models(tmp_path):
    import glob
    import os
    paths = sorted(glob.glob(os.path.join(os.path.dirname(tp.__file__), 'configs', '*.yaml')))
    assert paths
    acae_path = None
    for path in paths:
        cfg = tp.load_config(path)
        if cfg['model']['latent_acae'] or cfg['loss']['acae_file']:
            # The configs name an ACAE under generated/ (fitted by a documented command); stand in a small one.
            if acae_path is None:
                acae_path = _small_acae(tmp_path, cfg['model']['formats'])
            cfg = tp.load_config(cfg, {'model': {'latent_acae': acae_path if cfg['model']['latent_acae'] else None},
                                       'loss': {'acae_file': acae_path if cfg['loss']['acae_file'] else None}})
        mcfg = tp.model_config(cfg, tp.joint_layout(cfg))
        assert mcfg['default_skeleton'] in mcfg['skeletons']
        assert tp.learning_rate(cfg, cfg['optim']['steps'] - 1) > 0


def _small_acae(tmp_path, formats):
    from metrabs_ros.acae import Acae, JointList, latent_sides, save_acae
    from metrabs_ros.training.acae_fit import AcaeModule
    joints = JointList.create(formats)
    module = AcaeModule(joints, joints, num_left=6, num_centre=4, seed=0)
    with torch.no_grad():
        ae = Acae(module.encoder().numpy(), module.decoder().numpy(), joints, joints, latent_sides(6, 4))
    return save_acae(str(tmp_path / 'small_acae.npz'), ae)


def _multi_format_crops(scenes):
    """Crop samples whose 'h36m_17' and 'coco_19' GT are fixed affine combinations of their smpl_24 GT (test data
    for the simulated multi-dataset setting; the rendered scenes carry smpl_24 only)."""
    smpl = list(get_skeleton('smpl_24').joint_names)
    out = []
    for sample in _crop_samples(scenes):
        j = np.asarray(sample['smpl_24/joints3d_mm'], np.float64)
        by_name = {n: j[i] for i, n in enumerate(smpl)}
        for fmt in ('h36m_17', 'coco_19'):
            names = get_skeleton(fmt).joint_names
            sample = dict(sample)
            sample[f'{fmt}/joints3d_mm'] = np.stack([by_name.get(n, 0.5 * by_name['head'] + 0.5 * by_name['neck'])
                                                    for n in names]).astype(np.float32)
        out.append(sample)
    return out


def test_label_groups_make_each_sample_label_one_format(scenes):
    data = _multi_format_crops(scenes)
    cfg = tp.load_config(_smoke_config(4), {'data': {'label_groups': [['smpl_24'], ['coco_19', 'h36m_17']]}})
    layout = tp.joint_layout(cfg)
    masks = tp.label_group_masks(cfg, layout)
    ds = tp.CropDataset(data, layout, 64, aug.AugmentConfig(enabled=False), seed=0, label_masks=masks)
    for index in range(4):
        valid = ds[(index, 0, 0)]['joint_valid']
        labelled = [f for f in FORMATS if valid[layout.indices(f)].any()]
        assert labelled == (['smpl_24'] if index % 2 == 0 else ['coco_19', 'h36m_17']), (index, labelled)
    with pytest.raises(ValueError, match='outside model.formats'):
        tp.label_group_masks(tp.load_config(cfg, {'data': {'label_groups': [['kinectv2_25']]}}), layout)


def test_acae_consistency_and_latent_training_runs(scenes, tmp_path):
    torch.set_num_threads(1)
    data = _multi_format_crops(scenes)
    acae_path = _small_acae(tmp_path, FORMATS)
    groups = {'data': {'label_groups': [['smpl_24'], ['coco_19'], ['h36m_17']]}}
    cons = tp.load_config(_smoke_config(6), {**groups, 'loss': {'acae_file': acae_path,
                                                                'acae_consistency_weight': 1.0}})
    result = tp.train(cons, data, str(tmp_path / 'cons'), log=lambda *a: None)
    import json
    rows = [json.loads(line) for line in open(tmp_path / 'cons' / 'train_log.jsonl')]
    assert all(r['consistency'] > 0 for r in rows)

    latent = tp.load_config(_smoke_config(6), {**groups, 'model': {'latent_acae': acae_path}})
    result = tp.train(latent, data, str(tmp_path / 'latent'), log=lambda *a: None)
    from metrabs_ros.training.checkpoint import load_checkpoint
    graph, config = load_checkpoint(result['final_checkpoint'])
    assert graph.head.num_points == 16 and len(graph.joint_names) == 60
    # The decoder is the ACAE's (frozen, a buffer): joints are affine combinations of the predicted latents.
    from metrabs_ros.acae import load_acae
    np.testing.assert_allclose(graph.latent_decoder.numpy(), load_acae(acae_path).decoder, atol=1e-6)
    assert not any(name.endswith('latent_decoder') for name, _ in graph.named_parameters())


def test_consistency_loss_is_zero_exactly_for_reconstructable_predictions():
    from metrabs_ros.training.losses import acae_consistency_loss
    rng = np.random.default_rng(0)
    c2d, c3d = torch.from_numpy(rng.normal(size=(2, 5, 2))), torch.from_numpy(rng.normal(size=(2, 5, 3)) * 300)
    assert float(acae_consistency_loss(c2d, c3d, torch.eye(5, dtype=torch.float64), 64)) == 0.0
    mix = torch.full((5, 5), 0.2, dtype=torch.float64)       # every joint → the mean joint
    expected = (c3d - c3d.mean(1, keepdim=True)).abs().mean() / 1000 + \
        (c2d - c2d.mean(1, keepdim=True)).abs().mean() * 2.2 / 64
    np.testing.assert_allclose(float(acae_consistency_loss(c2d, c3d, mix, 64)), float(expected), rtol=1e-9)
