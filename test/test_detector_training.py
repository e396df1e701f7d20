"""Person detector training package: target assignment/decoding round trip, augmentation geometry, metrics,
export letterbox geometry (oracle network, real ONNX Runtime through PersonDetector), torch/ORT parity, and a smoke
training run with resume and export."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from metrabs_ros.detection import PersonDetector  # noqa: E402
from metrabs_ros.training.detector import data as ddata  # noqa: E402
from metrabs_ros.training.detector.export import (  # noqa: E402
    build_detector_onnx, export_detector, letterbox_torch, parity_check)
from metrabs_ros.training.detector.metrics import detection_metrics  # noqa: E402
from metrabs_ros.training.detector.model import PersonCenterNet, decode_candidates  # noqa: E402
from metrabs_ros.training.detector.targets import assign_targets, decode_numpy  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _match_rows(expected, actual):
    """Reorders ``actual`` rows to the nearest ``expected`` rows (L-inf)."""
    expected, actual = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    order = [int(np.argmin(np.abs(actual - row).max(axis=1))) for row in expected]
    return actual[order]


def test_targets_decode_back_to_the_boxes_exactly():
    side, stride = 320, 8
    boxes = np.array([[10.3, 20.7, 52.9, 150.2],       # tall person
                      [100.0, 100.0, 131.5, 190.25],
                      [200.1, 5.5, 318.6, 319.9],       # large, touching the border
                      [290.2, 200.0, 320.0, 232.0],     # truncated at the right edge
                      [150.6, 280.1, 153.2, 286.9]])    # tiny (smaller than a cell)
    targets = assign_targets(boxes, (side // stride, side // stride), stride)
    # hand computation: the heatmap is exactly 1 in the cell containing each box centre and below 1 elsewhere
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    cells = np.floor(centres / stride).astype(int)
    np.testing.assert_array_equal(targets['heat'][cells[:, 1], cells[:, 0]], 1.0)
    assert np.sum(targets['heat'] == 1.0) == len(boxes)
    assert np.all(targets['box_weight'][cells[:, 1], cells[:, 0]] > 0)

    decoded, scores = decode_numpy(targets['heat'], targets['ltrb'], stride, threshold=0.999)
    assert len(decoded) == len(boxes)
    np.testing.assert_allclose(_match_rows(boxes, decoded), boxes, atol=1e-4)

    # the torch decoder (the one that is exported) gives the same boxes from logits of the target heatmap
    heat = torch.from_numpy(targets['heat']).clamp(1e-6, 1 - 1e-6)[None, None]
    logits = torch.log(heat / (1 - heat))
    boxes_t, scores_t = decode_candidates(logits, torch.from_numpy(targets['ltrb'])[None], stride, top_k=100)
    top = boxes_t[0, :len(boxes)].numpy()
    assert np.all(scores_t[0, :len(boxes)].numpy() > 0.999) and np.all(scores_t[0, len(boxes):].numpy() < 0.999)
    np.testing.assert_allclose(_match_rows(boxes, top), boxes, atol=1e-4)


def test_regression_targets_are_edge_distances_from_cell_centres():
    stride = 8
    box = np.array([[40.0, 16.0, 88.0, 120.0]])
    targets = assign_targets(box, (20, 20), stride)
    rows, cols = np.nonzero(targets['box_weight'])
    assert len(rows) > 1
    cx, cy = (cols + 0.5) * stride, (rows + 0.5) * stride
    np.testing.assert_allclose(targets['ltrb'][:, rows, cols],
                               np.stack([cx - 40.0, cy - 16.0, 88.0 - cx, 120.0 - cy]), atol=1e-5)
    np.testing.assert_allclose(targets['box_weight'].sum(), np.log(48.0 * 104.0), rtol=1e-5)


def test_augmentation_boxes_follow_the_content():
    """A white rectangle on black: after random scale/crop/flip/placement its canvas box is the bright region."""
    image = np.zeros([300, 500, 3], np.uint8)
    image[60:240, 310:380] = 255                    # rows 60..239, columns 310..379 -> box (310, 60, 380, 240)
    box = np.array([[310, 60, 380, 240]], np.float32)
    cfg = ddata.AugmentConfig(mosaic_prob=0.0, brightness=0, contrast=0, saturation=0, hue_shift_deg=0,
                              blur_prob=0, noise_prob=0, grayscale_prob=0, min_visible_fraction=0.99)
    checked = 0
    for seed in range(12):
        canvas, boxes = ddata.augment_scene(image, box, 256, np.random.default_rng(seed), cfg)
        bright = canvas[..., 0] > 180
        if len(boxes) == 0:
            continue
        ys, xs = np.nonzero(bright)
        measured = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
        np.testing.assert_allclose(boxes[0], measured, atol=1.01)
        checked += 1
    assert checked >= 6


def test_metrics_on_a_hand_counted_case():
    gt = np.array([[0, 0, 50, 100], [100, 0, 150, 100], [200, 0, 220, 40]], np.float64)  # third is 40 px tall
    dets = np.array([[0, 0, 50, 100], [300, 0, 350, 100], [200, 0, 220, 40], [101, 1, 151, 101]], np.float64)
    scores = np.array([0.9, 0.8, 0.7, 0.4])
    # by score: TP, FP, ignored (small person), TP -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    metrics = detection_metrics([(dets, scores, gt)], min_height_px=60, score_threshold=0.3)
    assert metrics['num_gt'] == 2 and metrics['recall'] == 1.0
    assert metrics['ap50'] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    assert metrics['precision'] == pytest.approx(2 / 3)
    assert detection_metrics([(dets, scores, gt)], score_threshold=0.5)['recall'] == 0.5


class BrightRectangleOracle(torch.nn.Module):
    """Stands in for the network: finds the bright (> 0.5) pixels of the canvas and 'detects' their bounding box
    (canvas px, pixel edges) with one heatmap peak in the cell nearest to the box centre."""

    out_stride = 8

    def forward(self, images01):
        side = images01.shape[-1]
        bright = (images01[:, 0] > 0.5).to(images01.dtype)               # [1, S, S]
        index = torch.arange(side, dtype=images01.dtype)
        cols, rows = bright.amax(1)[0] > 0, bright.amax(2)[0] > 0
        x1 = torch.where(cols, index, torch.full_like(index, 1e6)).min()
        x2 = torch.where(cols, index, torch.full_like(index, -1e6)).max() + 1
        y1 = torch.where(rows, index, torch.full_like(index, 1e6)).min()
        y2 = torch.where(rows, index, torch.full_like(index, -1e6)).max() + 1
        grid = side // self.out_stride
        centres = (torch.arange(grid, dtype=images01.dtype) + 0.5) * self.out_stride
        cx, cy = centres.reshape(1, grid), centres.reshape(grid, 1)
        bcx, bcy = (x1 + x2) / 2, (y1 + y2) / 2
        heat = -((cx - bcx) ** 2 + (cy - bcy) ** 2) / self.out_stride ** 2 + 3.0
        ltrb = torch.stack([(cx - x1).expand(grid, grid), (cy - y1).expand(grid, grid),
                            (x2 - cx).expand(grid, grid), (y2 - cy).expand(grid, grid)])
        return heat[None, None], ltrb[None]


@pytest.mark.parametrize('image_hw, rect_xyxy', [
    ((480, 640), (301, 97, 377, 402)),
    ((640, 480), (13, 250, 90, 611)),
    ((333, 517), (200, 1, 260, 333)),
    ((900, 260), (40, 100, 200, 870)),
    ((150, 200), (20, 30, 80, 140)),      # upscaled
])
def test_exported_letterbox_maps_boxes_to_original_pixels(tmp_path, image_hw, rect_xyxy):
    import onnx
    side = 320
    path = str(tmp_path / 'oracle_detector.onnx')
    onnx.save(build_detector_onnx(BrightRectangleOracle(), side, top_k=20, metadata={'name': 'oracle'},
                                  fuse=False), path)
    detector = PersonDetector(path, num_threads=1)
    assert detector.format == 'native'
    image = np.zeros([*image_hw, 3], np.uint8)
    x1, y1, x2, y2 = rect_xyxy
    image[y1:y2, x1:x2] = 255                         # pixel edges x1..x2, y1..y2
    found = detector.detect(image, threshold=0.3)
    assert len(found) == 1
    # independent hand computation: the letterbox scale is round(H r)/H, round(W r)/W with r = side / max(H, W);
    # the resampled edge lies within half a canvas pixel of the true edge
    r = side / max(image_hw)
    scale_x, scale_y = round(image_hw[1] * r) / image_hw[1], round(image_hw[0] * r) / image_hw[0]
    tolerance = np.array([scale_x, scale_y, scale_x, scale_y])
    expected_xywh = np.array([x1, y1, x2 - x1, y2 - y1], np.float64)
    got = found[0, :4].astype(np.float64)
    got_xyxy = np.r_[got[:2], got[:2] + got[2:]]
    np.testing.assert_array_less(np.abs(got_xyxy - np.array(rect_xyxy)) * tolerance, 0.55)
    assert np.abs(got - expected_xywh).max() < 2.0 / min(scale_x, scale_y)


def test_resize_matrix_is_onnx_runtime_resize():
    """The torch twin's resampling weights reproduce ONNX Runtime's antialiased Resize (border pixels included),
    checked on a 1D ramp against a hand computation and on images against a real ORT session."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from metrabs_ros.training.detector.export import resize_matrix
    # 12 -> 5: output 0 is centred at c = 0.5 * 12 / 5 - 0.5 = 0.7 with support 2.4; taps -1 (clamped to 0) .. 3
    weights = np.array([1 - 1.7 / 2.4, 1 - 0.7 / 2.4, 1 - 0.3 / 2.4, 1 - 1.3 / 2.4, 1 - 2.3 / 2.4])
    expected = (weights[0] * 1 + weights[1] * 1 + weights[2] * 2 + weights[3] * 3 + weights[4] * 4) / weights.sum()
    assert resize_matrix(12, 5)[0] @ np.arange(1.0, 13.0) == pytest.approx(expected)
    node = helper.make_node('Resize', ['x', '', '', 'sizes'], ['y'], mode='linear',
                            coordinate_transformation_mode='half_pixel', antialias=1)
    for (h, w), (nh, nw) in (((37, 50), (16, 21)), ((20, 30), (45, 61)), ((64, 48), (64, 20))):
        graph = helper.make_graph(
            [node], 'resize', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 1, h, w])],
            [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)],
            [numpy_helper.from_array(np.array([1, 1, nh, nw], np.int64), 'sizes')])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])
        model.ir_version = 8
        x = np.random.default_rng(h).uniform(0, 255, [1, 1, h, w]).astype(np.float32)
        got = ort.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider']).run(
            None, {'x': x})[0][0, 0]
        np.testing.assert_allclose(resize_matrix(h, nh) @ x[0, 0] @ resize_matrix(w, nw).T, got, atol=2e-3)


def test_torch_and_onnx_runtime_agree_on_non_square_frames(tmp_path):
    from metrabs_ros.synthetic_scene import render_scene
    torch.manual_seed(0)
    model = PersonCenterNet('tiny', neck_channels=16, head_channels=16)
    images = [render_scene(s, image_hw=hw, num_people=2).image_rgb
              for s, hw in ((1, (240, 320)), (2, (300, 170)), (3, (97, 131)))]
    canvases = torch.cat([letterbox_torch(image, 128)[0] / 255.0 for image in images])
    with torch.no_grad():
        # BatchNorm statistics of real frames (so that the export's BN folding matters and features are O(1)),
        # and a heat head with spread-out scores (distinct peaks)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None
        model.train()
        model(canvases)
        model.eval()
        torch.nn.init.normal_(model.heat_head[-1].weight, std=0.5)
        model.heat_head[-1].bias.fill_(-float(model(canvases)[0].mean()))
    report = export_detector(model, str(tmp_path / 'det.onnx'), 128, top_k=50, metadata={'name': 'random'})
    result = parity_check(report['path'], model, 128, 50, images, min_score=0.2)
    assert result['num_compared'] >= 20
    assert result['max_score_diff'] < 5e-4 and result['max_box_diff_px'] < 0.1


def test_smoke_training_resume_export_and_person_detector(tmp_path):
    from metrabs_ros.training.detector.train import load_config, merge_config, train_detector
    scenes = ddata.render_scene_folder(str(tmp_path / 'scenes'), 0, 6, log=None)
    ddata.render_scene_folder(str(tmp_path / 'val'), 500, 2, log=None)
    config = load_config(overrides={
        'model': {'backbone': 'tiny', 'neck_channels': 16, 'head_channels': 16},
        'input_side': 128, 'top_k': 30,
        'optim': {'steps': 60, 'batch_size': 4, 'warmup_steps': 5, 'lr': 5e-3},
        'augment': {'mosaic_prob': 0.0},
        'data': {'workers': 0, 'seed': 3, 'torch_threads': 1},
        'validation': {'every_steps': 60, 'max_images': 2},
        'checkpoint_every_steps': 10, 'log_every_steps': 5})
    run = str(tmp_path / 'run')
    train_detector(str(tmp_path / 'scenes'), run, val=str(tmp_path / 'val'), config=config, stop_at_step=30)
    assert not os.path.exists(os.path.join(run, 'person_detector.onnx'))
    metrics = train_detector(str(tmp_path / 'scenes'), run, val=str(tmp_path / 'val'), resume=True)
    records = [json.loads(line) for line in open(os.path.join(run, 'log.jsonl'))]
    steps = [r['step'] for r in records if 'loss' in r]
    assert steps == list(range(5, 65, 5))            # resumed at 30, no repeated or missing steps
    losses = [r['loss'] for r in records if 'loss' in r]
    assert np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2]), losses   # about 0.6 seen
    assert {'recall', 'ap50'} <= set(metrics)

    detector = PersonDetector(os.path.join(run, 'person_detector.onnx'), num_threads=1)
    assert detector.format == 'native'
    assert detector.metadata['metrabs_ros.contract'] == 'detector/1'
    assert detector.metadata['input_side'] == '128'
    image, _ = scenes.load(0)
    big = np.ascontiguousarray(np.repeat(image, 2, axis=1))          # a non-square frame of another size
    boxes, scores = detector.candidates(big, threshold=0.0)
    assert boxes.shape == (30, 4) and scores.shape == (30,)
    # candidates are in original pixels: the decoded cell centres span the whole frame, not the 128 px canvas
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert centres[:, 0].max() > 128 and centres[:, 0].max() <= big.shape[1] + 1e-3
    result = detector.detect(big, threshold=0.0, nms_iou_threshold=0.7)
    assert np.all(result[:, 0] >= 0) and np.all(result[:, 0] + result[:, 2] <= big.shape[1] + 1e-3)

    # init_from: a new run (fresh schedule) starts from the finished run's EMA weights
    import torch
    second = str(tmp_path / 'second')
    cfg2 = merge_config(config, {'init_from': os.path.join(run, 'checkpoint.pt'), 'optim': {'steps': 1},
                                'validation': {'every_steps': 0}})
    train_detector(str(tmp_path / 'scenes'), second, config=cfg2, export=False)
    first_ema = torch.load(os.path.join(run, 'checkpoint.pt'), weights_only=False)['ema']
    second_state = torch.load(os.path.join(second, 'checkpoint.pt'), weights_only=False)
    assert second_state['step'] == 1
    moved = [k for k, v in first_ema.items() if v.is_floating_point()
             and not torch.allclose(v, second_state['model'][k], atol=0.05)]
    assert len(moved) < 0.05 * len(first_ema), moved[:5]       # one small step away from the EMA weights


def test_commands_module_does_not_import_torch():
    code = ('import sys, argparse\n'
            'from metrabs_ros.training.detector.commands import register_commands\n'
            'p = argparse.ArgumentParser(); register_commands(p.add_subparsers())\n'
            'a = p.parse_args(["train-detector", "--data", "d", "--out", "o", "--set", "optim.steps=5"])\n'
            'assert a.set == ["optim.steps=5"]\n'
            'assert "torch" not in sys.modules, "torch imported"\n')
    subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO)


def test_data_engine_scene_datasets_are_read_with_edge_convention_boxes(tmp_path):
    """A scene dataset written with the data engine's own shard writer: boxes come from ``people/box_xywh``."""
    from metrabs_ros.training.synth import shards
    folder = str(tmp_path / 'scenes')
    os.makedirs(folder)
    image = np.zeros([120, 160, 3], np.uint8)
    image[10:50, 20:30] = 200
    samples = [dict(image=image, num_people=np.int32(1), **{'people/box_xywh': np.array([[20, 10, 10, 40]],
                                                                                        np.float32)}),
               dict(image=image, num_people=np.int32(0), **{'people/box_xywh': np.zeros([0, 4], np.float32)})]
    shards.write_shard(os.path.join(folder, shards.shard_name(0)), 'scenes', [0, 1], samples, image_format='png')
    shards.write_manifest(folder, dict(format_version=shards.FORMAT_VERSION, kind='scenes',
                                       shards=[dict(file=shards.shard_name(0), start=0, count=2)]))
    source = ddata.open_scenes(folder)
    assert len(source) == 2
    loaded, boxes = source.load(0)
    np.testing.assert_array_equal(loaded, image)
    np.testing.assert_array_equal(boxes, [[20, 10, 30, 50]])
    assert source.load(1)[1].shape == (0, 4)
    both = ddata.open_scenes(folder + ',' + folder)
    assert len(both) == 4 and both.load(2)[1].shape == (1, 4)
