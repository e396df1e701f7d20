"""NanoDet fine-tuning: positive-cell assignment against an explicit loop, the loss's response to a perfect box,
and a resumable smoke run on a tiny source-style NanoDet whose export passes the ORT parity check."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from metrabs_ros.training import nanodet  # noqa: E402
from metrabs_ros.training.nanodet_finetune import (assign_level, build_targets, export_finetuned,  # noqa: E402
                                                   finetune_nanodet, gfl_person_loss)


def test_level_assignment_by_size_and_bin_range():
    assert assign_level([0, 0, 20, 50]) == 0            # sqrt(area) 32 px
    assert assign_level([0, 0, 60, 120]) == 1           # 85 px
    assert assign_level([0, 0, 100, 300]) == 2          # 173 px
    assert assign_level([0, 0, 8, 200]) == 1            # sqrt(area) 40 px, but 100 px > 9.5 bins x 8 px to the top
    assert assign_level([0, 0, 8, 400]) == 2            # 200 px > 9.5 bins x 16 px


def test_positive_cells_against_an_explicit_loop():
    side = 128
    boxes = np.array([[30.0, 20.0, 70.0, 110.0], [40.0, 40.0, 60.0, 80.0]])
    owners = build_targets(boxes, side)
    for level, stride in enumerate(nanodet.STRIDES):
        n = side // stride
        expected = np.full(n * n, -1)
        best = np.full(n * n, np.inf)
        for g, (x1, y1, x2, y2) in enumerate(boxes):
            if assign_level([x1, y1, x2, y2]) != level:
                continue
            area = (x2 - x1) * (y2 - y1)
            for i in range(n):
                for j in range(n):
                    cx, cy = (j + 0.5) * stride, (i + 0.5) * stride
                    if (x1 < cx < x2 and y1 < cy < y2 and abs(cx - (x1 + x2) / 2) < 2.5 * stride
                            and abs(cy - (y1 + y2) / 2) < 2.5 * stride and area < best[i * n + j]):
                        expected[i * n + j], best[i * n + j] = g, area
        np.testing.assert_array_equal(owners[level], expected, err_msg=f'stride {stride}')


def _levels_for_box(box, side, probability, sharp):
    """Fake head outputs: the person probability on the box's positive cells (0.01 elsewhere), box bins peaked at
    the exact distances (``sharp`` = 0: flat bins)."""
    levels = []
    owners = build_targets(np.asarray([box]), side)
    for stride, owner in zip(nanodet.STRIDES, owners):
        n = side // stride
        prob = torch.full((1, nanodet.NUM_CLASSES, n, n), 1e-2)
        prob[0, nanodet.COCO_PERSON] = torch.where(torch.from_numpy(owner.reshape(n, n) >= 0),
                                                   torch.tensor(probability), torch.tensor(1e-2))
        reg = torch.zeros(1, 4, nanodet.REG_MAX + 1, n, n)
        centres = (torch.arange(n) + 0.5) * stride
        cy, cx = torch.meshgrid(centres, centres, indexing='ij')
        distance = torch.stack([cx - box[0], cy - box[1], box[2] - cx, box[3] - cy]) / stride
        distance = distance.clamp(0, nanodet.REG_MAX)
        bins = torch.arange(nanodet.REG_MAX + 1).view(1, -1, 1, 1).float()
        reg[0] = -sharp * (bins - distance[:, None]).abs()
        levels.append((prob, reg.reshape(1, 44, n, n)))
    return levels


def test_loss_is_lower_for_a_detector_that_sees_the_person():
    side, box = 128, np.array([[40.0, 24.0, 72.0, 104.0]])
    blind = gfl_person_loss(_levels_for_box(box[0], side, 0.01, sharp=0.0), [box], side)[0]
    seeing = gfl_person_loss(_levels_for_box(box[0], side, 0.95, sharp=8.0), [box], side)[0]
    assert float(seeing) < 0.5 * float(blind)


@pytest.mark.slow
def test_finetune_smoke_resumes_and_exports(tmp_path):
    from test_nanodet_conversion import write_source_style_fixture

    from metrabs_ros.training.detector.data import render_scene_folder
    torch.manual_seed(0)
    tiny = nanodet.NanoDet(width=0.125)
    model_json = write_source_style_fixture(tiny, tmp_path / 'tfjs')
    scenes = tmp_path / 'scenes'
    render_scene_folder(str(scenes), first_seed=5, count=3, log=None)
    run = tmp_path / 'run'
    finetune_nanodet(model_json, str(scenes), run, steps=2, batch_size=2, side=128, checkpoint_every=1,
                     log=lambda *_: None)
    finetune_nanodet(model_json, str(scenes), run, steps=3, batch_size=2, side=128, checkpoint_every=1,
                     log=lambda *_: None)
    steps = [json.loads(line)['step'] for line in (run / 'log.jsonl').read_text().splitlines()]
    assert steps == [1, 2, 3]                                # the second call resumed at step 2
    state = torch.load(run / 'checkpoint.pt', weights_only=True)
    from metrabs_ros.training.tfjs_reader import read_tfjs_graph_model
    loaded = nanodet.load_nanodet_from_tfjs(read_tfjs_graph_model(model_json)).state_dict()
    for name, value in loaded.items():                       # the backbone is frozen, the head moved
        if name.startswith(('stem', 'stages')):
            torch.testing.assert_close(state['model'][name], value, rtol=0, atol=0)
    assert any(not torch.allclose(state['model'][n], v) for n, v in loaded.items() if n.startswith('head_outputs'))
    parity = export_finetuned(run / 'checkpoint.pt', model_json, tmp_path / 'ft.onnx', side=128)
    assert parity['max_box_diff_px'] <= 0.1
