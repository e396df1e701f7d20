"""``metrabs-ros train-detector``, ``export-detector``, ``render-detector-scenes`` and ``benchmark-detector``
subcommands.

``register_commands(subparsers)`` adds them to the main CLI parser. Importing this module does not import torch:
the handlers import the PyTorch code when they run.
"""


def register_commands(subparsers) -> None:
    p = subparsers.add_parser('train-detector', help='train the small single-class person detector on scenes')
    p.add_argument('--data', required=True,
                   help='training scenes: a data-engine scene dataset (metrabs-ros synth --kind scenes) or a '
                        'detector scene folder (render-detector-scenes)')
    p.add_argument('--val', default=None, help='held-out scenes for validation (recall@0.5 for > 60 px, AP50)')
    p.add_argument('--out', required=True, help='run folder: config.yaml, log.jsonl, checkpoint.pt, .onnx')
    p.add_argument('--config', default=None,
                   help='YAML config (a path, or a file name in metrabs_ros/training/detector/configs/)')
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                   help='override a config value, e.g. --set optim.steps=2000 (YAML value syntax)')
    p.add_argument('--device', default='cpu', help='cpu or cuda')
    p.add_argument('--resume', action='store_true', help='continue from RUN_DIR/checkpoint.pt (its config)')
    p.add_argument('--no-export', action='store_true', help='skip the ONNX export at the end')
    p.add_argument('--stop-at-step', type=int, default=None,
                   help='end this invocation after that step (checkpoint written; continue with --resume)')
    p.set_defaults(func=cmd_train_detector)

    p = subparsers.add_parser('export-detector', help='export a detector run checkpoint to the native contract')
    p.add_argument('checkpoint', help='RUN_DIR/checkpoint.pt written by train-detector')
    p.add_argument('--out', required=True, help='output .onnx path')
    p.add_argument('--val', default=None, help='scenes whose first frames serve the parity check')
    p.set_defaults(func=cmd_export_detector)

    p = subparsers.add_parser('render-detector-scenes',
                              help='render varied scenes with the numpy renderer into a detector scene folder')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--first-seed', type=int, default=0)
    p.add_argument('--count', type=int, required=True)
    p.set_defaults(func=cmd_render_detector_scenes)

    p = subparsers.add_parser('benchmark-detector',
                              help='CPU timing of a detector .onnx through PersonDetector (ONNX Runtime)')
    p.add_argument('model', help='detector .onnx (any format PersonDetector accepts)')
    p.add_argument('--size', default='640x480', help='frame WIDTHxHEIGHT (default 640x480)')
    p.add_argument('--threads', type=int, default=2, help='ONNX Runtime intra-op threads (default 2)')
    p.add_argument('--repeats', type=int, default=50)
    p.set_defaults(func=cmd_benchmark_detector)


def parse_overrides(items) -> dict:
    """['optim.steps=2000', ...] -> nested dict with YAML-parsed values."""
    import yaml
    result = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise ValueError(f'--set expects KEY=VALUE, got {item!r}')
        node = result
        parts = key.split('.')
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return result


def cmd_train_detector(args) -> int:
    from metrabs_ros.training.detector.train import load_config, train_detector
    config = load_config(args.config, parse_overrides(args.set))
    train_detector(args.data, args.out, val=args.val, config=config, device=args.device, resume=args.resume,
                   export=not args.no_export, stop_at_step=args.stop_at_step)
    return 0


def cmd_export_detector(args) -> int:
    import os
    from metrabs_ros.training.detector.data import open_scenes
    from metrabs_ros.training.detector.train import export_run
    export_run(os.path.dirname(os.path.abspath(args.checkpoint)), args.checkpoint,
               open_scenes(args.val) if args.val else None, out_path=args.out)
    return 0


def cmd_render_detector_scenes(args) -> int:
    from metrabs_ros.training.detector.data import render_scene_folder
    render_scene_folder(args.out, args.first_seed, args.count)
    return 0


def benchmark_detector(model, image_hw=(480, 640), threads=2, repeats=50, seed=0) -> dict:
    """Median and mean milliseconds of ``PersonDetector.detect`` (session + decoding + NMS) and of the bare
    session run on a rendered synthetic frame of ``image_hw`` (2 people)."""
    import time

    import numpy as np

    from metrabs_ros.detection import PersonDetector
    from metrabs_ros.synthetic_scene import render_scene
    detector = PersonDetector(model, num_threads=threads)
    image = render_scene(seed, image_hw=tuple(image_hw), num_people=2).image_rgb
    for _ in range(3):  # warm-up
        detector.detect(image)
    full, bare = [], []
    for _ in range(repeats):  # timing loop
        t0 = time.perf_counter()
        detector.detect(image)
        t1 = time.perf_counter()
        detector._run_network(image)
        t2 = time.perf_counter()
        full.append(t1 - t0)
        bare.append(t2 - t1)
    return dict(model=str(model), image_hw=list(image_hw), threads=threads, repeats=repeats,
                detect_ms_median=1e3 * float(np.median(full)), detect_ms_mean=1e3 * float(np.mean(full)),
                session_ms_median=1e3 * float(np.median(bare)), format=detector.format)


def cmd_benchmark_detector(args) -> int:
    import json
    width, _, height = args.size.lower().partition('x')
    report = benchmark_detector(args.model, (int(height), int(width)), args.threads, args.repeats)
    print(json.dumps(report, indent=1))
    return 0
