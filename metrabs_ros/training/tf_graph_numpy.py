"""A small numpy interpreter of TensorFlow GraphDefs (as read from TFJS graph models), in float64.

It executes the source graph op by op, exactly as written (layout transposes, explicit pads, split heads), so that
a hand-written torch re-statement of a network (e.g. :mod:`metrabs_ros.training.nanodet`) can be checked against
an independent forward of the same tensors without TensorFlow. Semantics follow the TensorFlow op definitions
(``tensorflow/core/ops``): NHWC convolutions with VALID / SAME / EXPLICIT padding (SAME puts the odd pixel at the
bottom/right), ``ResizeBilinear`` with ``align_corners`` / ``half_pixel_centers``, grappler's fused
``_FusedConv2D`` / ``FusedDepthwiseConv2dNative`` (``fused_ops`` BiasAdd then Relu / Relu6 / LeakyRelu / Elu).
Unknown ops raise ``NotImplementedError`` naming them. Slow but exact; meant for tests and conversions.
"""

from __future__ import annotations

import base64
from typing import Callable, Dict, Iterable, List, Sequence

import numpy as np

from metrabs_ros.training.tfjs_reader import TfjsGraphModel


def _attr(node, key, default=None):
    value = node.get('attr', {}).get(key)
    if value is None:
        return default
    if 's' in value:
        return base64.b64decode(value['s']).decode()
    if 'list' in value:
        items = value['list']
        if 'i' in items:
            return [int(v) for v in items['i']]
        if 's' in items:
            return [base64.b64decode(v).decode() for v in items['s']]
        if 'f' in items:
            return [float(v) for v in items['f']]
        return []
    if 'i' in value:
        return int(value['i'])
    if 'f' in value:
        return float(value['f'])
    if 'b' in value:
        return bool(value['b'])
    if 'type' in value:
        return value['type']
    return default


def _same_pads(size, kernel, stride, dilation):
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _spatial_pads(node, x_hw, kernel_hw, strides_hw, dilations_hw):
    padding = _attr(node, 'padding', 'VALID')
    if padding == 'VALID':
        return [(0, 0), (0, 0)]
    if padding == 'SAME':
        return [_same_pads(x_hw[i], kernel_hw[i], strides_hw[i], dilations_hw[i]) for i in range(2)]
    if padding == 'EXPLICIT':
        flat = _attr(node, 'explicit_paddings')
        return [(flat[2], flat[3]), (flat[4], flat[5])]       # NHWC pairs
    raise NotImplementedError(f"{node['name']}: padding {padding!r}")


def _check_nhwc(node):
    layout = _attr(node, 'data_format', 'NHWC')
    if layout != 'NHWC':
        raise NotImplementedError(f"{node['name']}: data_format {layout!r} (only NHWC)")


def _patches(x, kernel_hw, strides_hw, dilations_hw, pads, pad_value=0.0):
    """NHWC [N, H, W, C] -> [N, Ho, Wo, kh, kw, C] windows."""
    x = np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)], constant_values=pad_value)
    (kh, kw), (sh, sw), (dh, dw) = kernel_hw, strides_hw, dilations_hw
    ho = (x.shape[1] - ((kh - 1) * dh + 1)) // sh + 1
    wo = (x.shape[2] - ((kw - 1) * dw + 1)) // sw + 1
    rows = (np.arange(ho) * sh)[:, None] + np.arange(kh) * dh          # [Ho, kh]
    cols = (np.arange(wo) * sw)[:, None] + np.arange(kw) * dw          # [Wo, kw]
    return x[:, rows[:, None, :, None], cols[None, :, None, :], :]     # [N, Ho, Wo, kh, kw, C]


def conv2d_nhwc(node, x, kernel_hwio, depthwise=False):
    """Conv2D (kernel HWIO) or DepthwiseConv2dNative (kernel HW C M) in NHWC."""
    _check_nhwc(node)
    strides = _attr(node, 'strides', [1, 1, 1, 1])
    dilations = _attr(node, 'dilations', [1, 1, 1, 1])
    kh, kw = kernel_hwio.shape[:2]
    pads = _spatial_pads(node, x.shape[1:3], (kh, kw), strides[1:3], dilations[1:3])
    windows = _patches(x, (kh, kw), strides[1:3], dilations[1:3], pads)
    if depthwise:
        out = np.einsum('nhwijc,ijcm->nhwcm', windows, kernel_hwio)
        return out.reshape(*out.shape[:3], -1)
    return np.einsum('nhwijc,ijco->nhwo', windows, kernel_hwio)


def _activation(name, x, node):
    if name == 'Relu':
        return np.maximum(x, 0)
    if name == 'Relu6':
        return np.clip(x, 0, 6)
    if name == 'LeakyRelu':
        alpha = _attr(node, 'leakyrelu_alpha', 0.2)
        return np.where(x >= 0, x, alpha * x)
    if name == 'Elu':
        return np.where(x > 0, x, np.expm1(x))
    if name == 'Sigmoid':
        return 1 / (1 + np.exp(-x))
    raise NotImplementedError(f"{node['name']}: fused activation {name!r}")


def _fused(node, inputs, depthwise):
    out = conv2d_nhwc(node, inputs[0], inputs[1], depthwise=depthwise)
    operations = _attr(node, 'fused_ops', [])
    extra = iter(inputs[2:])
    for op in operations:
        if op == 'BiasAdd':
            out = out + next(extra)
        else:
            out = _activation(op, out, node)
    return out


def resize_bilinear(node, x, size_hw):
    """TF ResizeBilinear (NHWC) with its three coordinate modes."""
    align = bool(_attr(node, 'align_corners', False))
    half = bool(_attr(node, 'half_pixel_centers', False))
    out = x
    for axis, new in ((1, int(size_hw[0])), (2, int(size_hw[1]))):
        old = out.shape[axis]
        scale = (old - 1) / (new - 1) if align and new > 1 else old / new
        dst = np.arange(new, dtype=np.float64)
        src = (dst + 0.5) * scale - 0.5 if half else dst * scale
        floor = np.floor(src)
        lower = np.clip(floor, 0, old - 1).astype(np.int64)
        upper = np.clip(np.ceil(src), 0, old - 1).astype(np.int64)
        frac = src - floor
        shape = [1] * out.ndim
        shape[axis] = new
        frac = frac.reshape(shape)
        out = np.take(out, lower, axis=axis) * (1 - frac) + np.take(out, upper, axis=axis) * frac
    return out


def _max_pool(node, x):
    _check_nhwc(node)
    ksize, strides = _attr(node, 'ksize'), _attr(node, 'strides')
    pads = _spatial_pads(node, x.shape[1:3], ksize[1:3], strides[1:3], (1, 1))
    return _patches(x, ksize[1:3], strides[1:3], (1, 1), pads, pad_value=-np.inf).max(axis=(3, 4))


def _sparse_to_dense(indices, shape, values, default):
    dense = np.full([int(v) for v in np.atleast_1d(shape)], default, dtype=np.asarray(values).dtype)
    indices = np.asarray(indices, np.int64).reshape(-1, dense.ndim) if dense.ndim else indices
    values = np.broadcast_to(values, (len(indices),))
    for index, value in zip(indices, values):
        dense[tuple(index)] = value
    return dense


def _pad(x, paddings, value=0.0):
    return np.pad(x, [tuple(int(v) for v in row) for row in np.asarray(paddings)], constant_values=value)


_INDEX_DTYPES = {'DT_INT32': np.int32, 'DT_INT64': np.int64}


def _arg_max(node, x, axis):
    """TF ArgMax: index of the first maximum along ``axis`` (``output_type`` int32 or the default int64)."""
    return np.argmax(x, axis=int(axis)).astype(_INDEX_DTYPES.get(_attr(node, 'output_type'), np.int64))


def _gather_nd(params, indices):
    """TF GatherNd: ``indices[..., :K]`` index the first K axes of ``params``; the result has shape
    ``indices.shape[:-1] + params.shape[K:]``. Out-of-range indices raise (TF on CPU raises too)."""
    indices = np.asarray(indices, np.int64)
    return np.asarray(params)[tuple(np.moveaxis(indices, -1, 0))]


_OPS: Dict[str, Callable] = {
    'Identity': lambda n, a: a[0],
    'Transpose': lambda n, a: np.transpose(a[0], [int(v) for v in a[1]]),
    'Pad': lambda n, a: _pad(a[0], a[1]),
    'PadV2': lambda n, a: _pad(a[0], a[1], a[2]),
    'Conv2D': lambda n, a: conv2d_nhwc(n, a[0], a[1]),
    'DepthwiseConv2dNative': lambda n, a: conv2d_nhwc(n, a[0], a[1], depthwise=True),
    '_FusedConv2D': lambda n, a: _fused(n, a, depthwise=False),
    'FusedDepthwiseConv2dNative': lambda n, a: _fused(n, a, depthwise=True),
    'BiasAdd': lambda n, a: a[0] + a[1],
    'Add': lambda n, a: a[0] + a[1],
    'AddV2': lambda n, a: a[0] + a[1],
    'Sub': lambda n, a: a[0] - a[1],
    'Mul': lambda n, a: a[0] * a[1],
    'RealDiv': lambda n, a: a[0] / a[1],
    'Relu': lambda n, a: np.maximum(a[0], 0),
    'Relu6': lambda n, a: np.clip(a[0], 0, 6),
    'LeakyRelu': lambda n, a: np.where(a[0] >= 0, a[0], _attr(n, 'alpha', 0.2) * a[0]),
    'Sigmoid': lambda n, a: 1 / (1 + np.exp(-a[0])),
    'MaxPool': lambda n, a: _max_pool(n, a[0]),
    'ConcatV2': lambda n, a: np.concatenate(a[:-1], axis=int(a[-1])),
    'Reshape': lambda n, a: np.reshape(a[0], [int(v) for v in np.atleast_1d(a[1])]),
    'ResizeBilinear': lambda n, a: resize_bilinear(n, a[0], a[1]),
    'SparseToDense': lambda n, a: _sparse_to_dense(*a),
    'Cast': lambda n, a: np.asarray(a[0]).astype(
        {'DT_FLOAT': np.float64, 'DT_INT32': np.int32, 'DT_INT64': np.int64}.get(_attr(n, 'DstT'), np.float64)),
    'ExpandDims': lambda n, a: np.expand_dims(a[0], int(a[1])),
    'Squeeze': lambda n, a: np.squeeze(a[0], axis=tuple(_attr(n, 'squeeze_dims', [])) or None),
    'Sqrt': lambda n, a: np.sqrt(a[0]),
    'SquaredDifference': lambda n, a: np.square(a[0] - a[1]),
    'FloorDiv': lambda n, a: np.floor_divide(a[0], a[1]),
    'ArgMax': lambda n, a: _arg_max(n, a[0], a[1]),
    'GatherNd': lambda n, a: _gather_nd(a[0], a[1]),
    'Pack': lambda n, a: np.stack(a, axis=int(_attr(n, 'axis', 0))),
}


def _split_v(node, inputs):
    value, sizes, axis = inputs
    sizes = [int(s) for s in np.atleast_1d(sizes)]
    if -1 in sizes:
        sizes[sizes.index(-1)] = value.shape[int(axis)] - (sum(sizes) + 1)
    return np.split(value, np.cumsum(sizes)[:-1], axis=int(axis))


def _unpack(node, inputs):
    """TF Unpack (tf.unstack): the `num` slices along `axis`, that axis removed."""
    value = inputs[0]
    axis = int(_attr(node, 'axis', 0))
    return [np.take(value, i, axis=axis) for i in range(value.shape[axis])]


_MULTI_OUTPUT_OPS = {'SplitV': _split_v, 'Unpack': _unpack}


def supported_ops() -> List[str]:
    return sorted({*_OPS, *_MULTI_OUTPUT_OPS, 'Const', 'Placeholder'})


def run_graph(model: TfjsGraphModel, feeds: Dict[str, np.ndarray], fetches: Sequence[str]) -> List[np.ndarray]:
    """Evaluates ``fetches`` (``node`` or ``node:k``) given ``feeds`` (Placeholder name -> array), float64
    arithmetic for float tensors. Only the nodes the fetches depend on are run."""
    nodes = model.nodes_by_name
    values: Dict[str, List[np.ndarray]] = {}

    def as_compute(array):
        array = np.asarray(array)
        return array.astype(np.float64) if array.dtype.kind == 'f' else array

    def evaluate(name):
        stack = [name]
        while stack:
            current = stack[-1]
            if current in values:
                stack.pop()
                continue
            node = nodes.get(current)
            if node is None:
                raise KeyError(f'graph has no node {current!r}')
            inputs = [i.split(':')[0] for i in node.get('input', []) if not i.startswith('^')]
            missing = [i for i in inputs if i not in values]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            op = node['op']
            if op == 'Placeholder':
                if current not in feeds:
                    raise KeyError(f'placeholder {current!r} needs a feed')
                values[current] = [as_compute(feeds[current])]
                continue
            if op == 'Const':
                if current not in model.weights:
                    raise KeyError(f'const {current!r} has no weight entry')
                values[current] = [as_compute(model.weights[current])]
                continue
            args = []
            for reference in node.get('input', []):
                if reference.startswith('^'):
                    continue
                base, _, index = reference.partition(':')
                args.append(values[base][int(index) if index else 0])
            if op in _MULTI_OUTPUT_OPS:
                values[current] = list(_MULTI_OUTPUT_OPS[op](node, args))
            elif op in _OPS:
                values[current] = [_OPS[op](node, args)]
            else:
                raise NotImplementedError(f'op {op!r} of node {current!r} is not supported by the numpy '
                                          f'interpreter (supported: {", ".join(supported_ops())})')

    results = []
    for fetch in fetches:
        base, _, index = fetch.partition(':')
        evaluate(base)
        results.append(values[base][int(index) if index else 0])
    return results


def consumers(model: TfjsGraphModel) -> Dict[str, List[str]]:
    """Node name -> names of the nodes that read one of its outputs."""
    result: Dict[str, List[str]] = {}
    for node in model.nodes:
        for reference in node.get('input', []):
            result.setdefault(reference.lstrip('^').split(':')[0], []).append(node['name'])
    return result


def nodes_of_type(model: TfjsGraphModel, ops: Iterable[str]) -> List[dict]:
    wanted = set(ops)
    return [node for node in model.nodes if node['op'] in wanted]
