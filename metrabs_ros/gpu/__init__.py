"""GPU inference path: TensorRT engines (builder, cache, runtime), a PyTorch-CUDA backend, backend selection.

Nothing heavy is imported here: ``tensorrt``, ``cuda.bindings`` and ``torch`` are imported by the functions that
need them, so the CPU runtime can import :mod:`metrabs_ros.gpu.backend` without any of them installed.

Modules:
  backend.py            the PoseBackend interface, the ONNX Runtime adapter, backend selection with fallbacks
  model_description.py  inputs/outputs/metadata of an ONNX file in ONNX Runtime's session shapes (for any backend)
  trt_plan.py           pure logic: optimisation-profile shapes, precision per TensorRT major version, parser errors
  engine_cache.py       pure logic: engine cache key (ONNX hash + GPU + TensorRT version + precision + profiles)
  cuda_memory.py        streams, device/pinned buffers, CUDA graphs through cuda-python (cuda.bindings)
  trt_builder.py        ONNX -> serialized TensorRT engine (TensorRT 10 and 11), timing cache, progress
  trt_runtime.py        engine execution (execute_async_v3), shared frame upload, pose and detector adapters
  torch_backend.py      the PoseGraph on CUDA through PyTorch, FP16, CUDA graphs per (H, W, P, A)
  commands.py           `metrabs-ros build-engine`, `benchmark-gpu`, `gpu-agreement`
"""
