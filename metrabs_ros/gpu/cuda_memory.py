"""CUDA streams, device and pinned host buffers, copies and CUDA graphs through cuda-python (``cuda.bindings``).

Why cuda-python (docs/gpu.md): NVIDIA's maintained binding, prebuilt wheels (no local toolkit needed, unlike
pycuda, which compiles against one), the library recent TensorRT samples use, and raw pointers/stream handles that
TensorRT's ``set_tensor_address`` / ``execute_async_v3`` take directly. Imported lazily: importing this module
needs nothing beyond numpy.

All sizes are bytes; pointers are Python ints; ``CudaStream.handle`` is the int TensorRT expects.
"""

from __future__ import annotations

import ctypes
from typing import Optional

import numpy as np


class CudaUnavailable(RuntimeError):
    """cuda-python is not installed or no CUDA device/driver is usable (the message says which)."""


class CudaError(RuntimeError):
    """A CUDA runtime call failed (the message names the call and the CUDA error)."""


def cudart():
    """The cuda-python runtime module (``cuda.bindings.runtime``; older releases: ``cuda.cudart``)."""
    try:
        from cuda.bindings import runtime
        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart as runtime  # cuda-python < 12.6
        return runtime
    except ImportError:
        raise CudaUnavailable('cuda-python is not installed (pip install cuda-python, or cuda-bindings matching '
                              'the CUDA driver)') from None


def check(result, call: str = 'CUDA call'):
    """Unwrap a cuda-python result tuple ``(err, *values)``; raise CudaError naming ``call`` on failure."""
    rt = cudart()
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if err != rt.cudaError_t.cudaSuccess:
        try:
            _, text = rt.cudaGetErrorString(err)
            text = text.decode() if isinstance(text, bytes) else str(text)
        except Exception:  # the error string itself is a nicety
            text = ''
        raise CudaError(f'{call} failed: {getattr(err, "name", err)} {text}'.strip())
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def device_count() -> int:
    """Number of usable CUDA devices; 0 when the driver reports none or fails (no exception)."""
    try:
        rt = cudart()
        err, count = rt.cudaGetDeviceCount()
        return int(count) if err == rt.cudaError_t.cudaSuccess else 0
    except CudaUnavailable:
        return 0


def device_properties(index: int = 0) -> dict:
    """{'name', 'compute_capability' ('9.0'), 'total_memory_bytes'} of CUDA device ``index``."""
    rt = cudart()
    prop = check(rt.cudaGetDeviceProperties(index), f'cudaGetDeviceProperties({index})')
    name = prop.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b'\0', 1)[0].decode(errors='replace')
    return {'name': str(name).strip(), 'compute_capability': f'{prop.major}.{prop.minor}',
            'total_memory_bytes': int(prop.totalGlobalMem)}


class _CudaResource:
    """Released by ``close()`` (idempotent), or at garbage collection, quietly (the CUDA context may be gone)."""

    def close(self) -> None:
        raise NotImplementedError

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class CudaStream(_CudaResource):
    """A non-blocking CUDA stream (one per pipeline)."""

    def __init__(self):
        rt = cudart()
        self._stream = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), 'cudaStreamCreateWithFlags')

    @property
    def raw(self):
        return self._stream

    @property
    def handle(self) -> int:
        return int(self._stream)

    def synchronize(self) -> None:
        check(cudart().cudaStreamSynchronize(self._stream), 'cudaStreamSynchronize')

    def close(self) -> None:
        if self._stream is not None:
            check(cudart().cudaStreamDestroy(self._stream), 'cudaStreamDestroy')
            self._stream = None


class DeviceBuffer(_CudaResource):
    """``nbytes`` of device memory (cudaMalloc). ``ptr`` stays fixed for the buffer's life (CUDA graphs rely on it)."""

    def __init__(self, nbytes: int):
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(check(cudart().cudaMalloc(self.nbytes), f'cudaMalloc({self.nbytes})'))

    def close(self) -> None:
        if self.ptr:
            check(cudart().cudaFree(self.ptr), 'cudaFree')
            self.ptr = 0


class PinnedBuffer(_CudaResource):
    """``nbytes`` of page-locked host memory (cudaMallocHost) with numpy views (asynchronous copies need it)."""

    def __init__(self, nbytes: int):
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(check(cudart().cudaMallocHost(self.nbytes), f'cudaMallocHost({self.nbytes})'))
        self._bytes = np.ctypeslib.as_array((ctypes.c_uint8 * self.nbytes).from_address(self.ptr))

    def view(self, dtype, shape) -> np.ndarray:
        """A numpy array of ``shape``/``dtype`` over the start of the buffer (raises if it does not fit)."""
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
        if count * dtype.itemsize > self.nbytes:
            raise ValueError(f'{tuple(shape)} {dtype} needs {count * dtype.itemsize} bytes, pinned buffer has '
                             f'{self.nbytes}')
        return self._bytes[:count * dtype.itemsize].view(dtype).reshape(shape)

    def close(self) -> None:
        if self.ptr:
            self._bytes = None
            check(cudart().cudaFreeHost(self.ptr), 'cudaFreeHost')
            self.ptr = 0


def copy_htod_async(dst_ptr: int, src_ptr: int, nbytes: int, stream: CudaStream) -> None:
    rt = cudart()
    check(rt.cudaMemcpyAsync(dst_ptr, src_ptr, int(nbytes), rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.raw),
          'cudaMemcpyAsync(host->device)')


def copy_dtoh_async(dst_ptr: int, src_ptr: int, nbytes: int, stream: CudaStream) -> None:
    rt = cudart()
    check(rt.cudaMemcpyAsync(dst_ptr, src_ptr, int(nbytes), rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.raw),
          'cudaMemcpyAsync(device->host)')


class CudaGraph(_CudaResource):
    """A captured sequence of work on one stream, replayed with one launch.

    ``capture(stream, fn)`` records what ``fn()`` enqueues on ``stream`` (nothing runs during the capture) and
    instantiates it; ``launch(stream)`` replays it. Buffers and shapes used by ``fn`` must stay the same for every
    replay (the caller keys graphs by them).
    """

    def __init__(self):
        self._graph = None
        self._exec = None

    def capture(self, stream: CudaStream, fn) -> 'CudaGraph':
        rt = cudart()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(rt.cudaStreamBeginCapture(stream.raw, mode), 'cudaStreamBeginCapture')
        try:
            fn()
        except BaseException:
            try:
                rt.cudaStreamEndCapture(stream.raw)
            finally:
                raise
        self._graph = check(rt.cudaStreamEndCapture(stream.raw), 'cudaStreamEndCapture')
        self._exec = check(rt.cudaGraphInstantiate(self._graph, 0), 'cudaGraphInstantiate')
        return self

    def launch(self, stream: CudaStream) -> None:
        check(cudart().cudaGraphLaunch(self._exec, stream.raw), 'cudaGraphLaunch')

    def close(self) -> None:
        rt = cudart()
        if self._exec is not None:
            rt.cudaGraphExecDestroy(self._exec)
            self._exec = None
        if self._graph is not None:
            rt.cudaGraphDestroy(self._graph)
            self._graph = None


def pinned_array(buffer: Optional[PinnedBuffer], array: np.ndarray) -> np.ndarray:
    """Copy ``array`` into the start of ``buffer`` and return that pinned view."""
    view = buffer.view(array.dtype, array.shape)
    np.copyto(view, array, casting='no')
    return view
