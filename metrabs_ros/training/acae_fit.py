"""Fitting the affine-combining autoencoder (metrabs_ros.acae) on multi-format poses — `metrabs-ros acae fit`.

Parametrisation (chirality-equivariant, affine): the inputs are reordered left | right | centre (left joint i pairs
with right joint i), the latents likewise (n_l left, n_l right, n_c centre). A weight matrix is built from free
blocks S, Q [n_in_l, n_l], X [n_in_l, n_c], C [n_in_c, n_l], Z [n_in_c, n_c] as

    [[S, Q, X],
     [Q, S, X],
     [C, C, Z]]

and then every column is shifted by the same constant in all its rows so that it sums to 1 (the shift is the
same for a left column and its right twin, so the block pattern survives). The encoder maps the encoder formats'
joints to the latents, the decoder the latents to the decoder formats' joints; both use this construction.

Loss (reference metrabs.md §8): L1 between the input and the reconstruction in a projected space — x/z and y/z
multiplied by the pose's mean depth (so image-plane structure, the accurate part of pseudo-ground truth, counts in
millimetres) — plus the 3D L1, plus `sparsity` × mean |weight|. All errors in metres. Adam with the learning rate
dropped ×0.1 at 60 % and 90 % of the steps (3e-2 → 3e-3 → 3e-4 by default).

Data: poses in a camera frame (mm) with every needed format — the data engine's samples (crops or scenes shards),
plus the formats `metrabs_ros.training.synth.derived_formats` derives from them.
"""

from __future__ import annotations

import glob
import json
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from metrabs_ros.acae import Acae, JointList, chirality_order, latent_sides, save_acae


# --- data ------------------------------------------------------------------------------------------------------

def load_pose_arrays(folder: str, max_people: Optional[int] = None,
                     formats: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """{format: [N, J, 3] float32 mm} from a data-engine folder (shards of crops or scenes; images not decoded),
    plus the formats metrabs_ros.training.synth.derived_formats derives from them (only those in `formats` when
    given). People are the crops' targets or every person of every scene."""
    paths = sorted(glob.glob(os.path.join(folder, 'shard-*.npz')))
    if not paths:
        raise FileNotFoundError(f'{folder}: no shard-*.npz files (a `metrabs-ros synth` output folder)')
    parts: Dict[str, List[np.ndarray]] = {}
    count = 0
    for path in paths:
        with np.load(path, allow_pickle=False) as shard:
            for key in shard.files:
                if not key.endswith('/joints3d_mm'):
                    continue
                fmt = key[:-len('/joints3d_mm')]
                if fmt.startswith('people/'):
                    fmt = fmt[len('people/'):]
                if '/' in fmt:
                    continue
                parts.setdefault(fmt, []).append(np.asarray(shard[key], np.float32))
        count = sum(len(a) for a in next(iter(parts.values())))
        if max_people and count >= max_people:
            break
    arrays = {f: np.concatenate(v)[:max_people] for f, v in parts.items()}
    sizes = {len(v) for v in arrays.values()}
    if len(sizes) != 1:
        raise ValueError(f'{folder}: formats hold different numbers of people {sizes}')
    wanted = None if formats is None else [f for f in formats if f not in arrays]
    if wanted is None or wanted:
        from metrabs_ros.training.synth.derived_formats import DERIVED_FORMATS, derived_joints
        wanted = [f for f in (DERIVED_FORMATS if wanted is None else wanted) if f in DERIVED_FORMATS]
        if wanted:
            for fmt, joints in derived_joints(arrays, wanted).items():
                arrays.setdefault(fmt, np.asarray(joints, np.float32))
    return arrays


def complete_people(arrays: Dict[str, np.ndarray], formats: Sequence[str]) -> np.ndarray:
    """Boolean [N]: people whose joints are finite in every listed format and in front of the camera."""
    ok = None
    for fmt in formats:
        if fmt not in arrays:
            raise ValueError(f'format {fmt!r} not in the data (available: {", ".join(sorted(arrays))})')
        good = np.all(np.isfinite(arrays[fmt]), axis=(1, 2)) & np.all(arrays[fmt][..., 2] > 100.0, axis=1)
        ok = good if ok is None else ok & good
    return ok


# --- parametrisation -------------------------------------------------------------------------------------------

class ChiralAffineMatrix(torch.nn.Module):
    """An [n_in, n_out] weight matrix with the block structure above and columns summing to 1.

    in_order / out_order: (left, right, centre) index arrays of the actual row / column order."""

    def __init__(self, in_order: Tuple[np.ndarray, np.ndarray, np.ndarray],
                 out_order: Tuple[np.ndarray, np.ndarray, np.ndarray], generator: torch.Generator):
        super().__init__()
        il, ir, ic = (torch.as_tensor(a, dtype=torch.int64) for a in in_order)
        ol, orr, oc = (torch.as_tensor(a, dtype=torch.int64) for a in out_order)
        if len(il) != len(ir) or len(ol) != len(orr):
            raise ValueError('left and right groups must have the same size')
        self.n_in = len(il) + len(ir) + len(ic)
        self.n_out = len(ol) + len(orr) + len(oc)
        # Row/column permutation from block order (left, right, centre) to the actual order.
        self.register_buffer('rows', torch.cat([il, ir, ic]))
        self.register_buffer('cols', torch.cat([ol, orr, oc]))
        self.register_buffer('rows_inverse', torch.argsort(self.rows))
        self.register_buffer('cols_inverse', torch.argsort(self.cols))
        if sorted(self.rows.tolist()) != list(range(self.n_in)) or sorted(self.cols.tolist()) != list(range(self.n_out)):
            raise ValueError('the left/right/centre groups must partition the rows and the columns')
        a, b, c = len(il), len(ic), len(ol)
        d = len(oc)
        scale = 1.0 / max(1, self.n_in)

        def init(*shape):
            return torch.nn.Parameter(scale * (1.0 + 0.1 * torch.randn(*shape, generator=generator,
                                                                       dtype=torch.float64)))
        self.S, self.Q, self.X = init(a, c), init(a, c), init(a, d)
        self.C, self.Z = init(b, c), init(b, d)

    def forward(self) -> torch.Tensor:
        top = torch.cat([self.S, self.Q, self.X], 1)
        mid = torch.cat([self.Q, self.S, self.X], 1)
        bottom = torch.cat([self.C, self.C, self.Z], 1)
        block = torch.cat([top, mid, bottom], 0)                       # block order
        block = block + (1.0 - block.sum(0, keepdim=True)) / block.shape[0]
        return block.index_select(0, self.rows_inverse).index_select(1, self.cols_inverse)


def _latent_order(num_left: int, num_centre: int):
    return (np.arange(num_left), np.arange(num_left, 2 * num_left), np.arange(2 * num_left, 2 * num_left + num_centre))


class AcaeModule(torch.nn.Module):
    def __init__(self, encoder_joints: JointList, decoder_joints: JointList, num_left: int, num_centre: int,
                 seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(int(seed))
        lat = _latent_order(num_left, num_centre)
        self.encoder = ChiralAffineMatrix(chirality_order(encoder_joints.names), lat, g)
        self.decoder = ChiralAffineMatrix(lat, chirality_order(decoder_joints.names), g)

    def forward(self, joints_in: torch.Tensor) -> torch.Tensor:
        return reconstruct(joints_in, self.encoder(), self.decoder())


def reconstruct(joints_in: torch.Tensor, encoder: torch.Tensor, decoder: torch.Tensor) -> torch.Tensor:
    latents = torch.einsum('bjc,jl->blc', joints_in, encoder)
    return torch.einsum('blc,lk->bkc', latents, decoder)


def projected_l1_m(pred_mm: torch.Tensor, true_mm: torch.Tensor) -> torch.Tensor:
    """Mean L1 (m) of x/z, y/z scaled by the true pose's mean depth, over joints and both axes."""
    mean_depth = true_mm[..., 2].mean(-1, keepdim=True).unsqueeze(-1)     # [B,1,1]
    proj_pred = pred_mm[..., :2] / pred_mm[..., 2:].clamp_min(50.0) * mean_depth
    proj_true = true_mm[..., :2] / true_mm[..., 2:] * mean_depth
    return torch.mean(torch.abs(proj_pred - proj_true)) / 1000.0


def acae_loss(model: AcaeModule, joints_in_mm: torch.Tensor, joints_out_mm: torch.Tensor,
              sparsity: float) -> Dict[str, torch.Tensor]:
    encoder, decoder = model.encoder(), model.decoder()     # built once per step (block assembly + column shift)
    recon = reconstruct(joints_in_mm, encoder, decoder)
    losses = {'projected': projected_l1_m(recon, joints_out_mm),
              'l1_3d': torch.mean(torch.abs(recon - joints_out_mm)) / 1000.0,
              'sparsity': 0.5 * (encoder.abs().mean() + decoder.abs().mean())}
    losses['total'] = losses['projected'] + losses['l1_3d'] + sparsity * losses['sparsity']
    return losses


# --- fitting ---------------------------------------------------------------------------------------------------

def fit_acae(arrays: Dict[str, np.ndarray], encoder_formats: Sequence[str], decoder_formats: Sequence[str],
             num_left: int = 20, num_centre: int = 8, steps: int = 4000, batch_size: int = 128,
             lr: float = 3e-2, sparsity: float = 0.6, seed: int = 0, val_fraction: float = 0.1,
             log=print) -> Tuple[Acae, dict]:
    """Fit an ACAE (float64, CPU) on {format: [N, J, 3] mm}; returns (Acae, report with per-format errors)."""
    enc = JointList.create(encoder_formats)
    dec = JointList.create(decoder_formats)
    ok = complete_people(arrays, sorted(set(encoder_formats) | set(decoder_formats)))
    n = int(ok.sum())
    if n < 20:
        raise ValueError(f'only {n} people have every format; need at least 20')
    x_in = enc.concatenate({f: arrays[f][ok] for f in enc.formats}).astype(np.float64)
    x_out = dec.concatenate({f: arrays[f][ok] for f in dec.formats}).astype(np.float64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    val_idx, train_idx = order[:n_val], order[n_val:]
    model = AcaeModule(enc, dec, num_left, num_centre, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    t_in, t_out = torch.from_numpy(x_in), torch.from_numpy(x_out)
    t0 = time.perf_counter()
    log(f'ACAE fit: {len(enc)} encoder joints ({",".join(enc.formats)}) → {2 * num_left + num_centre} latents '
        f'({num_left} left + {num_left} right + {num_centre} centre) → {len(dec)} decoder joints; '
        f'{len(train_idx)} training / {n_val} validation people')
    for step in range(steps):
        lr_now = lr * (0.1 ** ((step >= 0.6 * steps) + (step >= 0.9 * steps)))
        for g in optimizer.param_groups:
            g['lr'] = lr_now
        batch = torch.from_numpy(rng.choice(train_idx, size=min(batch_size, len(train_idx)), replace=False))
        losses = acae_loss(model, t_in[batch], t_out[batch], sparsity)
        optimizer.zero_grad(set_to_none=True)
        losses['total'].backward()
        optimizer.step()
        if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
            log(f'  step {step + 1}/{steps}: loss {float(losses["total"].detach()):.5f} (projected '
                f'{1000 * float(losses["projected"].detach()):.1f} mm, 3D {1000 * float(losses["l1_3d"].detach()):.1f} mm)')
    with torch.no_grad():
        encoder = model.encoder().numpy().copy()
        decoder = model.decoder().numpy().copy()
    # Exact affine columns in float64 (the construction sums to 1 up to rounding).
    encoder += (1.0 - encoder.sum(0, keepdims=True)) / encoder.shape[0]
    decoder += (1.0 - decoder.sum(0, keepdims=True)) / decoder.shape[0]
    errors = reconstruction_errors_from(encoder, decoder, x_in[val_idx], x_out[val_idx], dec)
    info = {'encoder_formats': list(enc.formats), 'decoder_formats': list(dec.formats),
            'num_left': num_left, 'num_centre': num_centre, 'steps': steps, 'batch_size': batch_size, 'lr': lr,
            'sparsity': sparsity, 'seed': seed, 'train_people': int(len(train_idx)), 'val_people': int(n_val),
            'fit_seconds': round(time.perf_counter() - t0, 1), 'val_reconstruction_mm': errors}
    acae = Acae(encoder, decoder, enc, dec, latent_sides(num_left, num_centre), info)
    return acae, info


def reconstruction_errors_from(encoder: np.ndarray, decoder: np.ndarray, x_in_mm: np.ndarray, x_out_mm: np.ndarray,
                               dec: JointList) -> Dict[str, dict]:
    """Per decoder format: mean and 95th percentile of the 3D reconstruction error (mm) over joints and people."""
    recon = np.einsum('njc,jl,lk->nkc', x_in_mm, encoder, decoder)
    err = np.linalg.norm(recon - x_out_mm, axis=-1)
    return {f: {'mean_mm': float(err[:, dec.slice(f)].mean()),
                'p95_mm': float(np.percentile(err[:, dec.slice(f)], 95)),
                'people': int(len(err))} for f in dec.formats}


def reconstruction_errors(acae: Acae, arrays: Dict[str, np.ndarray]) -> Dict[str, dict]:
    """Per-format reconstruction error of a fitted ACAE on {format: [N, J, 3] mm} (people complete in all)."""
    ok = complete_people(arrays, sorted(set(acae.encoder_joints.formats) | set(acae.formats)))
    x_in = acae.encoder_joints.concatenate({f: arrays[f][ok] for f in acae.encoder_joints.formats})
    x_out = acae.decoder_joints.concatenate({f: arrays[f][ok] for f in acae.formats})
    return reconstruction_errors_from(acae.encoder, acae.decoder, x_in.astype(np.float64),
                                      x_out.astype(np.float64), acae.decoder_joints)


def fit_command(args) -> int:
    torch.set_num_threads(max(1, int(args.threads)))
    requested = None
    if args.formats:
        requested = [f.strip() for f in (args.formats + ',' + (args.encoder_formats or '')).split(',') if f.strip()]
    arrays = load_pose_arrays(args.data, args.max_people, requested)
    available = sorted(arrays)
    decoder_formats = _format_list(args.formats, available, exclude=('anny_104',))
    encoder_formats = _format_list(args.encoder_formats, available) if args.encoder_formats else decoder_formats
    num_left, num_right, num_centre = (int(v) for v in args.latents.split(','))
    if num_left != num_right:
        raise ValueError(f'--latents: left and right counts must be equal (chirality), got {args.latents}')
    acae, info = fit_acae(arrays, encoder_formats, decoder_formats, num_left, num_centre, args.steps,
                          args.batch_size, args.lr, args.sparsity, args.seed)
    if args.val:
        val_formats = sorted(set(acae.formats) | set(acae.encoder_joints.formats))
        info['heldout_reconstruction_mm'] = reconstruction_errors(acae, load_pose_arrays(args.val, None, val_formats))
        acae = Acae(acae.encoder, acae.decoder, acae.encoder_joints, acae.decoder_joints, acae.latent_sides, info)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_acae(args.out, acae)
    table = info.get('heldout_reconstruction_mm') or info['val_reconstruction_mm']
    print(f'{"format":18s} {"mean mm":>8s} {"p95 mm":>8s}')
    for fmt, e in table.items():
        print(f'{fmt:18s} {e["mean_mm"]:8.2f} {e["p95_mm"]:8.2f}')
    print(f'wrote {args.out}')
    if args.report:
        with open(args.report, 'w') as f:
            json.dump(info, f, indent=1)
    return 0


def evaluate_command(args) -> int:
    from metrabs_ros.acae import load_acae
    acae = load_acae(args.acae)
    formats = sorted(set(acae.formats) | set(acae.encoder_joints.formats))
    errors = reconstruction_errors(acae, load_pose_arrays(args.data, args.max_people, formats))
    print(json.dumps(errors, indent=1))
    return 0


def _format_list(spec: Optional[str], available: Sequence[str], exclude: Sequence[str] = ()) -> List[str]:
    if not spec:
        from metrabs_ros.skeletons import SKELETONS
        return [f for f in available if f in SKELETONS and f not in exclude]
    formats = [f.strip() for f in spec.split(',') if f.strip()]
    unknown = [f for f in formats if f not in available]
    if unknown:
        raise ValueError(f'formats {unknown} not in the data; available: {", ".join(available)}')
    return formats
