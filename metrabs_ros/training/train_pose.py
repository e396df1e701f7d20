"""Pose-model training (`metrabs-ros train`): backbone + MeTRAbs head on augmented perspective-correct crops, the
MeTRAbs losses (metrabs_ros.training.losses), AdamW with warmup + cosine (or step) learning rate, gradient clipping,
resumable checkpoints in our checkpoint format (so `metrabs-ros export` turns any of them into a contract ONNX
model), JSONL/CSV logs and periodic validation. CPU or CUDA (autocast float16 + GradScaler there).

Run folder layout (`--out RUN_DIR`):
  config.yaml              the complete resolved configuration (every default written out) + environment
  train_log.jsonl / .csv   one row per `run.log_every` steps: step, lr, losses, steps/s, elapsed seconds
  val_log.jsonl            one row per validation: step and metrics per skeleton format
  checkpoints/step_XXXXXXXX.pt   {'format', 'config', 'state_dict', 'training_state'} (latest `keep_checkpoints`)
  final.pt                 the checkpoint after the last step (same format)

Determinism and resuming: the batch at step s holds the samples at positions s·B … s·B + B − 1 of a sequence of
seeded per-epoch permutations, and the augmentation of slot i uses np.random.default_rng([seed, s, i]); so the data
of every step is a pure function of (seed, step), independent of workers and of interruptions. A checkpoint holds
the model, optimizer, GradScaler, step and the torch RNG state; `--resume` continues from the newest one.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import glob
import json
import math
import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from metrabs_ros.skeletons import mirror_permutation
from metrabs_ros.training import augment as aug
from metrabs_ros.training import metrics
from metrabs_ros.training.checkpoint import CHECKPOINT_FORMAT, graph_from_config, load_state_dict_strict
from metrabs_ros.training.losses import LossSchedule, acae_consistency_loss, metrabs_loss, project_px

DEFAULT_CONFIG: Dict[str, Any] = {
    'seed': 0,
    'model': {
        'backbone': 'mobilenetv3-small',
        'backbone_options': {},
        'resolution': 160,
        'formats': ['smpl_24', 'coco_19', 'h36m_17'],
        'default_skeleton': 'smpl_24',
        'depth_bins': 8,
        'depth_cube_mm': 2200.0,
        'with_uncertainty': False,
        'init_from': None,            # optional checkpoint: copy every parameter whose name and shape match
        'backbone_weights': None,     # converted pretrained backbone (metrabs_ros.training.pretrained_weights,
                                      # generated/pretrained/<kind>.pt), loaded strictly before step 0
        'head': 'metrabs',            # 'metrabs' (volumetric heatmaps) or 'lifting' (metrabs_ros.training.lifting_head)
        'head_options': {},           # LiftingHead options (hidden, base_span_mm, keypoint_channels)
        'head_init': None,            # 'movenet-keypoints': start the head from MoveNet's keypoint logits (the
                                      # backbone_weights file of a movenet-*-fpn kind carries them; movenet_fpn.
                                      # keypoint_head_init): each point's 2D map and depth bins = its keypoint's
                                      # logits x head_init_sharpen, depth flat
        'head_init_sharpen': 4.0,
        'latent_acae': None,          # ACAE .npz: the head predicts its latent points, decoded (frozen decoder) to
                                      # the joints of `formats` (direct latent prediction, WACV'23)
        'name': 'metrabs_ros pose model',
        'description': '',
    },
    'data': {
        'min_person_pixels': 100,     # scenes samples: people with fewer visible pixels are not trained on
        'val_max_examples': 128,      # validation people (deterministic inference crops)
        'label_groups': [],           # e.g. [[smpl_24], [coco_19], [h36m_17]]: simulated datasets — training
                                      # sample i labels only the formats of group i mod len(groups) (others unset)
    },
    'augment': aug.AugmentConfig().to_dict(),
    'optim': {
        'steps': 20000,
        'batch_size': 32,
        'lr': 1e-3,
        'weight_decay': 1e-4,         # AdamW, on weight matrices / conv kernels only
        'betas': [0.9, 0.999],
        'schedule': 'cosine',         # 'cosine' (to lr·min_lr_factor) or 'step' (×step_gamma at step_milestones)
        'warmup_steps': 500,          # linear warmup from 0
        'min_lr_factor': 0.01,
        'step_milestones': [0.8, 0.95],  # fractions of `steps` (or absolute steps when > 1)
        'step_gamma': 0.1,
        'grad_clip_norm': 5.0,        # 0 / None = no clipping
        'early_stages': 0,            # the first N backbone stages (stages(): stem, blocks, last conv) ...
        'early_lr_factor': 1.0,       # ... learn at lr × this factor; 0 = frozen (no gradient, BatchNorm in eval)
        'amp': True,                  # float16 autocast on CUDA (ignored on CPU)
    },
    'loss': {
        'absolute_weight': 0.1,
        'absolute_start_step': 5000,  # a value in (0, 1) is a fraction of optim.steps
        'weak_perspective_steps': 500,  # likewise
        'min_depth_mm': 300.0,
        'acae_file': None,            # ACAE .npz fitted with encoder formats = model.formats
        'acae_consistency_weight': 0.0,  # weight of |P − P·W_enc·W_dec| on the predicted joints (2D and 3D)
        'size_weight': 0.0,           # weight of |size(pred) − size(true)| (losses.skeleton_size_l1_m)
        'lifter_true_2d_fraction': 0.0,  # lifting head: fraction of crops whose lifter reads the true 2D joints
        'lifter_true_2d_noise_px': 2.0,  # ... plus N(0, this) px noise (others read the predicted 2D)
    },
    'run': {
        'checkpoint_every': 1000,
        'keep_checkpoints': 3,
        'validate_every': 1000,
        'log_every': 20,
        'num_workers': 1,             # DataLoader worker processes (0 = in the training process)
        'threads': None,              # torch intra-op threads (None = torch default)
        'channels_last': False,
        'progress': None,             # None = when stderr is a terminal
    },
}


# --- configuration ---------------------------------------------------------------------------------------------

def deep_update(base: dict, override: dict, path: str = '') -> dict:
    """Recursive merge; unknown keys raise (a typo must not silently fall back to a default)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if key not in out:
            raise ValueError(f'unknown config key {path + key!r}; valid: {sorted(out)}')
        if isinstance(out[key], dict) and isinstance(value, dict) and key not in ('backbone_options', 'head_options'):
            out[key] = deep_update(out[key], value, f'{path}{key}.')
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path_or_dict=None, overrides: Optional[dict] = None) -> dict:
    """DEFAULT_CONFIG updated by a YAML/JSON file (or dict) and then by `overrides`."""
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    if path_or_dict is not None:
        if isinstance(path_or_dict, dict):
            user = path_or_dict
        else:
            with open(path_or_dict) as f:
                text = f.read()
            if str(path_or_dict).endswith('.json'):
                user = json.loads(text)
            else:
                import yaml
                user = yaml.safe_load(text) or {}
        user = {k: v for k, v in user.items() if k not in ('environment',)}
        cfg = deep_update(cfg, user)
    if overrides:
        cfg = deep_update(cfg, overrides)
    aug.AugmentConfig.from_dict(cfg['augment'])   # validates names
    return cfg


def _steps_value(value, total_steps: int) -> int:
    value = float(value)
    return int(round(value * total_steps)) if 0 < value < 1 else int(value)


def loss_schedule(cfg: dict) -> LossSchedule:
    loss, steps = cfg['loss'], int(cfg['optim']['steps'])
    return LossSchedule(absolute_weight=float(loss['absolute_weight']),
                        absolute_start_step=_steps_value(loss['absolute_start_step'], steps),
                        weak_perspective_steps=_steps_value(loss['weak_perspective_steps'], steps),
                        min_depth_mm=float(loss['min_depth_mm']),
                        depth_cube_mm=float(cfg['model']['depth_cube_mm']),
                        size_weight=float(loss.get('size_weight') or 0.0))


def learning_rate(cfg: dict, step: int) -> float:
    """Learning rate at `step` (0-based): linear warmup, then cosine to lr·min_lr_factor or step decay."""
    o = cfg['optim']
    total, base, warm = int(o['steps']), float(o['lr']), int(o['warmup_steps'])
    if step < warm:
        return base * (step + 1) / warm
    if o['schedule'] == 'cosine':
        t = (step - warm) / max(1, total - warm)
        floor = base * float(o['min_lr_factor'])
        return floor + (base - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
    if o['schedule'] == 'step':
        drops = sum(step >= _steps_value(m, total) for m in o['step_milestones'])
        return base * float(o['step_gamma']) ** drops
    raise ValueError(f"unknown optim.schedule {o['schedule']!r}; valid: cosine, step")


def joint_layout(cfg: dict) -> aug.JointLayout:
    names = None
    if 'anny_104' in cfg['model']['formats']:
        from metrabs_ros.training.synth.body_model import format_joint_names, load_body_model
        names = format_joint_names(load_body_model())
    return aug.JointLayout.create(cfg['model']['formats'], names)


def model_config(cfg: dict, layout: aug.JointLayout) -> dict:
    """The checkpoint config (metrabs_ros.training.checkpoint) of the trained graph."""
    m = cfg['model']
    if m['default_skeleton'] not in layout.formats:
        raise ValueError(f"model.default_skeleton {m['default_skeleton']!r} not among model.formats {layout.formats}")
    o = cfg['optim']
    latent = None
    if m.get('latent_acae'):
        latent = acae_decoder_for_layout(m['latent_acae'], layout).tolist()
    return {
        'latent_decoder': latent,
        'backbone': m['backbone'], 'backbone_options': dict(m['backbone_options'] or {}),
        'head': m['head'], 'head_options': dict(m['head_options'] or {}),
        'resolution': int(m['resolution']), 'joint_names': list(layout.raw_names),
        'joint_edges': layout.raw_edges(), 'skeletons': layout.skeletons_metadata(),
        'default_skeleton': m['default_skeleton'], 'depth_bins': int(m['depth_bins']),
        'depth_cube_mm': float(m['depth_cube_mm']), 'with_uncertainty': bool(m['with_uncertainty']),
        'name': m['name'], 'description': m['description'],
        'training': (f"metrabs-ros train: {m['backbone']} {m['resolution']} px, formats {','.join(layout.formats)}, "
                     f"{o['steps']} steps x batch {o['batch_size']}, seed {cfg['seed']}"
                     + (f", backbone initialised from {os.path.basename(m['backbone_weights'])}"
                        if m.get('backbone_weights') else '')),
    }


def _qualified_names(layout: aug.JointLayout) -> List[str]:
    """The model's raw joints as the ACAE names them ('<joint>.<format>')."""
    return [f'{n}.{f}' for f in layout.formats for n in layout.format_joint_names[f]]


def _acae_for_layout(path: str, layout: aug.JointLayout):
    """(Acae, the decoder column of every raw joint of the model)."""
    from metrabs_ros.acae import load_acae
    acae = load_acae(path)
    index = {q: i for i, q in enumerate(acae.decoder_joints.names)}
    missing = [q for q in _qualified_names(layout) if q not in index]
    if missing:
        raise ValueError(f'{path}: the ACAE decoder lacks model joints {missing[:4]} (fit it with --formats '
                         f'including {",".join(layout.formats)})')
    return acae, np.array([index[q] for q in _qualified_names(layout)])


def acae_decoder_for_layout(path: str, layout: aug.JointLayout) -> np.ndarray:
    """[L, J_raw]: the ACAE decoder's columns for the model's raw joints (each column sums to 1)."""
    acae, cols = _acae_for_layout(path, layout)
    return acae.decoder[:, cols]


def acae_consistency_matrix(path: str, layout: aug.JointLayout) -> np.ndarray:
    """[J_raw, J_raw] = W_enc · W_dec restricted to the model's joints; the encoder must read exactly them."""
    acae, cols = _acae_for_layout(path, layout)
    enc_names = list(acae.encoder_joints.names)
    raw = _qualified_names(layout)
    if sorted(enc_names) != sorted(raw):
        raise ValueError(f'{path}: the ACAE encoder reads formats {list(acae.encoder_joints.formats)}, the model '
                         f'predicts {list(layout.formats)}; fit it with --encoder-formats {",".join(layout.formats)}')
    order = np.array([enc_names.index(q) for q in raw])
    return acae.encoder[order] @ acae.decoder[:, cols]


def label_group_masks(cfg: dict, layout: aug.JointLayout) -> List[np.ndarray]:
    """One boolean [J_raw] mask per simulated dataset (data.label_groups); [] = every sample labels all."""
    masks = []
    for group in cfg['data']['label_groups'] or []:
        unknown = [f for f in group if f not in layout.formats]
        if unknown:
            raise ValueError(f'data.label_groups names formats {unknown} outside model.formats {layout.formats}')
        mask = np.zeros(len(layout.raw_names), bool)
        for f in group:
            mask[layout.indices(f)] = True
        masks.append(mask)
    return masks


# --- data ------------------------------------------------------------------------------------------------------

class StepBatches:
    """Batch sampler: for step s the items (sample_index, s, slot) at sequence positions s·B + slot, the sequence
    being the concatenation of per-epoch permutations default_rng([seed, 1, epoch]).permutation(N)."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, start_step: int, end_step: int):
        if num_samples < 1:
            raise ValueError('no training samples')
        self.n, self.b, self.seed = int(num_samples), int(batch_size), int(seed)
        self.start, self.end = int(start_step), int(end_step)
        self._perms: Dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {k: v for k, v in self._perms.items() if k >= epoch - 1}
            self._perms[epoch] = np.random.default_rng([self.seed, 1, epoch]).permutation(self.n)
        return self._perms[epoch]

    def indices(self, step: int) -> List[int]:
        pos = step * self.b + np.arange(self.b)
        return [int(self._perm(int(p // self.n))[p % self.n]) for p in pos]

    def __iter__(self):
        for step in range(self.start, self.end):
            yield [(i, step, slot) for slot, i in enumerate(self.indices(step))]

    def __len__(self) -> int:
        return max(0, self.end - self.start)


class CropDataset(torch.utils.data.Dataset):
    """Training crops from data-engine samples (crops or scenes kind, or a mix), indexed by (sample, step, slot).

    `samples`: a folder path (opened lazily in each worker, aug.open_samples) or a sequence of sample dicts."""

    def __init__(self, samples, layout: aug.JointLayout, resolution: int, augment_cfg: aug.AugmentConfig,
                 seed: int, min_person_pixels: int = 0, label_masks: Sequence[np.ndarray] = ()):
        self.label_masks = list(label_masks)
        self._source = samples
        self._samples = None if isinstance(samples, (str, os.PathLike)) else samples
        self.layout = layout
        self.perm = mirror_permutation(layout.raw_names)
        self.resolution = int(resolution)
        self.augment_cfg = augment_cfg
        self.seed = int(seed)
        self.min_person_pixels = int(min_person_pixels)

    @property
    def samples(self):
        if self._samples is None:
            self._samples = aug.open_samples(self._source)
        return self._samples

    def __len__(self) -> int:
        return len(self.samples)

    def example(self, sample: dict, rng: np.random.Generator) -> aug.Example:
        if aug.sample_kind(sample) == 'crops':
            return aug.crop_sample_example(sample)
        n = aug.scene_people_count(sample)
        pixels = np.asarray(sample.get('people/num_pixels', np.full(n, 1 << 30)))
        ok = np.flatnonzero(pixels >= self.min_person_pixels)
        person = int(rng.choice(ok)) if len(ok) else int(np.argmax(pixels))
        return aug.scene_sample_example(sample, person)

    def make(self, example: aug.Example, rng: Optional[np.random.Generator], cfg: aug.AugmentConfig) -> dict:
        crop = aug.make_training_crop(example.image, example.camera, example.box_xywh,
                                      self.layout.gather(example.joints_by_format), self.perm, self.resolution,
                                      rng, cfg)
        return {'image': np.ascontiguousarray(crop.image.transpose(2, 0, 1)), 'intrinsics': crop.intrinsics,
                'joints_mm': crop.joints_mm, 'joint_valid': crop.joint_valid}

    def __getitem__(self, item) -> dict:
        index, step, slot = item
        rng = aug.random_seed_sequence(self.seed, step, slot)
        n = len(self.samples)
        for k in range(min(n, 16)):  # a scene without people or a degenerate sample: the next one (deterministic)
            sample = self.samples[(int(index) + k) % n]
            if not np.all(np.isfinite(np.asarray(sample['K'], np.float64))):
                continue   # e.g. a crop whose target person was not visible at all (its zoom is undefined)
            if aug.sample_kind(sample) == 'crops' or aug.scene_people_count(sample) > 0:
                item = self.make(self.example(sample, rng), rng, self.augment_cfg)
                if self.label_masks:   # this sample's simulated dataset labels only its group's formats
                    group = self.label_masks[((int(index) + k) % n) % len(self.label_masks)]
                    item['joint_valid'] = item['joint_valid'] & group
                return item
        raise ValueError(f'samples {index}..{index + 15} hold no usable person')


def validation_examples(samples, max_examples: int, min_person_pixels: int = 0) -> List[aug.Example]:
    """Every person (crops: the one person) of the first samples, up to `max_examples`."""
    out: List[aug.Example] = []
    for i in range(len(samples)):
        sample = samples[i]
        if not np.all(np.isfinite(np.asarray(sample['K'], np.float64))):
            continue
        if aug.sample_kind(sample) == 'crops':
            out.append(aug.crop_sample_example(sample))
        else:
            pixels = np.asarray(sample.get('people/num_pixels', np.full(aug.scene_people_count(sample), 1 << 30)))
            out.extend(aug.scene_sample_example(sample, p) for p in range(aug.scene_people_count(sample))
                       if pixels[p] >= min_person_pixels)
        if len(out) >= max_examples:
            break
    return out[:max_examples]


def validation_batch(dataset: CropDataset, examples: Sequence[aug.Example], eval_gamma: float) -> dict:
    cfg = aug.AugmentConfig(enabled=False, eval_gamma=eval_gamma)
    items = [dataset.make(ex, None, cfg) for ex in examples]
    batch = {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}
    batch['truncated'] = np.array([ex.truncated for ex in examples], bool)
    return batch


@torch.no_grad()
def predict_crop_poses(graph, batch: dict, device='cpu', chunk: int = 64) -> np.ndarray:
    """Absolute poses [N, J, 3] (mm, each crop's camera frame) of a validation batch, in eval mode."""
    was_training = graph.training
    graph.eval()
    preds = []
    for start in range(0, len(batch['image']), chunk):
        crops = batch['image'][start:start + chunk].to(device)
        poses, _ = graph.crop_poses(crops, batch['intrinsics'][start:start + chunk].to(device))
        preds.append(poses.float().cpu())
    graph.train(was_training)
    return torch.cat(preds).numpy()


@torch.no_grad()
def validate(graph, batch: dict, layout: aug.JointLayout, device, chunk: int = 64) -> dict:
    """Absolute poses (PoseGraph.crop_poses: backbone, head, reconstruction) in each crop's frame vs GT:
    per format MPJPE (root-relative), PA-MPJPE, PCK@150, AUC, MRPE (people whose format joints are all labelled)."""
    pred = predict_crop_poses(graph, batch, device, chunk)
    gt = batch['joints_mm'].numpy()
    valid = batch['joint_valid'].numpy()
    out = {}
    for fmt in layout.formats:
        idx = layout.indices(fmt)
        people = valid[:, idx].all(axis=1)
        if not people.any():
            continue
        rep = metrics.pose_report(pred[people][:, idx], gt[people][:, idx],
                                  metrics.root_index(fmt, layout.format_joint_names[fmt]),
                                  batch['truncated'][people])
        out[fmt] = {'num_people': rep['num_people'], 'mpjpe_mm': rep['mpjpe_mm'], 'pa_mpjpe_mm': rep['pa_mpjpe_mm'],
                    'pck150': rep['pck150'], 'auc': rep['auc'],
                    'mrpe_mean_mm': rep['mrpe_mm']['overall']['mean'],
                    'mrpe_median_mm': rep['mrpe_mm']['overall']['median']}
    return out


# --- checkpoints -----------------------------------------------------------------------------------------------

def save_training_checkpoint(path: str, graph, model_cfg: dict, train_cfg: dict, optimizer, scaler, step: int
                             ) -> str:
    """Our checkpoint format plus 'training_state' (optimizer, scaler, step, RNG, config); atomic write."""
    state = {k: v.detach().cpu().clone() for k, v in graph.state_dict().items()}
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    training_state = {
        'step': int(step), 'optimizer': optimizer.state_dict(), 'scaler': scaler.state_dict(),
        'torch_rng': torch.get_rng_state(),
        'cuda_rng': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        'train_config': json.loads(json.dumps(train_cfg)),
    }
    tmp = path + '.tmp'
    torch.save({'format': CHECKPOINT_FORMAT, 'config': dict(model_cfg), 'state_dict': state,
                'training_state': training_state}, tmp)
    os.replace(tmp, path)
    return path


def latest_checkpoint(run_dir: str) -> Optional[str]:
    paths = sorted(glob.glob(os.path.join(run_dir, 'checkpoints', 'step_*.pt')))
    return paths[-1] if paths else None


def _prune_checkpoints(run_dir: str, keep: int) -> None:
    paths = sorted(glob.glob(os.path.join(run_dir, 'checkpoints', 'step_*.pt')))
    for p in paths[:max(0, len(paths) - max(1, int(keep)))]:
        os.remove(p)


def _init_from(graph, path: str, log) -> None:
    data = torch.load(path, map_location='cpu', weights_only=True)
    source = data.get('state_dict', data)
    own = graph.state_dict()
    matched = {k: v for k, v in source.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    own.update(matched)
    graph.load_state_dict(own)
    log(f'initialised {len(matched)}/{len(own)} tensors from {path}')


# --- logging helpers -------------------------------------------------------------------------------------------

class _ProgressLine:
    def __init__(self, total: int, start: int, enabled: Optional[bool]):
        self.total, self.start = total, start
        self.enabled = sys.stderr.isatty() if enabled is None else bool(enabled)
        self.t0 = time.perf_counter()

    def update(self, step: int, loss: float, rate: float) -> None:
        if not self.enabled:
            return
        left = (self.total - step) / rate if rate > 0 else float('nan')
        eta = time.strftime('%H:%M:%S', time.gmtime(left)) if math.isfinite(left) else '?'
        sys.stderr.write(f'\rstep {step}/{self.total} | {rate:.2f} steps/s | ETA {eta} | loss {loss:.4f}   ')
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write('\n')


def _environment(device: str) -> dict:
    env = {'torch': str(torch.__version__), 'numpy': np.__version__, 'python': platform.python_version(),
           'machine': platform.machine(), 'device': device, 'cpu_count': os.cpu_count(),
           'torch_threads': torch.get_num_threads(), 'argv': list(sys.argv)}
    if device.startswith('cuda'):
        env['cuda_device'] = torch.cuda.get_device_name(0)
    return env


# --- training --------------------------------------------------------------------------------------------------

def _early_backbone_parameters(graph, cfg: dict) -> List[torch.nn.Parameter]:
    n = int(cfg['optim'].get('early_stages') or 0)
    if n == 0:
        return []
    if not hasattr(graph.backbone, 'early_parameters'):
        raise ValueError(f"optim.early_stages needs a staged backbone (movenet-*, efficientnet-lite0), not "
                         f"{cfg['model']['backbone']!r}")
    return graph.backbone.early_parameters(n)


def _optimizer(graph, cfg: dict):
    """AdamW; weight decay on conv/linear weights only; the early backbone stages (optim.early_stages) in their own
    groups with 'lr_factor' optim.early_lr_factor (the loop sets lr = schedule × lr_factor)."""
    o = cfg['optim']
    early_ids = {id(p) for p in _early_backbone_parameters(graph, cfg)}
    factor = float(o.get('early_lr_factor', 1.0))
    groups = []
    for is_early, lr_factor in ((False, 1.0), (True, factor)):
        params = [p for p in graph.parameters() if (id(p) in early_ids) == is_early and p.requires_grad]
        if is_early and lr_factor == 0.0:
            continue
        groups += [{'params': [p for p in params if p.ndim > 1], 'weight_decay': float(o['weight_decay']),
                    'lr_factor': lr_factor},
                   {'params': [p for p in params if p.ndim <= 1], 'weight_decay': 0.0, 'lr_factor': lr_factor}]
    return torch.optim.AdamW([g for g in groups if g['params']], lr=float(o['lr']), betas=tuple(o['betas']))


def _prepare_backbone(graph, cfg: dict, log) -> None:
    """Pretrained backbone weights (model.backbone_weights) and frozen early stages (optim.early_lr_factor 0)."""
    path = cfg['model'].get('backbone_weights')
    if path:
        from metrabs_ros.training.pretrained_weights import load_backbone_weights
        provenance = load_backbone_weights(graph.backbone, path, kind=cfg['model']['backbone'])
        log(f"backbone {cfg['model']['backbone']} initialised from {path} ({provenance.get('package')})")
    if cfg['model'].get('head_init'):
        _init_head_from_keypoints(graph, cfg, log)
    n = int(cfg['optim'].get('early_stages') or 0)
    if n and float(cfg['optim'].get('early_lr_factor', 1.0)) == 0.0:
        _early_backbone_parameters(graph, cfg)   # validates the backbone kind
        graph.backbone.freeze_early_stages(n)


def _init_head_from_keypoints(graph, cfg: dict, log) -> None:
    """model.head_init 'movenet-keypoints': the head's 1x1 conv from the keypoint logits stored with the backbone
    weights (pretrained_weights, movenet-*-fpn kinds); points without a keypoint rule keep their random start."""
    m = cfg['model']
    if m['head_init'] != 'movenet-keypoints':
        raise ValueError(f"unknown model.head_init {m['head_init']!r}; valid: movenet-keypoints")
    if not m.get('backbone_weights'):
        raise ValueError('model.head_init movenet-keypoints needs model.backbone_weights (a movenet-*-fpn file)')
    from metrabs_ros.training.movenet_fpn import keypoint_head_init
    from metrabs_ros.training.pretrained_weights import load_keypoint_logits
    weight, bias = load_keypoint_logits(m['backbone_weights'])
    conv = graph.head.conv
    if conv.in_channels < weight.shape[1] or graph.head.stride != 4:
        raise ValueError(f"model.head_init movenet-keypoints needs a movenet-*-fpn backbone, not {m['backbone']!r}")
    names = list(graph.joint_names)
    if graph.head.num_points != len(names):
        raise ValueError('model.head_init movenet-keypoints needs a head that predicts the joints (no latent_acae)')
    depth_bins = 0 if m.get('head') == 'lifting' else graph.head.depth_bins   # the lifting head has 2D maps only
    w, b, mask = keypoint_head_init(weight, bias, names, depth_bins, float(m['head_init_sharpen']))
    if w.shape[0] != conv.out_channels:
        raise ValueError(f'head has {conv.out_channels} output channels, the keypoint init {w.shape[0]} '
                         '(uncertainty or latent heads are not supported by this init)')
    rows = torch.from_numpy(np.repeat(mask[None], 1 + depth_bins, 0).reshape(-1))
    k = weight.shape[1]     # the neck's keypoint channels come first; extra (context) channels start at 0
    with torch.no_grad():
        conv.weight[rows, :k] = torch.from_numpy(w)[rows][:, :, None, None].to(conv.weight.dtype)
        conv.weight[rows, k:] = 0.0
        conv.bias[rows] = torch.from_numpy(b)[rows].to(conv.bias.dtype)
    log(f'head initialised from MoveNet keypoint logits for {int(mask.sum())}/{len(mask)} points '
        f"(sharpen {m['head_init_sharpen']})")


def _same_training_setup(a: dict, b: dict) -> List[str]:
    """Config entries that differ outside 'run' (which may change on resume)."""
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in ('run', 'environment'):
            continue
        if json.dumps(a.get(key), sort_keys=True) != json.dumps(b.get(key), sort_keys=True):
            diffs.append(key)
    return diffs


def train(cfg: dict, data, out_dir: str, val=None, device: str = 'cpu', resume: bool = False,
          log=print, max_steps_this_run: Optional[int] = None) -> dict:
    """Train a pose model; returns {'final_checkpoint', 'step', 'last_losses', 'val', 'steps_per_s'}.

    data / val: a data folder (data-engine shards or .npz samples) or a sequence of sample dicts.
    max_steps_this_run: stop (with a checkpoint) after this many steps even if optim.steps is not reached
    (for time-boxed runs and tests; a later --resume continues)."""
    device = str(device)
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise RuntimeError('--device cuda requested but torch.cuda.is_available() is False (CPU-only torch build '
                           'or no GPU)')
    os.makedirs(os.path.join(out_dir, 'checkpoints'), exist_ok=True)
    run = cfg['run']
    if run.get('threads'):
        torch.set_num_threads(int(run['threads']))
    layout = joint_layout(cfg)
    mcfg = model_config(cfg, layout)
    res = int(cfg['model']['resolution'])
    total = int(cfg['optim']['steps'])
    batch_size = int(cfg['optim']['batch_size'])
    use_amp = bool(cfg['optim']['amp']) and device.startswith('cuda')

    torch.manual_seed(int(cfg['seed']))
    graph = graph_from_config(mcfg)
    _prepare_backbone(graph, cfg, log)
    if cfg['model'].get('init_from'):
        _init_from(graph, cfg['model']['init_from'], log)
    graph.to(device).train()
    if run.get('channels_last'):
        graph.to(memory_format=torch.channels_last)
    optimizer = _optimizer(graph, cfg)
    scaler = torch.amp.GradScaler('cuda', enabled=use_amp)
    start_step = 0

    ckpt = latest_checkpoint(out_dir) if resume else None
    if resume and ckpt is None:
        log(f'--resume: no checkpoint in {out_dir}/checkpoints, starting from step 0')
    if ckpt is not None:
        data_ckpt = torch.load(ckpt, map_location='cpu', weights_only=True)
        ts = data_ckpt['training_state']
        diffs = _same_training_setup(ts['train_config'], cfg)
        if diffs:
            raise ValueError(f'--resume: the configuration differs from the checkpoint in {diffs}; '
                             'start a new run folder instead')
        load_state_dict_strict(graph, data_ckpt['state_dict'], source=ckpt)
        optimizer.load_state_dict(ts['optimizer'])
        scaler.load_state_dict(ts['scaler'])
        torch.set_rng_state(ts['torch_rng'])
        if ts.get('cuda_rng') and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ts['cuda_rng'])
        start_step = int(ts['step'])
        log(f'resumed from {ckpt} at step {start_step}')
    else:
        with open(os.path.join(out_dir, 'config.yaml'), 'w') as f:
            import yaml
            yaml.safe_dump({**cfg, 'environment': _environment(device)}, f, sort_keys=False)

    end_step = total if max_steps_this_run is None else min(total, start_step + int(max_steps_this_run))
    augment_cfg = aug.AugmentConfig.from_dict(cfg['augment'])
    dataset = CropDataset(data, layout, res, augment_cfg, int(cfg['seed']), int(cfg['data']['min_person_pixels']),
                          label_group_masks(cfg, layout))
    consistency_weight = float(cfg['loss']['acae_consistency_weight'] or 0.0)
    consistency = None
    if consistency_weight > 0:
        if not cfg['loss']['acae_file']:
            raise ValueError('loss.acae_consistency_weight > 0 needs loss.acae_file')
        consistency = torch.as_tensor(acae_consistency_matrix(cfg['loss']['acae_file'], layout),
                                      dtype=torch.float32, device=device)
    sampler = StepBatches(len(dataset), batch_size, int(cfg['seed']), start_step, end_step)
    num_workers = int(run['num_workers'])
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                                         pin_memory=device.startswith('cuda'),
                                         persistent_workers=False, prefetch_factor=4 if num_workers else None)

    val_batch = None
    if val is not None:
        val_samples = aug.open_samples(val) if isinstance(val, (str, os.PathLike)) else val
        examples = validation_examples(val_samples, int(cfg['data']['val_max_examples']),
                                       int(cfg['data']['min_person_pixels']))
        if examples:
            val_batch = validation_batch(dataset, examples, augment_cfg.eval_gamma)

    schedule = loss_schedule(cfg)
    clip = cfg['optim']['grad_clip_norm']
    log_every, ckpt_every = int(run['log_every']), int(run['checkpoint_every'])
    val_every = int(run['validate_every'])
    train_log = open(os.path.join(out_dir, 'train_log.jsonl'), 'a')
    csv_path = os.path.join(out_dir, 'train_log.csv')
    csv_new = not os.path.exists(csv_path) or os.path.getsize(csv_path) == 0
    csv_file = open(csv_path, 'a', newline='')
    csv_writer = csv.writer(csv_file)
    if csv_new:
        csv_writer.writerow(['step', 'lr', 'total', 'relative', 'absolute', 'projection', 'steps_per_s', 'elapsed_s'])
    progress = _ProgressLine(total, start_step, run.get('progress'))
    last_losses: Dict[str, float] = {}
    last_val: Optional[dict] = None
    t_start = time.perf_counter()
    t_window, steps_window, rate = time.perf_counter(), 0, 0.0
    sums: Dict[str, float] = {}
    step = start_step

    def checkpoint(step_done: int) -> str:
        path = os.path.join(out_dir, 'checkpoints', f'step_{step_done:08d}.pt')
        save_training_checkpoint(path, graph, mcfg, cfg, optimizer, scaler, step_done)
        _prune_checkpoints(out_dir, int(run['keep_checkpoints']))
        return path

    def run_validation(step_done: int) -> dict:
        result = validate(graph, val_batch, layout, device)
        with open(os.path.join(out_dir, 'val_log.jsonl'), 'a') as f:
            f.write(json.dumps({'step': step_done, **result}) + '\n')
        default = result.get(cfg['model']['default_skeleton'], {})
        if default:
            log(f"\nval @ {step_done}: {cfg['model']['default_skeleton']} MPJPE {default['mpjpe_mm']:.1f} mm, "
                f"PCK150 {100 * default['pck150']:.1f} %, MRPE median {default['mrpe_median_mm']:.0f} mm")
        return result

    lifter_true_2d = float(cfg['loss'].get('lifter_true_2d_fraction') or 0.0)
    if lifter_true_2d and cfg['model'].get('head') != 'lifting':
        raise ValueError('loss.lifter_true_2d_fraction needs model.head lifting')

    def lifter_input(joints, intrinsics, valid):
        """The lifting head's 2D input: for a random `lifter_true_2d` fraction of the crops the true projections
        + N(0, noise) px (labelled joints), otherwise the head's own prediction (None entries → predicted)."""
        with torch.no_grad():
            true_px = project_px(joints, intrinsics)
            true_px = true_px + float(cfg['loss']['lifter_true_2d_noise_px']) * torch.randn_like(true_px)
            true_px = true_px.clamp(0.0, res - 1.0)    # the predicted joints never leave the crop either
            use = (torch.rand(true_px.shape[0], 1, device=true_px.device) < lifter_true_2d) & valid.bool()
            return torch.where(use[..., None], true_px, torch.full_like(true_px, float('nan')))

    try:
        for batch in loader:
            for g in optimizer.param_groups:
                g['lr'] = learning_rate(cfg, step) * g.get('lr_factor', 1.0)
            images = batch['image'].to(device, non_blocking=True)
            if run.get('channels_last'):
                images = images.contiguous(memory_format=torch.channels_last)
            intrinsics = batch['intrinsics'].to(device)
            joints = batch['joints_mm'].to(device)
            valid = batch['joint_valid'].to(device)
            with torch.autocast(device_type='cuda' if device.startswith('cuda') else 'cpu', dtype=torch.float16,
                                enabled=use_amp):
                features = graph.backbone(images)
                if lifter_true_2d:
                    coords2d, coords3d, _ = graph.head(features, lifter_input(joints, intrinsics, valid))
                else:
                    coords2d, coords3d, _ = graph.head(features)
            coords2d, coords3d = graph.decode_latents(coords2d.float()), graph.decode_latents(coords3d.float())
            losses = metrabs_loss(coords2d, coords3d, intrinsics, joints, valid, step, res, schedule,
                                  stride=graph.head.stride)
            if consistency is not None:
                losses['consistency'] = acae_consistency_loss(coords2d, coords3d, consistency, res,
                                                              schedule.depth_cube_mm)
                losses['total'] = losses['total'] + consistency_weight * losses['consistency']
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses['total']).backward()
            if clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(graph.parameters(), float(clip))
            scaler.step(optimizer)
            scaler.update()
            step += 1
            steps_window += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            now = time.perf_counter()
            if now - t_window > 0:
                rate = steps_window / (now - t_window)
            progress.update(step, float(losses['total'].detach()), rate)
            if step % log_every == 0 or step == end_step:
                n = steps_window
                last_losses = {k: v / max(1, n) for k, v in sums.items()}
                row = {'step': step, 'lr': learning_rate(cfg, step - 1), **last_losses,
                       'steps_per_s': rate, 'elapsed_s': now - t_start}
                train_log.write(json.dumps(row) + '\n')
                train_log.flush()
                csv_writer.writerow([step, row['lr'], last_losses.get('total'), last_losses.get('relative'),
                                     last_losses.get('absolute'), last_losses.get('projection'), rate,
                                     now - t_start])
                csv_file.flush()
                sums, steps_window, t_window = {}, 0, now
            if val_batch is not None and val_every and (step % val_every == 0 or step == total):
                last_val = run_validation(step)
            if ckpt_every and step % ckpt_every == 0 and step != end_step:
                checkpoint(step)
    finally:
        progress.close()
        train_log.close()
        csv_file.close()

    path = checkpoint(step)
    final = None
    if step >= total:
        final = os.path.join(out_dir, 'final.pt')
        save_training_checkpoint(final, graph, mcfg, cfg, optimizer, scaler, step)
    elapsed = time.perf_counter() - t_start
    done = step - start_step
    log(f'trained steps {start_step}..{step} in {elapsed:.1f} s ({done / max(elapsed, 1e-9):.2f} steps/s); '
        f'checkpoint {final or path}')
    return {'final_checkpoint': final, 'checkpoint': path, 'step': step, 'last_losses': last_losses,
            'val': last_val, 'steps_per_s': done / max(elapsed, 1e-9)}


def run_dir_summary(run_dir: str) -> dict:
    """The last train and validation log rows of a run folder."""
    out = {}
    for name in ('train_log.jsonl', 'val_log.jsonl'):
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            with open(path) as f:
                lines = [ln for ln in f if ln.strip()]
            if lines:
                out[name] = json.loads(lines[-1])
    return out


@dataclasses.dataclass
class SpeedResult:
    backbone: str
    resolution: int
    batch_size: int
    steps_per_s: float
    seconds_per_step: float


def measure_training_speed(backbone: str, resolution: int, batch_size: int = 32, steps: int = 3,
                           warmup: int = 1, formats=('smpl_24', 'coco_19', 'h36m_17'), device: str = 'cpu',
                           channels_last: bool = False) -> SpeedResult:
    """Seconds per optimisation step (forward, losses, backward, AdamW) on random crops (no data loading)."""
    cfg = load_config(None, {'model': {'backbone': backbone, 'resolution': resolution, 'formats': list(formats)}})
    layout = joint_layout(cfg)
    graph = graph_from_config(model_config(cfg, layout)).to(device).train()
    if channels_last:
        graph.to(memory_format=torch.channels_last)
    optimizer = _optimizer(graph, cfg)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, 3, resolution, resolution, generator=g).to(device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    K = torch.tensor([[resolution * 1.2, 0, resolution / 2], [0, resolution * 1.2, resolution / 2], [0, 0, 1.0]])
    K = K.expand(batch_size, 3, 3).to(device)
    joints = (torch.randn(batch_size, len(layout.raw_names), 3, generator=g) * 300
              + torch.tensor([0, 0, 4000.0])).to(device)
    valid = torch.ones(batch_size, len(layout.raw_names), dtype=torch.bool, device=device)
    schedule = loss_schedule(cfg)
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        coords2d, coords3d, _ = graph.head(graph.backbone(images))
        loss = metrabs_loss(coords2d, coords3d, K, joints, valid, 10000, resolution, schedule)['total']
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    sec = float(np.median(times))
    return SpeedResult(backbone, resolution, batch_size, 1.0 / sec, sec)
