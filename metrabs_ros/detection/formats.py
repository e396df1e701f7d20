"""Decoders from raw detector output arrays to person candidates.

Every decoder returns ``(boxes_xyxy_px float32 [N, 4], scores float32 [N])`` with ``score >= threshold`` for
the person class only, in the coordinates the network works in: *letterboxed* network-input pixels for the
YOLO-family formats (the caller maps them back with :func:`letterbox.boxes_to_original`), original-image pixels
for ``native``. Boxes are (x1, y1, x2, y2) in the detectors' continuous convention (image spans ``[0, W]``).

Formats (see ``docs/model_contract.md`` section 2):

* ``native``  -- our ``detector/1`` contract: ``boxes_xyxy [N, 4]``, ``scores [N]`` in original pixels.
* ``yolov5``  -- one ``[1, N, 5+C]``: cx, cy, w, h, objectness, class probabilities; person score =
  objectness * p(person). Input RGB / 255, letterbox centred, pad 114.
* ``yolov8``  -- (also YOLO11) one ``[1, 4+C, N]``: cx, cy, w, h, class probabilities; person score =
  p(person). Same input as yolov5.
* ``yolox``   -- one ``[1, N, 5+C]``, objectness and class probabilities already sigmoid-ed by the head;
  boxes either raw grid outputs (official ``tools/export_onnx.py`` default, ``decode_in_inference=False``):
  ``xy = (raw_xy + grid_xy) * stride``, ``wh = exp(raw_wh) * stride`` over strides 8/16/32 (row-major grids,
  x fastest, stride 8 first), or already decoded. Input BGR float 0..255 (no normalisation), letterbox at the
  top-left (padding bottom/right) with 114, resized size floor(w r) x floor(h r).
* ``end2end`` -- exports with NMS inside: named ``boxes``/``scores``/``classes`` (or ``labels``), TensorRT
  EfficientNMS ``num_dets``/``det_boxes``/``det_scores``/``det_classes`` (also ``num_detections``/
  ``detection_*``), mmdeploy ``dets [1, N, 5]`` + ``labels``, or one ``[1, N, 6]`` (x1, y1, x2, y2, score,
  class; ultralytics ``nms=True``, YOLOv10). Boxes xyxy in letterboxed pixels; input as its family (default
  ultralytics-style).
"""

from __future__ import annotations

import dataclasses

import numpy as np

FORMAT_NAMES = ('native', 'yolov5', 'yolov8', 'yolox', 'end2end')
END2END_STYLES = ('named', 'efficient_nms', 'dets_labels', 'single')
YOLOX_STRIDES = (8, 16, 32)


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """How a uint8 RGB frame becomes the network input.

    ``channel_order``: 'rgb' or 'bgr'; ``value_scale``: multiplier applied to the 0..255 values (1/255 or 1);
    ``placement``/``rounding``: letterbox style (see :func:`letterbox.letterbox_geometry`); ``pad_value`` in
    0..255 units (applied before scaling).
    """

    channel_order: str
    value_scale: float
    placement: str
    rounding: str
    pad_value: int = 114


PREPROCESSING = {
    'ultralytics': InputSpec(channel_order='rgb', value_scale=1.0 / 255.0, placement='center', rounding='round'),
    'yolox': InputSpec(channel_order='bgr', value_scale=1.0, placement='topleft', rounding='floor'),
}
DEFAULT_PREPROCESSING = {'yolov5': 'ultralytics', 'yolov8': 'ultralytics', 'yolox': 'yolox',
                         'end2end': 'ultralytics'}


def _empty():
    return np.zeros([0, 4], np.float32), np.zeros([0], np.float32)


def cxcywh_to_xyxy(boxes_cxcywh) -> np.ndarray:
    """[N, 4] (cx, cy, w, h) -> [N, 4] (x1, y1, x2, y2), float32."""
    boxes = np.asarray(boxes_cxcywh, np.float32)
    half = boxes[:, 2:4] * 0.5
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def _rows(output, min_columns, what):
    """[1, N, K] or [N, K] -> [N, K] float32."""
    array = np.asarray(output)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.shape[1] < min_columns:
        raise ValueError(f'{what}: expected an output of shape [1, N, >={min_columns}], got {np.shape(output)}')
    return array


def _check_class(person_class, num_classes, what):
    if not 0 <= person_class < num_classes:
        raise ValueError(f'{what}: person_class {person_class} is out of range for {num_classes} classes')


def decode_yolov5(output, person_class=0, threshold=0.3):
    """YOLOv5 ``[1, N, 5+C]`` -> person boxes xyxy (letterbox px) and scores objectness * p(person)."""
    rows = _rows(output, 6, 'yolov5')
    _check_class(person_class, rows.shape[1] - 5, 'yolov5')
    # score = obj * cls <= obj, so the objectness column prefilters cheaply
    rows = rows[rows[:, 4] >= threshold]
    scores = rows[:, 4].astype(np.float32) * rows[:, 5 + person_class].astype(np.float32)
    keep = scores >= threshold
    return cxcywh_to_xyxy(rows[keep, :4]), scores[keep]


def decode_yolov8(output, person_class=0, threshold=0.3):
    """YOLOv8/YOLO11 ``[1, 4+C, N]`` -> person boxes xyxy (letterbox px) and scores p(person)."""
    array = np.asarray(output)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.shape[0] < 5:
        raise ValueError(f'yolov8: expected an output of shape [1, 4+C, N], got {np.shape(output)}')
    _check_class(person_class, array.shape[0] - 4, 'yolov8')
    scores = array[4 + person_class].astype(np.float32)
    keep = np.flatnonzero(scores >= threshold)
    return cxcywh_to_xyxy(array[:4, keep].T), scores[keep]


def yolox_grid(input_hw, strides=YOLOX_STRIDES):
    """Anchor grid of a YOLOX head: (grid_xy float32 [N, 2] in cells, stride float32 [N, 1] in px).

    One anchor per cell; levels in ``strides`` order, each level row-major (x varies fastest).
    """
    height, width = input_hw
    grids, stride_columns = [], []
    for stride in strides:
        rows, cols = height // stride, width // stride
        gy, gx = np.divmod(np.arange(rows * cols), cols)
        grids.append(np.stack([gx, gy], axis=1))
        stride_columns.append(np.full([rows * cols, 1], stride))
    return (np.concatenate(grids).astype(np.float32),
            np.concatenate(stride_columns).astype(np.float32))


def yolox_grid_count(input_hw, strides=YOLOX_STRIDES) -> int:
    return int(sum((input_hw[0] // s) * (input_hw[1] // s) for s in strides))


def yolox_output_looks_decoded(output, input_hw) -> bool:
    """Heuristic for a YOLOX output of unknown kind: decoded box centres span the image (the anchors of
    stride 8 alone cover it), raw grid offsets are O(1). True if some centre lies beyond a quarter of the
    input size."""
    rows = _rows(output, 6, 'yolox')
    return bool(len(rows) and (np.max(rows[:, 0]) > input_hw[1] / 4 or np.max(rows[:, 1]) > input_hw[0] / 4))


def decode_yolox(output, input_hw, decoded=False, person_class=0, threshold=0.3):
    """YOLOX ``[1, N, 5+C]`` -> person boxes xyxy (letterbox px) and scores objectness * p(person).

    ``decoded=False``: raw grid outputs (needs ``N`` = number of anchors of the 8/16/32 grids of ``input_hw``).
    """
    rows = _rows(output, 6, 'yolox')
    _check_class(person_class, rows.shape[1] - 5, 'yolox')
    if not decoded:
        expected = yolox_grid_count(input_hw)
        if len(rows) != expected:
            raise ValueError(
                f'yolox: raw grid output has {len(rows)} anchors but the stride 8/16/32 grids of a '
                f'{input_hw[0]}x{input_hw[1]} input have {expected}; if the export already decodes boxes '
                "(decode_in_inference=True) pass yolox_decoded=True or set metadata 'yolox_decoded'")
    candidate = np.flatnonzero(rows[:, 4] >= threshold)
    scores = rows[candidate, 4].astype(np.float32) * rows[candidate, 5 + person_class].astype(np.float32)
    keep = scores >= threshold
    candidate, scores = candidate[keep], scores[keep]
    boxes = rows[candidate, :4].astype(np.float32)
    if not decoded:
        grid_xy, strides = yolox_grid(input_hw)
        grid_xy, strides = grid_xy[candidate], strides[candidate]
        with np.errstate(over='ignore'):  # absurd raw sizes become inf and are dropped as non-finite later
            sizes = np.exp(boxes[:, 2:4]) * strides
        boxes = np.concatenate([(boxes[:, :2] + grid_xy) * strides, sizes], axis=1)
    return cxcywh_to_xyxy(boxes), scores


def _select_class(boxes, scores, classes, person_class, threshold):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    n = min(len(boxes), len(scores))
    boxes, scores = boxes[:n], scores[:n]
    keep = scores >= threshold
    if classes is not None:
        classes = np.asarray(classes).reshape(-1)[:n]
        keep &= np.rint(classes.astype(np.float64)) == person_class
    return boxes[keep], scores[keep]


def decode_end2end(outputs: dict, style: str, names: dict, person_class=0, threshold=0.3):
    """Exports with NMS inside. ``names`` maps roles ('boxes', 'scores', 'classes', 'num', 'dets',
    'single') to output names of ``outputs``; see :data:`END2END_STYLES`. Returns letterbox-px xyxy boxes."""
    if style == 'single':
        rows = _rows(outputs[names['single']], 6, 'end2end [1, N, 6]')
        return _select_class(rows[:, :4], rows[:, 4], rows[:, 5], person_class, threshold)
    if style == 'dets_labels':
        rows = _rows(outputs[names['dets']], 5, 'end2end dets')
        return _select_class(rows[:, :4], rows[:, 4], outputs[names['classes']], person_class, threshold)
    if style not in ('named', 'efficient_nms'):
        raise ValueError(f'unknown end2end style {style!r}; expected one of {END2END_STYLES}')
    boxes = np.asarray(outputs[names['boxes']], np.float32).reshape(-1, 4)
    scores = np.asarray(outputs[names['scores']], np.float32).reshape(-1)
    classes = outputs[names['classes']] if names.get('classes') else None
    if classes is not None:
        classes = np.asarray(classes).reshape(-1)
    if names.get('num'):
        count = int(np.asarray(outputs[names['num']]).reshape(-1)[0])
        count = max(0, min(count, len(boxes)))
        boxes, scores = boxes[:count], scores[:count]
        classes = None if classes is None else classes[:count]
    return _select_class(boxes, scores, classes, person_class, threshold)


def decode_native(outputs: dict, threshold=0.3):
    """Our ``detector/1`` contract: ``boxes_xyxy [N, 4]`` and ``scores [N]`` already in original pixels."""
    return _select_class(outputs['boxes_xyxy'], outputs['scores'], None, 0, threshold)
