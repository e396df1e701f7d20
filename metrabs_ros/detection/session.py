"""Opening an ONNX Runtime session for a detector, with clear errors.

Uses ``metrabs_ros.onnx_backend.create_session(path, providers=None, num_threads=None)`` when that module
exists (the project's shared provider selection); otherwise a small local equivalent.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import onnxruntime as ort

_DEFAULT_PROVIDER_PREFERENCE = ('CUDAExecutionProvider', 'CPUExecutionProvider')


def default_providers():
    """CUDA when this onnxruntime build has it, then CPU (TensorRT is opt-in: it builds engines at start-up)."""
    available = ort.get_available_providers()
    return [p for p in _DEFAULT_PROVIDER_PREFERENCE if p in available] or ['CPUExecutionProvider']


def create_session_local(path, providers=None, num_threads=None) -> ort.InferenceSession:
    """``ort.InferenceSession`` with ``num_threads`` intra-op threads (None = ONNX Runtime default)."""
    options = ort.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=list(providers) if providers else default_providers())


def _session_factory():
    try:
        backend = importlib.import_module('metrabs_ros.onnx_backend')
    except ImportError:
        return create_session_local
    return getattr(backend, 'create_session', create_session_local)


def open_session(path_or_session, providers=None, num_threads=None):
    """Returns ``(session, source_text)``. Accepts a path or an existing ``InferenceSession``-like object.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (naming the file) for anything that
    ONNX Runtime cannot load."""
    if not isinstance(path_or_session, (str, os.PathLike)):
        if not (hasattr(path_or_session, 'run') and hasattr(path_or_session, 'get_outputs')):
            raise TypeError(f'expected a path to an .onnx file or an onnxruntime.InferenceSession, got '
                            f'{type(path_or_session).__name__}')
        return path_or_session, '<session>'
    path = Path(path_or_session).expanduser()
    if not path.exists():
        raise FileNotFoundError(f'detector model not found: {path}')
    if not path.is_file():
        raise ValueError(f'detector model path is not a file: {path}')
    try:
        return _session_factory()(str(path), providers=providers, num_threads=num_threads), str(path)
    except FileNotFoundError:
        raise
    except Exception as error:  # onnxruntime raises InvalidProtobuf, Fail, ... (plain Exception subclasses)
        raise ValueError(f'{path}: cannot be loaded as an ONNX model ({type(error).__name__}: {error})') from error
