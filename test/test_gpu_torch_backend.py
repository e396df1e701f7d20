"""PyTorch backend: the PoseGraph module through TorchPoseBackend agrees with ONNX Runtime on the exported file.

On CPU-only machines the same backend runs with device='cpu' (the ConstantsOnDevice mode forced on, so its
memoisation is exercised); the CUDA tests (eager and CUDA-graph replays) run where torch sees a GPU.
"""

import numpy as np
import pytest
import torch

from metrabs_ros.gpu.model_description import describe_onnx
from metrabs_ros.gpu.torch_backend import TorchPoseBackend, constants_mode, find_checkpoint
from metrabs_ros.training.export import example_inputs, export_pose_model, run_onnx
from metrabs_ros.training.fixtures import build_random_pose_graph
from metrabs_ros.training.pose_graph import INPUT_NAMES

CASES = [(2, 1, (96, 128), 0), (3, 5, (120, 160), 1), (2, 1, (96, 128), 2)]


@pytest.fixture(scope='module')
def graph_and_onnx(tmp_path_factory):
    graph, meta = build_random_pose_graph(128, 'smpl_24', seed=3, with_uncertainty=True)
    path = str(tmp_path_factory.mktemp('gpu_torch') / 'pose_unc_128.onnx')
    export_pose_model(graph, path, meta)
    return graph, path


def _feeds(num_people, num_aug, hw, seed, resolution=128):
    inputs = example_inputs(num_people, num_aug, hw, seed=seed, resolution=resolution)
    return inputs, {n: t.numpy() for n, t in zip(INPUT_NAMES, inputs)}


def _check_against_onnxruntime(backend, onnx_path, limit_mm):
    for num_people, num_aug, hw, seed in CASES:
        inputs, feeds = _feeds(num_people, num_aug, hw, seed)
        poses, unc = backend.run(None, feeds)
        ref_poses, ref_unc = run_onnx(onnx_path, inputs)
        assert poses.shape == (num_people, num_aug, 24, 3) and poses.dtype == np.float32
        assert np.all(np.isfinite(ref_poses))
        assert np.max(np.abs(poses - ref_poses)) <= limit_mm
        assert np.max(np.abs(unc - ref_unc)) <= limit_mm
        # the requested subset in the requested order, like InferenceSession.run
        only_unc, = backend.run(['uncertainty_aug'], feeds)
        np.testing.assert_array_equal(only_unc, unc)


def test_cpu_backend_with_device_mode_matches_onnxruntime(graph_and_onnx):
    graph, onnx_path = graph_and_onnx
    backend = TorchPoseBackend(graph, describe_onnx(onnx_path), device='cpu', use_constants_mode=True)
    _check_against_onnxruntime(backend, onnx_path, limit_mm=1.0)
    assert backend.mode.hits > 0          # constants were reused across calls
    assert backend.name == 'torch-cpu' and backend.output_names == ['poses3d_aug_mm', 'uncertainty_aug']
    with pytest.raises(ValueError, match='missing inputs'):
        backend.run(None, {'image': np.zeros((8, 8, 3), np.uint8)})


def test_constants_mode_memoises_only_constant_factories():
    mode = constants_mode('cpu')
    with mode:
        a = torch.arange(5, dtype=torch.float32)
        b = torch.arange(5, dtype=torch.float32)
        c = torch.arange(6, dtype=torch.float32)
        d = torch.as_tensor(np.arange(3))           # from an array: not a constant of the call, not memoised
        e = torch.as_tensor(np.arange(3))
        z = torch.zeros(3)                           # fill factories are placed on the device, never memoised
    assert a is b and a is not c and d is not e and mode.hits == 1
    assert a.device.type == 'cpu' and z.device.type == 'cpu'
    np.testing.assert_array_equal(c.numpy(), np.arange(6))


def test_estimator_runs_on_the_torch_backend(graph_and_onnx):
    """The backend plugs into PoseEstimator as its session (what the lead wires up) and gives ONNX Runtime's poses."""
    from metrabs_ros.estimator import PoseEstimator
    from metrabs_ros.synthetic_scene import render_scene
    graph, onnx_path = graph_and_onnx
    estimator = PoseEstimator(onnx_path, backend='cpu', num_threads=1)
    scene = render_scene(seed=5, image_hw=(240, 320), num_people=2, flat_colours=True)
    boxes = np.array([p.box_xywh_px for p in scene.people], np.float32)
    kwargs = dict(camera=scene.camera, world_up_vector=scene.up_vector_cam, num_aug=2)
    expected = estimator.estimate_poses(scene.image_rgb, boxes, **kwargs)
    backend = TorchPoseBackend(graph, describe_onnx(onnx_path), device='cpu')
    estimator.session = backend
    estimator.crop_to_window = not backend.wants_full_frame
    got = estimator.estimate_poses(scene.image_rgb, boxes, **kwargs)
    assert np.max(np.abs(got.poses3d_mm - expected.poses3d_mm)) <= 1.0
    assert np.max(np.abs(got.poses2d_px - expected.poses2d_px)) <= 0.5


def test_from_checkpoint_and_checkpoint_lookup(graph_and_onnx, tmp_path):
    from metrabs_ros.training.checkpoint import save_checkpoint
    from metrabs_ros.training.backbones import Backbone
    from metrabs_ros.training.checkpoint import graph_from_config
    config = {'backbone': 'tiny', 'backbone_options': {'out_channels': 32}, 'resolution': 64,
              'joint_names': list(graph_and_onnx[0].joint_names)}
    torch.manual_seed(0)
    graph = graph_from_config(config)
    assert isinstance(graph.backbone, type(Backbone('tiny')))
    onnx_path = str(tmp_path / 'tiny64.onnx')
    export_pose_model(graph, onnx_path, inputs=example_inputs(1, 1, (64, 80), resolution=64))
    assert find_checkpoint(onnx_path) is None
    save_checkpoint(str(tmp_path / 'tiny64.pt'), graph, config)
    assert find_checkpoint(onnx_path) == str(tmp_path / 'tiny64.pt')
    backend = TorchPoseBackend.from_checkpoint(find_checkpoint(onnx_path), onnx_path, device='cpu')
    inputs, feeds = _feeds(2, 2, (64, 80), 4, resolution=64)
    got, = backend(feeds)
    assert np.max(np.abs(got - run_onnx(onnx_path, inputs)[0])) <= 1.0
    assert backend.get_modelmeta().custom_metadata_map['metrabs_ros.contract'] == 'pose/1'


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device for torch')


@needs_cuda
def test_cuda_backend_eager_and_graphs_match_onnxruntime(graph_and_onnx):
    graph, onnx_path = graph_and_onnx
    backend = TorchPoseBackend(graph, describe_onnx(onnx_path), device='cuda', precision='fp32',
                               cuda_graphs=True, capture_after=2)
    for _ in range(3):  # eager, then captured, then replayed
        _check_against_onnxruntime(backend, onnx_path, limit_mm=1.0)
    assert backend.capture_failures == [] and len(backend._graphs) == 2


@needs_cuda
def test_cuda_backend_fp16_within_5mm(graph_and_onnx):
    graph, onnx_path = graph_and_onnx
    backend = TorchPoseBackend(graph, describe_onnx(onnx_path), device='cuda', precision='fp16')
    for _ in range(3):
        _check_against_onnxruntime(backend, onnx_path, limit_mm=5.0)
