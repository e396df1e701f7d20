"""cuda-python wrappers (streams, pinned/device buffers, copies, CUDA graphs) on a real GPU; skipped without
cuda-python or a CUDA device."""

import numpy as np
import pytest

pytest.importorskip('cuda.bindings')

from metrabs_ros.gpu import cuda_memory as cm  # noqa: E402

if cm.device_count() == 0:
    pytest.skip('no CUDA device', allow_module_level=True)


def test_device_properties_and_round_trip():
    props = cm.device_properties(0)
    assert props['name'] and props['compute_capability'].count('.') == 1 and props['total_memory_bytes'] > 0
    stream = cm.CudaStream()
    data = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    host_in, host_out = cm.PinnedBuffer(data.nbytes), cm.PinnedBuffer(data.nbytes)
    device = cm.DeviceBuffer(data.nbytes)
    staged = cm.pinned_array(host_in, data)
    cm.copy_htod_async(device.ptr, host_in.ptr, data.nbytes, stream)
    cm.copy_dtoh_async(host_out.ptr, device.ptr, data.nbytes, stream)
    stream.synchronize()
    np.testing.assert_array_equal(host_out.view(np.uint8, data.shape), data)
    assert staged.ctypes.data == host_in.ptr
    with pytest.raises(ValueError, match='pinned buffer has'):
        host_in.view(np.float64, data.shape)


def test_cuda_graph_replays_the_captured_copies():
    stream = cm.CudaStream()
    host_in, host_out = cm.PinnedBuffer(4096), cm.PinnedBuffer(4096)
    device = cm.DeviceBuffer(4096)

    def work():
        cm.copy_htod_async(device.ptr, host_in.ptr, 4096, stream)
        cm.copy_dtoh_async(host_out.ptr, device.ptr, 4096, stream)

    graph = cm.CudaGraph().capture(stream, work)
    for value in (3, 7):
        host_in.view(np.uint8, (4096,))[:] = value
        graph.launch(stream)
        stream.synchronize()
        assert np.all(host_out.view(np.uint8, (4096,)) == value)
