"""The lifting head (metrabs_ros.training.lifting_head): its start state against an independent numpy soft-argmax,
the 2D maps untouched by the 3D loss, training through train_pose, and export to the ONNX contract with ONNX Runtime
parity."""
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from metrabs_ros.training.backbones import TinyBackbone  # noqa: E402
from metrabs_ros.training.lifting_head import LiftingHead  # noqa: E402
from metrabs_ros.training.pose_graph import build_pose_graph  # noqa: E402

RES = 64


def _numpy_soft_argmax_px(logits, res, stride):
    """logits [h, w] → (x, y) crop px: softmax, marginal expectations on i/(n−1), × L + stride/2."""
    p = np.exp(logits - logits.max())
    p /= p.sum()
    h, w = logits.shape
    span = (res - 1) - (res - 1) % stride
    gx = np.arange(w) / (w - 1) * span + stride / 2
    gy = np.arange(h) / (h - 1) * span + stride / 2
    return np.array([(p.sum(0) * gx).sum(), (p.sum(1) * gy).sum()])


def test_start_state_is_the_image_aligned_skeleton_at_the_base_scale():
    torch.manual_seed(0)
    head = LiftingHead(40, 5, RES, stride=4, keypoint_channels=24, hidden=16, base_span_mm=1800.0)
    features = torch.randn(2, 40, RES // 4, RES // 4)
    with torch.no_grad():
        c2, c3, unc = head(features)
    assert unc is None and c2.shape == (2, 5, 2) and c3.shape == (2, 5, 3)
    w = head.conv.weight.detach().numpy()[:, :, 0, 0]
    b = head.conv.bias.detach().numpy()
    for n in range(2):
        for j in range(5):
            logits = np.einsum('c,chw->hw', w[j], features[n, :24].numpy()) + b[j]
            px = _numpy_soft_argmax_px(logits, RES, 4)
            np.testing.assert_allclose(c2[n, j].numpy(), px, atol=1e-3)
            np.testing.assert_allclose(c3[n, j, :2].numpy(), (px - RES / 2) * 1800.0 / RES, atol=0.05)
            assert c3[n, j, 2] == 0.0


def test_three_d_loss_trains_the_lifter_and_context_but_not_the_2d_maps():
    torch.manual_seed(1)
    head = LiftingHead(40, 5, RES, stride=4, keypoint_channels=24, hidden=16)
    with torch.no_grad():   # past the zero start of the last layer, so gradients reach the inputs
        head.lifter[-1].weight.normal_(0.0, 0.1)
    features = torch.randn(2, 40, RES // 4, RES // 4, requires_grad=True)
    _, c3, _ = head(features)
    c3.square().sum().backward()
    assert head.conv.weight.grad is None or not head.conv.weight.grad.any()
    assert head.lifter[-1].weight.grad.abs().sum() > 0
    # the context channels reach the 3D output; the keypoint channels only through the (detached) 2D joints
    assert features.grad[:, 24:].abs().sum() > 0 and not features.grad[:, :24].any()
    head.zero_grad()
    c2, _, _ = head(features)
    c2.sum().backward()
    assert head.conv.weight.grad.abs().sum() > 0


def test_lifting_graph_exports_to_the_contract_with_runtime_parity(tmp_path):
    pytest.importorskip('onnxruntime')
    from metrabs_ros.model_contract import read_pose_model_info
    from metrabs_ros.skeletons import get_skeleton
    from metrabs_ros.training.export import export_pose_model, parity_check
    torch.manual_seed(2)
    names = list(get_skeleton('h36m_17').joint_names)
    graph = build_pose_graph(names, RES, backbone=TinyBackbone(out_channels=40, stride=4), head='lifting',
                             head_options={'keypoint_channels': 24, 'hidden': 32, 'base_span_mm': 1900.0})
    with torch.no_grad():   # a non-trivial lifter so that the parity covers it
        graph.head.lifter[-1].weight.normal_(0.0, 0.01)
    path = export_pose_model(graph.eval(), tmp_path / 'lift.onnx', {'name': 'lifting fixture'})
    import onnxruntime as ort
    info = read_pose_model_info(ort.InferenceSession(str(path), providers=['CPUExecutionProvider']), str(path))
    assert info.resolution == RES and len(info.joint_names) == 17 and info.metadata['stride'] == '4'
    assert parity_check(graph, path, num_people=2, num_aug=2, image_hw=(96, 128)) < 0.5   # mm


def test_training_runs_with_the_lifting_head_and_saves_a_loadable_checkpoint(tmp_path):
    from metrabs_ros.camera import CameraModel
    from metrabs_ros.synthetic_scene import render_scene
    from metrabs_ros.training import augment as aug
    from metrabs_ros.training import train_pose as tp
    from metrabs_ros.training.checkpoint import load_checkpoint
    cam = CameraModel.create(image_hw=(240, 320), fov_degrees=70)
    scenes = [aug.scene_to_sample(render_scene(seed, num_people=2, image_hw=(240, 320), camera=cam,
                                               distance_range_mm=(2500, 5000))) for seed in range(2)]
    data = [aug.scene_sample_to_crop_sample(s, p, 64) for s in scenes for p in range(aug.scene_people_count(s))]
    cfg = tp.load_config(None, {
        'model': {'backbone': 'tiny', 'backbone_options': {'out_channels': 40, 'stride': 4}, 'resolution': 64,
                  'head': 'lifting', 'head_options': {'keypoint_channels': 24, 'hidden': 32}},
        'augment': {'enabled': False},
        'optim': {'steps': 6, 'batch_size': 4, 'lr': 3e-3, 'warmup_steps': 2},
        'loss': {'absolute_start_step': 0.5, 'weak_perspective_steps': 0.25, 'lifter_true_2d_fraction': 0.5},
        'run': {'num_workers': 0, 'log_every': 2, 'validate_every': 0, 'checkpoint_every': 100, 'threads': 1}})
    result = tp.train(cfg, data, str(tmp_path), log=lambda *a: None)
    graph, config = load_checkpoint(result['final_checkpoint'])
    assert config['head'] == 'lifting' and isinstance(graph.head, LiftingHead)
    assert graph.head.stride == 4 and config['joint_names'] == list(tp.joint_layout(cfg).raw_names)


def test_lifter_reads_given_2d_joints_and_the_prediction_where_none_is_given():
    torch.manual_seed(3)
    head = LiftingHead(40, 4, RES, stride=4, keypoint_channels=24, hidden=16, base_span_mm=1600.0)
    features = torch.randn(1, 40, RES // 4, RES // 4)
    given = torch.tensor([[[10.0, 20.0], [float('nan'), float('nan')], [40.0, 50.0], [float('nan'), 5.0]]])
    with torch.no_grad():
        c2_free, c3_free, _ = head(features)
        c2, c3, _ = head(features, given)
    torch.testing.assert_close(c2, c2_free)                       # the 2D output is always the prediction
    expected = torch.where(torch.isnan(given), c2_free, given)
    # entries are replaced coordinate by coordinate (x NaN → predicted x, y given)
    expected[0, 3] = torch.stack([c2_free[0, 3, 0], torch.tensor(5.0)])
    torch.testing.assert_close(c3[0, :, :2], (expected[0] - RES / 2) * 1600.0 / RES)


def test_size_loss_sees_only_the_overall_scale():
    from metrabs_ros.training.losses import skeleton_size_l1_m
    rng = np.random.default_rng(5)
    true = torch.from_numpy(rng.normal(scale=300.0, size=(3, 10, 3)))
    valid = torch.ones(3, 10, dtype=torch.bool)
    valid[2, 5:] = False
    angle = 0.7
    rot = torch.tensor([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    moved = true @ rot.T + torch.tensor([100.0, -50.0, 4000.0])
    assert float(skeleton_size_l1_m(moved, true, valid)) < 1e-9
    # 0.8 × the skeleton: |0.8 − 1| · size, size = mean distance of the labelled joints from their mean (numpy)
    sizes = []
    for n in range(3):
        t = true[n].numpy()[valid[n].numpy()]
        sizes.append(np.linalg.norm(t - t.mean(0), axis=1).mean())
    expected = 0.2 * np.mean(sizes) / 1000.0
    np.testing.assert_allclose(float(skeleton_size_l1_m(0.8 * true, true, valid)), expected, rtol=1e-9)


def test_pyramid_lifting_graph_exports_in_fp16_and_converts_with_its_resizes(tmp_path):
    """The shipped architecture in small (MoveNet pyramid with a narrow trunk + context + lifting head): the FP16
    export runs under ONNX Runtime close to the FP32 graph, and fp16-numerics' FP32→FP16 conversion keeps the
    pyramid's Resize scales in float32 (ONNX requires it)."""
    ort = pytest.importorskip('onnxruntime')
    import onnx
    from metrabs_ros.skeletons import get_skeleton
    from metrabs_ros.training.export import example_inputs, export_for_deployment, run_onnx
    from metrabs_ros.training.fp16_numerics import convert_to_fp16
    from metrabs_ros.training.movenet_fpn import MoveNetFPN
    from test_pretrained_backbones import TINY_SPEC
    torch.manual_seed(4)
    names = list(get_skeleton('h36m_17').joint_names)
    graph = build_pose_graph(names, RES, backbone=MoveNetFPN(TINY_SPEC, global_channels=8), head='lifting',
                             head_options={'hidden': 32, 'centre_prior': 4.0}).eval()
    fp32 = export_for_deployment(graph, tmp_path / 'fp32.onnx', {'name': 'fixture'}, log=lambda *a: None)
    assert fp32['parity_max_abs_mm'] < 0.5
    fp16 = export_for_deployment(graph, tmp_path / 'fp16.onnx', {'name': 'fixture'}, fp16=True, parity=False,
                                 log=lambda *a: None)
    inputs = example_inputs(2, 1, (96, 128), 0, 'opencv', RES)
    reference = run_onnx(tmp_path / 'fp32.onnx', inputs)[0]
    half = run_onnx(fp16['path'], inputs)[0]
    assert np.all(np.isfinite(half)) and np.max(np.abs(half - reference)) < 0.02 * np.abs(reference).max()
    converted = convert_to_fp16(onnx.load(str(tmp_path / 'fp32.onnx')))
    session = ort.InferenceSession(converted.SerializeToString(), providers=['CPUExecutionProvider'])
    from metrabs_ros.training.pose_graph import INPUT_NAMES
    out = session.run(None, {n: t.numpy() for n, t in zip(INPUT_NAMES, inputs)})[0]
    assert np.all(np.isfinite(out)) and np.max(np.abs(out - reference)) < 0.02 * np.abs(reference).max()
