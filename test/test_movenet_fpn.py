"""MoveNet's feature pyramid as a stride-4 MeTRAbs backbone (metrabs_ros.training.movenet_fpn): strict loading and
parity with an independent forward — the numpy TF-graph interpreter (tf_graph_numpy, float64) running a source-style
TFJS graph (fixture written here, MoveNet's node and weight names, float16 weights) or the real MoveNet file when
the npm archive has been fetched (skipped otherwise)."""
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from metrabs_ros.training.backbones import Backbone  # noqa: E402
from metrabs_ros.training.movenet_backbone import MOVENET_MODEL_SCOPE, movenet_input_uint8  # noqa: E402
from metrabs_ros.training.movenet_fpn import (FPN_KINDS, FPN_SCOPE, KEYPOINT_BIAS,  # noqa: E402
                                              KEYPOINT_LOGITS_NODE, KEYPOINT_WEIGHT, MOVENET_KEYPOINTS,
                                              NECK_FEATURE_NODE, MoveNetFPN, keypoint_head_init,
                                              movenet_fpn_state_dict, movenet_keypoint_logits)
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
    # MoveNet's keypoint logits (17 COCO keypoints) on the neck
    w = rand(KEYPOINT_WEIGHT, (1, 1, 96, 17))
    b = rand(KEYPOINT_BIAS, (17,), 0.5)
    nodes.append(_fused(KEYPOINT_LOGITS_NODE, [NECK_FEATURE_NODE, w, b], relu=False))
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


# --- MoveNet's keypoint logits as the head's start --------------------------------------------------------------

def test_keypoint_logits_are_read_with_their_wiring_and_reproduce_the_graph(tmp_path):
    graph = read_tfjs_graph_model(fpn_fixture(tmp_path))
    weight, bias = movenet_keypoint_logits(graph)
    assert weight.shape == (17, 96) and bias.shape == (17,)
    crops = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (1, 3, INPUT_PX, INPUT_PX)) / 255.0)
    neck = _reference(graph, crops)[0]                                     # [96, h, w]
    logits = run_graph(graph, {'input': movenet_input_uint8(crops)[0][None]}, [KEYPOINT_LOGITS_NODE])[0][0]
    np.testing.assert_allclose(np.einsum('kc,chw->hwk', weight, neck) + bias, logits, atol=1e-9)


def test_head_init_places_each_point_where_its_keypoints_logits_put_it():
    """The decoded 2D and 3D x/y of a point equal an independent soft-argmax of (mixed) keypoint logits; the depth
    starts flat (expectation at the middle of the cube); points without a rule are not touched."""
    from metrabs_ros.training.heads import MetrabsHead
    rng = np.random.default_rng(4)
    weight, bias = rng.normal(size=(17, 96)).astype(np.float32), rng.normal(size=17).astype(np.float32)
    names = ['lsho.coco_19', 'pelv.smpl_24', 'mystery.x', 'rank.h36m_17']
    depth_bins, sharpen, res = 8, 3.0, 64
    w, b, mask = keypoint_head_init(weight, bias, names, depth_bins, sharpen)
    assert mask.tolist() == [True, True, False, True]
    head = MetrabsHead(96, len(names), res, depth_bins, stride=4)
    with torch.no_grad():
        head.conv.weight.copy_(torch.from_numpy(w)[:, :, None, None])
        head.conv.bias.copy_(torch.from_numpy(b))
    features = rng.normal(size=(1, 96, 16, 16)).astype(np.float32)
    with torch.no_grad():
        c2, c3, _ = head(torch.from_numpy(features))
    k = {n: i for i, n in enumerate(MOVENET_KEYPOINTS)}

    def soft_argmax_px(logits):                  # independent: numpy softmax, grid i/(n-1) * L + stride/2
        p = np.exp(logits - logits.max())
        p /= p.sum()
        grid = np.arange(16) / 15.0 * (res - 1 - (res - 1) % 4) + 2.0
        return np.array([(p.sum(0) * grid).sum(), (p.sum(1) * grid).sum()])

    def keypoint_logits(mix):
        return sum(f * (np.einsum('c,chw->hw', weight[k[n]], features[0]) + bias[k[n]]) for n, f in mix.items())

    for j, mix in ((0, {'lsho': 1.0}), (1, {'lhip': 0.5, 'rhip': 0.5}), (3, {'rank': 1.0})):
        expected = soft_argmax_px(sharpen * keypoint_logits(mix))
        np.testing.assert_allclose(c2[0, j].numpy(), expected, atol=1e-3)
        np.testing.assert_allclose(c3[0, j, :2].numpy(), expected * 2200.0 / res, atol=0.05)
        assert abs(float(c3[0, j, 2]) - 1100.0) < 1e-2      # flat depth: the middle of the 2.2 m cube
    assert not w[2].any() and not w[len(names) + 2].any()


def test_training_starts_the_head_from_the_converted_keypoint_logits(tmp_path):
    from metrabs_ros.training import train_pose as tp
    from metrabs_ros.training.checkpoint import graph_from_config
    from metrabs_ros.training.pretrained_weights import BACKBONE_WEIGHTS_FORMAT
    graph = read_tfjs_graph_model(fpn_fixture(tmp_path / 'src'))
    weight, bias = movenet_keypoint_logits(graph)
    path = tmp_path / 'weights.pt'
    torch.save({'format': BACKBONE_WEIGHTS_FORMAT, 'kind': 'movenet-lightning-fpn',
                'state_dict': movenet_fpn_state_dict(graph, TINY_SPEC), 'provenance': {'package': 'fixture'},
                'keypoint_logits': {'weight': torch.from_numpy(weight), 'bias': torch.from_numpy(bias),
                                    'names': list(MOVENET_KEYPOINTS)}}, path)
    cfg = tp.load_config(None, {'model': {'backbone': 'movenet-lightning-fpn', 'resolution': 64,
                                          'head_init': 'movenet-keypoints', 'head_init_sharpen': 2.0}})
    layout = tp.joint_layout(cfg)
    g = graph_from_config(tp.model_config(cfg, layout))
    g.backbone = MoveNetFPN(TINY_SPEC)          # the fixture's narrow trunk; the pyramid and neck widths are MoveNet's
    cfg['model']['backbone_weights'] = str(path)
    messages = []
    tp._prepare_backbone(g, cfg, messages.append)
    w, b, mask = keypoint_head_init(weight, bias, g.joint_names, g.head.depth_bins, 2.0)
    assert mask.all() and any('60/60 points' in m for m in messages)
    np.testing.assert_allclose(g.head.conv.weight[:, :, 0, 0].detach().numpy(), w)
    np.testing.assert_allclose(g.head.conv.bias.detach().numpy(), b)
