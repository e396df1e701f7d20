"""`metrabs-ros predict` end to end as a separate process on rendered images and a video."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from metrabs_ros.io_utils import write_image_rgb
from metrabs_ros.synthetic_scene import render_scene


def run_cli(*args):
    return subprocess.run([sys.executable, '-m', 'metrabs_ros.cli', *map(str, args)], capture_output=True,
                          text=True, timeout=240)


@pytest.fixture(scope='module')
def scene():
    return render_scene(seed=11, num_people=2, flat_colours=True, pose='walking',
                        distance_range_mm=(3000.0, 5000.0))


def test_predict_image_writes_json_and_annotated_image(tmp_path, scene, fixture_pose_model, colour_key_detector):
    image_path = tmp_path / 'scene.png'
    write_image_rgb(image_path, scene.image_rgb)
    intrinsics = tmp_path / 'camera.json'
    intrinsics.write_text(json.dumps({'K': scene.camera.intrinsic_matrix.tolist(), 'dist': [0, 0, 0, 0, 0]}))
    out_json, out_png = tmp_path / 'poses.jsonl', tmp_path / 'annotated.png'
    proc = run_cli('predict', image_path, '--model', fixture_pose_model, '--detector', colour_key_detector,
                   '--intrinsics', intrinsics, '--json', out_json, '--out', out_png, '--view3d', '--threads', '1',
                   '--no-suppress')  # the fixture network's poses ignore the image, so keep every detection
    assert proc.returncode == 0, proc.stderr
    lines = out_json.read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record['image'] == 'scene.png' and record['skeleton'] == 'smpl_24'
    assert len(record['joint_names']) == 24 and len(record['people']) == 2
    for person in record['people']:
        assert len(person['box']) == 5 and np.shape(person['joints3d_mm']) == (24, 3)
        assert np.shape(person['joints2d_px']) == (24, 2)
        # 2D joints are the projection of the 3D joints through the given intrinsics (num_aug = 1)
        projected = scene.camera.project_px(np.asarray(person['joints3d_mm']))
        np.testing.assert_allclose(projected, person['joints2d_px'], atol=0.1)
    gt_boxes = sorted(p.box_xywh_px[0] for p in scene.people)
    np.testing.assert_allclose(sorted(p['box'][0] for p in record['people']), gt_boxes, atol=1.5)
    annotated = cv2.imread(str(out_png))
    h, w = scene.image_rgb.shape[:2]
    assert annotated.shape == (h, w + h, 3)   # 2D overlay + square 3D view
    assert np.any(annotated[:, :w, ::-1] != scene.image_rgb)


def test_predict_video_and_folder(tmp_path, fixture_pose_model, colour_key_detector):
    video = tmp_path / 'clip.avi'
    frames = [render_scene(seed=s, num_people=1, flat_colours=True, image_hw=(240, 320)).image_rgb
              for s in range(3)]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 5.0, (320, 240))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    out_json, out_video = tmp_path / 'video.jsonl', tmp_path / 'annotated.avi'
    proc = run_cli('predict', video, '--model', fixture_pose_model, '--detector', colour_key_detector,
                   '--json', out_json, '--out', out_video, '--fov', '60')
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out_json.read_text().splitlines()]
    assert [r['image'] for r in records] == ['clip_000000', 'clip_000001', 'clip_000002']
    capture = cv2.VideoCapture(str(out_video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()

    folder = tmp_path / 'frames'
    for i, frame in enumerate(frames):
        write_image_rgb(folder / f'{i:03d}.png', frame)
    out_dir = tmp_path / 'annotated'
    proc = run_cli('predict', folder, '--model', fixture_pose_model, '--detector', colour_key_detector,
                   '--out', out_dir)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ['000.png', '001.png', '002.png']


def test_predict_reports_clear_errors(tmp_path, fixture_pose_model, colour_key_detector):
    proc = run_cli('predict', tmp_path / 'nothing.png', '--model', fixture_pose_model,
                   '--detector', colour_key_detector)
    assert proc.returncode == 2 and 'input not found' in proc.stderr
    image = tmp_path / 'x.png'
    write_image_rgb(image, np.zeros((50, 60, 3), np.uint8))
    proc = run_cli('predict', image, '--model', fixture_pose_model, '--detector', colour_key_detector,
                   '--skeleton', 'nope')
    assert proc.returncode == 2 and 'valid skeletons: smpl_24' in proc.stderr
    proc = run_cli('predict', image, '--model', tmp_path / 'missing.onnx')
    assert proc.returncode == 2 and 'not found' in proc.stderr


def test_info_describes_the_model(fixture_pose_model):
    proc = run_cli('info', fixture_pose_model)
    assert proc.returncode == 0, proc.stderr
    assert 'input resolution: 128 px' in proc.stdout and 'smpl_24' in proc.stdout


def test_embedded_model_switches_to_acae_formats(tmp_path):
    """The embedded model predicts smpl_24, coco_19 and h36m_17; the others come from the attached ACAE. Each format
    of one image is the documented affine combination of the same raw prediction: checked through smpl_24 +
    coco_19 + h36m_17 and the shipped ACAE file (independently of the model's metadata)."""
    from metrabs_ros.acae import load_acae
    from metrabs_ros.embedded_models import DEFAULT_ACAE
    scene = render_scene(seed=3, num_people=1, distance_range_mm=(3000.0, 4000.0))
    image = tmp_path / 'scene.png'
    write_image_rgb(image, scene.image_rgb)
    intrinsics = tmp_path / 'camera.json'
    intrinsics.write_text(json.dumps({'K': scene.camera.intrinsic_matrix.tolist()}))
    people = {}
    for fmt in ('smpl_24', 'coco_19', 'h36m_17', 'kinectv2_25'):
        out = tmp_path / f'{fmt}.jsonl'
        proc = run_cli('predict', image, '--skeleton', fmt, '--json', out, '--intrinsics', intrinsics,
                       '--threads', '1', '--no-suppress')
        assert proc.returncode == 0, proc.stderr
        record = json.loads(out.read_text())
        assert record['skeleton'] == fmt and len(record['people']) >= 1
        people[fmt] = np.asarray(record['people'][0]['joints3d_mm'])
    assert people['kinectv2_25'].shape == (25, 3)
    ae = load_acae(str(DEFAULT_ACAE))
    raw = np.concatenate([people[f] for f in ae.encoder_joints.formats])
    expected = np.einsum('jc,jk->kc', raw, ae.format_matrix('kinectv2_25'))
    np.testing.assert_allclose(people['kinectv2_25'], expected, atol=0.5)
    proc = run_cli('predict', image, '--skeleton', 'ghum_35')
    assert proc.returncode == 2 and 'kinectv2_25' in proc.stderr and 'ghum_35' in proc.stderr
