"""Backgrounds: real photos shipped with scikit-image (offline) and procedural images.

Photos are split between training and evaluation (``VAL_PHOTOS`` only in the 'val' split). Procedural
backgrounds: a ground plane with a tiled / noisy texture seen through the actual camera (horizon follows pitch
and roll) under a sky / wall gradient, or a smooth random colour field with shapes.
"""

from __future__ import annotations

import functools
from typing import List

import cv2
import numpy as np

TRAIN_PHOTOS = ('astronaut', 'coffee', 'rocket', 'stereo_motorcycle', 'cat', 'camera', 'coins', 'brick',
                'grass', 'gravel', 'immunohistochemistry', 'hubble_deep_field', 'page', 'text', 'colorwheel')
VAL_PHOTOS = ('chelsea', 'moon', 'clock', 'retina')


@functools.lru_cache(maxsize=2)
def load_photos(split: str) -> List[np.ndarray]:
    """uint8 RGB photos for ``split`` ('train' or 'val'); empty if scikit-image is missing."""
    try:
        import skimage.data as data
    except ImportError:
        return []
    out = []
    for name in (VAL_PHOTOS if split == 'val' else TRAIN_PHOTOS):
        try:
            im = getattr(data, name)()
        except Exception:   # a data file that needs a download: skip it
            continue
        if isinstance(im, tuple):
            im = im[0]
        im = np.asarray(im)
        if im.dtype == bool:
            im = im.astype(np.uint8) * 255
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(im[..., :3].astype(np.uint8)))
    return out


def photo_background(rng: np.random.Generator, photos: List[np.ndarray], height: int, width: int) -> np.ndarray:
    """A random crop (scale, flip, colour jitter) of a random photo, ``[H, W, 3]`` float32."""
    im = photos[rng.integers(len(photos))]
    ph, pw = im.shape[:2]
    scale = max(height / ph, width / pw) * rng.uniform(1.0, 2.0)
    ch, cw = height / scale, width / scale
    y0 = rng.uniform(0, ph - ch)
    x0 = rng.uniform(0, pw - cw)
    M = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]])
    if rng.uniform() < 0.5:
        M = np.array([[-1, 0, width - 1], [0, 1, 0]]) @ np.vstack([M, [0, 0, 1]])
    out = cv2.warpAffine(im, M, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    out = out.astype(np.float32) * rng.uniform(0.6, 1.3, 3).astype(np.float32) + rng.uniform(-20, 20)
    return out


def ground_background(rng: np.random.Generator, ground_px_to_world, height: int, width: int) -> np.ndarray:
    """Ground plane with a procedural texture below the horizon and a gradient above.

    ``ground_px_to_world(u, v)`` maps pixel coordinates to ground-plane points ``(x, y)`` in metres (NaN where the
    pixel ray does not hit the ground)."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    gx, gy = ground_px_to_world(u, v)
    hit = np.isfinite(gx)
    sky_top = rng.uniform(60, 255, 3)
    sky_bottom = rng.uniform(60, 255, 3)
    t = (v / max(height - 1, 1))[..., None]
    img = sky_top * (1 - t) + sky_bottom * t
    c1 = rng.uniform(20, 230, 3)
    c2 = c1 * rng.uniform(0.5, 1.2, 3)
    tile = rng.uniform(0.3, 2.0)
    kind = rng.integers(3)
    gxs = np.where(hit, gx, 0) / tile
    gys = np.where(hit, gy, 0) / tile
    if kind == 0:     # checker tiles
        m = ((np.floor(gxs) + np.floor(gys)) % 2)[..., None]
    elif kind == 1:   # planks / stripes
        m = (np.floor(gxs * 2) % 2)[..., None] * 0.6
    else:             # smooth noise
        m = (0.5 + 0.25 * np.sin(gxs * 3.1) * np.cos(gys * 2.3) + 0.25 * np.sin(gxs * 0.7 + gys * 1.3))[..., None]
    ground = c1 * (1 - m) + c2 * m
    img = np.where(hit[..., None], ground, img)
    img += rng.normal(0, rng.uniform(1, 8), img.shape)
    return img.astype(np.float32)


def blob_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Low-frequency random colour field plus random rectangles and ellipses."""
    small = rng.uniform(0, 255, (rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.float32)
    img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(rng.integers(3, 12)):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        cx, cy = int(rng.uniform(0, width)), int(rng.uniform(0, height))
        a, b = int(rng.uniform(5, width / 2)), int(rng.uniform(5, height / 2))
        if rng.uniform() < 0.5:
            cv2.rectangle(img, (cx - a, cy - b), (cx + a, cy + b), colour, -1)
        else:
            cv2.ellipse(img, (cx, cy), (a, b), float(rng.uniform(0, 180)), 0, 360, colour, -1)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 3.0))
    return img + rng.normal(0, rng.uniform(1, 6), img.shape).astype(np.float32)


def sample_background(rng: np.random.Generator, split: str, height: int, width: int, ground_px_to_world,
                      p_photo: float = 0.5) -> np.ndarray:
    photos = load_photos(split)
    r = rng.uniform()
    if photos and r < p_photo:
        return photo_background(rng, photos, height, width)
    if r < p_photo + (1 - p_photo) * 0.6:
        return ground_background(rng, ground_px_to_world, height, width)
    return blob_background(rng, height, width)
