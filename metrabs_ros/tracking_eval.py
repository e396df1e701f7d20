"""Measuring the person tracker: sequences with ground-truth identities, detection sources and id metrics.

Sequences (:func:`crossing_walks`): people walk straight across a synthetic camera's view at different depths and
in both directions (so they cross and occlude each other), some pause midway, they enter and leave the view;
everything is drawn from a seed. Ground truth per frame: the person's identity, root (joint centroid, camera frame,
mm), box (px) and the visible fraction of its box (not covered by nearer people, inside the image).

Detection sources:

* :func:`simulated_detections`: a detector model applied to the ground truth, seeded — people less than 35 % visible
  are missed, partly occluded ones get low scores, random short detector drop-outs (1–5 frames), motion-blur low
  scores, box jitter, a monocular root error (small across the viewing ray; along it an error correlated over time
  plus jitter, both proportional to the distance: 8 % and 2-15 % per person, as the embedded estimator shows on
  rendered frames) and low-score false positives;
* :func:`rendered_detections`: the frames rendered by :mod:`metrabs_ros.synthetic_scene` and run through a
  :class:`~metrabs_ros.estimator.PoseEstimator` (detections matched to the ground truth by box IoU ≥ 0.5);
* :func:`video_detections`: the estimator on a real video (no ground truth).

The estimator sources also compute each detection's colour descriptor (:mod:`metrabs_ros.person_appearance`); the
simulated source has none (the tracker then runs without the appearance cue).

Metrics (:func:`identity_metrics`), over ground-truth person-frames in which the person is at least partly in the
image: ID switches (a person's track id differs from the one it had when last tracked, MOT convention) per 100
person-frames, fragmentations (a person's tracking is interrupted and resumes), coverage (fraction of person-frames
with a track id), and per track id its lifetime (first to last frame it was output, inclusive) — the only metric
available without ground truth (:func:`lifetime_metrics`).

Numpy (and the estimator for the rendered / video sources); ``metrabs-ros evaluate-tracking`` prints them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from metrabs_ros.camera import CameraModel
from metrabs_ros.person_appearance import appearance_descriptors
from metrabs_ros.tracking import PersonTracker, linear_assignment, box_iou


@dataclasses.dataclass
class WalkerPath:
    """One person of a sequence: straight walk on the ground plane (world X right, Z forward, mm)."""

    start_xz_mm: np.ndarray
    end_xz_mm: np.ndarray
    start_s: float
    speed_mm_s: float
    pause_at_fraction: float      # where along the path it pauses (ignored if pause_s == 0)
    pause_s: float
    height_mm: float
    seed: int                      # body appearance seed

    @property
    def length_mm(self) -> float:
        return float(np.linalg.norm(self.end_xz_mm - self.start_xz_mm))

    def position_at(self, t_s: float) -> Optional[np.ndarray]:
        """Ground position at time ``t_s``, None before the start or after the end of the walk."""
        walk_s = self.length_mm / self.speed_mm_s
        local = t_s - self.start_s
        pause_start = walk_s * self.pause_at_fraction
        if local < 0 or local > walk_s + self.pause_s:
            return None
        moving = local if local < pause_start else max(pause_start, local - self.pause_s)
        fraction = min(moving / walk_s, 1.0)
        return self.start_xz_mm + fraction * (self.end_xz_mm - self.start_xz_mm)


@dataclasses.dataclass
class GroundTruthFrame:
    time_s: float
    ids: np.ndarray                 # int64 [G] identities of the people at least partly in view
    roots_mm: np.ndarray            # [G, 3] joint centroid, camera frame
    boxes_xywh_px: np.ndarray       # [G, 4]
    visible_fraction: np.ndarray    # [G] fraction of the box inside the image and not covered by nearer people
    placements: list                # synthetic_scene.PersonPlacement per person (for rendering)


@dataclasses.dataclass
class WalkSequence:
    camera: CameraModel
    image_hw: tuple
    camera_height_mm: float
    camera_pitch_deg: float
    fps: float
    frames: List[GroundTruthFrame]


@dataclasses.dataclass
class Detections:
    """One frame's detections (what a tracker sees) and, where known, the true identity of each."""

    time_s: float
    roots_mm: np.ndarray            # [P, 3]
    boxes_xywh_px: np.ndarray       # [P, 4]
    scores: np.ndarray              # [P]
    gt_ids: Optional[np.ndarray]    # int64 [P], -1 = false positive; None without ground truth
    appearance: Optional[np.ndarray] = None   # [P, D] colour descriptors (person_appearance); None: not computed


# ---------------------------------------------------------------------------------------------------------------
# Sequences
# ---------------------------------------------------------------------------------------------------------------

def crossing_walks(seed: int, num_frames: int = 300, fps: float = 15.0, num_people: int = 10,
                   image_hw=(480, 640), fov_degrees: float = 55.0) -> WalkSequence:
    """People walking across the view in both directions at 3-9 m (crossings, occlusions, pauses), seeded."""
    from metrabs_ros import synthetic_scene as ss

    rng = np.random.default_rng(seed)
    camera = CameraModel.create(image_hw=image_hw, fov_degrees=fov_degrees)
    cam_h, pitch = float(rng.uniform(1300, 1900)), float(rng.uniform(3, 12))
    world_to_camera = ss.world_to_camera_rotation(pitch)
    half_fov_tan = (image_hw[1] / 2) / camera.intrinsic_matrix[0, 0]
    duration_s = num_frames / fps
    paths = []
    for i in range(num_people):                                 # loop over people
        z0, z1 = rng.uniform(3000, 9000, 2)
        side = 1.0 if i % 2 == 0 else -1.0                      # alternate directions: paths cross
        x0, x1 = -side * (z0 * half_fov_tan + 600), side * (z1 * half_fov_tan + 600)
        speed = rng.uniform(600, 1500)
        walk_s = math.hypot(x1 - x0, z1 - z0) / speed
        start = rng.uniform(-0.4 * walk_s, max(duration_s - 0.6 * walk_s, 0.0))
        pause = float(rng.uniform(1.0, 2.5)) if rng.uniform() < 0.3 else 0.0
        paths.append(WalkerPath(np.array([x0, z0]), np.array([x1, z1]), float(start), float(speed),
                                float(rng.uniform(0.3, 0.7)), pause, float(rng.uniform(1550, 1950)),
                                int(rng.integers(1 << 30))))
    bodies = [ss.random_body(np.random.default_rng(p.seed)) for p in paths]
    for body, p in zip(bodies, paths):
        body.height_mm = p.height_mm
    frames = []
    for f in range(num_frames):                                 # loop over frames
        t = f / fps
        placements, ids = [], []
        for i, (p, body) in enumerate(zip(paths, bodies)):
            xz = p.position_at(t)
            if xz is None:
                continue
            heading = p.end_xz_mm - p.start_xz_mm
            yaw = math.atan2(heading[0], -heading[1])
            moving = p.pause_s == 0 or not (p.pause_at_fraction * p.length_mm / p.speed_mm_s
                                            < t - p.start_s < p.pause_at_fraction * p.length_mm / p.speed_mm_s
                                            + p.pause_s)
            phase = 2 * math.pi * p.speed_mm_s * t / (0.72 * p.height_mm) if moving else 0.0
            angles = ss.walking_pose(phase) if moving else ss.standing_pose(np.random.default_rng(p.seed))
            placements.append(ss.PersonPlacement(angles, body, (float(xz[0]), float(xz[1])), yaw,
                                                 pose_kind='walking'))
            ids.append(i)
        frames.append(_ground_truth(t, ids, placements, camera, image_hw, world_to_camera, cam_h))
    return WalkSequence(camera, tuple(image_hw), cam_h, pitch, fps, frames)


def _ground_truth(t, ids, placements, camera, image_hw, world_to_camera, cam_h) -> GroundTruthFrame:
    from metrabs_ros import synthetic_scene as ss

    roots, boxes, depths = [], [], []
    for placement in placements:
        joints, _ = ss.pose_person(placement.angles_rad, placement.body, placement.ground_xz_mm,
                                   placement.yaw_rad, world_to_camera, cam_h)
        px = camera.project_px(joints)
        x0, y0 = px.min(axis=0)
        x1, y1 = px.max(axis=0)
        height = y1 - y0
        # joints -> body extent: the head top is ~12 % of the body above the head joint, limbs have width
        boxes.append([x0 - 0.08 * height, y0 - 0.12 * height, (x1 - x0) + 0.16 * height, 1.16 * height])
        roots.append(joints.mean(axis=0))
        depths.append(joints[:, 2].mean())
    boxes = np.array(boxes, np.float64).reshape(-1, 4)
    visible = visible_fractions(boxes, np.array(depths), image_hw)
    keep = visible > 0
    return GroundTruthFrame(t, np.array(ids, np.int64)[keep], np.array(roots).reshape(-1, 3)[keep], boxes[keep],
                            visible[keep], [p for p, k in zip(placements, keep) if k])


def visible_fractions(boxes_xywh_px: np.ndarray, depths_mm: np.ndarray, image_hw, cell_px: int = 4) -> np.ndarray:
    """Fraction of each box inside the image and not covered by the boxes of nearer people (coarse raster)."""
    h, w = (int(math.ceil(s / cell_px)) for s in image_hw)
    owner = np.full((h, w), -1, np.int64)
    for i in np.argsort(-np.asarray(depths_mm)):                # far to near: nearer people paint over
        x, y, bw, bh = boxes_xywh_px[i] / cell_px
        owner[max(int(y), 0):max(int(math.ceil(y + bh)), 0), max(int(x), 0):max(int(math.ceil(x + bw)), 0)] = i
    area = np.maximum(np.ceil(boxes_xywh_px[:, 2] / cell_px) * np.ceil(boxes_xywh_px[:, 3] / cell_px), 1.0)
    counts = np.bincount(owner[owner >= 0], minlength=len(boxes_xywh_px))[:len(boxes_xywh_px)]
    return np.clip(counts / area, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# Detection sources
# ---------------------------------------------------------------------------------------------------------------

def simulated_detections(sequence: WalkSequence, seed: int, miss_probability: float = 0.03,
                         dropouts_per_person_s: float = 0.25, false_positives_per_frame: float = 0.2,
                         depth_bias_fraction: float = 0.08, depth_jitter_fraction=(0.02, 0.15),
                         lateral_jitter_mm: float = 30.0, box_jitter_fraction: float = 0.03) -> List[Detections]:
    """A seeded detector model on the ground truth of ``sequence`` (see the module docstring)."""
    rng = np.random.default_rng([seed, 7])
    dt_s = 1.0 / sequence.fps
    bias = {}                                                   # per person: correlated relative depth error
    depth_jitter = {}                                           # per person: std of the relative depth jitter
    dropout_until = {}
    k = sequence.camera.intrinsic_matrix
    out = []
    for frame in sequence.frames:                               # loop over frames
        roots, boxes, scores, gt_ids = [], [], [], []
        for g, person in enumerate(frame.ids):
            person = int(person)
            b = bias.get(person, rng.normal(0, depth_bias_fraction))
            rho = math.exp(-dt_s / 2.0)                         # correlation time 2 s
            bias[person] = rho * b + math.sqrt(1 - rho ** 2) * rng.normal(0, depth_bias_fraction)
            if rng.uniform() < dropouts_per_person_s * dt_s:
                dropout_until[person] = frame.time_s + rng.integers(1, 6) * dt_s - 1e-9
            v = frame.visible_fraction[g]
            if v < 0.35 or frame.time_s <= dropout_until.get(person, -1.0) or rng.uniform() < miss_probability:
                continue
            if v < 0.65:
                if rng.uniform() < 0.2:
                    continue
                score = rng.uniform(0.12, 0.3)
            else:
                score = rng.uniform(0.12, 0.3) if rng.uniform() < 0.1 else rng.uniform(0.35, 0.9)
            root = frame.roots_mm[g]
            distance = float(np.linalg.norm(root))
            ray = root / distance
            depth_jitter.setdefault(person, rng.uniform(*depth_jitter_fraction))
            depth_error = distance * (bias[person] + rng.normal(0, depth_jitter[person]))
            lateral = rng.normal(0, lateral_jitter_mm, 3)
            lateral -= ray * (lateral @ ray)
            roots.append(root + ray * depth_error + lateral)
            box = frame.boxes_xywh_px[g]
            jitter = rng.normal(0, box_jitter_fraction * box[3], 4)
            boxes.append(box + jitter * np.array([1, 1, 1.3, 1.3]))
            scores.append(score)
            gt_ids.append(person)
        for _ in range(rng.poisson(false_positives_per_frame)):   # false positives
            h_px = rng.uniform(80, 250)
            box = np.array([rng.uniform(0, sequence.image_hw[1] - 0.4 * h_px),
                            rng.uniform(0, sequence.image_hw[0] - h_px), 0.4 * h_px, h_px])
            depth = k[1, 1] * 1700.0 / h_px
            centre = np.array([box[0] + box[2] / 2, box[1] + box[3] / 2])
            roots.append(np.array([(centre[0] - k[0, 2]) / k[0, 0] * depth, (centre[1] - k[1, 2]) / k[1, 1] * depth,
                                   depth]))
            boxes.append(box)
            scores.append(rng.uniform(0.3, 0.45) if rng.uniform() < 0.1 else rng.uniform(0.1, 0.3))
            gt_ids.append(-1)
        out.append(Detections(frame.time_s, np.array(roots, np.float64).reshape(-1, 3),
                              np.array(boxes, np.float64).reshape(-1, 4), np.array(scores, np.float64),
                              np.array(gt_ids, np.int64)))
    return out


def match_to_ground_truth(det_boxes_xywh_px: np.ndarray, gt_boxes_xywh_px: np.ndarray, gt_ids: np.ndarray,
                          min_iou: float = 0.5) -> np.ndarray:
    """Identity of each detection (``int64 [P]``, -1 = none) by optimal one-to-one box matching at IoU ≥ min_iou."""
    out = np.full(len(det_boxes_xywh_px), -1, np.int64)
    if len(det_boxes_xywh_px) and len(gt_boxes_xywh_px):
        iou = box_iou(det_boxes_xywh_px, gt_boxes_xywh_px)
        pairs = linear_assignment(np.where(iou >= min_iou, 1.0 - iou, np.inf))
        out[pairs[:, 0]] = np.asarray(gt_ids)[pairs[:, 1]]
    return out


def rendered_detections(sequence: WalkSequence, estimator, detector_threshold: float = 0.1,
                        progress=None) -> List[Detections]:
    """Render every frame of ``sequence`` and run ``estimator`` on it; identities by box IoU with the rendering."""
    from metrabs_ros import synthetic_scene as ss

    background = ss.render_background('checker', np.random.default_rng(0), sequence.camera, sequence.image_hw,
                                      ss.world_to_camera_rotation(sequence.camera_pitch_deg),
                                      sequence.camera_height_mm)
    out = []
    for frame in sequence.frames:                               # loop over frames
        scene = ss.compose_scene(frame.placements, sequence.camera, sequence.image_hw, sequence.camera_height_mm,
                                 sequence.camera_pitch_deg, background, time_s=frame.time_s)
        result = estimator.detect_poses(scene.image_rgb, camera=sequence.camera,
                                        detector_threshold=detector_threshold)
        seen = [i for i, p in enumerate(scene.people) if p.num_pixels > 0]
        gt_boxes = np.array([scene.people[i].box_xywh_px for i in seen]).reshape(-1, 4)
        gt_ids = match_to_ground_truth(result.boxes[:, :4], gt_boxes, frame.ids[seen])
        out.append(Detections(frame.time_s, result.poses3d_mm.mean(axis=1).astype(np.float64),
                              result.boxes[:, :4].astype(np.float64), result.boxes[:, 4].astype(np.float64),
                              gt_ids, appearance_descriptors(scene.image_rgb, result.boxes)))
        if progress is not None:
            progress.update()
    return out


def video_detections(path: str, estimator, detector_threshold: float = 0.1, max_frames: int = -1,
                     fov_degrees: float = 55.0, progress=None) -> List[Detections]:
    """The estimator on every frame of a video (times from the video's frame rate; no ground truth)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FileNotFoundError(f'cannot open video {path}')
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    out = []
    try:
        while max_frames < 0 or len(out) < max_frames:
            ok, frame_bgr = capture.read()
            if not ok:
                break
            image_rgb = np.ascontiguousarray(frame_bgr[..., ::-1])
            result = estimator.detect_poses(image_rgb, default_fov_degrees=fov_degrees,
                                            detector_threshold=detector_threshold)
            out.append(Detections(len(out) / fps, result.poses3d_mm.mean(axis=1).astype(np.float64),
                                  result.boxes[:, :4].astype(np.float64), result.boxes[:, 4].astype(np.float64),
                                  None, appearance_descriptors(image_rgb, result.boxes)))
            if progress is not None:
                progress.update()
    finally:
        capture.release()
    return out


def save_detections(path: str, detections: Sequence[Detections], recommended_threshold: float = float('nan')) -> None:
    """Cache detections in a ``.npz`` (the estimator is the slow part; trackers can be compared on the cache),
    with the detector's recommended score threshold."""
    counts = np.array([len(d.scores) for d in detections], np.int64)
    has_gt = all(d.gt_ids is not None for d in detections)
    np.savez_compressed(
        path, counts=counts, times_s=np.array([d.time_s for d in detections]),
        roots_mm=np.concatenate([d.roots_mm for d in detections]).reshape(-1, 3),
        boxes_xywh_px=np.concatenate([d.boxes_xywh_px for d in detections]).reshape(-1, 4),
        scores=np.concatenate([d.scores for d in detections]),
        gt_ids=np.concatenate([d.gt_ids for d in detections]) if has_gt else np.zeros(0, np.int64),
        appearance=(np.concatenate([d.appearance for d in detections]) if detections and all(
            d.appearance is not None for d in detections) else np.zeros((0, 1))),
        recommended_threshold=np.float64(recommended_threshold))


def load_detections(path: str) -> List[Detections]:
    """Detections saved by :func:`save_detections`."""
    data = np.load(path)
    splits = np.cumsum(data['counts'])[:-1]
    has_gt = len(data['gt_ids']) == int(data['counts'].sum()) and len(data['gt_ids']) > 0
    parts = [np.split(data[key], splits) for key in ('roots_mm', 'boxes_xywh_px', 'scores')]
    gts = np.split(data['gt_ids'], splits) if has_gt else [None] * len(data['counts'])
    has_appearance = 'appearance' in data.files and len(data['appearance']) == int(data['counts'].sum())
    appearance = np.split(data['appearance'], splits) if has_appearance else [None] * len(data['counts'])
    return [Detections(float(t), r, b, s, g, a)
            for t, r, b, s, g, a in zip(data['times_s'], *parts, gts, appearance)]


# ---------------------------------------------------------------------------------------------------------------
# Running a tracker and scoring it
# ---------------------------------------------------------------------------------------------------------------

def run_tracker(detections: Iterable[Detections], tracker: Optional[PersonTracker] = None) -> List[np.ndarray]:
    """The tracker's ids (``int64 [P]`` per frame, -1 = none) for a sequence of detections."""
    tracker = PersonTracker() if tracker is None else tracker
    return [tracker.update(d.roots_mm, d.time_s, d.boxes_xywh_px, d.scores, d.appearance) for d in detections]


def lifetime_metrics(track_ids_per_frame: Sequence[np.ndarray]) -> Dict[str, float]:
    """Per output id: lifetime = frames from its first to its last output (inclusive). Ground-truth free."""
    first, last, frames = {}, {}, {}
    for f, ids in enumerate(track_ids_per_frame):
        for i in ids[ids >= 0].tolist():
            first.setdefault(i, f)
            last[i] = f
            frames[i] = frames.get(i, 0) + 1
    lifetimes = np.array([last[i] - first[i] + 1 for i in first], np.float64)
    person_frames = sum(frames.values())
    # lifetime of the id carried by a random output person-frame (long tracks weigh with their length)
    weighted = np.repeat(lifetimes, [frames[i] for i in first]) if len(lifetimes) else np.zeros(0)
    return {'frames': len(track_ids_per_frame), 'ids': len(lifetimes), 'tracked_person_frames': person_frames,
            'median_id_lifetime_frames': float(np.median(lifetimes)) if len(lifetimes) else 0.0,
            'person_frame_median_id_lifetime_frames': float(np.median(weighted)) if len(weighted) else 0.0,
            'lifetimes_frames': lifetimes.tolist()}


def identity_metrics(ground_truth: Sequence[np.ndarray], detections: Sequence[Detections],
                     track_ids_per_frame: Sequence[np.ndarray]) -> Dict[str, float]:
    """ID switches per 100 person-frames, fragmentations, coverage and id lifetimes against ground truth.

    Args:
      ground_truth: per frame the identities (``int64 [G]``) of the people at least partly in view.
      detections: per frame the detections with their ``gt_ids``.
      track_ids_per_frame: per frame the tracker's id of each detection.
    """
    last_track = {}             # person -> track id when last tracked
    tracked_before = {}         # person -> tracked in the previous frame it was in view
    was_ever_tracked = set()
    switches = fragmentations = person_frames = tracked = false_tracked = 0
    track_people = {}           # track id -> set of people it was on
    for gt, det, ids in zip(ground_truth, detections, track_ids_per_frame):   # loop over frames
        person_frames += len(gt)
        of_person = {}
        for g, t in zip(det.gt_ids.tolist(), ids.tolist()):
            if t < 0:
                continue
            if g < 0:
                false_tracked += 1
                continue
            of_person[g] = t
            track_people.setdefault(t, set()).add(g)
        for person in gt.tolist():
            t = of_person.get(person)
            if t is not None:
                tracked += 1
                if person in last_track and last_track[person] != t:
                    switches += 1
                if person in was_ever_tracked and not tracked_before.get(person, False):
                    fragmentations += 1
                last_track[person] = t
                was_ever_tracked.add(person)
            tracked_before[person] = t is not None
    result = {'person_frames': person_frames, 'people': len(last_track) if last_track else 0,
              'id_switches': switches,
              'id_switches_per_100_person_frames': 100.0 * switches / max(person_frames, 1),
              'fragmentations': fragmentations,
              'fragmentations_per_100_person_frames': 100.0 * fragmentations / max(person_frames, 1),
              'coverage': tracked / max(person_frames, 1),
              'false_positive_tracked_frames': false_tracked,
              'ids_on_several_people': sum(len(p) > 1 for p in track_people.values())}
    result.update(lifetime_metrics(track_ids_per_frame))
    return result


def combine_metrics(per_sequence: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """Totals over sequences (rates recomputed from the totals, lifetimes pooled over all ids)."""
    total = {key: sum(m[key] for m in per_sequence) for key in
             ('person_frames', 'id_switches', 'fragmentations', 'frames', 'ids', 'false_positive_tracked_frames',
              'ids_on_several_people')}
    frames = max(total['person_frames'], 1)
    total['id_switches_per_100_person_frames'] = 100.0 * total['id_switches'] / frames
    total['fragmentations_per_100_person_frames'] = 100.0 * total['fragmentations'] / frames
    total['coverage'] = sum(m['coverage'] * m['person_frames'] for m in per_sequence) / frames
    lifetimes = [life for m in per_sequence for life in m['lifetimes_frames']]
    total['median_id_lifetime_frames'] = float(np.median(lifetimes)) if lifetimes else 0.0
    return total


# ---------------------------------------------------------------------------------------------------------------
# Command line: metrabs-ros evaluate-tracking
# ---------------------------------------------------------------------------------------------------------------

def add_evaluate_tracking_parser(subparsers, add_model_args) -> None:
    """Register ``evaluate-tracking`` (``add_model_args`` adds the estimator options of the other commands)."""
    p = subparsers.add_parser(
        'evaluate-tracking', help='person tracker: ID switches, fragmentation and id lifetimes on synthetic '
                                  'sequences with ground-truth ids, or id lifetimes on a video')
    p.add_argument('--video', help='a real video (no ground truth: id lifetimes only); default: synthetic sequences')
    p.add_argument('--source', default='simulated', choices=('simulated', 'rendered'),
                   help='synthetic detections: a seeded detector model on the ground truth (fast), or the frames '
                        'rendered and run through the estimator (slow)')
    p.add_argument('--sequences', type=int, default=10, help='synthetic sequences (seeds seed..seed+N-1)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--frames', type=int, default=300, help='frames per synthetic sequence / at most from the video')
    p.add_argument('--fps', type=float, default=15.0, help='frame rate of the synthetic sequences')
    p.add_argument('--people', type=int, default=10, help='people walking through each synthetic sequence')
    p.add_argument('--detections', help='.npz cache of the estimator detections (video or rendered): read if it '
                                        'exists, else written')
    p.add_argument('--detector-threshold', type=float, default=0.1,
                   help='detector threshold for the estimator (low: the tracker uses low-score detections)')
    p.add_argument('--fov', type=float, default=55.0, help='assumed field of view (deg) of the video')
    p.add_argument('--min-lifetime', type=int, default=30, help='video: also report ids living at least this long')
    p.add_argument('--min-hits', type=int, default=3)
    p.add_argument('--max-age-s', type=float, default=2.0)
    p.add_argument('--high-score', type=float, default=None,
                   help="detections that start tracks (default: the detector's recommended threshold, 0.3 for "
                        "simulated detections)")
    p.add_argument('--low-score', type=float, default=0.1)
    p.add_argument('--no-appearance', action='store_true', help='track without the colour descriptors')
    p.add_argument('--json', help='write the metrics as JSON')
    add_model_args(p)
    p.set_defaults(func=cmd_evaluate_tracking)


def _tracker_from_args(args, high_score: float) -> PersonTracker:
    return PersonTracker(max_age_s=args.max_age_s, min_hits=args.min_hits, high_score=high_score,
                         low_score=args.low_score)


def _estimator_from_args(args):
    from metrabs_ros.estimator import PoseEstimator
    return PoseEstimator(args.model, args.detector, backend=args.backend, num_threads=args.threads,
                         detector_format=args.detector_format, torch_checkpoint=args.checkpoint,
                         precision=args.precision)


def _cached(path, make_estimator, make):
    """``(detections, the detector's recommended threshold)`` from the cache ``path`` if it exists, else made with
    a new estimator (and cached when ``path`` is given)."""
    import os
    if path and os.path.exists(path):
        data = np.load(path)
        threshold = float(data['recommended_threshold']) if 'recommended_threshold' in data.files else math.nan
        return load_detections(path), 0.3 if math.isnan(threshold) else threshold
    estimator = make_estimator()
    detections = make(estimator)
    threshold = float(estimator.detector.default_threshold)
    if path:
        save_detections(path, detections, threshold)
    return detections, threshold


def _print_metrics(label: str, m: Dict[str, float]) -> None:
    print(f"{label:>10}  {m['person_frames']:>7}  {m['id_switches']:>5}"
          f"  {m['id_switches_per_100_person_frames']:>10.2f}"
          f"  {m['fragmentations_per_100_person_frames']:>9.2f}  {m['coverage']:>8.3f}  {m['ids']:>4}"
          f"  {m['median_id_lifetime_frames']:>8.1f}")


def cmd_evaluate_tracking(args) -> int:
    import json
    from pathlib import Path

    def describe(high_score):
        return (f'min_hits={args.min_hits} max_age_s={args.max_age_s:g} high_score={high_score:g} '
                f'low_score={args.low_score:g}')

    if args.video:
        detections, recommended = _cached(args.detections, lambda: _estimator_from_args(args), lambda e: (
            video_detections(args.video, e, args.detector_threshold, args.frames, args.fov)))
        high_score = args.high_score if args.high_score is not None else recommended
        if args.no_appearance:
            detections = [dataclasses.replace(d, appearance=None) for d in detections]
        ids = run_tracker(detections, _tracker_from_args(args, high_score))
        m = lifetime_metrics(ids)
        lifetimes = np.array(m.pop('lifetimes_frames'))
        long_lived = lifetimes[lifetimes >= args.min_lifetime]
        m['ids_living_at_least_min_lifetime'] = int(len(long_lived))
        m['median_lifetime_of_those_frames'] = float(np.median(long_lived)) if len(long_lived) else 0.0
        m['detections_per_frame'] = float(np.mean([len(d.scores) for d in detections])) if detections else 0.0
        m['high_score_detections_per_frame'] = float(np.mean([np.sum(d.scores >= high_score) for d in detections]))
        appearance = 'off' if args.no_appearance or detections[0].appearance is None else 'on'
        print(f'{args.video}: {m["frames"]} frames, {m["high_score_detections_per_frame"]:.2f} detections/frame '
              f'>= {high_score:g} ({m["detections_per_frame"]:.2f} >= {args.detector_threshold:g}); '
              f'tracker {describe(high_score)}, appearance {appearance}')
        print(f'  ids handed out: {m["ids"]}; tracked person-frames: {m["tracked_person_frames"]}')
        print(f'  median id lifetime (all ids): {m["median_id_lifetime_frames"]:.1f} frames')
        print(f'  median id lifetime per tracked person-frame: {m["person_frame_median_id_lifetime_frames"]:.1f} '
              f'frames')
        print(f'  ids living >= {args.min_lifetime} frames: {m["ids_living_at_least_min_lifetime"]} '
              f'(median {m["median_lifetime_of_those_frames"]:.1f} frames)')
    else:
        per_sequence = []
        estimator = []                                          # made once, on the first rendered sequence

        def make_estimator():
            if not estimator:
                estimator.append(_estimator_from_args(args))
            return estimator[0]

        high_score = args.high_score
        for seed in range(args.seed, args.seed + args.sequences):     # loop over sequences
            sequence = crossing_walks(seed, args.frames, args.fps, args.people)
            if args.source == 'rendered':
                cache = f'{args.detections}.{seed}.npz' if args.detections else None
                detections, recommended = _cached(cache, make_estimator, lambda e: rendered_detections(
                    sequence, e, args.detector_threshold))
            else:
                detections, recommended = simulated_detections(sequence, seed), 0.3
            if high_score is None:
                high_score = recommended
            if args.no_appearance:
                detections = [dataclasses.replace(d, appearance=None) for d in detections]
            if seed == args.seed:
                print(f'synthetic crossing walks, {args.source} detections, {args.people} people, {args.frames} '
                      f'frames at {args.fps:g} fps; tracker {describe(high_score)}')
                print(f"{'seed':>10}  {'p-frames':>7}  {'IDsw':>5}  {'IDsw/100':>10}  {'frag/100':>9}  "
                      f"{'coverage':>8}  {'ids':>4}  {'lifetime':>8}")
            ids = run_tracker(detections, _tracker_from_args(args, high_score))
            per_sequence.append(identity_metrics([f.ids for f in sequence.frames], detections, ids))
            _print_metrics(str(seed), per_sequence[-1])
        m = combine_metrics(per_sequence)
        _print_metrics('all', m)
        print(f"ID switches per 100 person-frames: {m['id_switches_per_100_person_frames']:.2f} (target <= 1); "
              f"fragmentations per 100: {m['fragmentations_per_100_person_frames']:.2f}; "
              f"median id lifetime: {m['median_id_lifetime_frames']:.1f} frames; coverage {m['coverage']:.3f}")
        for item in per_sequence:
            item.pop('lifetimes_frames', None)
        m['sequences'] = per_sequence
    if args.json:
        Path(args.json).write_text(json.dumps(m, indent=2))
    return 0
