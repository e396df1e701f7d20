"""Choosing a detector format from an ONNX model's inputs, outputs and metadata.

Order of evidence for ``format='auto'``:

1. metadata ``metrabs_ros.contract`` = ``detector/1`` -> ``native`` (a ``pose/...`` contract is an error);
2. metadata ``detector_format`` (one of :data:`formats.FORMAT_NAMES`);
3. output names: ``boxes_xyxy`` + ``scores`` with a uint8 ``[H, W, 3]`` input -> ``native``; EfficientNMS
   ``num_dets``/``det_*`` (or ``num_detections``/``detection_*``), mmdeploy ``dets`` + ``labels``, or outputs
   named like boxes/scores/classes|labels -> ``end2end``;
4. the single rank-3 output ``[1, a, b]`` against the anchor counts of the input size ``S`` (grid =
   sum over strides 8/16/32 (or 8..64) of (S/stride)^2): ``b`` = grid -> ``yolov8``; ``a`` = 3 grid (3 anchors
   per cell) -> ``yolov5``; ``a`` = grid -> ``yolox``; ``b`` = 6 -> ``end2end`` ``[1, N, 6]``; then
   ``a < b`` -> ``yolov8``; ultralytics metadata (``stride`` + ``names``) -> ``yolov5``. Dynamic output
   dimensions are learnt from one probe run on a blank input.

Other metadata keys honoured (strings): ``person_class`` (int), ``yolox_decoded`` (true/false),
``preprocessing`` (``ultralytics`` | ``yolox``), ultralytics ``names`` (index of 'person') and ``imgsz``.
"""

from __future__ import annotations

import ast
import dataclasses
import json

import numpy as np

from metrabs_ros.detection import formats
from metrabs_ros.model_contract import CONTRACT_KEY
from metrabs_ros.model_contract import DETECTOR_CONTRACT as NATIVE_CONTRACT
DEFAULT_INPUT_HW = (640, 640)

_ORT_DTYPES = {
    'tensor(float)': np.float32, 'tensor(float16)': np.float16, 'tensor(double)': np.float64,
    'tensor(uint8)': np.uint8, 'tensor(int8)': np.int8, 'tensor(int32)': np.int32, 'tensor(int64)': np.int64,
}
_EFFICIENT_NMS_NAMES = {
    'num': ('num_dets', 'num_detections'),
    'boxes': ('det_boxes', 'detection_boxes'),
    'scores': ('det_scores', 'detection_scores'),
    'classes': ('det_classes', 'detection_classes'),
}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Name, shape (ints, or None for a dynamic dimension) and ONNX Runtime type string of a graph input/output."""

    name: str
    shape: tuple
    type: str

    @classmethod
    def from_ort(cls, node_arg):
        shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (node_arg.shape or ()))
        return cls(node_arg.name, shape, node_arg.type)

    def describe(self) -> str:
        dims = ','.join('?' if d is None else str(d) for d in self.shape)
        return f"{self.name} {self.type.replace('tensor(', '').rstrip(')')}[{dims}]"


@dataclasses.dataclass(frozen=True)
class DetectorLayout:
    """Everything needed to run and decode one detector model.

    ``input_layout``: 'hwc' (native uint8 frame), 'nchw' or 'nhwc'; ``input_hw``: network input size for the
    letterbox (None for native); ``roles`` maps decoder roles to output names; ``yolox_decoded`` is None when it
    must still be determined from a probe run.
    """

    format: str
    input_name: str
    input_layout: str
    input_dtype: type
    input_hw: tuple | None
    preprocessing: formats.InputSpec | None
    output_names: tuple
    roles: dict
    end2end_style: str | None
    yolox_decoded: bool | None
    person_class: int
    reason: str


class NeedsProbe(Exception):
    """Raised by :func:`resolve_layout` when the output shapes are dynamic and a probe run must supply them."""


def describe_io(inputs, outputs) -> str:
    return ('inputs: ' + '; '.join(t.describe() for t in inputs) + ' | outputs: '
            + '; '.join(t.describe() for t in outputs))


def _parse_bool(value, key, source):
    text = str(value).strip().lower()
    if text in ('1', 'true', 'yes'):
        return True
    if text in ('0', 'false', 'no'):
        return False
    raise ValueError(f'{source}: metadata {key}={value!r} is not a boolean')


def _parse_literal(text):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        pass
    try:
        return ast.literal_eval(text)  # ultralytics writes str(dict), e.g. "{0: 'person', ...}"
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def person_class_from_metadata(metadata, source='<model>'):
    """``person_class`` key, else the index named 'person' in ultralytics ``names``, else None."""
    if 'person_class' in metadata:
        try:
            return int(metadata['person_class'])
        except ValueError:
            raise ValueError(f"{source}: metadata person_class={metadata['person_class']!r} is not an integer")
    names = _parse_literal(metadata['names']) if 'names' in metadata else None
    if isinstance(names, dict):
        items = names.items()
    elif isinstance(names, list):
        items = enumerate(names)
    else:
        items = ()
    for index, name in items:
        if str(name).strip().lower() == 'person':
            try:
                return int(index)
            except (TypeError, ValueError):
                return None
    return None


def _input_hw_from_metadata(metadata):
    if 'imgsz' not in metadata:
        return None
    value = _parse_literal(metadata['imgsz'])
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return tuple(value)
    return None


def _is_ultralytics(metadata):
    return 'names' in metadata and 'stride' in metadata


def _analyse_input(inputs, is_native, metadata, source, io_text):
    if len(inputs) != 1:
        raise ValueError(f'{source}: person detectors with exactly one image input are supported, found '
                         f'{len(inputs)} ({io_text})')
    image = inputs[0]
    dtype = _ORT_DTYPES.get(image.type)
    if dtype is None:
        raise ValueError(f'{source}: unsupported input type {image.type} ({io_text})')
    shape = image.shape
    if is_native:
        if len(shape) != 3 or shape[2] not in (3, None) or dtype != np.uint8:
            raise ValueError(f'{source}: the native detector contract needs a uint8 [H, W, 3] input ({io_text})')
        return image.name, 'hwc', dtype, None
    if len(shape) != 4:
        raise ValueError(f'{source}: expected an image input of rank 4 ([1, 3, S, S] or [1, S, S, 3]), '
                         f'got {image.describe()} ({io_text})')
    layout, input_hw = network_input_layout(image, metadata)
    return image.name, layout, dtype, input_hw


def network_input_layout(image: TensorInfo, metadata):
    """('nchw' | 'nhwc', (height, width)) of a rank-4 image input: the fixed spatial size, else metadata
    ``imgsz`` (ultralytics), else 640 x 640. NHWC only when dim 3 is 3 and dim 1 is not."""
    shape = image.shape
    if shape[1] == 3 or shape[3] != 3:
        layout, spatial = 'nchw', shape[2:4]
    else:
        layout, spatial = 'nhwc', shape[1:3]
    if all(isinstance(d, int) for d in spatial):
        return layout, tuple(spatial)
    return layout, _input_hw_from_metadata(metadata) or DEFAULT_INPUT_HW


def _find_end2end(outputs, require_classes=True):
    by_lower = {t.name.lower(): t.name for t in outputs}

    def first(candidates):
        return next((by_lower[c] for c in candidates if c in by_lower), None)

    roles = {role: first(names) for role, names in _EFFICIENT_NMS_NAMES.items()}
    if roles['num'] and roles['boxes'] and roles['scores']:
        return 'efficient_nms', {k: v for k, v in roles.items() if v}
    if 'dets' in by_lower and 'labels' in by_lower:
        return 'dets_labels', {'dets': by_lower['dets'], 'classes': by_lower['labels']}

    def containing(*words):
        exact = [t.name for t in outputs if t.name.lower() in words]
        loose = [t.name for t in outputs if any(w in t.name.lower() for w in words)]
        return (exact or loose or [None])[0]

    roles = {'boxes': containing('boxes', 'box', 'bboxes'), 'scores': containing('scores', 'score', 'conf'),
             'classes': containing('classes', 'labels', 'class', 'label')}
    distinct = len({v for v in roles.values() if v}) == sum(1 for v in roles.values() if v)
    if roles['boxes'] and roles['scores'] and distinct and (roles['classes'] or not require_classes):
        return 'named', {k: v for k, v in roles.items() if v}
    return None


def _single_candidate(outputs):
    rank3 = [t for t in outputs if len(t.shape) == 3]
    if len(outputs) == 1 and len(outputs[0].shape) == 2:
        return outputs[0]
    return rank3[0] if len(rank3) == 1 else None


def _grid(input_hw, strides):
    return sum((input_hw[0] // s) * (input_hw[1] // s) for s in strides)


def _classify_single(output, input_hw, metadata):
    """Returns (format, reason) for a single [1, a, b] output, None if ambiguous; raises NeedsProbe."""
    shape = output.shape[1:] if len(output.shape) == 3 else output.shape
    if len(output.shape) == 3 and output.shape[0] not in (1, None):
        return None
    a, b = shape
    if a is None or b is None:
        raise NeedsProbe()
    grid, grid_p6 = _grid(input_hw, (8, 16, 32)), _grid(input_hw, (8, 16, 32, 64))
    where = f'output {output.name} [1, {a}, {b}] of a {input_hw[0]}x{input_hw[1]} input'
    if a >= 5 and b in (grid, grid_p6):
        return 'yolov8', f'{where}: [1, 4+C, N] with N = 1 anchor x grid cells'
    if b >= 6 and a in (3 * grid, 3 * grid_p6):
        return 'yolov5', f'{where}: [1, N, 5+C] with N = 3 anchors x grid cells'
    if b >= 6 and a == grid:
        return 'yolox', f'{where}: [1, N, 5+C] with N = 1 anchor x grid cells'
    if b == 6:
        return 'end2end', f'{where}: [1, N, 6] = (x1, y1, x2, y2, score, class) after NMS'
    if 5 <= a < b:
        return 'yolov8', f'{where}: channels-first [1, 4+C, N] (N not a stride 8/16/32 grid)'
    if b >= 6 and _is_ultralytics(metadata):
        return 'yolov5', f'{where}: [1, N, 5+C] with ultralytics metadata'
    return None


def resolve_layout(inputs, outputs, metadata, format='auto', person_class=None, yolox_decoded=None,
                   preprocessing=None, source='<model>') -> DetectorLayout:
    """Decides how to run and decode a detector. ``inputs``/``outputs``: :class:`TensorInfo` lists (dynamic dims
    may be filled in from a probe run); ``metadata``: the ONNX ``metadata_props`` dict. Raises ``ValueError``
    naming ``source`` and listing the inputs/outputs when it cannot decide, :class:`NeedsProbe` when the
    decision needs concrete output shapes."""
    io_text = describe_io(inputs, outputs)
    metadata = dict(metadata or {})
    if format not in ('auto',) + formats.FORMAT_NAMES:
        raise ValueError(f"unknown detector format {format!r}; expected 'auto' or one of {formats.FORMAT_NAMES}")

    contract = metadata.get(CONTRACT_KEY)
    if contract is not None and not contract.startswith('detector/'):
        raise ValueError(f'{source}: metadata {CONTRACT_KEY}={contract!r} says this is not a person detector')
    if contract is not None and contract != NATIVE_CONTRACT:
        raise ValueError(f'{source}: unsupported detector contract {contract!r} (this library reads '
                         f'{NATIVE_CONTRACT!r})')

    reason = f'format {format!r} given by the caller'
    if format == 'auto':
        output_names = {t.name for t in outputs}
        input_is_frame = len(inputs) == 1 and len(inputs[0].shape) == 3 and inputs[0].type == 'tensor(uint8)'
        if contract == NATIVE_CONTRACT:
            format, reason = 'native', f'metadata {CONTRACT_KEY}={contract}'
        elif metadata.get('detector_format') in formats.FORMAT_NAMES:
            format = metadata['detector_format']
            reason = f"metadata detector_format={format}"
        elif {'boxes_xyxy', 'scores'} <= output_names and input_is_frame:
            format, reason = 'native', 'outputs boxes_xyxy + scores with a uint8 [H, W, 3] input'
        elif _find_end2end(outputs) is not None:
            format, reason = 'end2end', 'outputs named like an export with NMS inside'
    elif metadata.get('detector_format') not in (None, format) and metadata['detector_format'] in formats.FORMAT_NAMES:
        reason += f" (overriding metadata detector_format={metadata['detector_format']})"

    is_native = format == 'native'
    input_name, input_layout, input_dtype, input_hw = _analyse_input(inputs, is_native, metadata, source, io_text)

    single = None
    if format == 'auto':
        single = _single_candidate(outputs)
        decision = _classify_single(single, input_hw, metadata) if single is not None else None
        if decision is None:
            raise ValueError(
                f'{source}: cannot recognise the detector output layout ({io_text}). Supported: '
                f'{", ".join(formats.FORMAT_NAMES)} (see docs/model_contract.md section 2); pass '
                "detector_format=... or set metadata 'detector_format' to force one")
        format, reason = decision

    if person_class is None:
        person_class = person_class_from_metadata(metadata, source)
    person_class = 0 if person_class is None else int(person_class)
    if person_class < 0:
        raise ValueError(f'person_class must be >= 0, got {person_class}')

    roles, style, decoded_flag = {}, None, None
    if is_native:
        missing = {'boxes_xyxy', 'scores'} - {t.name for t in outputs}
        if missing:
            raise ValueError(f'{source}: native detector contract needs outputs boxes_xyxy and scores, missing '
                             f'{sorted(missing)} ({io_text})')
        roles = {'boxes': 'boxes_xyxy', 'scores': 'scores'}
    elif format == 'end2end':
        found = _find_end2end(outputs, require_classes=False)
        if found is None:
            single = _single_candidate(outputs)
            if single is None or (single.shape[-1] not in (6, None)):
                raise ValueError(f'{source}: no end-to-end (NMS inside) outputs recognised ({io_text})')
            found = ('single', {'single': single.name})
        style, roles = found
    else:
        single = single or _single_candidate(outputs)
        if single is None:
            raise ValueError(f'{source}: format {format} needs one rank-3 output, found ({io_text})')
        roles = {'single': single.name}
        dims = single.shape[-2:]
        channels = dims[0] if format == 'yolov8' else dims[1]
        offset = 4 if format == 'yolov8' else 5
        if channels is not None and not 0 <= person_class < channels - offset:
            raise ValueError(f'{source}: person_class {person_class} is out of range for the {channels - offset} '
                             f'classes of output {single.describe()}')
        if format == 'yolox':
            if yolox_decoded is not None:
                decoded_flag = bool(yolox_decoded)
            elif 'yolox_decoded' in metadata:
                decoded_flag = _parse_bool(metadata['yolox_decoded'], 'yolox_decoded', source)
            elif len(single.shape) == 3 and single.shape[1] is not None and \
                    single.shape[1] != formats.yolox_grid_count(input_hw):
                decoded_flag = True  # raw grid decoding is impossible with this many rows

    spec = None
    if not is_native:
        chosen = preprocessing or metadata.get('preprocessing') or formats.DEFAULT_PREPROCESSING[format]
        if isinstance(chosen, formats.InputSpec):
            spec = chosen
        elif chosen in formats.PREPROCESSING:
            spec = formats.PREPROCESSING[chosen]
        else:
            raise ValueError(f'{source}: unknown preprocessing {chosen!r}; expected one of '
                             f'{sorted(formats.PREPROCESSING)} or an InputSpec')

    return DetectorLayout(
        format=format, input_name=input_name, input_layout=input_layout, input_dtype=input_dtype,
        input_hw=input_hw, preprocessing=spec, output_names=tuple(dict.fromkeys(roles.values())), roles=roles,
        end2end_style=style, yolox_decoded=decoded_flag, person_class=person_class, reason=reason)
