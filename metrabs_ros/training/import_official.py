"""Import an official MeTRAbs PyTorch model folder (e.g. `metrabs_eff2l_384px_800k_28ds_pytorch`) as a PoseGraph.

Folder layout (as released with isarandi/metrabs, metrabs_pytorch/):
  config.yaml                  training flags: backbone / efficientnet_size, proc_side, depth, box_size_mm,
                               centered_stride, legacy_centered_stride_bug, mix_3d_inside_fov, stride_test, ...
  ckpt.pt                      state dict of the crop model: `backbone.1.*` (EfficientNetV2 `features`; `backbone.0`
                               is the parameter-free x·2−1 layer) and `heatmap_heads.conv_final.{weight,bias}`
  joint_info.npz               `joint_names` [J], `joint_edges` [E, 2] of the raw predicted joints
  skeleton_infos.pkl           {skeleton: {'indices': [...], 'names': [...], 'edges': [[i, j], ...]}}; indices
                               point into the *transformed* joints
  joint_transform_matrix.npy   [J, J_out] applied to the raw joints after the left/right swap of flipped crops
                               (official Pose3dEstimator: poses @ T), then the skeleton's indices select

Safety: ckpt.pt loads with `torch.load(weights_only=True)`; the .pkl goes through `RestrictedUnpickler`
(plain containers, str/int/float/bool/None and numpy arrays/dtypes only); the .npz/.npy with allow_pickle=False.

In our model the raw joints stay the graph's output (`poses3d_aug_mm`, the left/right swap happens in the graph on
the raw joints as in the official code) and each official skeleton becomes a contract `skeletons` entry: the
columns T[:, indices] as `indices` into the raw joints when they are one-hot, else as an affine `matrix`. The
conversion is linear, so applying it to the TTA mean in Python equals the official per-augmentation order.
The official '' skeleton (all transformed joints) is offered as 'all'.
"""
import io
import os
import pickle
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from metrabs_ros.training.checkpoint import load_state_dict_strict
from metrabs_ros.training.pose_graph import PoseGraph

REQUIRED_FILES = ('config.yaml', 'ckpt.pt', 'joint_info.npz', 'skeleton_infos.pkl', 'joint_transform_matrix.npy')
OFFICIAL_KEY_PREFIXES = {'backbone.1.': 'backbone.features.', 'heatmap_heads.conv_final.': 'head.conv.'}
ALL_JOINTS_SKELETON = 'all'
PREFERRED_DEFAULT_SKELETONS = ('smpl+head_30', 'smpl_24')

_SAFE_BUILTINS = {'dict', 'list', 'tuple', 'set', 'frozenset', 'str', 'int', 'float', 'bool', 'complex', 'bytes',
                  'bytearray', 'slice'}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only plain builtin containers/scalars and numpy arrays, scalars and dtypes.

    Anything else (functions, arbitrary classes: the usual pickle code-execution routes) raises
    pickle.UnpicklingError naming the refused global."""

    def find_class(self, module: str, name: str):
        if module == 'builtins' and name in _SAFE_BUILTINS:
            return getattr(__import__('builtins'), name)
        if module in ('numpy', 'numpy.core.multiarray', 'numpy._core.multiarray', 'numpy.dtypes'):
            allowed = _numpy_globals()
            if (module, name) in allowed:
                return allowed[(module, name)]
        raise pickle.UnpicklingError(f'refusing to unpickle global {module}.{name} (only plain containers and '
                                     'numpy arrays are allowed)')


def _numpy_globals() -> Dict[Tuple[str, str], Any]:
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    table = {}
    for mod in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        table[(mod, '_reconstruct')] = multiarray._reconstruct
        table[(mod, 'scalar')] = multiarray.scalar
    table[('numpy', 'ndarray')] = np.ndarray
    table[('numpy', 'dtype')] = np.dtype
    for name in dir(np.dtypes):  # dtype classes (numpy >= 1.25 pickles some dtypes through them)
        if name.endswith('DType'):
            table[('numpy.dtypes', name)] = getattr(np.dtypes, name)
    return table


def restricted_pickle_load(path) -> Any:
    with open(path, 'rb') as f:
        return RestrictedUnpickler(io.BytesIO(f.read())).load()


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise FileNotFoundError(f'official model folder not found: {folder}')
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f'{folder} lacks {missing} (an official MeTRAbs PyTorch folder has '
                                f'{", ".join(REQUIRED_FILES)})')


def config_to_architecture(config: Dict[str, Any]) -> Dict[str, Any]:
    """Official config.yaml flags → our PoseGraph construction parameters (raises on unsupported settings)."""
    backbone = str(config.get('backbone', '')).lower()
    size = config.get('efficientnet_size')
    if size is None and backbone.startswith('efficientnetv2-'):
        size = backbone.split('-')[1]
    if size not in ('s', 'm', 'l') or (backbone and not backbone.startswith('efficientnetv2')):
        raise ValueError(f'unsupported official backbone {backbone!r} (efficientnet_size={size!r}); '
                         'the PyTorch release uses EfficientNetV2-S/M/L')
    stride = int(config.get('stride_test', 32))
    if stride != 32:
        raise ValueError(f'unsupported stride_test {stride} (only 32)')
    if config.get('weak_perspective'):
        raise ValueError('config has weak_perspective: true; only the full-perspective reconstruction is supported')
    for key in ('affine_weights', 'transform_coords', 'predict_all_and_latents'):
        if config.get(key):
            raise ValueError(f'config sets {key}={config[key]!r}: latent-point models need the affine weights '
                             'file, which the released folder does not contain; not supported')
    centered = bool(config.get('centered_stride', True))
    legacy_bug = bool(config.get('legacy_centered_stride_bug', False))
    mix = config.get('mix_3d_inside_fov', 0.5)
    return {
        'backbone': f'efficientnetv2-{size}',
        'backbone_options': {'centered_stride': centered},
        'resolution': int(config.get('proc_side', 256)),
        'depth_bins': int(config.get('depth', 8)),
        'depth_cube_mm': float(config.get('box_size_mm', 2200)),
        'heatmap_offset_px': float((stride // 2) * (int(centered) + int(legacy_bug))),
        'fov_offset_px': 0.0 if centered else -stride / 2,
        'mix_3d_inside_fov': 0.0 if mix is None else float(mix),  # None: pure 2D-based inside the FOV
    }


def map_official_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename official crop-model keys to PoseGraph keys; a key with no known prefix raises naming it."""
    out = {}
    unknown = []
    for key, value in state_dict.items():
        for prefix, ours in OFFICIAL_KEY_PREFIXES.items():
            if key.startswith(prefix):
                out[ours + key[len(prefix):]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f'ckpt.pt has unexpected keys {unknown[:8]}{" ..." if len(unknown) > 8 else ""} '
                         f'(expected only {sorted(OFFICIAL_KEY_PREFIXES)} prefixes)')
    return out


def skeleton_metadata(skeleton_infos: Dict[str, Any], transform: np.ndarray) -> Dict[str, dict]:
    """Contract `skeletons` entries from the official tables: T[:, indices] as indices (one-hot) or a matrix."""
    num_out = transform.shape[1]
    skeletons = {}
    for name, info in skeleton_infos.items():
        if not isinstance(info, dict) or not {'indices', 'names', 'edges'} <= set(info):
            raise ValueError(f'skeleton_infos[{name!r}] must hold indices, names and edges')
        indices = np.asarray(info['indices'], np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= num_out):
            raise ValueError(f'skeleton {name!r} indexes joints outside the {num_out} transformed joints')
        names = [str(n) for n in np.asarray(info['names']).reshape(-1)]
        if len(names) != len(indices):
            raise ValueError(f'skeleton {name!r}: {len(names)} names for {len(indices)} indices')
        edges = np.asarray(info['edges'], np.int64).reshape(-1, 2).tolist()
        columns = transform[:, indices]  # [J_raw, J_skel]
        one_hot = np.all(np.isin(columns, (0.0, 1.0))) and np.all(columns.sum(0) == 1.0)
        entry = {'joint_names': names, 'edges': edges}
        if one_hot:
            entry['indices'] = [int(i) for i in np.argmax(columns, axis=0)]
        else:
            entry['matrix'] = [[float(f'{v:.7g}') for v in row] for row in columns.astype(np.float32)]
        skeletons[name or ALL_JOINTS_SKELETON] = entry
    return skeletons


def load_official_folder(folder, default_skeleton: Optional[str] = None) -> Tuple[PoseGraph, dict]:
    """(PoseGraph with the official weights, contract metadata) from an official MeTRAbs PyTorch folder.

    The state dict loads strictly: every checkpoint key must be used and every model key present, with equal
    shapes; problems raise ValueError naming the keys."""
    import yaml

    from metrabs_ros.training.checkpoint import graph_from_config
    from metrabs_ros.training.export import contract_metadata

    folder = Path(folder)
    _check_folder(folder)
    with open(folder / 'config.yaml') as f:
        config = yaml.safe_load(f) or {}
    if not isinstance(config, dict):
        raise ValueError(f'{folder / "config.yaml"} is not a mapping')
    arch = config_to_architecture(config)
    try:
        with np.load(folder / 'joint_info.npz', allow_pickle=False) as ji:
            joint_names = [str(n) for n in ji['joint_names']]
            joint_edges = np.asarray(ji['joint_edges'], np.int64).reshape(-1, 2).tolist()
    except (KeyError, ValueError) as error:
        raise ValueError(f'{folder / "joint_info.npz"}: needs joint_names and joint_edges arrays without '
                         f'pickled objects ({error})') from None
    transform = np.load(folder / 'joint_transform_matrix.npy', allow_pickle=False).astype(np.float64)
    if transform.ndim != 2 or transform.shape[0] != len(joint_names):
        raise ValueError(f'joint_transform_matrix.npy must be [{len(joint_names)}, J_out], got {transform.shape}')
    skeleton_infos = restricted_pickle_load(folder / 'skeleton_infos.pkl')
    if not isinstance(skeleton_infos, dict):
        raise ValueError('skeleton_infos.pkl must hold a dict of skeletons')
    skeletons = skeleton_metadata(skeleton_infos, transform)
    if default_skeleton is None:
        default_skeleton = next((s for s in PREFERRED_DEFAULT_SKELETONS if s in skeletons), next(iter(skeletons)))
    elif default_skeleton not in skeletons:
        raise ValueError(f'default skeleton {default_skeleton!r} not among {sorted(skeletons)}')

    state = torch.load(folder / 'ckpt.pt', map_location='cpu', weights_only=True)
    if not isinstance(state, dict):
        raise ValueError('ckpt.pt must hold a state dict')
    head_weight = state.get('heatmap_heads.conv_final.weight')
    expected_channels = len(joint_names) * (1 + arch['depth_bins'])
    if head_weight is not None and head_weight.shape[0] != expected_channels:
        raise ValueError(f'head has {head_weight.shape[0]} output channels; {len(joint_names)} joints × '
                         f'(1 + {arch["depth_bins"]} depth bins) = {expected_channels} expected')
    graph = graph_from_config({**arch, 'joint_names': joint_names})
    load_state_dict_strict(graph, map_official_state_dict(state), source=str(folder / 'ckpt.pt'))
    graph.eval()

    name = folder.name
    meta = contract_metadata(
        graph, name=name, description=f'Official MeTRAbs model {name} (isarandi/metrabs), imported by metrabs-ros',
        training='official MeTRAbs release (see docs/export.md for published accuracy)',
        joint_edges=joint_edges, skeletons=skeletons, default_skeleton=default_skeleton)
    return graph, meta


def import_official(folder, out, fp16: bool = False, parity: bool = True,
                    default_skeleton: Optional[str] = None, log=print, antialias_factor: int = 1) -> dict:
    """Official folder → contract ONNX file at `out` (see export_for_deployment for the report).

    antialias_factor: the graph's crop supersampling factor (the official API's `antialias_factor`, fixed at export
    here; docs/export.md)."""
    from metrabs_ros.training.export import export_for_deployment

    graph, meta = load_official_folder(folder, default_skeleton)
    graph.set_antialias_factor(antialias_factor)
    meta['antialias_factor'] = graph.antialias_factor
    log(f'loaded {folder}: {graph.backbone.__class__.__name__}-{graph.backbone.size}, {graph.resolution} px, '
        f'{len(graph.joint_names)} raw joints, {len(meta["skeletons"])} skeletons (default {meta["default_skeleton"]})')
    return export_for_deployment(graph, os.fspath(out), meta, fp16=fp16, parity=parity, log=log)
