"""Soft-argmax decoding of MeTRAbs heatmaps and the official pixel / metric mappings (numpy reference).

The graph computes the same inside ONNX; this module documents the mapping and serves as the independent
reference for tests and for users who split the model.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

DEFAULT_STRIDE = 32
DEFAULT_DEPTH_CUBE_MM = 2200.0


def soft_argmax(logits: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    """Expected coordinate along each axis in ``axes`` under a softmax taken jointly over ``axes``.

    Coordinates live on ``linspace(0, 1, n)`` grids. The output replaces the heatmap axes with one last axis
    holding one coordinate per entry of ``axes`` (in that order).
    """
    logits = np.asarray(logits, dtype=np.float64)
    axes = [a % logits.ndim for a in axes]
    shifted = logits - logits.max(axis=tuple(axes), keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=tuple(axes), keepdims=True)
    coords = []
    for ax in axes:
        others = tuple(a for a in axes if a != ax)
        marginal = probs.sum(axis=others, keepdims=True)
        grid_shape = [1] * logits.ndim
        grid_shape[ax] = logits.shape[ax]
        grid = np.linspace(0.0, 1.0, logits.shape[ax]).reshape(grid_shape)
        coords.append(np.squeeze((marginal * grid).sum(axis=ax, keepdims=True), axis=tuple(axes)))
    return np.stack(coords, axis=-1)


def last_receptive_centre_px(resolution: int, stride: int = DEFAULT_STRIDE) -> int:
    """``L = (res - 1) - ((res - 1) mod stride)``: 224 for 256 px crops, 352 for 384 px."""
    return (resolution - 1) - ((resolution - 1) % stride)


def heatmap_to_image_px(coords01: np.ndarray, resolution: int, stride: int = DEFAULT_STRIDE) -> np.ndarray:
    """Map 0..1 heatmap coordinates to crop pixels: ``u · L + stride/2`` (centred stride)."""
    return np.asarray(coords01) * last_receptive_centre_px(resolution, stride) + stride // 2


def heatmap_to_metric_mm(coords01_xyz: np.ndarray, resolution: int, stride: int = DEFAULT_STRIDE,
                         depth_cube_mm: float = DEFAULT_DEPTH_CUBE_MM) -> np.ndarray:
    """Map 0..1 volumetric heatmap coordinates to millimetre offsets from an unknown reference point.

    ``X = (u · L + stride/2) · cube/res``, ``Y`` likewise, ``Z = w · cube`` (cube = 2200 mm).
    """
    coords = np.asarray(coords01_xyz, dtype=np.float64)
    xy_mm = heatmap_to_image_px(coords[..., :2], resolution, stride) * depth_cube_mm / resolution
    return np.concatenate([xy_mm, coords[..., 2:] * depth_cube_mm], axis=-1)
