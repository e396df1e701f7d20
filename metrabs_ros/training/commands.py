"""`metrabs-ros export` and `metrabs-ros import-official` subcommands.

`register_commands(subparsers)` adds them to the main CLI parser. Importing this module does not import torch:
each handler imports the PyTorch code when it runs.
"""


def register_commands(subparsers) -> None:
    p = subparsers.add_parser(
        'export', help='export a metrabs_ros checkpoint (torch.save of {config, state_dict}) to a contract ONNX model')
    p.add_argument('checkpoint', help='checkpoint file written by metrabs_ros.training.checkpoint.save_checkpoint')
    _add_export_args(p)
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser(
        'import-official', help='convert an official MeTRAbs PyTorch model folder (config.yaml, ckpt.pt, '
                                'joint_info.npz, skeleton_infos.pkl, joint_transform_matrix.npy) to ONNX')
    p.add_argument('folder', help='e.g. metrabs_eff2l_384px_800k_28ds_pytorch/')
    p.add_argument('--default-skeleton', default=None,
                   help='skeleton used when callers ask for none (default: smpl+head_30 when present)')
    _add_export_args(p)
    p.set_defaults(func=cmd_import_official)

    # Data engine, training, evaluation and detector training register their own subcommands (lazy imports).
    import importlib
    for module_name in ('metrabs_ros.training.synth.commands', 'metrabs_ros.training.train_commands',
                        'metrabs_ros.training.acae_commands',
                        'metrabs_ros.training.detector.commands', 'metrabs_ros.training.convert_detector',
                        'metrabs_ros.training.evaluate_real',
                        'metrabs_ros.gpu.commands'):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if not module_name.startswith(error.name or '\0'):
                raise
            continue
        module.register_commands(subparsers)


def _add_export_args(p) -> None:
    p.add_argument('--out', required=True, help='output .onnx path')
    p.add_argument('--fp16', action='store_true',
                   help='FP16 backbone/head (strongly typed ONNX for TensorRT); warp, soft-argmax and solve stay FP32')
    p.add_argument('--no-parity', action='store_true', help='skip the ONNX Runtime vs PyTorch parity check')
    p.add_argument('--antialias-factor', type=int, default=1, metavar='F',
                   help='crop supersampling factor fixed in the graph: render each crop at F x resolution and '
                        'average-pool FxF (the official antialias_factor; 1 = none, the default; costs F^2 x the '
                        'warp). See docs/export.md')


def cmd_export(args) -> int:
    from metrabs_ros.training.checkpoint import load_checkpoint, metadata_from_config
    from metrabs_ros.training.export import contract_metadata, export_for_deployment

    graph, config = load_checkpoint(args.checkpoint)
    graph.set_antialias_factor(getattr(args, 'antialias_factor', 1))
    extra = metadata_from_config(config)
    meta = contract_metadata(graph, name=extra.pop('name', ''), description=extra.pop('description', ''),
                             training=extra.pop('training', ''), joint_edges=extra.pop('joint_edges', ()),
                             skeletons=extra.pop('skeletons', None),
                             default_skeleton=extra.pop('default_skeleton', None))
    meta.update(extra)
    export_for_deployment(graph, args.out, meta, fp16=args.fp16, parity=not args.no_parity)
    return 0


def cmd_import_official(args) -> int:
    from metrabs_ros.training.import_official import import_official

    import_official(args.folder, args.out, fp16=args.fp16, parity=not args.no_parity,
                    default_skeleton=args.default_skeleton, antialias_factor=getattr(args, 'antialias_factor', 1))
    return 0
