"""Drawing: 2D skeleton overlays and a 3D side view, with OpenCV (no GUI needed)."""

from __future__ import annotations

import numpy as np

PALETTE_RGB = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255)], np.uint8)


def person_colour(index: int) -> tuple:
    return tuple(int(c) for c in PALETTE_RGB[index % len(PALETTE_RGB)])


def draw_poses_2d(image_rgb: np.ndarray, result, ids=None, thickness: int = 2) -> np.ndarray:
    """A copy of ``image_rgb`` with boxes, bones and joints of every person in ``result`` (a PoseResult)."""
    import cv2
    canvas = np.ascontiguousarray(image_rgb.copy())
    edges = np.asarray(result.joint_edges, np.int64).reshape(-1, 2)
    for i in range(len(result.boxes)):
        colour = person_colour(i if ids is None else int(ids[i]))
        x, y, w, h, score = [float(v) for v in result.boxes[i]]
        cv2.rectangle(canvas, (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h))), colour, 1)
        cv2.putText(canvas, f'{score:.2f}', (int(x), max(int(y) - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    colour, 1, cv2.LINE_AA)
        joints = result.poses2d_px[i]
        finite = np.all(np.isfinite(joints), axis=-1)
        pts = np.round(np.where(finite[:, None], joints, 0)).astype(np.int32)
        drawable = [(a, b) for a, b in edges if finite[a] and finite[b]]
        for a, b in drawable:   # dark outline first, so bones stay visible on clothing of the same colour
            cv2.line(canvas, tuple(pts[a]), tuple(pts[b]), (20, 20, 20), thickness + 2, cv2.LINE_AA)
        for a, b in drawable:
            cv2.line(canvas, tuple(pts[a]), tuple(pts[b]), colour, thickness, cv2.LINE_AA)
        for j in np.flatnonzero(finite):
            cv2.circle(canvas, tuple(pts[j]), thickness + 1, (255, 255, 255), -1, cv2.LINE_AA)
    return canvas


def draw_poses_3d(result, size_px: int = 480, elevation_deg: float = 20.0, azimuth_deg: float = -35.0,
                  ids=None) -> np.ndarray:
    """An RGB image of the 3D poses (camera frame, mm) seen from a virtual camera above and to the side, with a
    1 m ground grid at the people's feet level; the real camera is drawn as a small pyramid at the origin."""
    import cv2
    canvas = np.full((size_px, size_px, 3), 250, np.uint8)
    poses = np.asarray(result.poses3d_mm, np.float64).reshape(-1, np.shape(result.poses3d_mm)[-2] or 1, 3)
    valid = poses[np.all(np.isfinite(poses), axis=-1)]
    centre = np.median(valid, axis=0) if len(valid) else np.array([0.0, 0.0, 3000.0])
    floor_y = valid[:, 1].max() if len(valid) else 1500.0
    extent = max(3000.0, 2.2 * np.max(np.abs(valid - centre)) if len(valid) else 3000.0)
    el, az = np.deg2rad(elevation_deg), np.deg2rad(azimuth_deg)
    Ry = np.array([[np.cos(az), 0, np.sin(az)], [0, 1, 0], [-np.sin(az), 0, np.cos(az)]])
    Rx = np.array([[1, 0, 0], [0, np.cos(el), -np.sin(el)], [0, np.sin(el), np.cos(el)]])
    R = Rx @ Ry

    def to_px(points):
        view = (np.asarray(points) - centre) @ R.T
        return np.round(view[..., :2] / extent * size_px + size_px / 2).astype(np.int32)

    for k in np.arange(-3, 4):
        for a, b in [((k * 1000, floor_y, -3000), (k * 1000, floor_y, 3000)),
                     ((-3000, floor_y, k * 1000), (3000, floor_y, k * 1000))]:
            pa, pb = to_px(np.array(a) + [centre[0], 0, centre[2]]), to_px(np.array(b) + [centre[0], 0, centre[2]])
            cv2.line(canvas, tuple(pa), tuple(pb), (215, 215, 215), 1, cv2.LINE_AA)
    cam = np.array([[0, 0, 0], [-150, -100, 250], [150, -100, 250], [150, 100, 250], [-150, 100, 250]], float)
    cam_px = to_px(cam)
    for a, b in [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (2, 3), (3, 4), (4, 1)]:
        cv2.line(canvas, tuple(cam_px[a]), tuple(cam_px[b]), (90, 90, 90), 1, cv2.LINE_AA)
    edges = np.asarray(result.joint_edges, np.int64).reshape(-1, 2)
    for i, pose in enumerate(poses):
        colour = person_colour(i if ids is None else int(ids[i]))
        pts = to_px(np.nan_to_num(pose))
        for a, b in edges:
            cv2.line(canvas, tuple(pts[a]), tuple(pts[b]), colour, 2, cv2.LINE_AA)
    cv2.putText(canvas, '3D view (1 m grid)', (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (60, 60, 60), 1, cv2.LINE_AA)
    return canvas


def side_by_side(image_rgb: np.ndarray, result, ids=None) -> np.ndarray:
    """2D overlay and 3D view next to each other (same height)."""
    import cv2
    overlay = draw_poses_2d(image_rgb, result, ids)
    view = draw_poses_3d(result, size_px=overlay.shape[0], ids=ids)
    return np.concatenate([overlay, view], axis=1)
