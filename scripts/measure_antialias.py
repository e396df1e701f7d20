"""Crop smoothness vs antialias_factor: 256 px crops of a 960x1280 high-frequency image (sine grating, period 2.5 px,
plus pixel noise), pinhole 60 deg; mean |Laplacian| of the crop and mean |crop - f=8 crop| (gamma-encoded, 0..1)."""
import os, sys; sys.path[:0] = [os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')]
import cv2, numpy as np, torch
torch.set_num_threads(1)
from metrabs_ros.augmentation import tta_parameters
from metrabs_ros.camera import CameraModel, intrinsics_from_fov
from metrabs_ros.crops import crop_geometry
from metrabs_ros.training.warp import warp_crops
H, W, RES = 960, 1280, 256
rows, cols = np.mgrid[0:H, 0:W].astype(np.float64)
g = 0.5 + 0.35 * np.sin(2 * np.pi * (cols + 0.3 * rows) / 2.5) + np.random.default_rng(0).uniform(-0.15, 0.15, (H, W))
image = np.repeat(np.clip(np.round(255 * g), 0, 255).astype(np.uint8)[..., None], 3, 2)
cam = CameraModel.create(intrinsics_from_fov(60, (H, W))); tta = tta_parameters(1)
def crop(box, f, levels_for=None):
    geom = crop_geometry(box, cam, [0, -1, 0], RES, tta, antialias_factor=levels_for or f)
    with torch.no_grad():
        return warp_crops(torch.from_numpy(image), torch.from_numpy(cam.intrinsic_matrix.astype(np.float32)),
                          torch.from_numpy(cam.distortion_coeffs.astype(np.float32)), torch.tensor([0.0]),
                          torch.from_numpy(geom.rotations.reshape(-1, 3, 3)), torch.from_numpy(geom.intrinsics.reshape(-1, 3, 3)),
                          torch.from_numpy(geom.pyramid_levels.reshape(-1)), torch.from_numpy(tta.gammas.astype(np.float32)),
                          RES, f).numpy()[0, 0].astype(np.float64), int(geom.pyramid_levels[0, 0])
lap = lambda c: np.abs(cv2.Laplacian(c, cv2.CV_64F)).mean()
print('scale | level f=1/f=2 | mean|Lap| f=1, f=2, f=4, f=8, pre-fix f=2 | mean|crop - f=8 crop| f=1, f=2, f=4, pre-fix f=2')
for side in (280, 400, 640, 880, 1200):
    box = np.array([[W / 2 - side / 2, H / 2 - side / 2, side, side]])
    c = {f: crop(box, f) for f in (1, 2, 4, 8)}
    pre, _ = crop(box, 1, levels_for=2)
    ref = c[8][0]
    print(f'{RES / side:.2f} | {c[1][1]}/{c[2][1]} | ' + ', '.join(f'{lap(c[f][0]):.3f}' for f in (1, 2, 4, 8)) + f', {lap(pre):.3f} | '
          + ', '.join(f'{np.abs(c[f][0] - ref).mean():.4f}' for f in (1, 2, 4)) + f', {np.abs(pre - ref).mean():.4f}')
