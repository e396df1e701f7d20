"""Anti-aliasing by supersampling (docs/model_contract.md, "Anti-aliasing"): the pose graph renders each crop at
f·res from the pyramid level chosen for that larger render and average-pools f × f, as the official MeTRAbs code.

Checked against an independent render (OpenCV projection of the f·res crop's pixel rays, OpenCV area-resized
pyramid, a numpy bilinear sampler, an OpenCV f × f box filter), through the torch warp and through ONNX Runtime
on exported graphs, and on a high-frequency image where f = 2 must give a smoother crop than f = 1.
"""
import os

import cv2
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from metrabs_ros.augmentation import tta_parameters  # noqa: E402
from metrabs_ros.camera import CameraModel, intrinsics_from_fov  # noqa: E402
from metrabs_ros.crops import crop_geometry  # noqa: E402
from metrabs_ros.estimator import PoseEstimator  # noqa: E402
from metrabs_ros.training.export import export_pose_model  # noqa: E402
from metrabs_ros.training.fixtures import build_random_pose_graph  # noqa: E402
from metrabs_ros.training.warp import warp_crops  # noqa: E402

torch.set_num_threads(1)

RES = 64
IMAGE_HW = (240, 320)
UP = np.array([0.0, -1.0, 0.0])
K = intrinsics_from_fov(70, IMAGE_HW)
OPENCV8 = np.array([-0.12, 0.03, 0.001, -0.0015, -0.002, 0.05, 0.005, 0.001])
CAMERAS = {'pinhole': CameraModel.create(K), 'opencv8': CameraModel.create(K, OPENCV8, 'opencv')}
# Minified crops (scale < 1) on more than one pyramid level for f = 2 and 3; the last box reaches past the image.
BOXES = np.array([[40.0, 20.0, 150.0, 200.0], [150.0, 60.0, 110.0, 120.0], [10.0, 5.0, 300.0, 230.0],
                  [-100.0, -80.0, 520.0, 400.0]])


def _inputs(camera, image, geom, tta):
    num_people = geom.pyramid_levels.shape[0]
    gammas = np.tile(tta.gammas.astype(np.float32), num_people)
    return (torch.from_numpy(image), torch.from_numpy(camera.intrinsic_matrix.astype(np.float32)),
            torch.from_numpy(camera.distortion_coeffs.astype(np.float32)),
            torch.tensor([camera.model_id], dtype=torch.float32),
            torch.from_numpy(geom.rotations.reshape(-1, 3, 3)), torch.from_numpy(geom.intrinsics.reshape(-1, 3, 3)),
            torch.from_numpy(geom.pyramid_levels.reshape(-1).astype(np.int32)), torch.from_numpy(gammas))


def _noise_image(seed):
    """Pixel noise inside a black 8 px frame: samples that graze the image border (where float32 and float64
    disagree on inside/outside, amplified by the gamma re-encoding near 0) read zeros on every level."""
    image = np.random.default_rng(seed).integers(0, 256, IMAGE_HW + (3,), dtype=np.uint8)
    image[:8] = image[-8:] = 0
    image[:, :8] = image[:, -8:] = 0
    return image


def _torch_crops(camera, image, geom, tta, factor):
    with torch.no_grad():
        return warp_crops(*_inputs(camera, image, geom, tta), RES, factor).numpy()


def _bilinear_zero_padded(image, points_px):
    """image [h, w, C], points [..., 2] (x, y) → [..., C]; zeros outside (GridSample, align_corners, zeros)."""
    h, w = image.shape[:2]
    x, y = points_px[..., 0], points_px[..., 1]
    x0, y0 = np.floor(x), np.floor(y)
    out = 0
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - np.abs(x - xi)) * (1 - np.abs(y - yi))
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            values = image[np.clip(yi, 0, h - 1).astype(int), np.clip(xi, 0, w - 1).astype(int)]
            out = out + np.where(inside, weight, 0.0)[..., None] * values
    return out


def reference_crops(camera, image, geom, gammas, factor):
    """Independent render: each crop at factor·RES with its own intrinsics, box-filtered to RES.

    The large render has the crop intrinsics of the official code, ``K_big = S · K_crop`` with the pixel-centre
    aligned scaling ``S = [[f, 0, (f-1)/2], [0, f, (f-1)/2], [0, 0, 1]]``; its pixel rays are projected with
    OpenCV, sampled bilinearly from an OpenCV area-resized pyramid level, then averaged f × f by
    ``cv2.resize(INTER_AREA)`` (exactly a box filter for an integer factor) and gamma-encoded.
    """
    f = factor
    big = RES * f
    linear = (image / 255.0) ** 2.2
    pyramid = [linear]
    for _ in range(2):
        pyramid.append(cv2.resize(pyramid[-1], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA))
    scale_mat = np.array([[f, 0, (f - 1) / 2], [0, f, (f - 1) / 2], [0, 0, 1.0]])
    cols, rows = np.meshgrid(np.arange(big, dtype=np.float64), np.arange(big, dtype=np.float64))
    pixels_h = np.stack([cols, rows, np.ones_like(cols)], -1).reshape(-1, 3)
    out = []
    rotations = geom.rotations.reshape(-1, 3, 3).astype(np.float64)
    intrinsics = geom.intrinsics.reshape(-1, 3, 3).astype(np.float64)
    for r, k, level, gamma in zip(rotations, intrinsics, geom.pyramid_levels.reshape(-1), gammas):
        rays = pixels_h @ np.linalg.inv(scale_mat @ k @ r).T
        dist = camera.distortion_coeffs[:8] if camera.is_distorted else np.zeros(5)
        px, _ = cv2.projectPoints(rays.reshape(1, -1, 3), np.zeros(3), np.zeros(3), camera.intrinsic_matrix, dist)
        px = px.reshape(big, big, 2)
        at_level = (px - (2 ** level - 1) / 2) / 2 ** level
        render = _bilinear_zero_padded(pyramid[level], at_level)
        pooled = cv2.resize(render, (RES, RES), interpolation=cv2.INTER_AREA) if f > 1 else render
        out.append(np.clip(pooled, 0, 1) ** (gamma / 2.2))
    return np.stack(out).transpose(0, 3, 1, 2)


@pytest.mark.parametrize('camera_name', sorted(CAMERAS))
@pytest.mark.parametrize('factor', [2, 3])
def test_supersampled_warp_equals_box_filtered_render_at_f_times_resolution(camera_name, factor):
    camera = CAMERAS[camera_name]
    image = _noise_image(3)
    tta = tta_parameters(2)
    geom = crop_geometry(BOXES, camera, UP, RES, tta, antialias_factor=factor)
    # the level is the one for the factor·RES render: floor(-log2(scale·aug_scale·f)), clipped to 0..2
    crop_scales = geom.box_scales[:, None] * tta.scales[None]
    np.testing.assert_array_equal(geom.pyramid_levels, np.clip(np.floor(-np.log2(crop_scales * factor)), 0, 2))
    assert len(np.unique(geom.pyramid_levels)) >= 2
    crops = _torch_crops(camera, image, geom, tta, factor)
    expected = reference_crops(camera, image, geom, np.tile(tta.gammas, len(BOXES)), factor)
    assert crops.shape == expected.shape == (len(BOXES) * 2, 3, RES, RES)
    # float32 grid on pixel-to-pixel noise: ~1e-3 (the f = 1 tests allow 2e-3); a half-pixel shift of the
    # sub-samples or pooling in gamma space gives > 0.05
    np.testing.assert_allclose(crops, expected, atol=2e-3)
    assert np.abs(crops - expected).mean() < 2e-4


def test_factor_one_is_the_plain_warp_and_invalid_factors_are_refused():
    camera = CAMERAS['opencv8']
    image = _noise_image(4)
    tta = tta_parameters(1)
    geom = crop_geometry(BOXES, camera, UP, RES, tta)
    np.testing.assert_allclose(_torch_crops(camera, image, geom, tta, 1),
                               reference_crops(camera, image, geom, tta.gammas.repeat(len(BOXES)), 1), atol=2e-3)
    with pytest.raises(ValueError, match='integer >= 1'):
        crop_geometry(BOXES, camera, UP, RES, tta, antialias_factor=1.5)
    graph, _ = build_random_pose_graph(RES, 'smpl_24', 0, False, True)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match='integer >= 1'):
            graph.set_antialias_factor(bad)


def _laplacian_energy(crops):
    """Mean |Laplacian| of the gamma-encoded crops (the issue's aliasing measure)."""
    return float(np.mean([np.abs(cv2.Laplacian(c.astype(np.float64), cv2.CV_64F)).mean()
                          for c in crops.reshape(-1, RES, RES)]))


def _high_frequency_image():
    """A sine grating (period 2.5 px, above what a minified crop can represent) plus pixel noise."""
    rows, cols = np.mgrid[0:IMAGE_HW[0], 0:IMAGE_HW[1]].astype(np.float64)
    grating = 0.5 + 0.35 * np.sin(2 * np.pi * (cols + 0.3 * rows) / 2.5)
    noise = np.random.default_rng(0).uniform(-0.15, 0.15, IMAGE_HW)
    value = np.clip(np.round(255 * (grating + noise)), 0, 255).astype(np.uint8)
    return np.repeat(value[..., None], 3, axis=2)


def _crops_by_factor(box_side_px, factors=(1, 2, 8)):
    camera = CAMERAS['pinhole']
    image = _high_frequency_image()
    box = np.array([[160.0 - box_side_px / 2, 120.0 - box_side_px / 2, box_side_px, box_side_px]])
    tta = tta_parameters(1)
    crops = {}
    for factor in factors:
        geom = crop_geometry(box, camera, UP, RES, tta, antialias_factor=factor)
        crops[factor] = _torch_crops(camera, image, geom, tta, factor)
    # the pre-fix behaviour: the level chosen for f = 2, but no supersampling and no pooling
    pre_fix = _torch_crops(camera, image, crop_geometry(box, camera, UP, RES, tta, antialias_factor=2), tta, 1)
    return crops, pre_fix


@pytest.mark.parametrize('box_side_px', [70.0, 100.0])
def test_supersampling_smooths_a_high_frequency_image(box_side_px):
    """Crop scale 0.91 and 0.64: minified by up to 2x, where the pyramid has nothing coarser to offer (level 0 for
    f = 1 and 2). f = 2 must give a smoother crop than f = 1 and one much closer to a heavily supersampled (f = 8)
    crop. The pre-fix f = 2 was the f = 1 crop here (same level, no pooling): these assertions fail on it."""
    crops, pre_fix = _crops_by_factor(box_side_px)
    energy = {f: _laplacian_energy(c) for f, c in crops.items()}
    error = {f: float(np.abs(crops[f] - crops[8]).mean()) for f in (1, 2)}
    assert energy[2] < 0.8 * energy[1], energy
    assert energy[8] < energy[2], energy
    assert error[2] < 0.5 * error[1], error
    assert _laplacian_energy(pre_fix) > 0.99 * energy[1]


def test_pre_fix_factor_two_was_sharper_than_factor_one():
    """Crop scale 0.4: f = 1 samples pyramid level 1, f = 2 renders at 0.8 from level 0 and pools. The pre-fix code
    took level 0 without pooling: a crop 2.8x sharper than f = 1 and far from the f = 8 crop (the issue's
    report); supersampled f = 2 is no sharper than f = 1 and closer to the f = 8 crop than either."""
    crops, pre_fix = _crops_by_factor(160.0)
    energy = {f: _laplacian_energy(c) for f, c in crops.items()}
    error = {f: float(np.abs(crops[f] - crops[8]).mean()) for f in (1, 2)}
    error_pre_fix = float(np.abs(pre_fix - crops[8]).mean())
    assert _laplacian_energy(pre_fix) > 2 * energy[1], (energy, _laplacian_energy(pre_fix))
    assert energy[2] < energy[1], energy
    assert error[2] < 0.5 * error[1] and error[2] < 0.2 * error_pre_fix, (error, error_pre_fix)


class _WarpOnly(torch.nn.Module):
    """The pose graph's warp as its own exported graph (so ONNX Runtime's crops can be compared pixel by pixel)."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, image, intrinsics, coeffs, model, rotations, crop_intrinsics, levels, gammas):
        return warp_crops(image, intrinsics, coeffs, model, rotations, crop_intrinsics, levels, gammas, RES,
                          self.factor)


def test_onnx_runtime_runs_the_supersampled_warp(tmp_path):
    import onnx
    import onnxruntime as ort
    camera = CAMERAS['opencv8']
    image = _noise_image(5)
    tta = tta_parameters(2)
    geom = crop_geometry(BOXES, camera, UP, RES, tta, antialias_factor=2)
    inputs = _inputs(camera, image, geom, tta)
    names = ['image', 'intrinsics', 'coeffs', 'model', 'rotations', 'crop_intrinsics', 'levels', 'gammas']
    path = os.fspath(tmp_path / 'warp_f2.onnx')
    with torch.no_grad():
        torch.onnx.export(_WarpOnly(2), inputs, path, input_names=names, output_names=['crops'], opset_version=17,
                          dynamo=False, dynamic_axes={'image': {0: 'H', 1: 'W'}, 'rotations': {0: 'N'},
                                                      'crop_intrinsics': {0: 'N'}, 'levels': {0: 'N'},
                                                      'gammas': {0: 'N'}, 'crops': {0: 'N'}})
    assert 'AveragePool' in {node.op_type for node in onnx.load(path).graph.node}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    crops = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0]
    expected = reference_crops(camera, image, geom, np.tile(tta.gammas, len(BOXES)), 2)
    np.testing.assert_allclose(crops, expected, atol=2e-3)


@pytest.fixture(scope='module')
def supersampled_model(tmp_path_factory):
    graph, meta = build_random_pose_graph(128, 'smpl_24', 0, False, True)
    graph.set_antialias_factor(2)
    path = os.fspath(tmp_path_factory.mktemp('antialias') / 'pose_f2.onnx')
    meta = dict(meta)
    meta.pop('antialias_factor', None)
    export_pose_model(graph, path, meta)
    return graph, path


def test_estimator_runs_the_graph_factor_and_equals_the_torch_graph(supersampled_model, colour_key_detector):
    import onnx
    graph, path = supersampled_model
    model = onnx.load(path)
    assert {p.key: p.value for p in model.metadata_props}['antialias_factor'] == '2'
    assert 'AveragePool' in {node.op_type for node in model.graph.node}
    estimator = PoseEstimator(path, colour_key_detector, backend='cpu', num_threads=1)
    assert estimator.antialias_factor == 2
    camera = CameraModel.create(intrinsics_from_fov(60, (480, 640)), [-0.1, 0.02, 0, 0, 0])
    image = np.random.default_rng(6).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    boxes = np.array([[100.0, 60.0, 180.0, 360.0], [380.0, 100.0, 120.0, 250.0]])
    result = estimator.estimate_poses(image, boxes, camera=camera, num_aug=3)
    same = estimator.estimate_poses(image, boxes, camera=camera, num_aug=3, antialias_factor=2)
    np.testing.assert_array_equal(result.poses3d_mm, same.poses3d_mm)
    # the same geometry through the float32 torch graph on the full frame (no window): pyramid levels for the
    # 2·res render, supersampled warp
    tta = tta_parameters(3)
    geom = crop_geometry(boxes, camera, UP, 128, tta, antialias_factor=2)
    with torch.no_grad():
        poses = graph.eval()(torch.from_numpy(image), torch.from_numpy(camera.intrinsic_matrix.astype(np.float32)),
                             torch.from_numpy(camera.distortion_coeffs.astype(np.float32)),
                             torch.tensor([camera.model_id], dtype=torch.float32),
                             torch.from_numpy(geom.rotations), torch.from_numpy(geom.intrinsics),
                             torch.from_numpy(geom.pyramid_levels), torch.from_numpy(tta.gammas.astype(np.float32)),
                             torch.from_numpy(tta.flips.astype(np.float32)))
    np.testing.assert_allclose(result.poses3d_mm, poses.numpy().mean(axis=1), atol=0.05)
    with pytest.raises(ValueError, match='--antialias-factor 1'):
        estimator.estimate_poses(image, boxes, camera=camera, antialias_factor=1)


def test_models_without_the_metadata_key_do_not_supersample(fixture_pose_model, colour_key_detector, tmp_path):
    """Models exported before the key existed (the embedded model, older files) are f = 1 models: they keep working
    with the default and refuse any other factor with a message naming the export option."""
    import onnx
    model = onnx.load(fixture_pose_model)
    kept = [p for p in model.metadata_props if p.key != 'antialias_factor']
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    older = os.fspath(tmp_path / 'older.onnx')
    onnx.save(model, older)
    image = np.random.default_rng(7).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    boxes = np.array([[60.0, 40.0, 100.0, 180.0]])
    results = []
    for path in (fixture_pose_model, older):
        estimator = PoseEstimator(path, colour_key_detector, backend='cpu', num_threads=1)
        assert estimator.antialias_factor == 1
        results.append(estimator.estimate_poses(image, boxes).poses3d_mm)
        explicit = estimator.estimate_poses(image, boxes, antialias_factor=1)
        np.testing.assert_array_equal(results[-1], explicit.poses3d_mm)
        with pytest.raises(ValueError, match='antialias-factor 2'):
            estimator.estimate_poses(image, boxes, antialias_factor=2)
    np.testing.assert_array_equal(results[0], results[1])
    embedded = os.path.join(os.path.dirname(__import__('metrabs_ros').__file__), 'models', 'metrabs_default.onnx')
    if os.path.isfile(embedded):
        estimator = PoseEstimator(embedded, colour_key_detector, backend='cpu', num_threads=1)
        assert estimator.antialias_factor == 1
        assert len(estimator.estimate_poses(image, boxes)) == 1


def test_export_command_fixes_the_factor_and_info_shows_it(tmp_path, capsys):
    import argparse

    import onnx
    from metrabs_ros.cli import main
    from metrabs_ros.training.checkpoint import save_checkpoint
    from metrabs_ros.training.commands import cmd_export
    graph, meta = build_random_pose_graph(RES, 'smpl_24', 0, False, True)
    config = {'backbone': 'tiny', 'backbone_options': {'out_channels': 64, 'coord_channels': True},
              'resolution': RES, 'joint_names': list(graph.joint_names), 'joint_edges': meta['joint_edges'],
              'skeletons': meta['skeletons'], 'default_skeleton': meta['default_skeleton'], 'name': 'aa'}
    checkpoint = save_checkpoint(os.fspath(tmp_path / 'model.pt'), graph, config)
    out = os.fspath(tmp_path / 'model_f2.onnx')
    assert cmd_export(argparse.Namespace(checkpoint=checkpoint, out=out, fp16=False, no_parity=False,
                                         antialias_factor=2)) == 0
    assert 'parity: max' in capsys.readouterr().out
    model = onnx.load(out)
    assert {p.key: p.value for p in model.metadata_props}['antialias_factor'] == '2'
    assert 'AveragePool' in {node.op_type for node in model.graph.node}
    assert main(['info', out]) == 0
    assert 'antialias factor (crop supersampling, fixed at export): 2' in capsys.readouterr().out
