"""Detection metrics for validation during detector training: recall at IoU 0.5 and AP50 for people taller than a
minimum height (smaller people are "ignored": detections on them count neither way, as COCO's ignore regions).

Boxes are (x1, y1, x2, y2) original-image pixels; heights are ``y2 - y1`` in pixels.
"""
from __future__ import annotations

import numpy as np


def iou_matrix(boxes_a, boxes_b) -> np.ndarray:
    """IoU [A, B] of two box sets (x1, y1, x2, y2)."""
    a = np.asarray(boxes_a, np.float64).reshape(-1, 1, 4)
    b = np.asarray(boxes_b, np.float64).reshape(1, -1, 4)
    inter = (np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
             * np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None))
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-12)


def match_image(det_boxes, det_scores, gt_boxes, min_height_px: float = 60.0, iou_threshold: float = 0.5):
    """Greedy matching in order of descending score (COCO style) for one image.

    Returns (scores [D], outcome int8 [D] with 1 = true positive, 0 = false positive, -1 = ignored (matched a GT
    not taller than ``min_height_px``), num_counted_gt)."""
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    det_scores = np.asarray(det_scores, np.float64).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    counted = (gt_boxes[:, 3] - gt_boxes[:, 1]) > min_height_px
    order = np.argsort(-det_scores, kind='stable')
    det_boxes, det_scores = det_boxes[order], det_scores[order]
    outcome = np.zeros(len(det_boxes), np.int8)
    if len(gt_boxes) and len(det_boxes):
        ious = iou_matrix(det_boxes, gt_boxes)
        taken = np.zeros(len(gt_boxes), bool)
        for d in range(len(det_boxes)):  # loop over detections (greedy by score)
            free = np.where(counted & ~taken, ious[d], -1.0)
            g = int(np.argmax(free))
            if free[g] >= iou_threshold:
                taken[g] = True
                outcome[d] = 1
            elif np.any(ious[d][~counted] >= iou_threshold):
                outcome[d] = -1
    return det_scores, outcome, int(counted.sum())


def detection_metrics(results, min_height_px: float = 60.0, iou_threshold: float = 0.5,
                      score_threshold: float = 0.3) -> dict:
    """``results``: iterable of (det_boxes [D, 4], det_scores [D], gt_boxes [G, 4]) per image, detections after
    NMS at a low score threshold. Returns ``recall`` (TP with score >= ``score_threshold`` / counted GT),
    ``precision`` at that threshold, ``ap50`` (all-point interpolated area under the precision-recall curve),
    ``num_gt`` and ``num_images``."""
    all_scores, all_outcomes, num_gt, num_images = [], [], 0, 0
    for det_boxes, det_scores, gt_boxes in results:
        scores, outcome, n = match_image(det_boxes, det_scores, gt_boxes, min_height_px, iou_threshold)
        all_scores.append(scores)
        all_outcomes.append(outcome)
        num_gt += n
        num_images += 1
    scores = np.concatenate(all_scores) if all_scores else np.zeros([0])
    outcome = np.concatenate(all_outcomes) if all_outcomes else np.zeros([0], np.int8)
    keep = outcome >= 0
    scores, outcome = scores[keep], outcome[keep]
    order = np.argsort(-scores, kind='stable')
    tp = np.cumsum(outcome[order] == 1)
    fp = np.cumsum(outcome[order] == 0)
    recall_curve = tp / max(num_gt, 1)
    precision_curve = tp / np.maximum(tp + fp, 1)
    # all-point interpolation: precision envelope, summed over recall steps
    envelope = np.maximum.accumulate(precision_curve[::-1])[::-1] if len(precision_curve) else precision_curve
    steps = np.diff(np.concatenate([[0.0], recall_curve]))
    ap50 = float(np.sum(steps * envelope)) if num_gt else float('nan')
    above = scores >= score_threshold
    tp_at = int(np.sum(outcome[above] == 1))
    fp_at = int(np.sum(outcome[above] == 0))
    return dict(recall=tp_at / num_gt if num_gt else float('nan'),
                precision=tp_at / max(tp_at + fp_at, 1), ap50=ap50, num_gt=num_gt, num_images=num_images,
                min_height_px=min_height_px, iou_threshold=iou_threshold, score_threshold=score_threshold)
