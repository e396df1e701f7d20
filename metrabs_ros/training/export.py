"""Export a PoseGraph to an ONNX file that follows the model contract (docs/model_contract.md §1), and check it.

Uses the legacy TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`): the dynamo exporter needs
onnxscript, which the project does not install. Opset 17 (GridSample needs ≥ 16).
"""
import json
import os
import warnings
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from metrabs_ros.training.pose_graph import INPUT_NAMES, PoseGraph

CONTRACT_VERSION = 'pose/1'
DEFAULT_OPSET = 17


def skeleton_entry(raw_joint_names: Sequence[str], joint_names: Sequence[str],
                   edges: Sequence[Sequence[int]]) -> dict:
    """Metadata entry of an output format selected by joint name from the raw joints ('indices' form).

    Raises ValueError naming the joints the raw set lacks."""
    index = {n: i for i, n in enumerate(raw_joint_names)}
    missing = [n for n in joint_names if n not in index]
    if missing:
        raise ValueError(f'raw joints lack {missing} needed by this skeleton format')
    return {'indices': [index[n] for n in joint_names], 'joint_names': list(joint_names),
            'edges': [[int(i), int(j)] for i, j in edges]}


def contract_metadata(graph: PoseGraph, name: str = '', description: str = '', training: str = '',
                      joint_edges: Sequence[Sequence[int]] = (), skeletons: Optional[Mapping[str, dict]] = None,
                      default_skeleton: Optional[str] = None) -> dict:
    """Complete contract metadata for `graph` (values not yet stringified).

    Without `skeletons`, the only format is the raw one, named `default_skeleton` or 'raw', indices = identity.
    """
    names = list(graph.joint_names)
    edges = [[int(i), int(j)] for i, j in joint_edges]
    if skeletons is None:
        key = default_skeleton or 'raw'
        skeletons = {key: {'indices': list(range(len(names))), 'joint_names': names, 'edges': edges}}
    if default_skeleton is None:
        default_skeleton = next(iter(skeletons))
    if default_skeleton not in skeletons:
        raise ValueError(f'default_skeleton {default_skeleton!r} not among skeletons {sorted(skeletons)}')
    return {
        'metrabs_ros.contract': CONTRACT_VERSION,
        'input_resolution': graph.resolution,
        'joint_names': names,
        'joint_edges': edges,
        'skeletons': dict(skeletons),
        'default_skeleton': default_skeleton,
        'name': name,
        'description': description,
        'training': training,
        'depth_cube_mm': graph.head.depth_cube_mm,
        'stride': graph.head.stride,
        'antialias_factor': graph.antialias_factor,
    }


def _stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value)


def example_inputs(num_people: int = 2, num_aug: int = 2, image_hw=(96, 128), seed: int = 0,
                   distortion_model: str = 'opencv', resolution: int = 256) -> tuple:
    """Plausible contract inputs as torch tensors (order = INPUT_NAMES): a random image, a 55° FOV camera with
    small random distortion, random boxes inside the image and the official TTA geometry (metrabs_ros.crops)."""
    from metrabs_ros.augmentation import tta_parameters
    from metrabs_ros.camera import CameraModel
    from metrabs_ros.crops import crop_geometry

    rng = np.random.default_rng(seed)
    height, width = image_hw
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    if distortion_model == 'fisheye':
        coeffs = rng.uniform(-0.05, 0.05, 4)
    else:
        coeffs = np.concatenate([rng.uniform(-0.05, 0.05, 5), np.zeros(7)])
    camera = CameraModel.create(distortion_coeffs=coeffs, distortion_model=distortion_model, image_hw=image_hw)
    sizes = rng.uniform(0.3, 0.9, num_people) * min(height, width)
    x0 = rng.uniform(0, 1, num_people) * (width - sizes)
    y0 = rng.uniform(0, 1, num_people) * (height - sizes)
    boxes = np.stack([x0, y0, sizes * rng.uniform(0.5, 1.0, num_people), sizes], axis=1)
    tta = tta_parameters(num_aug)
    geom = crop_geometry(boxes, camera, np.array([0.0, -1.0, 0.0]), resolution, tta)
    return (torch.from_numpy(image),
            torch.from_numpy(camera.intrinsic_matrix.astype(np.float32)),
            torch.from_numpy(camera.distortion_coeffs.astype(np.float32)),
            torch.tensor([camera.model_id], dtype=torch.float32),
            torch.from_numpy(geom.rotations),
            torch.from_numpy(geom.intrinsics),
            torch.from_numpy(geom.pyramid_levels),
            torch.from_numpy(tta.gammas.astype(np.float32)),
            torch.from_numpy(tta.flips.astype(np.float32)))


def export_pose_model(graph: PoseGraph, path, metadata: Optional[Mapping[str, Any]] = None,
                      opset: int = DEFAULT_OPSET, check: bool = True,
                      inputs: Optional[Sequence[torch.Tensor]] = None) -> str:
    """Write `graph` as a contract pose model to `path` (ONNX, single file) and return the path.

    metadata: contract keys (docs/model_contract.md); missing ones are filled by `contract_metadata(graph)`;
    non-string values are JSON-encoded. Dynamic axes: P, A (people, augmentations), H, W (image).
    Runs onnx.checker (full check) when `check`. `inputs` (ordered as INPUT_NAMES) are traced; default:
    example_inputs(P=2, A=2).
    """
    import onnx

    from metrabs_ros.gpu.trt_graph_fixes import make_trt_compatible

    if opset < 16:
        raise ValueError(f'opset {opset} lacks GridSample; use >= 16')
    meta = contract_metadata(graph)
    meta.update(metadata or {})
    if meta.get('metrabs_ros.contract') != CONTRACT_VERSION:
        raise ValueError(f"metadata 'metrabs_ros.contract' must be {CONTRACT_VERSION!r}")
    if int(meta['input_resolution']) != graph.resolution:
        raise ValueError(f"metadata input_resolution {meta['input_resolution']} != graph {graph.resolution}")
    if int(meta.get('antialias_factor', graph.antialias_factor)) != graph.antialias_factor:
        raise ValueError(f"metadata antialias_factor {meta['antialias_factor']} != graph {graph.antialias_factor} "
                         '(set it with PoseGraph.set_antialias_factor)')
    meta['antialias_factor'] = graph.antialias_factor

    graph = graph.eval()
    if inputs is None:
        inputs = example_inputs(num_people=2, num_aug=2, resolution=graph.resolution)
    inputs = tuple(inputs)
    output_names = list(graph.output_names)
    dynamic_axes = {
        'image': {0: 'H', 1: 'W'},
        'crop_rotations': {0: 'P', 1: 'A'},
        'crop_intrinsics': {0: 'P', 1: 'A'},
        'pyramid_levels': {0: 'P', 1: 'A'},
        'aug_gammas': {0: 'A'},
        'aug_flips': {0: 'A'},
    }
    for out in output_names:
        dynamic_axes[out] = {0: 'P', 1: 'A'}
    path = os.fspath(path)
    with torch.no_grad(), warnings.catch_warnings():
        # Shape-derived Python ints (heatmap size, joint count) are constants of the model: expected.
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        warnings.filterwarnings('ignore', category=DeprecationWarning)  # legacy exporter: deliberate choice
        torch.onnx.export(graph, inputs, path, input_names=list(INPUT_NAMES), output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False,
                          do_constant_folding=True, external_data=False)
    model = onnx.load(path)
    # TensorRT's parser takes UINT8 only at the network boundary: exact cast-first rewrite (docs/gpu.md)
    make_trt_compatible(model)
    # The joint and coordinate axes are static; the exporter leaves them symbolic after the dynamic reshape.
    static_dims = {'poses3d_aug_mm': (None, None, len(graph.joint_names), 3),
                   'uncertainty_aug': (None, None, len(graph.joint_names))}
    for output in model.graph.output:
        for dim, value in zip(output.type.tensor_type.shape.dim, static_dims[output.name]):
            if value is not None:
                dim.Clear()
                dim.dim_value = value
    del model.metadata_props[:]
    for key, value in meta.items():
        prop = model.metadata_props.add()
        prop.key = key
        prop.value = _stringify(value)
    if check:
        onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def run_onnx(onnx_path, inputs: Sequence[torch.Tensor], num_threads: int = 1) -> list:
    """Run an exported pose model with ONNX Runtime (CPU) on torch inputs ordered as INPUT_NAMES."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(os.fspath(onnx_path), options, providers=['CPUExecutionProvider'])
    feeds = {name: t.numpy() for name, t in zip(INPUT_NAMES, inputs)}
    return session.run(None, feeds)


def parity_check(graph: PoseGraph, onnx_path, num_people: int = 2, num_aug: int = 3, image_hw=(120, 160),
                 seed: int = 0, distortion_model: str = 'opencv', inputs: Optional[Sequence] = None) -> float:
    """Max |torch − ONNX Runtime| over poses3d_aug_mm (mm) for the same inputs (default: `example_inputs`)."""
    if inputs is None:
        inputs = example_inputs(num_people, num_aug, image_hw, seed, distortion_model, graph.resolution)
    with torch.no_grad():
        expected = graph.eval()(*inputs)
    expected = expected[0] if isinstance(expected, tuple) else expected
    got = run_onnx(onnx_path, inputs)[0]
    if got.shape != tuple(expected.shape):
        raise AssertionError(f'ONNX output shape {got.shape} != torch {tuple(expected.shape)}')
    return float(np.max(np.abs(got - expected.numpy()))) if got.size else 0.0


def export_for_deployment(graph: PoseGraph, path, metadata: Optional[Mapping[str, Any]] = None,
                          fp16: bool = False, parity: bool = True, parity_inputs: Optional[Sequence] = None,
                          log=print) -> dict:
    """Export `graph` as a deployable contract model: BatchNorm folded into the convolutions, optionally FP16.

    fp16: backbone and head convolution in float16 (a strongly typed FP16 ONNX graph for TensorRT 10/11); the
      warp, softmax / soft-argmax and the 3×3 solve stay float32 (PoseGraph.set_compute_dtype).
    parity: run the same random contract inputs through ONNX Runtime (CPU) and the float32 PyTorch graph and
      report max |ONNX − PyTorch| over poses3d_aug_mm in mm.
    Returns {'path', 'fp16', 'parity_max_abs_mm' (or None)} and logs one line per step through `log`.
    """
    import copy

    from metrabs_ros.training.fusion import fuse_batchnorm

    reference = graph.eval()
    deploy = copy.deepcopy(reference)
    deploy.backbone = fuse_batchnorm(reference.backbone)
    if fp16:
        deploy.set_compute_dtype(torch.float16)
    meta = dict(metadata or {})
    meta.setdefault('precision', 'fp16' if fp16 else 'fp32')
    path = export_pose_model(deploy, path, meta)
    log(f'wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB, {"FP16" if fp16 else "FP32"}, onnx.checker passed)')
    report = {'path': path, 'fp16': fp16, 'parity_max_abs_mm': None}
    if parity:
        inputs = parity_inputs or example_inputs(num_people=2, num_aug=3, image_hw=(120, 160),
                                                            seed=1, resolution=graph.resolution)
        diff = parity_check(reference, path, inputs=inputs)
        report['parity_max_abs_mm'] = diff
        log(f'parity: max |ONNX Runtime - PyTorch (FP32)| = {diff:.4f} mm on poses3d_aug_mm '
            f'(random image, {inputs[4].shape[0]} crops x {inputs[4].shape[1]} augmentations)')
    return report
