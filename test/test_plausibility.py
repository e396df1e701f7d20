"""Plausibility filter and pose NMS against hand-constructed cases with known answers."""

import numpy as np

from metrabs_ros import plausibility as pl
from metrabs_ros.skeletons import get_skeleton

SMPL = get_skeleton('smpl_24')
EDGES = np.asarray(SMPL.edges)


def standing_pose_mm(offset=(0.0, 0.0, 4000.0), seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform([-250, -900, -100], [250, 800, 100], size=(24, 3))
    return base + np.asarray(offset)


def test_bone_check_rejects_only_far_out_bones():
    pose = standing_pose_mm()
    reference = np.linalg.norm(pose[EDGES[:, 0]] - pose[EDGES[:, 1]], axis=-1)
    broken = pose.copy()
    broken[10] += [0, 0, 3000.0]       # ltoe 3 m away: ratio > 3 and > 300 mm longer
    long_but_close = pose.copy()
    # a bone 3.5x its reference but only +250 mm in absolute terms is tolerated (both conditions needed)
    shortest = int(np.argmin(reference))
    a, b = EDGES[shortest]
    direction = (pose[b] - pose[a]) / reference[shortest]
    long_but_close[b] = pose[a] + direction * min(reference[shortest] * 3.5, reference[shortest] + 250)
    result = pl.bones_plausible(np.stack([pose, broken, long_but_close]), EDGES, reference)
    assert result.tolist() == [True, False, True]


def test_augmentation_consistency_counts_joints_with_small_spread():
    pose = standing_pose_mm()
    rng = np.random.default_rng(1)
    consistent = pose + rng.normal(0, 20, size=(5, 24, 3))             # 20 mm jitter: every joint consistent
    inconsistent = pose + rng.normal(0, 600, size=(5, 24, 3))          # ~1 m spread: none consistent
    assert pl.augmentations_consistent(np.stack([consistent, inconsistent])).tolist() == [True, False]
    assert pl.augmentations_consistent(pose[None, None]).tolist() == [True]   # one augmentation


def test_box_consistency_uses_the_detection_box_area():
    poses2d = np.array([[[100, 100], [200, 300]], [[100, 100], [120, 130]]], np.float64)
    boxes = np.array([[100, 100, 100, 200, 0.9], [100, 100, 100, 200, 0.9]])
    assert pl.consistent_with_box(poses2d, boxes).tolist() == [True, False]
    truncated = np.array([[[0, 50], [300, 700]]], np.float64)   # pose extends beyond the box: still covers it
    assert pl.consistent_with_box(truncated, np.array([[10, 60, 100, 200, 0.5]])).tolist() == [True]


def test_pose_nms_suppresses_duplicates_keeping_the_best_score():
    a = standing_pose_mm((0, 0, 4000))
    a_duplicate = a + 15.0                   # 15 mm away on every axis: similarity ~0.91 > 0.4
    b = standing_pose_mm((1500, 0, 5000), seed=2)
    poses = np.stack([a, a_duplicate, b])
    similarity = pl.pose_similarity(poses)
    assert similarity[0, 1] > 0.8 and similarity[0, 2] == 0.0
    np.testing.assert_allclose(np.diag(similarity), 1.0)
    assert pl.pose_nms(poses, np.array([0.6, 0.9, 0.5])).tolist() == [1, 2]


def test_suppress_implausible_poses_combines_the_checks():
    a = standing_pose_mm((0, 0, 4000))
    b = standing_pose_mm((1500, 0, 5000), seed=2)
    aug = np.stack([np.repeat(a[None], 3, 0), np.repeat(a[None], 3, 0) + 10, np.repeat(b[None], 3, 0)])
    poses = aug.mean(axis=1)
    K = np.array([[600, 0, 320], [0, 600, 240], [0, 0, 1.0]])
    proj = poses @ K.T
    poses2d = proj[..., :2] / proj[..., 2:]
    lo, hi = poses2d.min(1), poses2d.max(1)
    boxes = np.concatenate([lo, hi - lo, np.array([[0.9], [0.8], [0.7]])], axis=1)
    boxes[2, :2] -= 1000                     # third detection box far away from its pose
    kept = pl.suppress_implausible_poses(boxes, poses, aug, poses2d)
    assert kept.tolist() == [0]              # 1 duplicates 0 (lower score), 2 is inconsistent with its box
