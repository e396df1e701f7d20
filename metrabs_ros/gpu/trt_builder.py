"""ONNX -> serialized TensorRT engine, for TensorRT 10 and 11, with the engine cache and a timing cache.

Written against the documented TensorRT 10/11 Python API (Builder, create_network, OnnxParser.parse_from_file,
IBuilderConfig, create_optimization_profile / set_shape, set_memory_pool_limit, create_timing_cache /
set_timing_cache, IProgressMonitor, build_serialized_network). NOT run against a real TensorRT here: no machine of
this project has TensorRT (docs/gpu.md); the pure decisions it makes live in trt_plan.py / engine_cache.py and are
tested everywhere.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from metrabs_ros.gpu import engine_cache
from metrabs_ros.gpu.model_description import describe_onnx
from metrabs_ros.gpu.trt_plan import (PrecisionPlan, fp16_variant_candidates, format_parser_error, plan_precision,
                                      pose_dim_ranges, profile_shapes, tensorrt_major)

LOGGER = logging.getLogger(__name__)


class TensorRTUnavailable(RuntimeError):
    """The tensorrt module cannot be imported or no CUDA device is usable (the message says which)."""


class EngineBuildError(RuntimeError):
    """Parsing or building failed; the message names the ONNX nodes the parser rejected."""


def import_tensorrt():
    """The ``tensorrt`` module, or TensorRTUnavailable with the reason."""
    try:
        import tensorrt
    except ImportError as error:
        raise TensorRTUnavailable(f'no tensorrt module ({error}); TensorRT comes from NVIDIA (pip index '
                                  'pypi.nvidia.com or the TensorRT tar/deb packages)') from None
    except OSError as error:  # the bindings import but the libnvinfer shared libraries do not load
        raise TensorRTUnavailable(f'tensorrt is installed but its libraries do not load: {error}') from None
    return tensorrt


@dataclasses.dataclass
class BuildResult:
    engine_path: Path
    key: engine_cache.EngineKey
    plan: PrecisionPlan
    built: bool                 # False: taken from the cache
    seconds: float
    reasons: Sequence[str]      # why it was (re)built, or [] for a cache hit


def gpu_identity(device_index: int = 0) -> dict:
    """Name and compute capability of the GPU engines are built for (cuda-python, else torch)."""
    try:
        from metrabs_ros.gpu.cuda_memory import device_properties
        return device_properties(device_index)
    except Exception as cuda_error:  # CudaUnavailable / CudaError: try torch before giving up
        try:
            import torch
            if torch.cuda.is_available():
                p = torch.cuda.get_device_properties(device_index)
                return {'name': p.name, 'compute_capability': f'{p.major}.{p.minor}',
                        'total_memory_bytes': int(p.total_memory)}
        except ImportError:
            pass
        raise TensorRTUnavailable(f'no CUDA device: {cuda_error}') from None


def _make_logger(trt, verbose: bool):
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


def _progress_monitor(trt, log: Callable[[str], None]):
    """An IProgressMonitor printing top-level builder phases (TensorRT >= 10), or None when unavailable."""
    base = getattr(trt, 'IProgressMonitor', None)
    if base is None:
        return None

    class _Monitor(base):
        def __init__(self):
            base.__init__(self)
            self._steps = {}
            self._start = time.perf_counter()

        def phase_start(self, phase_name, parent_phase, num_steps):
            self._steps[phase_name] = num_steps
            if parent_phase is None:
                log(f'  [{time.perf_counter() - self._start:6.1f} s] {phase_name} ({num_steps} steps)')

        def step_complete(self, phase_name, step):
            return True  # never cancel

        def phase_finish(self, phase_name):
            self._steps.pop(phase_name, None)

    return _Monitor()


def _parse(trt, network, logger, onnx_path: str):
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(onnx_path)
    if ok:
        return parser
    try:
        from metrabs_ros.gpu.model_description import onnx_node_names
        nodes = onnx_node_names(onnx_path)
    except Exception:  # onnx missing: the parser's own node fields still name the node on TensorRT >= 10.1
        nodes = None
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        lines.append(format_parser_error(
            desc=str(err.desc()), node_index=int(err.node()),
            node_name=str(err.node_name()) if hasattr(err, 'node_name') else '',
            node_op=str(err.node_operator()) if hasattr(err, 'node_operator') else '',
            code=getattr(err.code(), 'name', str(err.code())), onnx_nodes=nodes))
    raise EngineBuildError(f'TensorRT cannot parse {onnx_path}:\n  ' + '\n  '.join(lines or ['(no error reported)']))


def tensorrt_graph_path(onnx_path: str, work_dir, log: Callable[[str], None] = print) -> str:
    """The file to hand TensorRT's parser: ``onnx_path`` itself, or, when it has an antialiased Resize (our
    detectors' letterbox; ONNX Runtime's Resize is the fast one on the CPU), its exact rewrite by
    :func:`metrabs_ros.gpu.trt_graph_fixes.for_tensorrt` written to ``work_dir`` (needs the onnx package)."""
    from metrabs_ros.gpu import trt_graph_fixes
    if not trt_graph_fixes.needs_tensorrt_rewrite(onnx_path):
        return onnx_path
    try:
        import onnx
    except ImportError as error:
        raise EngineBuildError(f'{onnx_path} has an antialiased Resize, which TensorRT cannot parse; the exact '
                               'rewrite that replaces it needs the onnx package: pip install onnx') from error
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    out = work_dir / (Path(onnx_path).stem + '.tensorrt.onnx')
    onnx.save(trt_graph_fixes.for_tensorrt(onnx.load(onnx_path)), os.fspath(out))
    log(f'antialiased Resize rewritten for TensorRT (exact, docs/gpu.md): {out}')
    return os.fspath(out)


def build_engine(onnx_path, cache_dir=None, precision: str = 'auto', max_people: int = 8,
                 num_augs: Sequence[int] = (1, 5), image_sizes_hw: Sequence = ((480, 640),),
                 allow_windows: bool = False, dim_overrides: Optional[Mapping] = None,
                 fp16_onnx: Optional[str] = None, workspace_gib: float = 4.0, optimization_level: int = 3,
                 force: bool = False, verbose: bool = False, log: Callable[[str], None] = print,
                 device_index: int = 0) -> BuildResult:
    """Build (or take from the cache) the TensorRT engine of a pose or detector ONNX model.

    Args:
      onnx_path: the FP32 (or FP16) contract ONNX file.
      cache_dir: engine cache folder (default engine_cache.default_cache_dir()).
      precision: 'auto' | 'fp16' | 'fp32' (trt_plan.plan_precision: TensorRT 11 needs the FP16 ONNX export).
      max_people, num_augs, image_sizes_hw, allow_windows: ranges of P, A, H, W (trt_plan.pose_dim_ranges).
      dim_overrides: symbol -> (min, opt, max) replacing/adding dimension ranges (e.g. detector symbols).
      fp16_onnx: the FP16 export; default: looked for beside onnx_path (trt_plan.fp16_variant_candidates).
      workspace_gib: builder workspace memory pool limit. optimization_level: builder optimisation level (0-5).
      force: rebuild even when a matching engine is cached.
    Raises:
      TensorRTUnavailable, PrecisionUnavailable, UnsupportedTensorRT, EngineBuildError.
    """
    trt = import_tensorrt()
    start = time.perf_counter()
    onnx_path = os.fspath(onnx_path)
    cache_dir = Path(cache_dir) if cache_dir else engine_cache.default_cache_dir()
    major = tensorrt_major(trt.__version__)
    gpu = gpu_identity(device_index)
    description = describe_onnx(onnx_path)
    if fp16_onnx is None:
        fp16_onnx = next((p for p in fp16_variant_candidates(onnx_path) if os.path.isfile(p)), None)
    fp16_precision = describe_onnx(fp16_onnx).precision if fp16_onnx else None
    plan = plan_precision(precision, major, onnx_path, description.precision, fp16_onnx, fp16_precision)
    log(f'precision: {plan.precision} ({plan.note})')
    if plan.onnx_path != onnx_path:
        description = describe_onnx(plan.onnx_path)

    ranges = pose_dim_ranges(max_people, num_augs, image_sizes_hw, allow_windows=allow_windows)
    ranges.update(dim_overrides or {})
    profiles = profile_shapes(description.input_dims, ranges)
    options = {'workspace_gib': float(workspace_gib), 'optimization_level': int(optimization_level),
               'fp16_flag': plan.fp16_flag, 'disable_tf32': plan.disable_tf32}
    key = engine_cache.EngineKey.create(plan.onnx_path, gpu['name'], gpu['compute_capability'], trt.__version__,
                                        plan.precision, plan.strongly_typed, profiles, options)
    cached, reasons = engine_cache.lookup(cache_dir, key)
    if cached is not None and not force:
        log(f'engine cache hit: {cached}')
        return BuildResult(cached, key, plan, False, time.perf_counter() - start, [])
    reasons = ['--force'] if cached is not None else reasons
    log(f'building TensorRT {trt.__version__} engine for {plan.onnx_path} on {gpu["name"]} '
        f'(sm {gpu["compute_capability"]}): ' + '; '.join(reasons))
    for name, (lo, opt, hi) in profiles.items():
        log(f'  profile {name}: min {lo} opt {opt} max {hi}')

    logger = _make_logger(trt, verbose)
    builder = trt.Builder(logger)
    flags = 0
    typed_flag = getattr(trt.NetworkDefinitionCreationFlag, 'STRONGLY_TYPED', None)
    if plan.strongly_typed and major < 11:
        if typed_flag is None:
            raise EngineBuildError(f'TensorRT {trt.__version__} lacks NetworkDefinitionCreationFlag.STRONGLY_TYPED')
        flags |= 1 << int(typed_flag)
    network = builder.create_network(flags)  # TensorRT >= 11: strongly typed is the only mode
    parse_path = tensorrt_graph_path(plan.onnx_path, cache_dir, log)
    parser = _parse(trt, network, logger, parse_path)  # noqa: F841  (keeps the parser alive during build)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if hasattr(config, 'builder_optimization_level'):
        config.builder_optimization_level = int(optimization_level)
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.disable_tf32 and hasattr(trt.BuilderFlag, 'TF32'):
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profiles.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    timing = config.create_timing_cache(engine_cache.read_timing_cache(cache_dir, key))
    config.set_timing_cache(timing, False)
    monitor = _progress_monitor(trt, log)
    if monitor is not None:
        config.progress_monitor = monitor

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f'TensorRT could not build an engine from {plan.onnx_path} (see the TensorRT log '
                               'messages above; run with --verbose for all of them)')
    engine_cache.write_timing_cache(cache_dir, key, config.get_timing_cache().serialize())
    path = engine_cache.store(cache_dir, key, bytes(serialized), {'note': plan.note})
    seconds = time.perf_counter() - start
    log(f'wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {seconds:.1f} s')
    return BuildResult(path, key, plan, True, seconds, reasons)


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
