"""CPU pipeline benchmark: end-to-end time per frame and the part spent outside the ONNX sessions.

`metrabs-ros benchmark` renders synthetic 640×480 scenes with 1, 3 and 5 people and runs ``detect_poses``
repeatedly. Every ``session.run`` call is timed, so the Python orchestration cost (detector pre/post-processing,
NMS, crop geometry, skeleton conversion, projection, plausibility filter) is reported separately from the
network time.
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import time
from typing import Optional, Sequence

import numpy as np


class TimedSession:
    """Wraps an ONNX Runtime session and accumulates the wall time of its ``run`` calls."""

    def __init__(self, session):
        self._session = session
        self.elapsed_s = 0.0

    def run(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self._session.run(*args, **kwargs)
        finally:
            self.elapsed_s += time.perf_counter() - start

    def __getattr__(self, name):
        return getattr(self._session, name)


def _percentile_ms(values_s, q):
    return float(np.percentile(np.asarray(values_s) * 1e3, q))


@contextlib.contextmanager
def _fixture_models(num_people_max: int):
    from metrabs_ros.synthetic_scene import FLAT_PALETTE_RGB
    from metrabs_ros.training.colour_key_detector import make_colour_key_detector
    from metrabs_ros.training.fixtures import make_random_pose_model
    with tempfile.TemporaryDirectory() as tmp:
        model = make_random_pose_model(os.path.join(tmp, 'pose.onnx'), resolution=256, skeleton='smpl_24')
        detector = os.path.join(tmp, 'detector.onnx')
        make_colour_key_detector(detector, [tuple(int(v) for v in c) for c in FLAT_PALETTE_RGB[:num_people_max]])
        yield model, detector


def run_cpu_benchmark(model: Optional[str] = None, detector: Optional[str] = None,
                      people: Sequence[int] = (1, 3, 5), num_aug: int = 1, frames: int = 50,
                      threads: Optional[int] = None, image_hw=(480, 640), fixture: bool = False,
                      print_table: bool = True, detector_threshold: Optional[float] = 0.3) -> dict:
    """``detector_threshold`` 0.3 (not the detector's recommended one): the rendered capsule people score lower
    with the real-photo NanoDet than real people do (docs/detector.md), and the table is about time per detected
    person; None = the detector's recommendation."""
    from metrabs_ros.estimator import PoseEstimator
    from metrabs_ros.synthetic_scene import render_scene

    if not fixture:
        from metrabs_ros import embedded_models
        model = model or str(embedded_models.default_pose_model_path())
        detector = detector or str(embedded_models.default_detector_path())
    context = _fixture_models(max(people)) if fixture else contextlib.nullcontext((model, detector))
    rows = []
    with context as (model_path, detector_path):
        estimator = PoseEstimator(model_path, detector_path, backend='cpu', num_threads=threads)
        estimator.session = pose_session = TimedSession(estimator.session)
        estimator.detector.session = detector_session = TimedSession(estimator.detector.session)
        for num_people in people:
            scene = render_scene(seed=100 + num_people, image_hw=tuple(image_hw), num_people=num_people,
                                 flat_colours=fixture, pose='walking', distance_range_mm=(3000.0, 6000.0))
            kwargs = dict(camera=scene.camera, world_up_vector=scene.up_vector_cam, num_aug=num_aug,
                          detector_threshold=detector_threshold)
            for _ in range(3):
                estimator.detect_poses(scene.image_rgb, **kwargs)
            detected = len(estimator.detector.detect(scene.image_rgb, threshold=detector_threshold))
            total, detector_s, pose_s, kept = [], [], [], []
            for _ in range(frames):
                pose_session.elapsed_s = detector_session.elapsed_s = 0.0
                start = time.perf_counter()
                result = estimator.detect_poses(scene.image_rgb, **kwargs)
                total.append(time.perf_counter() - start)
                detector_s.append(detector_session.elapsed_s)
                pose_s.append(pose_session.elapsed_s)
                kept.append(len(result))
            inside = np.asarray(detector_s) + np.asarray(pose_s)
            outside = np.asarray(total) - inside
            rows.append({
                'people_in_scene': num_people, 'people_detected': detected,
                'people_kept_median': float(np.median(kept)), 'frames': frames, 'num_aug': num_aug,
                'end_to_end_ms_p50': _percentile_ms(total, 50), 'end_to_end_ms_p95': _percentile_ms(total, 95),
                'detector_session_ms_p50': _percentile_ms(detector_s, 50),
                'pose_session_ms_p50': _percentile_ms(pose_s, 50),
                'sessions_ms_p50': _percentile_ms(inside, 50),
                'outside_sessions_ms_p50': _percentile_ms(outside, 50),
                'outside_sessions_ms_p95': _percentile_ms(outside, 95),
                'fps': float(1.0 / np.median(total)),
            })
    report = {
        'benchmark': 'cpu-pipeline', 'image_hw': list(image_hw), 'model': model_path if not fixture else 'fixture',
        'detector': detector_path if not fixture else 'fixture (colour key)', 'threads': threads,
        'cpu': platform.processor() or platform.machine(), 'cores': os.cpu_count(), 'rows': rows}
    if print_table:
        print(f'CPU pipeline, {image_hw[1]}x{image_hw[0]}, num_aug={num_aug}, cores={os.cpu_count()}, '
              f'model={report["model"]}')
        print(f'{"people":>6} {"detected":>8} {"e2e p50 ms":>11} {"e2e p95 ms":>11} {"detector ms":>12} '
              f'{"pose ms":>8} {"outside p50 ms":>15} {"outside p95 ms":>15} {"fps":>7}')
        for r in rows:
            print(f'{r["people_in_scene"]:>6} {r["people_detected"]:>8d} {r["end_to_end_ms_p50"]:>11.2f} '
                  f'{r["end_to_end_ms_p95"]:>11.2f} {r["detector_session_ms_p50"]:>12.2f} '
                  f'{r["pose_session_ms_p50"]:>8.2f} '
                  f'{r["outside_sessions_ms_p50"]:>15.2f} {r["outside_sessions_ms_p95"]:>15.2f} {r["fps"]:>7.1f}')
    return report
