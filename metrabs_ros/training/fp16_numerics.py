"""FP16 numerics of a contract pose model, measured on the CPU (`metrabs-ros fp16-numerics`).

What TensorRT's FP16 builds would compute is emulated on the FP32 ONNX graph: every floating-point tensor that a
node of an FP16 *stage* produces (and every float input such a node reads) is rounded to float16 and back
(Cast pairs), so values carry FP16 precision and range between layers, overflow to inf and underflow like FP16;
each node still computes internally in FP32 (as TensorRT's FP16 kernels accumulate in FP32 for convolutions,
matrix products and reductions). ONNX Runtime (CPU, graph optimisations off so the Cast pairs stay) runs the
emulated and the original graph on the same inputs; the difference of ``poses3d_aug_mm`` is the FP16 error.

Stages of an exported PoseGraph (names from the exporter's module scopes; docs/model_contract.md §1):
  warp         everything before the backbone: gamma lookup, pyramid, distortion-aware sampling grid, GridSample
  backbone     ``/backbone/...``
  head         the 1x1 head convolution ``/head/conv/...``
  decode       the rest of ``/head/...``: softmax, 2D/3D soft-argmax sums, pixel/metric mappings
  reconstruct  everything after the head: ridge least squares with its closed-form 3x3 solve, FOV mix, flip,
               back-rotation
Variants: each stage alone in FP16 (to attribute the error), ``export`` = {backbone, head} (the split of
``metrabs-ros export --fp16``, i.e. TensorRT 11 / strongly typed), ``export`` plus one more stage each, and ``all`` (what TensorRT 10's FP16 builder flag may choose in
the worst case). Shape computations stay exact (TensorRT evaluates them as shape tensors).

Also reported per variant: the largest |value| entering the FP16 rounding per stage (FP16 overflows above
65504) and the tensors that overflowed or became NaN. Two real-kernel cross-checks: the FP32 file converted to
the export's split as a strongly typed FP16 graph (:func:`convert_to_fp16`) run by ONNX Runtime with its FP16
kernels and fusions, and an actual FP16 export (``--fp16-model``), each against the FP32 file.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

STAGES = ('warp', 'backbone', 'head', 'decode', 'reconstruct')
EXPORT_SPLIT = ('backbone', 'head')
VARIANTS = {
    **{f'{stage} only': (stage,) for stage in STAGES},
    'export (backbone+head)': EXPORT_SPLIT,
    'export + warp': EXPORT_SPLIT + ('warp',),
    'export + decode': EXPORT_SPLIT + ('decode',),
    'export + reconstruct': EXPORT_SPLIT + ('reconstruct',),
    'all FP16': STAGES,
}
FP16_MAX = 65504.0
POSES = 'poses3d_aug_mm'


def node_stages(model) -> List[str]:
    """Stage of every top-level node of an exported pose graph (see the module docstring)."""
    graph = model.graph
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    stages: List[Optional[str]] = [None] * len(graph.node)
    for i, node in enumerate(graph.node):
        if node.name.startswith('/backbone/'):
            stages[i] = 'backbone'
        elif node.name.startswith('/head/conv/'):
            stages[i] = 'head'
        elif node.name.startswith('/head/'):
            stages[i] = 'decode'
    if 'backbone' not in stages:
        raise ValueError('no /backbone/ nodes: node_stages needs a graph exported from a PoseGraph')
    # ancestors of the backbone (and of the head conv, for backbones that feed it directly) form the warp stage
    frontier = [i for i, s in enumerate(stages) if s in ('backbone', 'head')]
    seen = set(frontier)
    while frontier:
        node = graph.node[frontier.pop()]
        for name in node.input:
            j = producer.get(name)
            if j is not None and j not in seen:
                seen.add(j)
                frontier.append(j)
                if stages[j] is None:
                    stages[j] = 'warp'
    return [s or 'reconstruct' for s in stages]


def emulate_fp16(model, fp16_stages: Sequence[str], monitor: bool = True, stages: Optional[List[str]] = None):
    """A copy of ``model`` whose nodes in ``fp16_stages`` see and produce float16-rounded float tensors.

    With ``monitor``, an extra scalar output ``absmax:STAGE:TENSOR`` per rounded tensor holds the largest |value|
    before rounding (NaN propagates). Value tensors only: shape computations and constants are left exact.
    ``stages``: a label per top-level node (default :func:`node_stages`), for finer experiments."""
    import onnx
    from onnx import TensorProto, helper

    from metrabs_ros.gpu.engine_compat import _Graphs

    model = onnx.ModelProto.FromString(model.SerializeToString())
    info = _Graphs(model)
    stages = node_stages(model) if stages is None else list(stages)
    graph = model.graph
    is_float = lambda name: info.types.get(name) == TensorProto.FLOAT  # noqa: E731
    is_value = lambda name: info.provenance.get(name) == 'data'        # noqa: E731
    rounded: Dict[str, str] = {}      # original tensor name -> rounded copy (inputs of FP16 nodes)
    new_nodes, monitors = [], []

    def round_nodes(src, dst, stage, tag):
        half = f'{dst}__fp16'
        out = [helper.make_node('Cast', [src], [half], to=TensorProto.FLOAT16, name=f'{half}_cast'),
               helper.make_node('Cast', [half], [dst], to=TensorProto.FLOAT, name=f'{dst}_cast')]
        if monitor:
            name = f'absmax:{stage}:{tag}'
            out += [helper.make_node('Abs', [src], [f'{name}__abs']),
                    helper.make_node('ReduceMax', [f'{name}__abs'], [name], keepdims=0)]
            monitors.append(name)
        return out

    for node, stage in zip(list(graph.node), stages):
        if stage not in fp16_stages or node.op_type in ('Constant', 'Shape', 'Size'):
            new_nodes.append(node)
            continue
        for k, name in enumerate(node.input):
            if not name or not is_float(name) or not (is_value(name) or name in info.constants):
                continue
            if name not in rounded:
                rounded[name] = f'{name}__in16'
                new_nodes += round_nodes(name, rounded[name], stage, f'in:{name}')
            node.input[k] = rounded[name]
        new_nodes.append(node)
        for k, name in enumerate(node.output):
            if name and is_float(name) and is_value(name):
                node.output[k] = f'{name}__fp32'
                new_nodes += round_nodes(node.output[k], name, stage, name)
                rounded[name] = name       # already rounded: consumers in FP16 stages read it as it is
    del graph.node[:]
    graph.node.extend(new_nodes)
    for name in monitors:
        graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, []))
    return model


def _session(model_or_path, threads: Optional[int] = None):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    data = model_or_path if isinstance(model_or_path, (str, os.PathLike)) else model_or_path.SerializeToString()
    return ort.InferenceSession(os.fspath(data) if isinstance(data, os.PathLike) else data, options,
                                providers=['CPUExecutionProvider'])


def record_feeds(model_path, frames: Iterable, num_aug: int = 1, threads: Optional[int] = None) -> List[dict]:
    """The pose model's feed dicts for ``frames`` = iterable of (image RGB uint8, CameraModel, boxes [N, 4] xywh),
    built by the library pipeline (PoseEstimator.estimate_poses) with full frames as the GPU backends feed them."""
    from metrabs_ros.estimator import PoseEstimator

    estimator = PoseEstimator(model_path, None, backend='cpu', num_threads=threads)
    estimator.crop_to_window = False
    recorded = []
    session = estimator.session

    class Recorder:
        def __getattr__(self, name):
            return getattr(session, name)

        def run(self, output_names, feeds):
            recorded.append({k: np.array(v) for k, v in feeds.items()})
            return session.run(output_names, feeds)

    estimator.session = Recorder()
    for image, camera, boxes in frames:
        if len(boxes):
            estimator.estimate_poses(image, boxes, camera=camera, num_aug=num_aug)
    return recorded


def _errors(reference: List[np.ndarray], other: List[np.ndarray]) -> dict:
    """Per-joint 3D distances (mm) over all people x augmentations x joints: absolute (camera frame) and
    root-relative (each pose minus its mean joint, i.e. without the error of the person's translation)."""
    out = {}
    for key, centre in (('', False), ('rel_', True)):
        parts = []
        for r, o in zip(reference, other):
            r, o = r.astype(np.float64), o.astype(np.float64)
            if centre:
                r, o = r - r.mean(-2, keepdims=True), o - o.mean(-2, keepdims=True)
            parts.append(np.linalg.norm(o - r, axis=-1).ravel())
        dist = np.concatenate(parts)
        finite = dist[np.isfinite(dist)]
        out.update({f'{key}max_mm': float(finite.max()) if finite.size else float('nan'),
                    f'{key}p99_mm': float(np.percentile(finite, 99)) if finite.size else float('nan'),
                    f'{key}mean_mm': float(finite.mean()) if finite.size else float('nan')})
        if not centre:
            out.update(joints=int(dist.size), non_finite=int(dist.size - finite.size))
    return out


def measure(model_path, feeds: List[dict], variants: Optional[Dict[str, Sequence[str]]] = None,
            fp16_model_path=None, threads: Optional[int] = None, convert: bool = True) -> dict:
    """FP32 reference vs each emulated variant, vs the FP32 file converted to the export's FP16 split and run with
    ONNX Runtime's own kernels and fusions (``convert``; :func:`convert_to_fp16`), and vs an actual FP16 export
    (``fp16_model_path``), on the recorded feeds."""
    import onnx

    variants = VARIANTS if variants is None else variants
    model = onnx.load(os.fspath(model_path))
    reference_session = _session(model, threads)
    reference = [reference_session.run([POSES], f)[0] for f in feeds]
    report = {'model': os.fspath(model_path), 'num_calls': len(feeds),
              'num_crops': int(sum(f['crop_rotations'].shape[0] * f['crop_rotations'].shape[1] for f in feeds)),
              'variants': {}}
    for name, stages in variants.items():
        emulated = emulate_fp16(model, stages)
        session = _session(emulated, threads)
        names = [o.name for o in emulated.graph.output]
        absmax: Dict[str, float] = {}
        overflow: Dict[str, float] = {}
        poses = []
        for f in feeds:
            out = dict(zip(names, session.run(names, f)))
            poses.append(out[POSES])
            for key, value in out.items():
                if not key.startswith('absmax:'):
                    continue
                _, stage, tensor = key.split(':', 2)
                v = float(value)
                absmax[stage] = max(absmax.get(stage, 0.0), v) if np.isfinite(v) else float('inf')
                if not np.isfinite(v) or v > FP16_MAX:
                    overflow[tensor] = v if np.isfinite(v) else float('inf')
        entry = {'fp16_stages': list(stages), **_errors(reference, poses),
                 'max_abs_before_rounding': absmax, 'overflowed_tensors': dict(sorted(overflow.items())[:20]),
                 'num_overflowed_tensors': len(overflow)}
        report['variants'][name] = entry
    if convert:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        converted = ort.InferenceSession(convert_to_fp16(model).SerializeToString(), options,
                                         providers=['CPUExecutionProvider'])
        poses = [converted.run([POSES], f)[0] for f in feeds]
        report['variants']['export split as FP16 graph, ORT CPU'] = {'fp16_stages': list(EXPORT_SPLIT),
                                                                        **_errors(reference, poses)}
    if fp16_model_path:
        fp16_session = _session(os.fspath(fp16_model_path), threads)
        poses = [fp16_session.run([POSES], f)[0] for f in feeds]
        report['variants']['FP16 export file (ORT)'] = {'fp16_stages': ['as exported'], **_errors(reference, poses)}
    return report


def format_table(report: dict) -> str:
    lines = [f"{report['model']}: {report['num_calls']} frames, {report['num_crops']} crops; |FP16 - FP32| per "
             'joint (poses3d_aug_mm)',
             '| variant (FP16 stages) | max mm | p99 mm | mean mm | root-rel. max mm | root-rel. p99 mm | '
             'NaN/inf joints | overflowed tensors |',
             '|---|---:|---:|---:|---:|---:|---:|---:|']
    for name, v in report['variants'].items():
        lines.append(f"| {name} | {v['max_mm']:.3f} | {v['p99_mm']:.3f} | {v['mean_mm']:.4f} | {v['rel_max_mm']:.3f} "
                     f"| {v['rel_p99_mm']:.3f} | {v['non_finite']} | {v.get('num_overflowed_tensors', '-')} |")
    lines.append('largest |value| entering FP16 per stage (FP16 max 65504):')
    for name, v in report['variants'].items():
        if 'max_abs_before_rounding' in v:
            stages = ', '.join(f'{s} {m:.4g}' for s, m in v['max_abs_before_rounding'].items())
            lines.append(f'  {name}: {stages}')
            if v['num_overflowed_tensors']:
                lines.append(f"    overflow in: {', '.join(list(v['overflowed_tensors'])[:6])}")
    return '\n'.join(lines)


def dataset_frames(data_path, max_samples: Optional[int] = None, min_person_pixels: int = 100):
    """(image, camera, GT boxes) of data-engine samples (as `metrabs-ros evaluate --gt-boxes` picks people)."""
    from metrabs_ros.training import augment as aug
    from metrabs_ros.training.evaluate import _sample_people

    samples = aug.open_samples(os.fspath(data_path))
    n = len(samples) if max_samples is None else min(len(samples), int(max_samples))
    for i in range(n):
        image, camera, boxes, _, _, keep = _sample_people(samples[i], min_person_pixels)
        yield image, camera, boxes[keep]


def cmd_fp16_numerics(args) -> int:
    feeds = record_feeds(args.model, dataset_frames(args.data, args.max_samples), num_aug=args.num_aug,
                         threads=args.threads)
    if not feeds:
        raise ValueError(f'no people in {args.data}')
    report = measure(args.model, feeds, fp16_model_path=args.fp16_model, threads=args.threads)
    report.update(data=os.fspath(args.data), num_aug=args.num_aug)
    print(format_table(report))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=1)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser('fp16-numerics', help='FP16 vs FP32 3D error of a pose model on data-engine scenes, with '
                                             'TensorRT-style FP16 emulated per stage on the CPU (needs onnx)')
    p.add_argument('model', help='FP32 contract pose model (.onnx, exported from a PoseGraph)')
    p.add_argument('--data', required=True, help='data-engine samples (metrabs-ros synth --kind scenes ...)')
    p.add_argument('--fp16-model', help='the FP16 export of the same model (metrabs-ros export --fp16)')
    p.add_argument('--num-aug', type=int, default=1)
    p.add_argument('--max-samples', type=int)
    p.add_argument('--threads', type=int)
    p.add_argument('--json', help='write the report as JSON')
    p.set_defaults(func=cmd_fp16_numerics)


def convert_to_fp16(model, fp16_stages: Sequence[str] = EXPORT_SPLIT):
    """A strongly typed mixed-precision copy of ``model``: nodes of ``fp16_stages`` compute in float16 (their
    float initializers and Constant values stored as float16, Cast nodes at the stage boundaries), the rest in
    float32 — the same split as ``metrabs-ros export --fp16``, made from an FP32 ONNX file without its checkpoint.
    ONNX Runtime runs it with its own FP16 kernels and fusions; where its CPU provider has no FP16 kernel it
    computes the node in FP32 and may drop the rounding between such nodes, so this is a milder FP16 than
    TensorRT's (the same holds for ONNX Runtime on an FP16 export)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from metrabs_ros.gpu.engine_compat import _Graphs

    model = onnx.ModelProto.FromString(model.SerializeToString())
    info = _Graphs(model)
    stages = node_stages(model)
    graph = model.graph
    in16 = [s in fp16_stages and n.op_type not in ('Shape', 'Size') for n, s in zip(graph.node, stages)]
    consumers: Dict[str, List[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    outputs = {o.name for o in graph.output}

    # float inputs that ONNX requires in float32 whatever the data type (Resize's roi and scales)
    float32_only = {name for node in graph.node if node.op_type == 'Resize' for name in node.input[1:3] if name}

    def is_float_value(name):
        return (info.types.get(name) == TensorProto.FLOAT and info.provenance.get(name) in ('data', 'const')
                and name not in float32_only)

    # float initializers / Constant values used only by FP16 nodes are stored as float16
    inits = {t.name: t for t in graph.initializer}
    for name, users in consumers.items():
        if not users or not all(in16[u] for u in users) or not is_float_value(name):
            continue
        if name in inits:
            inits[name].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(inits[name]).astype(np.float16),
                                                         name))
        elif name in producer and graph.node[producer[name]].op_type == 'Constant':
            const = graph.node[producer[name]]
            for attr in const.attribute:
                if attr.name == 'value':
                    attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16)))
            in16[producer[name]] = True
    half_of, float_of, new_nodes = {}, {}, []
    for i, node in enumerate(graph.node):
        if in16[i]:
            for k, name in enumerate(node.input):
                if not name or not is_float_value(name):
                    continue
                src = producer.get(name)
                if src is not None and in16[src]:
                    continue                                   # already float16
                if name in inits and inits[name].data_type == TensorProto.FLOAT16:
                    continue
                if name not in half_of:
                    half_of[name] = f'{name}__to16'
                    new_nodes.append(helper.make_node('Cast', [name], [half_of[name]], to=TensorProto.FLOAT16))
                node.input[k] = half_of[name]
            for attr in node.attribute:
                if node.op_type == 'Cast' and attr.name == 'to' and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16
        else:
            for k, name in enumerate(node.input):
                src = producer.get(name)
                if name and src is not None and in16[src] and is_float_value(name):
                    if name not in float_of:
                        float_of[name] = f'{name}__to32'
                        new_nodes.append(helper.make_node('Cast', [name], [float_of[name]], to=TensorProto.FLOAT))
                    node.input[k] = float_of[name]
        new_nodes.append(node)
    for out in graph.output:
        src = producer.get(out.name)
        if src is not None and in16[src]:
            raise ValueError(f'graph output {out.name!r} is produced in an FP16 stage')
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    return model
