"""TensorRT builder and runtime on a real TensorRT (skipped where `tensorrt` does not import or no GPU is present:
no machine of this project has TensorRT, so these run on users' RTX machines)."""

import numpy as np
import pytest

trt = pytest.importorskip('tensorrt')
pytest.importorskip('cuda.bindings')

from metrabs_ros.gpu.cuda_memory import device_count  # noqa: E402

if device_count() == 0:
    pytest.skip('no CUDA device', allow_module_level=True)

from metrabs_ros.gpu.trt_builder import build_engine  # noqa: E402
from metrabs_ros.gpu.trt_runtime import TrtPoseBackend  # noqa: E402
from metrabs_ros.training.export import example_inputs, run_onnx  # noqa: E402
from metrabs_ros.training.pose_graph import INPUT_NAMES  # noqa: E402


def _build(model, cache, **kwargs):
    return build_engine(model, cache_dir=cache, max_people=4, num_augs=(1, 5), image_sizes_hw=[(120, 160)],
                        allow_windows=True, log=lambda m: None, **kwargs)


def test_engine_build_cache_and_fp32_agreement(fixture_pose_model, tmp_path):
    first = _build(fixture_pose_model, tmp_path, precision='fp32')
    assert first.built and first.engine_path.is_file()
    again = _build(fixture_pose_model, tmp_path, precision='fp32')
    assert not again.built and again.engine_path == first.engine_path
    wider = build_engine(fixture_pose_model, cache_dir=tmp_path, precision='fp32', max_people=6, num_augs=(1, 5),
                         image_sizes_hw=[(120, 160)], allow_windows=True, log=lambda m: None)
    assert wider.built and any('crop_rotations' in r for r in wider.reasons)

    backend = TrtPoseBackend(fixture_pose_model, engine_path=first.engine_path)
    for _ in range(3):  # eager, captured, replayed
        for num_people, num_aug, seed in [(2, 1, 0), (4, 5, 1), (6, 1, 2)]:  # 6 > max_people: chunked
            inputs = example_inputs(num_people, num_aug, (120, 160), seed=seed, resolution=128)
            got, = backend.run(['poses3d_aug_mm'], {n: t.numpy() for n, t in zip(INPUT_NAMES, inputs)})
            expected = run_onnx(fixture_pose_model, inputs)[0]
            assert got.shape == expected.shape
            assert np.max(np.abs(got - expected)) <= (1.0 if num_people <= 4 else 5.0)


def test_fp16_engine_within_5mm(fixture_pose_model, tmp_path):
    major = int(trt.__version__.split('.')[0])
    if major >= 11:
        pytest.skip('TensorRT 11 FP16 needs the FP16 ONNX export (covered by the export tests)')
    result = _build(fixture_pose_model, tmp_path, precision='fp16')
    backend = TrtPoseBackend(fixture_pose_model, engine_path=result.engine_path)
    inputs = example_inputs(3, 5, (120, 160), seed=3, resolution=128)
    got, = backend.run(['poses3d_aug_mm'], {n: t.numpy() for n, t in zip(INPUT_NAMES, inputs)})
    assert np.max(np.abs(got - run_onnx(fixture_pose_model, inputs)[0])) <= 5.0
