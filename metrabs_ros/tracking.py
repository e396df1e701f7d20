"""Stable person ids across frames: a small 3D tracker on the people's metric positions.

Each track keeps the camera-frame centre (mean of the joints, mm) and a velocity; a new frame's people are matched
to the tracks' predicted centres by greedy nearest-neighbour assignment within a gate that grows with the time
since the track was last seen. Unmatched people start new tracks (new ids, never reused); tracks unseen for longer
than ``max_age_s`` end. Works with any skeleton (it uses the joint centroid) and costs O(P·T) per frame.
"""

from __future__ import annotations

import dataclasses
from typing import List

import numpy as np


@dataclasses.dataclass
class Track:
    id: int
    position_mm: np.ndarray
    velocity_mm_s: np.ndarray
    last_seen_s: float
    hits: int = 1


class PersonTracker:
    """Assigns stable integer ids to the people of consecutive frames.

    Args:
      gate_mm: maximum distance between a predicted track position and a person for a match, at dt = 0.
      gate_growth_mm_s: how much the gate widens per second since the track was last seen (people move ~1.5 m/s).
      max_age_s: a track not matched for longer than this is dropped.
      velocity_smoothing: exponential smoothing factor of the velocity estimate (0 = none, 1 = frozen).
    """

    def __init__(self, gate_mm: float = 700.0, gate_growth_mm_s: float = 2000.0, max_age_s: float = 1.0,
                 velocity_smoothing: float = 0.5):
        self.gate_mm = float(gate_mm)
        self.gate_growth_mm_s = float(gate_growth_mm_s)
        self.max_age_s = float(max_age_s)
        self.velocity_smoothing = float(velocity_smoothing)
        self.tracks: List[Track] = []
        self._next_id = 0

    def reset(self) -> None:
        self.tracks = []

    def update(self, centres_mm: np.ndarray, time_s: float) -> np.ndarray:
        """Ids ``int64 [P]`` for the people whose centres (``[P, 3]`` mm, camera frame) were seen at ``time_s``."""
        centres = np.asarray(centres_mm, np.float64).reshape(-1, 3)
        if self.tracks and time_s < max(t.last_seen_s for t in self.tracks):
            self.reset()   # time went backwards (bag restarted, sim time reset): start over
        self.tracks = [t for t in self.tracks if time_s - t.last_seen_s <= self.max_age_s]
        ids = np.full(len(centres), -1, np.int64)
        if self.tracks and len(centres):
            dt = np.array([time_s - t.last_seen_s for t in self.tracks])
            predicted = np.stack([t.position_mm + t.velocity_mm_s * d for t, d in zip(self.tracks, dt)])
            gates = self.gate_mm + self.gate_growth_mm_s * dt
            distances = np.linalg.norm(centres[:, None] - predicted[None], axis=-1)      # [P, T]
            distances = np.where(distances <= gates[None], distances, np.inf)
            used_tracks = set()
            for flat in np.argsort(distances, axis=None):   # greedy, nearest pairs first
                person, track = np.unravel_index(flat, distances.shape)
                if not np.isfinite(distances[person, track]):
                    break
                if ids[person] >= 0 or track in used_tracks:
                    continue
                used_tracks.add(track)
                self._update_track(self.tracks[track], centres[person], time_s)
                ids[person] = self.tracks[track].id
        for person in np.flatnonzero(ids < 0):
            track = Track(self._next_id, centres[person].copy(), np.zeros(3), time_s)
            self._next_id += 1
            self.tracks.append(track)
            ids[person] = track.id
        return ids

    def _update_track(self, track: Track, centre: np.ndarray, time_s: float) -> None:
        dt = time_s - track.last_seen_s
        if dt > 1e-6:
            measured = (centre - track.position_mm) / dt
            a = self.velocity_smoothing if track.hits > 1 else 0.0
            track.velocity_mm_s = a * track.velocity_mm_s + (1 - a) * measured
        track.position_mm = centre.copy()
        track.last_seen_s = time_s
        track.hits += 1
