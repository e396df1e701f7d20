"""`metrabs-ros synth` subcommand. Importing this module imports neither torch nor anny (the handler does)."""


def register_commands(subparsers) -> None:
    p = subparsers.add_parser(
        'synth', help='render synthetic people (Anny bodies, DeepMimic/procedural poses) with exact ground truth '
                      'into shards (see docs/synthetic_data.md)')
    p.add_argument('--kind', choices=('crops', 'scenes'), default='crops',
                   help='crops: person-centred crops rendered through the crop camera; scenes: full images')
    p.add_argument('--count', type=int, required=True, help='number of samples')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--split', choices=('train', 'val'), default='train',
                   help='val uses held-out motion clips and background photos')
    p.add_argument('--out', required=True, help='output folder (e.g. generated/synth/crops-train)')
    p.add_argument('--workers', type=int, default=1, help='processes (the result does not depend on it)')
    p.add_argument('--size', type=int, default=256, help='crop side in pixels (crops)')
    p.add_argument('--image-size', default='640x480',
                   help="scenes: WIDTHxHEIGHT, or 'random' for a mix of sizes")
    p.add_argument('--shard-size', type=int, default=None,
                   help='samples per shard, a multiple of 16 (default: count/16 rounded up, 16..256)')
    p.add_argument('--image-format', choices=('jpg', 'png', 'raw'), default='jpg')
    p.add_argument('--jpeg-quality', type=int, default=92)
    p.add_argument('--preview', default=None, help='also write a PNG contact sheet of the first 16 samples with GT')
    p.set_defaults(func=cmd_synth)


def cmd_synth(args) -> int:
    from metrabs_ros.training.synth.generate import contact_sheet, generate_dataset
    from metrabs_ros.training.synth.scene import Settings
    from metrabs_ros.training.synth.shards import open_dataset

    if args.image_size == 'random':
        scene_hw = None
    else:
        try:
            w, h = (int(v) for v in args.image_size.lower().split('x'))
        except ValueError:
            raise SystemExit(f"--image-size must be WIDTHxHEIGHT or 'random', got {args.image_size!r}")
        scene_hw = (h, w)
    settings = Settings(crop_size=args.size, scene_hw=scene_hw, jpeg_quality=args.jpeg_quality)
    generate_dataset(args.out, args.kind, args.count, args.seed, args.split, args.workers, settings,
                     args.shard_size, args.image_format, command=_command_line(args))
    if args.preview:
        print('preview:', contact_sheet(open_dataset(args.out), args.preview))
    return 0


def _command_line(args) -> str:
    """The equivalent command line (recorded in the manifest so the data set can be regenerated)."""
    parts = ['metrabs-ros synth', f'--kind {args.kind}', f'--count {args.count}', f'--seed {args.seed}',
             f'--split {args.split}', f'--out {args.out}', f'--workers {args.workers}', f'--size {args.size}',
             f'--image-size {args.image_size}', f'--image-format {args.image_format}',
             f'--jpeg-quality {args.jpeg_quality}']
    if args.shard_size is not None:
        parts.append(f'--shard-size {args.shard_size}')
    return ' '.join(parts)
