"""PersonDetector: one ONNX detector (native contract or a foreign export) -> person boxes in image pixels."""

from __future__ import annotations

import dataclasses

import numpy as np

from metrabs_ros.detection import autodetect, formats
from metrabs_ros.detection.letterbox import boxes_to_original, letterbox
from metrabs_ros.detection.nms import nms
from metrabs_ros.detection.session import open_session
from metrabs_ros.onnx_backend import ArenaShrinkPolicy


def to_network_input(padded_rgb, spec: formats.InputSpec, layout: str, dtype) -> np.ndarray:
    """Letterboxed uint8 RGB [S, S, 3] -> batch of one in the network's channel order, layout and value range."""
    image = padded_rgb[..., ::-1] if spec.channel_order == 'bgr' else padded_rgb
    image = image.transpose(2, 0, 1)[np.newaxis] if layout == 'nchw' else image[np.newaxis]
    if np.dtype(dtype) == np.uint8:
        return np.ascontiguousarray(image)
    if spec.value_scale == 1.0:
        return np.ascontiguousarray(image, dtype=dtype)
    scaled = np.empty(image.shape, np.float32)  # C-contiguous even when `image` is a transposed view
    np.multiply(image, np.float32(spec.value_scale), out=scaled)
    return scaled.astype(dtype, copy=False)


def boxes_xyxy_to_result(boxes_xyxy_px, scores, image_hw, nms_iou_threshold=0.7, max_detections=-1):
    """Clips boxes to the image (``[0, W] x [0, H]``), drops empty/non-finite ones, runs NMS and returns
    float32 [N, 5] (x, y, w, h, score) sorted by descending score."""
    height, width = image_hw
    boxes = np.asarray(boxes_xyxy_px, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    boxes = np.clip(boxes, 0, np.array([width, height, width, height], np.float32))
    valid = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
    valid &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores = boxes[valid], scores[valid]
    kept = nms(boxes, scores, iou_threshold=nms_iou_threshold, max_detections=max_detections)
    boxes, scores = boxes[kept], scores[kept]
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2], scores[:, np.newaxis]],
                          axis=1).astype(np.float32)


class PersonDetector:
    """Runs a person detector ONNX model and returns person boxes in original-image pixels.

    Args:
        path_or_session: path of an .onnx file, or an ``onnxruntime.InferenceSession``.
        format: 'auto' or one of :data:`formats.FORMAT_NAMES` (see :mod:`metrabs_ros.detection.autodetect`).
        providers, num_threads: ONNX Runtime execution providers / intra-op threads (None = defaults).
        person_class: class index of 'person' (default: metadata ``person_class``, else the index of 'person'
            in ultralytics ``names`` metadata, else 0 = COCO).
        yolox_decoded: YOLOX only: whether the export already decodes boxes. None = metadata ``yolox_decoded``,
            else decided once at start-up from a probe run on a grey frame (decoded centres span the input,
            raw grid offsets are O(1)). The official export (``tools/export_onnx.py``) writes raw outputs.
        preprocessing: 'ultralytics' (RGB/255, centred letterbox) or 'yolox' (BGR 0..255, top-left) or a
            :class:`formats.InputSpec`; None = metadata ``preprocessing``, else the format's default.

    Box convention: the YOLO/COCO continuous pixel coordinates in which the image spans ``[0, W] x [0, H]``,
    passed on unchanged (no half-pixel shift towards the contract's pixel-centre convention; at most 0.5 px).
    """

    def __init__(self, path_or_session, format='auto', providers=None, num_threads=None, person_class=None,
                 yolox_decoded=None, preprocessing=None):
        self.session, self.source = open_session(path_or_session, providers=providers, num_threads=num_threads)
        inputs = [autodetect.TensorInfo.from_ort(t) for t in self.session.get_inputs()]
        outputs = [autodetect.TensorInfo.from_ort(t) for t in self.session.get_outputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        options = dict(metadata=self.metadata, format=format, person_class=person_class,
                       yolox_decoded=yolox_decoded, preprocessing=preprocessing, source=self.source)
        try:
            layout = autodetect.resolve_layout(inputs, outputs, **options)
        except autodetect.NeedsProbe:
            outputs = self._probe_output_shapes(inputs, outputs)
            layout = autodetect.resolve_layout(inputs, outputs, **options)
        self.layout = layout
        self.default_threshold = float(self.metadata.get('score_threshold', DEFAULT_SCORE_THRESHOLD))
        if layout.format == 'yolox' and layout.yolox_decoded is None:
            grey = np.full((*layout.input_hw, 3), 114, np.uint8)
            raw = self._run_network(grey)[0][layout.roles['single']]
            self.layout = dataclasses.replace(
                layout, yolox_decoded=formats.yolox_output_looks_decoded(raw, layout.input_hw),
                reason=layout.reason + '; boxes decoded-ness from a probe run')

    @property
    def format(self) -> str:
        return self.layout.format

    @property
    def person_class(self) -> int:
        return self.layout.person_class

    @property
    def input_hw(self):
        """Network input size (letterbox target) in pixels, or None for the native format."""
        return self.layout.input_hw

    def __repr__(self):
        return (f'PersonDetector({self.source!r}, format={self.format!r}, input_hw={self.input_hw}, '
                f'person_class={self.person_class}, reason={self.layout.reason!r})')

    def _probe_output_shapes(self, inputs, outputs):
        """Runs the model once on a zero input to learn dynamic output dimensions."""
        image = inputs[0]
        shape = tuple(d if d is not None else 1 for d in image.shape)
        if len(shape) == 4:
            layout, hw = autodetect.network_input_layout(image, self.metadata)
            shape = (1, 3, *hw) if layout == 'nchw' else (1, *hw, 3)
        dtype = autodetect._ORT_DTYPES.get(image.type, np.float32)
        try:
            results = self.session.run(None, {image.name: np.zeros(shape, dtype)})
        except Exception as error:
            raise ValueError(f'{self.source}: probe run to learn the output shapes failed '
                             f'({autodetect.describe_io(inputs, outputs)}): {error}') from error
        return [autodetect.TensorInfo(t.name, tuple(np.shape(r)), t.type) for t, r in zip(outputs, results)]

    def _run_network(self, image_rgb):
        layout = self.layout
        if layout.format == 'native':
            feed, geometry = np.ascontiguousarray(image_rgb), None
        else:
            spec = layout.preprocessing
            padded, geometry = letterbox(image_rgb, layout.input_hw, spec.pad_value, spec.placement, spec.rounding)
            feed = to_network_input(padded, spec, layout.input_layout, layout.input_dtype)
        run_options = None
        if layout.format == 'native':
            # The native contract takes the image at its own size: once oversize frames are over, give the memory
            # arena's chunks back (else one 4K frame pins its buffers for good).
            if getattr(self, '_arena_policy', None) is None:
                self._arena_policy = ArenaShrinkPolicy(self.session)
            run_options = self._arena_policy.run_options(feed.size)
        results = self.session.run(list(layout.output_names), {layout.input_name: feed}, run_options)
        return dict(zip(layout.output_names, results)), geometry

    def candidates(self, image_rgb, threshold=None, tiles=None):
        """Person candidates before NMS: (boxes_xyxy_px float32 [N, 4] in original pixels, unclipped;
        scores float32 [N]) with ``score >= threshold`` (None = :attr:`default_threshold`, the model's
        recommended threshold from its ``score_threshold`` metadata, else 0.3).

        ``tiles`` = (rows, cols) adds a pass on each tile of an overlapping grid (see :func:`tile_regions`) to the
        whole-frame pass, for people too small for the network's input at full-frame scale: each tile is run like
        a frame of its own (so it is magnified by about ``min(rows, cols)``). Tiles only add people: a tile
        candidate is dropped when it touches an inner tile edge (a cut person: the whole-frame pass or the
        neighbouring tile sees them whole) or when it overlaps a whole-frame candidate (IoU >= 0.5 or >= 70 % of
        its area inside it: the same person, or a part of them). None or (1, 1) = the whole frame only."""
        image_rgb = _check_image(image_rgb)
        threshold = self.default_threshold if threshold is None else float(threshold)
        boxes, scores = self._candidates_one_pass(image_rgb, threshold)
        rows, cols = tiles if tiles else (1, 1)
        if rows * cols <= 1:
            return boxes, scores
        all_boxes, all_scores = [boxes], [scores]
        height, width = image_rgb.shape[:2]
        for x0, y0, x1, y1 in tile_regions((height, width), rows, cols):
            tile_boxes, tile_scores = self._candidates_one_pass(image_rgb[y0:y1, x0:x1], threshold)
            tile_boxes = tile_boxes + np.array([x0, y0, x0, y0], np.float32)
            keep = ~touches_inner_edge(tile_boxes, (x0, y0, x1, y1), (height, width))
            keep &= ~overlaps_any(tile_boxes, boxes)
            all_boxes.append(tile_boxes[keep])
            all_scores.append(tile_scores[keep])
        return np.concatenate(all_boxes), np.concatenate(all_scores)

    def _candidates_one_pass(self, image_rgb, threshold):
        outputs, geometry = self._run_network(image_rgb)
        layout = self.layout
        if layout.format == 'native':
            return formats.decode_native(outputs, threshold)
        if layout.format == 'yolov5':
            boxes, scores = formats.decode_yolov5(outputs[layout.roles['single']], layout.person_class, threshold)
        elif layout.format == 'yolov8':
            boxes, scores = formats.decode_yolov8(outputs[layout.roles['single']], layout.person_class, threshold)
        elif layout.format == 'yolox':
            boxes, scores = formats.decode_yolox(outputs[layout.roles['single']], layout.input_hw,
                                                 layout.yolox_decoded, layout.person_class, threshold)
        else:
            boxes, scores = formats.decode_end2end(outputs, layout.end2end_style, layout.roles,
                                                   layout.person_class, threshold)
        return boxes_to_original(boxes, geometry), scores

    def detect(self, image_rgb, threshold=None, nms_iou_threshold=0.7, max_detections=-1, tiles=None) -> np.ndarray:
        """Person boxes of an RGB uint8 [H, W, 3] frame: float32 [N, 5] = (x, y, w, h, score), original-image
        pixels, clipped to the image, NMS-filtered (IoU > ``nms_iou_threshold`` suppressed), sorted by
        descending score, at most ``max_detections`` (< 0 = unlimited), ``score >= threshold`` (None = the
        model's recommended threshold, :attr:`default_threshold`). ``tiles``: see :meth:`candidates`
        (small-people pass)."""
        image_rgb = _check_image(image_rgb)
        boxes, scores = self.candidates(image_rgb, threshold, tiles=tiles)
        return boxes_xyxy_to_result(boxes, scores, image_rgb.shape[:2], nms_iou_threshold, max_detections)

    __call__ = detect


DEFAULT_SCORE_THRESHOLD = 0.3     # for models without a ``score_threshold`` metadata entry
TILE_OVERLAP = 0.2
EDGE_MARGIN_FRACTION = 0.02      # of the tile's side: boxes this close to an inner tile edge are cut people
EDGE_MARGIN_MIN_PX = 4.0


def parse_tiles(value):
    """'off' / '' / None / 0 -> None; 'RxC' (e.g. '2x2') or an int N (N x N) or a pair -> (rows, cols)."""
    if value in (None, '', 'off', 0, '0', (1, 1), '1x1'):
        return None
    if isinstance(value, str):
        parts = value.lower().split('x')
        if len(parts) == 1:
            parts = parts * 2
        try:
            rows, cols = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"detector tiles must be 'off' or ROWSxCOLS like '2x2', got {value!r}") from None
    elif isinstance(value, int):
        rows = cols = value
    else:
        rows, cols = (int(v) for v in value)
    if not (1 <= rows <= 8 and 1 <= cols <= 8):
        raise ValueError(f'detector tiles must be between 1x1 and 8x8, got {rows}x{cols}')
    return None if rows * cols == 1 else (rows, cols)


def tile_regions(image_hw, rows, cols, overlap=TILE_OVERLAP):
    """Integer pixel regions (x0, y0, x1, y1) of a ``rows x cols`` grid covering the image, neighbours
    overlapping by ``overlap`` of a tile's size (so that a person cut by one tile's edge lies whole in the
    neighbour when it is smaller than the overlap)."""
    height, width = image_hw

    def spans(size, n):
        if n == 1:
            return [(0, size)]
        tile = size / (n - (n - 1) * overlap)
        step = tile * (1 - overlap)
        return [(int(round(i * step)), min(size, int(round(i * step + tile)))) for i in range(n)]

    return [(x0, y0, x1, y1) for y0, y1 in spans(height, rows) for x0, x1 in spans(width, cols)]


def touches_inner_edge(boxes_xyxy, region, image_hw, margin_fraction=EDGE_MARGIN_FRACTION,
                       margin_min_px=EDGE_MARGIN_MIN_PX):
    """bool [N]: a box reaches an edge of ``region`` that is not an image border, within
    ``max(margin_min_px, margin_fraction * region side)`` (detectors place the edge of a cut person a few pixels
    inside the cut)."""
    x0, y0, x1, y1 = region
    height, width = image_hw
    margin_x = max(margin_min_px, margin_fraction * (x1 - x0))
    margin_y = max(margin_min_px, margin_fraction * (y1 - y0))
    b = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
    result = np.zeros(len(b), bool)
    if x0 > 0:
        result |= b[:, 0] <= x0 + margin_x
    if y0 > 0:
        result |= b[:, 1] <= y0 + margin_y
    if x1 < width:
        result |= b[:, 2] >= x1 - margin_x
    if y1 < height:
        result |= b[:, 3] >= y1 - margin_y
    return result


def overlaps_any(boxes_xyxy, reference_xyxy, iou_threshold=0.5, inside_fraction=0.7):
    """bool [N]: a box has IoU >= ``iou_threshold`` with a reference box, or at least ``inside_fraction`` of its
    area inside one."""
    a = np.asarray(boxes_xyxy, np.float64).reshape(-1, 1, 4)
    b = np.asarray(reference_xyxy, np.float64).reshape(1, -1, 4)
    if a.shape[0] == 0 or b.shape[1] == 0:
        return np.zeros(a.shape[0], bool)
    inter = (np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
             * np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None))
    area_a = np.maximum((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]), 1e-12)
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    iou = inter / np.maximum(area_a + area_b - inter, 1e-12)
    return np.any((iou >= iou_threshold) | (inter / area_a >= inside_fraction), axis=1)


def _check_image(image_rgb):
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(f'expected an RGB uint8 image of shape [H, W, 3], got {image.dtype} {image.shape}')
    return image
