"""Training loop of the person detector (``metrabs-ros train-detector``): config, resumable checkpoints, progress,
logged losses, periodic validation (recall@0.5 for people taller than 60 px, AP50) and the final ONNX export.

Run folder layout:
  config.yaml        the resolved config (every choice, defaults filled in); a resumed run reads it back
  log.jsonl          one JSON object per logged step / validation
  checkpoint.pt      latest state: model, EMA model, optimizer, step, config (written atomically)
  person_detector.onnx  export of the EMA weights to the native detector contract (at the end)
"""
from __future__ import annotations

import copy
import json
import math
import os
import time

import numpy as np
import torch
import yaml

from metrabs_ros.training.detector.data import AugmentConfig, DetectorTrainingSet, open_scenes
from metrabs_ros.training.detector.losses import detector_loss
from metrabs_ros.training.detector.model import build_model

CONFIG_DIR = os.path.join(os.path.dirname(__file__), 'configs')

DEFAULT_CONFIG = {
    'name': 'metrabs_ros person detector',
    'model': {'backbone': 'mobilenetv3-small', 'neck_channels': 64, 'head_channels': 64, 'out_stride': 8,
              'bn_momentum': 0.1},
    'input_side': 320,
    'top_k': 100,
    'targets': {'alpha': 0.54, 'beta': 0.54},
    'loss': {'box_weight': 5.0},
    'augment': {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in AugmentConfig().__dict__.items()},
    'optim': {'lr': 2e-3, 'weight_decay': 1e-4, 'warmup_steps': 300, 'steps': 20000, 'batch_size': 32,
              'grad_clip': 10.0, 'ema_decay': 0.999, 'final_lr_fraction': 0.02},
    'data': {'workers': 2, 'seed': 0, 'torch_threads': 0},
    'validation': {'every_steps': 1000, 'max_images': 300, 'score_threshold': 0.3, 'nms_iou_threshold': 0.7,
                   'candidate_threshold': 0.05, 'min_height_px': 60.0},
    'checkpoint_every_steps': 500,
    'log_every_steps': 20,
    'init_from': None,     # a train-detector checkpoint.pt: start from its EMA weights (fresh optimizer/schedule)
}


def merge_config(base: dict, override: dict) -> dict:
    """Recursive dict merge; unknown keys are an error (typos must not pass silently)."""
    merged = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if key not in merged:
            raise ValueError(f'unknown detector config key {key!r}; valid: {sorted(merged)}')
        if isinstance(merged[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f'config key {key!r} must be a mapping, got {value!r}')
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | None = None, overrides: dict | None = None) -> dict:
    """DEFAULT_CONFIG updated by the YAML file ``path`` (a file name inside ``configs/`` also works) and then by
    ``overrides``."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    if path:
        if not os.path.exists(path) and os.path.exists(os.path.join(CONFIG_DIR, path)):
            path = os.path.join(CONFIG_DIR, path)
        with open(path) as f:
            config = merge_config(config, yaml.safe_load(f) or {})
    return merge_config(config, overrides or {})


def learning_rate(step: int, optim: dict) -> float:
    """Linear warm-up, then cosine decay to ``final_lr_fraction · lr`` at ``steps``."""
    lr, warmup, total = optim['lr'], optim['warmup_steps'], optim['steps']
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = optim['final_lr_fraction']
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def update_ema(ema, model, decay: float):
    for e, p in zip(ema.state_dict().values(), model.state_dict().values()):
        if e.dtype.is_floating_point:
            e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        else:
            e.copy_(p)


@torch.no_grad()
def evaluate(model, source, config: dict, max_images: int | None = None) -> dict:
    """Recall/precision at the run-time threshold and AP50 of ``model`` on a scene source (original frames,
    the exported computation in torch, NMS as :class:`metrabs_ros.detection.PersonDetector`)."""
    from metrabs_ros.detection import boxes_xyxy_to_result
    from metrabs_ros.training.detector.export import detect_torch
    from metrabs_ros.training.detector.metrics import detection_metrics
    val = config['validation']
    model = model.eval()
    count = len(source) if max_images is None else min(len(source), int(max_images))
    results = []
    for i in range(count):  # loop over validation frames
        image, gt = source.load(i)
        boxes, scores = detect_torch(model, image, config['input_side'], config['top_k'])
        keep = scores >= val['candidate_threshold']
        found = boxes_xyxy_to_result(boxes[keep], scores[keep], image.shape[:2], val['nms_iou_threshold'])
        xyxy = np.concatenate([found[:, :2], found[:, :2] + found[:, 2:4]], axis=1)
        results.append((xyxy, found[:, 4], gt))
    return detection_metrics(results, val['min_height_px'], 0.5, val['score_threshold'])


def _save_atomic(obj, path):
    tmp = path + '.tmp'
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _log(run_dir, record: dict, echo=True):
    with open(os.path.join(run_dir, 'log.jsonl'), 'a') as f:
        f.write(json.dumps(record) + '\n')
    if echo:
        print(' '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in record.items()),
              flush=True)


def train_detector(data: str, out: str, val: str | None = None, config: dict | None = None,
                   device: str = 'cpu', resume: bool = False, export: bool = True,
                   stop_at_step: int | None = None) -> dict:
    """Trains (or resumes) a detector run in ``out``; returns the last validation metrics (or {}).

    ``stop_at_step``: end this invocation after that step (checkpoint written; resume later with ``resume``);
    the schedule still runs to ``optim.steps``. Export happens only when the schedule is complete."""
    os.makedirs(out, exist_ok=True)
    config_path = os.path.join(out, 'config.yaml')
    checkpoint_path = os.path.join(out, 'checkpoint.pt')
    state = None
    if resume and os.path.exists(checkpoint_path):
        state = torch.load(checkpoint_path, map_location='cpu', weights_only=False)
        config = state['config']
    else:
        config = copy.deepcopy(config or DEFAULT_CONFIG)
        if resume:
            print(f'{checkpoint_path} not found: starting a new run', flush=True)
    config['data_path'], config['val_path'], config['device'] = os.fspath(data), val and os.fspath(val), device
    with open(config_path, 'w') as f:
        yaml.safe_dump(config, f, sort_keys=False)

    previous_threads = torch.get_num_threads()
    if config['data']['torch_threads']:
        torch.set_num_threads(int(config['data']['torch_threads']))
    try:
        return _train(config, data, out, val, device, state, checkpoint_path, export, stop_at_step)
    finally:
        torch.set_num_threads(previous_threads)


def _train(config, data, out, val, device, state, checkpoint_path, export, stop_at_step) -> dict:
    torch.manual_seed(config['data']['seed'])
    model = build_model(config).to(device)
    ema = copy.deepcopy(model).eval()
    optim_cfg = config['optim']
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    optimizer = torch.optim.AdamW([{'params': decay, 'weight_decay': optim_cfg['weight_decay']},
                                   {'params': no_decay, 'weight_decay': 0.0}], lr=optim_cfg['lr'])
    step = 0
    if state is None and config.get('init_from'):
        source_state = torch.load(config['init_from'], map_location='cpu', weights_only=False)
        model.load_state_dict(source_state['ema'])
        ema.load_state_dict(source_state['ema'])
        print(f"initialised from the EMA weights of {config['init_from']} (step {source_state['step']})", flush=True)
    if state is not None:
        model.load_state_dict(state['model'])
        ema.load_state_dict(state['ema'])
        optimizer.load_state_dict(state['optimizer'])
        step = int(state['step'])
        print(f'resumed {out} at step {step}', flush=True)

    source = open_scenes(data)
    val_source = open_scenes(val) if val else None
    augment = AugmentConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in config['augment'].items()})
    batch, total = int(optim_cfg['batch_size']), int(optim_cfg['steps'])
    dataset = DetectorTrainingSet(source, config['input_side'], config['model']['out_stride'], augment,
                                  config['data']['seed'], total * batch, **config['targets'])
    subset = torch.utils.data.Subset(dataset, range(step * batch, total * batch))
    workers = int(config['data']['workers'])
    loader = torch.utils.data.DataLoader(subset, batch_size=batch, shuffle=False, num_workers=workers,
                                         drop_last=True, pin_memory=str(device).startswith('cuda'),
                                         prefetch_factor=4 if workers else None)
    print(f'training {config["model"]["backbone"]} at {config["input_side"]} px on {len(source)} scenes '
          f'({device}), steps {step}..{total}, batch {batch}', flush=True)
    metrics = {}
    model.train()
    t_last, step_last, sums = time.perf_counter(), step, {}
    for batch_data in loader:
        lr = learning_rate(step, optim_cfg)
        for group in optimizer.param_groups:
            group['lr'] = lr
        images = batch_data['image'].to(device, non_blocking=True).float().mul_(1.0 / 255.0)
        targets = {k: batch_data[k].to(device, non_blocking=True) for k in ('heat', 'ltrb', 'box_weight')}
        heat_logits, ltrb_px = model(images)
        losses = detector_loss(heat_logits, ltrb_px, targets, config['loss']['box_weight'])
        optimizer.zero_grad(set_to_none=True)
        losses['loss'].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), optim_cfg['grad_clip'])
        optimizer.step()
        update_ema(ema, model, min(optim_cfg['ema_decay'], (1 + step) / (10 + step)))
        step += 1
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        sums['grad_norm'] = sums.get('grad_norm', 0.0) + float(grad_norm)
        if step % config['log_every_steps'] == 0 or step == total:
            now = time.perf_counter()
            n = step - step_last
            record = {'step': step, 'lr': lr, **{k: v / n for k, v in sums.items()},
                      'steps_per_s': n / (now - t_last), 'images_per_s': n * batch / (now - t_last)}
            _log(out, record)
            t_last, step_last, sums = now, step, {}
        stopping = step == total or (stop_at_step is not None and step >= stop_at_step)
        if step % config['checkpoint_every_steps'] == 0 or stopping:
            _save_atomic(dict(config=config, step=step, model=model.state_dict(), ema=ema.state_dict(),
                              optimizer=optimizer.state_dict()), checkpoint_path)
        if val_source is not None and (step % config['validation']['every_steps'] == 0 or step == total):
            metrics = evaluate(ema, val_source, config, config['validation']['max_images'])
            _log(out, {'step': step, 'validation': metrics})
            t_last = time.perf_counter()  # validation time is not training time
        if stopping:
            break
    if export and step >= total:
        export_run(out, checkpoint_path, val_source, metrics)
    return metrics


def training_note(config: dict, step: int, metrics: dict | None) -> str:
    """The ``training`` metadata string of an export."""
    parts = [f'PersonCenterNet {config["model"]["backbone"]} stride {config["model"]["out_stride"]}, '
             f'input {config["input_side"]} px, {step} steps x batch {config["optim"]["batch_size"]}, '
             f'data {config.get("data_path")}']
    if metrics:
        parts.append(f'validation on {config.get("val_path")}: recall@0.5 (h > {metrics["min_height_px"]:g} px, '
                     f'score >= {metrics["score_threshold"]}) {metrics["recall"]:.4f}, AP50 {metrics["ap50"]:.4f}')
    return '; '.join(parts)


def export_run(run_dir: str, checkpoint_path: str | None = None, val_source=None, metrics=None,
               out_path: str | None = None) -> dict:
    """Exports the EMA weights of a run's checkpoint to ``person_detector.onnx`` (or ``out_path``) with a
    torch/ONNX Runtime parity check on a few frames."""
    from metrabs_ros.training.detector.export import export_detector
    checkpoint_path = checkpoint_path or os.path.join(run_dir, 'checkpoint.pt')
    state = torch.load(checkpoint_path, map_location='cpu', weights_only=False)
    config = state['config']
    model = build_model(config)
    model.load_state_dict(state['ema'])
    model.eval()
    if val_source is not None and len(val_source):
        images = [val_source.load(i)[0] for i in range(min(3, len(val_source)))]
    else:
        from metrabs_ros.synthetic_scene import render_scene
        images = [render_scene(s, num_people=2, image_hw=hw).image_rgb for s, hw in ((1, (480, 640)),
                                                                                   (2, (400, 300)))]
    metadata = {'name': config.get('name', 'metrabs_ros person detector'),
                'description': 'single-class person detector (PersonCenterNet) trained on synthetic people',
                'training': training_note(config, state['step'], metrics),
                'config': json.dumps(config)}
    out_path = out_path or os.path.join(run_dir, 'person_detector.onnx')
    report = export_detector(model, out_path, config['input_side'], config['top_k'], metadata, images)
    print(f'exported {report}', flush=True)
    return report
