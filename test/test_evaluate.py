"""`metrabs-ros train` → `metrabs-ros export` → `metrabs-ros evaluate` through the real command line (cli.main), ONNX
Runtime and the library pipeline; the evaluation agrees with the training-side validation (an independent path:
OpenCV crops + PyTorch instead of the exported graph's warp in ONNX Runtime)."""
import json

import numpy as np
import pytest

from metrabs_ros.synthetic_scene import FLAT_PALETTE_RGB, render_scene
from metrabs_ros.training import augment as aug


def _run(argv):
    """The real `metrabs-ros` command line (metrabs_ros.cli.main), in process."""
    from metrabs_ros.cli import main
    return main(argv)


def test_importing_the_commands_does_not_import_torch():
    import subprocess
    import sys
    code = ('import sys, argparse; import metrabs_ros.training.train_commands as t; '
            'p = argparse.ArgumentParser(); t.register_commands(p.add_subparsers()); '
            'print("torch" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp('evaluate')
    scenes = [aug.scene_to_sample(render_scene(seed, num_people=2, image_hw=(240, 320), flat_colours=True,
                                               distance_range_mm=(2500, 6000)))
              for seed in range(3)]
    train = [aug.scene_sample_to_crop_sample(s, p, 96) for s in scenes[:2] for p in range(aug.scene_people_count(s))]
    aug.write_npz_samples(train, str(root / 'train'))
    aug.write_npz_samples(scenes, str(root / 'val'))
    config = {'model': {'backbone': 'mobilenetv3-small', 'resolution': 64},
              'optim': {'steps': 4, 'batch_size': 4, 'warmup_steps': 1},
              'run': {'num_workers': 0, 'log_every': 2, 'validate_every': 4, 'checkpoint_every': 2}}
    (root / 'cfg.json').write_text(json.dumps(config))
    assert _run(['train', '--config', str(root / 'cfg.json'), '--data', str(root / 'train'), '--val',
                 str(root / 'val'), '--out', str(root / 'run'), '--threads', '2']) == 0
    assert _run(['export', str(root / 'run' / 'final.pt'), '--out', str(root / 'model.onnx')]) == 0
    return root, scenes


def test_train_run_folder_contents(workdir):
    import yaml
    root, _ = workdir
    run = root / 'run'
    cfg = yaml.safe_load((run / 'config.yaml').read_text())
    assert cfg['model']['backbone'] == 'mobilenetv3-small' and cfg['optim']['steps'] == 4
    assert cfg['augment']['flip_prob'] == 0.5 and 'environment' in cfg          # defaults written out
    rows = [json.loads(line) for line in (run / 'train_log.jsonl').read_text().splitlines()]
    assert [r['step'] for r in rows] == [2, 4] and all(np.isfinite(r['total']) for r in rows)
    assert (run / 'train_log.csv').read_text().splitlines()[0].startswith('step,lr,total')
    assert (run / 'checkpoints' / 'step_00000004.pt').exists()


def test_evaluate_gt_boxes_matches_training_validation(workdir):
    from metrabs_ros.model_contract import read_pose_model_info
    from metrabs_ros.onnx_backend import create_session
    root, scenes = workdir
    out = root / 'report'
    assert _run(['evaluate', str(root / 'model.onnx'), '--data', str(root / 'val'), '--gt-boxes', '--out', str(out),
                 '--min-person-pixels', '100']) == 0      # the training validation's default
    report = json.loads((out / 'report.json').read_text())
    assert (out / 'pck_curve.png').stat().st_size > 1000 and (out / 'error_by_distance.png').stat().st_size > 1000
    n_people = sum(int(np.sum(s['people/num_pixels'] >= 100)) for s in scenes)
    assert report['counts']['evaluated_people'] == n_people > 0
    info = read_pose_model_info(create_session(str(root / 'model.onnx'), backend='cpu'), str(root / 'model.onnx'))
    assert set(info.skeletons) == {'smpl_24', 'coco_19', 'h36m_17'}
    pose = report['pose']['smpl_24']       # the synthetic_scene GT has smpl_24 only
    assert set(report['pose']) == {'smpl_24'}
    val = [json.loads(line) for line in (root / 'run' / 'val_log.jsonl').read_text().splitlines()][-1]['smpl_24']
    assert val['num_people'] == pose['num_people']
    assert pose['mpjpe_mm'] == pytest.approx(val['mpjpe_mm'], abs=3.0)
    assert pose['mrpe_mm']['overall']['median'] == pytest.approx(val['mrpe_median_mm'], rel=0.02, abs=5.0)
    assert 0.0 <= pose['pck150'] <= 1.0 and np.isfinite(pose['pa_mpjpe_mm'])


def test_evaluate_with_a_detector_reports_detection_metrics(workdir):
    from metrabs_ros.training.colour_key_detector import make_colour_key_detector
    root, scenes = workdir
    detector = make_colour_key_detector(str(root / 'det.onnx'), FLAT_PALETTE_RGB[:2].tolist(), min_pixels=20)
    out = root / 'report_det'
    assert _run(['evaluate', str(root / 'model.onnx'), '--data', str(root / 'val'), '--detector', detector,
                 '--out', str(out), '--min-person-pixels', '0']) == 0
    report = json.loads((out / 'report.json').read_text())
    det = report['detection']['all']
    n_people = sum(aug.scene_people_count(s) for s in scenes)
    # the colour key finds every (flat-coloured, visible) person with its exact silhouette box
    assert det['num_gt'] == n_people and det['recall50'] == pytest.approx(1.0) and det['ap50'] == pytest.approx(1.0)
    assert report['mode'] == 'detector'
    assert report['counts']['evaluated_people'] + report['counts']['unmatched_people'] == n_people


def test_evaluate_rejects_formats_the_model_does_not_offer(fixture_pose_model):
    from metrabs_ros.training.evaluate import evaluate_model
    with pytest.raises(ValueError, match='not offered by .*it has smpl_24'):
        evaluate_model(fixture_pose_model, [], gt_boxes=True, formats=['kinectv2_25'], log=lambda *a: None)


def test_evaluation_ground_truth_includes_the_derived_formats():
    pytest.importorskip('anny')
    pytest.importorskip('numba')
    from metrabs_ros.training.evaluate import _sample_people
    from metrabs_ros.training.synth import body_model, scene
    from metrabs_ros.training.synth.derived_formats import DERIVED_FORMATS, derivation_matrix
    body = body_model.load_body_model()
    (sample,) = scene.generate_samples(body, 12, 'val', 'scenes', range(1), scene.Settings(scene_hw=(120, 160)))
    joints = _sample_people(sample, 0)[4]
    assert set(DERIVED_FORMATS) <= set(joints)
    # independent computation: the derivation matrix applied to the stored source formats
    sources = ['anny_104', 'smpl_24', 'coco_19', 'h36m_17']
    stacked = np.concatenate([np.asarray(sample[f'people/{f}/joints3d_mm'], np.float64) for f in sources], axis=1)
    expected = np.einsum('kj,pjc->pkc', derivation_matrix('kinectv2_25', sources), stacked)
    np.testing.assert_allclose(joints['kinectv2_25'], expected, atol=1e-6)
