"""``metrabs-ros finetune-nanodet``: adapt the converted COCO NanoDet's person output to the synthetic people of
the data engine while keeping what it learned from real photos.

What changes and what does not:
  * the backbone (stem and CSP stages) is frozen; the PAN laterals and the heads train at a small learning rate
    (AdamW, cosine schedule, EMA of the weights), so the features stay those learned on COCO;
  * only the person channel and the box distributions get a loss (the 79 other classes are not used by us);
  * General Focal Loss as NanoDet was trained with: Quality Focal Loss on the person probability with the IoU of
    the predicted box as soft target at positive cells, GIoU loss and Distribution Focal Loss on the box bins,
    weighted by that IoU;
  * positives: cells whose anchor point ``((j + 0.5) s, (i + 0.5) s)`` lies inside a person's box and within
    2.5 strides of its centre, on the level whose range fits the box (``sqrt(w h)`` < 64 px -> stride 8, < 128 px
    -> 16, else 32, moved up while the largest centre-to-side distance exceeds the 10 bins); a cell claimed by
    several people goes to the smallest.
Canvases come from the detector training set (letterbox/mosaic/colour augmentation, ``training/detector/data.py``).
Checkpoints (``RUN_DIR/checkpoint.pt``) are resumable; the end result is exported like ``convert-detector``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from metrabs_ros.training import nanodet

LEVEL_LIMITS_PX = (64.0, 128.0)
CENTRE_RADIUS_STRIDES = 2.5


def assign_level(box_xyxy) -> int:
    w, h = box_xyxy[2] - box_xyxy[0], box_xyxy[3] - box_xyxy[1]
    size = math.sqrt(max(w * h, 1e-6))
    level = 0 if size < LEVEL_LIMITS_PX[0] else 1 if size < LEVEL_LIMITS_PX[1] else 2
    while level < 2 and max(w, h) / 2 > nanodet.REG_MAX * 0.95 * nanodet.STRIDES[level]:
        level += 1
    return level


def build_targets(boxes_xyxy, side: int):
    """Per level: (positive gt index per cell [n*n] int64, -1 = negative); boxes in canvas px."""
    targets = []
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes_xyxy]
    levels = [assign_level(b) for b in boxes_xyxy]
    for level, stride in enumerate(nanodet.STRIDES):
        n = side // stride
        centres = (np.arange(n) + 0.5) * stride
        cx, cy = np.meshgrid(centres, centres)
        owner = np.full(n * n, -1, np.int64)
        best_area = np.full(n * n, np.inf)
        for g, box in enumerate(boxes_xyxy):
            if levels[g] != level:
                continue
            bx, by = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            radius = CENTRE_RADIUS_STRIDES * stride
            inside = ((cx > box[0]) & (cx < box[2]) & (cy > box[1]) & (cy < box[3])
                      & (np.abs(cx - bx) < radius) & (np.abs(cy - by) < radius)).ravel()
            if not inside.any():      # tiny box: its nearest cell
                inside = np.zeros(n * n, bool)
                inside[int(np.clip(by // stride, 0, n - 1)) * n + int(np.clip(bx // stride, 0, n - 1))] = True
            take = inside & (areas[g] < best_area)
            owner[take], best_area[take] = g, areas[g]
        targets.append(owner)
    return targets


def _giou(a, b):
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    union = area_a + area_b - inter
    iou = inter / union.clamp(min=1e-6)
    enclose = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).clamp(min=0).prod(dim=1)
    return iou, iou - (enclose - union) / enclose.clamp(min=1e-6)


def gfl_person_loss(levels_out, batch_boxes, side: int):
    """Quality focal + GIoU + distribution focal loss of the person output for a batch; returns (loss, stats)."""
    qfl_sum = box_sum = dfl_sum = weight_sum = 0.0
    num_pos = 0
    bins = torch.arange(nanodet.REG_MAX + 1, dtype=torch.float32)
    for b, boxes in enumerate(batch_boxes):
        owners = build_targets(boxes, side)
        for (probabilities, reg), stride, owner in zip(levels_out, nanodet.STRIDES, owners):
            p = probabilities[b, nanodet.COCO_PERSON].flatten().clamp(1e-6, 1 - 1e-6)
            target = torch.zeros_like(p)
            pos = torch.from_numpy(np.flatnonzero(owner >= 0))
            if len(pos):
                n = reg.shape[-1]
                logits = reg[b].reshape(4, nanodet.REG_MAX + 1, -1)[:, :, pos].permute(2, 0, 1)    # [P, 4, 11]
                distance = (F.softmax(logits, dim=2) * bins).sum(dim=2) * stride                      # [P, 4]
                cy = ((pos // n).float() + 0.5) * stride
                cx = ((pos % n).float() + 0.5) * stride
                pred = torch.stack([cx - distance[:, 0], cy - distance[:, 1], cx + distance[:, 2],
                                    cy + distance[:, 3]], dim=1)
                gt = torch.from_numpy(np.asarray(boxes, np.float32)[owner[pos.numpy()]])
                iou, giou = _giou(pred, gt)
                weight = iou.detach().clamp(min=0)
                target[pos] = weight
                box_sum = box_sum + ((1 - giou) * weight).sum()
                gt_distance = torch.stack([cx - gt[:, 0], cy - gt[:, 1], gt[:, 2] - cx, gt[:, 3] - cy], dim=1)
                gt_bins = (gt_distance / stride).clamp(0, nanodet.REG_MAX - 0.01)
                left = gt_bins.floor().long()
                w_right = gt_bins - left.float()
                log_p = F.log_softmax(logits, dim=2)
                dfl = -(log_p.gather(2, left[..., None])[..., 0] * (1 - w_right)
                        + log_p.gather(2, (left + 1)[..., None])[..., 0] * w_right).mean(dim=1)
                dfl_sum = dfl_sum + (dfl * weight).sum()
                weight_sum = weight_sum + weight.sum()
                num_pos += len(pos)
            bce = -(target * torch.log(p) + (1 - target) * torch.log(1 - p))
            qfl_sum = qfl_sum + (bce * (target - p).abs().pow(2)).sum()
    norm = max(num_pos, 1)
    weight_norm = max(float(weight_sum), 1e-3) if num_pos else 1.0
    qfl, box, dfl = qfl_sum / norm, box_sum / weight_norm * 2.0, dfl_sum / weight_norm * 0.25
    return qfl + box + dfl, {'qfl': float(qfl.detach()), 'giou': float(box.detach()) if num_pos else 0.0,
                             'dfl': float(dfl.detach()) if num_pos else 0.0, 'positives': num_pos}


def _lr(step, steps, base, warmup=30):
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1))))


def finetune_nanodet(model_json, data, out, steps=400, batch_size=8, lr=2e-4, side=416, seed=0, threads=1,
                     ema_decay=0.98, checkpoint_every=25, log=print) -> dict:
    from metrabs_ros.training.detector.data import AugmentConfig, DetectorTrainingSet, open_scenes
    from metrabs_ros.training.tfjs_reader import read_tfjs_graph_model

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = nanodet.load_nanodet_from_tfjs(read_tfjs_graph_model(model_json))
    frozen = [model.stem, model.stages]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=1e-4)
    ema = copy.deepcopy(model).eval()
    start = 0
    checkpoint = out / 'checkpoint.pt'
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location='cpu', weights_only=True)
        model.load_state_dict(state['model'])
        ema.load_state_dict(state['ema'])
        optimizer.load_state_dict(state['optimizer'])
        start = int(state['step'])
        log(f'resumed at step {start}')
    source = open_scenes(data)
    dataset = DetectorTrainingSet(source, side, 8, AugmentConfig(), seed, length=steps * batch_size)
    log_file = open(out / 'log.jsonl', 'a')
    t0 = time.time()
    for step in range(start, steps):
        model.train()
        for module in frozen:
            module.eval()
        samples = [dataset.sample(step * batch_size + i) for i in range(batch_size)]
        canvas = torch.from_numpy(np.stack([c for c, _ in samples]).transpose(0, 3, 1, 2).astype(np.float32))
        boxes = [b for _, b in samples]
        for group in optimizer.param_groups:
            group['lr'] = _lr(step, steps, lr)
        loss, stats = gfl_person_loss(model(nanodet.normalise_canvas(canvas)), boxes, side)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 10.0)
        optimizer.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.mul_(ema_decay).add_(p.detach(), alpha=1 - ema_decay)
        record = dict(step=step + 1, loss=float(loss.detach()), lr=_lr(step, steps, lr), seconds=time.time() - t0, **stats)
        log_file.write(json.dumps(record) + '\n')
        log_file.flush()
        if (step + 1) % 10 == 0:
            log(json.dumps(record))
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            tmp = out / 'checkpoint.tmp'
            torch.save({'model': model.state_dict(), 'ema': ema.state_dict(),
                        'optimizer': optimizer.state_dict(), 'step': step + 1}, tmp)
            os.replace(tmp, checkpoint)
    return {'steps': steps, 'checkpoint': str(checkpoint)}


def export_finetuned(checkpoint, model_json, out_onnx, side=416, score_threshold=0.5, note='') -> dict:
    """Exports the EMA weights of a fine-tuning checkpoint to the native contract (with ORT parity)."""
    import onnx

    from metrabs_ros.training.convert_detector import test_frames
    from metrabs_ros.training.detector.export import (build_canvas_detector_onnx, detect_torch_canvas,
                                                      parity_check)
    from metrabs_ros.training.tfjs_reader import read_tfjs_graph_model
    model = nanodet.load_nanodet_from_tfjs(read_tfjs_graph_model(model_json))
    model.load_state_dict(torch.load(checkpoint, map_location='cpu', weights_only=True)['ema'])
    network = nanodet.PersonCanvasNetwork(model.eval()).eval()
    meta = {'name': f'NanoDet COCO person detector, fine-tuned on synthetic people ({side} px letterbox)',
            'score_threshold': f'{score_threshold:g}', 'training': note}
    onnx.save(build_canvas_detector_onnx(network, side, meta), out_onnx)
    return parity_check(str(out_onnx), None, side, 100, test_frames(),
                        reference=lambda image: detect_torch_canvas(network, image, side))
