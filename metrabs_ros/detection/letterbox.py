"""Letterbox resizing for detector inputs and the inverse box mapping.

Box coordinates handled here follow the detectors' own (COCO / YOLO) convention: continuous pixel
coordinates in which the image spans ``[0, W] x [0, H]``. In that convention a ``cv2.resize`` (INTER_LINEAR,
half-pixel centres) from width ``w`` to ``new_w`` is the pure scaling ``x_new = x * new_w / w``, so the
letterbox transform is exactly ``x_lb = x * scale_x + offset_x`` (and likewise for y).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

PLACEMENTS = ('center', 'topleft')


@dataclasses.dataclass(frozen=True)
class LetterboxGeometry:
    """Maps original-image pixels to letterboxed pixels: ``x_lb = x_px * scale_x + offset_x``.

    ``scale_x = resized_w / original_w`` and ``scale_y = resized_h / original_h`` (they differ from the nominal
    ratio only by the integer rounding of the resized size); offsets are the padding in pixels on the
    left/top. ``target_hw`` is the letterboxed size (network input) and ``resized_hw`` the size of the
    image content inside it.
    """

    scale_x: float
    scale_y: float
    offset_x_px: float
    offset_y_px: float
    target_hw: tuple[int, int]
    resized_hw: tuple[int, int]

    @property
    def offset_xy_px(self) -> np.ndarray:
        return np.array([self.offset_x_px, self.offset_y_px], np.float64)

    @property
    def scale_xy(self) -> np.ndarray:
        return np.array([self.scale_x, self.scale_y], np.float64)


def letterbox_geometry(image_hw, target_hw, placement='center', rounding='round') -> LetterboxGeometry:
    """Geometry of letterboxing an ``image_hw`` image into ``target_hw`` keeping the aspect ratio.

    ratio ``r = min(Ht/h, Wt/w)`` (upscaling allowed); resized size ``round(w r) x round(h r)`` (YOLOv5/v8) or
    ``floor`` (YOLOX, ``rounding='floor'``); ``placement='center'`` splits the padding with the smaller half on
    the left/top (as YOLOv5/v8 do), ``'topleft'`` puts all padding at the bottom/right (YOLOX).
    """
    h, w = (int(v) for v in image_hw)
    th, tw = (int(v) for v in target_hw)
    if h <= 0 or w <= 0 or th <= 0 or tw <= 0:
        raise ValueError(f'letterbox needs positive sizes, got image {image_hw} and target {target_hw}')
    if placement not in PLACEMENTS:
        raise ValueError(f'unknown letterbox placement {placement!r}; expected one of {PLACEMENTS}')
    ratio = min(th / h, tw / w)
    if rounding == 'round':
        new_w, new_h = int(round(w * ratio)), int(round(h * ratio))
    elif rounding == 'floor':
        # small epsilon so that e.g. 480 * (640 / 480) = 639.9999... still gives 640
        new_w, new_h = int(np.floor(w * ratio + 1e-6)), int(np.floor(h * ratio + 1e-6))
    else:
        raise ValueError(f"unknown rounding {rounding!r}; expected 'round' or 'floor'")
    new_w, new_h = min(max(new_w, 1), tw), min(max(new_h, 1), th)
    if placement == 'center':
        left, top = (tw - new_w) // 2, (th - new_h) // 2
    else:
        left, top = 0, 0
    return LetterboxGeometry(
        scale_x=new_w / w, scale_y=new_h / h, offset_x_px=float(left), offset_y_px=float(top),
        target_hw=(th, tw), resized_hw=(new_h, new_w))


def letterbox(image, target_hw, pad_value=114, placement='center', rounding='round'):
    """Resizes ``image`` ([H, W, C] uint8 or float) into a ``target_hw`` canvas filled with ``pad_value``.

    Returns ``(padded [Ht, Wt, C] same dtype, LetterboxGeometry)``. Channel order and value range are not
    touched (the caller's input format decides those). Resizing uses ``cv2.resize`` with INTER_LINEAR.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f'letterbox expects an [H, W, C] image, got shape {image.shape}')
    geometry = letterbox_geometry(image.shape[:2], target_hw, placement, rounding)
    new_h, new_w = geometry.resized_hw
    th, tw = geometry.target_hw
    if (new_h, new_w) != image.shape[:2]:
        resized = cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        resized = resized.reshape(new_h, new_w, image.shape[2])
    else:
        resized = image
    if (new_h, new_w) == (th, tw):
        return np.ascontiguousarray(resized), geometry
    padded = np.full((th, tw, image.shape[2]), pad_value, dtype=image.dtype)
    top, left = int(geometry.offset_y_px), int(geometry.offset_x_px)
    padded[top:top + new_h, left:left + new_w] = resized
    return padded, geometry


def boxes_to_original(boxes_xyxy_lb, geometry: LetterboxGeometry) -> np.ndarray:
    """Maps boxes [N, 4] (x1, y1, x2, y2) from letterboxed pixels back to original-image pixels (float32)."""
    boxes = np.asarray(boxes_xyxy_lb, np.float32).reshape(-1, 4)
    offset = np.array([geometry.offset_x_px, geometry.offset_y_px] * 2, np.float32)
    scale = np.array([geometry.scale_x, geometry.scale_y] * 2, np.float32)
    return (boxes - offset) / scale
