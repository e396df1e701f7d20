"""Stable person ids across frames: a multi-object tracker on the 3D root and the 2D box of each person.

Each track carries two constant-velocity Kalman filters:

* the 3D root (the caller's choice, e.g. the joint centroid), camera frame, **mm** and **mm/s**; its measurement
  noise is anisotropic: small across the viewing ray, large along it (monocular depth is the uncertain part);
* the 2D box centre and size (x-centre, y-centre, width, height), **px** and **px/s**, noise scaled by the box
  height.

Time comes from the caller's stamps (**s**; any rate, gaps allowed); time going backwards resets the tracker.

Optionally each track also keeps a colour descriptor (:mod:`metrabs_ros.person_appearance`) when the caller
passes descriptors.

A frame's detections are associated ByteTrack-style in stages, each solved as an optimal (Hungarian) assignment on
``cost = min(d²/gate, 2) + (1 - IoU) + w · appearance distance`` where ``d²`` is the 3D Mahalanobis distance of the
root innovation and IoU that of the predicted and detected boxes:

1. high-score detections (``score >= high_score``) with the confirmed tracks seen in the previous frame;
2. the high-score detections left with the *lost* confirmed tracks (recent tracks choose first: a lost track's
   grown uncertainty would otherwise make it the cheaper match for a person walking in front of where it was lost);
3. the low-score detections (``low_score <= score < high_score``: partly occluded or blurred people) with the
   tracks of stage 1 left over — they keep a track alive but never start one;
4. the remaining high-score detections with the tentative tracks.

A pair is allowed when the root is inside the 3D gate (chi-square, 3 dof) and the boxes overlap (IoU ≥
``min_iou``; not required for a track that missed frames, whose box prediction drifts), or when the boxes overlap
strongly (IoU ≥ ``strong_iou``: a wrong depth estimate does not break a track that the image clearly continues);
and always only inside the motion gate (the box centre within reach of the track's last detected box, reach
growing with the time unseen at walking speed) and, with descriptors, the appearance gate.
High-score detections left over start tentative tracks. Birth/death hysteresis: a tentative track is confirmed
(and gets its id) after ``min_hits`` consecutive hits and dies at its first miss; a confirmed track that misses is
*lost*, coasts on its prediction, and can be re-associated until it has been unseen for more than ``max_age_s``.

Ids are consecutive integers handed out at confirmation and never reused. ``update`` returns one id per detection:
the id of its confirmed track, or -1 (tentative track, low-score detection that continues no track, or a score
below ``low_score``). With ``min_hits=1`` every high-score detection gets an id in its first frame.

Numpy only; a frame costs O((P + T)³) for the assignment of P detections and T tracks (tiny: people in view).
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import numpy as np

# ---------------------------------------------------------------------------------------------------------------
# Constant-velocity Kalman filter (state = [position (n), velocity (n)])
# ---------------------------------------------------------------------------------------------------------------


def constant_velocity_transition(dt_s: float, dims: int) -> np.ndarray:
    """State transition ``F [2n, 2n]`` of a constant-velocity model over ``dt_s`` seconds."""
    f = np.eye(2 * dims)
    f[:dims, dims:] = dt_s * np.eye(dims)
    return f


def constant_velocity_process_noise(dt_s: float, accel_sigma: np.ndarray) -> np.ndarray:
    """Process noise ``Q [2n, 2n]`` of a white-noise acceleration of std ``accel_sigma [n]`` (units/s²) per axis."""
    q = np.asarray(accel_sigma, np.float64) ** 2
    dims = len(q)
    out = np.zeros((2 * dims, 2 * dims))
    idx = np.arange(dims)
    out[idx, idx] = q * dt_s ** 4 / 4
    out[idx, idx + dims] = out[idx + dims, idx] = q * dt_s ** 3 / 2
    out[idx + dims, idx + dims] = q * dt_s ** 2
    return out


def kalman_predict(mean: np.ndarray, cov: np.ndarray, dt_s: float,
                   accel_sigma: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Constant-velocity prediction of ``(mean [2n], cov [2n, 2n])`` by ``dt_s`` seconds."""
    f = constant_velocity_transition(dt_s, len(mean) // 2)
    return f @ mean, f @ cov @ f.T + constant_velocity_process_noise(dt_s, accel_sigma)


def innovation(mean: np.ndarray, cov: np.ndarray, measured: np.ndarray,
               noise_cov: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Innovation ``y = z - H x`` and its covariance ``S = H P Hᵀ + R`` for a position measurement."""
    n = len(measured)
    return measured - mean[:n], cov[:n, :n] + noise_cov


def kalman_update(mean: np.ndarray, cov: np.ndarray, measured: np.ndarray,
                  noise_cov: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Kalman update with a measurement of the position part (``H = [I 0]``), Joseph form (stays symmetric PSD)."""
    n = len(measured)
    y, s = innovation(mean, cov, measured, noise_cov)
    gain = np.linalg.solve(s, cov[:n, :]).T                     # K = P Hᵀ S⁻¹ (S symmetric)
    i_kh = np.eye(len(mean))
    i_kh[:, :n] -= gain
    new_cov = i_kh @ cov @ i_kh.T + gain @ noise_cov @ gain.T
    return mean + gain @ y, 0.5 * (new_cov + new_cov.T)


# ---------------------------------------------------------------------------------------------------------------
# Association helpers
# ---------------------------------------------------------------------------------------------------------------


def box_iou(boxes_a_xywh: np.ndarray, boxes_b_xywh: np.ndarray) -> np.ndarray:
    """Intersection over union ``[A, B]`` of boxes given as x, y (top-left), width, height (px)."""
    a = np.asarray(boxes_a_xywh, np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b_xywh, np.float64).reshape(-1, 4)
    ax1, ay1, ax2, ay2 = a[:, 0:1], a[:, 1:2], a[:, 0:1] + a[:, 2:3], a[:, 1:2] + a[:, 3:4]
    bx1, by1, bx2, by2 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0, None)
    inter = iw * ih
    union = a[:, 2:3] * a[:, 3:4] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def linear_assignment(cost: np.ndarray) -> np.ndarray:
    """Minimum-cost assignment of a rectangular ``cost [R, C]`` matrix (Hungarian method, shortest augmenting path
    with potentials, O(n³)); ``inf`` entries are forbidden pairs.

    Returns ``int64 [K, 2]`` (row, column) pairs, K ≤ min(R, C): a complete assignment of the smaller side as far
    as the finite entries allow, and among those of maximal size one with the least total cost.
    """
    cost = np.asarray(cost, np.float64)
    rows, cols = cost.shape
    if rows == 0 or cols == 0:
        return np.zeros((0, 2), np.int64)
    transposed = rows > cols
    c = cost.T if transposed else cost
    n, m = c.shape                                                  # n ≤ m
    finite = np.isfinite(c)
    # Forbidden pairs cost more than any complete assignment of allowed ones: maximal matching first, then cost.
    big = (np.abs(c[finite]).sum() + 1.0) * (n + 1) if finite.any() else 1.0
    a = np.where(finite, c, big)
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    match_col = np.zeros(m + 1, np.int64)                           # row (1-based) matched to each column; 0 = free
    for i in range(1, n + 1):                                       # one augmenting path per row
        match_col[0] = i
        j0 = 0
        min_to = np.full(m + 1, np.inf)
        way = np.zeros(m + 1, np.int64)
        used = np.zeros(m + 1, bool)
        while True:
            used[j0] = True
            i0 = match_col[j0]
            reduced = a[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (reduced < min_to[1:])
            min_to[1:][better] = reduced[better]
            way[1:][better] = j0
            candidates = np.where(free, min_to[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[match_col[used]] += delta
            v[used] -= delta
            min_to[1:][free] -= delta
            j0 = j1
            if match_col[j0] == 0:
                break
        while j0:                                                   # flip the augmenting path
            j1 = way[j0]
            match_col[j0] = match_col[j1]
            j0 = j1
    pairs = [(match_col[j] - 1, j - 1) for j in range(1, m + 1) if match_col[j] > 0]
    pairs = np.array([(r, col) for r, col in pairs if finite[r, col]], np.int64).reshape(-1, 2)
    if transposed:
        pairs = pairs[:, ::-1]
    return pairs[np.argsort(pairs[:, 0], kind='stable')]


def ray_aligned_covariance(point_mm: np.ndarray, lateral_sigma_mm: float, depth_sigma_mm: float) -> np.ndarray:
    """Covariance ``[3, 3]`` (mm²) of a camera-frame point: ``depth_sigma_mm`` along the viewing ray through it,
    ``lateral_sigma_mm`` across."""
    norm = float(np.linalg.norm(point_mm))
    ray = point_mm / norm if norm > 1e-9 else np.array([0.0, 0.0, 1.0])
    return lateral_sigma_mm ** 2 * np.eye(3) + (depth_sigma_mm ** 2 - lateral_sigma_mm ** 2) * np.outer(ray, ray)


def _xywh_to_cxcywh(box):
    return np.array([box[0] + box[2] / 2, box[1] + box[3] / 2, box[2], box[3]], np.float64)


def _cxcywh_to_xywh(state):
    return np.array([state[0] - state[2] / 2, state[1] - state[3] / 2, state[2], state[3]], np.float64)


# ---------------------------------------------------------------------------------------------------------------
# Tracker
# ---------------------------------------------------------------------------------------------------------------

TENTATIVE, CONFIRMED = 'tentative', 'confirmed'


@dataclasses.dataclass
class Track:
    """One tracked person. ``id`` is -1 until the track is confirmed."""

    id: int
    root_mean: np.ndarray            # [6] root position (mm) and velocity (mm/s), camera frame
    root_cov: np.ndarray             # [6, 6]
    box_mean: Optional[np.ndarray]   # [8] box centre x, y, width, height (px) and their rates (px/s); None: no boxes
    box_cov: Optional[np.ndarray]    # [8, 8]
    first_seen_s: float
    last_seen_s: float
    last_box_xywh_px: Optional[np.ndarray] = None   # the last detected box (for the motion gate)
    appearance: Optional[np.ndarray] = None         # running colour descriptor (person_appearance), unit norm
    hits: int = 1                    # consecutive frames with a detection (tentative) / all hits (confirmed)
    missed_frames: int = 0           # frames without a detection since the last hit
    state: str = TENTATIVE

    @property
    def root_mm(self) -> np.ndarray:
        return self.root_mean[:3]

    @property
    def velocity_mm_s(self) -> np.ndarray:
        return self.root_mean[3:]

    @property
    def box_xywh_px(self) -> Optional[np.ndarray]:
        return None if self.box_mean is None else _cxcywh_to_xywh(self.box_mean)


class PersonTracker:
    """Assigns stable integer ids to the people of consecutive frames (see the module docstring).

    Args:
      max_age_s: a confirmed track unseen for longer than this ends (its id is never reused).
      min_hits: consecutive frames with a detection before a new track is confirmed and gets an id (1 = at once).
      high_score: detections at or above this score match every track and start new tracks.
      low_score: detections in ``[low_score, high_score)`` only continue confirmed tracks; below: ignored.
      gate_chi2: 3D gate on the squared Mahalanobis distance of the root innovation (3 dof; 16.3 = 99.9 %).
      min_iou: box overlap needed for a match with a track seen in the previous frame.
      strong_iou: box overlap that allows a match whatever the 3D distance.
      root_lateral_sigma_mm: measurement noise of the root across the viewing ray.
      root_depth_sigma_mm, root_depth_sigma_fraction: noise along the ray: ``max(sigma_mm, fraction · distance)``.
      root_accel_sigma_mm_s2: process noise, a random acceleration of people (mm/s²).
      root_velocity_sigma_mm_s: initial velocity uncertainty of a new track.
      box_sigma_fraction: measurement noise of box centre and size, as a fraction of the box height.
      box_accel_sigma_fraction_s2: process noise of the box, fraction of the box height per s².
      max_box_speed_heights_s, max_box_jump_heights: motion gate in the image: the detected box centre must lie
        within ``(jump + speed · time unseen)`` box heights of the track's last detected box, and the box height
        within a factor ``1 + jump + speed · time unseen`` (walking at 1.3 m/s is ~0.75 body heights per second;
        bounds what a lost track with a grown covariance may take over).
      low_score_max_missed_frames: low-score detections continue tracks unseen for at most this many frames
        (0 = only tracks seen in the previous frame, as ByteTrack).
      appearance_weight: weight of the appearance distance (``1 - Bhattacharyya coefficient`` of the colour
        descriptors, :mod:`metrabs_ros.person_appearance`) in the cost, when descriptors are given.
      max_appearance_distance: pairs whose appearance differs more are not matched (same person across frames:
        ≤ 0.12 in 99 % of cases on vtest.avi; different people: median 0.27).
      appearance_momentum: the track's descriptor is ``m · old + (1 - m) · new`` (renormalised) per high-score hit.
    """

    def __init__(self, max_age_s: float = 2.0, min_hits: int = 3, high_score: float = 0.3, low_score: float = 0.1,
                 gate_chi2: float = 16.3, min_iou: float = 0.1, strong_iou: float = 0.6,
                 root_lateral_sigma_mm: float = 60.0, root_depth_sigma_mm: float = 250.0,
                 root_depth_sigma_fraction: float = 0.15, root_accel_sigma_mm_s2: float = 2500.0,
                 root_velocity_sigma_mm_s: float = 1500.0, box_sigma_fraction: float = 0.05,
                 box_accel_sigma_fraction_s2: float = 1.0, max_box_speed_heights_s: float = 0.8,
                 max_box_jump_heights: float = 0.3, low_score_max_missed_frames: int = 0,
                 appearance_weight: float = 2.0, max_appearance_distance: float = 0.18,
                 appearance_momentum: float = 0.9):
        if min_hits < 1:
            raise ValueError(f'min_hits must be >= 1, got {min_hits}')
        if low_score > high_score:
            raise ValueError(f'low_score ({low_score}) must not exceed high_score ({high_score})')
        self.max_age_s = float(max_age_s)
        self.min_hits = int(min_hits)
        self.high_score = float(high_score)
        self.low_score = float(low_score)
        self.gate_chi2 = float(gate_chi2)
        self.min_iou = float(min_iou)
        self.strong_iou = float(strong_iou)
        self.root_lateral_sigma_mm = float(root_lateral_sigma_mm)
        self.root_depth_sigma_mm = float(root_depth_sigma_mm)
        self.root_depth_sigma_fraction = float(root_depth_sigma_fraction)
        self.root_accel_sigma_mm_s2 = float(root_accel_sigma_mm_s2)
        self.root_velocity_sigma_mm_s = float(root_velocity_sigma_mm_s)
        self.box_sigma_fraction = float(box_sigma_fraction)
        self.box_accel_sigma_fraction_s2 = float(box_accel_sigma_fraction_s2)
        self.low_score_max_missed_frames = int(low_score_max_missed_frames)
        self.max_box_speed_heights_s = float(max_box_speed_heights_s)
        self.max_box_jump_heights = float(max_box_jump_heights)
        self.appearance_weight = float(appearance_weight)
        self.max_appearance_distance = float(max_appearance_distance)
        self.appearance_momentum = float(appearance_momentum)
        self.tracks: List[Track] = []
        self._next_id = 0
        self._time_s: Optional[float] = None
        self._appearance: Optional[np.ndarray] = None   # this frame's descriptors (during update)

    def reset(self) -> None:
        """Forget all tracks (ids keep increasing: an id is never handed out twice)."""
        self.tracks = []
        self._time_s = None

    @property
    def confirmed_tracks(self) -> List[Track]:
        return [t for t in self.tracks if t.state == CONFIRMED]

    # --- public -----------------------------------------------------------------------------------------------
    def update(self, roots_mm: np.ndarray, time_s: float, boxes_xywh_px: Optional[np.ndarray] = None,
               scores: Optional[np.ndarray] = None, appearance: Optional[np.ndarray] = None) -> np.ndarray:
        """Associate one frame's detections and return their ids, ``int64 [P]`` (-1: no confirmed track).

        Args:
          roots_mm: ``[P, 3]`` root of each person (e.g. the joint centroid), camera frame, mm.
          time_s: the frame's time stamp, seconds (the image stamp, not the processing time).
          boxes_xywh_px: ``[P, 4]`` or ``[P, 5]`` (x, y, width, height px [, score]) as the estimator returns them;
            None: association on the 3D root alone.
          scores: ``[P]`` detection confidences; default: column 5 of the boxes, else 1 (all high-score).
          appearance: ``[P, D]`` colour descriptors (:func:`metrabs_ros.person_appearance.appearance_descriptors`
            of the image and the boxes); None: no appearance cue.
        """
        roots = np.asarray(roots_mm, np.float64).reshape(-1, 3)
        num = len(roots)
        boxes = None
        if boxes_xywh_px is not None:
            raw = np.asarray(boxes_xywh_px, np.float64)
            raw = raw.reshape(num, raw.shape[-1] if raw.ndim == 2 else 4)
            boxes = raw[:, :4]
            if scores is None and raw.shape[1] >= 5:
                scores = raw[:, 4]
        scores = np.ones(num) if scores is None else np.asarray(scores, np.float64).reshape(num)
        self._appearance = None
        if appearance is not None:
            self._appearance = np.asarray(appearance, np.float64)
            self._appearance = self._appearance.reshape(num, self._appearance.shape[-1] if num else 0)
        time_s = float(time_s)
        if self._time_s is not None and time_s < self._time_s:
            self.reset()   # time went backwards (bag restarted, sim time reset): start over
        dt_s = 0.0 if self._time_s is None else time_s - self._time_s
        self._time_s = time_s
        self.tracks = [t for t in self.tracks if time_s - t.last_seen_s <= self.max_age_s]
        for track in self.tracks:
            self._predict(track, dt_s)

        valid = np.all(np.isfinite(roots), axis=1) & np.isfinite(scores)
        high = np.flatnonzero(valid & (scores >= self.high_score))
        low = np.flatnonzero(valid & (scores >= self.low_score) & (scores < self.high_score))
        active = [i for i, t in enumerate(self.tracks) if t.state == CONFIRMED and t.missed_frames == 0]
        lost = [i for i, t in enumerate(self.tracks) if t.state == CONFIRMED and t.missed_frames > 0]
        tentative = [i for i, t in enumerate(self.tracks) if t.state == TENTATIVE]
        track_of = np.full(num, -1, np.int64)                   # detection -> index into self.tracks

        # Tracks seen in the previous frame choose first: a lost track's grown uncertainty would otherwise make it
        # the cheaper match for a person who walks in front of where it was lost.
        left_high, left_active = self._associate(high, active, roots, boxes, track_of)
        left_high, _ = self._associate(left_high, lost, roots, boxes, track_of)
        left_low, _ = self._associate(low, left_active, roots, boxes, track_of)
        recent = [i for i in lost if i not in set(track_of.tolist())
                  and self.tracks[i].missed_frames <= self.low_score_max_missed_frames]
        self._associate(left_low, recent, roots, boxes, track_of)
        left_high, _ = self._associate(left_high, tentative, roots, boxes, track_of)

        matched = set(int(t) for t in track_of[track_of >= 0])
        for index in matched:
            self._correct(self.tracks[index], roots, boxes, track_of, index, time_s, scores)
        survivors = []
        for index, track in enumerate(self.tracks):
            if index not in matched:
                track.missed_frames += 1
                if track.state == TENTATIVE:
                    continue                                    # birth hysteresis: a miss ends a tentative track
            survivors.append(track)
        new_tracks = [self._new_track(roots[d], None if boxes is None else boxes[d], time_s) for d in left_high]
        for d, track in zip(left_high, new_tracks):
            self._update_appearance(track, d)
        ids = np.full(num, -1, np.int64)
        for d in np.flatnonzero(track_of >= 0):
            track = self.tracks[track_of[d]]
            ids[d] = track.id
        for d, track in zip(left_high, new_tracks):
            ids[d] = track.id
        self.tracks = survivors + new_tracks
        return ids

    def predicted_roots_mm(self, time_s: float) -> np.ndarray:
        """Predicted roots ``[T, 3]`` (mm) of the confirmed tracks at ``time_s`` (no state change)."""
        out = [kalman_predict(t.root_mean, t.root_cov, max(time_s - (self._time_s or time_s), 0.0),
                              np.full(3, self.root_accel_sigma_mm_s2))[0][:3] for t in self.confirmed_tracks]
        return np.array(out).reshape(-1, 3)

    # --- internals --------------------------------------------------------------------------------------------
    def _root_noise(self, root_mm: np.ndarray) -> np.ndarray:
        depth_sigma = max(self.root_depth_sigma_mm, self.root_depth_sigma_fraction * float(np.linalg.norm(root_mm)))
        return ray_aligned_covariance(root_mm, self.root_lateral_sigma_mm, depth_sigma)

    def _box_noise(self, box_state: np.ndarray) -> np.ndarray:
        return np.eye(4) * (self.box_sigma_fraction * max(float(box_state[3]), 1.0)) ** 2

    def _predict(self, track: Track, dt_s: float) -> None:
        if dt_s <= 0:
            return
        track.root_mean, track.root_cov = kalman_predict(
            track.root_mean, track.root_cov, dt_s, np.full(3, self.root_accel_sigma_mm_s2))
        if track.box_mean is not None:
            accel = self.box_accel_sigma_fraction_s2 * max(float(track.box_mean[3]), 1.0)
            track.box_mean, track.box_cov = kalman_predict(track.box_mean, track.box_cov, dt_s, np.full(4, accel))
            track.box_mean[2:4] = np.maximum(track.box_mean[2:4], 1.0)

    def _new_track(self, root_mm: np.ndarray, box_xywh: Optional[np.ndarray], time_s: float) -> Track:
        root_cov = np.zeros((6, 6))
        root_cov[:3, :3] = self._root_noise(root_mm)
        root_cov[3:, 3:] = np.eye(3) * self.root_velocity_sigma_mm_s ** 2
        box_mean = box_cov = None
        if box_xywh is not None and np.all(np.isfinite(box_xywh)):
            state = _xywh_to_cxcywh(box_xywh)
            box_mean = np.concatenate([state, np.zeros(4)])
            box_cov = np.zeros((8, 8))
            box_cov[:4, :4] = self._box_noise(state)
            box_cov[4:, 4:] = np.eye(4) * float(state[3]) ** 2      # rate uncertainty: one box height per second
        track = Track(-1, np.concatenate([root_mm, np.zeros(3)]), root_cov, box_mean, box_cov, time_s, time_s,
                      None if box_mean is None else np.array(box_xywh[:4], np.float64))
        self._maybe_confirm(track)
        return track

    def _maybe_confirm(self, track: Track) -> None:
        if track.state == TENTATIVE and track.hits >= self.min_hits:
            track.state = CONFIRMED
            track.id = self._next_id
            self._next_id += 1

    def _update_appearance(self, track: Track, d: int) -> None:
        if self._appearance is None or not self._appearance[d].any():
            return
        new = self._appearance[d]
        if track.appearance is not None:
            new = self.appearance_momentum * track.appearance + (1 - self.appearance_momentum) * new
        track.appearance = new / max(float(np.linalg.norm(new)), 1e-12)

    def _correct(self, track: Track, roots, boxes, track_of, index: int, time_s: float, scores) -> None:
        d = int(np.flatnonzero(track_of == index)[0])
        if scores[d] >= self.high_score:                     # low-score boxes are often partly someone else
            self._update_appearance(track, d)
        track.root_mean, track.root_cov = kalman_update(track.root_mean, track.root_cov, roots[d],
                                                        self._root_noise(roots[d]))
        if boxes is not None and np.all(np.isfinite(boxes[d])):
            track.last_box_xywh_px = np.array(boxes[d], np.float64)
            measured = _xywh_to_cxcywh(boxes[d])
            if track.box_mean is None:
                track.box_mean = np.concatenate([measured, np.zeros(4)])
                track.box_cov = np.diag(np.concatenate([np.diag(self._box_noise(measured)),
                                                        np.full(4, float(measured[3]) ** 2)]))
            else:
                track.box_mean, track.box_cov = kalman_update(track.box_mean, track.box_cov, measured,
                                                              self._box_noise(measured))
        track.hits += 1
        track.missed_frames = 0
        track.last_seen_s = time_s
        self._maybe_confirm(track)

    def _cost_matrix(self, detections, track_indices, roots, boxes) -> np.ndarray:
        """``[D, T]`` association cost (inf = not allowed)."""
        cost = np.full((len(detections), len(track_indices)), np.inf)
        for col, index in enumerate(track_indices):             # loop over tracks (a handful)
            track = self.tracks[index]
            for row, d in enumerate(detections):
                y, s = innovation(track.root_mean, track.root_cov, roots[d], self._root_noise(roots[d]))
                d2 = float(y @ np.linalg.solve(s, y))
                iou, has_boxes = 0.0, boxes is not None and track.box_mean is not None
                if has_boxes:
                    iou = float(box_iou(_cxcywh_to_xywh(track.box_mean), boxes[d])[0, 0])
                in_gate = d2 <= self.gate_chi2 and (
                    not has_boxes or iou >= self.min_iou or track.missed_frames > 0)
                if has_boxes and track.last_box_xywh_px is not None and not self._box_motion_plausible(
                        track.last_box_xywh_px, boxes[d], self._time_s - track.last_seen_s):
                    continue
                appearance = 0.0
                if self._appearance is not None and track.appearance is not None and self._appearance[d].any():
                    appearance = float(np.clip(1.0 - track.appearance @ self._appearance[d], 0.0, 1.0))
                    if appearance > self.max_appearance_distance:
                        continue
                if in_gate or (has_boxes and iou >= self.strong_iou):
                    cost[row, col] = (min(d2 / self.gate_chi2, 2.0) + (1.0 - iou if has_boxes else 1.0)
                                      + self.appearance_weight * appearance)
        return cost

    def _box_motion_plausible(self, last_box, box, unseen_s: float) -> bool:
        reach = self.max_box_jump_heights + self.max_box_speed_heights_s * max(unseen_s, 0.0)
        height = max(float(last_box[3]), float(box[3]), 1.0)
        centre_shift = np.hypot(box[0] + box[2] / 2 - last_box[0] - last_box[2] / 2,
                                box[1] + box[3] / 2 - last_box[1] - last_box[3] / 2)
        ratio = max(float(box[3]), 1.0) / max(float(last_box[3]), 1.0)
        return centre_shift <= reach * height and 1.0 / (1.0 + reach) <= ratio <= 1.0 + reach

    def _associate(self, detections, track_indices, roots, boxes, track_of):
        """Assign ``detections`` to ``track_indices``; writes ``track_of``; returns the leftovers of both."""
        detections, track_indices = list(detections), list(track_indices)
        if not detections or not track_indices:
            return detections, track_indices
        pairs = linear_assignment(self._cost_matrix(detections, track_indices, roots, boxes))
        for row, col in pairs:
            track_of[detections[row]] = track_indices[col]
        used_rows, used_cols = set(pairs[:, 0].tolist()), set(pairs[:, 1].tolist())
        return ([d for r, d in enumerate(detections) if r not in used_rows],
                [t for c, t in enumerate(track_indices) if c not in used_cols])
