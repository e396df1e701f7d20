"""`metrabs-ros build-engine`, `metrabs-ros benchmark-gpu` and `metrabs-ros gpu-agreement`.

``register_commands(subparsers)`` adds them to the CLI; importing this module imports nothing heavy (tensorrt,
torch and cuda-python are imported by the handlers).
"""


def _sizes(text: str):
    """'640x480' -> (480, 640) (W x H on the command line, (H, W) inside)."""
    try:
        w, h = text.lower().split('x')
        return int(h), int(w)
    except ValueError:
        raise ValueError(f'image size must look like WIDTHxHEIGHT, e.g. 640x480, got {text!r}') from None


def register_commands(subparsers) -> None:
    p = subparsers.add_parser('build-engine', help='build (or reuse from the cache) a TensorRT engine for an ONNX '
                                                   'pose or detector model (TensorRT 10 or 11)')
    p.add_argument('model', help='contract ONNX file (FP32; the FP16 export is found beside it as X.fp16.onnx)')
    p.add_argument('--precision', default='auto', choices=['auto', 'fp16', 'fp32'],
                   help='auto: FP16 when buildable (TensorRT 11 needs the FP16 ONNX export), else FP32')
    p.add_argument('--fp16-onnx', help='the FP16 export (`metrabs-ros export --fp16`) if not beside MODEL')
    p.add_argument('--max-people', type=int, default=8, help='largest number of boxes per call (profile max P)')
    p.add_argument('--num-aug', type=int, nargs='+', default=[1, 5],
                   help='augmentation counts in use; the first is the profile optimum')
    p.add_argument('--image-size', nargs='+', default=['640x480'],
                   help='frame sizes WIDTHxHEIGHT in use; the first is the profile optimum')
    p.add_argument('--allow-windows', action='store_true',
                   help='let H and W go down to 4 px (the estimator feeding crop windows instead of full frames)')
    p.add_argument('--dim', action='append', default=[],
                   help='extra/overriding dimension range NAME=MIN:OPT:MAX (e.g. for detector symbols)')
    p.add_argument('--cache-dir', help='engine cache folder (default $METRABS_ROS_ENGINE_CACHE or '
                                       '~/.cache/metrabs_ros/engines)')
    p.add_argument('--workspace-gib', type=float, default=4.0)
    p.add_argument('--optimization-level', type=int, default=3)
    p.add_argument('--force', action='store_true', help='rebuild even if a matching engine is cached')
    p.add_argument('--verbose-trt', action='store_true', help='TensorRT verbose log')
    p.set_defaults(func=cmd_build_engine)

    p = subparsers.add_parser('benchmark-gpu', help='end-to-end latency/throughput per backend (TensorRT, '
                                                    'PyTorch CUDA, ONNX Runtime), model, image size, people, num_aug')
    p.add_argument('--backends', nargs='+', default=['tensorrt', 'torch-cuda', 'cuda', 'onnxruntime'],
                   help='tensorrt, torch-cuda, torch-cpu, cuda (ONNX Runtime CUDA EP), onnxruntime (CPU)')
    p.add_argument('--models', nargs='+', default=['fixture', 'effv2s-256', 'effv2l-384'],
                   help='fixture, effv2s-256, effv2l-384 (random weights)')
    p.add_argument('--people', type=int, nargs='+', default=[1, 3, 8])
    p.add_argument('--image-size', nargs='+', default=['640x480', '1920x1080'], help='WIDTHxHEIGHT')
    p.add_argument('--num-aug', type=int, nargs='+', default=[1, 5])
    p.add_argument('--precision', nargs='+', default=['fp16'], choices=['fp16', 'fp32'],
                   help='precisions of the TensorRT / PyTorch backends')
    p.add_argument('--frames', type=int, default=100)
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--max-seconds', type=float, default=20.0, help='time budget per configuration')
    p.add_argument('--detector', help="'fixture' (colour-key detector: detect_poses) or a detector .onnx; "
                                      'default: boxes given (estimate_poses)')
    p.add_argument('--resolution', type=int, help='override the crop size of every model (quick tests)')
    p.add_argument('--threads', type=int, help='ONNX Runtime threads')
    p.add_argument('--no-cuda-graphs', action='store_true')
    p.add_argument('--work-dir', help='keep the exported models here (default: a temporary folder)')
    p.add_argument('--json', help='write the report as JSON')
    p.set_defaults(func=cmd_benchmark_gpu)

    p = subparsers.add_parser('gpu-agreement', help='max |backend - ONNX Runtime CPU| over poses3d_aug_mm '
                                                    '(1 mm FP32, 5 mm FP16)')
    p.add_argument('--backends', nargs='+', default=['torch-cuda'])
    p.add_argument('--models', nargs='+', default=['fixture'])
    p.add_argument('--precision', nargs='+', default=['fp32', 'fp16'], choices=['fp16', 'fp32'])
    p.add_argument('--case', nargs='+', default=['3,5,640x480', '1,1,1920x1080'],
                   help='PEOPLE,NUM_AUG,WIDTHxHEIGHT (random image and boxes)')
    p.add_argument('--resolution', type=int)
    p.add_argument('--work-dir')
    p.add_argument('--json')
    p.set_defaults(func=cmd_gpu_agreement)


def cmd_build_engine(args) -> int:
    from metrabs_ros.gpu.trt_builder import build_engine, stderr_log
    from metrabs_ros.gpu.trt_plan import parse_dim_override
    overrides = dict(parse_dim_override(d) for d in args.dim)
    result = build_engine(args.model, cache_dir=args.cache_dir, precision=args.precision,
                          max_people=args.max_people, num_augs=args.num_aug,
                          image_sizes_hw=[_sizes(s) for s in args.image_size], allow_windows=args.allow_windows,
                          dim_overrides=overrides, fp16_onnx=args.fp16_onnx, workspace_gib=args.workspace_gib,
                          optimization_level=args.optimization_level, force=args.force, verbose=args.verbose_trt,
                          log=stderr_log)
    print(result.engine_path)
    return 0


def cmd_benchmark_gpu(args) -> int:
    from metrabs_ros.benchmark_gpu import run_gpu_benchmark, write_json
    report = run_gpu_benchmark(backends=args.backends, models=args.models, people=args.people,
                               image_sizes_hw=[_sizes(s) for s in args.image_size], num_augs=args.num_aug,
                               precisions=args.precision, frames=args.frames, warmup=args.warmup,
                               max_seconds=args.max_seconds, detector=args.detector, resolution=args.resolution,
                               threads=args.threads, cuda_graphs=not args.no_cuda_graphs, work_dir=args.work_dir)
    if args.json:
        write_json(report, args.json)
    return 0 if report['rows'] else 3


def cmd_gpu_agreement(args) -> int:
    from metrabs_ros.benchmark_gpu import run_agreement, write_json
    cases = []
    for text in args.case:
        try:
            p, a, size = text.split(',')
            cases.append((int(p), int(a), _sizes(size)))
        except ValueError:
            raise ValueError(f'--case must look like PEOPLE,NUM_AUG,WIDTHxHEIGHT, got {text!r}') from None
    report = run_agreement(backends=args.backends, models=args.models, precisions=args.precision, cases=cases,
                           resolution=args.resolution, work_dir=args.work_dir)
    if args.json:
        write_json(report, args.json)
    print('agreement: ' + ('all within limits' if report['all_ok'] else 'NOT all within limits (see rows)'))
    return 0 if report['all_ok'] else 4
