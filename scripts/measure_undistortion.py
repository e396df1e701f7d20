"""Official 5-iteration vs converged undistortion of the 5 box points, random boxes in a 640x480 image, fx=fy=500."""
import os, sys; sys.path[:0] = [os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')]
import numpy as np
from metrabs_ros.camera import CameraModel
from metrabs_ros.augmentation import tta_parameters
from metrabs_ros.crops import crop_geometry, valid_boxes
K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
rng = np.random.default_rng(0)
n = 4000
w = rng.uniform(60, 300, n); h = rng.uniform(120, 460, n)
x = rng.uniform(-80, 720, n) - w / 2; y = rng.uniform(-60, 540, n) - h / 2
boxes = np.stack([x, y, w, h], 1)
over = np.maximum.reduce([-x, -y, x + w - 640, y + h - 480])          # px past the border (<0: inside)
for name, c in [('k1=-0.10', [-0.10, 0, 0, 0, 0]), ('k1=-0.20', [-0.20, 0, 0, 0, 0]), ('k1=-0.28', [-0.28, 0, 0, 0, 0]),
                ('rational8', [-0.28, 0.07, 0, 0, -0.01, 0.02, 0.003, 0.0005])]:
    cam = CameraModel.create(K, c)
    con = crop_geometry(boxes, cam, [0, -1, 0], 384, tta_parameters(1))
    off = crop_geometry(boxes, cam, [0, -1, 0], 384, tta_parameters(1), undistortion='official')
    cx, cy = x + w / 2, y + h / 2
    pts = np.stack([np.stack([cx, cy], 1), np.stack([cx, y], 1), np.stack([x + w, cy], 1), np.stack([cx, y + h], 1), np.stack([x, cy], 1)], 1)
    xy_d = (pts - K[:2, 2]) / 500
    eo = (np.linalg.norm(cam.distort_normalized(cam.undistort_normalized(xy_d, method='official')) - xy_d, axis=-1) * 500).max(1)
    valid = valid_boxes(con)
    R1 = off.rotations[:, 0].astype(np.float64); R2 = con.rotations[:, 0].astype(np.float64)
    ang = np.degrees(np.linalg.norm(R1 - R2, axis=(1, 2)) / np.sqrt(2))
    zoom = np.abs(off.box_scales / con.box_scales - 1) * 100
    for label, m in (('inside', valid & (over <= 0)), ('<=30px past', valid & (over > 0) & (over <= 30)),
                     ('30-80px past', valid & (over > 30))):
        print(f'{name:9s} {label:11s} n={m.sum():4d} official short by: median {np.median(eo[m]):.3f} px, '
              f'95% {np.percentile(eo[m], 95):.2f} px, max {eo[m].max():.2f} px | crop rotation differs 95% {np.percentile(ang[m], 95):.3f} max {ang[m].max():.3f} deg, '
              f'zoom 95% {np.percentile(zoom[m], 95):.2f} max {zoom[m].max():.2f} %')
    print(f'{name:9s} boxes beyond the invertible field of view (skipped in both modes): {(~valid).sum()}')
