"""``metrabs-ros`` command line: predict on images/videos, inspect models, benchmark the CPU pipeline.

Training and export commands live in ``metrabs_ros.training`` (PyTorch) and are loaded only when called.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np


class Progress:
    """A minimal progress line on stderr (no dependency); silent when stderr is not a terminal unless forced."""

    def __init__(self, total=None, label='frames', enabled=None):
        self.total, self.label, self.count, self.start = total, label, 0, time.perf_counter()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def update(self, n=1):
        self.count += n
        if self.enabled:
            rate = self.count / max(time.perf_counter() - self.start, 1e-9)
            total = f'/{self.total}' if self.total else ''
            sys.stderr.write(f'\r{self.count}{total} {self.label} ({rate:.1f}/s)')
            sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write('\n')


def _add_model_args(parser):
    parser.add_argument('--model', help='pose model .onnx (default: embedded model or $METRABS_ROS_MODEL)')
    parser.add_argument('--detector', help='person detector .onnx (default: embedded or $METRABS_ROS_DETECTOR)')
    parser.add_argument('--detector-format', default='auto',
                        help='auto, native, yolov5, yolov8, yolox or end2end (default: auto)')
    parser.add_argument('--backend', default='auto',
                        help='auto (best available), tensorrt, torch-cuda, cuda (ONNX Runtime CUDA), onnxruntime/cpu, '
                             'ort-tensorrt; see docs/gpu.md')
    parser.add_argument('--checkpoint', help='PyTorch checkpoint for --backend torch-cuda (default: MODEL.pt)')
    parser.add_argument('--precision', default='auto', choices=('auto', 'fp16', 'fp32'),
                        help='precision of the tensorrt / torch-cuda backends')
    parser.add_argument('--threads', type=int, default=None, help='ONNX Runtime threads per session')


def _person_json(result, i):
    x, y, w, h, score = (float(v) for v in result.boxes[i])
    person = {'box': [x, y, w, h, score],
              'joints3d_mm': np.round(result.poses3d_mm[i].astype(np.float64), 2).tolist(),
              'joints2d_px': np.round(result.poses2d_px[i].astype(np.float64), 2).tolist()}
    if result.uncertainty is not None:
        person['uncertainty_mm'] = np.round(result.uncertainty[i].astype(np.float64), 2).tolist()
    return person


def cmd_predict(args) -> int:
    from metrabs_ros.estimator import PoseEstimator
    from metrabs_ros.io_utils import count_frames, iterate_frames, load_intrinsics, write_image_rgb
    from metrabs_ros.visualization import draw_poses_2d, side_by_side
    import cv2

    estimator = PoseEstimator(args.model, args.detector, backend=args.backend, num_threads=args.threads,
                              detector_format=args.detector_format, torch_checkpoint=args.checkpoint,
                              precision=args.precision)
    estimator.validate_skeleton(args.skeleton)
    camera_kwargs = load_intrinsics(args.intrinsics) if args.intrinsics else {}
    json_file = open(args.json, 'w') if args.json else None
    out = Path(args.out) if args.out else None
    writer = None
    progress = Progress(count_frames(args.input), enabled=None if not args.progress else True)
    n_frames = n_people = 0
    try:
        for name, image, fps in iterate_frames(args.input):
            result = estimator.detect_poses(
                image, default_fov_degrees=args.fov, num_aug=args.num_aug, skeleton=args.skeleton,
                detector_threshold=args.detector_threshold, max_detections=args.max_detections,
                detector_tiles=args.detector_tiles,
                suppress_implausible_poses=not args.no_suppress, antialias_factor=args.antialias_factor,
                undistortion=args.undistortion, **camera_kwargs)
            n_frames += 1
            n_people += len(result)
            if json_file:
                json_file.write(json.dumps({
                    'image': name, 'people': [_person_json(result, i) for i in range(len(result))],
                    'skeleton': result.skeleton, 'joint_names': list(result.joint_names)}) + '\n')
            if out is not None:
                frame = side_by_side(image, result) if args.view3d else draw_poses_2d(image, result)
                if out.suffix.lower() in ('.mp4', '.avi', '.mkv'):
                    if writer is None:
                        out.parent.mkdir(parents=True, exist_ok=True)
                        fourcc = cv2.VideoWriter_fourcc(*('mp4v' if out.suffix.lower() == '.mp4' else 'MJPG'))
                        writer = cv2.VideoWriter(str(out), fourcc, fps or 10.0, (frame.shape[1], frame.shape[0]))
                    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                elif out.suffix.lower() in ('.png', '.jpg', '.jpeg'):
                    write_image_rgb(out, frame)
                else:
                    write_image_rgb(out / f'{Path(name).stem}.png', frame)
            progress.update()
    finally:
        progress.close()
        if json_file:
            json_file.close()
        if writer is not None:
            writer.release()
    print(f'{n_frames} frame(s), {n_people} person detection(s); model {estimator.info.name or args.model}, '
          f'skeleton {estimator.info.skeleton(args.skeleton).name}')
    return 0


def cmd_info(args) -> int:
    from metrabs_ros.model_contract import read_pose_model_info
    from metrabs_ros.onnx_backend import create_session
    from metrabs_ros.embedded_models import default_pose_model_path
    path = args.model or str(default_pose_model_path())
    session = create_session(path, backend='cpu')
    info = read_pose_model_info(session, path)
    print(f'pose model: {path}')
    for key in ('name', 'description', 'training'):
        if info.metadata.get(key):
            print(f'  {key}: {info.metadata[key]}')
    print(f'  input resolution: {info.resolution} px, raw joints: {len(info.joint_names)}, '
          f'uncertainty: {info.has_uncertainty}')
    print(f'  skeletons: {", ".join(sorted(info.skeletons))} (default {info.default_skeleton})')
    print(f'  antialias factor (crop supersampling, fixed at export): {info.metadata.get("antialias_factor", "1")}')
    print(f'  providers: {", ".join(session.get_providers())}')
    return 0


def cmd_check_engine_compat(args) -> int:
    from metrabs_ros.gpu.engine_compat import cmd_check_engine_compat as run
    return run(args)


def cmd_benchmark(args) -> int:
    from metrabs_ros.benchmark_cpu import run_cpu_benchmark
    report = run_cpu_benchmark(model=args.model, detector=args.detector, people=args.people,
                               num_aug=args.num_aug, frames=args.frames, threads=args.threads,
                               image_hw=(args.height, args.width), fixture=args.fixture,
                               detector_threshold=args.detector_threshold if args.detector_threshold >= 0 else None)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='metrabs-ros', description=__doc__)
    parser.add_argument('-v', '--verbose', action='store_true')
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('predict', help='3D poses for an image, a folder of images or a video')
    p.add_argument('input')
    _add_model_args(p)
    p.add_argument('--intrinsics', help='camera file (JSON {"K", "dist", "distortion_model"} or ROS YAML)')
    p.add_argument('--fov', type=float, default=55.0, help='assumed field of view (deg) without --intrinsics')
    p.add_argument('--skeleton', default='', help="output skeleton ('' = the model's default)")
    p.add_argument('--num-aug', type=int, default=1, help='test-time augmentations per person (1-5+)')
    p.add_argument('--detector-threshold', type=float, default=None,
                   help="person score threshold (default: the detector's recommended one; 0.3 for models without)")
    p.add_argument('--detector-tiles', default='off',
                   help="small-people pass: 'off' or ROWSxCOLS (e.g. 2x2): the detector also runs on each tile")
    p.add_argument('--max-detections', type=int, default=-1)
    p.add_argument('--no-suppress', action='store_true', help='keep implausible poses')
    p.add_argument('--antialias-factor', type=int, default=None, metavar='F',
                   help="crop supersampling factor; default: the model's (fixed at export, see docs/export.md)")
    p.add_argument('--undistortion', default='converged', choices=('converged', 'official'),
                   help='box-point undistortion: converged (default) or official (the official 5 fixed-point '
                        'iterations, for bit-level agreement with published results; see docs/export.md)')
    p.add_argument('--json', help='write one JSON line per image')
    p.add_argument('--out', help='annotated output: .mp4/.avi video, .png/.jpg image, or a folder')
    p.add_argument('--view3d', action='store_true', help='add a 3D view next to the 2D overlay')
    p.add_argument('--progress', action='store_true', help='show progress even when not on a terminal')
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser('info', help='describe a pose model file')
    p.add_argument('model', nargs='?')
    p.set_defaults(func=cmd_info)

    p = sub.add_parser('benchmark', help='CPU pipeline timing: time outside the model sessions and end to end')
    _add_model_args(p)
    p.add_argument('--people', type=int, nargs='+', default=[1, 3, 5])
    p.add_argument('--num-aug', type=int, default=1)
    p.add_argument('--frames', type=int, default=50)
    p.add_argument('--width', type=int, default=640)
    p.add_argument('--height', type=int, default=480)
    p.add_argument('--fixture', action='store_true',
                   help='build small test-fixture models (needs torch) instead of the embedded ones')
    p.add_argument('--json', help='write the report as JSON')
    p.add_argument('--detector-threshold', type=float, default=0.3,
                   help='person score threshold (default 0.3: the rendered people score lower with the real-photo '
                        "detector than real people; negative = the detector's recommendation)")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser('check-engine-compat',
                       help='static TensorRT 10/11 compatibility check of ONNX graphs (operators, types, '
                            'attributes, dynamic shapes; needs the onnx package); exit 1 if anything is unsupported')
    p.add_argument('models', nargs='+', help='.onnx files')
    p.add_argument('--json', help='write the findings as JSON')
    p.add_argument('--strict', action='store_true', help='also fail on limited support')
    p.add_argument('--as-file', action='store_true',
                   help="check the file as it is, not the graph build-engine hands TensorRT (after its exact "
                        "rewrites, e.g. of the detectors' antialiased letterbox Resize)")
    p.set_defaults(func=cmd_check_engine_compat)

    try:    # fp16-numerics reads data-engine samples (metrabs_ros.training); imports onnx when it runs
        from metrabs_ros.training.fp16_numerics import add_parser as add_fp16_numerics_parser
    except ModuleNotFoundError as error:
        if not (error.name or '').startswith('metrabs_ros.training'):
            raise
    else:
        add_fp16_numerics_parser(sub)

    try:    # evaluate-real-pose (numpy + ONNX Runtime; the MoveNet teacher runs in the numpy graph interpreter)
        from metrabs_ros.training.evaluate_real_pose import register_commands as add_evaluate_real_pose_parser
    except ModuleNotFoundError as error:
        if not (error.name or '').startswith('metrabs_ros.training'):
            raise
    else:
        add_evaluate_real_pose_parser(sub)

    from metrabs_ros.tracking_eval import add_evaluate_tracking_parser
    add_evaluate_tracking_parser(sub, _add_model_args)   # evaluate-tracking (numpy; estimator only for video)

    # Export / import commands (PyTorch) register themselves; their module imports torch only when they run.
    try:
        from metrabs_ros.training.commands import register_commands
    except ModuleNotFoundError as error:
        if error.name != 'metrabs_ros.training.commands':
            raise
    else:
        register_commands(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format='%(levelname)s %(name)s: %(message)s')
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f'metrabs-ros {args.command}: error: {error}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
