"""ONNX Runtime backend: provider selection and load errors (real onnxruntime)."""

import logging

import onnxruntime
import pytest

from metrabs_ros.onnx_backend import ModelLoadError, create_session, select_providers


def test_auto_prefers_gpu_providers_when_present_and_always_ends_with_cpu():
    providers = select_providers('auto')
    available = onnxruntime.get_available_providers()
    assert providers[-1] == 'CPUExecutionProvider'
    assert ('CUDAExecutionProvider' in providers) == ('CUDAExecutionProvider' in available)


def test_missing_gpu_provider_falls_back_with_a_logged_reason(caplog):
    if 'CUDAExecutionProvider' in onnxruntime.get_available_providers():
        pytest.skip('this onnxruntime build has CUDA')
    with caplog.at_level(logging.WARNING):
        assert select_providers('cuda') == ['CPUExecutionProvider']
    assert 'CUDAExecutionProvider' in caplog.text and 'falling back' in caplog.text


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValueError, match='valid backends: auto, onnxruntime'):
        select_providers('tensorflow')


def test_session_options_and_errors(tmp_path, fixture_pose_model):
    session = create_session(fixture_pose_model, num_threads=1, backend='cpu')
    assert session.get_providers() == ['CPUExecutionProvider']
    empty = tmp_path / 'empty.onnx'
    empty.write_bytes(b'')
    with pytest.raises(ModelLoadError, match='empty'):
        create_session(empty)
    with pytest.raises(ModelLoadError, match='not found'):
        create_session(tmp_path / 'nope.onnx')
