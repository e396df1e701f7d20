"""Pose and detection metrics (pure numpy, vectorised). Units: millimetres for 3D, pixels for boxes.

Pose metrics (per person, GT and prediction in the same camera frame, joints of one skeleton format):
  root-relative MPJPE   mean over joints of |(p_j − p_root) − (g_j − g_root)|, the root joint per format from
                        ROOT_JOINTS (the pelvis of every format we train: smpl_24 'pelv', h36m_17 'pelv',
                        coco_19 'pelv' = hip midpoint); other formats fall back to the mean of all joints.
  PA-MPJPE              MPJPE after the similarity transform (rotation, uniform scale, translation) that best
                        aligns the prediction to the GT in the least-squares sense (Procrustes with scale, Umeyama).
  PCK@150 mm            fraction of root-relative per-joint errors below 150 mm.
  AUC                   mean of PCK over the thresholds 0, 5, …, 150 mm (31 values; the MuPoTS/3DHP convention).
  MRPE                  |p_root − g_root|, the absolute (camera-frame) error of the root joint, reported overall, by
                        GT root distance from the camera (DISTANCE_BUCKETS_M) and for truncated vs whole people.
Detection metrics (boxes x, y, w, h in pixels; IoU on the box areas):
  AP50                  area under the interpolated precision/recall curve (all-point interpolation, the
                        PASCAL VOC 2010+ rule) with greedy matching in score order at IoU ≥ 0.5; GT flagged
                        `ignore` (e.g. people below a height threshold) neither count as misses nor make the
                        detections matched to them false positives (COCO's area-range rule).
  recall@0.5            fraction of non-ignored GT boxes matched by some detection at IoU ≥ 0.5.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

ROOT_JOINTS = {'smpl_24': 'pelv', 'h36m_17': 'pelv', 'coco_19': 'pelv', 'smpl+head_30': 'pelv',
               'h36m_25': 'pelv', 'mpi_inf_3dhp_17': 'pelv', 'kinectv2_25': 'spinebase'}
DISTANCE_BUCKETS_M = (0.0, 2.0, 4.0, 8.0, np.inf)
PCK_THRESHOLD_MM = 150.0
AUC_THRESHOLDS_MM = np.linspace(0.0, 150.0, 31)


def root_index(skeleton: str, joint_names: Sequence[str]) -> Optional[int]:
    """Index of the root joint of `skeleton` among `joint_names`, or None (→ mean-of-joints centring)."""
    name = ROOT_JOINTS.get(skeleton)
    names = list(joint_names)
    return names.index(name) if name in names else None


def _centre(points: np.ndarray, root: Optional[int]) -> np.ndarray:
    if root is None:
        return points - points.mean(axis=-2, keepdims=True)
    return points - points[..., root:root + 1, :]


def root_relative_errors_mm(pred_mm: np.ndarray, gt_mm: np.ndarray, root: Optional[int]) -> np.ndarray:
    """Per-joint errors [..., J] (mm) after subtracting each pose's root joint (or mean when root is None)."""
    pred_mm = np.asarray(pred_mm, np.float64)
    gt_mm = np.asarray(gt_mm, np.float64)
    return np.linalg.norm(_centre(pred_mm, root) - _centre(gt_mm, root), axis=-1)


def procrustes_align(pred_mm: np.ndarray, gt_mm: np.ndarray) -> np.ndarray:
    """pred [N, J, 3] aligned to gt [N, J, 3] by the least-squares similarity transform (Umeyama, reflections
    excluded): returns s·R·pred + t per pose."""
    pred = np.asarray(pred_mm, np.float64)
    gt = np.asarray(gt_mm, np.float64)
    mu_p = pred.mean(axis=1, keepdims=True)
    mu_g = gt.mean(axis=1, keepdims=True)
    p0, g0 = pred - mu_p, gt - mu_g
    cov = np.einsum('nji,njk->nik', g0, p0)                  # [N, 3, 3] = Σ g pᵀ
    u, sing, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u @ vt))
    d = np.ones_like(sing)
    d[:, 2] = sign
    rot = u @ (d[:, :, None] * vt)                           # U · diag(1, 1, sign) · Vᵀ
    var_p = np.sum(p0 ** 2, axis=(1, 2))
    scale = np.sum(sing * d, axis=1) / np.maximum(var_p, 1e-12)
    return scale[:, None, None] * np.einsum('nik,njk->nji', rot, p0) + mu_g


def pa_errors_mm(pred_mm: np.ndarray, gt_mm: np.ndarray) -> np.ndarray:
    """Per-joint errors [N, J] (mm) after Procrustes alignment with scale."""
    return np.linalg.norm(procrustes_align(pred_mm, gt_mm) - np.asarray(gt_mm, np.float64), axis=-1)


def pck(errors_mm: np.ndarray, threshold_mm: float = PCK_THRESHOLD_MM) -> float:
    """Fraction of errors strictly below `threshold_mm` (NaN when there are none)."""
    errors = np.asarray(errors_mm, np.float64).ravel()
    return float(np.mean(errors < threshold_mm)) if errors.size else float('nan')


def pck_curve(errors_mm: np.ndarray, thresholds_mm: np.ndarray = AUC_THRESHOLDS_MM) -> np.ndarray:
    errors = np.asarray(errors_mm, np.float64).ravel()
    if not errors.size:
        return np.full(len(thresholds_mm), np.nan)
    return np.mean(errors[None, :] < np.asarray(thresholds_mm)[:, None], axis=1)


def auc(errors_mm: np.ndarray, thresholds_mm: np.ndarray = AUC_THRESHOLDS_MM) -> float:
    """Mean PCK over `thresholds_mm` (default 0..150 mm in 5 mm steps)."""
    return float(np.mean(pck_curve(errors_mm, thresholds_mm)))


def bucket_index(values: np.ndarray, edges: Sequence[float] = DISTANCE_BUCKETS_M) -> np.ndarray:
    """Bucket of each value for half-open buckets [edges[i], edges[i+1])."""
    return np.clip(np.searchsorted(np.asarray(edges), np.asarray(values, np.float64), side='right') - 1,
                   0, len(edges) - 2)


def bucket_label(lo: float, hi: float) -> str:
    if lo <= 0:
        return f'<{hi:g}m'
    if not np.isfinite(hi):
        return f'>{lo:g}m'
    return f'{lo:g}-{hi:g}m'


def summary_stats(values) -> Dict[str, float]:
    values = np.asarray(values, np.float64).ravel()
    if not values.size:
        return {'count': 0, 'mean': float('nan'), 'median': float('nan')}
    return {'count': int(values.size), 'mean': float(values.mean()), 'median': float(np.median(values))}


def root_error_report(pred_root_mm: np.ndarray, gt_root_mm: np.ndarray, truncated: Optional[np.ndarray] = None,
                      edges_m: Sequence[float] = DISTANCE_BUCKETS_M) -> dict:
    """MRPE (mm) overall, by GT root distance (Euclidean, metres) and for truncated vs whole people.

    Returns {'overall': stats, 'by_distance': {label: stats}, 'truncated': stats, 'not_truncated': stats},
    stats = {'count', 'mean', 'median'}."""
    pred = np.asarray(pred_root_mm, np.float64).reshape(-1, 3)
    gt = np.asarray(gt_root_mm, np.float64).reshape(-1, 3)
    err = np.linalg.norm(pred - gt, axis=-1)
    dist_m = np.linalg.norm(gt, axis=-1) / 1000.0
    idx = bucket_index(dist_m, edges_m)
    report = {'overall': summary_stats(err),
              'by_distance': {bucket_label(edges_m[i], edges_m[i + 1]): summary_stats(err[idx == i])
                              for i in range(len(edges_m) - 1)}}
    if truncated is not None:
        truncated = np.asarray(truncated, bool).ravel()
        report['truncated'] = summary_stats(err[truncated])
        report['not_truncated'] = summary_stats(err[~truncated])
    return report


def pose_report(pred_mm: np.ndarray, gt_mm: np.ndarray, root: Optional[int],
                truncated: Optional[np.ndarray] = None) -> dict:
    """All pose metrics for poses [N, J, 3] mm of one format: MPJPE, PA-MPJPE, PCK@150, AUC, MRPE breakdowns,
    and the PCK curve (thresholds in mm)."""
    pred = np.asarray(pred_mm, np.float64)
    gt = np.asarray(gt_mm, np.float64)
    if len(pred) == 0:
        return {'num_people': 0}
    rel = root_relative_errors_mm(pred, gt, root)
    pa = pa_errors_mm(pred, gt)
    if root is None:
        pred_root, gt_root = pred.mean(1), gt.mean(1)
    else:
        pred_root, gt_root = pred[:, root], gt[:, root]
    report = {
        'num_people': int(len(pred)),
        'mpjpe_mm': float(rel.mean()),
        'pa_mpjpe_mm': float(pa.mean()),
        'pck150': pck(rel),
        'auc': auc(rel),
        'pck_curve': {'thresholds_mm': AUC_THRESHOLDS_MM.tolist(), 'pck': pck_curve(rel).tolist()},
        'mrpe_mm': root_error_report(pred_root, gt_root, truncated),
    }
    if truncated is not None:
        truncated = np.asarray(truncated, bool)
        report['mpjpe_truncated_mm'] = float(rel[truncated].mean()) if truncated.any() else float('nan')
        report['mpjpe_not_truncated_mm'] = float(rel[~truncated].mean()) if (~truncated).any() else float('nan')
    return report


# --- detection ----------------------------------------------------------------------------------------------------

def box_iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [N, M] of boxes a [N, 4] and b [M, 4] (x, y, w, h; areas w·h)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ax0, ay0, ax1, ay1 = a[:, 0], a[:, 1], a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax1[:, None], bx1[None]) - np.maximum(ax0[:, None], bx0[None]), 0, None)
    ih = np.clip(np.minimum(ay1[:, None], by1[None]) - np.maximum(ay0[:, None], by0[None]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(union > 0, inter / union, 0.0)


def match_boxes(pred_boxes: np.ndarray, scores: np.ndarray, gt_boxes: np.ndarray, iou_threshold: float = 0.5,
                gt_ignore: Optional[np.ndarray] = None):
    """Greedy matching in descending score order (COCO rule: a detection prefers a free non-ignored GT).

    Returns (pred_to_gt [N] int, −1 = unmatched; pred_ignored [N] bool: matched to an ignored GT)."""
    pred_boxes = np.asarray(pred_boxes, np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    n, m = len(pred_boxes), len(gt_boxes)
    ignore = np.zeros(m, bool) if gt_ignore is None else np.asarray(gt_ignore, bool)
    pred_to_gt = np.full(n, -1, np.int64)
    pred_ignored = np.zeros(n, bool)
    if n == 0 or m == 0:
        return pred_to_gt, pred_ignored
    iou = box_iou_xywh(pred_boxes, gt_boxes)
    taken = np.zeros(m, bool)
    for i in np.argsort(-np.asarray(scores, np.float64), kind='stable'):  # loop over detections (few per image)
        cand = np.where(~taken & ~ignore & (iou[i] >= iou_threshold), iou[i], -1.0)
        j = int(np.argmax(cand))
        if cand[j] >= 0:
            pred_to_gt[i] = j
            taken[j] = True
            continue
        cand_ign = np.where(ignore & (iou[i] >= iou_threshold), iou[i], -1.0)
        if cand_ign.max() >= 0:
            pred_ignored[i] = True
    return pred_to_gt, pred_ignored


def average_precision(scores: np.ndarray, is_tp: np.ndarray, num_gt: int) -> float:
    """All-point interpolated AP from per-detection scores and TP flags (pooled over images)."""
    if num_gt == 0:
        return float('nan')
    order = np.argsort(-np.asarray(scores, np.float64), kind='stable')
    tp = np.asarray(is_tp, np.float64)[order]
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(1.0 - tp)
    recall = tp_cum / num_gt
    precision = tp_cum / np.maximum(tp_cum + fp_cum, 1e-12)
    r = np.concatenate([[0.0], recall, [recall[-1] if len(recall) else 0.0]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]                # precision envelope
    return float(np.sum((r[1:] - r[:-1]) * p[1:]))


class DetectionAccumulator:
    """Collects per-image detections and GT boxes; `report()` gives AP50 and recall for each GT subset.

    Subsets: 'all' and 'taller_than_{min_height_px}px' (GT boxes of smaller height are ignored there, and so are
    unmatched detections smaller than the threshold, as COCO's area ranges)."""

    def __init__(self, iou_threshold: float = 0.5, min_height_px: float = 60.0):
        self.iou_threshold = iou_threshold
        self.min_height_px = min_height_px
        self.subsets = {'all': 0.0, f'taller_than_{min_height_px:g}px': min_height_px}
        self._scores = {k: [] for k in self.subsets}
        self._tp = {k: [] for k in self.subsets}
        self._num_gt = {k: 0 for k in self.subsets}
        self._matched = {k: 0 for k in self.subsets}

    def add(self, pred_boxes: np.ndarray, scores: np.ndarray, gt_boxes: np.ndarray) -> None:
        pred_boxes = np.asarray(pred_boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).ravel()
        gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
        for key, min_h in self.subsets.items():
            ignore = gt_boxes[:, 3] < min_h
            pred_to_gt, pred_ign = match_boxes(pred_boxes, scores, gt_boxes, self.iou_threshold, ignore)
            small_unmatched = (pred_to_gt < 0) & (pred_boxes[:, 3] < min_h)
            keep = ~pred_ign & ~small_unmatched
            self._scores[key].append(scores[keep])
            self._tp[key].append(pred_to_gt[keep] >= 0)
            self._num_gt[key] += int(np.count_nonzero(~ignore))
            self._matched[key] += int(np.count_nonzero(pred_to_gt >= 0))

    def report(self) -> dict:
        out = {}
        for key in self.subsets:
            scores = np.concatenate(self._scores[key]) if self._scores[key] else np.zeros(0)
            tp = np.concatenate(self._tp[key]) if self._tp[key] else np.zeros(0, bool)
            num_gt = self._num_gt[key]
            out[key] = {'num_gt': num_gt, 'num_detections': int(len(scores)),
                        'ap50': average_precision(scores, tp, num_gt),
                        'recall50': self._matched[key] / num_gt if num_gt else float('nan')}
        return out
