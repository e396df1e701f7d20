"""Pure logic of the GPU path, tested everywhere: backend fallbacks, profile shapes, precision per TensorRT major
version, engine cache keys, parser error messages (no tensorrt, no CUDA needed)."""

import json
import logging

import pytest

from metrabs_ros.gpu import engine_cache
from metrabs_ros.gpu.backend import (BackendUnavailable, OrtPoseBackend, choose_backend, create_pose_backend,
                                     fallback_chain)
from metrabs_ros.gpu.model_description import describe_onnx, onnx_node_names
from metrabs_ros.gpu.trt_plan import (PrecisionUnavailable, UnsupportedTensorRT, format_parser_error,
                                      parse_dim_override, plan_precision, pose_dim_ranges, profile_shapes,
                                      shape_within_profile, tensorrt_major)


# --- backend selection -------------------------------------------------------------------------------------------

def test_fallback_chains():
    assert fallback_chain('auto') == ['tensorrt', 'torch-cuda', 'cuda', 'cpu']
    assert fallback_chain('tensorrt') == ['tensorrt', 'torch-cuda', 'cuda', 'cpu']
    assert fallback_chain('torch-cuda') == ['torch-cuda', 'cuda', 'cpu']
    assert fallback_chain('cuda') == ['cuda', 'cpu']
    assert fallback_chain('onnxruntime') == ['cpu']
    assert fallback_chain('cpu') == ['cpu']
    with pytest.raises(ValueError, match='valid backends'):
        fallback_chain('tpu')


def test_choose_backend_skips_with_reasons_and_strict_raises():
    reasons = {'tensorrt': 'no tensorrt module', 'torch-cuda': None, 'cuda': 'no CUDA EP'}
    sel = choose_backend('auto', reasons.get)
    assert sel.backend == 'torch-cuda'
    assert sel.skipped == (('tensorrt', 'no tensorrt module'),)
    assert any('no tensorrt module' in line for line in sel.log_lines('auto'))
    reasons['torch-cuda'] = 'no checkpoint'
    sel = choose_backend('tensorrt', reasons.get)
    assert sel.backend == 'cpu' and [s[0] for s in sel.skipped] == ['tensorrt', 'torch-cuda', 'cuda']
    with pytest.raises(BackendUnavailable, match='no tensorrt module'):
        choose_backend('tensorrt', reasons.get, strict=True)
    assert choose_backend('cpu', lambda name: 'never asked').backend == 'cpu'


def test_create_pose_backend_falls_back_to_onnxruntime_here(fixture_pose_model, caplog):
    """Real probes on this machine (no TensorRT, CPU-only torch, CPU onnxruntime): every GPU backend is skipped with
    its reason and the ONNX Runtime CPU backend is returned."""
    import onnxruntime
    if 'CUDAExecutionProvider' in onnxruntime.get_available_providers():
        pytest.skip('this onnxruntime has the CUDA EP')
    from metrabs_ros.gpu.backend import probe_tensorrt, probe_torch_cuda
    if probe_tensorrt() is None or probe_torch_cuda(fixture_pose_model) is None:
        pytest.skip('a GPU backend is usable here')
    with caplog.at_level(logging.WARNING, logger='metrabs_ros.gpu.backend'):
        backend = create_pose_backend(fixture_pose_model, 'tensorrt', num_threads=1)
    assert isinstance(backend, OrtPoseBackend) and backend.providers == ['CPUExecutionProvider']
    text = caplog.text
    assert "backend 'tensorrt' unavailable" in text and "backend 'torch-cuda' unavailable" in text
    assert 'checkpoint' in text and "-> using 'cpu'" in text
    with pytest.raises(BackendUnavailable):
        create_pose_backend(fixture_pose_model, 'torch-cuda', strict=True)


# --- profiles ----------------------------------------------------------------------------------------------------

def test_profile_shapes_from_the_contract_model(fixture_pose_model):
    description = describe_onnx(fixture_pose_model)
    ranges = pose_dim_ranges(max_people=8, num_augs=(1, 5), image_sizes_hw=[(480, 640), (1080, 1920)])
    assert ranges == {'P': (1, 3, 8), 'A': (1, 1, 5), 'H': (480, 480, 1080), 'W': (640, 640, 1920)}
    shapes = profile_shapes(description.input_dims, ranges)
    assert set(shapes) == {'image', 'crop_rotations', 'crop_intrinsics', 'pyramid_levels', 'aug_gammas',
                           'aug_flips'}  # intrinsics, distortion_* are static: no profile
    assert shapes['image'] == ((480, 640, 3), (480, 640, 3), (1080, 1920, 3))
    assert shapes['crop_rotations'] == ((1, 1, 3, 3), (3, 1, 3, 3), (8, 5, 3, 3))
    assert shapes['pyramid_levels'] == ((1, 1), (3, 1), (8, 5))
    assert shapes['aug_flips'] == ((1,), (1,), (5,))
    windows = pose_dim_ranges(4, (5,), [(480, 640)], allow_windows=True)
    assert windows['H'] == (4, 480, 480) and windows['A'] == (1, 5, 5)
    assert shape_within_profile({'crop_rotations': (9, 1, 3, 3)}, shapes) == \
        ['crop_rotations (9, 1, 3, 3) outside the engine profile (1, 1, 3, 3)..(8, 5, 3, 3)']
    assert shape_within_profile({'image': (720, 1280, 3), 'aug_gammas': (5,)}, shapes) == []


def test_profile_shapes_name_missing_ranges():
    with pytest.raises(ValueError, match="input 'images' dimension 0 is dynamic \\('batch'\\)"):
        profile_shapes({'images': ('batch', 3, 640, 640)}, {'P': (1, 1, 1)})
    assert profile_shapes({'images': ('height', 'width', 3)}, {'H': (8, 16, 32), 'W': (8, 16, 64)}) == \
        {'images': ((8, 8, 3), (16, 16, 3), (32, 64, 3))}
    assert parse_dim_override('H=240:480:1080') == ('H', (240, 480, 1080))
    assert parse_dim_override('batch=1') == ('batch', (1, 1, 1))
    with pytest.raises(ValueError, match='NAME=MIN:OPT:MAX'):
        parse_dim_override('H=1:2')
    with pytest.raises(ValueError, match='max_people'):
        pose_dim_ranges(max_people=0)


# --- precision -----------------------------------------------------------------------------------------------------

def test_precision_per_tensorrt_major_version():
    assert tensorrt_major('10.13.0.35') == 10 and tensorrt_major('11.4.1') == 11
    # TensorRT 10: the FP32 file with the FP16 builder flag (weakly typed) when no FP16 export exists
    plan = plan_precision('fp16', 10, 'm.onnx')
    assert (plan.precision, plan.strongly_typed, plan.fp16_flag, plan.onnx_path) == ('fp16', False, True, 'm.onnx')
    # ... and the FP16 export, strongly typed, when it does (both majors)
    for major in (10, 11):
        plan = plan_precision('auto', major, 'm.onnx', fp16_onnx_path='m.fp16.onnx', fp16_onnx_precision='fp16')
        assert (plan.precision, plan.strongly_typed, plan.fp16_flag, plan.onnx_path) == \
            ('fp16', True, False, 'm.fp16.onnx')
    # TensorRT 11: no builder flag exists; explicit fp16 without the FP16 export is an error naming the fix ...
    with pytest.raises(PrecisionUnavailable, match='export CHECKPOINT --fp16'):
        plan_precision('fp16', 11, 'm.onnx')
    # ... and auto falls back to FP32, strongly typed, TF32 off
    plan = plan_precision('auto', 11, 'm.onnx')
    assert (plan.precision, plan.strongly_typed, plan.fp16_flag, plan.disable_tf32) == ('fp32', True, False, True)
    assert 'building FP32' in plan.note
    plan = plan_precision('fp32', 10, 'm.onnx')
    assert (plan.precision, plan.strongly_typed, plan.disable_tf32) == ('fp32', False, True)
    # the given file is itself the FP16 export
    assert plan_precision('auto', 11, 'm.fp16.onnx', onnx_precision='fp16').strongly_typed
    with pytest.raises(PrecisionUnavailable, match='FP16 export'):
        plan_precision('fp32', 10, 'm.fp16.onnx', onnx_precision='fp16')
    with pytest.raises(UnsupportedTensorRT):
        plan_precision('fp16', 8, 'm.onnx')


# --- engine cache ---------------------------------------------------------------------------------------------

def _key(onnx_path, **changes):
    fields = dict(gpu_name='NVIDIA H100 80GB HBM3', compute_capability='9.0', tensorrt_version='10.13.0.35',
                  precision='fp16', strongly_typed=True,
                  profiles={'crop_rotations': ((1, 1, 3, 3), (3, 1, 3, 3), (8, 5, 3, 3))},
                  builder_options={'workspace_gib': 4.0})
    fields.update(changes)
    return engine_cache.EngineKey.create(onnx_path, **fields)


def test_engine_cache_hit_and_rebuild_reasons(fixture_pose_model, tmp_path):
    key = _key(fixture_pose_model)
    assert key.onnx_sha256 == engine_cache.file_sha256(fixture_pose_model) and len(key.onnx_sha256) == 64
    engine, meta = engine_cache.engine_paths(tmp_path, key)
    assert engine.name.startswith('pose-smpl24-128-' + key.onnx_sha256[:10] + '-fp16-nvidia-h100-80gb-hbm3-sm90')
    path, reasons = engine_cache.lookup(tmp_path, key)
    assert path is None and 'no cached engine' in reasons[0]
    engine_cache.store(tmp_path, key, b'serialized-engine-bytes')
    assert engine_cache.lookup(tmp_path, key) == (engine, [])
    stored = json.loads(meta.read_text())
    assert stored['tensorrt_version'] == '10.13.0.35' and stored['engine_bytes'] == 23
    # a different TensorRT version or profile maps to the same file name but does not match: rebuilt
    path, reasons = engine_cache.lookup(tmp_path, _key(fixture_pose_model, tensorrt_version='10.14.1'))
    assert path is None and reasons == ["tensorrt_version: stored '10.13.0.35' != wanted '10.14.1'"]
    wider = {'crop_rotations': ((1, 1, 3, 3), (3, 1, 3, 3), (16, 5, 3, 3))}
    path, reasons = engine_cache.lookup(tmp_path, _key(fixture_pose_model, profiles=wider))
    assert path is None and len(reasons) == 1 and 'crop_rotations' in reasons[0] and '16' in reasons[0]
    # another GPU model gets its own file
    other = _key(fixture_pose_model, gpu_name='NVIDIA GeForce RTX 4090', compute_capability='8.9')
    assert engine_cache.engine_paths(tmp_path, other)[0] != engine
    assert engine_cache.lookup(tmp_path, other)[0] is None
    assert key.timing_cache_name() == 'timing-nvidia-h100-80gb-hbm3-sm90-trt10.13.0.35.cache'


# --- parser errors ------------------------------------------------------------------------------------------------

def test_parser_error_names_node_and_op(fixture_pose_model):
    nodes = onnx_node_names(fixture_pose_model)
    index = next(i for i, (_, op) in enumerate(nodes) if op == 'GridSample')
    line = format_parser_error('unsupported mode', node_index=index, code='UNSUPPORTED_NODE', onnx_nodes=nodes)
    assert line == f"ONNX node #{index} {nodes[index][0]!r} (op GridSample): unsupported mode [UNSUPPORTED_NODE]"
    assert format_parser_error('bad', node_index=3, node_name='n3', node_op='Einsum') == \
        "ONNX node #3 'n3' (op Einsum): bad"
    assert format_parser_error('invalid graph') == 'ONNX graph: invalid graph'


def test_model_description_answers_like_a_session(fixture_pose_model):
    from metrabs_ros.model_contract import read_pose_model_info
    description = describe_onnx(fixture_pose_model)
    info = read_pose_model_info(description, fixture_pose_model)
    assert info.resolution == 128 and len(info.joint_names) == 24
    assert description.precision == 'fp32'
    assert description.input_dims['crop_rotations'] == ('P', 'A', 3, 3)
