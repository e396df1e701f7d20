"""ONNX Runtime sessions: execution-provider selection, session options and clear load errors."""

from __future__ import annotations

import logging
import os
from typing import List, Optional, Sequence

LOGGER = logging.getLogger(__name__)

#: Backend names accepted by the API, CLI and node, mapped to ONNX Runtime execution providers (in order).
BACKENDS = {
    'auto': None,  # TensorRT EP, then CUDA EP, then CPU: whatever this onnxruntime build offers
    'onnxruntime': ['CPUExecutionProvider'],
    'cpu': ['CPUExecutionProvider'],
    'cuda': ['CUDAExecutionProvider', 'CPUExecutionProvider'],
    'ort-tensorrt': ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider'],
}


class ModelLoadError(ValueError):
    """A model file is missing, unreadable or not a usable ONNX model."""


def available_providers() -> List[str]:
    import onnxruntime
    return list(onnxruntime.get_available_providers())


def select_providers(backend: str = 'auto') -> List[str]:
    """Execution providers for ``backend``; requested GPU providers that this build lacks are dropped with a
    logged reason (falling back to the CPU)."""
    if backend not in BACKENDS:
        raise ValueError(f'unknown backend {backend!r}; valid backends: {", ".join(BACKENDS)}')
    available = available_providers()
    wanted = BACKENDS[backend]
    if wanted is None:
        wanted = [p for p in ('TensorrtExecutionProvider', 'CUDAExecutionProvider') if p in available]
        wanted.append('CPUExecutionProvider')
        return wanted
    missing = [p for p in wanted if p not in available]
    if missing:
        LOGGER.warning('backend %r: execution providers %s are not available in this onnxruntime build '
                       '(available: %s); falling back to the CPU', backend, missing, available)
    return [p for p in wanted if p in available] or ['CPUExecutionProvider']


def arena_shrinkage_run_options(session):
    """``onnxruntime.RunOptions`` that return the memory arena's free chunks to the system at the end of a run.

    ONNX Runtime's arena (BFC) keeps every chunk it ever allocated: one oversize input (e.g. a 3840x2160 frame
    into a detector that takes the full image) would pin that much memory for the rest of the process. Use these
    options only now and then (see :class:`ArenaShrinkPolicy`): same-size runs should reuse the arena."""
    import onnxruntime
    options = onnxruntime.RunOptions()
    devices = ['cpu:0']
    try:
        if 'CUDAExecutionProvider' in session.get_providers():
            devices.append('gpu:0')
    except Exception:  # session-like objects without providers
        pass
    options.add_run_config_entry('memory.enable_memory_arena_shrinkage', ';'.join(devices))
    return options


class ArenaShrinkPolicy:
    """When to shrink the arena of a session whose input size varies: once ``patience`` runs in a row had inputs of
    at most half the largest input since the last shrink (an oversize burst is over). Alternating sizes (a full
    frame plus smaller tiles every frame) never trigger it, so steady work keeps its arena."""

    def __init__(self, session, patience: int = 3):
        self.session = session
        self.patience = int(patience)
        self.peak_elements = 0
        self.small_runs = 0
        self.shrinks = 0
        self._options = None

    def run_options(self, num_elements: int):
        """RunOptions for the next run of an input with ``num_elements`` elements (None = no shrink)."""
        if num_elements >= self.peak_elements:
            self.peak_elements, self.small_runs = int(num_elements), 0
            return None
        self.small_runs = self.small_runs + 1 if 2 * num_elements <= self.peak_elements else 0
        if self.small_runs < self.patience:
            return None
        self.peak_elements, self.small_runs = int(num_elements), 0
        self.shrinks += 1
        if self._options is None:
            self._options = arena_shrinkage_run_options(self.session)
        return self._options


def create_session(path, providers: Optional[Sequence[str]] = None, num_threads: Optional[int] = None,
                   backend: str = 'auto'):
    """An ``onnxruntime.InferenceSession`` for the model at ``path`` with full graph optimisation.

    Args:
      path: the .onnx file.
      providers: explicit execution providers; default from ``backend``.
      num_threads: intra-op threads (default: ONNX Runtime's choice, one per physical core).
    Raises:
      ModelLoadError: the file is missing, empty or not a loadable ONNX model (the message names the file).
    """
    import onnxruntime
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelLoadError(f'model file not found: {path}')
    if os.path.getsize(path) == 0:
        raise ModelLoadError(f'model file is empty: {path}')
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if num_threads:
        options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # No busy-waiting between parallel sections: on a robot the cores are shared with other nodes, and spinning
    # threads that lose their core stall each other (measured with other jobs on the 2-core machine: a 128 px
    # crop model took 25 ms with spinning vs 15 ms without, 2 threads). METRABS_ROS_ORT_SPIN=1 turns it back on.
    options.add_session_config_entry('session.intra_op.allow_spinning', os.environ.get('METRABS_ROS_ORT_SPIN', '0'))
    options.add_session_config_entry('session.inter_op.allow_spinning', os.environ.get('METRABS_ROS_ORT_SPIN', '0'))
    providers = list(providers) if providers else select_providers(backend)
    try:
        return onnxruntime.InferenceSession(path, sess_options=options, providers=providers)
    except Exception as error:  # ORT raises several exception types (Fail, InvalidGraph, InvalidProtobuf...)
        raise ModelLoadError(f'cannot load ONNX model {path}: {type(error).__name__}: {error}') from error
