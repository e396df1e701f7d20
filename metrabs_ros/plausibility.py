"""Plausibility filter and pose-level non-maximum suppression (the official ``suppress_implausible_poses``).

Detector false positives (a coat on a chair, a poster) still yield a pose; these checks drop poses that are
implausible on their own or duplicates of a better-scored pose. All functions are vectorised over people.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

BONE_RATIO_LOW = 0.1
BONE_RATIO_HIGH = 3.0
BONE_ABS_DIFF_MM = 300.0
TTA_STDEV_MM = 200.0
BOX_COVERAGE = 0.5
POSE_SIMILARITY_DISTANCE_MM = 300.0
POSE_NMS_THRESHOLD = 0.4


def bones_plausible(poses3d_mm: np.ndarray, edges: np.ndarray, mean_bone_lengths_mm: np.ndarray) -> np.ndarray:
    """``[P]`` bool: no bone whose length ratio to the reference is < 0.1 or > 3 while also differing by > 300 mm."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if len(edges) == 0:
        return np.ones(len(poses3d_mm), bool)
    lengths = np.linalg.norm(poses3d_mm[:, edges[:, 0]] - poses3d_mm[:, edges[:, 1]], axis=-1)   # [P, E]
    reference = np.asarray(mean_bone_lengths_mm, dtype=np.float64)
    ratio = lengths / reference
    bad = ((ratio < BONE_RATIO_LOW) | (ratio > BONE_RATIO_HIGH)) & (np.abs(lengths - reference) > BONE_ABS_DIFF_MM)
    return ~np.any(bad, axis=-1)


def _scale_align(poses_aug_mm: np.ndarray) -> np.ndarray:
    """Scale each augmentation's pose ``[P, A, J, 3]`` to the mean RMS size over the augmentations."""
    square_scales = np.mean(np.square(poses_aug_mm), axis=(-2, -1), keepdims=True)
    mean_square_scale = np.mean(square_scales, axis=-3, keepdims=True)
    return poses_aug_mm * np.sqrt(mean_square_scale / np.maximum(square_scales, 1e-12))


def augmentations_consistent(poses3d_aug_mm: np.ndarray) -> np.ndarray:
    """``[P]`` bool: more than J//4 joints have a spread (after scale alignment) below 200 mm across augmentations.

    The spread of a joint is ``sqrt(sum over x,y,z of the variance over augmentations)`` (population variance, so a
    single augmentation is trivially consistent).
    """
    num_joints = poses3d_aug_mm.shape[-2]
    aligned = _scale_align(np.asarray(poses3d_aug_mm, np.float64))
    stdev = np.sqrt(np.sum(np.var(aligned, axis=1), axis=-1))                         # [P, J]
    return np.count_nonzero(stdev < TTA_STDEV_MM, axis=1) > num_joints // 4


def consistent_with_box(poses2d_px: np.ndarray, boxes_xywh_px: np.ndarray) -> np.ndarray:
    """``[P]`` bool: the 2D pose's bounding box covers more than half of the detection box's area."""
    start = np.maximum(boxes_xywh_px[:, :2], poses2d_px.min(axis=1))
    end = np.minimum(boxes_xywh_px[:, :2] + boxes_xywh_px[:, 2:4], poses2d_px.max(axis=1))
    intersection = np.prod(np.maximum(end - start, 0), axis=-1)
    return intersection > BOX_COVERAGE * np.prod(boxes_xywh_px[:, 2:4], axis=-1)


def pose_similarity(poses3d_mm: np.ndarray) -> np.ndarray:
    """``[P, P]`` similarity: mean over the J//4 *largest* joint distances of relu(1 − d / 300 mm), after
    pairwise RMS-scale alignment."""
    poses = np.asarray(poses3d_mm, np.float64)
    square_scales = np.mean(np.square(poses), axis=(-2, -1))                         # [P]
    mean_square = (square_scales[:, None] + square_scales[None, :]) / 2
    f1 = np.sqrt(mean_square / np.maximum(square_scales[None, :], 1e-12))[..., None, None]
    f2 = np.sqrt(mean_square / np.maximum(square_scales[:, None], 1e-12))[..., None, None]
    dists = np.linalg.norm(f1 * poses[None] - f2 * poses[:, None], axis=-1)          # [P, P, J]
    k = max(poses.shape[-2] // 4, 1)
    largest = -np.partition(-dists, k - 1, axis=-1)[..., :k]
    return np.mean(np.maximum(1 - largest / POSE_SIMILARITY_DISTANCE_MM, 0), axis=-1)


def pose_nms(poses3d_mm: np.ndarray, scores: np.ndarray, threshold: float = POSE_NMS_THRESHOLD) -> np.ndarray:
    """Indices kept by greedy NMS on :func:`pose_similarity`, in descending score order."""
    if len(scores) == 0:
        return np.zeros(0, np.int64)
    similarity = pose_similarity(poses3d_mm)
    order = np.argsort(-np.asarray(scores), kind='stable')
    suppressed = np.zeros(len(scores), bool)
    keep = []
    for i in order:             # loop over people (a handful), not joints or pixels
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= similarity[i] > threshold
    return np.asarray(keep, np.int64)


def suppress_implausible_poses(boxes_xywhs: np.ndarray, poses3d_mm: np.ndarray, poses3d_aug_mm: np.ndarray,
                               poses2d_px: np.ndarray, edges: Optional[np.ndarray] = None,
                               mean_bone_lengths_mm: Optional[np.ndarray] = None) -> np.ndarray:
    """Indices of the poses to keep (sorted by detection score), as the official ``suppress_implausible_poses``.

    Args:
      boxes_xywhs: ``[P, 5]`` detection boxes (x, y, w, h px, score).
      poses3d_mm: ``[P, J, 3]`` TTA-mean camera-frame poses.
      poses3d_aug_mm: ``[P, A, J, 3]`` per-augmentation camera-frame poses.
      poses2d_px: ``[P, J, 2]`` TTA-mean 2D poses.
      edges, mean_bone_lengths_mm: bones and their reference lengths; the bone check is skipped without them.
    """
    plausible = augmentations_consistent(poses3d_aug_mm) & consistent_with_box(poses2d_px, boxes_xywhs)
    if edges is not None and mean_bone_lengths_mm is not None and len(edges):
        plausible &= bones_plausible(poses3d_mm, edges, mean_bone_lengths_mm)
    candidates = np.flatnonzero(plausible)
    kept = pose_nms(poses3d_mm[candidates], boxes_xywhs[candidates, 4])
    return candidates[kept]
