"""GPU benchmark and backend agreement check (`metrabs-ros benchmark-gpu`, `metrabs-ros gpu-agreement`).

benchmark: end-to-end time per frame through ``PoseEstimator`` — numpy image in, publish-ready numpy poses out
(crop geometry, upload, the pose network, download, skeleton conversion, projection, TTA mean) — for each backend,
model, image size, number of people and ``num_aug``. With ``detector=None`` the people's boxes are given
(``estimate_poses``, the pose stage); with ``detector='fixture'`` the colour-key fixture detector runs too
(``detect_poses``). Latency p50/p95/p99 over the measured frames, frames/s = frames / total time. Synthetic scenes
(metrabs_ros.synthetic_scene); networks with random weights (timing only):

  fixture       the test fixture (tiny CNN, 256 px)
  effv2s-256    EfficientNetV2-S backbone, 256 px crops (the official MeTRAbs S structure)
  effv2l-384    EfficientNetV2-L backbone, 384 px crops

agreement: max |backend − ONNX Runtime CPU| over poses3d_aug_mm (mm) on the same contract inputs, per model and
precision (targets: 1 mm FP32, 5 mm FP16).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

BENCHMARK_MODELS = {
    'fixture': {'backbone': None, 'resolution': 256},
    'effv2s-256': {'backbone': 'efficientnetv2-s', 'resolution': 256},
    'effv2l-384': {'backbone': 'efficientnetv2-l', 'resolution': 384},
}
GPU_BACKENDS = ('tensorrt', 'torch-cuda', 'cuda', 'onnxruntime')


def build_model(name: str, folder: str, resolution: Optional[int] = None, seed: int = 0):
    """(PoseGraph, ONNX path) of a benchmark model with random weights; the ONNX file carries the contract
    metadata (smpl_24 joints) and is what ONNX Runtime / TensorRT run."""
    import torch
    from metrabs_ros.skeletons import get_skeleton
    from metrabs_ros.training.export import contract_metadata, export_pose_model, skeleton_entry
    if name not in BENCHMARK_MODELS:
        raise ValueError(f'unknown benchmark model {name!r}; valid: {", ".join(BENCHMARK_MODELS)}')
    spec = BENCHMARK_MODELS[name]
    resolution = int(resolution or spec['resolution'])
    path = os.path.join(folder, f'{name}-{resolution}.onnx')
    if spec['backbone'] is None:
        from metrabs_ros.training.fixtures import build_random_pose_graph
        graph, meta = build_random_pose_graph(resolution, 'smpl_24', seed=seed)
    else:
        from metrabs_ros.training.checkpoint import graph_from_config
        skeleton = get_skeleton('smpl_24')
        torch.manual_seed(seed)
        graph = graph_from_config({'backbone': spec['backbone'], 'resolution': resolution,
                                   'joint_names': list(skeleton.joint_names)})
        entry = skeleton_entry(skeleton.joint_names, skeleton.joint_names, skeleton.edges)
        meta = contract_metadata(graph, name=f'{name} (random weights)', joint_edges=skeleton.edges,
                                 skeletons={'smpl_24': entry}, default_skeleton='smpl_24')
    graph = graph.eval()
    if not os.path.isfile(path):
        from metrabs_ros.training.export import example_inputs
        export_pose_model(graph, path, meta, check=False,
                          inputs=example_inputs(num_people=2, num_aug=2, image_hw=(96, 128), resolution=resolution))
    return graph, path


def _percentiles_ms(times_s) -> Dict[str, float]:
    ms = np.asarray(times_s) * 1e3
    return {'p50_ms': float(np.percentile(ms, 50)), 'p95_ms': float(np.percentile(ms, 95)),
            'p99_ms': float(np.percentile(ms, 99)), 'mean_ms': float(ms.mean())}


def device_name() -> str:
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f'CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)'


def make_backend(name: str, graph, onnx_path: str, precision: str = 'fp16', cuda_graphs: bool = True,
                 threads: Optional[int] = None, engine_options: Optional[dict] = None):
    """A PoseBackend by exact name (no fallback: the benchmark reports what it asked for).

    names: tensorrt | torch-cuda | torch-cpu | cuda (ONNX Runtime CUDA EP) | onnxruntime (CPU)."""
    from metrabs_ros.gpu.model_description import describe_onnx
    if name in ('torch-cuda', 'torch-cpu'):
        from metrabs_ros.gpu.torch_backend import TorchPoseBackend
        return TorchPoseBackend(graph, describe_onnx(onnx_path), device='cuda' if name == 'torch-cuda' else 'cpu',
                                precision=precision, cuda_graphs=cuda_graphs)
    if name == 'tensorrt':
        from metrabs_ros.gpu.trt_runtime import TrtPoseBackend
        options = dict(engine_options or {})
        options['precision'] = precision
        return TrtPoseBackend(onnx_path, build_options=options, cuda_graphs=cuda_graphs)
    from metrabs_ros.gpu.backend import OrtPoseBackend
    from metrabs_ros.onnx_backend import create_session
    providers = {'cuda': ['CUDAExecutionProvider'], 'onnxruntime': ['CPUExecutionProvider']}[name]
    from metrabs_ros.gpu.backend import probe_ort_provider
    reason = probe_ort_provider(providers[0])
    if reason:
        raise RuntimeError(reason)
    return OrtPoseBackend(create_session(onnx_path, providers=providers, num_threads=threads), name=name)


def _scene_boxes(scene, num_people: int) -> np.ndarray:
    boxes = np.array([p.box_xywh_px for p in scene.people if p.box_xywh_px[2] > 0 and p.box_xywh_px[3] > 0],
                     np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        h, w = scene.image_rgb.shape[:2]
        boxes = np.array([[w * 0.4, h * 0.2, w * 0.2, h * 0.6]], np.float32)
    reps = int(np.ceil(num_people / len(boxes)))
    return np.tile(boxes, (reps, 1))[:num_people]  # exactly num_people boxes (occluded people repeat others)


def run_gpu_benchmark(backends: Sequence[str] = GPU_BACKENDS, models: Sequence[str] = ('fixture',),
                      people: Sequence[int] = (1, 3, 8), image_sizes_hw: Sequence = ((480, 640), (1080, 1920)),
                      num_augs: Sequence[int] = (1, 5), precisions: Sequence[str] = ('fp16',), frames: int = 100,
                      warmup: int = 5, max_seconds: float = 20.0, detector: Optional[str] = None,
                      resolution: Optional[int] = None, threads: Optional[int] = None, cuda_graphs: bool = True,
                      work_dir: Optional[str] = None, print_table: bool = True, log=print) -> dict:
    """Measure every combination; backends that cannot be created are reported (with the reason), not fatal.

    max_seconds: time budget per configuration (slow CPU backends on large models stop early; at least 2 frames).
    precisions: for tensorrt / torch-* backends; ONNX Runtime runs the FP32 file once.
    resolution: override every model's crop size (tests use tiny sizes).
    """
    from metrabs_ros.estimator import PoseEstimator
    from metrabs_ros.synthetic_scene import render_scene

    rows: List[dict] = []
    unavailable: Dict[str, str] = {}
    context = tempfile.TemporaryDirectory() if work_dir is None else contextlib.nullcontext(work_dir)
    with context as folder:
        os.makedirs(folder, exist_ok=True)
        detector_path = None
        if detector == 'fixture':
            from metrabs_ros.synthetic_scene import FLAT_PALETTE_RGB
            from metrabs_ros.training.colour_key_detector import make_colour_key_detector
            detector_path = os.path.join(folder, 'detector.onnx')
            make_colour_key_detector(detector_path, [tuple(int(v) for v in c)
                                                     for c in FLAT_PALETTE_RGB[:max(people)]])
        elif detector:
            detector_path = detector
        scenes = {(hw, p): render_scene(seed=100 + p, image_hw=tuple(hw), num_people=p, flat_colours=True,
                                        pose='walking', distance_range_mm=(3000.0, 6000.0))
                  for hw in map(tuple, image_sizes_hw) for p in people}
        for model_name in models:
            log(f'model {model_name}: building / exporting ...')
            graph, onnx_path = build_model(model_name, folder, resolution)
            estimator = PoseEstimator(onnx_path, detector_path, backend='cpu', num_threads=threads)
            for backend_name in backends:
                backend_precisions = ['fp32'] if backend_name in ('onnxruntime', 'cuda') else list(precisions)
                for precision in backend_precisions:
                    label = f'{backend_name}/{precision}'
                    try:
                        engine_options = {'max_people': max(people), 'num_augs': tuple(num_augs),
                                          'image_sizes_hw': tuple(map(tuple, image_sizes_hw))}
                        backend = make_backend(backend_name, graph, onnx_path, precision, cuda_graphs, threads,
                                               engine_options)
                    except Exception as error:  # report and continue with the other backends
                        unavailable[label] = f'{type(error).__name__}: {error}'
                        log(f'  {label}: unavailable: {unavailable[label]}')
                        continue
                    estimator.session = backend
                    estimator.crop_to_window = not getattr(backend, 'wants_full_frame', False)
                    for hw in map(tuple, image_sizes_hw):
                        for num_aug in num_augs:
                            for num_people in people:
                                rows.append(_measure(estimator, scenes[(hw, num_people)], num_people, num_aug,
                                                     frames, warmup, max_seconds, detector_path is not None,
                                                     model_name, label, backend))
                                r = rows[-1]
                                log(f'  {label} {hw[1]}x{hw[0]} P={num_people} A={num_aug}: '
                                    f'{r["fps"]:.1f} fps, p50 {r["p50_ms"]:.2f} ms, p99 {r["p99_ms"]:.2f} ms')
                    del backend
                    estimator.session = None
    report = {'benchmark': 'gpu-pipeline', 'device': device_name(),
              'mode': 'detect_poses (fixture colour-key detector)' if detector else 'estimate_poses (boxes given)',
              'frames': frames, 'warmup': warmup, 'cuda_graphs': cuda_graphs, 'rows': rows,
              'unavailable': unavailable, 'time': time.strftime('%Y-%m-%dT%H:%M:%S%z')}
    if print_table:
        print(format_table(report))
    return report


def _measure(estimator, scene, num_people, num_aug, frames, warmup, max_seconds, with_detector, model_name, label,
             backend) -> dict:
    boxes = _scene_boxes(scene, num_people)
    kwargs = dict(camera=scene.camera, world_up_vector=scene.up_vector_cam, num_aug=num_aug)

    def once():
        if with_detector:
            return estimator.detect_poses(scene.image_rgb, **kwargs)
        return estimator.estimate_poses(scene.image_rgb, boxes, **kwargs)

    for _ in range(warmup):
        once()
    times = []
    budget_end = time.perf_counter() + max_seconds
    result = None
    for i in range(frames):
        start = time.perf_counter()
        result = once()
        times.append(time.perf_counter() - start)
        if i >= 1 and time.perf_counter() > budget_end:
            break
    stats = _percentiles_ms(times)
    finite = bool(result is not None and np.all(np.isfinite(result.poses3d_mm)))
    return {'model': model_name, 'backend': label, 'providers': list(backend.get_providers()),
            'image_hw': list(scene.image_rgb.shape[:2]), 'people': num_people,
            'people_out': len(result) if result is not None else 0, 'num_aug': num_aug,
            'frames_measured': len(times), 'fps': float(len(times) / np.sum(times)), **stats,
            'outputs_finite': finite}


def format_table(report: dict) -> str:
    lines = [f'{report["benchmark"]} on {report["device"]}, {report["mode"]}',
             f'{"model":<12} {"backend":<20} {"image":>10} {"P":>3} {"A":>3} {"fps":>8} {"p50 ms":>8} '
             f'{"p95 ms":>8} {"p99 ms":>8} {"frames":>6}']
    for r in report['rows']:
        lines.append(f'{r["model"]:<12} {r["backend"]:<20} {r["image_hw"][1]:>5}x{r["image_hw"][0]:<4} '
                     f'{r["people"]:>3} {r["num_aug"]:>3} {r["fps"]:>8.1f} {r["p50_ms"]:>8.2f} {r["p95_ms"]:>8.2f} '
                     f'{r["p99_ms"]:>8.2f} {r["frames_measured"]:>6}')
    for label, reason in report.get('unavailable', {}).items():
        lines.append(f'{label}: unavailable ({reason})')
    return '\n'.join(lines)


def run_agreement(backends: Sequence[str] = ('torch-cuda',), models: Sequence[str] = ('fixture',),
                  precisions: Sequence[str] = ('fp32', 'fp16'), cases: Sequence = ((3, 5, (480, 640)),),
                  resolution: Optional[int] = None, repeats: int = 3, work_dir: Optional[str] = None,
                  log=print) -> dict:
    """Max |backend − ONNX Runtime CPU (FP32 file)| over poses3d_aug_mm (mm) per model/backend/precision/case.

    cases: (P, A, (H, W)) with random images/boxes (training.export.example_inputs). Each case runs ``repeats``
    times so that CUDA-graph replays are compared too (the worst difference is kept). Limits: 1 mm FP32, 5 mm FP16.
    """
    from metrabs_ros.training.export import example_inputs, run_onnx
    from metrabs_ros.training.pose_graph import INPUT_NAMES
    limits = {'fp32': 1.0, 'fp16': 5.0}
    rows, unavailable = [], {}
    context = tempfile.TemporaryDirectory() if work_dir is None else contextlib.nullcontext(work_dir)
    with context as folder:
        os.makedirs(folder, exist_ok=True)
        for model_name in models:
            graph, onnx_path = build_model(model_name, folder, resolution)
            references = []
            for seed, (num_people, num_aug, hw) in enumerate(cases):
                inputs = example_inputs(num_people, num_aug, tuple(hw), seed=seed, resolution=graph.resolution)
                feeds = {n: t.numpy() for n, t in zip(INPUT_NAMES, inputs)}
                references.append((feeds, run_onnx(onnx_path, inputs, num_threads=os.cpu_count() or 1)[0]))
            for backend_name in backends:
                for precision in precisions:
                    label = f'{backend_name}/{precision}'
                    try:
                        backend = make_backend(backend_name, graph, onnx_path, precision)
                    except Exception as error:
                        unavailable[label] = f'{type(error).__name__}: {error}'
                        log(f'{model_name} {label}: unavailable: {unavailable[label]}')
                        continue
                    for (feeds, reference), case in zip(references, cases):
                        worst = 0.0
                        for _ in range(repeats):
                            got = backend.run(['poses3d_aug_mm'], feeds)[0]
                            worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - reference))))
                        rows.append({'model': model_name, 'backend': label, 'people': case[0], 'num_aug': case[1],
                                     'image_hw': list(case[2]), 'max_abs_diff_mm': worst,
                                     'limit_mm': limits[precision], 'ok': bool(worst <= limits[precision]),
                                     'reference_finite': bool(np.all(np.isfinite(reference))),
                                     'capture_failures': list(getattr(backend, 'capture_failures', []))})
                        log(f'{model_name} {label} P={case[0]} A={case[1]} {case[2]}: max |diff| {worst:.4f} mm '
                            f'(limit {limits[precision]} mm)')
    return {'check': 'backend-agreement', 'reference': 'onnxruntime CPU, FP32 ONNX', 'device': device_name(),
            'rows': rows, 'unavailable': unavailable, 'all_ok': all(r['ok'] for r in rows) and bool(rows)}


def write_json(report: dict, path) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(report, f, indent=2)
