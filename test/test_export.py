"""Export of the torch pose graph to the ONNX model contract, run with real ONNX Runtime sessions."""
import json

import numpy as np
import pytest

torch = pytest.importorskip('torch')
onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

from metrabs_ros.augmentation import tta_parameters  # noqa: E402
from metrabs_ros.camera import CameraModel, intrinsics_from_fov  # noqa: E402
from metrabs_ros.crops import crop_geometry  # noqa: E402
from metrabs_ros.model_contract import POSE_INPUTS, read_pose_model_info  # noqa: E402
from metrabs_ros.skeletons import get_skeleton  # noqa: E402
from metrabs_ros.training.export import (example_inputs, export_pose_model, parity_check,  # noqa: E402
                                         run_onnx)
from metrabs_ros.training.fixtures import (build_oracle_pose_graph, build_random_pose_graph,  # noqa: E402
                                           make_random_pose_model, oracle_head_logits, template_pose_mm)
from metrabs_ros.training.pose_graph import INPUT_NAMES  # noqa: E402

RES = 128


@pytest.fixture(scope='module')
def fixture_model(tmp_path_factory):
    path = tmp_path_factory.mktemp('export') / 'pose.onnx'
    return make_random_pose_model(path, resolution=RES, skeleton='smpl_24', seed=0)


@pytest.fixture(scope='module')
def fixture_graph():
    return build_random_pose_graph(RES, 'smpl_24', seed=0)[0]


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


def test_exported_model_passes_checker_and_has_contract_io(fixture_model):
    model = onnx.load(fixture_model)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == list(INPUT_NAMES) == list(POSE_INPUTS)
    assert [o.name for o in model.graph.output] == ['poses3d_aug_mm']
    dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ['P', 'A', 24, 3]
    image_dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert image_dims == ['H', 'W', 3]
    op_types = {node.op_type for node in model.graph.node}
    assert 'GridSample' in op_types
    # Plain ONNX only (TensorRT-friendly): no custom domains, no matrix inverse / control flow.
    assert all(node.domain in ('', 'ai.onnx') for node in model.graph.node)
    assert not op_types & {'Inverse', 'Det', 'Loop', 'If', 'Scan'}
    opset = {o.domain: o.version for o in model.opset_import}
    assert opset[''] >= 16


def test_metadata_is_parsed_by_the_runtime(fixture_model):
    session = _session(fixture_model)
    info = read_pose_model_info(session, str(fixture_model))
    smpl = get_skeleton('smpl_24')
    assert info.resolution == RES
    assert info.joint_names == smpl.joint_names
    assert info.default_skeleton == 'smpl_24'
    assert np.array_equal(info.skeletons['smpl_24'].indices, np.arange(24))
    assert [tuple(e) for e in info.joint_edges.tolist()] == [tuple(e) for e in smpl.edges]
    assert not info.has_uncertainty
    assert len(info.bone_lengths_mm) == len(smpl.edges)
    meta = session.get_modelmeta().custom_metadata_map
    assert meta['metrabs_ros.contract'] == 'pose/1'
    assert json.loads(meta['depth_cube_mm']) == 2200 and json.loads(meta['stride']) == 32


def test_union_skeleton_model_offers_every_format(tmp_path):
    path = make_random_pose_model(tmp_path / 'multi.onnx', skeleton=['smpl_24', 'h36m_17', 'coco_19'],
                                  with_uncertainty=True, seed=1)
    session = _session(path)
    info = read_pose_model_info(session, str(path))
    assert info.has_uncertainty
    assert set(info.skeletons) == {'smpl_24', 'h36m_17', 'coco_19'}
    for name in info.skeletons:
        mapping = info.skeleton(name)
        assert tuple(info.joint_names[i] for i in mapping.indices) == get_skeleton(name).joint_names
    outputs = run_onnx(path, example_inputs(2, 3, (90, 120), resolution=RES))
    assert outputs[0].shape == (2, 3, len(info.joint_names), 3)
    assert outputs[1].shape == (2, 3, len(info.joint_names))
    assert np.all(outputs[1] > 0)


@pytest.mark.parametrize('num_people,num_aug,image_hw,model', [
    (1, 1, (97, 131), 'opencv'), (2, 3, (120, 160), 'opencv'), (3, 5, (240, 320), 'fisheye'),
    (4, 2, (64, 48), 'opencv')])
def test_onnx_runtime_matches_torch(fixture_model, fixture_graph, num_people, num_aug, image_hw, model):
    inputs = example_inputs(num_people, num_aug, image_hw, seed=num_people, distortion_model=model,
                            resolution=RES)
    outputs = run_onnx(fixture_model, inputs)
    assert outputs[0].shape == (num_people, num_aug, 24, 3)     # dynamic P, A, H, W
    assert np.all(np.isfinite(outputs[0]))
    assert parity_check(fixture_graph, fixture_model, inputs=inputs) <= 0.5


def test_fixture_model_is_deterministic_and_plausible(tmp_path, fixture_model):
    again = make_random_pose_model(tmp_path / 'again.onnx', resolution=RES, skeleton='smpl_24', seed=0)
    inputs = example_inputs(2, 5, (240, 320), resolution=RES)
    first, second = run_onnx(fixture_model, inputs)[0], run_onnx(again, inputs)[0]
    np.testing.assert_array_equal(first, second)
    # People in front of the camera with a human-sized skeleton (the fixture's pose prior).
    assert np.all(first[..., 2] > 500)
    height_mm = np.ptp(first[..., 1], axis=-1)
    assert np.all((height_mm > 900) & (height_mm < 2500)), height_mm


def test_exported_oracle_graph_reproduces_known_pose(tmp_path):
    """The ONNX graph's geometry (reconstruction, left/right swap, back-rotation) checked against a known pose:
    the crop model is an oracle whose heatmaps encode that pose as each crop sees it."""
    res = 256
    names = get_skeleton('smpl_24').joint_names
    pose = template_pose_mm(names) * 0.85
    idx = {n: i for i, n in enumerate(names)}
    pose[idx['lwri']] += [80, -520, -300]                      # asymmetric: left arm raised
    pose_cam = pose + np.array([500.0, 100.0, 5000.0])
    hw = (480, 640)
    camera = CameraModel.create(intrinsics_from_fov(70, hw), [-0.1, 0.02, 0, 0, 0], 'opencv')
    px = camera.project_px(pose_cam)
    center, extent = (px.min(0) + px.max(0)) / 2, (px.max(0) - px.min(0)).max() * 1.6
    boxes = np.array([[center[0] - extent / 2, center[1] - extent / 2, extent, extent]])
    tta = tta_parameters(3)
    geom = crop_geometry(boxes, camera, np.array([0.0, -1.0, 0.0]), res, tta)
    logits = oracle_head_logits(pose_cam, geom.rotations.reshape(-1, 3, 3), geom.intrinsics.reshape(-1, 3, 3),
                                tta.flips, names, res)
    graph = build_oracle_pose_graph(logits, names, res, ridge=0.0)
    inputs = (torch.zeros(hw + (3,), dtype=torch.uint8),
              torch.from_numpy(camera.intrinsic_matrix.astype(np.float32)),
              torch.from_numpy(camera.distortion_coeffs.astype(np.float32)), torch.tensor([0.0]),
              torch.from_numpy(geom.rotations), torch.from_numpy(geom.intrinsics),
              torch.from_numpy(geom.pyramid_levels), torch.from_numpy(tta.gammas.astype(np.float32)),
              torch.from_numpy(tta.flips.astype(np.float32)))
    path = export_pose_model(graph, tmp_path / 'oracle.onnx', {'skeletons': {
        'smpl_24': {'indices': list(range(24)), 'joint_names': list(names), 'edges': []}},
        'default_skeleton': 'smpl_24'}, inputs=inputs)
    poses = run_onnx(path, inputs)[0]
    assert tta.flips.any()
    assert np.abs(poses - pose_cam).max() < 1.0
