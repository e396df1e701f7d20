"""TensorRT engine execution: one CUDA stream per pipeline, pinned host staging, fixed device buffers, the frame
uploaded once for the detector and the pose engine, ``execute_async_v3`` with ``set_tensor_address`` /
``set_input_shape``, and a CUDA graph per input-shape set once a shape set repeats.

Written against the documented TensorRT 10/11 Python runtime API (Runtime.deserialize_cuda_engine,
ICudaEngine.num_io_tensors / get_tensor_name / get_tensor_mode / get_tensor_dtype / get_tensor_profile_shape,
IExecutionContext.set_input_shape / get_tensor_shape / set_tensor_address / execute_async_v3 /
set_output_allocator) and NOT run on a real TensorRT here (see docs/gpu.md). CUDA memory, streams and graphs come
from cuda_memory.py (cuda-python).

Per call of :meth:`TrtEngine.run` the host does: copy each feed into its pinned staging buffer (numpy), set the
input shapes that changed, then either launch the captured graph (H2D copies + inference + D2H copies) or enqueue
those steps; one stream synchronisation; outputs are returned as numpy copies ready to publish.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from metrabs_ros.gpu import cuda_memory as cm
from metrabs_ros.gpu.model_description import SessionLike, describe_onnx
from metrabs_ros.gpu.trt_plan import shape_within_profile, volume

LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DeviceTensor:
    """A tensor already in device memory (e.g. the uploaded frame): pointer, shape, numpy dtype."""
    ptr: int
    shape: Tuple[int, ...]
    dtype: np.dtype


class FrameUpload:
    """Pinned staging + device buffer for camera frames: one upload per frame, shared by both engines.

    :meth:`upload` copies the frame into pinned memory and enqueues one H2D copy; the result is handed over once to
    the next :meth:`take` with the same array object (the pose engine after the detector), then forgotten, so a frame
    buffer that the caller reuses for the next image is never mistaken for an already uploaded one.
    """

    def __init__(self, stream: cm.CudaStream, max_bytes: int = 1920 * 1088 * 3):
        self.stream = stream
        self._capacity = 0
        self._ensure(max_bytes)
        self._pending: Optional[Tuple[np.ndarray, DeviceTensor]] = None

    def _ensure(self, nbytes: int) -> None:
        if nbytes <= self._capacity:
            return
        # growing changes the device address: engines key their CUDA graphs by input addresses, so this is safe
        self.host = cm.PinnedBuffer(nbytes)
        self.device = cm.DeviceBuffer(nbytes)
        self._capacity = nbytes

    def upload(self, image: np.ndarray) -> DeviceTensor:
        array = np.ascontiguousarray(image)
        self._ensure(array.nbytes)
        cm.pinned_array(self.host, array)
        cm.copy_htod_async(self.device.ptr, self.host.ptr, array.nbytes, self.stream)
        tensor = DeviceTensor(self.device.ptr, tuple(array.shape), array.dtype)
        self._pending = (image, tensor)
        return tensor

    def take(self, image) -> Optional[DeviceTensor]:
        """The device copy of ``image`` if it is the array just uploaded (identity and shape), else None."""
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] is image and pending[1].shape == tuple(np.shape(image)):
            return pending[1]
        return None


class _OutputAllocator:
    """Factory of a trt.IOutputAllocator for outputs whose shape depends on the data (e.g. NMS counts)."""

    @staticmethod
    def create(trt):
        class Allocator(trt.IOutputAllocator):
            def __init__(self):
                trt.IOutputAllocator.__init__(self)
                self.buffers: Dict[str, cm.DeviceBuffer] = {}
                self.shapes: Dict[str, Tuple[int, ...]] = {}

            def reallocate_output(self, tensor_name, memory, size, alignment):
                buf = self.buffers.get(tensor_name)
                if buf is None or buf.nbytes < size:
                    buf = cm.DeviceBuffer(max(int(size), 1))
                    self.buffers[tensor_name] = buf
                return buf.ptr

            def reallocate_output_async(self, tensor_name, memory, size, alignment, stream):
                return self.reallocate_output(tensor_name, memory, size, alignment)

            def notify_shape(self, tensor_name, shape):
                self.shapes[tensor_name] = tuple(int(s) for s in shape)

        return Allocator()


class TrtEngine:
    """A deserialized engine with its execution context, buffers and CUDA graphs.

    Args:
      engine_path: serialized engine (trt_builder.build_engine).
      stream: the pipeline's stream (shared with FrameUpload and other engines).
      cuda_graphs: capture a graph for a set of input shapes/addresses the second time it occurs.
      max_graphs: most graphs kept (least recently used ones are dropped).
    """

    def __init__(self, engine_path, stream: cm.CudaStream, cuda_graphs: bool = True, max_graphs: int = 64,
                 trt=None):
        if trt is None:
            from metrabs_ros.gpu.trt_builder import import_tensorrt
            trt = import_tensorrt()
        self.trt = trt
        self.stream = stream
        self.path = os.fspath(engine_path)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with open(self.path, 'rb') as f:
            self.engine = self._runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise RuntimeError(f'TensorRT could not deserialize {self.path} (built for another TensorRT version or '
                               'GPU? delete it to rebuild)')
        self.context = self.engine.create_execution_context()
        self.inputs: List[str] = []
        self.outputs: List[str] = []
        self.dtypes: Dict[str, np.dtype] = {}
        self.profile: Dict[str, Tuple[tuple, tuple, tuple]] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            self.dtypes[name] = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.inputs.append(name)
                shape = tuple(self.engine.get_tensor_shape(name))
                if any(s < 0 for s in shape):
                    lo, opt, hi = self.engine.get_tensor_profile_shape(name, 0)
                    self.profile[name] = (tuple(lo), tuple(opt), tuple(hi))
                else:
                    self.profile[name] = (shape, shape, shape)
            else:
                self.outputs.append(name)
        self._allocate()
        self.cuda_graphs = cuda_graphs and not self._allocator_outputs
        self.max_graphs = int(max_graphs)
        self._graphs: Dict[tuple, Tuple[cm.CudaGraph, Dict[str, tuple]]] = {}
        self._seen: Dict[tuple, int] = {}
        self._current_shapes: Dict[str, tuple] = {}
        self._addresses: Dict[str, int] = {}

    # --- buffers ---------------------------------------------------------------------------------------------
    def _allocate(self) -> None:
        """Device + pinned buffers at the profile's max shapes (fixed addresses for the engine's life)."""
        self.device: Dict[str, cm.DeviceBuffer] = {}
        self.host: Dict[str, cm.PinnedBuffer] = {}
        for name in self.inputs:
            nbytes = volume(self.profile[name][2]) * self.dtypes[name].itemsize
            self.device[name] = cm.DeviceBuffer(nbytes)
            self.host[name] = cm.PinnedBuffer(nbytes)
            self.context.set_input_shape(name, self.profile[name][2])
            self.context.set_tensor_address(name, self.device[name].ptr)
        self._allocator_outputs = []
        self._allocator = None
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(s < 0 for s in shape):
                if self._allocator is None:
                    self._allocator = _OutputAllocator.create(self.trt)
                self.context.set_output_allocator(name, self._allocator)
                self._allocator_outputs.append(name)
                continue
            nbytes = volume(shape) * self.dtypes[name].itemsize
            self.device[name] = cm.DeviceBuffer(nbytes)
            self.host[name] = cm.PinnedBuffer(nbytes)
            self.context.set_tensor_address(name, self.device[name].ptr)

    # --- execution -------------------------------------------------------------------------------------------
    def _set_shapes(self, shapes: Mapping[str, tuple]) -> None:
        for name, shape in shapes.items():
            if self._current_shapes.get(name) != shape:
                if not self.context.set_input_shape(name, shape):
                    raise ValueError(f'TensorRT rejected shape {shape} for input {name!r} (profile '
                                     f'{self.profile[name][0]}..{self.profile[name][2]})')
                self._current_shapes[name] = shape

    def _enqueue(self, host_inputs: Mapping[str, np.ndarray], output_shapes: Mapping[str, tuple]) -> None:
        for name, array in host_inputs.items():
            cm.copy_htod_async(self.device[name].ptr, self.host[name].ptr, array.nbytes, self.stream)
        if not self.context.execute_async_v3(self.stream.handle):
            raise RuntimeError(f'TensorRT execute_async_v3 failed for {self.path}')
        for name, shape in output_shapes.items():
            nbytes = volume(shape) * self.dtypes[name].itemsize
            cm.copy_dtoh_async(self.host[name].ptr, self.device[name].ptr, nbytes, self.stream)

    def run(self, feeds: Mapping[str, object], output_names: Optional[Sequence[str]] = None) -> List[np.ndarray]:
        """Outputs (numpy copies) for ``feeds``: name -> numpy array, or DeviceTensor for data already on the GPU."""
        output_names = list(output_names or self.outputs)
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise ValueError(f'missing inputs {missing} for engine {os.path.basename(self.path)}')
        shapes = {n: feeds[n].shape if isinstance(feeds[n], DeviceTensor) else tuple(int(s) for s in np.shape(feeds[n]))
                  for n in self.inputs}
        problems = shape_within_profile(shapes, self.profile)
        if problems:
            raise ValueError(f'{os.path.basename(self.path)}: ' + '; '.join(problems) +
                             ' (rebuild the engine with wider ranges: metrabs-ros build-engine --help)')
        host_inputs = {}
        external = []
        for name in self.inputs:
            value = feeds[name]
            if isinstance(value, DeviceTensor):
                if self._addresses.get(name) != value.ptr:
                    self.context.set_tensor_address(name, value.ptr)
                    self._addresses[name] = value.ptr
                external.append((name, value.ptr))
                continue
            if self._addresses.get(name, self.device[name].ptr) != self.device[name].ptr:
                self.context.set_tensor_address(name, self.device[name].ptr)
            self._addresses[name] = self.device[name].ptr
            array = np.asarray(value)
            if array.dtype != self.dtypes[name]:
                array = array.astype(self.dtypes[name])
            host_inputs[name] = cm.pinned_array(self.host[name], np.ascontiguousarray(array))
        self._set_shapes(shapes)
        key = (tuple(sorted(shapes.items())), tuple(external))
        cached = self._graphs.pop(key, None)
        if cached is not None:
            graph, output_shapes = cached
            self._graphs[key] = cached  # most recently used last
            graph.launch(self.stream)
        else:
            output_shapes = {n: tuple(self.context.get_tensor_shape(n)) for n in self.outputs
                             if n not in self._allocator_outputs}
            self._enqueue(host_inputs, output_shapes)
            self._seen[key] = self._seen.get(key, 0) + 1
            if self.cuda_graphs and self._seen[key] >= 2:
                self.stream.synchronize()   # the eager run above is TensorRT's required run after a shape change
                graph = cm.CudaGraph().capture(self.stream, lambda: self._enqueue(host_inputs, output_shapes))
                self._graphs[key] = (graph, output_shapes)
                while len(self._graphs) > self.max_graphs:
                    oldest, _ = self._graphs.pop(next(iter(self._graphs)))
                    oldest.close()
                graph.launch(self.stream)   # capture does not execute: run the captured work once now
        self.stream.synchronize()
        results = []
        for name in output_names:
            if name in self._allocator_outputs:
                shape = self._allocator.shapes[name]
                out = np.empty(shape, self.dtypes[name])
                if out.nbytes:
                    staging = cm.PinnedBuffer(out.nbytes)
                    cm.copy_dtoh_async(staging.ptr, self._allocator.buffers[name].ptr, out.nbytes, self.stream)
                    self.stream.synchronize()
                    out[...] = staging.view(out.dtype, shape)
                results.append(out)
            else:
                results.append(np.array(self.host[name].view(self.dtypes[name], output_shapes[name])))
        return results


def _tensorrt_label(engine: TrtEngine) -> str:
    try:
        from metrabs_ros.gpu.trt_builder import gpu_identity
        gpu = gpu_identity()['name']
    except Exception:
        gpu = 'GPU'
    return f'TensorRT {engine.trt.__version__} on {gpu}'


class TrtPoseBackend(SessionLike):
    """PoseBackend running a contract pose model as a TensorRT engine.

    Args:
      onnx_path: the contract ONNX file (metadata and I/O description; built into an engine unless engine_path).
      engine_path: a ready engine; default: trt_builder.build_engine(onnx_path, **build_options) (cached).
      frames: the pipeline's FrameUpload when the detector runs on TensorRT too (frame uploaded once).
      cuda_graphs: see TrtEngine.
    People beyond the engine's max P are run in chunks of max P.
    """

    name = 'tensorrt'
    wants_full_frame = True

    def __init__(self, onnx_path, engine_path=None, build_options: Optional[dict] = None,
                 stream: Optional[cm.CudaStream] = None, frames: Optional[FrameUpload] = None,
                 cuda_graphs: bool = True):
        self.description = describe_onnx(onnx_path)
        if engine_path is None:
            from metrabs_ros.gpu.trt_builder import build_engine, stderr_log
            engine_path = build_engine(onnx_path, log=stderr_log, **(build_options or {})).engine_path
        self.stream = stream or cm.CudaStream()
        self.frames = frames
        self.engine = TrtEngine(engine_path, self.stream, cuda_graphs=cuda_graphs)
        self.output_names = [o.name for o in self.description.outputs]
        self.max_people = self.engine.profile.get('crop_rotations', ((1,), (1,), (1 << 30,)))[2][0]
        self.providers = [_tensorrt_label(self.engine)]

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        return self.run(None, feeds)

    def run(self, output_names, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        output_names = list(output_names or self.output_names)
        feeds = dict(feeds)
        if self.frames is not None:
            device_image = self.frames.take(feeds['image'])
            if device_image is not None:
                feeds['image'] = device_image
        num_people = int(np.shape(feeds['crop_rotations'])[0])
        if num_people <= self.max_people:
            return self.engine.run(feeds, output_names)
        chunks = []
        for start in range(0, num_people, self.max_people):
            part = dict(feeds)
            for name in ('crop_rotations', 'crop_intrinsics', 'pyramid_levels'):
                part[name] = feeds[name][start:start + self.max_people]
            chunks.append(self.engine.run(part, output_names))
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(output_names))]


class TrtDetectorSession(SessionLike):
    """An ONNX-Runtime-session-like TensorRT detector for ``detection.PersonDetector(path_or_session=...)``.

    A native-contract detector (uint8 ``image`` [H, W, 3]) uploads the frame through ``frames``, and the pose
    backend built with the same FrameUpload reuses that device copy.
    """

    def __init__(self, onnx_path, engine_path, stream: cm.CudaStream, frames: Optional[FrameUpload] = None,
                 cuda_graphs: bool = True):
        self.description = describe_onnx(onnx_path)
        self.engine = TrtEngine(engine_path, stream, cuda_graphs=cuda_graphs)
        self.frames = frames
        self.providers = [_tensorrt_label(self.engine)]

    def run(self, output_names, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        feeds = dict(feeds)
        image = feeds.get('image')
        if self.frames is not None and image is not None and np.asarray(image).dtype == np.uint8 \
                and np.ndim(image) == 3:
            feeds['image'] = self.frames.upload(image)
        return self.engine.run(feeds, output_names)
