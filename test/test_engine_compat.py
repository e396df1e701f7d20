"""Static TensorRT compatibility check (metrabs_ros.gpu.engine_compat) and the exact export rewrites it asked for
(metrabs_ros.gpu.trt_graph_fixes).

1. Rules on hand-built graphs: each graph breaks exactly one documented rule (or none), so the expected finding is
   known by construction.
2. Every graph we ship, export or import: no unsupported finding (the shipped models are found by globbing, so a
   replaced model is checked too).
3. The rewrites compute what the original graph computes (ONNX Runtime on both, and a numpy statement of the
   antialiased resize weights).
"""
import glob
import os

import numpy as np
import pytest

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from metrabs_ros.cli import main  # noqa: E402
from metrabs_ros.gpu.engine_compat import check_model, format_report  # noqa: E402
from metrabs_ros.gpu.trt_graph_fixes import cast_uint8_inputs_first, replace_antialiased_resize  # noqa: E402

MODELS_DIR = os.path.join(os.path.dirname(__file__), '..', 'metrabs_ros', 'models')


def make(nodes, inputs, outputs, inits=(), opset=17, domains=()):
    graph = helper.make_graph(nodes, 'g', inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)] +
                              [helper.make_opsetid(d, 1) for d in domains])
    model.ir_version = 8
    return model


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def image_nchw(name='x'):
    return vi(name, TensorProto.FLOAT, [1, 3, 'H', 'W'])


def rules_of(model, severity):
    return check_model(model, as_built=False).rules(severity)


# ------------------------------------------------------------------------------------------------ rules, by hand
def test_clean_graph_has_no_findings_beyond_the_profile_note():
    model = make([helper.make_node('Relu', ['x'], ['y'])], [image_nchw()], [image_nchw('y')])
    report = check_model(model, as_built=False)
    assert report.ok and not report.limited
    assert report.rules() == {'dynamic-input'}


def test_resize_antialias_cubic_and_crop_mode():
    def resize(**attrs):
        node = helper.make_node('Resize', ['x', '', 's'], ['y'], **attrs)
        scales = numpy_helper.from_array(np.array([1, 1, 0.5, 0.5], np.float32), 's')
        return make([node], [image_nchw()], [image_nchw('y')], [scales], opset=18)

    assert 'resize-antialias' in rules_of(resize(mode='linear', antialias=1), 'unsupported')
    assert check_model(resize(mode='linear'), as_built=False).ok
    assert 'resize-coordinate-mode' in rules_of(
        resize(mode='linear', coordinate_transformation_mode='tf_crop_and_resize'), 'unsupported')
    assert 'resize-mode' in rules_of(resize(mode='cubic'), 'limited')
    assert 'resize-aspect-policy' in rules_of(resize(mode='nearest', keep_aspect_ratio_policy='not_larger'),
                                              'unsupported')


@pytest.mark.parametrize('mode, opset, ok', [('bilinear', 16, True), ('nearest', 17, True), ('bicubic', 17, True),
                                             ('linear', 20, False), ('cubic', 20, False)])
def test_gridsample_mode_names(mode, opset, ok):
    node = helper.make_node('GridSample', ['x', 'grid'], ['y'], mode=mode, align_corners=1)
    model = make([node], [image_nchw(), vi('grid', TensorProto.FLOAT, [1, 'h', 'w', 2])],
                 [vi('y', TensorProto.FLOAT, [1, 3, 'h', 'w'])], opset=opset)
    assert ('gridsample-mode' not in check_model(model, as_built=False).rules('unsupported')) == ok


def test_gridsample_5d_is_unsupported():
    node = helper.make_node('GridSample', ['x', 'grid'], ['y'], mode='linear')
    model = make([node], [vi('x', TensorProto.FLOAT, [1, 3, 4, 5, 6]), vi('grid', TensorProto.FLOAT, [1, 2, 3, 4, 3])],
                 [vi('y', TensorProto.FLOAT, [1, 3, 2, 3, 4])], opset=20)
    assert 'gridsample-rank' in rules_of(model, 'unsupported')


def test_uint8_only_at_the_boundary():
    transpose = helper.make_node('Transpose', ['img'], ['t'], perm=[2, 0, 1])
    cast = helper.make_node('Cast', ['t'], ['y'], to=TensorProto.FLOAT)
    model = make([transpose, cast], [vi('img', TensorProto.UINT8, ['H', 'W', 3])],
                 [vi('y', TensorProto.FLOAT, [3, 'H', 'W'])])
    assert {'uint8-input', 'uint8-internal'} <= rules_of(model, 'unsupported')
    # Cast and Shape may read the UINT8 input
    shape = helper.make_node('Shape', ['img'], ['s'])
    cast = helper.make_node('Cast', ['img'], ['y'], to=TensorProto.FLOAT)
    model = make([shape, cast], [vi('img', TensorProto.UINT8, ['H', 'W', 3])],
                 [vi('y', TensorProto.FLOAT, ['H', 'W', 3]), vi('s', TensorProto.INT64, [3])])
    assert check_model(model, as_built=False).ok


def test_type_matrix_int64_matmul_double_and_int16():
    matmul = helper.make_node('MatMul', ['a', 'b'], ['y'])
    model = make([matmul], [vi('a', TensorProto.INT64, [2, 2]), vi('b', TensorProto.INT64, [2, 2])],
                 [vi('y', TensorProto.INT64, [2, 2])])
    assert 'op-type' in rules_of(model, 'unsupported')
    add = helper.make_node('Add', ['a', 'b'], ['y'])             # INT64 Add is in the matrix
    model = make([add], [vi('a', TensorProto.INT64, [2]), vi('b', TensorProto.INT64, [2])],
                 [vi('y', TensorProto.INT64, [2])])
    assert check_model(model, as_built=False).ok
    model = make([helper.make_node('Cast', ['a'], ['y'], to=TensorProto.DOUBLE)],
                 [vi('a', TensorProto.FLOAT, [2])], [vi('y', TensorProto.DOUBLE, [2])])
    assert 'double' in rules_of(model, 'limited') and check_model(model, as_built=False).ok
    model = make([helper.make_node('Identity', ['a'], ['y'])],
                 [vi('a', TensorProto.INT16, [2])], [vi('y', TensorProto.INT16, [2])])
    assert 'tensor-type' in rules_of(model, 'unsupported')


def test_unsupported_operator_plugin_and_opset():
    model = make([helper.make_node('Det', ['a'], ['y'])], [vi('a', TensorProto.FLOAT, [3, 3])],
                 [vi('y', TensorProto.FLOAT, [])])
    assert 'op-unsupported' in rules_of(model, 'unsupported')
    model = make([helper.make_node('EfficientNMS_TRT', ['a'], ['y'], domain='trt.plugins')],
                 [vi('a', TensorProto.FLOAT, [3])], [vi('y', TensorProto.FLOAT, [3])], domains=['trt.plugins'])
    assert 'plugin' in rules_of(model, 'unsupported')
    relu = [helper.make_node('Relu', ['a'], ['y'])]
    io = ([vi('a', TensorProto.FLOAT, [3])], [vi('y', TensorProto.FLOAT, [3])])
    assert 'opset-range' in rules_of(make(relu, *io, opset=8), 'unsupported')
    assert 'opset-range' in rules_of(make(relu, *io, opset=22), 'limited')


def test_topk_k_limit_and_data_dependent_shapes():
    def topk(k):
        node = helper.make_node('TopK', ['x', 'k'], ['v', 'i'])
        return make([node], [vi('x', TensorProto.FLOAT, [1, 5000])],
                    [vi('v', TensorProto.FLOAT, [1, k]), vi('i', TensorProto.INT64, [1, k])],
                    [numpy_helper.from_array(np.array([k], np.int64), 'k')])

    assert check_model(topk(100), as_built=False).ok
    assert 'topk-k' in rules_of(topk(4000), 'unsupported')
    nonzero = helper.make_node('NonZero', ['x'], ['y'])
    model = make([nonzero], [vi('x', TensorProto.FLOAT, [4, 4])], [vi('y', TensorProto.INT64, [2, 'n'])])
    assert 'data-dependent-shape' in rules_of(model, 'limited') and check_model(model, as_built=False).ok
    # a Reshape whose target shape is computed from tensor values (not from shapes) is data-dependent too
    cast = helper.make_node('Cast', ['x'], ['xi'], to=TensorProto.INT64)
    reshape = helper.make_node('Reshape', ['y0', 'xi'], ['y'])
    model = make([cast, reshape], [vi('x', TensorProto.FLOAT, [2]), vi('y0', TensorProto.FLOAT, [6])],
                 [vi('y', TensorProto.FLOAT, ['a', 'b'])])
    assert 'data-dependent-shape' in rules_of(model, 'limited')


def test_reduce_axes_must_be_constant_and_loop_is_limited():
    node = helper.make_node('ReduceSum', ['x', 'axes'], ['y'])
    model = make([node], [vi('x', TensorProto.FLOAT, [2, 3]), vi('axes', TensorProto.INT64, [1])],
                 [vi('y', TensorProto.FLOAT, [2, 1])])
    assert 'constant-input' in rules_of(model, 'unsupported')
    body = helper.make_graph([helper.make_node('Identity', ['cond_in'], ['cond_out']),
                              helper.make_node('Add', ['v_in', 'v_in'], ['v_out'])], 'body',
                             [vi('i', TensorProto.INT64, []), vi('cond_in', TensorProto.BOOL, []),
                              vi('v_in', TensorProto.FLOAT, [2])],
                             [vi('cond_out', TensorProto.BOOL, []), vi('v_out', TensorProto.FLOAT, [2])])
    loop = helper.make_node('Loop', ['n', '', 'v'], ['v_final'], body=body)
    model = make([loop], [vi('v', TensorProto.FLOAT, [2])], [vi('v_final', TensorProto.FLOAT, [2])],
                 [numpy_helper.from_array(np.array(3, np.int64), 'n')])
    report = check_model(model, as_built=False)
    assert 'control-flow' in report.rules('limited') and report.ok
    assert report.num_nodes == 3      # the loop body is walked


# ------------------------------------------------------------------------------------- the graphs we ship or make
SHIPPED = sorted(glob.glob(os.path.join(MODELS_DIR, '*.onnx')))


@pytest.mark.parametrize('path', SHIPPED, ids=[os.path.basename(p) for p in SHIPPED])
def test_shipped_models_have_no_unsupported_finding(path):
    report = check_model(path)          # as build-engine hands it to TensorRT
    assert report.ok, format_report(report)


def test_shipped_detector_keeps_the_fast_resize_and_is_rewritten_for_tensorrt(tmp_path):
    """The CPU file keeps ONNX Runtime's antialiased Resize; the graph build-engine parses has none, and computes
    the same boxes in ONNX Runtime."""
    import onnxruntime as ort

    from metrabs_ros.gpu.trt_builder import tensorrt_graph_path
    detector = os.path.join(MODELS_DIR, 'detector_default.onnx')
    assert 'resize-antialias' in check_model(detector, as_built=False).rules('unsupported')
    rewritten = tensorrt_graph_path(detector, tmp_path, log=lambda *_: None)
    assert rewritten != detector and check_model(rewritten, as_built=False).ok
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    outs = [ort.InferenceSession(p, providers=['CPUExecutionProvider']).run(None, {'image': image})
            for p in (detector, rewritten)]
    np.testing.assert_allclose(outs[0][1], outs[1][1], atol=1e-5)
    distinct = outs[0][1] > outs[0][1][-1] + 1e-4       # random-noise candidates tie near the top-K end
    np.testing.assert_allclose(outs[0][0][distinct], outs[1][0][distinct], atol=2e-3)


def test_cli_exit_codes(tmp_path, capsys):
    assert SHIPPED and main(['check-engine-compat', *SHIPPED, '--json', str(tmp_path / 'r.json')]) == 0
    bad = make([helper.make_node('Det', ['a'], ['y'])], [vi('a', TensorProto.FLOAT, [3, 3])],
               [vi('y', TensorProto.FLOAT, [])])
    onnx.save(bad, tmp_path / 'bad.onnx')
    assert main(['check-engine-compat', str(tmp_path / 'bad.onnx')]) == 1
    assert 'op-unsupported' in capsys.readouterr().out


@pytest.fixture(scope='module')
def exported_backbone_models(tmp_path_factory):
    """EfficientNetV2-S and MobileNetV3-Small pose graphs (random weights, 64 px crops) through the deployment
    export, FP32 and FP16."""
    torch = pytest.importorskip('torch')
    from metrabs_ros.training.backbones import Backbone
    from metrabs_ros.training.export import contract_metadata, export_for_deployment
    from metrabs_ros.training.pose_graph import build_pose_graph

    out = tmp_path_factory.mktemp('compat')
    paths = []
    torch.manual_seed(0)
    for kind in ('efficientnetv2-s', 'mobilenetv3-small'):
        graph = build_pose_graph(['pelv', 'lhip', 'rhip', 'neck'], resolution=64, backbone=Backbone(kind))
        meta = contract_metadata(graph, name=kind)
        for fp16 in (False, True):
            path = out / f'{kind}{"_fp16" if fp16 else ""}.onnx'
            export_for_deployment(graph.eval(), path, meta, fp16=fp16, parity=False, log=lambda *_: None)
            paths.append(path)
    return paths


@pytest.mark.slow
def test_exported_efficientnet_and_mobilenet_models(exported_backbone_models):
    for path in exported_backbone_models:
        report = check_model(path)
        assert report.ok, format_report(report)
        assert 'uint8-input' not in report.rules()
    fp16 = onnx.load(exported_backbone_models[1])
    assert any(n.op_type == 'Cast' and n.attribute[0].i == TensorProto.FLOAT16 for n in fp16.graph.node)


@pytest.mark.slow
def test_import_official_style_model(tmp_path):
    pytest.importorskip('torch')
    pytest.importorskip('yaml')
    from test_import_official import write_official_folder

    from metrabs_ros.training.import_official import import_official
    folder = write_official_folder(tmp_path / 'metrabs_eff2s_96px_fixture_pytorch')
    out = tmp_path / 'official.onnx'
    import_official(folder, out, parity=False, log=lambda *_: None)
    report = check_model(out)
    assert report.ok, format_report(report)


def test_detector_adapter_fixtures(tmp_path, colour_key_detector):
    from test_detection import end2end_model, native_model, yolo_model
    paths = [yolo_model(tmp_path, fmt, (640, 480)) for fmt in ('yolov5', 'yolov8', 'yolox')]
    paths += [end2end_model(tmp_path, style, (640, 480)) for style in ('named', 'efficient_nms', 'dets_labels',
                                                                       'single')]
    paths += [native_model(tmp_path, (640, 480), {'metrabs_ros.contract': 'detector/1'}), colour_key_detector]
    for path in paths:
        report = check_model(path)
        assert report.ok, format_report(report)


# ------------------------------------------------------------------------------------------------ exact rewrites
def resize_weights(n_in, n_out):
    """Numpy statement of ONNX Resize(linear, half_pixel, antialias=1) along one axis, border taps clamped."""
    scale = n_out / n_in
    support = max(1.0, 1.0 / scale)
    out = np.zeros([n_out, n_in])
    for i in range(n_out):
        centre = (i + 0.5) / scale - 0.5
        taps = np.arange(int(np.floor(centre - support)), int(np.ceil(centre + support)) + 1)
        w = np.clip(1.0 - np.abs(taps - centre) / support, 0.0, None)
        for t, wt in zip(taps, w / w.sum()):
            out[i, min(max(t, 0), n_in - 1)] += wt
    return out


def antialiased_resize_model():
    node = helper.make_node('Resize', ['x', '', '', 'sizes'], ['y'], mode='linear',
                            coordinate_transformation_mode='half_pixel', antialias=1)
    return make([node], [image_nchw(), vi('sizes', TensorProto.INT64, [4])],
                [vi('y', TensorProto.FLOAT, [1, 3, 'h', 'w'])], opset=18)


@pytest.mark.parametrize('hw, new_hw', [((48, 64), (24, 32)), ((37, 61), (10, 17)), ((20, 30), (20, 30)),
                                        ((10, 12), (25, 31))])
def test_antialiased_resize_rewrite_is_exact(hw, new_hw):
    original = antialiased_resize_model()
    rewritten = replace_antialiased_resize(antialiased_resize_model())
    onnx.checker.check_model(rewritten, full_check=True)
    assert check_model(rewritten, as_built=False).ok and not check_model(original, as_built=False).ok
    x = np.random.default_rng(0).uniform(0, 255, (1, 3) + hw).astype(np.float32)
    feeds = {'x': x, 'sizes': np.array([1, 3, *new_hw], np.int64)}
    got = ort.InferenceSession(rewritten.SerializeToString()).run(None, feeds)[0]
    ref_ort = ort.InferenceSession(original.SerializeToString()).run(None, feeds)[0]
    ref_np = np.einsum('yh,chw,xw->cyx', resize_weights(hw[0], new_hw[0]), x[0].astype(np.float64),
                       resize_weights(hw[1], new_hw[1]), optimize=True)
    assert got.shape == ref_ort.shape == (1, 3) + new_hw
    np.testing.assert_allclose(got[0], ref_np, atol=2e-3)      # 0..255 values, float32 weights
    np.testing.assert_allclose(got, ref_ort, atol=2e-3)


def test_cast_uint8_first_rewrite_is_exact():
    nodes = [helper.make_node('Transpose', ['img'], ['t'], perm=[2, 0, 1]),
             helper.make_node('Unsqueeze', ['t', 'axis0'], ['u']),
             helper.make_node('Cast', ['u'], ['y'], to=TensorProto.INT32)]
    model = make(nodes, [vi('img', TensorProto.UINT8, ['H', 'W', 3])], [vi('y', TensorProto.INT32, [1, 3, 'H', 'W'])],
                 [numpy_helper.from_array(np.array([0], np.int64), 'axis0')])
    image = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    expected = image.transpose(2, 0, 1)[None].astype(np.int32)
    fixed = cast_uint8_inputs_first(model)
    onnx.checker.check_model(fixed, full_check=True)
    assert check_model(fixed, as_built=False).ok
    got = ort.InferenceSession(fixed.SerializeToString()).run(None, {'img': image})[0]
    assert got.dtype == np.int32 and np.array_equal(got, expected)


def test_rewrites_leave_what_they_cannot_rewrite_exactly():
    node = helper.make_node('Resize', ['x', '', '', 'sizes'], ['y'], mode='cubic', antialias=1)
    model = make([node], [image_nchw(), vi('sizes', TensorProto.INT64, [4])],
                 [vi('y', TensorProto.FLOAT, [1, 3, 'h', 'w'])], opset=18)
    with pytest.warns(UserWarning, match='left as it is'):
        replace_antialiased_resize(model)
    assert 'resize-antialias' in rules_of(model, 'unsupported')
    pad = helper.make_node('Pad', ['img', 'pads'], ['p'])       # not a layout op: no cast-first rewrite
    cast = helper.make_node('Cast', ['p'], ['y'], to=TensorProto.FLOAT)
    model = make([pad, cast], [vi('img', TensorProto.UINT8, ['H', 'W', 3])], [vi('y', TensorProto.FLOAT, None)],
                 [numpy_helper.from_array(np.zeros(6, np.int64), 'pads')])
    with pytest.warns(UserWarning, match='left as it is'):
        cast_uint8_inputs_first(model)
    assert 'uint8-input' in rules_of(model, 'unsupported')
