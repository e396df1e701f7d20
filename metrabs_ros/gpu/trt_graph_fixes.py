"""ONNX rewrites that make our exports parse under TensorRT 10/11 without changing what they compute.

Each pass takes and returns an ``onnx.ModelProto`` (modified in place) and is exact: the rewritten graph gives the
same values as the original in ONNX Runtime (tests: test/test_engine_compat.py). The rules they satisfy are those
of :mod:`metrabs_ros.gpu.engine_compat` (docs/gpu.md, "TensorRT compatibility check"). Needs the ``onnx`` package
(imported by the passes only).

Where they run:
* :func:`cast_uint8_inputs_first` — TensorRT accepts UINT8 only as a network input or output: layout operations
  (Transpose, Reshape, ...) on a UINT8 input followed by a Cast are reordered to Cast first. Costs nothing on the
  CPU, so the pose export applies it and the shipped files carry it.
* :func:`replace_antialiased_resize` — ``Resize(antialias=1)`` is documented as unsupported (and the 10.1 importer
  ignores the attribute): each such linear, half-pixel resize of a 4-D tensor along H and W becomes two separable
  banded resamplings (Gather of each output sample's taps, weighted sum) with the same triangle-filter taps, edge
  clamping and normalisation as ONNX Runtime. ONNX Runtime's own antialiased Resize is much faster on the CPU
  (the rewritten NanoDet letterbox cost 24 % of the whole detector at 640x480, 1 thread), so shipped files keep
  the Resize and :func:`metrabs_ros.gpu.trt_builder.build_engine` applies this pass to what it hands TensorRT
  (:func:`for_tensorrt`); ``check-engine-compat`` checks that same graph.
"""
from __future__ import annotations

import warnings

import numpy as np

LAYOUT_OPS = frozenset({'Transpose', 'Reshape', 'Unsqueeze', 'Squeeze', 'Slice', 'Identity', 'Flatten'})


def _consumers(graph):
    out = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def cast_uint8_inputs_first(model):
    """For every UINT8 graph input read by layout operations that end in Cast(to=T) nodes (all the same T),
    insert one Cast(input -> T) in front of them; the terminal Casts become no-ops (T -> T).

    Exact (UINT8 -> INT32/FLOAT is exact and layout operations move values only). An input whose chain does not
    end in Casts to one type is left unchanged with a warning (the compatibility check then reports it)."""
    from onnx import TensorProto, helper

    graph = model.graph
    consumers = _consumers(graph)
    new_nodes = []
    for value in graph.input:
        if value.type.tensor_type.elem_type != TensorProto.UINT8:
            continue
        heads = [n for n in consumers.get(value.name, []) if n.op_type not in ('Cast', 'Shape', 'Size')]
        if not heads:
            continue
        targets, chain, frontier = set(), [], list(heads)
        while frontier:
            node = frontier.pop()
            if node.op_type == 'Cast':
                targets.add(next(a.i for a in node.attribute if a.name == 'to'))
                continue
            if node.op_type not in LAYOUT_OPS:
                targets.add(None)      # not a layout op: no exact cast-first rewrite
                break
            chain.append(node)
            for out in node.output:
                frontier.extend(consumers.get(out, []))
        if len(targets) != 1 or None in targets:
            warnings.warn(f'UINT8 input {value.name!r} is not only moved by layout ops and cast to one type; left '
                          'as it is (check-engine-compat reports it)')
            continue
        target = targets.pop()
        cast_name = f'{value.name}_as_{TensorProto.DataType.Name(target).lower()}'
        new_nodes.append(helper.make_node('Cast', [value.name], [cast_name], to=target,
                                          name=f'{cast_name}_cast'))
        for node in heads:
            for i, name in enumerate(node.input):
                if name == value.name:
                    node.input[i] = cast_name
        changed = {out for node in chain for out in node.output}
        kept = [v for v in graph.value_info if v.name not in changed]
        del graph.value_info[:]
        graph.value_info.extend(kept)
    if new_nodes:
        nodes = new_nodes + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)
    return model


def _linear_antialias_axis(prefix, data, axis, n_in, n_out):
    """Nodes and initializers resizing ``data`` [1, C, H, W] along ``axis`` (2 or 3) from n_in to n_out samples
    (int64 [1] tensors) with ONNX Resize's linear, half_pixel, antialias=1 filter, border taps clamped
    (metrabs_ros.training.detector.export.resize_matrix is the numpy statement of the same weights)."""
    from onnx import TensorProto, helper, numpy_helper

    p = prefix
    n = helper.make_node
    inits = [numpy_helper.from_array(np.array([0], np.int64), f'{p}_i0'),
             numpy_helper.from_array(np.array(1, np.int64), f'{p}_i1s'),
             numpy_helper.from_array(np.array(0, np.int64), f'{p}_i0s'),
             numpy_helper.from_array(np.array([1], np.int64), f'{p}_i1'),
             numpy_helper.from_array(np.array([-1], np.int64), f'{p}_im1'),
             numpy_helper.from_array(np.float32(0.5), f'{p}_half'),
             numpy_helper.from_array(np.float32(1.0), f'{p}_one'),
             numpy_helper.from_array(np.float32(2.0), f'{p}_two'),
             numpy_helper.from_array(np.float32(0.0), f'{p}_zero')]
    nodes = [
        n('Cast', [n_in], [f'{p}_nin_f'], to=TensorProto.FLOAT),
        n('Cast', [n_out], [f'{p}_nout_f'], to=TensorProto.FLOAT),
        n('Div', [f'{p}_nout_f', f'{p}_nin_f'], [f'{p}_scale']),                      # s = n_out / n_in
        n('Div', [f'{p}_one', f'{p}_scale'], [f'{p}_inv_scale']),
        n('Max', [f'{p}_inv_scale', f'{p}_one'], [f'{p}_support']),                   # max(1, 1/s)
        # output sample centres c_i = (i + 0.5) / s - 0.5, i = 0..n_out-1   [n_out, 1]
        n('Squeeze', [n_out, f'{p}_i0'], [f'{p}_nout_s']),
        n('Range', [f'{p}_i0s', f'{p}_nout_s', f'{p}_i1s'], [f'{p}_i']),
        n('Cast', [f'{p}_i'], [f'{p}_i_f'], to=TensorProto.FLOAT),
        n('Add', [f'{p}_i_f', f'{p}_half'], [f'{p}_ih']),
        n('Div', [f'{p}_ih', f'{p}_scale'], [f'{p}_c0']),
        n('Sub', [f'{p}_c0', f'{p}_half'], [f'{p}_c1']),
        n('Unsqueeze', [f'{p}_c1', f'{p}_i1'], [f'{p}_c']),
        # taps t = floor(c - support) + k, k = 0..ceil(2 support)+1   [n_out, T]
        n('Sub', [f'{p}_c', f'{p}_support'], [f'{p}_cs']),
        n('Floor', [f'{p}_cs'], [f'{p}_first']),
        n('Mul', [f'{p}_support', f'{p}_two'], [f'{p}_2s']),
        n('Ceil', [f'{p}_2s'], [f'{p}_2s_c']),
        n('Add', [f'{p}_2s_c', f'{p}_two'], [f'{p}_t_f']),
        n('Cast', [f'{p}_t_f'], [f'{p}_t'], to=TensorProto.INT64),
        n('Reshape', [f'{p}_t', f'{p}_im1'], [f'{p}_t1']),
        n('Squeeze', [f'{p}_t1', f'{p}_i0'], [f'{p}_ts']),
        n('Range', [f'{p}_i0s', f'{p}_ts', f'{p}_i1s'], [f'{p}_k']),
        n('Cast', [f'{p}_k'], [f'{p}_k_f'], to=TensorProto.FLOAT),
        n('Add', [f'{p}_first', f'{p}_k_f'], [f'{p}_taps']),
        # weights max(0, 1 - |t - c| / support), normalised over the taps
        n('Sub', [f'{p}_taps', f'{p}_c'], [f'{p}_d']),
        n('Abs', [f'{p}_d'], [f'{p}_ad']),
        n('Div', [f'{p}_ad', f'{p}_support'], [f'{p}_ads']),
        n('Sub', [f'{p}_one', f'{p}_ads'], [f'{p}_tri']),
        n('Max', [f'{p}_tri', f'{p}_zero'], [f'{p}_w0']),
        n('ReduceSum', [f'{p}_w0', f'{p}_i1'], [f'{p}_wsum'], keepdims=1),
        n('Div', [f'{p}_w0', f'{p}_wsum'], [f'{p}_w']),
        # clamped tap indices, gathered along the axis
        n('Sub', [f'{p}_nin_f', f'{p}_one'], [f'{p}_last']),
        n('Max', [f'{p}_taps', f'{p}_zero'], [f'{p}_tc0']),
        n('Min', [f'{p}_tc0', f'{p}_last'], [f'{p}_tc']),
        n('Cast', [f'{p}_tc'], [f'{p}_idx'], to=TensorProto.INT64),
        # gather the T taps of every output sample and take their weighted sum (a banded resampling: C x n_out x T
        # x (other side) products, not a dense [n_out, n_in] matrix product). The resampled axis is moved to the
        # front first, so that each tap is one contiguous block copy (Gather on axis 0).
        n('Transpose', [data], [f'{p}_front'], perm=[2, 0, 1, 3] if axis == 2 else [3, 0, 1, 2]),
        n('Gather', [f'{p}_front', f'{p}_idx'], [f'{p}_taps_v'], axis=0),     # [n_out, T, 1, C, other]
        n('Reshape', [f'{p}_w', f'{p}_w_shape'], [f'{p}_w5']),                # [n_out, T, 1, 1, 1]
        n('Mul', [f'{p}_taps_v', f'{p}_w5'], [f'{p}_weighted']),
        n('ReduceSum', [f'{p}_weighted', f'{p}_i1'], [f'{p}_summed'], keepdims=0),   # [n_out, 1, C, other]
        n('Transpose', [f'{p}_summed'], [f'{p}_out'], perm=[1, 2, 0, 3] if axis == 2 else [1, 2, 3, 0]),
    ]
    inits.append(numpy_helper.from_array(np.array([0, 0, 1, 1, 1], np.int64), f'{p}_w_shape'))
    return nodes, inits, f'{p}_out'


def replace_antialiased_resize(model):
    """Replace every ``Resize(mode=linear, coordinate_transformation_mode=half_pixel, antialias=1)`` of a 4-D
    tensor that is given output ``sizes`` (and resizes only H and W) by separable banded resamplings along H
    then W. Other antialiased Resize nodes are left unchanged with a warning (no exact rewrite here)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    nodes, inits = [], []
    for index, node in enumerate(graph.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != 'Resize' or not attrs.get('antialias', 0):
            nodes.append(node)
            continue
        mode = attrs.get('mode', b'nearest')
        coord = attrs.get('coordinate_transformation_mode', b'half_pixel')
        if mode != b'linear' or coord != b'half_pixel' or len(node.input) < 4 or not node.input[3] \
                or 'axes' in attrs:
            warnings.warn(f'Resize {node.name!r}: only linear half_pixel antialiased resizes with `sizes` are '
                          'rewritten; left as it is (check-engine-compat reports it)')
            nodes.append(node)
            continue
        p = f'aa_resize{index}'
        data, sizes = node.input[0], node.input[3]
        inits += [numpy_helper.from_array(np.array([2], np.int64), f'{p}_s2'),
                  numpy_helper.from_array(np.array([3], np.int64), f'{p}_s3'),
                  numpy_helper.from_array(np.array([4], np.int64), f'{p}_s4')]
        nodes += [
            helper.make_node('Shape', [data], [f'{p}_shape']),
            helper.make_node('Slice', [f'{p}_shape', f'{p}_s2', f'{p}_s3'], [f'{p}_nh_in']),
            helper.make_node('Slice', [f'{p}_shape', f'{p}_s3', f'{p}_s4'], [f'{p}_nw_in']),
            helper.make_node('Slice', [sizes, f'{p}_s2', f'{p}_s3'], [f'{p}_nh_out']),
            helper.make_node('Slice', [sizes, f'{p}_s3', f'{p}_s4'], [f'{p}_nw_out']),
        ]
        rows, rows_init, rows_out = _linear_antialias_axis(f'{p}_h', data, 2, f'{p}_nh_in', f'{p}_nh_out')
        cols, cols_init, cols_out = _linear_antialias_axis(f'{p}_w', rows_out, 3, f'{p}_nw_in', f'{p}_nw_out')
        cols[-1].output[0] = node.output[0]
        nodes += rows + cols
        inits += rows_init + cols_init
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    return model


def for_tensorrt(model):
    """The graph TensorRT is given (build-engine, check-engine-compat): all passes on a copy of ``model``."""
    import copy
    return make_trt_compatible(copy.deepcopy(model))


def needs_tensorrt_rewrite(path) -> bool:
    """Cheap test without the onnx package: does the ONNX file contain an ``antialias`` attribute?"""
    with open(path, 'rb') as f:
        return b'antialias' in f.read()


def make_trt_compatible(model):
    """All passes of this module, in place (the pose export calls it before saving; see :func:`for_tensorrt`)."""
    return replace_antialiased_resize(cast_uint8_inputs_first(model))


def fix_file(src, dst=None) -> str:
    """Apply :func:`make_trt_compatible` to the ONNX file ``src`` (metadata kept) and write it to ``dst``
    (default: in place); onnx.checker runs on the result. For shipped models whose checkpoint is not at hand."""
    import os

    import onnx
    model = make_trt_compatible(onnx.load(os.fspath(src)))
    onnx.checker.check_model(model, full_check=True)
    dst = os.fspath(dst or src)
    onnx.save(model, dst)
    return dst
