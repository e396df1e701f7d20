"""`metrabs-ros train` and `metrabs-ros evaluate` subcommands.

`register_commands(subparsers)` adds them to the main CLI parser. Importing this module imports neither torch nor
the training code: each handler imports what it needs when it runs (`evaluate` needs no torch at all).
"""
import json


def register_commands(subparsers) -> None:
    p = subparsers.add_parser(
        'train', help='train a pose model on data-engine samples (resumable; writes checkpoints for `export`)')
    p.add_argument('--config', default=None,
                   help='YAML/JSON config (see metrabs_ros/training/configs/; unspecified keys take the defaults, '
                        'the complete config is written to RUN_DIR/config.yaml)')
    p.add_argument('--data', required=True, help='training data folder (`metrabs-ros synth` output or .npz samples)')
    p.add_argument('--val', default=None, help='validation data folder (a few hundred people at most)')
    p.add_argument('--out', required=True, help='run folder (config, logs, checkpoints)')
    p.add_argument('--device', default='cpu', help='cpu or cuda (cuda: float16 autocast when optim.amp)')
    p.add_argument('--resume', action='store_true', help='continue from the newest checkpoint in --out')
    p.add_argument('--steps', type=int, default=None, help='override optim.steps')
    p.add_argument('--batch-size', type=int, default=None, help='override optim.batch_size')
    p.add_argument('--seed', type=int, default=None, help='override seed')
    p.add_argument('--workers', type=int, default=None, help='override run.num_workers')
    p.add_argument('--threads', type=int, default=None, help='override run.threads (torch intra-op threads)')
    p.add_argument('--max-steps-this-run', type=int, default=None,
                   help='stop after this many steps (checkpointed; continue later with --resume)')
    p.add_argument('--progress', action='store_true', help='progress line even when stderr is not a terminal')
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        'evaluate', help='evaluate a contract pose model (and detector) with the library pipeline on held-out '
                         'synthetic scenes: MPJPE, PA-MPJPE, PCK@150, AUC, MRPE by distance, detection AP50/recall')
    p.add_argument('model', help='pose model .onnx')
    p.add_argument('--data', required=True, help='held-out data folder (scenes samples; crops samples also work)')
    p.add_argument('--detector', default=None, help='person detector .onnx: detection metrics + detected boxes')
    p.add_argument('--gt-boxes', action='store_true',
                   help='feed the GT boxes through estimate_poses (isolates the pose model; default without '
                        '--detector)')
    p.add_argument('--num-aug', type=int, default=1, help='test-time augmentations (default 1)')
    p.add_argument('--out', default=None, help='report folder: report.json, pck_curve.png, error_by_distance.png')
    p.add_argument('--max-samples', type=int, default=None, help='evaluate only the first N samples')
    p.add_argument('--formats', default=None, help='comma-separated skeleton formats (default: all the model and '
                                                   'the data share)')
    p.add_argument('--min-person-pixels', type=int, default=100,
                   help='people with fewer visible pixels are left out of the pose metrics (default 100)')
    p.add_argument('--detector-threshold', type=float, default=None,
                   help="person score threshold (default: the detector's recommended one, else 0.3)")
    p.add_argument('--threads', type=int, default=None, help='ONNX Runtime threads')
    p.add_argument('--backend', default='cpu', help='cpu (default), auto, cuda, ort-tensorrt')
    p.set_defaults(func=cmd_evaluate)


def cmd_train(args) -> int:
    from metrabs_ros.training.train_pose import load_config, train

    overrides = {}
    if args.steps is not None:
        overrides.setdefault('optim', {})['steps'] = args.steps
    if args.batch_size is not None:
        overrides.setdefault('optim', {})['batch_size'] = args.batch_size
    if args.seed is not None:
        overrides['seed'] = args.seed
    if args.workers is not None:
        overrides.setdefault('run', {})['num_workers'] = args.workers
    if args.threads is not None:
        overrides.setdefault('run', {})['threads'] = args.threads
    if args.progress:
        overrides.setdefault('run', {})['progress'] = True
    cfg = load_config(args.config, overrides)
    result = train(cfg, args.data, args.out, val=args.val, device=args.device, resume=args.resume,
                   max_steps_this_run=args.max_steps_this_run)
    print(json.dumps({k: result[k] for k in ('step', 'checkpoint', 'final_checkpoint', 'steps_per_s', 'val')},
                     default=float))
    return 0


def cmd_evaluate(args) -> int:
    from metrabs_ros.training.evaluate import evaluate_model

    formats = [f.strip() for f in args.formats.split(',')] if args.formats else None
    evaluate_model(args.model, args.data, detector_path=args.detector, num_aug=args.num_aug,
                   gt_boxes=True if args.gt_boxes else None, out_dir=args.out, max_samples=args.max_samples,
                   formats=formats, min_person_pixels=args.min_person_pixels,
                   detector_threshold=args.detector_threshold, threads=args.threads, backend=args.backend)
    return 0
