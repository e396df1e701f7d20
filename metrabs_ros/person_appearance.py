"""A small colour descriptor of each detected person, for the tracker's identity cue (numpy only).

Clothing colour separates most people that cross each other in the image. The descriptor is a pair of colour
histograms — upper body and lower body — of the central part of the box (the borders are mostly background):
8 hue × 3 saturation bins for coloured pixels plus 4 brightness bins for grey/black/white ones, per half,
L1-normalised and square-rooted so that the dot product of two descriptors is their Bhattacharyya coefficient
(1 = identical colour distributions). :func:`appearance_distance` is ``1 - coefficient`` in ``[0, 1]``.
"""

from __future__ import annotations

import numpy as np

HUE_BINS, SATURATION_BINS, GREY_BINS = 8, 3, 4
HALF_DIMS = HUE_BINS * SATURATION_BINS + GREY_BINS
DESCRIPTOR_DIMS = 2 * HALF_DIMS
MAX_SAMPLES_PER_AXIS = 48            # pixels are subsampled on a grid of at most this many per axis


def _hsv(rgb: np.ndarray):
    """Hue in [0, 1), saturation and value in [0, 1] of ``float [..., 3]`` RGB in [0, 1]."""
    maximum, minimum = rgb.max(axis=-1), rgb.min(axis=-1)
    chroma = maximum - minimum
    safe = np.where(chroma > 0, chroma, 1.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hue = np.where(maximum == r, ((g - b) / safe) % 6, np.where(maximum == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = np.where(chroma > 0, hue / 6.0, 0.0) % 1.0
    saturation = np.where(maximum > 0, chroma / np.where(maximum > 0, maximum, 1.0), 0.0)
    return hue, saturation, maximum


def _histogram(rgb: np.ndarray) -> np.ndarray:
    hue, saturation, value = _hsv(rgb.reshape(-1, 3))
    coloured = (saturation >= 0.25) & (value >= 0.2)
    hue_bin = np.minimum((hue * HUE_BINS).astype(np.int64), HUE_BINS - 1)
    sat_bin = np.minimum(((saturation - 0.25) / 0.75 * SATURATION_BINS).astype(np.int64), SATURATION_BINS - 1)
    grey_bin = np.minimum((value * GREY_BINS).astype(np.int64), GREY_BINS - 1)
    index = np.where(coloured, hue_bin * SATURATION_BINS + np.clip(sat_bin, 0, None),
                     HUE_BINS * SATURATION_BINS + grey_bin)
    return np.bincount(index, minlength=HALF_DIMS).astype(np.float64)


def appearance_descriptors(image_rgb: np.ndarray, boxes_xywh_px: np.ndarray) -> np.ndarray:
    """Descriptors ``float64 [P, DESCRIPTOR_DIMS]`` of the people in ``boxes_xywh_px`` ``[P, >=4]`` (x, y, w, h px)
    of a ``uint8 [H, W, 3]`` RGB image; a box with no pixels in the image gets all zeros (no appearance cue)."""
    boxes = np.asarray(boxes_xywh_px, np.float64)
    boxes = boxes.reshape(len(boxes), boxes.shape[-1] if boxes.ndim == 2 else 4)
    out = np.zeros((len(boxes), DESCRIPTOR_DIMS))
    height, width = image_rgb.shape[:2]
    for i, (x, y, w, h) in enumerate(boxes[:, :4]):             # loop over people (a handful)
        x0, x1 = int(max(x + 0.25 * w, 0)), int(min(x + 0.75 * w, width))
        y0, y1 = int(max(y + 0.15 * h, 0)), int(min(y + 0.9 * h, height))
        if x1 - x0 < 2 or y1 - y0 < 4:
            continue
        step_x = max((x1 - x0) // MAX_SAMPLES_PER_AXIS, 1)
        step_y = max((y1 - y0) // MAX_SAMPLES_PER_AXIS, 1)
        crop = image_rgb[y0:y1:step_y, x0:x1:step_x].astype(np.float64) / 255.0
        half = max(len(crop) * 4 // 9, 1)                       # 0.15..0.48 of the box: the upper body
        for part, pixels in enumerate((crop[:half], crop[half:])):
            hist = _histogram(pixels) if pixels.size else np.zeros(HALF_DIMS)
            total = hist.sum()
            if total > 0:
                out[i, part * HALF_DIMS:(part + 1) * HALF_DIMS] = np.sqrt(hist / total / 2.0)
    return out


def appearance_distance(a: np.ndarray, b: np.ndarray) -> float:
    """``1 - Bhattacharyya coefficient`` of two descriptors, in [0, 1]; 0 if either has no appearance."""
    if not a.any() or not b.any():
        return 0.0
    return float(np.clip(1.0 - a @ b, 0.0, 1.0))
