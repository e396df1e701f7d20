"""Geometry of the torch pose graph (metrabs_ros.training), checked against independent computations:
OpenCV projections of known 3D points, the numpy reference modules, and an oracle network whose heatmaps
encode a known 3D pose."""
import cv2
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from metrabs_ros.absolute_pose import reconstruct_absolute as reconstruct_absolute_np  # noqa: E402
from metrabs_ros.augmentation import tta_parameters  # noqa: E402
from metrabs_ros.camera import CameraModel, intrinsics_from_fov  # noqa: E402
from metrabs_ros.crops import crop_geometry, crop_sampling_grid_px as crop_sampling_grid_np  # noqa: E402
from metrabs_ros.heatmap_decoding import (heatmap_to_image_px as to_px_np,  # noqa: E402
                                          heatmap_to_metric_mm as to_mm_np, soft_argmax as soft_argmax_np)
from metrabs_ros.skeletons import get_skeleton  # noqa: E402
from metrabs_ros.training.absolute_pose import reconstruct_absolute  # noqa: E402
from metrabs_ros.training.fixtures import (build_oracle_pose_graph, oracle_head_logits,  # noqa: E402
                                           template_pose_mm)
from metrabs_ros.training.heads import MetrabsHead  # noqa: E402
from metrabs_ros.training.warp import crop_sampling_grid_px, warp_crops  # noqa: E402

RES = 128
IMAGE_HW = (480, 640)
UP = np.array([0.0, -1.0, 0.0])
K = intrinsics_from_fov(90, IMAGE_HW)
# Moderate enough that the model stays invertible (monotonic) over the whole image.
OPENCV8 = np.array([-0.12, 0.03, 0.001, -0.0015, -0.002, 0.05, 0.005, 0.001])
FISHEYE4 = np.array([0.08, -0.03, 0.02, -0.01])
CAMERAS = {
    'pinhole': CameraModel.create(K),
    'opencv8': CameraModel.create(K, OPENCV8, 'opencv'),
    'fisheye': CameraModel.create(K, FISHEYE4, 'fisheye'),
}


def _camera_inputs(camera):
    return (torch.from_numpy(camera.intrinsic_matrix.astype(np.float32)),
            torch.from_numpy(camera.distortion_coeffs.astype(np.float32)),
            torch.tensor([camera.model_id], dtype=torch.float32))


def _project_cv2(name, points_cam):
    """Independent projection (OpenCV) of camera-frame points [N, 3] to pixels [N, 2]."""
    pts = np.asarray(points_cam, np.float64).reshape(1, -1, 3)
    zero = np.zeros(3)
    if name == 'fisheye':
        px, _ = cv2.fisheye.projectPoints(pts, zero, zero, K, FISHEYE4)
    else:
        px, _ = cv2.projectPoints(pts, zero, zero, K, OPENCV8 if name == 'opencv8' else np.zeros(5))
    return px.reshape(-1, 2)


def _blob_image(center_px, sigma_px):
    """Black RGB image with a Gaussian blob whose *linear-light* intensity is exp(-d²/2σ²)."""
    rows, cols = np.mgrid[0:IMAGE_HW[0], 0:IMAGE_HW[1]].astype(np.float64)
    linear = np.exp(-((cols - center_px[0]) ** 2 + (rows - center_px[1]) ** 2) / (2 * sigma_px ** 2))
    value = np.round(255.0 * linear ** (1 / 2.2)).astype(np.uint8)
    return np.repeat(value[..., None], 3, axis=2)


def _warp(camera, image, geom, tta):
    num_people, num_aug = geom.pyramid_levels.shape
    gammas = np.tile(tta.gammas.astype(np.float32), num_people)
    with torch.no_grad():
        crops = warp_crops(torch.from_numpy(image), *_camera_inputs(camera),
                           torch.from_numpy(geom.rotations.reshape(-1, 3, 3)),
                           torch.from_numpy(geom.intrinsics.reshape(-1, 3, 3)),
                           torch.from_numpy(geom.pyramid_levels.reshape(-1)),
                           torch.from_numpy(gammas), RES)
    return crops.numpy(), gammas


@pytest.mark.parametrize('camera_name', sorted(CAMERAS))
@pytest.mark.parametrize('box_px,sigma_px', [(200.0, 3.0), (460.0, 7.0)])
def test_warp_places_point_where_crop_projection_predicts(camera_name, box_px, sigma_px):
    camera = CAMERAS[camera_name]
    point_cam = np.array([2400.0, -1000.0, 3000.0])   # far off-axis: strong distortion
    center_px = _project_cv2(camera_name, point_cam[None])[0]
    image = _blob_image(center_px, sigma_px)
    box_center = center_px + np.array([-0.2, 0.15]) * box_px   # the point is off the box centre
    boxes = np.array([[box_center[0] - box_px / 2, box_center[1] - box_px / 2, box_px, box_px]])
    tta = tta_parameters(5)
    geom = crop_geometry(boxes, camera, UP, RES, tta)
    crops, gammas = _warp(camera, image, geom, tta)

    in_crop = np.einsum('nij,j->ni', geom.intrinsics.reshape(-1, 3, 3).astype(np.float64)
                        @ geom.rotations.reshape(-1, 3, 3).astype(np.float64), point_cam)
    expected = in_crop[:, :2] / in_crop[:, 2:]
    linear = crops[:, 0] ** (2.2 / gammas[:, None, None])       # undo the gamma re-encoding
    rows, cols = np.mgrid[0:RES, 0:RES]
    mass = linear.sum((1, 2))
    centroid = np.stack([(linear * cols).sum((1, 2)), (linear * rows).sum((1, 2))], -1) / mass[:, None]
    assert np.all(mass > 5), mass
    err = np.linalg.norm(centroid - expected, axis=-1)
    assert np.all(err < 0.5), (geom.pyramid_levels, err, centroid, expected)
    if box_px > 300:
        assert geom.pyramid_levels.max() >= 1   # the coarse levels are exercised
    # The crops really differ (rotation, zoom, mirroring move the blob).
    assert np.ptp(expected[:, 0]) > 5


def _bilinear_zero_padded(image, points_px):
    """Reference bilinear sampler: image [h, w, C], points [..., 2] (x, y) → [..., C]; zeros outside."""
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


@pytest.mark.parametrize('camera_name', ['pinhole', 'fisheye'])
def test_warp_equals_reference_sampler_on_every_pyramid_level(camera_name):
    camera = CAMERAS[camera_name]
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, IMAGE_HW + (3,), dtype=np.uint8)
    boxes = np.array([[300.0, 150.0, 100.0, 120.0], [100.0, 50.0, 300.0, 320.0], [60.0, 20.0, 560.0, 440.0]])
    tta = tta_parameters(3)
    geom = crop_geometry(boxes, camera, UP, RES, tta)
    assert set(np.unique(geom.pyramid_levels)) == {0, 1, 2}
    crops, gammas = _warp(camera, image, geom, tta)

    linear = (image / 255.0) ** 2.2
    pyramid = [linear]
    for _ in range(2):   # 2×2 box filter = area resize by exactly 1/2
        pyramid.append(cv2.resize(pyramid[-1], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA))
    rotations = geom.rotations.reshape(-1, 3, 3).astype(np.float64)
    intrinsics = geom.intrinsics.reshape(-1, 3, 3).astype(np.float64)
    for i, (r, k, level) in enumerate(zip(rotations, intrinsics, geom.pyramid_levels.reshape(-1))):
        grid = crop_sampling_grid_np(camera, r, k, RES)
        # Pixel i of level l covers full-resolution pixels i·2^l .. i·2^l + 2^l - 1.
        grid_level = (grid - (2 ** level - 1) / 2) / 2 ** level
        expected = _bilinear_zero_padded(pyramid[level], grid_level) ** (gammas[i] / 2.2)
        # float32 grid (~1e-4 px) on pixel-to-pixel random noise: ~1e-3 differences; a wrong level offset gives ~0.3
        np.testing.assert_allclose(crops[i].transpose(1, 2, 0), expected, atol=2e-3, err_msg=f'crop {i}')


@pytest.mark.parametrize('camera_name', sorted(CAMERAS))
def test_rays_behind_camera_sample_zeros(camera_name):
    camera = CAMERAS[camera_name]
    image = np.full(IMAGE_HW + (3,), 255, np.uint8)
    # A wide crop (130° across) looking 55° to the side: part of its rays point behind the camera, part into
    # the image.
    angle = np.deg2rad(55)
    rotation = np.array([[np.cos(angle), 0, -np.sin(angle)], [0, 1, 0], [np.sin(angle), 0, np.cos(angle)]])
    crop_k = np.array([[30.0, 0, RES / 2], [0, 30.0, RES / 2], [0, 0, 1]])
    geom_r = torch.from_numpy(rotation[None].astype(np.float32))
    geom_k = torch.from_numpy(crop_k[None].astype(np.float32))
    with torch.no_grad():
        crop = warp_crops(torch.from_numpy(image), *_camera_inputs(camera), geom_r, geom_k,
                          torch.zeros(1, dtype=torch.int32), torch.ones(1), RES)[0, 0].numpy()
    cols, rows = np.meshgrid(np.arange(RES), np.arange(RES))
    rays = np.stack([cols, rows, np.ones_like(cols)], -1) @ (rotation.T @ np.linalg.inv(crop_k)).T
    behind = rays[..., 2] <= 0
    assert 0.2 < behind.mean() < 0.8
    assert np.all(crop[behind] == 0)
    grid = crop_sampling_grid_np(camera, rotation, crop_k, RES)
    h, w = IMAGE_HW
    with np.errstate(invalid='ignore'):
        inside = ((grid[..., 0] >= 1) & (grid[..., 0] <= w - 2) & (grid[..., 1] >= 1) & (grid[..., 1] <= h - 2))
        outside = ~((grid[..., 0] > -1) & (grid[..., 0] < w) & (grid[..., 1] > -1) & (grid[..., 1] < h))
    assert inside.sum() > 50
    np.testing.assert_allclose(crop[inside], 1.0, atol=1e-5)
    assert np.all(crop[outside | behind] == 0)


@pytest.mark.parametrize('camera_name', sorted(CAMERAS))
@pytest.mark.parametrize('dtype,tol_px', [(torch.float64, 1e-6), (torch.float32, 1e-3)])
def test_warp_grid_equals_numpy_reference(camera_name, dtype, tol_px):
    camera = CAMERAS[camera_name]
    boxes = np.array([[50.0, 40.0, 120.0, 300.0], [420.0, 200.0, 200.0, 260.0], [250.0, 100.0, 60.0, 80.0]])
    tta = tta_parameters(5)
    geom = crop_geometry(boxes, camera, UP, RES, tta)
    rotations = geom.rotations.reshape(-1, 3, 3).astype(np.float64)
    intrinsics = geom.intrinsics.reshape(-1, 3, 3).astype(np.float64)
    with torch.no_grad():
        grid, valid = crop_sampling_grid_px(
            torch.from_numpy(camera.intrinsic_matrix).to(dtype),
            torch.from_numpy(camera.distortion_coeffs).to(dtype),
            torch.tensor([camera.model_id], dtype=dtype),
            torch.from_numpy(rotations).to(dtype), torch.from_numpy(intrinsics).to(dtype), RES)
    reference = np.stack([crop_sampling_grid_np(camera, r, k, RES) for r, k in zip(rotations, intrinsics)])
    finite = np.isfinite(reference).all(-1)
    assert np.array_equal(valid.numpy(), finite)
    assert finite.mean() > 0.9
    assert np.abs(grid.numpy().astype(np.float64) - reference)[finite].max() < tol_px


def _noisy_pose_inputs(seed, num_crops=6, noise=True):
    """2D/3D network-like predictions of a template pose at random positions in front of random crops."""
    rng = np.random.default_rng(seed)
    skel = get_skeleton('smpl_24')
    template = template_pose_mm(skel.joint_names)
    focal = rng.uniform(150, 400, num_crops)
    crop_k = np.zeros((num_crops, 3, 3))
    crop_k[:, 0, 0] = crop_k[:, 1, 1] = focal
    crop_k[:, :2, 2] = RES / 2
    crop_k[:, 2, 2] = 1
    translation = np.stack([rng.uniform(-300, 300, num_crops), rng.uniform(-300, 300, num_crops),
                            focal * 1700 / (0.8 * RES)], -1)
    absolute = template[None] + translation[:, None]
    proj = np.einsum('bij,bkj->bki', crop_k, absolute)
    coords2d = proj[..., :2] / proj[..., 2:]
    rel = absolute - absolute.mean(1, keepdims=True) + 1100.0
    if noise:
        coords2d = coords2d + rng.normal(0, 3, coords2d.shape)
        rel = rel + rng.normal(0, 30, rel.shape)
    return coords2d, rel, crop_k, absolute


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_reconstruct_absolute_matches_numpy_reference(seed):
    coords2d, rel, crop_k, _ = _noisy_pose_inputs(seed)
    coords2d[0, :3] = [[5.0, 60.0], [126.0, 10.0], [60.0, 20.0]]   # a few joints outside the validity box
    expected = reconstruct_absolute_np(coords2d, rel, crop_k, resolution=RES)
    for dtype, tol_mm in [(torch.float64, 1e-6), (torch.float32, 1e-2)]:
        got = reconstruct_absolute(torch.from_numpy(coords2d).to(dtype), torch.from_numpy(rel).to(dtype),
                                   torch.from_numpy(crop_k).to(dtype), resolution=RES).numpy()
        assert np.abs(got - expected).max() < tol_mm, (dtype, np.abs(got - expected).max())


def test_reconstruct_absolute_recovers_translation_from_exact_inputs():
    coords2d, rel, crop_k, absolute = _noisy_pose_inputs(3, noise=False)
    args = [torch.from_numpy(coords2d).float(), torch.from_numpy(rel).float(), torch.from_numpy(crop_k).float()]
    # Without the ridge term the least squares solution is exact.
    got = reconstruct_absolute(*args, resolution=RES, ridge=0.0).numpy()
    assert np.abs(got - absolute).max() < 1.0
    # The official ridge (1e-2 on the normalised translation) biases it: up to ~0.6 % of the depth here (it
    # depends on the whole batch through the RMS conditioning; the numpy reference agrees, see the test above).
    got = reconstruct_absolute(*args, resolution=RES).numpy()
    depth_mm = absolute[..., 2]
    assert np.all(np.linalg.norm(got - absolute, axis=-1) < 0.01 * depth_mm)
    assert np.abs(got - absolute).max() > 0.1


def test_head_decoding_matches_numpy_reference():
    rng = np.random.default_rng(0)
    num_j, depth, hm = 5, 8, 8
    head = MetrabsHead(4, num_j, 256, depth_bins=depth)
    logits = rng.normal(0, 2, (3, num_j * (1 + depth), hm, hm)).astype(np.float32)
    coords2d, coords3d, unc = head.decode(torch.from_numpy(logits))
    assert unc is None
    exp2d = to_px_np(soft_argmax_np(logits[:, :num_j], axes=(3, 2)), 256)
    logits3d = logits[:, num_j:].reshape(3, depth, num_j, hm, hm)   # channel P + d·P + j
    exp3d = to_mm_np(soft_argmax_np(logits3d, axes=(4, 3, 1)), 256)
    np.testing.assert_allclose(coords2d.numpy(), exp2d, atol=1e-3)
    np.testing.assert_allclose(coords3d.numpy(), exp3d, atol=1e-2)


# ---- oracle network (fixtures.oracle_head_logits: heatmaps built from a known pose) checks the flip and
# back-rotation geometry ----------------------------------------------------------------------------------

def test_flipped_and_unflipped_crops_agree_in_camera_frame():
    res = 256
    names = get_skeleton('smpl_24').joint_names
    pose = template_pose_mm(names) * 0.85
    # Asymmetric: left arm raised forward, right knee bent.
    idx = {n: i for i, n in enumerate(names)}
    pose[idx['lelb']] += [60, -250, -150]
    pose[idx['lwri']] += [80, -520, -300]
    pose[idx['lhan']] += [80, -580, -330]
    pose[idx['rkne']] += [0, -80, -250]
    pose_cam = pose + np.array([-600.0, 150.0, 4500.0])
    camera = CAMERAS['opencv8']
    px = _project_cv2('opencv8', pose_cam)
    center, extent = (px.min(0) + px.max(0)) / 2, (px.max(0) - px.min(0)).max() * 1.6
    boxes = np.array([[center[0] - extent / 2, center[1] - extent / 2, extent, extent],
                      [center[0] - extent / 2 + 20, center[1] - extent / 2 - 10, extent * 1.1, extent * 1.1]])
    tta = tta_parameters(5)
    geom = crop_geometry(boxes, camera, UP, res, tta)
    logits = oracle_head_logits(pose_cam, geom.rotations.reshape(-1, 3, 3), geom.intrinsics.reshape(-1, 3, 3),
                                np.tile(tta.flips, len(boxes)), names, res)
    # ridge=0: exact inputs give the exact pose (the official ridge adds a few mm of bias, tested above).
    graph = build_oracle_pose_graph(logits, names, res, ridge=0.0)
    image = torch.zeros(IMAGE_HW + (3,), dtype=torch.uint8)
    inputs = [image, *_camera_inputs(camera), torch.from_numpy(geom.rotations),
              torch.from_numpy(geom.intrinsics), torch.from_numpy(geom.pyramid_levels),
              torch.from_numpy(tta.gammas.astype(np.float32)), torch.from_numpy(tta.flips.astype(np.float32))]
    with torch.no_grad():
        poses = graph(*inputs).numpy()
        inputs[-1] = torch.zeros_like(inputs[-1])   # pretend no crop was mirrored
        poses_without_swap = graph(*inputs).numpy()
    assert poses.shape == (2, 5, len(names), 3)
    assert tta.flips.any() and not tta.flips.all()
    err = np.linalg.norm(poses - pose_cam, axis=-1)
    assert err.max() < 1.0, err.max(axis=-1)
    # Without the left/right handling the mirrored augmentations are far off (so the check above has teeth).
    err_no_swap = np.linalg.norm(poses_without_swap - pose_cam, axis=-1).max(-1)
    assert np.all(err_no_swap[:, tta.flips] > 200) and np.all(err_no_swap[:, ~tta.flips] < 1.0)
