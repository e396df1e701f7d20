"""`metrabs-ros acae fit | evaluate | attach` (registered by metrabs_ros.training.commands; torch loads lazily)."""


def register_commands(subparsers) -> None:
    acae = subparsers.add_parser('acae', help='affine-combining autoencoder between skeleton formats (fit, '
                                              'evaluate, attach to a model)')
    sub = acae.add_subparsers(dest='acae_command', required=True)

    p = sub.add_parser('fit', help='fit an ACAE on multi-format poses from the data engine')
    p.add_argument('--data', required=True, help='`metrabs-ros synth` folder (crops or scenes) for fitting')
    p.add_argument('--val', default=None, help='held-out `metrabs-ros synth` folder: per-format error reported')
    p.add_argument('--out', required=True, help='output .npz')
    p.add_argument('--formats', default=None,
                   help='decoder (output) formats, comma-separated (default: every registered format in the data)')
    p.add_argument('--encoder-formats', default=None,
                   help='encoder (input) formats (default: the decoder formats); for `attach`, the formats the '
                        'pose model predicts, e.g. smpl_24,coco_19,h36m_17')
    p.add_argument('--latents', default='20,20,8', help='left,right,centre latent counts (default 20,20,8 = 48)')
    p.add_argument('--steps', type=int, default=4000)
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--lr', type=float, default=3e-2, help='initial Adam learning rate (×0.1 at 60 %% and 90 %%)')
    p.add_argument('--sparsity', type=float, default=0.6, help='weight of mean |weight| in the loss')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--max-people', type=int, default=None, help='use at most this many people of --data')
    p.add_argument('--threads', type=int, default=1, help='torch threads (default 1)')
    p.add_argument('--report', default=None, help='also write the fit report (JSON) here')
    p.set_defaults(func=_fit)

    p = sub.add_parser('evaluate', help='per-format reconstruction error of an ACAE on a data folder')
    p.add_argument('acae', help='.npz written by `metrabs-ros acae fit`')
    p.add_argument('--data', required=True)
    p.add_argument('--max-people', type=int, default=None)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser('attach', help='add the ACAE\'s formats to a pose model\'s skeletons (ONNX metadata)')
    p.add_argument('model', help='pose model .onnx whose raw joints include the ACAE encoder\'s joints')
    p.add_argument('acae', help='.npz written by `metrabs-ros acae fit --encoder-formats <the model\'s formats>`')
    p.add_argument('--out', required=True, help='output .onnx (the graph is unchanged; metadata only)')
    p.add_argument('--formats', default=None, help='only these ACAE formats (default: all)')
    p.add_argument('--replace', action='store_true',
                   help='also replace the model\'s own formats by their ACAE-consistent versions')
    p.set_defaults(func=_attach)

    p = sub.add_parser('compare', help='per-format MPJPE and cross-format consistency of training runs '
                                       '(separate heads vs ACAE-regularised vs latent prediction)')
    p.add_argument('runs', nargs='+', help='run folders of `metrabs-ros train` (final.pt, config.yaml)')
    p.add_argument('--val', required=True, help='held-out crops labelling every format of the runs')
    p.add_argument('--max-examples', type=int, default=512)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default=None, help='also write the results (JSON) here')
    p.set_defaults(func=_compare)


def _compare(args) -> int:
    from metrabs_ros.training.format_consistency import compare_command
    return compare_command(args)


def _fit(args) -> int:
    from metrabs_ros.training.acae_fit import fit_command
    return fit_command(args)


def _evaluate(args) -> int:
    from metrabs_ros.training.acae_fit import evaluate_command
    return evaluate_command(args)


def _attach(args) -> int:
    from metrabs_ros.training.acae_attach import attach_acae
    formats = [f.strip() for f in args.formats.split(',')] if args.formats else None
    added = attach_acae(args.model, args.acae, args.out, formats=formats, replace=args.replace)
    print(f'wrote {args.out}: skeletons {", ".join(added)} added from {args.acae}')
    return 0
