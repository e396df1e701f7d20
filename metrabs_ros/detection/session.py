"""Opening the ONNX Runtime session of a detector, with clear errors (via :mod:`metrabs_ros.onnx_backend`)."""

from __future__ import annotations

import os
from pathlib import Path

from metrabs_ros.onnx_backend import create_session


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
        return create_session(path, providers=providers, num_threads=num_threads), str(path)
    except ValueError:
        raise  # onnx_backend.ModelLoadError names the file
    except Exception as error:
        raise ValueError(f'{path}: cannot be loaded as an ONNX model ({type(error).__name__}: {error})') from error
