"""MoveNet's feature pyramid as a stride-4 MeTRAbs backbone (metrabs_ros.training.movenet_fpn): strict loading and
parity with an independent forward — the numpy TF-graph interpreter (tf_graph_numpy, float64) running a source-style
TFJS graph (fixture written here, MoveNet's node and weight names, float16 weights) or the real MoveNet file when
the npm archive has been fetched (skipped otherwise)."""
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from metrabs_ros.training.backbones import Backbone  # noqa: E402
from metrabs_ros.training.movenet_backbone import MOVENET_MODEL_SCOPE, movenet_input_uint8  # noqa: E402
from metrabs_ros.training.movenet_fpn import (FPN_KINDS, FPN_SCOPE, NECK_FEATURE_NODE, MoveNetFPN,  # noqa: E402
                                              movenet_fpn_state_dict)
from metrabs_ros.training.tf_graph_numpy import run_graph  # noqa: E402
from metrabs_ros.training.tfjs_reader import read_tfjs_graph_model, write_tfjs_graph_model  # noqa: E402
from test_pretrained_backbones import MOVENET_DIR, TINY_SPEC, _s, movenet_fixture_graph  # noqa: E402

INPUT_PX = 64


def _fused(name, inputs, relu, padding='VALID'):
    ops = ['BiasAdd', 'Relu'] if relu else ['BiasAdd']
    return {'name': name, 'op': '_FusedConv2D', 'input': inputs,
            'attr': {'strides': {'list': {'i': ['1', '1', '1', '1']}}, 'padding': _s(padding),
                     'data_format': _s('NHWC'), 'fused_ops': {'list': {'s': [_s(op)['s'] for op in ops]}},
                     'num_args': {'i': '1'}}}


def _depthwise(name, inputs):
    return {'name': name, 'op': 'DepthwiseConv2dNative', 'input': inputs,
            'attr': {'strides': {'list': {'i': ['1', '1', '1', '1']}}, 'padding': _s('SAME'),
                     'data_format': _s('NHWC')}}


def fpn_fixture(directory, seed=0, drop=(), lateral16_source=9, resize_half_pixel=True):
    """A MoveNet-like TFJS graph: the tiny trunk of test_pretrained_backbones plus the pyramid and the keypoint
    head's first separable conv under MoveNet's names, random weights."""
    rng = np.random.default_rng(seed)
    nodes, weights = movenet_fixture_graph(TINY_SPEC, rng)
    # drop the trunk fixture's stand-in head (it reuses the name of the pyramid's first conv)
    nodes = [n for n in nodes if n['name'] != 'head' and not n['name'].startswith(FPN_SCOPE + 'conv2d/')]
    weights = {k: v for k, v in weights.items() if not k.startswith(FPN_SCOPE + 'conv2d/')}
    S, M = FPN_SCOPE, MOVENET_MODEL_SCOPE
    widths = {b: TINY_SPEC.blocks[b - 1][1] for b in (2, 5, 9)}

    def const(name, value):
        if name.split(S)[-1] in drop:
            return name
        weights[name] = np.asarray(value, np.float32 if np.asarray(value).dtype.kind == 'f' else np.int32)
        nodes.append({'name': name, 'op': 'Const'})
        return name

    def rand(name, shape, scale=None):
        fan_in = np.prod(shape[:-1]) if len(shape) == 4 else 1
        return const(name, rng.normal(scale=scale or np.sqrt(2.0 / fan_in), size=shape))

    def conv(prefix, x, cin, cout, relu=False):
        w = rand(f'{S}{prefix}/Conv2D/ReadVariableOp', (1, 1, cin, cout))
        b = rand(f'{S}{prefix}/BiasAdd/ReadVariableOp', (cout,), 0.1)
        nodes.append(_fused(f'{S}{prefix}/BiasAdd', [x, w, b], relu))
        return f'{S}{prefix}/BiasAdd'

    def separable(scope, out_name, x, cin, cout, pw_name, bias_name):
        dw = rand(f'{scope}/separable_conv2d/ReadVariableOp', (3, 3, cin, 1), 0.5)
        nodes.append(_depthwise(f'{scope}/separable_conv2d/depthwise', [x, dw]))
        pw = rand(pw_name, (1, 1, cin, cout))
        b = rand(bias_name, (cout,), 0.1)
        nodes.append(_fused(out_name, [f'{scope}/separable_conv2d/depthwise', pw, b], relu=True))
        return out_name

    def up(name, x, size):
        sz = const(f'{S}{name}/mul', np.array([size, size], np.int32))
        nodes.append({'name': f'{S}{name}/resize/ResizeBilinear', 'op': 'ResizeBilinear', 'input': [x, sz],
                      'attr': {'half_pixel_centers': {'b': resize_half_pixel}, 'align_corners': {'b': False}}})
        return f'{S}{name}/resize/ResizeBilinear'

    def add(name, a, b):
        nodes.append({'name': f'{S}{name}', 'op': 'AddV2', 'input': [a, b]})
        return f'{S}{name}'

    top = conv('conv2d', M + 'out_relu/Relu6', TINY_SPEC.last, 64)
    lat = conv('conv2d_1', f'{M}block_{lateral16_source}_add/add', TINY_SPEC.blocks[lateral16_source - 1][1], 64)
    x = add('tf.__operators__.add/AddV2', up('up_sampling2d', top, INPUT_PX // 16), lat)
    x = separable(S + 'separable_conv2d', S + 're_lu/Relu', x, 64, 32, S + 'separable_conv2d/separable_conv2d_weights',
                  S + 'separable_conv2d/separable_conv2d_bn_offset')
    lat = conv('conv2d_2', M + 'block_5_add/add', widths[5], 32)
    x = add('tf.__operators__.add_1/AddV2', up('up_sampling2d_1', x, INPUT_PX // 8), lat)
    x = separable(S + 'separable_conv2d_1', S + 're_lu_1/Relu', x, 32, 24,
                  S + 'separable_conv2d_1/separable_conv2d_weights', S + 'separable_conv2d_1/separable_conv2d_bn_offset')
    lat = conv('conv2d_3', M + 'block_2_add/add', widths[2], 24)
    x = add('tf.__operators__.add_2/AddV2', up('up_sampling2d_2', x, INPUT_PX // 4), lat)
    x = separable(S + 'separable_conv2d_2', S + 're_lu_2/Relu', x, 24, 24,
                  S + 'separable_conv2d_2/separable_conv2d_weights', S + 'separable_conv2d_2/separable_conv2d_bn_offset')
    n = 'StatefulPartitionedCall/kpt_heatmap_0/separable_conv2d_4'
    separable(n, NECK_FEATURE_NODE, x, 24, 96, n + '/separable_conv2d/ReadVariableOp_1',
              n + '/BiasAdd/ReadVariableOp')
    return write_tfjs_graph_model(directory, nodes, weights, name='movenet-fpn-fixture', float16=True,
                                  shard_bytes=1 << 14)


def _reference(graph, crops):
    images = movenet_input_uint8(crops)
    return np.concatenate([run_graph(graph, {'input': im[None]}, [NECK_FEATURE_NODE])[0] for im in images]
                          ).transpose(0, 3, 1, 2)


def test_pyramid_fixture_loads_strictly_and_matches_the_numpy_graph_forward(tmp_path):
    graph = read_tfjs_graph_model(fpn_fixture(tmp_path))
    model = MoveNetFPN(TINY_SPEC)
    model.load_state_dict(movenet_fpn_state_dict(graph, TINY_SPEC), strict=True)
    model.eval()
    crops = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 3, INPUT_PX, INPUT_PX)) / 255.0)
    reference = _reference(graph, crops)
    assert reference.shape == (2, 96, INPUT_PX // 4, INPUT_PX // 4) and (reference > 0).mean() > 0.05
    with torch.no_grad():
        ours64 = model.double()(crops).numpy()
        ours32 = model.float()(crops.float()).numpy()
    scale = np.abs(reference).max()
    np.testing.assert_allclose(ours64, reference, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(ours32, reference, rtol=0, atol=1e-4 * scale)
    assert model.stride == 4 and model.out_channels == 96


@pytest.mark.parametrize('change,message', [
    (dict(drop=('conv2d_2/BiasAdd/ReadVariableOp',)), 'lateral8: weights .* missing'),
    (dict(lateral16_source=10), 'lateral16: inputs'),
    (dict(resize_half_pixel=False), 'half_pixel_centers'),
])
def test_pyramid_loader_names_every_mismatch(tmp_path, change, message):
    graph = read_tfjs_graph_model(fpn_fixture(tmp_path, **change))
    with pytest.raises(ValueError, match=message):
        movenet_fpn_state_dict(graph, TINY_SPEC)


def test_pyramid_stages_cover_every_parameter_once():
    model = MoveNetFPN(TINY_SPEC)
    staged = [id(p) for stage in model.stages() for p in stage.parameters()]
    assert len(staged) == len(set(staged)) == len(list(model.parameters()))
    model.freeze_early_stages(7)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert len(frozen) == len(model.early_parameters(7)) > 0


@pytest.mark.parametrize('kind', sorted(FPN_KINDS))
def test_real_movenet_pyramid_matches_the_numpy_graph_forward(kind):
    path = MOVENET_DIR / f'{FPN_KINDS[kind][0]}.json'
    if not path.is_file():
        pytest.skip(f'{path} absent (python -m metrabs_ros.training.pretrained_weights --kind {kind})')
    graph = read_tfjs_graph_model(path)
    model = Backbone(kind)
    model.load_state_dict(movenet_fpn_state_dict(graph, FPN_KINDS[kind][1]), strict=True)
    model.eval()
    # the graph's upsampling sizes are constants for its own input size
    side = 192 if kind == 'movenet-lightning-fpn' else 256
    crops = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (1, 3, side, side)) / 255.0)
    reference = _reference(graph, crops)
    with torch.no_grad():
        ours64 = model.double()(crops).numpy()
    assert reference.shape == (1, 96, side // 4, side // 4)
    np.testing.assert_allclose(ours64, reference, rtol=0, atol=1e-5)
