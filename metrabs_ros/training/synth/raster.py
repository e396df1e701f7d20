"""CPU z-buffer triangle rasteriser (numba): per-vertex colours, perspective-correct depth, a person-id buffer.

Pixels: the centre of the top-left pixel is (0, 0); a pixel is covered when its centre lies inside the projected
triangle (top-left fill rule approximated by ``>= 0`` edge tests). Depth is the camera-frame z, interpolated
perspective-correctly (``1/z`` linear in screen space); colours are interpolated linearly in screen space.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, fastmath=True)
def _rasterize(px, inv_z, colors, faces, face_ids, color_out, depth_inv, id_out):
    H, W = id_out.shape
    for f in range(faces.shape[0]):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        w0z, w1z, w2z = inv_z[i0], inv_z[i1], inv_z[i2]
        if w0z <= 0.0 or w1z <= 0.0 or w2z <= 0.0:
            continue
        x0, y0 = px[i0, 0], px[i0, 1]
        x1, y1 = px[i1, 0], px[i1, 1]
        x2, y2 = px[i2, 0], px[i2, 1]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        # Counter-clockwise faces seen from outside appear clockwise in y-down pixels: area < 0 is front-facing.
        if area >= 0.0:
            continue
        xmin = max(int(np.ceil(min(x0, min(x1, x2)))), 0)
        xmax = min(int(np.floor(max(x0, max(x1, x2)))), W - 1)
        ymin = max(int(np.ceil(min(y0, min(y1, y2)))), 0)
        ymax = min(int(np.floor(max(y0, max(y1, y2)))), H - 1)
        if xmin > xmax or ymin > ymax:
            continue
        inv_area = 1.0 / area
        fid = face_ids[f]
        for y in range(ymin, ymax + 1):
            for x in range(xmin, xmax + 1):
                # barycentric weights (each >= 0 inside for area < 0 with this sign convention)
                b0 = ((x1 - x) * (y2 - y) - (x2 - x) * (y1 - y)) * inv_area
                b1 = ((x2 - x) * (y0 - y) - (x0 - x) * (y2 - y)) * inv_area
                b2 = 1.0 - b0 - b1
                if b0 < 0.0 or b1 < 0.0 or b2 < 0.0:
                    continue
                iz = b0 * w0z + b1 * w1z + b2 * w2z
                if iz <= depth_inv[y, x]:
                    continue
                depth_inv[y, x] = iz
                id_out[y, x] = fid
                for c in range(3):
                    color_out[y, x, c] = b0 * colors[i0, c] + b1 * colors[i1, c] + b2 * colors[i2, c]


def rasterize(vertices_px: np.ndarray, depth_m: np.ndarray, colors: np.ndarray, faces: np.ndarray,
              face_person_ids: np.ndarray, height: int, width: int, background: np.ndarray = None):
    """Render triangles.

    Args:
      vertices_px: ``[N, 2]`` projected vertices (pixels).
      depth_m: ``[N]`` camera-frame z (any unit; <= 0 culls the face).
      colors: ``[N, 3]`` float32 vertex colours (0..255).
      faces: ``[F, 3]`` int32 vertex indices, counter-clockwise seen from outside (back faces are culled).
      face_person_ids: ``[F]`` int16 id written to the id buffer (>= 0).
      background: optional ``[H, W, 3]`` float32 image to draw on (copied).
    Returns:
      ``(image float32 [H, W, 3], depth float32 [H, W] (inf where empty), ids int16 [H, W] (-1 where empty))``.
    """
    with np.errstate(divide='ignore'):
        inv_z = np.where(depth_m > 1e-6, 1.0 / np.maximum(depth_m, 1e-6), -1.0).astype(np.float32)
    image = (np.zeros((height, width, 3), np.float32) if background is None
             else np.array(background, np.float32, copy=True))
    depth_inv = np.zeros((height, width), np.float32)
    ids = np.full((height, width), -1, np.int16)
    _rasterize(np.ascontiguousarray(vertices_px, np.float32), inv_z, np.ascontiguousarray(colors, np.float32),
               np.ascontiguousarray(faces, np.int32), np.ascontiguousarray(face_person_ids, np.int16),
               image, depth_inv, ids)
    with np.errstate(divide='ignore'):
        depth = np.where(depth_inv > 0, 1.0 / np.maximum(depth_inv, 1e-30), np.inf).astype(np.float32)
    return image, depth, ids


@numba.njit(cache=True, nogil=True, fastmath=True)
def vertex_normals(vertices, faces):
    """Area-weighted unit vertex normals ``[N, 3]`` (float32) of a counter-clockwise mesh."""
    n = np.zeros(vertices.shape, np.float32)
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        e1x = vertices[b, 0] - vertices[a, 0]
        e1y = vertices[b, 1] - vertices[a, 1]
        e1z = vertices[b, 2] - vertices[a, 2]
        e2x = vertices[c, 0] - vertices[a, 0]
        e2y = vertices[c, 1] - vertices[a, 1]
        e2z = vertices[c, 2] - vertices[a, 2]
        nx = e1y * e2z - e1z * e2y
        ny = e1z * e2x - e1x * e2z
        nz = e1x * e2y - e1y * e2x
        for v in (a, b, c):
            n[v, 0] += nx
            n[v, 1] += ny
            n[v, 2] += nz
    for v in range(n.shape[0]):
        norm = np.sqrt(n[v, 0] ** 2 + n[v, 1] ** 2 + n[v, 2] ** 2) + 1e-12
        n[v, 0] /= norm
        n[v, 1] /= norm
        n[v, 2] /= norm
    return n
