"""PoseBackend running the PoseGraph module (the computation the contract ONNX encodes) through PyTorch, on CUDA
with optional FP16 and CUDA graphs, or on the CPU (tests).

Where the module comes from: our checkpoint (``metrabs_ros.training.checkpoint``; the ONNX file keeps no module)
or a PoseGraph object. BatchNorm is folded into the convolutions as in ``export_for_deployment``; ``precision='fp16'``
is ``PoseGraph.set_compute_dtype(torch.float16)`` — backbone and head convolution in FP16, warp, soft-argmax and the
3×3 solve in FP32, exactly the casts of the FP16 ONNX export.

Device placement without touching the training code: the graph creates small constants inside ``forward``
(``torch.arange``, ``torch.tensor([...])``, ``torch.linspace``) on the default device. :class:`ConstantsOnDevice`
(a TorchFunctionMode) puts every factory call without an explicit device on the backend's device and memoises
those whose arguments are plain Python constants, so that (a) eager CUDA runs work and (b) CUDA-graph capture sees
no host-to-device copy (the constants already exist from the warm-up run).

CUDA graphs: one per exact input-shape set (H, W, P, A); captured the ``capture_after``-th time the shape set
occurs (eager before), least recently used ones dropped beyond ``max_graphs``. Feeds are staged in pinned host
tensors and copied with ``non_blocking=True`` on the backend's stream; outputs come back through pinned tensors with
one synchronisation per call.
"""

from __future__ import annotations

import collections
import copy
import logging
import os
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from metrabs_ros.model_contract import POSE_INPUTS

INPUT_NAMES = tuple(POSE_INPUTS)   # the graph's positional input order (contract order)

LOGGER = logging.getLogger(__name__)

_MEMOISED_FACTORIES = ('tensor', 'as_tensor', 'arange', 'linspace', 'logspace', 'eye')
_MAX_CONSTANTS = 4096
_DEVICE_FACTORIES = _MEMOISED_FACTORIES + ('full', 'zeros', 'ones', 'empty', 'rand', 'randn', 'randint')


def _is_constant(value) -> bool:
    import torch
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device, torch.layout)):
        return True
    if isinstance(value, (tuple, list, torch.Size)):
        return all(_is_constant(v) for v in value)
    return False


def constants_mode(device, memoise: bool = True):
    """A TorchFunctionMode placing factory calls on ``device`` and memoising constant ones (see module doc)."""
    import torch
    from torch.overrides import TorchFunctionMode

    device = torch.device(device)
    device_funcs = {getattr(torch, n) for n in _DEVICE_FACTORIES}
    memo_funcs = {getattr(torch, n) for n in _MEMOISED_FACTORIES}

    class ConstantsOnDevice(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.cache: Dict[tuple, object] = {}
            self.hits = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if func in device_funcs and kwargs.get('device') is None:
                kwargs['device'] = device
                if memoise and func in memo_funcs and _is_constant(args) and _is_constant(list(kwargs.values())):
                    key = (func.__name__, repr(args), repr(sorted(kwargs.items())))
                    cached = self.cache.get(key)
                    if cached is None:
                        if len(self.cache) >= _MAX_CONSTANTS:  # shape-dependent keys (varying image windows)
                            self.cache.clear()
                        cached = self.cache[key] = func(*args, **kwargs)
                    else:
                        self.hits += 1
                    return cached
            return func(*args, **kwargs)

    return ConstantsOnDevice()


def prepare_graph(graph, device='cuda', precision: str = 'fp32', fuse_bn: bool = True,
                  channels_last: Optional[bool] = None):
    """Inference copy of ``graph`` on ``device``: BN folded, FP16 backbone/head when precision == 'fp16'."""
    import torch
    if precision not in ('fp32', 'fp16'):
        raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
    module = copy.deepcopy(graph).eval()
    if fuse_bn:
        from metrabs_ros.training.fusion import fuse_batchnorm
        module.backbone = fuse_batchnorm(module.backbone)
    if precision == 'fp16':
        module.set_compute_dtype(torch.float16)
    module = module.to(device)
    device = torch.device(device)
    if channels_last is None:
        channels_last = device.type == 'cuda'
    if channels_last:
        module.backbone.to(memory_format=torch.channels_last)
        module.head.to(memory_format=torch.channels_last)
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class TorchPoseBackend:
    """PoseBackend: the PoseGraph through PyTorch.

    Args:
      graph: a PoseGraph (e.g. ``load_checkpoint(path)[0]`` or ``graph_from_config(config)``).
      description: model_description.ModelDescription of the matching ONNX file (for get_inputs/get_modelmeta), or
        None (then only ``run``/``__call__`` are available).
      device: 'cuda', 'cuda:1', 'cpu'.
      precision: 'fp32' or 'fp16' (backbone/head convolution; the rest stays FP32).
      cuda_graphs: capture CUDA graphs per input-shape set (CUDA only).
      capture_after: occurrences of a shape set before it is captured (eager until then).
      max_graphs: most captured graphs kept (LRU).
      use_constants_mode: force the ConstantsOnDevice mode (default: on for CUDA, off for the CPU).
      allow_tf32: TF32 convolutions/matmuls (process-wide torch flags; default: off for fp32, on for fp16).
    """

    wants_full_frame = True

    def __init__(self, graph, description=None, device='cuda', precision: str = 'fp32', cuda_graphs: bool = True,
                 capture_after: int = 2, max_graphs: int = 32, channels_last: Optional[bool] = None,
                 use_constants_mode: Optional[bool] = None, allow_tf32: Optional[bool] = None):
        import torch
        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == 'cuda' and not torch.cuda.is_available():
            raise RuntimeError('torch-cuda backend: torch.cuda.is_available() is False (CPU-only PyTorch build or '
                               'no CUDA device/driver)')
        if self.device.type == 'cuda':
            # Process-wide PyTorch flags: fixed shapes per CUDA graph make cuDNN autotuning pay off; TF32
            # convolutions (PyTorch's cuDNN default) are kept off for FP32 so that FP32 agrees with ONNX Runtime.
            torch.backends.cudnn.benchmark = True
            tf32 = (precision != 'fp32') if allow_tf32 is None else bool(allow_tf32)
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
        self.precision = precision
        self.module = prepare_graph(graph, self.device, precision, channels_last=channels_last)
        self.description = description
        self.output_names = list(self.module.output_names)
        self.name = 'torch-cuda' if self.device.type == 'cuda' else f'torch-{self.device.type}'
        if use_constants_mode is None:
            use_constants_mode = self.device.type != 'cpu'
        self.mode = constants_mode(self.device) if use_constants_mode else None
        self.cuda_graphs = bool(cuda_graphs) and self.device.type == 'cuda'
        self.capture_after = max(int(capture_after), 1)
        self.max_graphs = int(max_graphs)
        self._graphs: 'collections.OrderedDict[tuple, dict]' = collections.OrderedDict()
        self._seen: Dict[tuple, int] = {}
        self.stream = torch.cuda.Stream(self.device) if self.device.type == 'cuda' else None
        self.capture_failures: List[str] = []
        if self.device.type == 'cuda':
            gpu = torch.cuda.get_device_name(self.device)
            self.providers = [f'PyTorch {torch.__version__} CUDA ({precision}'
                              f'{", CUDA graphs" if self.cuda_graphs else ""}) on {gpu}']
        else:
            self.providers = [f'PyTorch {torch.__version__} {self.device.type} ({precision})']

    @classmethod
    def from_checkpoint(cls, checkpoint_path, onnx_path=None, **kwargs) -> 'TorchPoseBackend':
        """Backend from our checkpoint file (training.checkpoint format); ``onnx_path`` supplies the metadata."""
        from metrabs_ros.training.checkpoint import load_checkpoint
        graph, _ = load_checkpoint(checkpoint_path)
        description = None
        if onnx_path is not None:
            from metrabs_ros.gpu.model_description import describe_onnx
            description = describe_onnx(onnx_path)
        return cls(graph, description, **kwargs)

    # --- session-like surface ---------------------------------------------------------------------------------
    def _need_description(self):
        if self.description is None:
            raise RuntimeError('this TorchPoseBackend was created without the ONNX model description')
        return self.description

    def get_inputs(self):
        return self._need_description().get_inputs()

    def get_outputs(self):
        return self._need_description().get_outputs()

    def get_modelmeta(self):
        return self._need_description().get_modelmeta()

    def get_providers(self) -> List[str]:
        return list(self.providers)

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        return self.run(None, feeds)

    # --- execution ----------------------------------------------------------------------------------------------
    def _forward(self, inputs: Sequence):
        torch = self.torch
        with torch.inference_mode():
            if self.mode is None:
                out = self.module(*inputs)
            else:
                with self.mode:
                    out = self.module(*inputs)
        return out if isinstance(out, tuple) else (out,)

    def run(self, output_names, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        """Contract feeds (numpy) -> the requested outputs as numpy arrays (default: all, in output_names order)."""
        names = list(output_names or self.output_names)
        unknown = [n for n in names if n not in self.output_names]
        if unknown:
            raise ValueError(f'unknown outputs {unknown}; this model has {self.output_names}')
        missing = [n for n in INPUT_NAMES if n not in feeds]
        if missing:
            raise ValueError(f'missing inputs {missing}')
        arrays = [np.ascontiguousarray(feeds[n]) for n in INPUT_NAMES]
        if self.device.type == 'cpu':
            outputs = self._forward([self.torch.from_numpy(a) for a in arrays])
            results = [o.numpy() for o in outputs]
        else:
            results = self._run_cuda(arrays)
        by_name = dict(zip(self.output_names, results))
        return [by_name[n] for n in names]

    def _staged(self, arrays):
        """Pinned host tensors holding ``arrays`` and device tensors they are copied into (non-blocking)."""
        torch = self.torch
        host = [torch.from_numpy(a).pin_memory() for a in arrays]
        device = [h.to(self.device, non_blocking=True) for h in host]
        return host, device

    def _run_cuda(self, arrays) -> List[np.ndarray]:
        torch = self.torch
        key = tuple((a.shape, a.dtype.str) for a in arrays)
        with torch.cuda.stream(self.stream):
            entry = self._graphs.get(key)
            if entry is not None:
                self._graphs.move_to_end(key)
                for pinned, array in zip(entry['host_in'], arrays):
                    pinned.numpy()[...] = array
                for static, pinned in zip(entry['dev_in'], entry['host_in']):
                    static.copy_(pinned, non_blocking=True)
                entry['graph'].replay()
                for pinned, out in zip(entry['host_out'], entry['dev_out']):
                    pinned.copy_(out, non_blocking=True)
                self.stream.synchronize()
                return [p.numpy().copy() for p in entry['host_out']]
            self._seen[key] = self._seen.get(key, 0) + 1
            if self.cuda_graphs and self._seen[key] >= self.capture_after:
                try:
                    self._capture(key, arrays)
                except Exception as error:  # capture is an optimisation: fall back to eager, say why once
                    message = f'{type(error).__name__}: {error}'
                    if message not in self.capture_failures:
                        LOGGER.warning('CUDA graph capture failed for shapes %s (running eagerly): %s',
                                       [a.shape for a in arrays], message)
                        self.capture_failures.append(message)
                    self._seen[key] = -(1 << 30)  # never retry this shape set
                else:
                    return self._run_cuda(arrays)
            _, device_inputs = self._staged(arrays)
            outputs = self._forward(device_inputs)
            host = [torch.empty(o.shape, dtype=o.dtype, pin_memory=True) for o in outputs]
            for h, o in zip(host, outputs):
                h.copy_(o, non_blocking=True)
            self.stream.synchronize()
            return [h.numpy().copy() for h in host]

    def _capture(self, key, arrays) -> None:
        torch = self.torch
        host_in, dev_in = self._staged(arrays)
        for _ in range(2):  # warm-up on the side stream: cuDNN autotuning, allocator, memoised constants
            self._forward(dev_in)
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):
            dev_out = self._forward(dev_in)
        host_out = [torch.empty(o.shape, dtype=o.dtype, pin_memory=True) for o in dev_out]
        # keep the memoised constants the graph reads alive even if the mode's cache is cleared later
        constants = list(self.mode.cache.values()) if self.mode is not None else []
        self._graphs[key] = {'graph': graph, 'host_in': host_in, 'dev_in': dev_in, 'dev_out': dev_out,
                             'host_out': host_out, 'constants': constants}
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)


from metrabs_ros.gpu.backend import find_checkpoint  # noqa: E402,F401  (re-export)
