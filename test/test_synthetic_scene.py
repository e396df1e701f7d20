"""Synthetic scene renderer and the colour-key detector fixture, checked against independent geometry.

Projections in these tests are computed by hand (pinhole formula) or by OpenCV (distortion), never by the
renderer's own camera code; rendered pixels are read back by colour from the image.
"""

import math

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from metrabs_ros.camera import CameraModel
from metrabs_ros.skeletons import get_skeleton
from metrabs_ros.synthetic_scene import (
    JOINT_NAMES, BodyParams, PersonPlacement, Primitives, animate_scene, compose_scene, render_primitives,
    render_scene, standing_pose, walking_frames)
from metrabs_ros.training.colour_key_detector import make_colour_key_detector

H, W = 480, 640
F_55 = max(H, W) / (2 * math.tan(math.radians(55) / 2))   # the FOV rule, written out independently
DIST5 = [-0.3, 0.1, 0.0015, -0.001, -0.02]


def _pinhole_px(points_mm, f, cx, cy):
    return np.stack([f * points_mm[:, 0] / points_mm[:, 2] + cx, f * points_mm[:, 1] / points_mm[:, 2] + cy], 1)


def _pixel_colour_owner(image, colours, px):
    """For pixel coordinates px [N, 2] (rounded), the index of the person colour found there (-1: none)."""
    ix, iy = np.rint(px[:, 0]).astype(int), np.rint(px[:, 1]).astype(int)
    found = image[iy, ix]                                                # [N, 3]
    same = np.all(found[:, None, :] == np.asarray(colours)[None], axis=2)  # [N, P]
    return np.where(same.any(1), same.argmax(1), -1)


def _in_image(px, h=H, w=W):
    r = np.rint(px)
    return np.all(np.isfinite(px), 1) & (r[:, 0] >= 0) & (r[:, 0] < w) & (r[:, 1] >= 0) & (r[:, 1] < h)


def _single_capsule(a, b, r, owner=0, rgb=(255, 0, 0)):
    z3 = np.zeros((0, 3))
    return Primitives(np.array([a], float), np.array([b], float), np.array([r], float), np.array([rgb], float),
                      np.array([owner]), z3, np.zeros((0, 3, 3)), z3, z3, np.zeros(0, np.int64))


def test_joint_names_are_smpl_24():
    assert JOINT_NAMES == get_skeleton('smpl_24').joint_names
    assert len(JOINT_NAMES) == 24 and JOINT_NAMES[0] == 'pelv' and JOINT_NAMES[15] == 'head'


# (a) ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('seed', [0, 1, 2, 3])
def test_visible_joints_project_onto_own_silhouette(seed):
    scene = render_scene(seed, num_people=3, flat_colours=True, background='plain', pose='mixed')
    colours = [p.colour_rgb for p in scene.people]
    assert len({tuple(c) for c in colours}) == 3
    checked = 0
    for i, person in enumerate(scene.people):
        j3d = person.joints3d_mm
        px = _pinhole_px(j3d, F_55, W / 2, H / 2)
        np.testing.assert_allclose(person.joints2d_px, px, atol=1e-6)
        inside = _in_image(px) & (j3d[:, 2] > 0)
        found = _pixel_colour_owner(scene.image_rgb, colours, px[inside])
        visible = person.joint_visible[inside]
        # never background: a joint lies inside its own body, so its pixel shows this or a nearer person
        assert np.all(found >= 0), (seed, i, np.asarray(JOINT_NAMES)[inside][found < 0])
        assert np.all(found[visible] == i)
        assert np.all(found[~visible] != i)
        assert not np.any(person.joint_visible[~inside])
        checked += int(inside.sum())
    assert checked >= 40


def test_occluded_joints_are_flagged():
    # Two people on the optical axis, one behind the other: the far one's torso is hidden by the near one.
    rng = np.random.default_rng(0)
    cam = CameraModel.create(image_hw=(H, W), fov_degrees=55)
    colours = [(255, 0, 0), (0, 0, 255)]
    people = [PersonPlacement(standing_pose(rng), BodyParams(height_mm=1750.0), (0.0, z), 0.0, c)
              for z, c in zip((3000.0, 5000.0), colours)]
    scene = compose_scene(people, cam, (H, W), camera_height_mm=1000.0, camera_pitch_deg=0.0, flat_colours=True)
    near, far = scene.people
    assert near.joint_visible.all()
    spine = [JOINT_NAMES.index(n) for n in ('pelv', 'spi1', 'spi2', 'spi3', 'neck')]
    assert not far.joint_visible[spine].any()
    px = _pinhole_px(far.joints3d_mm[spine], F_55, W / 2, H / 2)
    assert np.all(_pixel_colour_owner(scene.image_rgb, colours, px) == 0)
    # standing on the floor: the lowest rendered surface point of the near person lies on the plane y = 1000 mm
    rows, cols = np.nonzero(scene.person_index == 0)
    k = np.argmax(rows)
    y_mm = (rows[k] - H / 2) / F_55 * scene.depth_mm[rows[k], cols[k]]
    assert 1000.0 - 15.0 < y_mm <= 1000.0 + 1e-3


# (b) ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('radius_mm,depth_mm,x_mm', [(100.0, 3000.0, 0.0), (60.0, 5000.0, 0.0),
                                                      (120.0, 2500.0, 900.0)])
def test_fronto_parallel_capsule_width(radius_mm, depth_mm, x_mm):
    f, cx, cy = 500.0, 319.5, 239.5
    cam = CameraModel.create(np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]]))
    result = render_primitives(cam, (H, W), _single_capsule((x_mm, -400, depth_mm), (x_mm, 400, depth_mm), radius_mm),
                               shading=False)
    row = int(cy)  # optical-axis row: the capsule's cross-section is a circle in the x-z plane
    painted = np.flatnonzero(result.owner[row] == 0)
    assert len(painted) == painted[-1] - painted[0] + 1  # one contiguous run
    if x_mm == 0:
        assert abs(len(painted) - 2 * radius_mm * f / depth_mm) <= 1.0
    # exact silhouette edges: tangents from the camera centre to the circle (x_mm, depth_mm), radius_mm
    centre_angle = math.atan2(x_mm, depth_mm)
    half_angle = math.asin(radius_mm / math.hypot(x_mm, depth_mm))
    u_lo = cx + f * math.tan(centre_angle - half_angle)
    u_hi = cx + f * math.tan(centre_angle + half_angle)
    expected = np.flatnonzero((np.arange(W) > u_lo) & (np.arange(W) < u_hi))
    np.testing.assert_array_equal(painted, expected)
    # top end cap: tangent to the sphere at (x, -400, z) in the plane of the capsule axis
    column = int(round(cx + f * x_mm / depth_mm))
    rows = np.flatnonzero(result.owner[:, column] == 0)
    rho = math.hypot(400.0, depth_mm)
    v_top = cy + f * math.tan(math.atan2(-400.0, depth_mm) - math.asin(radius_mm / rho))
    if x_mm == 0:
        assert abs(rows[0] - v_top) <= 1.0
    # depth at the centre pixel: the nearest surface point, z = depth - radius on the axis
    if x_mm == 0:
        assert abs(result.depth_mm[row, int(round(cx))] - (depth_mm - radius_mm)) < 1.0


def test_capsule_seen_along_its_axis_is_a_disc():
    f, cx, cy = 600.0, 319.5, 239.5
    cam = CameraModel.create(np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]]))
    r, z_near = 150.0, 2500.0
    result = render_primitives(cam, (H, W), _single_capsule((0, 0, z_near), (0, 0, z_near + 600), r), shading=False)
    painted = result.owner == 0
    radius_px = f * math.tan(math.asin(r / z_near))   # silhouette of the near end sphere
    ys, xs = np.mgrid[0:H, 0:W]
    dist = np.hypot(xs - cx, ys - cy)
    assert painted[dist < radius_px - 0.75].all()
    assert not painted[dist > radius_px + 0.75].any()
    assert abs(painted[int(cy)].sum() - 2 * r * f / z_near) <= 1.0


# (c) ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('seed', [10, 11, 12])
def test_box_is_the_silhouette_extent(seed):
    scene = render_scene(seed, num_people=3, flat_colours=True, background='gradient')
    for person in scene.people:
        mask = np.all(scene.image_rgb == person.colour_rgb, axis=2)
        assert mask.sum() == person.num_pixels > 0
        ys, xs = np.nonzero(mask)
        expected = [xs.min() - 0.5, ys.min() - 0.5, xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        np.testing.assert_array_equal(person.box_xywh_px, expected)


def test_shaded_scene_has_people_and_sane_ground_truth():
    scene = render_scene(21, num_people=3, background='checker', pose='standing')
    assert scene.image_rgb.shape == (H, W, 3) and scene.image_rgb.dtype == np.uint8
    assert len(scene.people) == 3
    for i, person in enumerate(scene.people):
        mask = scene.person_index == i
        assert mask.sum() == person.num_pixels > 0
        assert np.all(np.isfinite(scene.depth_mm[mask]))
        assert np.all(np.isinf(scene.depth_mm[scene.person_index < 0]))
        # feet on the ground plane: the lowest joint is near the floor, the head ~ body height above it
        up = scene.up_vector_cam
        heights = person.joints3d_mm @ up + scene.camera_height_mm
        assert 0 < heights.min() < 200
        assert 0.75 * person.height_mm < heights.max() < person.height_mm


# (d) ---------------------------------------------------------------------------------------------------------
def test_deterministic_from_seed():
    a = render_scene(7, num_people=3, background='noise')
    b = render_scene(7, num_people=3, background='noise')
    c = render_scene(8, num_people=3, background='noise')
    np.testing.assert_array_equal(a.image_rgb, b.image_rgb)
    for pa, pb in zip(a.people, b.people):
        np.testing.assert_array_equal(pa.joints3d_mm, pb.joints3d_mm)
        np.testing.assert_array_equal(pa.box_xywh_px, pb.box_xywh_px)
    assert not np.array_equal(a.image_rgb, c.image_rgb)
    assert not np.allclose(a.people[0].joints3d_mm, c.people[0].joints3d_mm)


def test_animation_is_reproducible_and_smooth():
    t, dt = 2.5, 1 / 30
    f1 = animate_scene(4, t, num_people=2)
    f1b = animate_scene(4, t, num_people=2)
    f2 = animate_scene(4, t + dt, num_people=2)
    np.testing.assert_array_equal(f1.image_rgb, f1b.image_rgb)
    frames = list(walking_frames(4, fps=30, start_s=t, num_frames=2, num_people=2))
    np.testing.assert_array_equal(frames[1].image_rgb, f2.image_rgb)
    for p1, p2 in zip(f1.people, f2.people):
        step = np.linalg.norm(p2.joints3d_mm - p1.joints3d_mm, axis=1)
        assert 0 < step.max() < 150        # mm in 1/30 s: walking, not teleporting
        pelvis_speed_mm_s = step[0] / dt
        assert 500 < pelvis_speed_mm_s < 2500
        assert p1.num_pixels > 0


# (e) ---------------------------------------------------------------------------------------------------------
def test_colour_key_detector_finds_flat_people(tmp_path):
    scene = render_scene(2, num_people=3, flat_colours=True, background='gradient')
    absent = (255, 0, 255)
    keys = [p.colour_rgb.tolist() for p in scene.people] + [list(absent)]
    assert all(tuple(k) != absent for k in keys[:-1])
    path = make_colour_key_detector(tmp_path / 'colour_key.onnx', keys, tolerance=8, min_pixels=20)
    model = onnx.load(path)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta['metrabs_ros.contract'] == 'detector/1'
    assert 'not a person detector' in meta['description']
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['image']
    assert [o.name for o in session.get_outputs()] == ['boxes_xyxy', 'scores']
    boxes, scores = session.run(None, {'image': scene.image_rgb})
    assert boxes.dtype == np.float32 and boxes.shape == (4, 4) and scores.shape == (4,)
    for k, person in enumerate(scene.people):
        x, y, w, h = person.box_xywh_px
        np.testing.assert_allclose(boxes[k], [x, y, x + w, y + h], atol=1.0)
        assert scores[k] == 1.0
    assert scores[3] == 0.0 and np.all(boxes[3] == 0)

    # dynamic image size, and a near-miss colour within the tolerance still matches
    small = render_scene(3, image_hw=(240, 320), num_people=2, flat_colours=True, background='plain',
                         person_colours_rgb=((250, 5, 3), (0, 200, 0)))
    boxes, scores = session.run(None, {'image': small.image_rgb})
    np.testing.assert_array_equal(scores, [1, 1, 0, 0])
    for k, person in enumerate(small.people):
        x, y, w, h = person.box_xywh_px
        np.testing.assert_allclose(boxes[k], [x, y, x + w, y + h], atol=1.0)


def test_colour_key_detector_min_pixels(tmp_path):
    image = np.full((50, 60, 3), 100, np.uint8)
    image[10:13, 20:25] = (0, 0, 255)   # 15 pixels: below 20
    image[30:40, 5:9] = (0, 200, 0)     # 40 pixels
    path = make_colour_key_detector(tmp_path / 'k.onnx', [(0, 0, 255), (0, 200, 0)], min_pixels=20)
    boxes, scores = ort.InferenceSession(path, providers=['CPUExecutionProvider']).run(None, {'image': image})
    np.testing.assert_array_equal(scores, [0, 1])
    np.testing.assert_array_equal(boxes, [[0, 0, 0, 0], [4.5, 29.5, 8.5, 39.5]])


# (f) ---------------------------------------------------------------------------------------------------------
def test_distorted_camera_joints_land_on_person_pixels():
    K = np.array([[F_55, 0, W / 2], [0, F_55, H / 2], [0, 0, 1]])
    cam = CameraModel.create(K, DIST5)
    checked, pinhole_misses, total = 0, 0, 0
    for seed in (30, 31, 32):
        scene = render_scene(seed, camera=cam, num_people=3, flat_colours=True, background='plain',
                             distance_range_mm=(2800.0, 4500.0))
        colours = [p.colour_rgb for p in scene.people]
        for i, person in enumerate(scene.people):
            j3d = person.joints3d_mm
            px_cv, _ = cv2.projectPoints(j3d, np.zeros(3), np.zeros(3), K, np.array(DIST5))
            px_cv = px_cv.reshape(-1, 2)
            np.testing.assert_allclose(person.joints2d_px, px_cv, atol=1e-3)
            inside = _in_image(px_cv)
            found = _pixel_colour_owner(scene.image_rgb, colours, px_cv[inside])
            visible = person.joint_visible[inside]
            assert np.all(found >= 0)
            assert np.all(found[visible] == i)
            checked += int(visible.sum())
            # the ideal-pinhole projection of the same joints misses the person for many joints
            px_pin = _pinhole_px(j3d, F_55, W / 2, H / 2)
            ok = _in_image(px_pin) & person.joint_visible
            pinhole_misses += int(np.sum(_pixel_colour_owner(scene.image_rgb, colours, px_pin[ok]) != i))
            total += int(ok.sum())
    assert checked >= 60
    assert pinhole_misses >= 0.1 * total  # the test would notice a renderer that ignored distortion


FISHEYE4 = [0.08, -0.02, 0.004, -0.001]


@pytest.mark.parametrize('model', ['opencv', 'fisheye'])
def test_distorted_capsule_axis_and_flanks(model):
    K = np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]])
    coeffs = DIST5 if model == 'opencv' else FISHEYE4
    cam = CameraModel.create(K, coeffs, model)
    x, z, r = 1500.0, 3000.0, 80.0   # near the image's right border: strong distortion
    result = render_primitives(cam, (H, W), _single_capsule((x, -900, z), (x, 900, z), r), shading=False)
    ys = np.linspace(-800, 800, 41)
    axis = np.stack([np.full_like(ys, x), ys, np.full_like(ys, z)], 1)
    outside = np.concatenate([axis + [1.8 * r, 0, 0], axis - [1.8 * r, 0, 0]])

    def project(points):  # OpenCV as the independent reference
        if model == 'fisheye':
            px, _ = cv2.fisheye.projectPoints(points[:, None, :], np.zeros(3), np.zeros(3), K, np.array(coeffs))
        else:
            px, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), K, np.array(coeffs))
        return px.reshape(-1, 2)

    px_axis, px_out = project(axis), project(outside)
    assert _in_image(px_axis).all() and _in_image(px_out).all()
    owner_at = lambda px: result.owner[np.rint(px[:, 1]).astype(int), np.rint(px[:, 0]).astype(int)]  # noqa
    assert np.all(owner_at(px_axis) == 0)
    assert np.all(owner_at(px_out) == -1)
    # without distortion the axis would be elsewhere: many pinhole projections miss the capsule
    px_pin = _pinhole_px(axis, 600.0, 319.5, 239.5)
    assert np.mean(owner_at(px_pin[_in_image(px_pin)]) == 0) < 0.5
