"""FP16 emulation of pose graphs (metrabs_ros.training.fp16_numerics): the rounding it inserts equals numpy's
float16 rounding, overflow is reported, the stage split follows the operators, and the measurement runs through
the library pipeline. The FP16 table itself (docs/gpu.md) comes from `metrabs-ros fp16-numerics` on data-engine
scenes; here only small synthetic inputs."""
import numpy as np
import pytest

onnx = pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from metrabs_ros.camera import CameraModel  # noqa: E402
from metrabs_ros.training import fp16_numerics as fn  # noqa: E402


def f16(x):
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def tiny_staged_graph():
    """'/backbone/Mul' (x * 3, backbone stage) -> '/Add' (+ 1, after the backbone: reconstruct stage)."""
    nodes = [helper.make_node('Mul', ['x', 'three'], ['m'], name='/backbone/Mul'),
             helper.make_node('Add', ['m', 'one'], [fn.POSES], name='/Add')]
    graph = helper.make_graph(nodes, 'g', [helper.make_tensor_value_info('x', TensorProto.FLOAT, ['n'])],
                              [helper.make_tensor_value_info(fn.POSES, TensorProto.FLOAT, ['n'])],
                              [numpy_helper.from_array(np.array(3.0, np.float32), 'three'),
                               numpy_helper.from_array(np.array(1.0, np.float32), 'one')])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    return model


def run(model, **feeds):
    session = fn._session(model)
    names = [o.name for o in model.graph.output]
    return dict(zip(names, session.run(names, feeds)))


def test_rounding_matches_numpy_float16_and_overflow_is_seen():
    x = np.array([0.1, 1 / 3, 1000.7, 2.0e4, -3.0e4], np.float32)
    model = tiny_staged_graph()
    assert fn.node_stages(model) == ['backbone', 'reconstruct']
    out = run(fn.emulate_fp16(model, ('backbone',)), x=x)
    expected = f16(f16(x) * np.float32(3.0)) + np.float32(1.0)       # FP16 in and out of the Mul, FP32 Add
    np.testing.assert_array_equal(out[fn.POSES], expected)
    # 2e4 * 3 = 60000 <= 65504 stays finite in FP16; -3e4 * 3 = -90000 overflows to -inf
    assert np.isfinite(out[fn.POSES][3]) and out[fn.POSES][4] == -np.inf
    monitors = {k: float(v) for k, v in out.items() if k.startswith('absmax:')}
    assert monitors['absmax:backbone:m'] == pytest.approx(9.0e4)    # before rounding: the overflow is visible
    # nothing in FP16: bit-identical to the original graph
    plain = run(tiny_staged_graph(), x=x)[fn.POSES]
    np.testing.assert_array_equal(run(fn.emulate_fp16(model, ()), x=x)[fn.POSES], plain)


def test_rounding_of_a_sum_in_the_range_where_fp16_spacing_is_one():
    model = tiny_staged_graph()
    x = np.array([683.3, 700.1], np.float32)           # x * 3 in [2048, 4096): FP16 spacing 2
    out = run(fn.emulate_fp16(model, ('backbone', 'reconstruct')), x=x)[fn.POSES]
    np.testing.assert_array_equal(out, f16(f16(f16(x) * np.float32(3.0)) + np.float32(1.0)))
    assert np.all(np.abs(out - (x * 3 + 1)) <= 2.0)


def test_stages_of_an_exported_pose_graph(fixture_pose_model):
    model = onnx.load(fixture_pose_model)
    stages = dict(zip((n.op_type + ' ' + n.name for n in model.graph.node), fn.node_stages(model)))
    by_op = {}
    for key, stage in stages.items():
        by_op.setdefault(key.split(' ')[0], set()).add(stage)
    assert by_op['GridSample'] == {'warp'}
    assert by_op['Softmax'] == {'decode'}
    assert stages['Conv /head/conv/Conv'] == 'head'
    assert {s for k, s in stages.items() if k.startswith('Conv /backbone/')} == {'backbone'}
    producer = next(n for n in model.graph.node if 'poses3d_aug_mm' in n.output)
    assert stages[producer.op_type + ' ' + producer.name] == 'reconstruct'


def synthetic_frames(n=2, hw=(240, 320), seed=0):
    rng = np.random.default_rng(seed)
    camera = CameraModel.create(image_hw=hw, fov_degrees=60)
    for _ in range(n):
        image = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
        sizes = rng.uniform(80, 150, 2)
        boxes = np.stack([rng.uniform(0, hw[1] - sizes), rng.uniform(0, hw[0] - sizes), sizes * 0.6, sizes], 1)
        yield image, camera, boxes


def test_measure_through_the_pipeline(fixture_pose_model):
    feeds = fn.record_feeds(fixture_pose_model, synthetic_frames(), num_aug=2)
    assert len(feeds) == 2 and feeds[0]['image'].shape == (240, 320, 3)     # full frames, as on the GPU
    variants = {'none': (), 'export': fn.EXPORT_SPLIT}
    report = fn.measure(fixture_pose_model, feeds, variants=variants)
    none, export = report['variants']['none'], report['variants']['export']
    assert none['max_mm'] == 0.0 and none['num_overflowed_tensors'] == 0
    assert export['non_finite'] == 0 and 0.0 < export['max_mm'] < 50.0
    assert export['joints'] == 2 * 2 * 2 * 24                              # frames x people x aug x joints
    assert set(export['max_abs_before_rounding']) == {'backbone', 'head'}
    assert '| export |' in fn.format_table(report)


def test_fp16_converted_graph_computes_the_stage_in_float16():
    x = np.array([0.1, 1 / 3, 1000.7, 2.0e4], np.float32)
    converted = fn.convert_to_fp16(tiny_staged_graph(), ('backbone',))
    onnx.checker.check_model(converted, full_check=True)
    types = {t.name: t.data_type for t in converted.graph.initializer}
    assert types == {'three': TensorProto.FLOAT16, 'one': TensorProto.FLOAT}
    import onnxruntime as ort
    got = ort.InferenceSession(converted.SerializeToString()).run(None, {'x': x})[0]
    assert got.dtype == np.float32
    # ONNX Runtime's CPU provider computes FP16 nodes it has no FP16 kernel for in FP32 (it casts around them and
    # may drop the rounding between): the result lies within FP16 rounding of the exact value, not bit-exact.
    exact = x.astype(np.float64) * 3 + 1
    np.testing.assert_allclose(got, exact, rtol=2.0 ** -10, atol=1e-6)
