"""Scenes for detector training: sources (scene folders, the synthetic data engine's scene datasets, the numpy
renderer), augmentation onto the square network input, and the torch Dataset.

Box convention everywhere: (x1, y1, x2, y2) in pixels, pixel edges (the image spans ``[0, W] x [0, H]``), as the
detector contract (docs/model_contract.md §2).

Network input ("canvas"): ``side x side`` uint8 RGB. At inference the exported graph letterboxes the frame at the
top-left corner (scale ``side / max(H, W)``, padding value 114 at the bottom/right); training canvases are the
same kind of picture with random scale, position, crop, flip, colour and (sometimes) a 2x2 mosaic.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os

import cv2
import numpy as np

PAD_VALUE = 114
SCENE_FOLDER_INDEX = 'detector_scenes.json'
SCENE_FOLDER_FORMAT = 'metrabs_ros.detector_scenes/1'


# ----------------------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------------------

class SceneFolder:
    """A folder of images with person boxes: ``detector_scenes.json`` =
    ``{"format": "metrabs_ros.detector_scenes/1", "scenes": [{"image": rel_path, "boxes_xyxy_px": [[...]]}]}``."""

    def __init__(self, path):
        self.path = os.fspath(path)
        with open(os.path.join(self.path, SCENE_FOLDER_INDEX)) as f:
            index = json.load(f)
        if index.get('format') != SCENE_FOLDER_FORMAT:
            raise ValueError(f'{self.path}: not a {SCENE_FOLDER_FORMAT} folder (format {index.get("format")!r})')
        self.scenes = index['scenes']

    def __len__(self):
        return len(self.scenes)

    def load(self, i: int):
        """Scene ``i`` -> (image_rgb uint8 [H, W, 3], boxes_xyxy_px float32 [N, 4])."""
        entry = self.scenes[i]
        path = os.path.join(self.path, entry['image'])
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f'cannot read image {path}')
        boxes = np.asarray(entry['boxes_xyxy_px'], np.float32).reshape(-1, 4)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), boxes


class SynthScenes:
    """Adapter for the synthetic data engine's scene datasets (``metrabs-ros synth --kind scenes``), read with
    :func:`metrabs_ros.training.synth.shards.open_dataset`: sample ``image`` (uint8 RGB) and
    ``people/box_xywh`` (tight visible-silhouette boxes, pixel-edge convention)."""

    def __init__(self, path):
        from metrabs_ros.training.synth.shards import open_dataset
        self.path = os.fspath(path)
        self.dataset = open_dataset(self.path)
        if self.dataset.kind != 'scenes':
            raise ValueError(f'{self.path}: a {self.dataset.kind!r} dataset; the detector needs full scenes '
                             f'(metrabs-ros synth --kind scenes)')

    def __len__(self):
        return len(self.dataset)

    def load(self, i: int):
        sample = self.dataset[i]
        image = np.asarray(sample['image'], np.uint8)
        xywh = np.asarray(sample.get('people/box_xywh', np.zeros([0, 4])), np.float32).reshape(-1, 4)
        return image, np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


class ConcatScenes:
    """Several scene sources one after the other."""

    def __init__(self, sources):
        self.sources = list(sources)
        self.starts = np.cumsum([0] + [len(s) for s in self.sources])

    def __len__(self):
        return int(self.starts[-1])

    def load(self, i: int):
        k = int(np.searchsorted(self.starts, i, side='right') - 1)
        return self.sources[k].load(i - int(self.starts[k]))


def open_scenes(path):
    """A scene source for ``path``: a scene folder (``detector_scenes.json``), a data-engine scene dataset
    (``manifest.json``), or several of them separated by commas (concatenated)."""
    paths = [p for p in os.fspath(path).split(',') if p]
    if len(paths) > 1:
        return ConcatScenes(open_scenes(p) for p in paths)
    path = paths[0]
    if os.path.isfile(os.path.join(path, SCENE_FOLDER_INDEX)):
        return SceneFolder(path)
    try:
        return SynthScenes(path)
    except FileNotFoundError as error:
        raise ValueError(f'{path}: neither a detector scene folder ({SCENE_FOLDER_INDEX}) nor a data-engine '
                         f'dataset ({error})') from error


def scene_boxes_from_render(scene, min_pixels: int = 1) -> np.ndarray:
    """Boxes of a :func:`metrabs_ros.synthetic_scene.render_scene` scene in the pixel-edge convention.

    The renderer's ``box_xywh_px`` uses pixel centres (a silhouette in columns ``c0..c1`` has x = c0 - 0.5,
    w = c1 - c0 + 1), so the edge-convention box is ``(c0, r0, c1 + 1, r1 + 1)`` = xywh shifted by +0.5."""
    rows = [np.r_[p.box_xywh_px[:2] + 0.5, p.box_xywh_px[:2] + 0.5 + p.box_xywh_px[2:]]
            for p in scene.people if p.num_pixels >= min_pixels]
    return np.asarray(rows, np.float32).reshape(-1, 4)


RENDER_IMAGE_SIZES = ((480, 640), (480, 640), (360, 640), (640, 480), (600, 800), (384, 512))


def random_render_spec(seed: int):
    """A varied :class:`metrabs_ros.synthetic_scene.SceneSpec` for detector training (size, people, field of
    view, distances, background), deterministic from ``seed``."""
    from metrabs_ros.synthetic_scene import BACKGROUNDS, SceneSpec
    rng = np.random.default_rng([seed, 7919])
    near = float(rng.uniform(1500, 4000))
    return SceneSpec(
        seed=int(seed), image_hw=RENDER_IMAGE_SIZES[int(rng.integers(len(RENDER_IMAGE_SIZES)))],
        num_people=int(rng.choice([0, 1, 1, 2, 2, 3, 3, 4, 5, 6])), fov_degrees=float(rng.uniform(40, 100)),
        background=str(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]),
        distance_range_mm=(near, near + float(rng.uniform(1000, 9000))),
        min_separation_mm=float(rng.uniform(300, 1200)))


def render_scene_folder(out_dir, first_seed: int, count: int, jpeg_quality: int = 92, log=print) -> SceneFolder:
    """Renders ``count`` scenes (seeds ``first_seed ..``) with the numpy renderer into a scene folder."""
    from metrabs_ros.synthetic_scene import render_scene
    os.makedirs(os.path.join(out_dir, 'images'), exist_ok=True)
    scenes = []
    for k in range(count):  # loop over scenes
        seed = first_seed + k
        scene = render_scene(random_render_spec(seed))
        name = f'images/{seed:07d}.jpg'
        cv2.imwrite(os.path.join(out_dir, name), scene.image_rgb[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        scenes.append(dict(image=name, boxes_xyxy_px=scene_boxes_from_render(scene).round(3).tolist(), seed=seed))
        if log and (k + 1) % 200 == 0:
            log(f'rendered {k + 1}/{count} scenes')
    with open(os.path.join(out_dir, SCENE_FOLDER_INDEX), 'w') as f:
        json.dump(dict(format=SCENE_FOLDER_FORMAT, source='metrabs_ros.synthetic_scene.render_scene',
                       first_seed=first_seed, count=count, scenes=scenes), f)
    return SceneFolder(out_dir)


# ----------------------------------------------------------------------------------------------------------------
# Augmentation
# ----------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation. Scale is relative to the inference letterbox scale ``side / max(H, W)``."""

    scale_range: tuple = (0.6, 1.6)     # log-uniform multiplier of the letterbox scale
    mosaic_prob: float = 0.3            # 2x2 mosaic of four scenes, each at half the canvas size
    flip_prob: float = 0.5
    letterbox_prob: float = 0.25        # exact inference letterbox (no jitter, top-left) with this probability
    brightness: float = 0.35            # multiplier in [1 - b, 1 + b]
    contrast: float = 0.35
    saturation: float = 0.5
    hue_shift_deg: float = 12.0
    blur_prob: float = 0.25
    noise_prob: float = 0.3
    noise_sigma: float = 6.0            # 0..255 units
    grayscale_prob: float = 0.05
    min_box_px: float = 3.0             # boxes with a side below this (canvas px) after augmentation are dropped
    min_visible_fraction: float = 0.35  # boxes cut by the crop to less than this fraction of their area are dropped


def _resize(image, scale: float):
    h, w = image.shape[:2]
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    if (nh, nw) == (h, w):
        return image, 1.0, 1.0
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, (nw, nh), interpolation=interpolation), nw / w, nh / h


def colour_jitter(image, rng, cfg: AugmentConfig):
    """Photometric augmentation of a uint8 RGB image (brightness, contrast, saturation, hue, grey, blur, noise)."""
    x = image.astype(np.float32)
    x *= rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + mean
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    if rng.random() < cfg.grayscale_prob:
        x = np.repeat(grey[..., None], 3, axis=2)
    else:
        x = grey[..., None] + (x - grey[..., None]) * rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
        if cfg.hue_shift_deg > 0:  # rotation of the chroma plane around the grey axis
            angle = math.radians(rng.uniform(-cfg.hue_shift_deg, cfg.hue_shift_deg))
            axis = np.ones(3) / math.sqrt(3)
            cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
            rot = (math.cos(angle) * np.eye(3) + math.sin(angle) * cross
                   + (1 - math.cos(angle)) * np.outer(axis, axis)).astype(np.float32)
            x = x @ rot.T
    if rng.random() < cfg.blur_prob:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < cfg.noise_prob:
        x += rng.normal(0, rng.uniform(0, cfg.noise_sigma), x.shape).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def _paste(canvas, image, boxes, x0: int, y0: int, region, cfg: AugmentConfig):
    """Pastes ``image`` with its top-left corner at canvas (x0, y0), clipped to ``region`` (x1, y1, x2, y2 canvas
    px, integers); returns the boxes moved into canvas pixels, clipped, and filtered."""
    rx1, ry1, rx2, ry2 = region
    h, w = image.shape[:2]
    cx1, cy1 = max(rx1, x0), max(ry1, y0)
    cx2, cy2 = min(rx2, x0 + w), min(ry2, y0 + h)
    if cx2 > cx1 and cy2 > cy1:
        canvas[cy1:cy2, cx1:cx2] = image[cy1 - y0:cy2 - y0, cx1 - x0:cx2 - x0]
    if len(boxes) == 0:
        return np.zeros([0, 4], np.float32)
    moved = boxes + np.array([x0, y0, x0, y0], np.float32)
    clipped = np.clip(moved, [cx1, cy1, cx1, cy1], [max(cx1, cx2), max(cy1, cy2)] * 2)
    area = np.prod(moved[:, 2:] - moved[:, :2], axis=1)
    size = clipped[:, 2:] - clipped[:, :2]
    keep = (size.min(axis=1) >= cfg.min_box_px) & (np.prod(size, axis=1) >= cfg.min_visible_fraction * area)
    return clipped[keep].astype(np.float32)


def _place(canvas, image, boxes, region, scale, rng, cfg, exact_letterbox=False):
    """Resizes by ``scale`` (and flips) and places the image at a random position in ``region``."""
    if rng.random() < cfg.flip_prob:
        image = cv2.flip(image, 1)
        boxes = np.stack([image.shape[1] - boxes[:, 2], boxes[:, 1], image.shape[1] - boxes[:, 0], boxes[:, 3]],
                         axis=1) if len(boxes) else boxes
    image, sx, sy = _resize(image, scale)
    boxes = boxes * np.array([sx, sy, sx, sy], np.float32)
    image = colour_jitter(image, rng, cfg)
    rx1, ry1, rx2, ry2 = region
    h, w = image.shape[:2]
    if exact_letterbox:
        x0, y0 = rx1, ry1
    else:  # random position; larger images are randomly cropped, smaller ones float inside the region
        x0 = rx1 + int(rng.integers(min(0, rx2 - rx1 - w), max(0, rx2 - rx1 - w) + 1))
        y0 = ry1 + int(rng.integers(min(0, ry2 - ry1 - h), max(0, ry2 - ry1 - h) + 1))
    return _paste(canvas, image, boxes, x0, y0, region, cfg)


def augment_scene(image, boxes_xyxy_px, side: int, rng, cfg: AugmentConfig):
    """One scene -> (canvas uint8 [side, side, 3], boxes float32 [M, 4] canvas px)."""
    canvas = np.full([side, side, 3], PAD_VALUE, np.uint8)
    base = side / max(image.shape[:2])
    exact = rng.random() < cfg.letterbox_prob
    jitter = 1.0 if exact else math.exp(rng.uniform(*np.log(cfg.scale_range)))
    boxes = _place(canvas, image, np.asarray(boxes_xyxy_px, np.float32).reshape(-1, 4), (0, 0, side, side),
                   base * jitter, rng, cfg, exact_letterbox=exact)
    return canvas, boxes


def mosaic_scenes(scenes, side: int, rng, cfg: AugmentConfig):
    """Four (image, boxes) scenes -> a 2x2 mosaic canvas split at a random point; each quadrant holds a random crop
    of one scene scaled to about half the letterbox scale."""
    canvas = np.full([side, side, 3], PAD_VALUE, np.uint8)
    cx, cy = (int(rng.uniform(0.3, 0.7) * side) for _ in range(2))
    regions = [(0, 0, cx, cy), (cx, 0, side, cy), (0, cy, cx, side), (cx, cy, side, side)]
    all_boxes = []
    for (image, boxes), region in zip(scenes, regions):  # four quadrants
        scale = 0.5 * side / max(image.shape[:2]) * math.exp(rng.uniform(*np.log(cfg.scale_range)))
        all_boxes.append(_place(canvas, image, np.asarray(boxes, np.float32).reshape(-1, 4), region, scale, rng,
                                cfg))
    return canvas, np.concatenate(all_boxes).astype(np.float32)


class DetectorTrainingSet:
    """Map-style dataset (torch DataLoader compatible) of augmented canvases with their targets.

    Item ``k`` (0 <= k < length) uses scene ``perm_e[k mod n]`` of epoch ``e = k // n`` (a seeded permutation) and
    its own generator seeded with ``(seed, k)``, so the stream is deterministic and a resumed run continues it.
    Returns a dict: ``image`` uint8 [3, side, side], ``heat`` [h, w], ``ltrb`` [4, h, w], ``box_weight`` [h, w],
    ``num_boxes`` int.
    """

    def __init__(self, source, side: int, stride: int, augment: AugmentConfig, seed: int, length: int,
                 alpha: float = 0.54, beta: float = 0.54):
        if len(source) == 0:
            raise ValueError('the training scene source is empty')
        self.source, self.side, self.stride, self.augment = source, side, stride, augment
        self.seed, self.length, self.alpha, self.beta = seed, length, alpha, beta

    def __len__(self):
        return self.length

    def scene_index(self, k: int) -> int:
        n = len(self.source)
        perm = np.random.default_rng([self.seed, k // n, 1]).permutation(n)
        return int(perm[k % n])

    def sample(self, k: int):
        """Canvas and boxes of item ``k`` (before target assignment)."""
        rng = np.random.default_rng([self.seed, k, 2])
        first = self.source.load(self.scene_index(k))
        if rng.random() < self.augment.mosaic_prob:
            others = [self.source.load(int(i)) for i in rng.integers(len(self.source), size=3)]
            return mosaic_scenes([first, *others], self.side, rng, self.augment)
        return augment_scene(*first, self.side, rng, self.augment)

    def __getitem__(self, k: int):
        from metrabs_ros.training.detector.targets import assign_targets
        canvas, boxes = self.sample(int(k))
        grid = self.side // self.stride
        targets = assign_targets(boxes, (grid, grid), self.stride, self.alpha, self.beta)
        return dict(image=np.ascontiguousarray(canvas.transpose(2, 0, 1)), num_boxes=len(boxes), **targets)
