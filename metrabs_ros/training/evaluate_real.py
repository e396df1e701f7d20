"""``metrabs-ros evaluate-real VIDEO --labels boxes.json``: the person detector on real footage against boxes
labelled by eye (evaluation only: never train on these frames or pick thresholds on them).

Labels file (e.g. ``evaluation/vtest_person_boxes.json``): ``frames`` maps a 0-based frame index (the count of
decoded frames before it) to a list of ``{"box": [x1, y1, x2, y2], "occluded": bool, "truncated": bool,
"ambiguous": bool}`` in pixels (the image spans ``[0, W] x [0, H]``); ``sha256`` of the video is checked.

Matching per frame: detections after threshold + NMS, greedily by descending score, each to the free label of
highest IoU >= ``--iou``. Detections matched to an *ambiguous* label count neither way. Reported:
  * recall by labelled person height (px): < 40, 40-60, 60-100, >= 100, and >= 60 / all (also without the
    occluded people);
  * precision and false positives per frame (unmatched detections);
  * detector time per frame (ONNX Runtime, ``--threads``).
No torch; numpy + ONNX Runtime + OpenCV for decoding the video.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from metrabs_ros.training.detector.metrics import iou_matrix

HEIGHT_BINS_PX = ((0, 40), (40, 60), (60, 100), (100, float('inf')))


def load_labels(path, video=None) -> dict:
    labels = json.loads(Path(path).read_text())
    if video is not None and labels.get('sha256'):
        digest = hashlib.sha256(Path(video).read_bytes()).hexdigest()
        if digest != labels['sha256']:
            raise ValueError(f'{video}: sha256 {digest} differs from the labelled video ({labels["sha256"]})')
    frames = {}
    for key, people in labels['frames'].items():
        boxes = np.array([p['box'] for p in people], np.float64).reshape(-1, 4)
        frames[int(key)] = dict(boxes=boxes,
                                occluded=np.array([bool(p.get('occluded')) for p in people], bool),
                                ambiguous=np.array([bool(p.get('ambiguous')) for p in people], bool))
    return dict(meta=labels, frames=frames)


def match_frame(det_xyxy, det_scores, gt_xyxy, gt_ambiguous, iou_threshold=0.5):
    """-> (gt_hit bool [G], det_outcome int8 [D]: 1 = true positive, 0 = false positive, -1 = on an ambiguous
    label). Greedy by descending detection score."""
    gt_hit = np.zeros(len(gt_xyxy), bool)
    outcome = np.zeros(len(det_xyxy), np.int8)
    if len(det_xyxy) == 0:
        return gt_hit, outcome
    ious = iou_matrix(det_xyxy, gt_xyxy) if len(gt_xyxy) else np.zeros([len(det_xyxy), 0])
    for d in np.argsort(-np.asarray(det_scores), kind='stable'):
        free = np.where(gt_hit, -1.0, ious[d]) if ious.shape[1] else np.zeros([0])
        if free.size and free.max() >= iou_threshold:
            g = int(np.argmax(free))
            gt_hit[g] = True
            outcome[d] = -1 if gt_ambiguous[g] else 1
    return gt_hit, outcome


def summarize(per_frame, iou_threshold) -> dict:
    """``per_frame``: list of dicts with gt heights, hits, occluded, ambiguous flags and detection outcomes."""
    heights = np.concatenate([f['heights'] for f in per_frame]) if per_frame else np.zeros([0])
    hits = np.concatenate([f['hits'] for f in per_frame]) if per_frame else np.zeros([0], bool)
    occluded = np.concatenate([f['occluded'] for f in per_frame]) if per_frame else np.zeros([0], bool)
    ambiguous = np.concatenate([f['ambiguous'] for f in per_frame]) if per_frame else np.zeros([0], bool)
    outcomes = np.concatenate([f['outcomes'] for f in per_frame]) if per_frame else np.zeros([0], np.int8)
    counted = ~ambiguous

    def recall(mask):
        mask = mask & counted
        return dict(recall=float(hits[mask].mean()) if mask.any() else float('nan'), people=int(mask.sum()))

    by_height = {f'{lo:g}-{hi:g}px' if np.isfinite(hi) else f'>={lo:g}px': recall((heights >= lo) & (heights < hi))
                 for lo, hi in HEIGHT_BINS_PX}
    tp, fp = int(np.sum(outcomes == 1)), int(np.sum(outcomes == 0))
    return {
        'frames': len(per_frame), 'iou_threshold': iou_threshold,
        'recall_by_height': by_height,
        'recall_ge60px': recall(heights >= 60), 'recall_all': recall(np.ones_like(hits)),
        'recall_ge60px_not_occluded': recall((heights >= 60) & ~occluded),
        'recall_all_not_occluded': recall(~occluded),
        'precision': tp / max(tp + fp, 1), 'true_positives': tp, 'false_positives': fp,
        'false_positives_per_frame': fp / max(len(per_frame), 1),
    }


def evaluate_real(video, labels_path, detector_path=None, threshold=None, nms_iou_threshold=0.7, tiles=None,
                  iou_threshold=0.5, threads=2, overlays=None) -> dict:
    import cv2

    from metrabs_ros import embedded_models
    from metrabs_ros.detection import PersonDetector
    from metrabs_ros.detection.detector import parse_tiles

    labels = load_labels(labels_path, video)
    detector_path = detector_path or embedded_models.default_detector_path()
    detector = PersonDetector(detector_path, num_threads=threads)
    tiles = parse_tiles(tiles)
    wanted = sorted(labels['frames'])
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ValueError(f'cannot open video {video}')
    per_frame, times_ms, index = [], [], -1
    if overlays:
        Path(overlays).mkdir(parents=True, exist_ok=True)
    while wanted and index < wanted[-1]:
        ok, frame_bgr = capture.read()
        if not ok:
            break
        index += 1
        if index not in labels['frames']:
            continue
        rgb = np.ascontiguousarray(frame_bgr[..., ::-1])
        start = time.perf_counter()
        boxes = detector.detect(rgb, threshold=threshold, nms_iou_threshold=nms_iou_threshold, tiles=tiles)
        times_ms.append((time.perf_counter() - start) * 1e3)
        det_xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:4]], axis=1)
        gt = labels['frames'][index]
        hits, outcomes = match_frame(det_xyxy, boxes[:, 4], gt['boxes'], gt['ambiguous'], iou_threshold)
        per_frame.append(dict(index=index, heights=gt['boxes'][:, 3] - gt['boxes'][:, 1], hits=hits,
                              occluded=gt['occluded'], ambiguous=gt['ambiguous'], outcomes=outcomes))
        if overlays:
            _draw(frame_bgr, gt['boxes'], hits, det_xyxy, boxes[:, 4], outcomes, Path(overlays) / f'{index:04d}.jpg')
    missing = sorted(set(labels['frames']) - {f['index'] for f in per_frame})
    if missing:
        raise ValueError(f'{video}: labelled frames {missing[:5]} are beyond the end of the video')
    report = summarize(per_frame, iou_threshold)
    threshold = detector.default_threshold if threshold is None else threshold
    report.update(video=str(video), labels=str(labels_path), detector=str(detector_path), threshold=threshold,
                  nms_iou_threshold=nms_iou_threshold, tiles=f'{tiles[0]}x{tiles[1]}' if tiles else 'off',
                  threads=threads, detector_ms_median=float(np.median(times_ms)) if times_ms else float('nan'))
    return report


def _draw(frame_bgr, gt_xyxy, hits, det_xyxy, scores, outcomes, path):
    import cv2
    image = frame_bgr.copy()
    for box, hit in zip(gt_xyxy.astype(int), hits):
        cv2.rectangle(image, tuple(box[:2]), tuple(box[2:]), (0, 200, 0) if hit else (0, 0, 255), 1)
    for box, score, outcome in zip(det_xyxy.astype(int), scores, outcomes):
        colour = (255, 200, 0) if outcome != 0 else (255, 0, 255)
        cv2.rectangle(image, (box[0] - 1, box[1] - 1), (box[2] + 1, box[3] + 1), colour, 1)
        cv2.putText(image, f'{score:.2f}', (box[0], max(box[1] - 3, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1)
    cv2.imwrite(str(path), image)


def format_report(report) -> str:
    lines = [f"{report['frames']} frames, detector {report['detector']}, threshold {report['threshold']}, "
             f"tiles {report['tiles']}, IoU >= {report['iou_threshold']}"]
    for name, value in report['recall_by_height'].items():
        lines.append(f'  recall {name:>10}: {value["recall"]:.3f} ({value["people"]} people)')
    for key in ('recall_ge60px', 'recall_all', 'recall_ge60px_not_occluded', 'recall_all_not_occluded'):
        lines.append(f'  {key:<27}: {report[key]["recall"]:.3f} ({report[key]["people"]} people)')
    lines.append(f"  precision {report['precision']:.3f}, false positives {report['false_positives']} "
                 f"({report['false_positives_per_frame']:.2f} per frame)")
    lines.append(f"  detector time median {report['detector_ms_median']:.1f} ms/frame ({report['threads']} threads)")
    return '\n'.join(lines)


def cmd_evaluate_real(args) -> int:
    report = evaluate_real(args.video, args.labels, args.detector, args.threshold, args.nms_iou, args.tiles,
                           args.iou, args.threads, args.overlays)
    print(format_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + '\n')
    return 0


def register_commands(subparsers) -> None:
    p = subparsers.add_parser('evaluate-real', help='person detector on real footage vs boxes labelled by eye '
                                                    '(recall by person height, precision, false positives/frame)')
    p.add_argument('video', help='e.g. /usr/share/doc/opencv-doc/examples/data/vtest.avi (Debian opencv-doc)')
    p.add_argument('--labels', required=True, help='e.g. evaluation/vtest_person_boxes.json')
    p.add_argument('--detector', help='detector .onnx (default: the embedded detector)')
    p.add_argument('--threshold', type=float, default=None,
                   help="detector score threshold (default: the detector's recommended one, as detect_poses)")
    p.add_argument('--nms-iou', type=float, default=0.7, help='NMS IoU threshold (as detect_poses)')
    p.add_argument('--tiles', default='off', help="small-people pass: 'off' or ROWSxCOLS, e.g. 2x2")
    p.add_argument('--iou', type=float, default=0.5, help='IoU for a detection to count as the labelled person')
    p.add_argument('--threads', type=int, default=2, help='ONNX Runtime threads')
    p.add_argument('--overlays', help='write annotated frames here (labels: green hit / red missed; detections: '
                                      'cyan matched / magenta false positive)')
    p.add_argument('--json', help='write the report as JSON')
    p.set_defaults(func=cmd_evaluate_real)
