"""Colour-key "detector" ONNX fixture for end-to-end tests (detection → pose → ROS) without a trained detector.

The graph follows the NATIVE detector contract (docs/model_contract.md §2): input ``image`` uint8 ``[H, W, 3]``
(RGB), outputs ``boxes_xyxy`` float32 ``[K, 4]`` and ``scores`` float32 ``[K]``, one candidate per key colour.
For key colour ``k`` a pixel matches when every channel is within ``tolerance`` of the key
(``max_c |image - key_k| <= tolerance``); the box is the pixel-area extent of the matching pixels (pixel centres
at integer coordinates: matches in columns ``x0..x1`` give ``x1 = x0 - 0.5``, ``x2 = x1 + 0.5``) and the score is
1 when at least ``min_pixels`` pixels match, else 0 with an all-zero box.

It finds flat-coloured synthetic people (:func:`metrabs_ros.synthetic_scene.render_scene` with
``flat_colours=True``); it is not a person detector. Built with ``onnx.helper`` and numpy constants only (no
torch), computed by ONNX Runtime like any other model.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

CONTRACT_KEY = 'metrabs_ros.contract'
DETECTOR_CONTRACT = 'detector/1'
OPSET = 18
IR_VERSION = 8
_DESCRIPTION = 'test fixture: finds flat-coloured synthetic people by colour key; not a person detector'


def build_colour_key_detector(key_colours_rgb: Sequence[Sequence[float]], tolerance: float = 8.0,
                              min_pixels: int = 20, name: str = 'colour_key_detector'):
    """The fixture as an in-memory ``onnx.ModelProto`` (see the module docstring for what it computes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    keys = np.asarray(key_colours_rgb, np.float32)
    if keys.ndim != 2 or keys.shape[1] != 3 or len(keys) == 0:
        raise ValueError(f'key_colours_rgb must be a non-empty list of RGB triples, got shape {keys.shape}')
    if np.any(keys < 0) or np.any(keys > 255):
        raise ValueError(f'key colours must be in 0..255, got {keys.tolist()}')
    if not 0 <= tolerance < 255:
        raise ValueError(f'tolerance must be in [0, 255), got {tolerance}')
    if int(min_pixels) < 1:
        raise ValueError(f'min_pixels must be >= 1, got {min_pixels}')
    num_keys = len(keys)

    def const(name_, array):
        return numpy_helper.from_array(np.asarray(array), name_)

    initializers = [
        const('keys', keys.reshape(num_keys, 1, 1, 3)),
        const('tolerance', np.float32(tolerance)),
        const('min_pixels', np.float32(min_pixels)),
        const('axes_channel', np.array([3], np.int64)),
        const('axes_rows', np.array([1], np.int64)),     # reduce over rows -> per-column any  [K, W]
        const('axes_cols', np.array([2], np.int64)),     # reduce over columns -> per-row any  [K, H]
        const('axes_hw', np.array([1, 2], np.int64)),
        const('axes_last', np.array([1], np.int64)),
        const('axis0', np.array([0], np.int64)),
        const('zero_i', np.array(0, np.int64)),
        const('one_i', np.array(1, np.int64)),
        const('zero_f', np.float32(0.0)),
        const('one_f', np.float32(1.0)),
        const('half_f', np.float32(0.5)),
        const('big_f', np.float32(1e9)),
    ]
    n = helper.make_node
    nodes = [
        # Chebyshev colour distance to every key: [K, H, W]
        n('Cast', ['image'], ['image_f'], to=TensorProto.FLOAT),
        n('Unsqueeze', ['image_f', 'axis0'], ['image_1hw3']),
        n('Sub', ['image_1hw3', 'keys'], ['diff']),
        n('Abs', ['diff'], ['absdiff']),
        n('ReduceMax', ['absdiff', 'axes_channel'], ['dist'], keepdims=0),
        n('LessOrEqual', ['dist', 'tolerance'], ['match']),
        n('Cast', ['match'], ['match_f'], to=TensorProto.FLOAT),
        # pixel counts and score
        n('ReduceSum', ['match_f', 'axes_hw'], ['count'], keepdims=0),
        n('GreaterOrEqual', ['count', 'min_pixels'], ['found']),
        n('Cast', ['found'], ['scores'], to=TensorProto.FLOAT),
        # pixel-centre coordinates of the columns and rows
        n('Shape', ['image'], ['shape']),
        n('Gather', ['shape', 'zero_i'], ['height_i'], axis=0),
        n('Gather', ['shape', 'one_i'], ['width_i'], axis=0),
        n('Cast', ['height_i'], ['height_f'], to=TensorProto.FLOAT),
        n('Cast', ['width_i'], ['width_f'], to=TensorProto.FLOAT),
        n('Range', ['zero_f', 'height_f', 'one_f'], ['ys']),
        n('Range', ['zero_f', 'width_f', 'one_f'], ['xs']),
        # which columns / rows hold a match: [K, W], [K, H]
        n('ReduceMax', ['match_f', 'axes_rows'], ['col_any_f'], keepdims=0),
        n('ReduceMax', ['match_f', 'axes_cols'], ['row_any_f'], keepdims=0),
        n('Greater', ['col_any_f', 'zero_f'], ['col_any']),
        n('Greater', ['row_any_f', 'zero_f'], ['row_any']),
        n('Neg', ['big_f'], ['neg_big_f']),
        n('Where', ['col_any', 'xs', 'big_f'], ['xs_for_min']),
        n('Where', ['col_any', 'xs', 'neg_big_f'], ['xs_for_max']),
        n('Where', ['row_any', 'ys', 'big_f'], ['ys_for_min']),
        n('Where', ['row_any', 'ys', 'neg_big_f'], ['ys_for_max']),
        n('ReduceMin', ['xs_for_min', 'axes_last'], ['x_min'], keepdims=1),
        n('ReduceMax', ['xs_for_max', 'axes_last'], ['x_max'], keepdims=1),
        n('ReduceMin', ['ys_for_min', 'axes_last'], ['y_min'], keepdims=1),
        n('ReduceMax', ['ys_for_max', 'axes_last'], ['y_max'], keepdims=1),
        # pixel-area edges, zeroed where the key was not found
        n('Sub', ['x_min', 'half_f'], ['x1']),
        n('Sub', ['y_min', 'half_f'], ['y1']),
        n('Add', ['x_max', 'half_f'], ['x2']),
        n('Add', ['y_max', 'half_f'], ['y2']),
        n('Concat', ['x1', 'y1', 'x2', 'y2'], ['boxes_raw'], axis=1),
        n('Unsqueeze', ['found', 'axes_last'], ['found_k1']),
        n('Where', ['found_k1', 'boxes_raw', 'zero_f'], ['boxes_xyxy']),
    ]
    graph = helper.make_graph(
        nodes, name,
        inputs=[helper.make_tensor_value_info('image', TensorProto.UINT8, ['height', 'width', 3])],
        outputs=[helper.make_tensor_value_info('boxes_xyxy', TensorProto.FLOAT, [num_keys, 4]),
                 helper.make_tensor_value_info('scores', TensorProto.FLOAT, [num_keys])],
        initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)],
                              producer_name='metrabs_ros.training.colour_key_detector')
    model.ir_version = IR_VERSION
    metadata = {
        CONTRACT_KEY: DETECTOR_CONTRACT,
        'name': name,
        'description': _DESCRIPTION,
        'key_colours_rgb': json.dumps(keys.astype(float).tolist()),
        'tolerance': json.dumps(float(tolerance)),
        'min_pixels': json.dumps(int(min_pixels)),
    }
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    return model


def make_colour_key_detector(path, key_colours_rgb: Sequence[Sequence[float]], tolerance: float = 8.0,
                             min_pixels: int = 20, name: str = 'colour_key_detector') -> str:
    """Write the colour-key detector fixture to ``path`` (.onnx) and return the path.

    Args:
      key_colours_rgb: K RGB colours (0..255), one output candidate each, in this order.
      tolerance: a pixel matches a key when every channel differs by at most this much.
      min_pixels: the key counts as found (score 1) from this many matching pixels on.
    """
    import onnx
    model = build_colour_key_detector(key_colours_rgb, tolerance, min_pixels, name)
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    onnx.save(model, os.fspath(path))
    return os.fspath(path)
