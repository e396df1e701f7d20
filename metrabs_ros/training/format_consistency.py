"""Cross-format consistency and per-format accuracy of pose models — `metrabs-ros acae compare RUN_DIR ...`.

The comparison of the WACV'23 paper, measured on held-out synthetic crops that label every format:

  MPJPE per format      root-relative mean per-joint error (mm) of each output format.
  consistency error     for every anatomical joint that two formats share by name (e.g. the left knee 'lkne' of
                        coco_19 and of h36m_17), the error of the predicted inter-format offset:
                        |(pred_a − pred_b) − (true_a − true_b)| (mm), averaged over joint pairs and people. The
                        formats define such joints differently (a COCO knee is a surface keypoint, an H36M knee a
                        joint centre), so the target offset is the true one, not zero. A model whose formats were
                        learned from disjoint "datasets" without a bridge between them tends to place the same
                        joint inconsistently across formats.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from metrabs_ros.training import metrics


def shared_joint_pairs(format_joint_names: Dict[str, Sequence[str]], formats: Sequence[str]
                       ) -> List[Tuple[str, str, str]]:
    """(joint name, format a, format b) for every joint name present in two of `formats` (a < b in order)."""
    pairs = []
    for fa, fb in itertools.combinations(formats, 2):
        common = [n for n in format_joint_names[fa] if n in set(format_joint_names[fb])]
        pairs.extend((n, fa, fb) for n in common)
    return pairs


def consistency_errors_mm(pred_by_format: Dict[str, np.ndarray], true_by_format: Dict[str, np.ndarray],
                          format_joint_names: Dict[str, Sequence[str]]) -> Dict[str, object]:
    """Inter-format offset errors (mm) over the shared joints of the given formats ({format: [N, J_f, 3] mm}).

    Returns {'mean_mm', 'per_pair': {'fa|fb': mean}, 'per_joint': {name: mean}, 'num_pairs'}."""
    formats = [f for f in format_joint_names if f in pred_by_format]
    pairs = shared_joint_pairs(format_joint_names, formats)
    if not pairs:
        return {'mean_mm': float('nan'), 'per_pair': {}, 'per_joint': {}, 'num_pairs': 0}
    per_pair: Dict[str, List[np.ndarray]] = {}
    per_joint: Dict[str, List[np.ndarray]] = {}
    every = []
    for name, fa, fb in pairs:
        ia, ib = list(format_joint_names[fa]).index(name), list(format_joint_names[fb]).index(name)
        offset_pred = pred_by_format[fa][:, ia] - pred_by_format[fb][:, ib]
        offset_true = true_by_format[fa][:, ia] - true_by_format[fb][:, ib]
        err = np.linalg.norm(offset_pred - offset_true, axis=-1)
        per_pair.setdefault(f'{fa}|{fb}', []).append(err)
        per_joint.setdefault(name, []).append(err)
        every.append(err)
    return {'mean_mm': float(np.mean(every)), 'num_pairs': len(pairs),
            'per_pair': {k: float(np.mean(v)) for k, v in per_pair.items()},
            'per_joint': {k: float(np.mean(v)) for k, v in per_joint.items()}}


@torch.no_grad()
def evaluate_run(run_dir: str, val: str, max_examples: int = 512, checkpoint: str = 'final.pt') -> dict:
    """Per-format MPJPE and cross-format consistency of a training run's checkpoint on held-out crops."""
    from metrabs_ros.training import augment as aug
    from metrabs_ros.training.checkpoint import load_checkpoint
    from metrabs_ros.training.train_pose import (CropDataset, joint_layout, predict_crop_poses, validation_batch,
                                                 validation_examples)
    path = os.path.join(run_dir, checkpoint)
    graph, _ = load_checkpoint(path)
    cfg = _run_config(run_dir)
    layout = joint_layout(cfg)
    samples = aug.open_samples(val)
    augment_cfg = aug.AugmentConfig.from_dict(cfg['augment'])
    dataset = CropDataset(samples, layout, int(cfg['model']['resolution']), augment_cfg, int(cfg['seed']))
    batch = validation_batch(dataset, validation_examples(samples, max_examples), augment_cfg.eval_gamma)
    pred = predict_crop_poses(graph, batch)
    true = batch['joints_mm'].numpy()
    valid = batch['joint_valid'].numpy()
    people = np.all(valid, axis=1)          # people labelled in every format
    pred_f = {f: pred[people][:, layout.indices(f)] for f in layout.formats}
    true_f = {f: true[people][:, layout.indices(f)] for f in layout.formats}
    per_format = {}
    for f in layout.formats:
        rep = metrics.pose_report(pred_f[f], true_f[f], metrics.root_index(f, layout.format_joint_names[f]))
        per_format[f] = {'mpjpe_mm': rep['mpjpe_mm'], 'pa_mpjpe_mm': rep['pa_mpjpe_mm'], 'pck150': rep['pck150']}
    return {'run': run_dir, 'checkpoint': path, 'people': int(people.sum()), 'per_format': per_format,
            'consistency': consistency_errors_mm(pred_f, true_f, layout.format_joint_names),
            'training': _training_summary(cfg)}


def _run_config(run_dir: str) -> dict:
    import yaml
    from metrabs_ros.training.train_pose import load_config
    with open(os.path.join(run_dir, 'config.yaml')) as f:
        cfg = yaml.safe_load(f)
    cfg.pop('environment', None)
    return load_config(cfg)


def _training_summary(cfg: dict) -> str:
    parts = []
    if cfg['data'].get('label_groups'):
        parts.append('one format per sample (' + ' / '.join(','.join(g) for g in cfg['data']['label_groups']) + ')')
    if cfg['model'].get('latent_acae'):
        parts.append('latent prediction (ACAE decoder)')
    if float(cfg['loss'].get('acae_consistency_weight') or 0) > 0:
        parts.append(f"ACAE consistency × {cfg['loss']['acae_consistency_weight']}")
    if not parts[1:]:
        parts.append('separate outputs per format')
    return '; '.join(parts) + f", {cfg['optim']['steps']} steps"


def markdown_table(results: Sequence[dict]) -> str:
    formats = list(results[0]['per_format'])
    head = '| run | training | ' + ' | '.join(f'MPJPE {f}' for f in formats) + ' | consistency error |'
    lines = [head, '|' + '---|' * (3 + len(formats))]
    for r in results:
        cells = [f"{r['per_format'][f]['mpjpe_mm']:.1f} mm" for f in formats]
        lines.append(f"| {os.path.basename(os.path.normpath(r['run']))} | {r['training']} | " + ' | '.join(cells)
                     + f" | {r['consistency']['mean_mm']:.1f} mm |")
    return '\n'.join(lines)


def compare_command(args) -> int:
    torch.set_num_threads(max(1, int(args.threads)))
    results = [evaluate_run(run, args.val, args.max_examples) for run in args.runs]
    print(markdown_table(results))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=1)
        print(f'wrote {args.out}')
    return 0
