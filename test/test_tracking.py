"""PersonTracker: ids stay with people that move, cross, are missed and reappear; the filter and the assignment
against independent computations; the evaluation metrics on hand-made id sequences."""

import itertools

import numpy as np
import pytest

from metrabs_ros.tracking import (PersonTracker, box_iou, kalman_predict, kalman_update, linear_assignment,
                                  constant_velocity_process_noise)
from metrabs_ros import tracking_eval

FOCAL_PX, CX_PX, CY_PX = 500.0, 320.0, 240.0


def walk(start_mm, velocity_mm_s, t_s):
    return np.asarray(start_mm, float) + np.asarray(velocity_mm_s, float) * t_s


def box_of(root_mm, height_mm=1700.0):
    """Pinhole box (x, y, w, h px) of a 1.7 m person whose centre is ``root_mm``."""
    x, y, z = root_mm
    h = FOCAL_PX * height_mm / z
    cx, cy = CX_PX + FOCAL_PX * x / z, CY_PX + FOCAL_PX * y / z
    return np.array([cx - 0.2 * h, cy - 0.5 * h, 0.4 * h, h])


def frame(roots, scores=None):
    roots = np.asarray(roots, float).reshape(-1, 3)
    scores = np.full(len(roots), 0.9) if scores is None else np.asarray(scores, float)
    boxes = np.array([box_of(r) for r in roots]).reshape(-1, 4)
    return roots, boxes, scores


# --- behaviour -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('use_boxes', [True, False])
def test_crossing_people_keep_their_ids_regardless_of_detection_order(use_boxes):
    tracker = PersonTracker(min_hits=1)
    rng = np.random.default_rng(0)
    a0, va = [-1500, 0, 4000], [1200, 0, 0]
    b0, vb = [1500, 0, 4300], [-1200, 0, 0]
    first = None
    for i in range(60):                                  # 2 s at 30 Hz; the two cross at t = 1.25 s, 300 mm apart
        t = i / 30
        roots, boxes, scores = frame(np.stack([walk(a0, va, t), walk(b0, vb, t)]) + rng.normal(0, 20, (2, 3)))
        order = rng.permutation(2)
        ids = tracker.update(roots[order], t, boxes[order] if use_boxes else None, scores[order])[np.argsort(order)]
        if first is None:
            first = ids.copy()
        assert ids.tolist() == first.tolist(), f'frame {i}'


def test_crossing_in_the_image_with_the_occluded_person_missed():
    """Same depth band, paths cross in the image; the farther person is not detected for 5 frames at the crossing
    (hidden) and comes back on the other side of the nearer one: both keep their ids."""
    tracker = PersonTracker(min_hits=2)
    a0, va = [-1500, 0, 4000], [1000, 0, 0]
    b0, vb = [1800, 0, 5000], [-1250, 0, 0]
    ids_a, ids_b = [], []
    for i in range(50):                                  # 15 Hz
        t = i / 15
        a, b = walk(a0, va, t), walk(b0, vb, t)
        hidden = 20 <= i < 25                             # b is behind a around t = 1.5 s
        roots, boxes, scores = frame([a] if hidden else [a, b])
        ids = tracker.update(roots, t, boxes, scores)
        ids_a.append(ids[0])
        if not hidden:
            ids_b.append(ids[1])
    assert ids_a[0] == -1 and ids_b[0] == -1             # tentative in the first frame
    assert set(ids_a[1:]) == {ids_a[1]} and set(ids_b[1:]) == {ids_b[1]} and ids_a[1] != ids_b[1]


def test_short_miss_keeps_the_id_long_miss_gets_a_new_one_ids_never_reused():
    tracker = PersonTracker(min_hits=1, max_age_s=0.5)
    p = [0, 0, 3000.0]
    assert tracker.update(*frame([p])[:1], 0.0).tolist() == [0]
    assert tracker.update(np.zeros((0, 3)), 0.1).tolist() == []
    assert tracker.update(*frame([[50, 0, 3000.0]])[:1], 0.3).tolist() == [0]      # re-found within max_age
    assert tracker.update(*frame([[50, 0, 3000.0]])[:1], 1.5).tolist() == [1]      # too long: a new person
    assert tracker.update(np.array([[50, 0, 3000.0], [3000, 0, 6000.0]]), 1.55).tolist() == [1, 2]
    assert tracker.update(np.array([[50, 0, 3000.0]]), 0.2).tolist() == [3]        # time went backwards: reset


def test_low_score_detection_continues_a_track_but_never_starts_one():
    tracker = PersonTracker(min_hits=1, high_score=0.5, low_score=0.1)
    v = np.array([900.0, 0, 0])
    for i in range(10):
        roots, boxes, scores = frame([walk([0, 0, 4000], v, i / 15)])
        assert tracker.update(roots, i / 15, boxes, scores).tolist() == [0]
    for i in range(10, 20):                              # partly occluded: low scores, same person
        roots, boxes, _ = frame([walk([0, 0, 4000], v, i / 15)])
        assert tracker.update(roots, i / 15, boxes, [0.2]).tolist() == [0]
    # a low-score detection far from any track: no id, no track; below low_score: ignored altogether
    roots, boxes, _ = frame([walk([0, 0, 4000], v, 20 / 15), [-2500, 0, 7000]])
    assert tracker.update(roots, 20 / 15, boxes, [0.9, 0.2]).tolist() == [0, -1]
    assert tracker.update(roots, 21 / 15, boxes, [0.05, 0.2]).tolist() == [-1, -1]
    assert len(tracker.tracks) == 1


def test_low_score_recovery_beats_single_stage_association():
    """A walking person whose score drops below high_score while occluded: with the low-score stage the id holds;
    a tracker that ignores low-score detections loses the track and hands out a new id."""
    def ids_for(low_score):
        tracker = PersonTracker(min_hits=1, max_age_s=0.3, high_score=0.5, low_score=low_score)
        out = []
        for i in range(30):
            roots, boxes, _ = frame([walk([-1000, 0, 4000], [1000, 0, 0], i / 15)])
            score = 0.2 if 8 <= i < 20 else 0.8
            out.extend(i for i in tracker.update(roots, i / 15, boxes, [score]).tolist() if i >= 0)
        return set(out)

    assert ids_for(low_score=0.1) == {0}
    assert len(ids_for(low_score=0.5)) == 2


def test_a_new_person_gets_a_new_id_after_min_hits():
    tracker = PersonTracker(min_hits=3)
    ids = []
    for i in range(6):
        people = [[0, 0, 4000.0]] + ([[2000, 0, 5000.0]] if i >= 2 else [])
        ids.append(tracker.update(*frame(people)[:1], i / 10).tolist())
    assert [row[0] for row in ids] == [-1, -1, 0, 0, 0, 0]
    assert [row[1] for row in ids[2:]] == [-1, -1, 1, 1]


def test_tentative_track_dies_at_its_first_miss():
    tracker = PersonTracker(min_hits=3)
    assert tracker.update(np.array([[0, 0, 4000.0]]), 0.0).tolist() == [-1]
    assert tracker.update(np.zeros((0, 3)), 0.1).tolist() == []
    assert tracker.tracks == []
    # flickering false positives never get an id
    for i in range(10):
        people = np.array([[0, 0, 4000.0]]) if i % 2 == 0 else np.zeros((0, 3))
        assert (tracker.update(people, 0.2 + i / 10) == -1).all()


def test_far_jumps_are_not_matched():
    tracker = PersonTracker(min_hits=1)
    roots, boxes, scores = frame([[0, 0, 3000.0]])
    tracker.update(roots, 0.0, boxes, scores)
    roots, boxes, scores = frame([[2500, 0, 3000.0]])
    assert tracker.update(roots, 0.1, boxes, scores).tolist() == [1]


def test_boxes_with_score_column_and_empty_frames():
    tracker = PersonTracker(min_hits=1, high_score=0.5)
    roots, boxes, _ = frame([[0, 0, 3000.0], [1500, 0, 5000.0]])
    boxes5 = np.concatenate([boxes, [[0.9], [0.2]]], axis=1)          # the estimator's [P, 5]
    assert tracker.update(roots, 0.0, boxes5).tolist() == [0, -1]
    assert tracker.update(np.zeros((0, 3)), 0.1, np.zeros((0, 5))).tolist() == []


# --- filter and assignment against independent computations --------------------------------------------------

def test_kalman_prediction_matches_constant_velocity_motion():
    mean = np.array([100.0, -50.0, 4000.0, 1200.0, 0.0, -300.0])     # mm, mm/s
    cov = np.diag([100.0, 100.0, 400.0, 50.0, 50.0, 80.0]) ** 2
    dt = 0.4
    predicted, predicted_cov = kalman_predict(mean, cov, dt, np.full(3, 2000.0))
    np.testing.assert_allclose(predicted[:3], [100 + 1200 * dt, -50, 4000 - 300 * dt])
    np.testing.assert_allclose(predicted[3:], mean[3:])
    # covariance: position variance grows by dt² · velocity variance + the white-acceleration term q·dt⁴/4
    q = 2000.0 ** 2
    np.testing.assert_allclose(np.diag(predicted_cov)[:3],
                               np.diag(cov)[:3] + dt ** 2 * np.diag(cov)[3:] + q * dt ** 4 / 4)
    np.testing.assert_allclose(np.diag(predicted_cov)[3:], np.diag(cov)[3:] + q * dt ** 2)
    # many small steps of the discretised model agree with one big step for the mean
    stepped = mean
    step_cov = cov
    for _ in range(8):
        stepped, step_cov = kalman_predict(stepped, step_cov, dt / 8, np.zeros(3))
    np.testing.assert_allclose(stepped, predicted)
    np.testing.assert_allclose(constant_velocity_process_noise(dt, np.zeros(3)), 0)


def test_tracker_velocity_estimate_converges_to_the_true_velocity():
    tracker = PersonTracker(min_hits=1)
    velocity = np.array([1100.0, 0.0, -400.0])
    rng = np.random.default_rng(3)
    for i in range(45):                                              # 3 s at 15 Hz
        t = i / 15
        roots, boxes, scores = frame([walk([-1500, 0, 6000], velocity, t) + rng.normal(0, 15, 3)])
        tracker.update(roots, t, boxes, scores)
    track = tracker.tracks[0]
    np.testing.assert_allclose(track.velocity_mm_s, velocity, atol=150)
    # the prediction 0.5 s ahead is the constant-velocity extrapolation of the true path
    np.testing.assert_allclose(tracker.predicted_roots_mm(44 / 15 + 0.5)[0],
                               walk([-1500, 0, 6000], velocity, 44 / 15 + 0.5), atol=150)


def test_kalman_update_equals_the_textbook_form():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 6))
    cov = a @ a.T + np.eye(6)
    mean = rng.normal(size=6)
    z = rng.normal(size=3)
    r = np.diag([0.5, 0.7, 2.0])
    h = np.hstack([np.eye(3), np.zeros((3, 3))])
    gain = cov @ h.T @ np.linalg.inv(h @ cov @ h.T + r)
    new_mean, new_cov = kalman_update(mean, cov, z, r)
    np.testing.assert_allclose(new_mean, mean + gain @ (z - h @ mean))
    np.testing.assert_allclose(new_cov, (np.eye(6) - gain @ h) @ cov, atol=1e-10)


def test_linear_assignment_is_optimal_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        rows, cols = (int(n) for n in rng.integers(1, 6, 2))
        cost = rng.uniform(0, 10, (rows, cols))
        pairs = linear_assignment(cost)
        if rows <= cols:
            best = min(sum(cost[r, p[r]] for r in range(rows)) for p in itertools.permutations(range(cols), rows))
        else:
            best = min(sum(cost[p[c], c] for c in range(cols)) for p in itertools.permutations(range(rows), cols))
        assert len(pairs) == min(rows, cols)
        assert len(set(pairs[:, 0])) == len(pairs) and len(set(pairs[:, 1])) == len(pairs)
        assert cost[pairs[:, 0], pairs[:, 1]].sum() == pytest.approx(best)


def test_linear_assignment_respects_forbidden_pairs():
    inf = np.inf
    cost = np.array([[1.0, inf], [0.5, inf], [inf, inf]])
    assert linear_assignment(cost).tolist() == [[1, 0]]
    cost = np.array([[0.1, 5.0], [0.2, inf]])                        # greedy would take (0, 0) and strand row 1
    assert linear_assignment(cost).tolist() == [[0, 1], [1, 0]]
    assert linear_assignment(np.zeros((0, 3))).shape == (0, 2)


def test_box_iou():
    iou = box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5]])
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0]])


# --- evaluation --------------------------------------------------------------------------------------------------

def test_identity_metrics_count_switches_and_fragmentations():
    gt = [np.array([7, 8])] * 6
    det = [tracking_eval.Detections(i, np.zeros((2, 3)), np.zeros((2, 4)), np.ones(2), np.array([7, 8]))
           for i in range(6)]
    ids = [np.array(x) for x in ([0, 1], [0, 1], [1, 0], [1, 0], [-1, 0], [1, 0])]   # swap at frame 2, miss at 4
    m = tracking_eval.identity_metrics(gt, det, ids)
    assert m['id_switches'] == 2 and m['person_frames'] == 12
    assert m['fragmentations'] == 1 and m['coverage'] == pytest.approx(11 / 12)
    assert m['ids'] == 2 and m['median_id_lifetime_frames'] == 6


def test_synthetic_sequences_are_reproducible_and_have_crossings_and_misses():
    seq_a = tracking_eval.crossing_walks(3, num_frames=60)
    seq_b = tracking_eval.crossing_walks(3, num_frames=60)
    det_a = tracking_eval.simulated_detections(seq_a, 3)
    det_b = tracking_eval.simulated_detections(seq_b, 3)
    for a, b in zip(det_a, det_b):
        np.testing.assert_array_equal(a.roots_mm, b.roots_mm)
        np.testing.assert_array_equal(a.gt_ids, b.gt_ids)
    visible = np.concatenate([f.visible_fraction for f in seq_a.frames])
    assert (visible < 0.35).any() and (visible > 0.9).any()             # occlusions and clear views
    num_gt = sum(len(f.ids) for f in seq_a.frames)
    num_det = sum(int((d.gt_ids >= 0).sum()) for d in det_a)
    assert 0.5 * num_gt < num_det < num_gt                               # misses, but most people detected


def test_a_lost_track_does_not_take_over_a_person_who_appears_elsewhere():
    """A slow walker is last seen at t = 0.9 s; 1 s later someone appears 2 m to the right: inside the grown 3D
    uncertainty of the lost track, but farther in the image than walking allows (the motion gate): a new id."""
    def new_person_id(**options):
        tracker = PersonTracker(min_hits=1, max_age_s=2.0, **options)
        for i in range(10):
            roots, boxes, scores = frame([walk([-1000, 0, 6000], [300, 0, 0], i / 10)])
            assert tracker.update(roots, i / 10, boxes, scores).tolist() == [0]
        for i in range(10, 19):                                      # frames without the person
            tracker.update(np.zeros((0, 3)), i / 10, np.zeros((0, 4)))
        roots, boxes, scores = frame([[-730 + 2000, 0, 6000.0]])
        return tracker.update(roots, 1.9, boxes, scores).tolist()

    assert new_person_id() == [1]
    assert new_person_id(max_box_speed_heights_s=1e9) == [0]        # without the motion gate: taken over


# --- appearance ----------------------------------------------------------------------------------------------------

def test_appearance_keeps_a_differently_dressed_person_from_taking_a_lost_id():
    """A is missed for 4 frames; B, dressed differently, steps in where A would be. Without appearance B takes A's id;
    with it B gets a new id and A, back, gets its own."""
    red, blue = np.zeros(56), np.zeros(56)
    red[0], blue[20] = 1.0, 1.0

    def run(use_appearance):
        tracker = PersonTracker(min_hits=1)
        out = []
        for i in range(14):
            a = walk([-1000, 0, 5000], [800, 0, 0], i / 10)
            if i < 6:
                people, looks = [a], [red]
            elif i < 10:
                people, looks = [a + [0, 0, 150]], [blue]        # A hidden; B where A is
            else:
                people, looks = [a, a + [700, 0, 150]], [red, blue]
            roots, boxes, scores = frame(people)
            out.append(tracker.update(roots, i / 10, boxes, scores,
                                      np.array(looks) if use_appearance else None).tolist())
        return out

    with_appearance = run(True)
    assert {row[0] for row in with_appearance[:6]} == {0}
    assert {row[0] for row in with_appearance[6:10]} == {1}
    assert [row[0] for row in with_appearance[10:]] == [0] * 4
    assert run(False)[6][0] == 0                                   # the swap it prevents


def test_appearance_descriptors_separate_clothing_colours():
    from metrabs_ros.person_appearance import appearance_descriptors, appearance_distance
    image = np.full((200, 300, 3), 128, np.uint8)
    image[20:180, 20:80] = (200, 30, 30)                           # red person
    image[20:180, 120:180] = (30, 40, 200)                         # blue person
    image[20:180, 220:280] = (200, 30, 30)                         # another red one
    boxes = [[20, 20, 60, 160, 0.9], [120, 20, 60, 160, 0.9], [225, 25, 55, 150, 0.9], [400, 0, 10, 10, 0.9]]
    d = appearance_descriptors(image, np.array(boxes))
    assert d.shape == (4, 56)
    np.testing.assert_allclose(np.linalg.norm(d[:3], axis=1), 1.0)
    assert appearance_distance(d[0], d[2]) < 0.05 < 0.9 < appearance_distance(d[0], d[1])
    assert not d[3].any() and appearance_distance(d[0], d[3]) == 0.0     # outside the image: no cue
    assert appearance_descriptors(image, np.zeros((0, 5), np.float32)).shape == (0, 56)   # a frame without people
    assert appearance_descriptors(image, []).shape == (0, 56)
    tracker = PersonTracker()
    assert tracker.update(np.zeros((0, 3)), 0.0, np.zeros((0, 5)), appearance=np.zeros((0, 56))).tolist() == []


def test_evaluate_tracking_command_prints_the_metrics(capsys, tmp_path):
    from metrabs_ros.cli import main
    assert main(['evaluate-tracking', '--sequences', '1', '--frames', '60', '--json', str(tmp_path / 'm.json')]) == 0
    out = capsys.readouterr().out
    assert 'ID switches per 100 person-frames' in out and 'fragmentations per 100' in out
    import json
    metrics = json.loads((tmp_path / 'm.json').read_text())
    assert metrics['person_frames'] > 0 and 0 <= metrics['coverage'] <= 1 and len(metrics['sequences']) == 1
