"""The PoseBackend interface, its ONNX Runtime implementation, and backend selection with logged fallbacks.

A PoseBackend is what ``PoseEstimator`` calls once per frame for all people × augmentations:

    outputs = backend.run(output_names, feeds)     # same call as onnxruntime.InferenceSession.run
    outputs = backend(feeds)                       # all outputs, in backend.output_names order

``feeds`` is the contract's input dict (docs/model_contract.md §1, numpy), outputs are numpy arrays. Backends also
answer ``get_inputs()``, ``get_outputs()``, ``get_modelmeta()`` (so ``read_pose_model_info`` accepts them),
``get_providers()`` / ``providers`` and ``name`` (for logs and the node's diagnostics), and ``wants_full_frame``
(True for GPU backends: the estimator should pass the whole frame, not the crop window, so that input shapes stay
fixed per camera and CUDA graphs / engine profiles apply).

Backend names (API, CLI, node): auto | tensorrt | torch-cuda | cuda | onnxruntime | cpu (| ort-tensorrt).
Fallback order for ``auto``: tensorrt -> torch-cuda -> cuda (ONNX Runtime CUDA EP) -> cpu; an explicit choice falls
back along the same order after it. Every skipped backend is logged with its reason. ``strict=True`` raises instead.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable, List, Mapping, Optional, Tuple

import numpy as np

from metrabs_ros.gpu.model_description import SessionLike

LOGGER = logging.getLogger(__name__)

BACKEND_NAMES = ('auto', 'tensorrt', 'torch-cuda', 'cuda', 'onnxruntime', 'cpu', 'ort-tensorrt')
FALLBACK_ORDER = ('tensorrt', 'torch-cuda', 'cuda', 'cpu')


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (strict selection); the message gives every reason."""


def fallback_chain(requested: str) -> List[str]:
    """Backends to try, in order, for a requested name (pure)."""
    if requested not in BACKEND_NAMES:
        raise ValueError(f'unknown backend {requested!r}; valid backends: {", ".join(BACKEND_NAMES)}')
    if requested in ('onnxruntime', 'cpu'):
        return ['cpu']
    if requested == 'auto':
        return list(FALLBACK_ORDER)
    if requested == 'ort-tensorrt':
        return ['ort-tensorrt', 'cuda', 'cpu']
    return list(FALLBACK_ORDER[FALLBACK_ORDER.index(requested):])


@dataclasses.dataclass(frozen=True)
class Selection:
    backend: str                     # the backend to create
    skipped: Tuple[Tuple[str, str], ...]   # (backend, reason) of every backend passed over, in order

    def log_lines(self, requested: str) -> List[str]:
        lines = [f'backend {name!r} unavailable: {reason}' for name, reason in self.skipped]
        if self.skipped:
            lines.append(f'backend {requested!r} -> using {self.backend!r}')
        return lines


def choose_backend(requested: str, probe: Callable[[str], Optional[str]], strict: bool = False) -> Selection:
    """First backend of the fallback chain whose ``probe(name)`` returns None (= usable; else the reason).

    strict: raise BackendUnavailable when the requested backend itself (not 'auto') is unavailable.
    The CPU backend is always usable (its probe is not called).
    """
    skipped = []
    for name in fallback_chain(requested):
        reason = None if name == 'cpu' else probe(name)
        if reason is None:
            return Selection(name, tuple(skipped))
        skipped.append((name, reason))
        if strict and requested != 'auto':
            raise BackendUnavailable(f'backend {requested!r} unavailable: {reason}')
    raise AssertionError('unreachable: the CPU backend is always usable')


# --- availability probes ------------------------------------------------------------------------------------

def find_checkpoint(onnx_path) -> Optional[str]:
    """The checkpoint the ONNX file was exported from, by convention beside it: X.pt, X.ckpt or X.pth."""
    root, _ = os.path.splitext(os.fspath(onnx_path))
    for suffix in ('.pt', '.ckpt', '.pth'):
        if os.path.isfile(root + suffix):
            return root + suffix
    return None


def probe_tensorrt() -> Optional[str]:
    try:
        import tensorrt
    except ImportError:
        return 'no tensorrt module (TensorRT is installed from NVIDIA, not PyPI)'
    except OSError as error:
        return f'tensorrt libraries do not load: {error}'
    from metrabs_ros.gpu.trt_plan import MIN_TENSORRT_MAJOR, tensorrt_major
    if tensorrt_major(tensorrt.__version__) < MIN_TENSORRT_MAJOR:
        return f'TensorRT {tensorrt.__version__} is older than {MIN_TENSORRT_MAJOR}.0'
    from metrabs_ros.gpu.cuda_memory import CudaUnavailable, cudart, device_count
    try:
        cudart()
    except CudaUnavailable as error:
        return str(error)
    if device_count() == 0:
        return 'no CUDA device'
    return None


def probe_torch_cuda(checkpoint: Optional[str]) -> Optional[str]:
    if not checkpoint:
        return ('needs the PyTorch checkpoint the ONNX was exported from (pass torch_checkpoint / --checkpoint, or '
                'place MODEL.pt beside MODEL.onnx)')
    if not os.path.isfile(checkpoint):
        return f'checkpoint not found: {checkpoint}'
    try:
        import torch
    except ImportError:
        return 'no torch module'
    if not torch.cuda.is_available():
        return f'torch {torch.__version__} sees no CUDA device (CPU-only build or no driver)'
    return None


def probe_ort_provider(provider: str) -> Optional[str]:
    import onnxruntime
    available = onnxruntime.get_available_providers()
    if provider not in available:
        return f'{provider} is not in this onnxruntime build (available: {", ".join(available)})'
    return None


def default_probe(checkpoint: Optional[str]) -> Callable[[str], Optional[str]]:
    def probe(name: str) -> Optional[str]:
        if name == 'tensorrt':
            return probe_tensorrt()
        if name == 'torch-cuda':
            return probe_torch_cuda(checkpoint)
        if name == 'cuda':
            return probe_ort_provider('CUDAExecutionProvider')
        if name == 'ort-tensorrt':
            return probe_ort_provider('TensorrtExecutionProvider')
        return None
    return probe


# --- the ONNX Runtime backend -----------------------------------------------------------------------------------

class OrtPoseBackend(SessionLike):
    """PoseBackend over an ``onnxruntime.InferenceSession`` (CPU, CUDA EP or TensorRT EP)."""

    wants_full_frame = False

    def __init__(self, session, name: str = 'onnxruntime'):
        from metrabs_ros.onnx_backend import ArenaShrinkPolicy
        self.session = self.description = session
        self.name = name
        self.output_names = [o.name for o in session.get_outputs()]
        self.providers = list(session.get_providers())
        # the graph takes the frame (or the window the crops sample) at its own size: give the arena's chunks of
        # oversize frames back once they are over (else one 4K frame pins ~0.8 GB for good)
        self._arena_policy = ArenaShrinkPolicy(session)

    def run(self, output_names, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        feeds = dict(feeds)
        image = feeds.get('image')
        run_options = self._arena_policy.run_options(int(np.size(image))) if image is not None else None
        names = list(output_names) if output_names else None
        if run_options is None:      # (session-like stand-ins need not take run options)
            return self.session.run(names, feeds)
        return self.session.run(names, feeds, run_options)

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        return self.run(None, feeds)


_ORT_PROVIDERS = {'cuda': ['CUDAExecutionProvider', 'CPUExecutionProvider'],
                  'ort-tensorrt': ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider'],
                  'cpu': ['CPUExecutionProvider']}


def create_pose_backend(model_path, backend: str = 'auto', num_threads: Optional[int] = None,
                        torch_checkpoint: Optional[str] = None, precision: str = 'auto',
                        engine_options: Optional[dict] = None, cuda_graphs: bool = True, strict: bool = False,
                        frames=None, probe: Optional[Callable[[str], Optional[str]]] = None):
    """The pose backend for ``model_path`` (a contract ONNX file) following the fallback chain of ``backend``.

    torch_checkpoint: checkpoint for torch-cuda (default: X.pt / X.ckpt / X.pth beside X.onnx).
    precision: 'auto' | 'fp16' | 'fp32' for tensorrt and torch-cuda (auto = fp16 on GPUs).
    engine_options: keyword arguments of trt_builder.build_engine (max_people, num_augs, image_sizes_hw, ...).
    frames: a trt_runtime.FrameUpload shared with a TensorRT detector.
    Returns the backend; logs one warning per skipped backend with its reason.
    """
    model_path = os.fspath(model_path)
    checkpoint = torch_checkpoint or find_checkpoint(model_path)
    probe = probe or default_probe(checkpoint)
    skipped = []
    for name in fallback_chain(backend):
        reason = None if name == 'cpu' else probe(name)
        if reason is None:
            try:
                created = _create(name, model_path, num_threads, checkpoint, precision, engine_options,
                                  cuda_graphs, frames)
            except Exception as error:  # probe passed but creation failed (engine build, CUDA init, ...)
                if name == 'cpu':
                    raise
                reason = f'{type(error).__name__}: {error}'
            else:
                # 'auto' trying GPU backends on a CPU machine is normal: info; an explicit request that falls
                # back is worth a warning.
                log = LOGGER.info if backend == 'auto' else LOGGER.warning
                for line in Selection(name, tuple(skipped)).log_lines(backend):
                    log(line)
                return created
        if strict and backend != 'auto':
            raise BackendUnavailable(f'backend {backend!r} unavailable: {reason}')
        skipped.append((name, reason))
    raise AssertionError('unreachable: the CPU backend is always tried last')


def _create(name, model_path, num_threads, checkpoint, precision, engine_options, cuda_graphs, frames):
    if name == 'tensorrt':
        from metrabs_ros.gpu.trt_runtime import TrtPoseBackend
        options = dict(engine_options or {})
        options.setdefault('precision', precision)
        return TrtPoseBackend(model_path, build_options=options, frames=frames, cuda_graphs=cuda_graphs)
    if name == 'torch-cuda':
        from metrabs_ros.gpu.torch_backend import TorchPoseBackend
        return TorchPoseBackend.from_checkpoint(checkpoint, model_path, device='cuda',
                                                precision='fp16' if precision == 'auto' else precision,
                                                cuda_graphs=cuda_graphs)
    from metrabs_ros.onnx_backend import create_session
    session = create_session(model_path, providers=_ORT_PROVIDERS[name], num_threads=num_threads)
    return OrtPoseBackend(session, name='onnxruntime' if name == 'cpu' else f'onnxruntime-{name}')
