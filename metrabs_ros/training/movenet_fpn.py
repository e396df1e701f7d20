"""MoveNet's feature pyramid on its MobileNetV2 trunk: stride-4 features that MoveNet trained for keypoint heatmaps
on real people, as a MeTRAbs backbone (kinds `movenet-lightning-fpn`, `movenet-thunder-fpn`).

Why: on the trunk alone (stride 32) a 128 px crop gives 4 × 4 heatmaps; the MeTRAbs soft-argmax then has to place
every joint from four cells, and the 2D error stayed at ≈ 13 px (10 % of the crop) whatever the training length
(docs/training.md §6). MoveNet itself reads its keypoints from a stride-4 pyramid; reusing it gives 32 × 32 maps
at 128 px with features already tuned to joints.

Source graph (TFJS `movenet-{lightning,thunder}.json`, names under `FPN_SCOPE`), after the trunk's `out_relu`:
  top       conv2d     1×1 + bias on out_relu (stride 32)                              → 64
  stride 16 up_sampling2d (bilinear ×2, half-pixel) + conv2d_1 (1×1 + bias on block_9's residual add) → 64,
            separable_conv2d   (depthwise 3×3 SAME no bias, pointwise 1×1 + bias, ReLU)   → 32
  stride 8  up ×2 + conv2d_2 (1×1 + bias on block_5's add), separable_conv2d_1 + ReLU      → 24
  stride 4  up ×2 + conv2d_3 (1×1 + bias on block_2's add), separable_conv2d_2 + ReLU      → 24
  neck      kpt_heatmap_0/separable_conv2d_4 (depthwise 3×3, pointwise 24 → 96 + bias, ReLU): the first layer of
            MoveNet's keypoint-heatmap head; its last 1×1 (96 → 17 COCO logits) is not loaded — the MeTRAbs head
            (1×1, 96 → points·(1 + depth bins)) takes its place.
The graph's upsampling sizes are constants (12, 24, 48 for its 192 px input); ours double whatever comes in, which
is the same operation for any input that is a multiple of 32.

Our module: `trunk` (movenet_backbone.MoveNetMobileNetV2, same keys under `trunk.`), `top`, `lateral16`,
`smooth16`, `lateral8`, `smooth8`, `lateral4`, `smooth4`, `neck` (separable convs: `.depthwise`, `.pointwise`),
and with `global_channels` G > 0 our own `context` branch (1×1 conv + ReLU on the trunk's stride-32 output,
bilinearly upsampled; no MoveNet weights, it starts random). Output [B, 96 + G, H/4, W/4] (neck channels first)
for input [B, 3, H, W] gamma-encoded RGB in [0, 1], H and W multiples of 32.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from metrabs_ros.training.movenet_backbone import (MOVENET_MODEL_SCOPE, MOVENET_SPECS, MobileNetV2Spec,
                                                   MoveNetMobileNetV2, movenet_state_dict)
from metrabs_ros.training.same_padding_conv import SamePaddingConv2d
from metrabs_ros.training.staged_backbone import StagedBackbone

FPN_SCOPE = 'StatefulPartitionedCall/center_net_mobile_net_v2fpn_feature_extractor/model_1/'
NECK_SCOPE = 'StatefulPartitionedCall/kpt_heatmap_0/separable_conv2d_4/'
FPN_FEATURE_NODE = FPN_SCOPE + 're_lu_2/Relu'          # stride-4 pyramid output
NECK_FEATURE_NODE = 'StatefulPartitionedCall/kpt_heatmap_0/re_lu_4/Relu'
# trunk block (index in MoveNetMobileNetV2.blocks) whose residual add feeds each lateral
LATERAL_BLOCKS = {'lateral16': 9, 'lateral8': 5, 'lateral4': 2}
FPN_WIDTHS = (64, 32, 24, 24)      # top/stride-16 sum, stride-16 out / stride-8 sum, stride-8 out, stride-4 out
NECK_WIDTH = 96


class SeparableConv(nn.Module):
    """Depthwise 3×3 (SAME, no bias) → pointwise 1×1 + bias → ReLU (Keras SeparableConv2D, BatchNorm folded)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.depthwise = SamePaddingConv2d(in_channels, in_channels, 3, 1, groups=in_channels, bias=False)
        self.pointwise = SamePaddingConv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pointwise(self.depthwise(x)))


def _up2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear ×2 with half-pixel centres (TF ResizeBilinear half_pixel_centers=True, align_corners=False)."""
    return F.interpolate(x, scale_factor=2.0, mode='bilinear', align_corners=False)


class MoveNetFPN(StagedBackbone):
    """MoveNet trunk + feature pyramid + the keypoint head's first layer; stride 4, 96 output channels."""

    def __init__(self, spec: MobileNetV2Spec, global_channels: int = 0):
        super().__init__()
        self.spec = spec
        self.global_channels = int(global_channels)
        self.trunk = MoveNetMobileNetV2(spec)
        c_top, c16, c8, c4 = FPN_WIDTHS
        self.top = SamePaddingConv2d(spec.last, c_top, 1)
        self.lateral16 = SamePaddingConv2d(spec.blocks[LATERAL_BLOCKS['lateral16'] - 1][1], c_top, 1)
        self.smooth16 = SeparableConv(c_top, c16)
        self.lateral8 = SamePaddingConv2d(spec.blocks[LATERAL_BLOCKS['lateral8'] - 1][1], c16, 1)
        self.smooth8 = SeparableConv(c16, c8)
        self.lateral4 = SamePaddingConv2d(spec.blocks[LATERAL_BLOCKS['lateral4'] - 1][1], c8, 1)
        self.smooth4 = SeparableConv(c8, c4)
        self.neck = SeparableConv(c4, NECK_WIDTH)
        if self.global_channels:
            # context branch (ours, trained from scratch): 1×1 conv + ReLU on the trunk's stride-32 output,
            # upsampled to stride 4 and appended to the neck's channels. The keypoint channels place joints in the
            # image; these carry the whole-body context that a joint's depth needs (the neck sees a 3×3 window).
            self.context = SamePaddingConv2d(spec.last, self.global_channels, 1)
        self.out_channels = NECK_WIDTH + self.global_channels
        self.stride = 4
        self.fresh_prefixes = ('context.',)    # not in MoveNet: pretrained_weights leaves them at their init

    def stages(self) -> List[nn.Module]:
        """Trunk stages (stem, 17 blocks, Conv_1), then the pyramid top-down, then the neck."""
        return [*self.trunk.stages(), self.top, nn.ModuleList([self.lateral16, self.smooth16]),
                nn.ModuleList([self.lateral8, self.smooth8]), nn.ModuleList([self.lateral4, self.smooth4]),
                self.neck] + ([self.context] if self.global_channels else [])

    def forward(self, crops01: torch.Tensor) -> torch.Tensor:
        t = self.trunk
        scale = t.input_scale.to(crops01.dtype).reshape(1, 3, 1, 1)
        offset = t.input_offset.to(crops01.dtype).reshape(1, 3, 1, 1)
        x = torch.clamp(t.stem(crops01 * scale + offset), 0.0, 6.0)
        taps = {}
        for i, block in enumerate(t.blocks):
            x = block(x)
            taps[i] = x
        trunk_out = torch.clamp(t.head(x), 0.0, 6.0)
        x = self.smooth16(_up2(self.top(trunk_out)) + self.lateral16(taps[LATERAL_BLOCKS['lateral16']]))
        x = self.smooth8(_up2(x) + self.lateral8(taps[LATERAL_BLOCKS['lateral8']]))
        x = self.smooth4(_up2(x) + self.lateral4(taps[LATERAL_BLOCKS['lateral4']]))
        keypoint_features = self.neck(x)
        if not self.global_channels:
            return keypoint_features
        context = torch.relu(self.context(trunk_out))
        context = F.interpolate(context, size=keypoint_features.shape[-2:], mode='bilinear', align_corners=False)
        return torch.cat([keypoint_features, context], dim=1)


# --- loading from the TFJS graph ------------------------------------------------------------------------------

def _inputs(node: dict) -> List[str]:
    return [i.split(':')[0] for i in node.get('input', [])]


def _fused_ops(node: dict) -> List[str]:
    from metrabs_ros.training.tf_graph_numpy import _attr
    return list(_attr(node, 'fused_ops') or [])


def _pyramid_layers():
    """(our path, kind 'conv' | 'separable', weight names, the node that computes it, expected input node or None,
    fused ops)."""
    block_add = {k: f'{MOVENET_MODEL_SCOPE}block_{b}_add/add' for k, b in LATERAL_BLOCKS.items()}
    s = FPN_SCOPE
    layers = [('top', 'conv', (s + 'conv2d/Conv2D/ReadVariableOp', s + 'conv2d/BiasAdd/ReadVariableOp'),
               s + 'conv2d/BiasAdd', MOVENET_MODEL_SCOPE + 'out_relu/Relu6', ['BiasAdd'])]
    for level, conv, sep, relu in (('16', 'conv2d_1', 'separable_conv2d', 're_lu'),
                                   ('8', 'conv2d_2', 'separable_conv2d_1', 're_lu_1'),
                                   ('4', 'conv2d_3', 'separable_conv2d_2', 're_lu_2')):
        layers.append((f'lateral{level}', 'conv', (s + f'{conv}/Conv2D/ReadVariableOp',
                                                     s + f'{conv}/BiasAdd/ReadVariableOp'),
                       s + f'{conv}/BiasAdd', block_add[f'lateral{level}'], ['BiasAdd']))
        layers.append((f'smooth{level}', 'separable', (s + f'{sep}/separable_conv2d/ReadVariableOp',
                                                        s + f'{sep}/separable_conv2d_weights',
                                                        s + f'{sep}/separable_conv2d_bn_offset'),
                       s + f'{relu}/Relu', None, ['BiasAdd', 'Relu']))
    n = NECK_SCOPE
    layers.append(('neck', 'separable', (n + 'separable_conv2d/ReadVariableOp', n + 'separable_conv2d/ReadVariableOp_1',
                                         'StatefulPartitionedCall/kpt_heatmap_0/separable_conv2d_4/BiasAdd/'
                                         'ReadVariableOp'),
                   NECK_FEATURE_NODE, FPN_FEATURE_NODE, ['BiasAdd', 'Relu']))
    return layers


def _check_upsampling(graph, problems: List[str]) -> None:
    """The three top-down sums must be ResizeBilinear(half-pixel) of the level above + the lateral, sized ×2."""
    nodes, weights = graph.nodes_by_name, graph.weights
    chain = (('up_sampling2d', 'conv2d/BiasAdd', 'conv2d_1/BiasAdd', 'tf.__operators__.add/AddV2'),
             ('up_sampling2d_1', 're_lu/Relu', 'conv2d_2/BiasAdd', 'tf.__operators__.add_1/AddV2'),
             ('up_sampling2d_2', 're_lu_1/Relu', 'conv2d_3/BiasAdd', 'tf.__operators__.add_2/AddV2'))
    sizes = []
    for up, above, lateral, add in chain:
        resize = nodes.get(f'{FPN_SCOPE}{up}/resize/ResizeBilinear')
        size_name = f'{FPN_SCOPE}{up}/mul'
        if resize is None or resize['op'] != 'ResizeBilinear' or _inputs(resize)[:1] != [FPN_SCOPE + above]:
            problems.append(f'{up}: expected ResizeBilinear of {above}')
            continue
        from metrabs_ros.training.tf_graph_numpy import _attr
        if not _attr(resize, 'half_pixel_centers') or _attr(resize, 'align_corners'):
            problems.append(f'{up}: expected half_pixel_centers and no align_corners')
        if size_name in weights:
            sizes.append(np.asarray(weights[size_name]).reshape(-1).tolist())
        node = nodes.get(FPN_SCOPE + add)
        if node is None or sorted(_inputs(node)) != sorted([resize['name'], FPN_SCOPE + lateral]):
            problems.append(f'{add}: expected the sum of {up} and {lateral}')
    if len(sizes) == 3 and not (sizes[1] == [2 * v for v in sizes[0]] and sizes[2] == [2 * v for v in sizes[1]]):
        problems.append(f'upsampling sizes {sizes} are not successive doublings')


def movenet_fpn_state_dict(graph, spec: MobileNetV2Spec) -> Dict[str, torch.Tensor]:
    """The state dict of `MoveNetFPN(spec)` from a TFJS MoveNet graph: the trunk through
    movenet_backbone.movenet_state_dict (strict), the pyramid and the neck here, equally strict — every weight under
    FPN_SCOPE outside the trunk and every weight of the neck layer used once, shapes and wiring (inputs, fused ops,
    ResizeBilinear modes and sizes) checked. Raises ValueError listing every problem."""
    weights, nodes = graph.weights, graph.nodes_by_name
    problems: List[str] = []
    out: Dict[str, torch.Tensor] = {f'trunk.{k}': v for k, v in movenet_state_dict(graph, spec).items()}
    used = set()
    module_shapes = {k: tuple(v.shape) for k, v in MoveNetFPN(spec).state_dict().items()}
    for path, kind, names, node_name, input_name, fused in _pyramid_layers():
        missing = [n for n in names if n not in weights]
        if missing:
            problems.append(f'{path}: weights {missing} missing')
            continue
        used.update(names)
        if kind == 'conv':
            kernel, bias = (np.asarray(weights[n], np.float32) for n in names)
            out[f'{path}.weight'] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
            out[f'{path}.bias'] = torch.from_numpy(np.ascontiguousarray(bias))
        else:
            dw, pw, bias = (np.asarray(weights[n], np.float32) for n in names)
            out[f'{path}.depthwise.weight'] = torch.from_numpy(np.ascontiguousarray(dw.transpose(2, 3, 0, 1)))
            out[f'{path}.pointwise.weight'] = torch.from_numpy(np.ascontiguousarray(pw.transpose(3, 2, 0, 1)))
            out[f'{path}.pointwise.bias'] = torch.from_numpy(np.ascontiguousarray(bias))
        node = nodes.get(node_name)
        if node is None:
            problems.append(f'{path}: graph node {node_name!r} missing')
            continue
        if node['op'] != '_FusedConv2D' or _fused_ops(node) != fused:
            problems.append(f'{path}: node {node["op"]} fused {_fused_ops(node)}, expected _FusedConv2D {fused}')
        if kind == 'conv':
            if _inputs(node)[:3] != [input_name, *names]:
                problems.append(f'{path}: inputs {_inputs(node)[:3]}, expected [{input_name!r}, weights, bias]')
        else:
            depthwise = nodes.get(_inputs(node)[0]) if _inputs(node) else None
            if depthwise is None or depthwise['op'] != 'DepthwiseConv2dNative' or _inputs(depthwise)[1:2] != [names[0]]:
                problems.append(f'{path}: expected pointwise(depthwise({names[0]!r}))')
            elif input_name is not None and _inputs(depthwise)[:1] != [input_name]:
                problems.append(f'{path}: depthwise reads {_inputs(depthwise)[:1]}, expected {input_name!r}')
            if _inputs(node)[1:3] != list(names[1:]):
                problems.append(f'{path}: pointwise inputs {_inputs(node)[1:3]}, expected {list(names[1:])}')
    _check_upsampling(graph, problems)
    used.update(f'{FPN_SCOPE}{u}/mul' for u in ('up_sampling2d', 'up_sampling2d_1', 'up_sampling2d_2'))
    unused = sorted(k for k in weights if k.startswith(FPN_SCOPE) and not k.startswith(MOVENET_MODEL_SCOPE)
                    and k not in used)
    unused += sorted(k for k in weights if k.startswith(NECK_SCOPE) and k not in used)
    if unused:
        problems.append(f'{len(unused)} pyramid weights not used: {unused[:6]}')
    for key, value in out.items():
        if key not in module_shapes:
            problems.append(f'{key}: not an entry of the module')
        elif tuple(value.shape) != module_shapes[key]:
            problems.append(f'{key}: source shape {tuple(value.shape)} vs module {module_shapes[key]}')
    missing = sorted(set(module_shapes) - set(out))
    if missing:
        problems.append(f'module entries not set: {missing[:6]}')
    if problems:
        raise ValueError(f'{graph.source}: MoveNet pyramid does not match spec {spec}:\n  ' + '\n  '.join(problems))
    return out


FPN_KINDS: Dict[str, Tuple[str, MobileNetV2Spec]] = {
    'movenet-lightning-fpn': ('movenet-lightning', MOVENET_SPECS['movenet-lightning']),
    'movenet-thunder-fpn': ('movenet-thunder', MOVENET_SPECS['movenet-thunder']),
}


def load_movenet_fpn(model_json_path, kind: str = 'movenet-lightning-fpn') -> MoveNetFPN:
    """MoveNetFPN with the weights of a TFJS MoveNet file."""
    from metrabs_ros.training.tfjs_reader import read_tfjs_graph_model
    if kind not in FPN_KINDS:
        raise ValueError(f'unknown MoveNet pyramid kind {kind!r}; valid: {sorted(FPN_KINDS)}')
    spec = FPN_KINDS[kind][1]
    model = MoveNetFPN(spec)
    model.load_state_dict(movenet_fpn_state_dict(read_tfjs_graph_model(model_json_path), spec), strict=True)
    return model.eval()


# --- MoveNet's keypoint logits as the initial MeTRAbs head ----------------------------------------------------

KEYPOINT_LOGITS_NODE = 'StatefulPartitionedCall/kpt_heatmap_0/conv2d_5/BiasAdd'
KEYPOINT_WEIGHT = 'StatefulPartitionedCall/kpt_heatmap_0/conv2d_5/Conv2D/ReadVariableOp'
KEYPOINT_BIAS = 'StatefulPartitionedCall/kpt_heatmap_0/conv2d_5/BiasAdd/ReadVariableOp'
# MoveNet's 17 outputs (COCO order; l/r = the person's own left/right), in our joint naming
MOVENET_KEYPOINTS = ('nose', 'leye', 'reye', 'lear', 'rear', 'lsho', 'rsho', 'lelb', 'relb', 'lwri', 'rwri',
                     'lhip', 'rhip', 'lkne', 'rkne', 'lank', 'rank')
# our joints that MoveNet does not output: a weighted mix of the logits of the keypoints around them (a starting
# point only; training moves them to where the joint is)
_MIXED_JOINTS = {
    'pelv': {'lhip': 0.5, 'rhip': 0.5},
    'spi1': {'lhip': 0.35, 'rhip': 0.35, 'lsho': 0.15, 'rsho': 0.15},
    'spi2': {'lhip': 0.25, 'rhip': 0.25, 'lsho': 0.25, 'rsho': 0.25},
    'spin': {'lhip': 0.25, 'rhip': 0.25, 'lsho': 0.25, 'rsho': 0.25},
    'spi3': {'lhip': 0.15, 'rhip': 0.15, 'lsho': 0.35, 'rsho': 0.35},
    'neck': {'lsho': 0.5, 'rsho': 0.5},
    'lcla': {'lsho': 0.65, 'rsho': 0.35}, 'rcla': {'rsho': 0.65, 'lsho': 0.35},
    'head': {'nose': 0.34, 'lear': 0.33, 'rear': 0.33},
    'htop': {'leye': 0.25, 'reye': 0.25, 'lear': 0.25, 'rear': 0.25},
    'ltoe': {'lank': 1.0}, 'rtoe': {'rank': 1.0}, 'lhan': {'lwri': 1.0}, 'rhan': {'rwri': 1.0},
}


def keypoint_mix(joint: str) -> Dict[str, float]:
    """MoveNet keypoints (and weights summing to 1) whose logits start the heatmap of our joint `joint` (a name
    without the format suffix); {} for joints we have no rule for."""
    if joint in MOVENET_KEYPOINTS:
        return {joint: 1.0}
    return dict(_MIXED_JOINTS.get(joint, {}))


def movenet_keypoint_logits(graph) -> Tuple[np.ndarray, np.ndarray]:
    """(weight [17, 96], bias [17]) of MoveNet's last keypoint-heatmap conv (1×1 on the neck's output, sigmoid
    logits of the COCO keypoints in MOVENET_KEYPOINTS order); checks its wiring."""
    weights, nodes = graph.weights, graph.nodes_by_name
    node = nodes.get(KEYPOINT_LOGITS_NODE)
    if KEYPOINT_WEIGHT not in weights or KEYPOINT_BIAS not in weights or node is None:
        raise ValueError(f'{graph.source}: MoveNet keypoint logits ({KEYPOINT_LOGITS_NODE}) not found')
    if _inputs(node)[:3] != [NECK_FEATURE_NODE, KEYPOINT_WEIGHT, KEYPOINT_BIAS] or _fused_ops(node) != ['BiasAdd']:
        raise ValueError(f'{graph.source}: {KEYPOINT_LOGITS_NODE} is not a 1x1 conv + bias on {NECK_FEATURE_NODE}')
    kernel = np.asarray(weights[KEYPOINT_WEIGHT], np.float32)
    if kernel.shape != (1, 1, NECK_WIDTH, len(MOVENET_KEYPOINTS)):
        raise ValueError(f'{graph.source}: keypoint logits kernel {kernel.shape}, expected '
                         f'(1, 1, {NECK_WIDTH}, {len(MOVENET_KEYPOINTS)})')
    return kernel[0, 0].T.copy(), np.asarray(weights[KEYPOINT_BIAS], np.float32).copy()


def keypoint_head_init(weight: np.ndarray, bias: np.ndarray, joint_names: Sequence[str], depth_bins: int,
                       sharpen: float = 1.0):
    """Initial MeTRAbs head (layout of metrabs_ros.training.heads: 2D logits of each point, then depth bin d of
    point j at P + d·P + j) from MoveNet's keypoint logits: every point's 2D map and each of its depth bins get the
    (mixed) keypoint logits × `sharpen`, so the 3D x/y start where MoveNet puts the joint and the depth starts flat.
    joint_names: raw names '<joint>.<format>' (or bare). Returns (conv weight [P·(1+D), 96], bias [P·(1+D)],
    mask [P] of the points that got an initialisation)."""
    index = {k: i for i, k in enumerate(MOVENET_KEYPOINTS)}
    p = len(joint_names)
    w_out = np.zeros((p * (1 + depth_bins), weight.shape[1]), np.float32)
    b_out = np.zeros(p * (1 + depth_bins), np.float32)
    mask = np.zeros(p, bool)
    for j, name in enumerate(joint_names):
        mix = keypoint_mix(name.split('.')[0])
        if not mix:
            continue
        w = sum(f * weight[index[k]] for k, f in mix.items()) * sharpen
        b = sum(f * bias[index[k]] for k, f in mix.items()) * sharpen
        for c in [j] + [p + d * p + j for d in range(depth_bins)]:
            w_out[c], b_out[c] = w, b
        mask[j] = True
    return w_out, b_out, mask


__all__: Sequence[str] = ('MoveNetFPN', 'FPN_KINDS', 'movenet_fpn_state_dict', 'load_movenet_fpn',
                          'FPN_FEATURE_NODE', 'NECK_FEATURE_NODE', 'MOVENET_KEYPOINTS', 'keypoint_mix',
                          'movenet_keypoint_logits', 'keypoint_head_init')
