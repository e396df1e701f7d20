"""PersonTracker: ids stay with people that move, cross and disappear."""

import numpy as np

from metrabs_ros.tracking import PersonTracker


def walk(start_mm, velocity_mm_s, t_s):
    return np.asarray(start_mm, float) + np.asarray(velocity_mm_s, float) * t_s


def test_ids_follow_people_regardless_of_detection_order():
    tracker = PersonTracker()
    rng = np.random.default_rng(0)
    a0, va = [-1500, 0, 4000], [1200, 0, 0]
    b0, vb = [1500, 0, 4500], [-1200, 0, 300]
    first = None
    for i in range(60):                                  # 2 s at 30 Hz; the two people cross at t ~ 1.25 s
        t = i / 30
        people = np.stack([walk(a0, va, t), walk(b0, vb, t)]) + rng.normal(0, 20, (2, 3))
        order = rng.permutation(2)
        ids = tracker.update(people[order], t)[np.argsort(order)]
        if first is None:
            first = ids.copy()
        assert ids.tolist() == first.tolist(), f'frame {i}'


def test_lost_people_get_new_ids_and_ids_are_never_reused():
    tracker = PersonTracker(max_age_s=0.5)
    assert tracker.update(np.array([[0, 0, 3000.0]]), 0.0).tolist() == [0]
    assert tracker.update(np.zeros((0, 3)), 0.1).tolist() == []
    assert tracker.update(np.array([[50, 0, 3000.0]]), 0.3).tolist() == [0]      # re-found within max_age
    assert tracker.update(np.array([[50, 0, 3000.0]]), 1.5).tolist() == [1]      # too long: a new person
    assert tracker.update(np.array([[50, 0, 3000.0], [3000, 0, 6000.0]]), 1.55).tolist() == [1, 2]
    assert tracker.update(np.array([[50, 0, 3000.0]]), 0.2).tolist() == [3]      # time went backwards: reset


def test_far_jumps_are_not_matched():
    tracker = PersonTracker(gate_mm=500, gate_growth_mm_s=1000)
    tracker.update(np.array([[0, 0, 3000.0]]), 0.0)
    assert tracker.update(np.array([[2500, 0, 3000.0]]), 0.1).tolist() == [1]
