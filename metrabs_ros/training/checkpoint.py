"""Our checkpoint format: one `torch.save` file holding {'format', 'config', 'state_dict'} of a PoseGraph.

`config` is plain data (str/int/float/bool/None, lists, dicts), so the file loads with
`torch.load(weights_only=True)`:
  backbone            kind for `Backbone(kind=...)` ('tiny', 'efficientnetv2-s', 'mobilenetv3-large', ...)
  backbone_options    dict of keyword arguments for the backbone (e.g. {'out_channels': 64} for 'tiny')
  resolution          crop side (px)
  joint_names         raw joint order of the model's outputs
  joint_edges         [[i, j], ...] bones between raw joints
  skeletons           contract metadata form ({'name': {'indices' | 'matrix', 'joint_names', 'edges'}}), optional
  default_skeleton    optional
  depth_bins (8), depth_cube_mm (2200), with_uncertainty (False), mix_3d_inside_fov (0.5),
  head ('metrabs' | 'lifting'), head_options (LiftingHead keyword arguments),
  heatmap_offset_px (stride/2), fov_offset_px (0), latent_decoder ([L][J] or None),
  name, description, training (free text), bone_lengths_mm (optional, one per joint edge)
"""
import os
from typing import Any, Mapping, Tuple

import torch

from metrabs_ros.training.backbones import Backbone
from metrabs_ros.training.pose_graph import PoseGraph, build_pose_graph

CHECKPOINT_FORMAT = 'metrabs_ros.checkpoint/1'
_METADATA_KEYS = ('skeletons', 'default_skeleton', 'name', 'description', 'training', 'bone_lengths_mm')


def graph_from_config(config: Mapping[str, Any]) -> PoseGraph:
    """Build the (randomly initialised) PoseGraph a checkpoint config describes."""
    for key in ('backbone', 'resolution', 'joint_names'):
        if key not in config:
            raise ValueError(f'checkpoint config lacks {key!r}')
    backbone = Backbone(kind=config['backbone'], **dict(config.get('backbone_options') or {}))
    return build_pose_graph(
        list(config['joint_names']), int(config['resolution']), backbone,
        with_uncertainty=bool(config.get('with_uncertainty', False)), depth_bins=int(config.get('depth_bins', 8)),
        depth_cube_mm=float(config.get('depth_cube_mm', 2200.0)), latent_decoder=config.get('latent_decoder'),
        heatmap_offset_px=config.get('heatmap_offset_px'), fov_offset_px=float(config.get('fov_offset_px', 0.0)),
        mix_3d_inside_fov=float(config.get('mix_3d_inside_fov', 0.5)), head=str(config.get('head', 'metrabs')),
        head_options=dict(config.get('head_options') or {})).eval()


def save_checkpoint(path, graph: PoseGraph, config: Mapping[str, Any]) -> str:
    """Write {'format', 'config', 'state_dict'} to `path` (float32 weights) and return the path."""
    state = {k: v.detach().cpu().clone() for k, v in graph.state_dict().items()}
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    path = os.fspath(path)
    torch.save({'format': CHECKPOINT_FORMAT, 'config': dict(config), 'state_dict': state}, path)
    return path


def load_checkpoint(path) -> Tuple[PoseGraph, dict]:
    """(PoseGraph with the checkpoint's weights, config). Loads with weights_only=True and a strict state dict."""
    data = torch.load(os.fspath(path), map_location='cpu', weights_only=True)
    if not isinstance(data, dict) or data.get('format') != CHECKPOINT_FORMAT:
        raise ValueError(f'{path} is not a metrabs_ros checkpoint (expected format {CHECKPOINT_FORMAT!r}); '
                         'official MeTRAbs folders are converted with `metrabs-ros import-official`')
    config = dict(data['config'])
    graph = graph_from_config(config)
    load_state_dict_strict(graph, data['state_dict'], source=str(path))
    return graph.eval(), config


def load_state_dict_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = '') -> None:
    """load_state_dict that names every missing key, unexpected key and shape mismatch in one ValueError."""
    expected = module.state_dict()
    where = f'{source}: ' if source else ''
    missing = [k for k in expected if k not in state_dict]
    extra = [k for k in state_dict if k not in expected]
    shapes = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}'
              for k, v in expected.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f'missing keys {_short_list(missing)}')
    if extra:
        problems.append(f'unexpected keys {_short_list(extra)}')
    if shapes:
        problems.append(f'shape mismatches {_short_list(shapes)}')
    if problems:
        raise ValueError(where + '; '.join(problems))
    module.load_state_dict(dict(state_dict), strict=True)


def _short_list(items, limit: int = 8) -> str:
    shown = ', '.join(repr(i) for i in items[:limit])
    return f'[{shown}{f", ... ({len(items)} in all)" if len(items) > limit else ""}]'


def metadata_from_config(config: Mapping[str, Any]) -> dict:
    """Contract metadata entries carried by a checkpoint config (joint_edges and the free-text fields)."""
    meta = {k: config[k] for k in _METADATA_KEYS if config.get(k) is not None}
    meta['joint_edges'] = [[int(i), int(j)] for i, j in config.get('joint_edges', [])]
    return meta
