"""Greedy non-maximum suppression on axis-aligned boxes (numpy, class-agnostic)."""

from __future__ import annotations

import numpy as np


def box_iou_one_to_many(box_xyxy, boxes_xyxy) -> np.ndarray:
    """IoU of one box [4] against boxes [N, 4] (x1, y1, x2, y2, any consistent unit) -> float [N]."""
    ix1 = np.maximum(box_xyxy[0], boxes_xyxy[:, 0])
    iy1 = np.maximum(box_xyxy[1], boxes_xyxy[:, 1])
    ix2 = np.minimum(box_xyxy[2], boxes_xyxy[:, 2])
    iy2 = np.minimum(box_xyxy[3], boxes_xyxy[:, 3])
    intersection = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = max(box_xyxy[2] - box_xyxy[0], 0) * max(box_xyxy[3] - box_xyxy[1], 0)
    areas = np.clip(boxes_xyxy[:, 2] - boxes_xyxy[:, 0], 0, None) * np.clip(
        boxes_xyxy[:, 3] - boxes_xyxy[:, 1], 0, None)
    union = area + areas - intersection
    return intersection / np.maximum(union, np.finfo(np.float64).tiny)


def nms(boxes_xyxy, scores, iou_threshold=0.7, score_threshold=None, max_detections=-1) -> np.ndarray:
    """Greedy NMS: returns the indices (int64) of the kept boxes, sorted by descending score.

    Boxes whose score is below ``score_threshold`` (when given; kept if ``score >= score_threshold``) are
    dropped first. Then, in order of decreasing score (ties: lower index first), a box is kept unless its IoU
    with an already kept box is **greater than** ``iou_threshold``. ``max_detections`` < 0 means unlimited.
    Cost: O(kept x candidates) vectorised IoU evaluations.
    """
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f'nms got {len(boxes)} boxes but {len(scores)} scores')
    candidates = np.arange(len(scores))
    if score_threshold is not None:
        candidates = candidates[scores >= score_threshold]
    limit = len(candidates) if max_detections is None or max_detections < 0 else int(max_detections)
    if limit == 0 or len(candidates) == 0:
        return np.zeros([0], np.int64)
    order = candidates[np.argsort(-scores[candidates], kind='stable')]
    remaining_boxes = boxes[order]
    kept = []
    while len(order) > 0 and len(kept) < limit:
        kept.append(order[0])
        if len(order) == 1:
            break
        ious = box_iou_one_to_many(remaining_boxes[0], remaining_boxes[1:])
        survivors = np.flatnonzero(ious <= iou_threshold) + 1
        order = order[survivors]
        remaining_boxes = remaining_boxes[survivors]
    return np.asarray(kept, np.int64)
