"""Export of PersonCenterNet to the NATIVE detector contract (docs/model_contract.md §2) and torch/ORT parity.

The ONNX graph takes the frame ``image`` uint8 [H, W, 3] RGB of any size and:
  1. letterboxes it inside the graph to ``side x side`` (``side`` fixed at export): ratio ``r = side / max(H, W)``,
     resized size ``nh = round(H r)``, ``nw = round(W r)`` (clipped to 1..side; ONNX Round = half to even, as
     Python's ``round``), bilinear ``Resize`` (half-pixel centres, ``antialias=1``: a triangle filter widened by
     1/r when shrinking; border taps clamped to the edge pixel, see :func:`resize_matrix`), image at the
     top-left, padding 114 at the bottom/right (``Pad``);
  2. runs the network on the canvas (RGB, 0..255 / 255);
  3. decodes the top-K heatmap peaks (3x3 max-pool peak test, ``TopK``) into boxes around their cell centres and
     maps them back to original pixels: ``x = x_canvas / (nw / W)``, ``y = y_canvas / (nh / H)``
     (pixel-edge convention; the image spans ``[0, W] x [0, H]``).
Outputs ``boxes_xyxy`` float32 [K, 4] and ``scores`` float32 [K] (sorted by score; no NMS: Python applies the
threshold and NMS). Metadata: ``metrabs_ros.contract`` = ``detector/1``, ``name``, ``description``, ``training``,
``input_side``, ``top_k``, ``out_stride``, ``letterbox``, ``config`` (the training config, JSON).
"""
from __future__ import annotations

import io
import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from metrabs_ros.training.detector.data import PAD_VALUE
from metrabs_ros.training.detector.model import PersonCenterNet, decode_candidates

CONTRACT_KEY = 'metrabs_ros.contract'
DETECTOR_CONTRACT = 'detector/1'
OPSET = 18              # Resize antialias needs opset 18
LETTERBOX_NOTE = ('top-left letterbox to input_side: r = side / max(H, W), size round(H r) x round(W r), '
                  'antialiased bilinear Resize (half_pixel), pad 114 bottom/right')


class CanvasNetwork(nn.Module):
    """[1, 3, side, side] float canvas in 0..255 -> (boxes [K, 4] canvas px, scores [K]): network + decoding."""

    def __init__(self, model: PersonCenterNet, top_k: int):
        super().__init__()
        self.model, self.top_k = model, int(top_k)

    def forward(self, canvas_0_255: torch.Tensor):
        heat_logits, ltrb_px = self.model(canvas_0_255 * (1.0 / 255.0))
        boxes, scores = decode_candidates(heat_logits, ltrb_px, self.model.out_stride, self.top_k)
        return boxes[0], scores[0]


def letterbox_size(image_hw, side: int):
    """Resized content size (nh, nw) of the in-graph letterbox (see the module docstring)."""
    h, w = (int(v) for v in image_hw)
    ratio = side / max(h, w)
    return min(max(int(round(h * ratio)), 1), side), min(max(int(round(w * ratio)), 1), side)


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] float64 weights of ONNX ``Resize`` (linear, ``half_pixel``, ``antialias=1``) along one axis.

    Output sample ``i`` sits at input coordinate ``c = (i + 0.5) / s - 0.5`` (``s = n_out / n_in``); taps ``t`` with
    ``|t - c| < support`` (``support = max(1, 1 / s)``) get the triangle weight ``1 - |t - c| / support``, indices
    outside the image are clamped to the edge (ONNX Runtime replicates border pixels, whereas
    ``torch.nn.functional.interpolate(antialias=True)`` renormalises over the taps inside the image), and the weights
    are normalised to sum to 1."""
    scale = n_out / n_in
    support = max(1.0, 1.0 / scale)
    centres = (np.arange(n_out) + 0.5) / scale - 0.5
    first = np.floor(centres - support).astype(np.int64)
    taps = first[:, None] + np.arange(int(np.ceil(2 * support)) + 2)[None, :]          # [n_out, T]
    weights = np.clip(1.0 - np.abs(taps - centres[:, None]) / support, 0.0, None)
    weights /= weights.sum(axis=1, keepdims=True)
    matrix = np.zeros([n_out, n_in])
    np.add.at(matrix, (np.repeat(np.arange(n_out), taps.shape[1]), np.clip(taps, 0, n_in - 1).ravel()),
              weights.ravel())
    return matrix


def letterbox_torch(image_rgb_u8, side: int):
    """Torch twin of the in-graph letterbox: uint8 [H, W, 3] -> (canvas float [1, 3, side, side] in 0..255,
    scale_xy (nw / W, nh / H)). The resize is :func:`resize_matrix` along each axis (ONNX Runtime's semantics)."""
    image = torch.as_tensor(np.ascontiguousarray(image_rgb_u8))
    h, w = image.shape[:2]
    nh, nw = letterbox_size((h, w), side)
    x = image.permute(2, 0, 1).to(torch.float64)
    if (nh, nw) != (h, w):
        rows = torch.from_numpy(resize_matrix(h, nh))
        cols = torch.from_numpy(resize_matrix(w, nw))
        x = torch.einsum('yh,chw,xw->cyx', rows, x, cols)
    x = F.pad(x.to(torch.float32)[None], (0, side - nw, 0, side - nh), value=float(PAD_VALUE))
    return x, (nw / w, nh / h)


@torch.no_grad()
def detect_torch(model: PersonCenterNet, image_rgb_u8, side: int, top_k: int = 100):
    """The whole exported computation in torch: frame -> (boxes_xyxy_px float32 [K, 4] original pixels, scores
    [K]). Used for validation during training and as the reference of the parity check."""
    model.eval()
    return detect_torch_canvas(CanvasNetwork(model, top_k), image_rgb_u8, side)


@torch.no_grad()
def detect_torch_canvas(network: nn.Module, image_rgb_u8, side: int):
    """:func:`detect_torch` for any canvas network (see :func:`build_canvas_detector_onnx`)."""
    network.eval()
    device = next(network.parameters()).device
    canvas, (sx, sy) = letterbox_torch(image_rgb_u8, side)
    boxes, scores = network(canvas.to(device))
    boxes = boxes.cpu().double() / torch.tensor([sx, sy, sx, sy], dtype=torch.float64)
    return boxes.numpy().astype(np.float32), scores.cpu().numpy().astype(np.float32)


def _fused(model: nn.Module) -> nn.Module:
    from metrabs_ros.training.fusion import fuse_batchnorm
    return fuse_batchnorm(model).eval()


def build_detector_onnx(model: PersonCenterNet, side: int, top_k: int = 100, metadata: dict | None = None,
                        fuse: bool = True):
    """The contract graph of a :class:`PersonCenterNet` as an ``onnx.ModelProto`` (see
    :func:`build_canvas_detector_onnx`)."""
    network = CanvasNetwork(_fused(model) if fuse else model.eval(), top_k).eval()
    meta = {'out_stride': str(model.out_stride)}
    meta.update(metadata or {})
    return build_canvas_detector_onnx(network, side, meta, producer='metrabs_ros.training.detector')


def build_canvas_detector_onnx(network: nn.Module, side: int, metadata: dict | None = None,
                               producer: str = 'metrabs_ros'):
    """The native detector contract around any canvas network (``[1, 3, side, side]`` RGB 0..255 canvas ->
    ``(boxes [K, 4] canvas px, scores [K])``): the network is exported by the TorchScript exporter for the fixed
    canvas, the letterbox and the box mapping back to image pixels are added with ``onnx.helper``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if side % 32:
        raise ValueError(f'input side must be a multiple of 32, got {side}')
    network = network.eval()
    buffer = io.BytesIO()
    canvas = torch.zeros(1, 3, side, side)
    with torch.no_grad():
        num_out = int(network(canvas)[1].shape[0])      # the exporter may leave the TopK length symbolic
        torch.onnx.export(network, canvas, buffer, input_names=['lb_canvas'],
                          output_names=['lb_boxes', 'scores'], opset_version=OPSET, dynamo=False)
    net = onnx.load_from_string(buffer.getvalue())
    graph = net.graph

    def const(name, array):
        return numpy_helper.from_array(np.asarray(array), name)

    initializers = [
        const('lb_side_f', np.array([side], np.float32)),
        const('lb_side_hw', np.array([side, side], np.int64)),
        const('lb_one_f', np.float32(1.0)),
        const('lb_side_scalar_f', np.float32(side)),
        const('lb_hw_slice_start', np.array([0], np.int64)),
        const('lb_hw_slice_end', np.array([2], np.int64)),
        const('lb_batch_channels', np.array([1, 3], np.int64)),
        const('lb_zero_pads', np.zeros([6], np.int64)),
        const('lb_axis0', np.array([0], np.int64)),
        const('lb_pad_value', np.float32(PAD_VALUE)),
        const('lb_xyxy_from_hw', np.array([1, 0, 1, 0], np.int64)),
        const('lb_canvas_shape', np.array([1, 3, side, side], np.int64)),
    ]
    n = helper.make_node
    pre = [
        n('Shape', ['image'], ['lb_shape']),
        n('Slice', ['lb_shape', 'lb_hw_slice_start', 'lb_hw_slice_end'], ['lb_hw']),
        n('Cast', ['lb_hw'], ['lb_hw_f'], to=TensorProto.FLOAT),
        n('ReduceMax', ['lb_hw_f'], ['lb_max_side'], keepdims=1),
        n('Div', ['lb_side_f', 'lb_max_side'], ['lb_ratio']),
        n('Mul', ['lb_hw_f', 'lb_ratio'], ['lb_new_hw_raw']),
        n('Round', ['lb_new_hw_raw'], ['lb_new_hw_round']),
        n('Clip', ['lb_new_hw_round', 'lb_one_f', 'lb_side_scalar_f'], ['lb_new_hw_f']),
        n('Cast', ['lb_new_hw_f'], ['lb_new_hw'], to=TensorProto.INT64),
        n('Concat', ['lb_batch_channels', 'lb_new_hw'], ['lb_sizes'], axis=0),
        n('Cast', ['image'], ['lb_image_f'], to=TensorProto.FLOAT),
        n('Transpose', ['lb_image_f'], ['lb_chw'], perm=[2, 0, 1]),
        n('Unsqueeze', ['lb_chw', 'lb_axis0'], ['lb_nchw']),
        n('Resize', ['lb_nchw', '', '', 'lb_sizes'], ['lb_resized'], mode='linear',
          coordinate_transformation_mode='half_pixel', antialias=1),
        n('Sub', ['lb_side_hw', 'lb_new_hw'], ['lb_pad_hw']),
        n('Concat', ['lb_zero_pads', 'lb_pad_hw'], ['lb_pads'], axis=0),
        n('Pad', ['lb_resized', 'lb_pads', 'lb_pad_value'], ['lb_canvas_padded'], mode='constant'),
        # the canvas is always [1, 3, side, side]: stated, so that TensorRT sees static conv channels
        n('Reshape', ['lb_canvas_padded', 'lb_canvas_shape'], ['lb_canvas']),
    ]
    post = [
        n('Div', ['lb_new_hw_f', 'lb_hw_f'], ['lb_scale_hw']),
        n('Gather', ['lb_scale_hw', 'lb_xyxy_from_hw'], ['lb_scale_xyxy'], axis=0),
        n('Div', ['lb_boxes', 'lb_scale_xyxy'], ['boxes_xyxy']),
    ]
    nodes = pre + list(graph.node) + post
    new_graph = helper.make_graph(
        nodes, 'metrabs_ros_person_detector',
        inputs=[helper.make_tensor_value_info('image', TensorProto.UINT8, ['height', 'width', 3])],
        outputs=[helper.make_tensor_value_info('boxes_xyxy', TensorProto.FLOAT, [num_out, 4]),
                 helper.make_tensor_value_info('scores', TensorProto.FLOAT, [num_out])],
        initializer=list(graph.initializer) + initializers)
    onnx_model = helper.make_model(new_graph, opset_imports=[helper.make_opsetid('', OPSET)],
                                   producer_name=producer)
    onnx_model.ir_version = net.ir_version
    meta = {CONTRACT_KEY: DETECTOR_CONTRACT, 'input_side': str(side), 'top_k': str(num_out),
            'letterbox': LETTERBOX_NOTE}
    meta.update({k: (v if isinstance(v, str) else json.dumps(v)) for k, v in (metadata or {}).items()})
    for key, value in meta.items():
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value
    # TensorRT takes UINT8 only at the inputs (a no-op for this graph, which casts first). The antialiased letterbox
    # Resize stays: TensorRT parses none, but ONNX Runtime's is far faster on the CPU than the exact rewrite, which
    # build-engine applies to what it hands TensorRT (metrabs_ros.gpu.trt_graph_fixes.for_tensorrt, docs/gpu.md).
    from metrabs_ros.gpu.trt_graph_fixes import cast_uint8_inputs_first
    cast_uint8_inputs_first(onnx_model)
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def run_onnx(path_or_bytes, image_rgb_u8, num_threads: int | None = None):
    """ONNX Runtime (CPU) on one frame -> (boxes_xyxy [K, 4], scores [K])."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = int(num_threads)
    session = ort.InferenceSession(path_or_bytes, options, providers=['CPUExecutionProvider'])
    return tuple(session.run(['boxes_xyxy', 'scores'], {'image': np.ascontiguousarray(image_rgb_u8)}))


def parity_check(path_or_bytes, model: PersonCenterNet, side: int, top_k: int, images, min_score: float = 0.1,
                 score_tolerance: float = 5e-4, box_tolerance_px: float = 0.1, reference=None):
    """Compares ORT on the exported graph with :func:`detect_torch` (or ``reference(image) -> (boxes, scores)``)
    on each image.

    Every candidate scoring at least ``min_score`` on one side needs a partner on the other side with a score
    within ``score_tolerance`` and a box within ``box_tolerance_px`` (original pixels). Two cases are excused and
    counted: a *peak flip* (the other side has an overlapping candidate, IoU >= 0.3, with a score within
    ``score_tolerance``: two neighbouring cells with near-equal scores, where the 3x3 peak test picks either one
    depending on rounding) and the top-K boundary (the score is within ``score_tolerance`` of the other side's
    lowest kept score). Low candidates are not compared. Returns a dict with the largest differences; raises
    ValueError on disagreement."""
    from metrabs_ros.training.detector.metrics import iou_matrix
    worst_score, worst_box, compared, flips = 0.0, 0.0, 0, 0
    for image in images:  # loop over a few test frames
        ort_out = run_onnx(path_or_bytes, image)
        ref_out = reference(image) if reference is not None else detect_torch(model, image, side, top_k)
        for (boxes_a, scores_a), (boxes_b, scores_b) in ((ref_out, ort_out), (ort_out, ref_out)):
            strong = np.flatnonzero(scores_a >= min_score)
            if len(strong) == 0:
                continue
            rows = np.arange(len(strong))
            score_diff = np.abs(scores_a[strong, None] - scores_b[None, :])                 # [S, K]
            close = score_diff <= score_tolerance
            box_diff = np.abs(boxes_a[strong, None, :] - boxes_b[None, :, :]).max(axis=2)   # [S, K]
            box_diff = np.where(close, box_diff, np.inf)
            partner = np.argmin(box_diff, axis=1)
            best_box = box_diff[rows, partner]
            unmatched = best_box > box_tolerance_px
            flipped = unmatched & np.any(close & (iou_matrix(boxes_a[strong], boxes_b) >= 0.3), axis=1)
            at_boundary = unmatched & (scores_a[strong] <= scores_b.min() + score_tolerance)
            checked = ~(flipped | at_boundary)
            flips += int(flipped.sum())
            if np.any(checked):
                worst_box = max(worst_box, float(np.max(best_box[checked])))
                worst_score = max(worst_score, float(np.max(score_diff[rows, partner][checked])))
            compared += int(checked.sum())
    result = dict(max_score_diff=worst_score, max_box_diff_px=worst_box, num_compared=compared,
                  num_peak_flips=flips, num_images=len(images), min_score=min_score)
    if worst_score > score_tolerance or worst_box > box_tolerance_px:
        raise ValueError(f'ONNX Runtime and torch disagree: {result}')
    return result


def export_detector(model: PersonCenterNet, path, side: int, top_k: int = 100, metadata: dict | None = None,
                    parity_images=None) -> dict:
    """Writes the contract graph to ``path``; with ``parity_images`` (uint8 RGB frames) also checks ORT against
    torch. Returns a dict with the path, the file size and the parity result."""
    import onnx
    onnx_model = build_detector_onnx(model, side, top_k, metadata)
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    onnx.save(onnx_model, os.fspath(path))
    report = dict(path=os.fspath(path), size_bytes=os.path.getsize(path))
    if parity_images:
        report['parity'] = parity_check(os.fspath(path), model, side, top_k, parity_images)
    return report
