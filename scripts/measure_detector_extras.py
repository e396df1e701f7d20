"""The detector measurements quoted in MODEL_CARD.md / docs/detector.md / demo_main that are not an evaluation command.

    .venv/bin/python scripts/measure_detector_extras.py pose-filter      # vtest: detections kept by detect_poses
    .venv/bin/python scripts/measure_detector_extras.py demo-world       # capsule people found at 0.5 and 0.3
    .venv/bin/python scripts/measure_detector_extras.py guard CANDIDATE.onnx [THRESHOLD]
        # vtest frames 0, 32, 64, ... (never the labelled 16 + 32 k): how many of the shipped detector's confident
        # people (score >= 0.6) CANDIDATE still finds, and how many extra boxes it adds
    .venv/bin/python scripts/measure_detector_extras.py anchor-offset NANODET_JSON SCENES
        # box error of NanoDet's GFL decoding with the anchor at the cell corner (0) or centre (0.5), on
        # data-engine scenes with exact boxes (people > 60 px, score > 0.4, IoU > 0.5); needs torch

vtest.avi comes from Debian's opencv-doc. Numbers print; nothing is written.
"""
import os
import sys

sys.path[:0] = [os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')]

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from metrabs_ros import embedded_models  # noqa: E402
from metrabs_ros.detection import PersonDetector  # noqa: E402
from metrabs_ros.training.evaluate_real import match_frame  # noqa: E402

VTEST = '/usr/share/doc/opencv-doc/examples/data/vtest.avi'


def vtest_frames(keep):
    capture = cv2.VideoCapture(VTEST)
    index = -1
    while True:
        ok, frame_bgr = capture.read()
        if not ok:
            return
        index += 1
        if keep(index):
            yield index, np.ascontiguousarray(frame_bgr[..., ::-1])


def xyxy(boxes):
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:4]], axis=1)


def pose_filter():
    from metrabs_ros.estimator import PoseEstimator
    estimator = PoseEstimator(num_threads=2)
    detected = kept = unfiltered = frames = 0
    for _, rgb in vtest_frames(lambda i: i % 40 == 8):
        frames += 1
        detected += len(estimator.detector.detect(rgb))
        kept += len(estimator.detect_poses(rgb).boxes)
        unfiltered += len(estimator.detect_poses(rgb, suppress_implausible_poses=False).boxes)
    print(f'{frames} vtest frames (8, 48, ...): {detected} detections, {kept} kept by detect_poses, '
          f'{unfiltered} with suppress_implausible_poses=False')


def demo_world():
    from metrabs_ros.synthetic_scene import animate_scene
    detector = PersonDetector(str(embedded_models.default_detector_path()), num_threads=1)
    for threshold in (0.5, 0.3):
        hits = people = false_positives = 0
        for i in range(0, 90, 6):       # the demo's world: seed 0, 3 people, 15 Hz
            scene = animate_scene(0, i / 15, num_people=3)
            gt = np.array([p.box_xywh_px for p in scene.people if p.num_pixels > 200])
            boxes = detector.detect(scene.image_rgb, threshold)
            hit, outcome = match_frame(xyxy(boxes), boxes[:, 4], xyxy(gt), np.zeros(len(gt), bool))
            hits, people, false_positives = hits + hit.sum(), people + len(gt), false_positives + (outcome == 0).sum()
        print(f'threshold {threshold}: {hits}/{people} capsule people found ({hits / people:.0%}), '
              f'{false_positives} false positives in 15 frames')


def guard(candidate, threshold=None):
    reference = PersonDetector(str(embedded_models.default_detector_path()), num_threads=1)
    other = PersonDetector(candidate, num_threads=1)
    kept = total = extra = frames = 0
    for _, rgb in vtest_frames(lambda i: i % 32 == 0):
        frames += 1
        ref, cand = reference.detect(rgb, 0.6), other.detect(rgb, threshold)
        hit, outcome = match_frame(xyxy(cand), cand[:, 4], xyxy(ref), np.zeros(len(ref), bool))
        kept, total, extra = kept + hit.sum(), total + len(ref), extra + (outcome == 0).sum()
    print(f'{frames} unlabelled vtest frames: kept {kept}/{total} confident reference people, extra boxes {extra} '
          f'({extra / frames:.2f} per frame)')


def anchor_offset(model_json, scenes_path, max_scenes=50):
    import torch
    from metrabs_ros.training.detector.data import open_scenes
    from metrabs_ros.training.detector.export import detect_torch_canvas
    from metrabs_ros.training.detector.metrics import iou_matrix
    from metrabs_ros.training.nanodet import PersonCanvasNetwork, load_nanodet_from_tfjs
    from metrabs_ros.training.tfjs_reader import read_tfjs_graph_model
    torch.set_num_threads(1)
    net = load_nanodet_from_tfjs(read_tfjs_graph_model(model_json))
    scenes = open_scenes(scenes_path)
    for offset in (0.0, 0.5):
        network = PersonCanvasNetwork(net, 100, anchor_offset=offset)
        errors = []
        for i in range(min(len(scenes), max_scenes)):
            image, gt = scenes.load(i)
            gt = gt[(gt[:, 3] - gt[:, 1]) > 60]
            boxes, scores = detect_torch_canvas(network, image, 416)
            boxes = boxes[scores > 0.4]
            if len(gt) and len(boxes):
                iou = iou_matrix(gt, boxes)
                ok = iou.max(axis=1) > 0.5
                matched = boxes[iou.argmax(axis=1)][ok]
                errors.append(np.c_[matched - gt[ok], iou.max(axis=1)[ok]])
        e = np.concatenate(errors)
        print(f'anchor offset {offset}: {len(e)} people, mean box-centre error x {(e[:, 0] + e[:, 2]).mean() / 2:+.2f}'
              f' px, y {(e[:, 1] + e[:, 3]).mean() / 2:+.2f} px, mean IoU {e[:, 4].mean():.3f}')


if __name__ == '__main__':
    command = sys.argv[1] if len(sys.argv) > 1 else ''
    if command == 'pose-filter':
        pose_filter()
    elif command == 'demo-world':
        demo_world()
    elif command == 'anchor-offset' and len(sys.argv) > 3:
        anchor_offset(sys.argv[2], sys.argv[3])
    elif command == 'guard' and len(sys.argv) > 2:
        guard(sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else None)
    else:
        sys.exit(__doc__)
