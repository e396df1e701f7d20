"""`metrabs-ros evaluate`: a contract pose model (and optionally a person detector) through the real library
pipeline (metrabs_ros.PoseEstimator, ONNX Runtime) on held-out data-engine samples, against exact ground truth.

No torch: numpy, ONNX Runtime, and matplotlib for the plots.

Samples: `scenes` samples (full images, every person's GT) — or `crops` samples, each then treated as an image with
one person whose box is the whole crop and whose camera is K_crop.
Modes:
  detector given (default when --detector is passed): the detector's boxes (threshold + NMS, as in detect_poses)
    → detection AP50 / recall@0.5 (all people and people taller than 60 px, GT = visible-silhouette boxes), and
    the same for the boxes detect_poses keeps after its pose plausibility filter / pose NMS
    ('detection_after_pose_filter'); each detection matched to a GT person at IoU ≥ 0.5 gives that person's pose
    (estimate_poses on the matched boxes: the poses detect_poses computes for them).
  --gt-boxes (default without a detector): GT boxes through estimate_poses, which isolates the pose model.
People with fewer than `min_person_pixels` visible pixels are left out of the pose metrics (not of detection).
Pose metrics per skeleton format that both the model and the GT have (metrabs_ros.training.metrics).
"""
from __future__ import annotations

import json
import os
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from metrabs_ros.training import augment as aug
from metrabs_ros.training import metrics
from metrabs_ros.training.synth.derived_formats import derived_joints


def _sample_people(sample, min_person_pixels: int):
    """(image, camera, boxes [N,4], truncated [N], joints {fmt: [N,J,3]}, keep_for_pose [N])."""
    if aug.sample_kind(sample) == 'crops':
        ex = aug.crop_sample_example(sample)
        joints = {f: v[None] for f, v in ex.joints_by_format.items()}
        return (ex.image, ex.camera, ex.box_xywh[None], np.array([ex.truncated]), joints, np.ones(1, bool))
    n = aug.scene_people_count(sample)
    camera = aug.scene_sample_camera(sample)
    boxes = np.asarray(sample['people/box_xywh'], np.float64).reshape(n, 4)
    truncated = np.asarray(sample.get('people/truncated', np.zeros(n, bool)), bool).reshape(n)
    pixels = np.asarray(sample.get('people/num_pixels', np.full(n, 1 << 30))).reshape(n)
    joints = {f: np.asarray(sample[f'people/{f}/joints3d_mm'], np.float64).reshape(n, -1, 3)
              for f in aug.formats_in_sample(sample, 'people/')}
    joints.update(derived_joints(joints))     # h36m_25, kinectv2_25, ... (docs/synthetic_data.md)
    return np.asarray(sample['image']), camera, boxes, truncated, joints, pixels >= min_person_pixels


def evaluate_model(model_path: str, data, detector_path: Optional[str] = None, num_aug: int = 1,
                   gt_boxes: Optional[bool] = None, out_dir: Optional[str] = None, max_samples: Optional[int] = None,
                   formats: Optional[Sequence[str]] = None, min_person_pixels: int = 100,
                   detector_threshold: Optional[float] = None, min_height_px: float = 60.0, threads: Optional[int] = None,
                   backend: str = 'cpu', log=print) -> dict:
    """Evaluate; returns the report dict (also written to out_dir/report.json with PNG plots when out_dir)."""
    from metrabs_ros.estimator import PoseEstimator

    samples = aug.open_samples(data) if isinstance(data, (str, os.PathLike)) else data
    if gt_boxes is None:
        gt_boxes = detector_path is None
    if not gt_boxes and detector_path is None:
        raise ValueError('detection mode needs a detector (--detector DET.onnx), or use --gt-boxes')
    estimator = PoseEstimator(model_path, detector_path if not gt_boxes else None, backend=backend,
                              num_threads=threads)
    if gt_boxes:
        estimator.detector = None
    n_samples = len(samples) if max_samples is None else min(len(samples), int(max_samples))
    model_formats = set(estimator.skeleton_names)
    unknown = [f for f in formats or () if f not in model_formats]
    if unknown:
        raise ValueError(f'formats {unknown} are not offered by {model_path}; it has {", ".join(sorted(model_formats))}')
    default_format = estimator.info.skeleton('').name
    det_acc = metrics.DetectionAccumulator(0.5, min_height_px) if not gt_boxes else None
    e2e_acc = metrics.DetectionAccumulator(0.5, min_height_px) if not gt_boxes else None
    collected: Dict[str, Dict[str, list]] = {}
    counts = {'images': 0, 'gt_people': 0, 'evaluated_people': 0, 'unmatched_people': 0}
    t_pose = t_det = t_e2e = 0.0
    for i in range(n_samples):  # loop over images
        sample = samples[i]
        image, camera, boxes, truncated, joints, keep = _sample_people(sample, min_person_pixels)
        counts['images'] += 1
        counts['gt_people'] += len(boxes)
        fmts = [f for f in (formats or sorted(joints, key=lambda f: (f != default_format, f)))
                if f in joints and f in model_formats]
        if not gt_boxes:
            t = time.perf_counter()
            detections = estimator.detector.detect(image, threshold=detector_threshold)
            t_det += time.perf_counter() - t
            det_boxes, scores = detections[:, :4].astype(np.float64), detections[:, 4].astype(np.float64)
            det_acc.add(det_boxes, scores, boxes)
            # what detect_poses returns: the detections that survive the pose plausibility filter / pose NMS
            t = time.perf_counter()
            result = estimator.detect_poses(image, camera=camera, num_aug=num_aug,
                                            detector_threshold=detector_threshold)
            t_e2e += time.perf_counter() - t
            e2e_acc.add(result.boxes[:, :4], result.boxes[:, 4], boxes)
            pred_to_gt, _ = metrics.match_boxes(det_boxes, scores, boxes, 0.5)
            matched = pred_to_gt >= 0
            gt_index = pred_to_gt[matched]
            sel = keep[gt_index]
            person_boxes, gt_index = det_boxes[matched][sel], gt_index[sel]
            counts['unmatched_people'] += int(np.count_nonzero(keep)) - len(gt_index)
        else:
            gt_index = np.flatnonzero(keep)
            person_boxes = boxes[gt_index]
        counts['evaluated_people'] += len(gt_index)
        if len(gt_index) == 0:
            continue
        for fmt in fmts:
            t = time.perf_counter()
            res = estimator.estimate_poses(image, person_boxes, camera=camera, num_aug=num_aug, skeleton=fmt)
            t_pose += time.perf_counter() - t
            c = collected.setdefault(fmt, {'pred': [], 'gt': [], 'truncated': [], 'joint_names': res.joint_names})
            c['pred'].append(res.poses3d_mm.astype(np.float64))
            c['gt'].append(joints[fmt][gt_index])
            c['truncated'].append(truncated[gt_index])
    report = {'model': os.fspath(model_path), 'detector': detector_path, 'data': str(data),
              'mode': 'gt_boxes' if gt_boxes else 'detector', 'num_aug': int(num_aug),
              'min_person_pixels': int(min_person_pixels), 'counts': counts, 'pose': {},
              'seconds': {'pose_total': t_pose, 'detect_total': t_det, 'detect_poses_total': t_e2e}}
    for fmt, c in collected.items():
        pred, gt = np.concatenate(c['pred']), np.concatenate(c['gt'])
        rep = metrics.pose_report(pred, gt, metrics.root_index(fmt, c['joint_names']),
                                  np.concatenate(c['truncated']))
        rep['root_joint'] = metrics.ROOT_JOINTS.get(fmt, 'mean of joints')
        report['pose'][fmt] = rep
    if det_acc is not None:
        report['detection'] = det_acc.report()
        report['detection_after_pose_filter'] = e2e_acc.report()
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, 'report.json'), 'w') as f:
            json.dump(report, f, indent=1, default=_json_default)
        report['plots'] = write_plots(report, out_dir)
    log(format_table(report))
    return report


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def format_table(report: dict) -> str:
    lines = [f"{report['mode']} mode, num_aug {report['num_aug']}: {report['counts']['images']} images, "
             f"{report['counts']['evaluated_people']} of {report['counts']['gt_people']} people evaluated"]
    if report['pose']:
        lines.append(f"{'format':<10} {'N':>5} {'MPJPE':>7} {'PA-MPJPE':>9} {'PCK150':>7} {'AUC':>6} "
                     f"{'MRPE med':>9} {'MRPE mean':>10}   (mm, %)")
        for fmt, r in report['pose'].items():
            m = r['mrpe_mm']['overall']
            lines.append(f"{fmt:<10} {r['num_people']:>5} {r['mpjpe_mm']:>7.1f} {r['pa_mpjpe_mm']:>9.1f} "
                         f"{100 * r['pck150']:>7.1f} {100 * r['auc']:>6.1f} {m['median']:>9.0f} {m['mean']:>10.0f}")
        first = next(iter(report['pose'].values()))
        buckets = ', '.join(f"{k}: {v['median']:.0f} (n={v['count']})" for k, v in first['mrpe_mm']['by_distance'].items()
                            if v['count'])
        lines.append(f"MRPE median by distance ({next(iter(report['pose']))}): {buckets}")
        tr = first['mrpe_mm']
        if 'truncated' in tr:
            lines.append(f"MRPE median truncated {tr['truncated']['median']:.0f} (n={tr['truncated']['count']}), "
                         f"not truncated {tr['not_truncated']['median']:.0f} (n={tr['not_truncated']['count']})")
    for group, label in (('detection', 'detector'), ('detection_after_pose_filter', 'detect_poses')):
        for key, d in (report.get(group) or {}).items():
            lines.append(f"{label} {key}: AP50 {d['ap50']:.3f}, recall@0.5 {d['recall50']:.3f} "
                         f"({d['num_gt']} GT, {d['num_detections']} detections)")
    return '\n'.join(lines)


def write_plots(report: dict, out_dir: str) -> List[str]:
    """pck_curve.png (PCK vs threshold per format) and error_by_distance.png (MRPE median/mean per bucket)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    paths = []
    if not report['pose']:
        return paths
    fig, ax = plt.subplots(figsize=(5, 4))
    for fmt, r in report['pose'].items():
        curve = r['pck_curve']
        ax.plot(curve['thresholds_mm'], np.asarray(curve['pck']) * 100, label=f"{fmt} (AUC {100 * r['auc']:.1f})")
    ax.set_xlabel('threshold (mm), root-relative')
    ax.set_ylabel('PCK (%)')
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title('3D PCK')
    path = os.path.join(out_dir, 'pck_curve.png')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)

    fmt, r = next(iter(report['pose'].items()))
    buckets = r['mrpe_mm']['by_distance']
    labels = list(buckets)
    med = [buckets[k]['median'] for k in labels]
    mean = [buckets[k]['mean'] for k in labels]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.bar(x - 0.2, np.nan_to_num(med), 0.4, label='median')
    ax.bar(x + 0.2, np.nan_to_num(mean), 0.4, label='mean')
    ax.set_xticks(x, [f"{k}\nn={buckets[k]['count']}" for k in labels])
    ax.set_ylabel(f'root error MRPE (mm), {fmt} root')
    ax.set_title('absolute root error by GT distance')
    ax.legend()
    ax.grid(alpha=0.3, axis='y')
    path = os.path.join(out_dir, 'error_by_distance.png')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
    return paths
