"""metrabs_ros.training.metrics against hand-computed values."""
import numpy as np
import pytest

from metrabs_ros.training import metrics as M


def _pose3():
    # three joints: root at origin, one 1 m to the right, one 1 m down
    return np.array([[[0.0, 0.0, 0.0], [1000.0, 0.0, 0.0], [0.0, 1000.0, 0.0]]])


def test_root_relative_mpjpe_ignores_translation_and_uses_the_root():
    gt = _pose3() + [0, 0, 5000]
    pred = gt + [300.0, -200.0, 100.0]                # pure translation: root-relative error 0
    pred[0, 1, 0] += 30.0                             # joint 1 off by 30 mm in x
    pred[0, 2, 2] += 40.0                             # joint 2 off by 40 mm in z
    err = M.root_relative_errors_mm(pred, gt, root=0)
    np.testing.assert_allclose(err, [[0.0, 30.0, 40.0]], atol=1e-9)
    # root joint itself wrong by (0, 0, 90): every other joint then is 90 mm off relative to it
    pred2 = gt.copy()
    pred2[0, 0, 2] += 90.0
    np.testing.assert_allclose(M.root_relative_errors_mm(pred2, gt, 0), [[0.0, 90.0, 90.0]], atol=1e-9)
    # mean-centring instead of a root: root moved by 90 → centroid moves by 30
    e = M.root_relative_errors_mm(pred2, gt, None)
    np.testing.assert_allclose(e, [[60.0, 30.0, 30.0]], atol=1e-9)


def test_root_index_per_format():
    assert M.root_index('smpl_24', ['pelv', 'lhip']) == 0
    assert M.root_index('coco_19', ['neck', 'nose', 'pelv']) == 2
    assert M.root_index('unknown', ['a', 'b']) is None


def test_procrustes_removes_rotation_scale_translation():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(2, 10, 3)) * 300
    angle = np.deg2rad(40)
    R = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    pred = 1.7 * gt @ R.T + [100, 2000, -30]
    np.testing.assert_allclose(M.pa_errors_mm(pred, gt), 0.0, atol=1e-8)
    assert M.root_relative_errors_mm(pred, gt, 0).mean() > 50


def test_procrustes_hand_computed_collinear_case():
    # gt: points on the x axis at -1, 0, 1 m; pred: the same with the middle one displaced by d along y.
    # Centred pred: (-1000, -d/3), (0, 2d/3), (1000, -d/3); the cross-covariance has only the xx entry 2e6, so
    # the rotation is the identity and the scale s = 2e6 / Σ|p|² = 2e6 / (2e6 + 2d²/3).
    # Residuals: joint 0/2: |(±1000(s − 1), −s·d/3)|, joint 1: s·2d/3.
    d = 90.0
    gt = np.array([[[-1000.0, 0, 0], [0, 0, 0], [1000.0, 0, 0]]])
    pred = gt.copy()
    pred[0, 1, 1] = d
    s = 2e6 / (2e6 + 2 * d * d / 3)
    outer = np.hypot(1000 * (1 - s), s * d / 3)
    np.testing.assert_allclose(M.pa_errors_mm(pred, gt), [[outer, s * 2 * d / 3, outer]], atol=1e-6)


def test_procrustes_does_not_reflect():
    gt = np.array([[[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]]]) * 1000
    mirrored = gt * [-1, 1, 1]
    assert M.pa_errors_mm(mirrored, gt).mean() > 100


def test_pck_and_auc_hand_computed():
    errors = np.array([0.0, 10.0, 100.0, 149.9, 150.0, 400.0])
    assert M.pck(errors, 150) == pytest.approx(4 / 6)
    # AUC: thresholds 0,5,...,150. error 0 is below every threshold except 0 (strict) → 30 of 31;
    # 10 → below thresholds 15..150 = 28; 100 → 105..150 = 10; 149.9 → 150 only = 1; 150 and 400 → 0.
    assert M.auc(errors) == pytest.approx((30 + 28 + 10 + 1) / (31 * 6))


def test_root_error_report_buckets_and_truncation():
    gt_root = np.array([[0, 0, 1500.0], [0, 0, 3000.0], [0, 0, 5000.0], [0, 0, 9000.0], [0, 0, 3500.0]])
    pred_root = gt_root + np.array([[0, 0, 100.0], [0, 0, 200.0], [30, 40, 0], [0, 0, -1000.0], [0, 0, 400.0]])
    rep = M.root_error_report(pred_root, gt_root, truncated=[False, False, True, False, True])
    assert rep['overall']['mean'] == pytest.approx((100 + 200 + 50 + 1000 + 400) / 5)
    assert rep['by_distance']['<2m']['mean'] == pytest.approx(100)
    assert rep['by_distance']['2-4m']['count'] == 2
    assert rep['by_distance']['2-4m']['median'] == pytest.approx(300)
    assert rep['by_distance']['4-8m']['mean'] == pytest.approx(50)
    assert rep['by_distance']['>8m']['mean'] == pytest.approx(1000)
    assert rep['truncated']['mean'] == pytest.approx(225)
    assert rep['not_truncated']['median'] == pytest.approx(200)


def test_box_iou_hand_computed():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 10, 10], [0, 0, 10, 10], [20, 20, 5, 5], [0, 0, 5, 5]])
    np.testing.assert_allclose(M.box_iou_xywh(a, b), [[50 / 150, 1.0, 0.0, 0.25]])


def test_average_precision_hand_computed():
    # 3 GT, detections by score: TP, FP, TP → precision 1, 1/2, 2/3 at recall 1/3, 1/3, 2/3.
    # Envelope: 1 up to recall 1/3, 2/3 up to 2/3, 0 after: AP = 1/3·1 + 1/3·2/3 = 5/9.
    assert M.average_precision([0.9, 0.8, 0.7], [True, False, True], 3) == pytest.approx(5 / 9)
    assert M.average_precision([0.9, 0.5], [True, True], 2) == pytest.approx(1.0)
    assert M.average_precision([], [], 2) == pytest.approx(0.0)


def test_detection_accumulator_recall_and_height_subset():
    acc = M.DetectionAccumulator(iou_threshold=0.5, min_height_px=60)
    gt = np.array([[0, 0, 50, 100], [200, 0, 20, 40], [300, 0, 40, 80]])  # heights 100, 40 (small), 80
    pred = np.array([[2, 2, 50, 100], [200, 0, 20, 40], [500, 500, 30, 70]])
    scores = np.array([0.9, 0.8, 0.7])  # TP on GT0, TP on small GT1, FP (height 70)
    acc.add(pred, scores, gt)
    rep = acc.report()
    assert rep['all']['recall50'] == pytest.approx(2 / 3)
    # all: TP, TP, FP over 3 GT → AP = 2/3 (precision 1 up to recall 2/3)
    assert rep['all']['ap50'] == pytest.approx(2 / 3)
    tall = rep['taller_than_60px']
    assert tall['num_gt'] == 2 and tall['recall50'] == pytest.approx(1 / 2)
    # the small GT's detection is ignored; remaining TP (0.9), FP (0.7) over 2 GT → AP = 1/2
    assert tall['num_detections'] == 2
    assert tall['ap50'] == pytest.approx(1 / 2)


def test_match_boxes_prefers_higher_score():
    gt = np.array([[0, 0, 10, 10]])
    pred = np.array([[0, 0, 10, 10], [1, 0, 10, 10]])
    pred_to_gt, _ = M.match_boxes(pred, [0.3, 0.9], gt)
    np.testing.assert_array_equal(pred_to_gt, [-1, 0])


def test_pose_report_keys_and_values():
    gt = np.tile(_pose3(), (2, 1, 1)) + [0, 0, 3000]
    pred = gt.copy()
    pred[1, 1, 0] += 300  # one joint 300 mm off
    rep = M.pose_report(pred, gt, root=0, truncated=[False, True])
    assert rep['mpjpe_mm'] == pytest.approx(300 / 6)
    assert rep['pck150'] == pytest.approx(5 / 6)
    assert rep['mrpe_mm']['overall']['mean'] == pytest.approx(0.0)
    assert rep['mpjpe_truncated_mm'] == pytest.approx(100.0)
