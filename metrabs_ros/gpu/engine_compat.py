"""Static TensorRT 10/11 compatibility check of an ONNX graph (`metrabs-ros check-engine-compat MODEL.onnx`).

Walks every node (and the bodies of If/Loop/Scan) and reports each operator, data type, attribute combination and
dynamic-shape pattern that TensorRT's ONNX parser does not support or supports only with limits, by the rules of
:mod:`metrabs_ros.gpu.trt_onnx_rules` (onnx-tensorrt's operator support matrix; versions and sources there and in
docs/gpu.md). No TensorRT is needed: this predicts what the parser and builder will say, so that a graph can be
fixed before a user with an RTX card meets the error.

Severities:
  unsupported  the parser or builder rejects it, or builds something that computes a different function
               (e.g. Resize with ``antialias=1``: the filter is documented as unsupported and the importer ignores it)
  limited      supported under conditions, by recent TensorRT 10 releases only, or with run-time costs
               (data-dependent output shapes: no CUDA graphs, an output allocator)
  info         what the engine build needs to know (dynamic input dimensions -> optimisation profile)

Needs the ``onnx`` package (a development/training dependency); the runtime never imports this module.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional

from metrabs_ros.gpu import trt_onnx_rules as rules

SEVERITIES = ('unsupported', 'limited', 'info')


@dataclasses.dataclass(frozen=True)
class Finding:
    severity: str   # 'unsupported' | 'limited' | 'info'
    rule: str       # short identifier, e.g. 'resize-antialias'
    op: str         # operator type ('' for graph-level findings)
    node: str       # node name (or tensor name for tensor-level findings, '' for the graph)
    detail: str     # what is wrong and what the matrix says


@dataclasses.dataclass
class CompatReport:
    path: str
    opset: int
    num_nodes: int
    findings: List[Finding]

    def by_severity(self, severity: str) -> List[Finding]:
        return [f for f in self.findings if f.severity == severity]

    @property
    def unsupported(self) -> List[Finding]:
        return self.by_severity('unsupported')

    @property
    def limited(self) -> List[Finding]:
        return self.by_severity('limited')

    @property
    def ok(self) -> bool:
        """True when nothing is unsupported (limits and notes allowed)."""
        return not self.unsupported

    def rules(self, severity: Optional[str] = None) -> set:
        return {f.rule for f in self.findings if severity is None or f.severity == severity}

    def to_dict(self) -> dict:
        return {'path': self.path, 'opset': self.opset, 'num_nodes': self.num_nodes,
                'source': rules.MATRIX_SOURCE, 'ok': self.ok,
                'counts': {s: len(self.by_severity(s)) for s in SEVERITIES},
                'findings': [dataclasses.asdict(f) for f in self.findings]}


def _onnx():
    try:
        import onnx
    except ModuleNotFoundError as error:
        raise RuntimeError('check-engine-compat needs the onnx package (pip install onnx, or '
                           'pip install -r requirements-dev.txt)') from error
    return onnx


class _Graphs:
    """Types, shapes, constant values and value provenance of every tensor name of a model (subgraphs included)."""

    def __init__(self, model):
        onnx = _onnx()
        from onnx import numpy_helper
        self.numpy_helper = numpy_helper
        self.types: Dict[str, int] = {}
        self.shapes: Dict[str, Optional[list]] = {}
        self.constants: Dict[str, object] = {}     # name -> TensorProto (initializers, Constant values)
        self.foldable: set = set()                 # computed from constants only
        self.provenance: Dict[str, str] = {}       # 'const' | 'shape' | 'data'
        self.graph_io: set = set()
        self.inference_error = None
        try:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception as error:  # noqa: BLE001 - a checker reports, it does not stop at inference
            self.inference_error = str(error).splitlines()[0][:200]
        self.model = model
        self.graph_io.update(v.name for v in model.graph.input)
        self.graph_io.update(v.name for v in model.graph.output)
        self._collect(model.graph)

    def _value(self, value_info):
        tensor_type = value_info.type.tensor_type
        if not value_info.type.HasField('tensor_type'):
            return
        self.types[value_info.name] = tensor_type.elem_type
        if tensor_type.HasField('shape'):
            self.shapes[value_info.name] = [d.dim_value if d.HasField('dim_value') else
                                            (d.dim_param or None) for d in tensor_type.shape.dim]

    def _collect(self, graph):
        for v in list(graph.input) + list(graph.output) + list(graph.value_info):
            self._value(v)
        for init in graph.initializer:
            self.types[init.name] = init.data_type
            self.shapes[init.name] = list(init.dims)
            self.constants[init.name] = init
            self.provenance[init.name] = 'const'
        for v in graph.input:
            self.provenance.setdefault(v.name, 'data')
        for node in graph.node:
            if node.op_type == 'Constant' and node.output:
                for attr in node.attribute:
                    if attr.name == 'value':
                        self.constants[node.output[0]] = attr.t
                        self.types.setdefault(node.output[0], attr.t.data_type)
                        self.shapes.setdefault(node.output[0], list(attr.t.dims))
                self.provenance[node.output[0]] = 'const'
                continue
            inputs = [i for i in node.input if i]
            kinds = [self.provenance.get(i, 'data') for i in inputs]
            if node.op_type in rules.SHAPE_ONLY:
                kind = 'shape'
            elif node.op_type == 'ConstantOfShape':
                kind = 'shape' if kinds and kinds[0] != 'data' else 'data'
            elif all(k == 'const' for k in kinds):
                kind = 'const'
                self.foldable.update(node.output)
            elif 'data' in kinds or any(a.type in (5, 10) for a in node.attribute):   # subgraph bodies: data
                kind = 'data'
            else:
                kind = 'shape'
            for out in node.output:
                self.provenance[out] = kind
            for attr in node.attribute:
                for sub in ([attr.g] if attr.type == 5 else list(attr.graphs) if attr.type == 10 else []):
                    for v in sub.input:
                        self.provenance.setdefault(v.name, 'data')
                    self._collect(sub)

    def type_name(self, name: str) -> Optional[str]:
        elem = self.types.get(name)
        return None if elem in (None, 0) else rules.ONNX_TYPE_NAMES.get(elem, f'type{elem}')

    def is_constant(self, name: str) -> bool:
        return name in self.constants or name in self.foldable

    def value(self, name: str):
        tensor = self.constants.get(name)
        return None if tensor is None else self.numpy_helper.to_array(tensor)


def _attrs(node) -> dict:
    from onnx import helper
    out = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        out[attr.name] = value.decode() if isinstance(value, bytes) else value
    return out


class _Checker:
    def __init__(self, graphs: _Graphs, opset: int):
        self.g = graphs
        self.opset = opset
        self.findings: List[Finding] = []
        self.num_nodes = 0

    def add(self, severity, rule, op, node, detail):
        self.findings.append(Finding(severity, rule, op, node, detail))

    # ------------------------------------------------------------------------------------------------ graph level
    def check_opset(self, model):
        for entry in model.opset_import:
            domain = entry.domain or 'ai.onnx'
            if domain != 'ai.onnx':
                continue
            v = entry.version
            if v < rules.OPSET_MIN or v > rules.OPSET_MAX:
                self.add('unsupported', 'opset-range', '', '', f'opset {v} is outside the documented range '
                         f'{rules.OPSET_MIN}-{rules.OPSET_MAX} (TensorRT 10.15)')
            elif v > rules.OPSET_MAX_10_0:
                self.add('limited', 'opset-range', '', '', f'opset {v} is documented from TensorRT 10.15 on '
                         f'(10.0/10.1: opset {rules.OPSET_MIN}-{rules.OPSET_MAX_10_0})')

    def check_io(self, graph):
        for v in graph.input:
            if v.name in self.g.constants:
                continue
            dims = self.g.shapes.get(v.name)
            dynamic = [str(d) if d else '?' for d in dims or [] if not isinstance(d, int) or d <= 0]
            if dims is None:
                self.add('limited', 'input-unknown-rank', '', v.name, f'input {v.name!r} has no declared shape: '
                         'TensorRT needs the rank at build time')
            elif dynamic:
                self.add('info', 'dynamic-input', '', v.name, f'input {v.name!r} has dynamic dimensions '
                         f'{dims}: the engine needs an optimisation profile (build-engine sets P, A, H, W; '
                         'other symbols with --dim)')

    def check_tensor_types(self):
        consumers: Dict[str, List] = {}
        for node in self._all_nodes(self.g.model.graph):
            for i in node.input:
                consumers.setdefault(i, []).append(node)
        seen = set()
        for name in self.g.types:
            t = self.g.type_name(name)
            if t is None or name in seen:
                continue
            seen.add(name)
            if t not in rules.TRT_TENSOR_TYPES:
                self.add('unsupported', 'tensor-type', '', name, f'tensor {name!r} is {t}, not a TensorRT type')
            elif t == 'DOUBLE':
                self.add('limited', 'double', '', name, f'tensor {name!r} is DOUBLE: TensorRT casts it to FP32 '
                         '(clamped to +-FLT_MAX)')
            elif t == 'UINT8' and name not in self.g.graph_io:
                self.add('unsupported', 'uint8-internal', '', name, f'tensor {name!r} is UINT8 inside the graph: '
                         'UINT8 is supported only for network inputs and outputs')
            elif t in rules.QUANTIZED_TYPES:
                users = {n.op_type for n in consumers.get(name, [])} - {'DequantizeLinear'}
                if users:
                    self.add('unsupported', 'quantized-type', '', name, f'{t} tensor {name!r} is used by '
                             f'{sorted(users)}: quantized types are supported only through Q/DQ')

    # ------------------------------------------------------------------------------------------------ node level
    def _all_nodes(self, graph):
        for node in graph.node:
            yield node
            for attr in node.attribute:
                for sub in ([attr.g] if attr.type == 5 else list(attr.graphs) if attr.type == 10 else []):
                    yield from self._all_nodes(sub)

    def check_graph(self, graph, prefix=''):
        for index, node in enumerate(graph.node):
            self.num_nodes += 1
            name = prefix + (node.name or f'#{index}')
            self.check_node(node, name)
            for attr in node.attribute:
                for sub in ([attr.g] if attr.type == 5 else list(attr.graphs) if attr.type == 10 else []):
                    self.check_graph(sub, prefix=f'{name}/{attr.name}/')

    def check_node(self, node, name):
        op, domain = node.op_type, node.domain or 'ai.onnx'
        if domain == 'ai.onnx.ml':
            self.add('unsupported', 'ml-domain', op, name, f'{op} (ai.onnx.ml) has no TensorRT importer')
            return
        if domain != 'ai.onnx':
            self.add('unsupported', 'plugin', op, name, f'{domain}::{op} is not an ONNX operator: the engine build '
                     'needs a TensorRT plugin of this name (a plugin library loaded before parsing)')
            return
        if op in rules.UNSUPPORTED:
            self.add('unsupported', 'op-unsupported', op, name, f'{op} is not supported by the TensorRT parser')
            return
        if op not in rules.SUPPORTED_TYPES:
            self.add('unsupported', 'op-unknown', op, name, f'{op} is not in the operator support matrix')
            return
        if op in rules.SINCE_10_15:
            self.add('limited', 'op-new', op, name, f'{op} is documented as supported from TensorRT 10.15 on '
                     '(absent or unsupported in 10.1)')
        self.check_types(node, name)
        self.check_constant_inputs(node, name)
        self.check_shape_inputs(node, name)
        handler = getattr(self, f'check_{op}', None)
        if handler is not None:
            handler(node, name, _attrs(node))
        if op in rules.CONTROL_FLOW:
            self.add('limited', 'control-flow', op, name, rules.CONTROL_FLOW[op])
        if op in rules.DATA_DEPENDENT_OUTPUT_OPS:
            self.add('limited', 'data-dependent-shape', op, name, f'{op} has a data-dependent output shape: '
                     'TensorRT needs an output allocator and cannot capture the engine in a CUDA graph')

    def check_types(self, node, name):
        op = node.op_type
        if op in rules.SHAPE_ONLY:
            return
        allowed = rules.SUPPORTED_TYPES[op]
        which = rules.TYPED_INPUTS.get(op, (0,))
        indices = range(len(node.input)) if which == 'all' else which
        for i in indices:
            if i >= len(node.input) or not node.input[i]:
                continue
            t = self.g.type_name(node.input[i])
            if t is None or t in allowed:
                continue
            if t == 'UINT8':
                self.add('unsupported', 'uint8-input', op, name, f'{op} reads UINT8 input {node.input[i]!r}: UINT8 '
                         'is supported only as a network input/output; cast it first')
            elif t == 'DOUBLE':
                continue    # reported once per tensor (check_tensor_types)
            else:
                self.add('unsupported', 'op-type', op, name, f'{op} on {t} (input {i} {node.input[i]!r}); '
                         f'the matrix lists {", ".join(sorted(allowed))}')
        if op in ('Cast', 'CastLike'):
            to = _attrs(node).get('to') if op == 'Cast' else self.g.types.get(node.input[1])
            t = rules.ONNX_TYPE_NAMES.get(to) if to else None
            if t is not None and t not in allowed and t != 'DOUBLE':
                self.add('unsupported', 'op-type', op, name, f'{op} to {t}; the matrix lists '
                         f'{", ".join(sorted(allowed))}')

    def check_constant_inputs(self, node, name):
        for index, text in rules.CONSTANT_INPUTS.get(node.op_type, {}).items():
            if index < len(node.input) and node.input[index] and not self.g.is_constant(node.input[index]):
                self.add('unsupported', 'constant-input', node.op_type, name,
                         f'{node.op_type}: {text} (input {node.input[index]!r} is computed at run time)')
        index = rules.AXES_INITIALIZER_BEFORE_10_15.get(node.op_type)
        if index is not None and index < len(node.input) and node.input[index] \
                and node.input[index] not in self.g.constants:
            self.add('limited', 'axes-initializer-10.1', node.op_type, name,
                     f'{node.op_type}: `axes` must be an initializer up to TensorRT 10.1 (10.15 lifts this)')

    def check_shape_inputs(self, node, name):
        for index in rules.SHAPE_INPUTS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index] \
                    and self.g.provenance.get(node.input[index]) == 'data':
                self.add('limited', 'data-dependent-shape', node.op_type, name,
                         f'{node.op_type}: input {index} {node.input[index]!r} (an output shape parameter) depends '
                         'on tensor values, not only on input shapes: data-dependent shape (output allocator, '
                         'no CUDA graph)')

    # ------------------------------------------------------------------------------------- operator-specific rules
    def _rank(self, tensor):
        shape = self.g.shapes.get(tensor)
        return None if shape is None else len(shape)

    def check_GridSample(self, node, name, attrs):
        mode = attrs.get('mode', 'bilinear')
        if mode not in rules.GRIDSAMPLE_MODES:
            self.add('unsupported', 'gridsample-mode', 'GridSample', name,
                     f"GridSample mode {mode!r}: the importer knows 'bilinear', 'nearest', 'bicubic' (opset 16 "
                     'names) and falls back to nearest for anything else (10.1 importer; opset 20 renamed them '
                     "'linear'/'cubic')")
        padding = attrs.get('padding_mode', 'zeros')
        if padding not in rules.GRIDSAMPLE_PADDING:
            self.add('unsupported', 'gridsample-padding', 'GridSample', name, f'padding_mode {padding!r}')
        rank = self._rank(node.input[0])
        if rank is not None and rank != 4:
            self.add('unsupported', 'gridsample-rank', 'GridSample', name,
                     f'GridSample input has rank {rank}: only 4-D input is supported')

    def check_Resize(self, node, name, attrs):
        mode = attrs.get('mode', 'nearest')
        if mode not in rules.RESIZE_MODES:
            self.add('limited' if mode == 'cubic' else 'unsupported', 'resize-mode', 'Resize', name,
                     f'Resize mode {mode!r}: the matrix lists nearest and linear' +
                     (' (the 10.1 importer maps cubic to its cubic filter; not documented)' if mode == 'cubic'
                      else ''))
        coord = attrs.get('coordinate_transformation_mode', 'half_pixel')
        if coord not in rules.RESIZE_COORDINATE_MODES:
            self.add('unsupported', 'resize-coordinate-mode', 'Resize', name,
                     f'coordinate_transformation_mode {coord!r}: supported are '
                     f'{", ".join(sorted(rules.RESIZE_COORDINATE_MODES))}')
        nearest = attrs.get('nearest_mode', 'round_prefer_floor')
        if mode == 'nearest' and nearest not in rules.RESIZE_NEAREST_MODES:
            self.add('unsupported', 'resize-nearest-mode', 'Resize', name, f'nearest_mode {nearest!r}')
        if attrs.get('antialias', 0):
            self.add('unsupported', 'resize-antialias', 'Resize', name,
                     'Resize antialias=1: antialiasing is not supported (the 10.1 importer does not read the '
                     'attribute, so an engine would resize without the filter and differ from ONNX Runtime)')
        policy = attrs.get('keep_aspect_ratio_policy', 'stretch')
        if policy != 'stretch':
            self.add('unsupported', 'resize-aspect-policy', 'Resize', name,
                     f'keep_aspect_ratio_policy {policy!r}: only stretch is supported')
        axes = attrs.get('axes')
        scales = node.input[2] if len(node.input) > 2 else ''
        if axes is not None and scales and not self.g.is_constant(scales):
            rank = self._rank(node.input[0])
            if rank is None or sorted(a % rank for a in axes) != list(range(rank)):
                self.add('unsupported', 'resize-axes', 'Resize', name,
                         'Resize with run-time `scales`: `axes` must list every axis in order')

    def check_TopK(self, node, name, attrs):
        if attrs.get('sorted', 1) != 1:
            self.add('unsupported', 'topk-sorted', 'TopK', name, 'TopK sorted=0: `sorted` must be 1')
        k = self.g.value(node.input[1]) if len(node.input) > 1 else None
        if k is None:
            self.add('limited', 'topk-k', 'TopK', name, f'TopK K is computed at run time: it must stay below '
                     f'{rules.TOPK_MAX_K}')
        elif int(k.reshape(-1)[0]) >= rules.TOPK_MAX_K:
            self.add('unsupported', 'topk-k', 'TopK', name, f'TopK K = {int(k.reshape(-1)[0])}: must be below '
                     f'{rules.TOPK_MAX_K}')

    def _pool(self, node, name, attrs):
        kernel = attrs.get('kernel_shape', [])
        if len(kernel) not in (2, 3):
            self.add('unsupported', 'pool-dims', node.op_type, name, f'{node.op_type} over {len(kernel)} spatial '
                     'dimensions: 2D or 3D pooling only')
        if any(d != 1 for d in attrs.get('dilations', [])):
            self.add('unsupported', 'pool-dilations', node.op_type, name, f'{node.op_type} dilations '
                     f'{attrs["dilations"]}: must be empty or all ones')

    def check_AveragePool(self, node, name, attrs):
        self._pool(node, name, attrs)

    def check_MaxPool(self, node, name, attrs):
        self._pool(node, name, attrs)
        if len(node.output) > 1 and node.output[1]:
            self.add('unsupported', 'maxpool-indices', 'MaxPool', name, 'MaxPool `Indices` output is unsupported')

    def check_LpPool(self, node, name, attrs):
        if any(d != 1 for d in attrs.get('dilations', [])):
            self.add('unsupported', 'pool-dilations', 'LpPool', name, 'LpPool dilations must be all ones')

    def _conv(self, node, name, attrs):
        shape = self.g.shapes.get(node.input[0])
        if shape is not None and len(shape) > 1 and not isinstance(shape[1], int):
            self.add('limited', 'conv-channels', node.op_type, name, f'{node.op_type} input channels are not '
                     f'static to ONNX shape inference ({shape[1]}): TensorRT needs the channel count at build '
                     'time (its own shape analysis may resolve it; a Reshape to the static shape makes it sure)')

    check_Conv = _conv
    check_ConvTranspose = _conv

    def check_ScatterND(self, node, name, attrs):
        if attrs.get('reduction', 'none') != 'none':
            self.add('unsupported', 'scatternd-reduction', 'ScatterND', name,
                     f"ScatterND reduction {attrs['reduction']!r}: only 'none'")

    def check_Constant(self, node, name, attrs):
        for key in ('sparse_value', 'value_string', 'value_strings'):
            if key in attrs:
                self.add('unsupported', 'constant-attribute', 'Constant', name, f'Constant `{key}` is unsupported')

    def check_LayerNormalization(self, node, name, attrs):
        if any(o for o in node.output[1:]):
            self.add('unsupported', 'layernorm-outputs', 'LayerNormalization', name,
                     'only the first output `Y` is supported')

    def check_LSTM(self, node, name, attrs):
        if attrs.get('input_forget', 0) or attrs.get('layout', 0):
            self.add('unsupported', 'lstm-attributes', 'LSTM', name, '`input_forget` and `layout` must be 0')
        self._bidirectional(node, name, attrs)

    def _bidirectional(self, node, name, attrs):
        acts = attrs.get('activations')
        if attrs.get('direction') == 'bidirectional' and acts and acts[:len(acts) // 2] != acts[len(acts) // 2:]:
            self.add('unsupported', 'rnn-activations', node.op_type, name,
                     'bidirectional: forward and reverse activations must be the same')

    check_GRU = _bidirectional
    check_RNN = _bidirectional

    def _zero_point(self, node, name, index, label):
        if index < len(node.input) and node.input[index]:
            value = self.g.value(node.input[index])
            if value is None or value.any():
                self.add('unsupported', 'zero-point', node.op_type, name, f'`{label}` must be zero')

    def check_QuantizeLinear(self, node, name, attrs):
        self._zero_point(node, name, 2, 'y_zero_point')

    def check_DequantizeLinear(self, node, name, attrs):
        self._zero_point(node, name, 2, 'x_zero_point')

    def check_Dropout(self, node, name, attrs):
        if len(node.input) > 2 and node.input[2]:
            value = self.g.value(node.input[2])
            if value is not None and value.any():
                self.add('unsupported', 'dropout-training', 'Dropout', name, '`is_training` must be false')

    def check_EyeLike(self, node, name, attrs):
        shape = self.g.shapes.get(node.input[0])
        if shape is None or not all(isinstance(d, int) and d > 0 for d in shape):
            self.add('unsupported', 'static-dims', 'EyeLike', name, 'EyeLike input must have static dimensions')

    def check_Hardmax(self, node, name, attrs):
        shape = self.g.shapes.get(node.input[0])
        axis = attrs.get('axis', -1)
        if shape is None or not isinstance(shape[axis % len(shape)] if shape else None, int):
            self.add('unsupported', 'static-dims', 'Hardmax', name, 'the `axis` dimension must be a build-time '
                     'constant')

    def check_If(self, node, name, attrs):
        then_b, else_b = attrs.get('then_branch'), attrs.get('else_branch')
        if then_b is None or else_b is None:
            return
        for a, b in zip(then_b.output, else_b.output):
            ra = len(a.type.tensor_type.shape.dim) if a.type.tensor_type.HasField('shape') else None
            rb = len(b.type.tensor_type.shape.dim) if b.type.tensor_type.HasField('shape') else None
            if ra is not None and rb is not None and ra != rb:
                self.add('unsupported', 'if-ranks', 'If', name, f'branch outputs {a.name!r} and {b.name!r} have '
                         f'ranks {ra} and {rb}: they must match')
            if a.name == b.name:
                self.add('unsupported', 'if-names', 'If', name, f'both branches output {a.name!r}: names must '
                         'differ')

    def check_float_shape_math(self):
        """Shape computations in floating point (e.g. Shape -> Cast(float) -> Div -> Round -> Cast(int64) ->
        Resize sizes): legal ONNX, built by the parser as shape-tensor arithmetic; noted for review."""
        count = 0
        for node in self._all_nodes(self.g.model.graph):
            out = node.output[0] if node.output else ''
            if self.g.provenance.get(out) == 'shape' and self.g.type_name(out) in ('FP32', 'FP16', 'DOUBLE') \
                    and node.op_type not in ('Shape', 'Size', 'ConstantOfShape'):
                count += 1
        if count:
            self.add('info', 'float-shape-math', '', '', f'{count} node(s) compute shape values in floating point '
                     '(shape -> float -> shape): TensorRT evaluates them as shape tensors at build/run time')


def check_model(model_or_path, as_built: bool = True) -> CompatReport:
    """Check an ONNX file (path) or ``onnx.ModelProto``; returns the findings (nothing is raised for them).

    ``as_built``: check the graph ``build-engine`` hands TensorRT, i.e. after the exact rewrites of
    :func:`metrabs_ros.gpu.trt_graph_fixes.for_tensorrt` (False: the file as it is)."""
    onnx = _onnx()
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        model = onnx.load(path)
    else:
        path, model = '<model>', model_or_path
    if as_built:
        from metrabs_ros.gpu.trt_graph_fixes import for_tensorrt
        model = for_tensorrt(model)
    graphs = _Graphs(model)
    opset = next((e.version for e in model.opset_import if (e.domain or 'ai.onnx') == 'ai.onnx'), 0)
    checker = _Checker(graphs, opset)
    if graphs.inference_error:
        checker.add('info', 'shape-inference', '', '', f'ONNX shape inference failed ({graphs.inference_error}); '
                    'type and shape rules use the declared types only')
    checker.check_opset(model)
    checker.check_io(model.graph)
    checker.check_graph(model.graph)
    checker.check_tensor_types()
    checker.check_float_shape_math()
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings = sorted(checker.findings, key=lambda f: (order[f.severity], f.rule, f.op, f.node))
    return CompatReport(path, opset, checker.num_nodes, findings)


def format_report(report: CompatReport, max_nodes: int = 4) -> str:
    """Human-readable summary: findings grouped by (severity, rule, op), a few node names per group."""
    counts = ', '.join(f'{len(report.by_severity(s))} {s}' for s in SEVERITIES)
    lines = [f'{report.path}: opset {report.opset}, {report.num_nodes} nodes -> {counts} '
             f'({"OK for TensorRT" if report.ok else "NOT buildable as is"})',
             f'  rules: {rules.MATRIX_SOURCE}']
    groups: Dict[tuple, List[Finding]] = {}
    for f in report.findings:
        groups.setdefault((f.severity, f.rule, f.op), []).append(f)
    for (severity, rule, op), items in groups.items():
        names = [f.node for f in items if f.node]
        where = f' at {", ".join(names[:max_nodes])}{" ..." if len(names) > max_nodes else ""}' if names else ''
        lines.append(f'  [{severity}] {rule}{f" ({op})" if op else ""} x{len(items)}{where}')
        lines.append(f'      {items[0].detail}')
    return '\n'.join(lines)


def cmd_check_engine_compat(args) -> int:
    """CLI handler: exit 0 when every model is free of unsupported findings (and of limits with --strict)."""
    reports = [check_model(path, as_built=not args.as_file) for path in args.models]
    for report in reports:
        print(format_report(report))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump([r.to_dict() for r in reports], f, indent=1)
    failed = [r for r in reports if not r.ok or (args.strict and r.limited)]
    return 1 if failed else 0
