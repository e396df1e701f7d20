"""Training targets of PersonCenterNet (TTFNet-style) and their exact numpy decoding.

Coordinates: network-input pixels in the pixel-edge convention (the input spans ``[0, S] x [0, S]``); grid cell
``(i, j)`` (row, column) has its centre at ``((j + 0.5) stride, (i + 0.5) stride)``.

For every box (x1, y1, x2, y2) with centre c:
  * ``heat`` [h, w]: an elliptical Gaussian peaking at exactly 1 in the cell that contains c
    (``floor(c / stride)``), sigma ``alpha · size / 6`` per axis (in cells, at least 0.25), cut off at ``3 sigma``
    (i.e. ``alpha · size / 2``); overlapping people take the element-wise maximum.
  * ``ltrb`` [4, h, w] and ``box_weight`` [h, w]: at cells where the box's own ``beta`` Gaussian is above 0.1 of
    its peak (always including the centre cell) the distances from the cell centre to the four box edges, weighted
    by that Gaussian normalised to sum to ``log(area_px)`` per box. Where boxes compete, the smaller box wins.

Decoding the targets (peaks of ``heat`` -> cell centre ∓ ``ltrb``) gives the boxes back exactly
(:func:`decode_numpy`), as long as no two box centres share a cell.
"""
from __future__ import annotations

import numpy as np

DEFAULT_ALPHA = 0.54
DEFAULT_BETA = 0.54


def _gaussian_1d(grid_centres, centre, sigma):
    return np.exp(-0.5 * ((grid_centres - centre) / sigma) ** 2)


def assign_targets(boxes_xyxy_px, grid_hw, stride: int, alpha: float = DEFAULT_ALPHA, beta: float = DEFAULT_BETA):
    """Boxes float [N, 4] (x1, y1, x2, y2 input px, pixel edges) -> dict of float32 arrays ``heat`` [h, w],
    ``ltrb`` [4, h, w] (px), ``box_weight`` [h, w]; see the module docstring. Boxes must lie in the input
    (clip them first) and have positive width and height."""
    h, w = (int(v) for v in grid_hw)
    boxes = np.asarray(boxes_xyxy_px, np.float64).reshape(-1, 4)
    heat = np.zeros([h, w], np.float32)
    ltrb = np.zeros([4, h, w], np.float32)
    weight = np.zeros([h, w], np.float32)
    if len(boxes) == 0:
        return dict(heat=heat, ltrb=ltrb, box_weight=weight)
    sizes = boxes[:, 2:] - boxes[:, :2]
    if np.any(sizes <= 0):
        raise ValueError(f'boxes need positive width and height, got {boxes[np.any(sizes <= 0, axis=1)]}')
    xs_px = (np.arange(w) + 0.5) * stride          # cell-centre coordinates
    ys_px = (np.arange(h) + 0.5) * stride
    xs_cell, ys_cell = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    centre_cells = np.stack([np.clip(np.floor(centres[:, 0] / stride), 0, w - 1),
                             np.clip(np.floor(centres[:, 1] / stride), 0, h - 1)], axis=1).astype(np.int64)
    areas = sizes[:, 0] * sizes[:, 1]
    for n in np.argsort(-areas, kind='stable'):   # loop over people (a handful); smaller boxes overwrite larger
        cx, cy = centre_cells[n]
        # heatmap: Gaussian in cell units centred on the centre cell (exactly 1 there), truncated at 3 sigma
        sig_x, sig_y = np.maximum(alpha * sizes[n] / 6 / stride, 0.25)
        gx, gy = _gaussian_1d(xs_cell, cx, sig_x), _gaussian_1d(ys_cell, cy, sig_y)
        gx[np.abs(xs_cell - cx) > 3 * sig_x] = 0
        gy[np.abs(ys_cell - cy) > 3 * sig_y] = 0
        np.maximum(heat, np.outer(gy, gx).astype(np.float32), out=heat)
        # regression region: the beta Gaussian inside the box, centre cell always included
        rx, ry = np.maximum(beta * sizes[n] / 6 / stride, 0.25)
        g = np.outer(_gaussian_1d(ys_cell, cy, ry), _gaussian_1d(xs_cell, cx, rx))
        region = g > 0.1
        inside = ((xs_px[None, :] > boxes[n, 0]) & (xs_px[None, :] < boxes[n, 2])
                  & (ys_px[:, None] > boxes[n, 1]) & (ys_px[:, None] < boxes[n, 3]))
        region &= inside
        region[cy, cx] = True
        g = np.where(region, g, 0.0)
        g *= np.log(max(areas[n], 2.0)) / g.sum()
        ltrb[0][region] = (xs_px[None, :] - boxes[n, 0]).repeat(h, 0)[region]
        ltrb[1][region] = (ys_px[:, None] - boxes[n, 1]).repeat(w, 1)[region]
        ltrb[2][region] = (boxes[n, 2] - xs_px[None, :]).repeat(h, 0)[region]
        ltrb[3][region] = (boxes[n, 3] - ys_px[:, None]).repeat(w, 1)[region]
        weight[region] = g[region]
    return dict(heat=heat, ltrb=ltrb, box_weight=weight)


def decode_numpy(heat, ltrb_px, stride: int, threshold: float = 0.5):
    """Heatmap [h, w] (probabilities) and ``ltrb`` [4, h, w] -> boxes float32 [N, 4] (input px) and scores [N]
    at the 3x3 local maxima with ``score >= threshold``, sorted by descending score (numpy twin of
    :func:`metrabs_ros.training.detector.model.decode_candidates`)."""
    heat = np.asarray(heat, np.float32)
    h, w = heat.shape
    padded = np.pad(heat, 1, constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
    is_peak = heat >= windows.max(axis=(2, 3))
    ys, xs = np.nonzero(is_peak & (heat >= threshold))
    order = np.argsort(-heat[ys, xs], kind='stable')
    ys, xs = ys[order], xs[order]
    cx, cy = (xs + 0.5) * stride, (ys + 0.5) * stride
    l, t, r, b = (np.asarray(ltrb_px, np.float32)[:, ys, xs]).astype(np.float64)
    boxes = np.stack([cx - l, cy - t, cx + r, cy + b], axis=1).astype(np.float32)
    return boxes, heat[ys, xs]
