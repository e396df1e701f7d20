"""Shard files and the dataset reader.

A dataset folder holds ``manifest.json`` and ``shard-00000.npz``, ... (``numpy.savez``, uncompressed). A shard
stores ``N`` consecutive samples:

* ``index`` int64 [N]: the sample indices (the sample is a pure function of seed, split, kind, index);
* images: ``image_bytes`` uint8 [total] + ``image_offsets`` int64 [N+1] (JPEG or PNG, RGB when decoded), or
  ``images`` uint8 [N, H, W, 3] (``image_format='raw'``, crops only);
* every other per-sample array stacked along axis 0 (``K`` [N,3,3], ``h36m_17/joints3d_mm`` [N,17,3], ...);
* scenes only: per-person arrays ``people/...`` concatenated over the shard's samples with ``people_offsets``
  int64 [N+1].

:func:`open_dataset` returns a :class:`SynthDataset` (indexable, iterable with shuffling) whose samples are dicts
of numpy arrays (``image`` uint8 [H, W, 3] RGB; scenes: ``people/...`` arrays with a leading person axis and the
derived ``boxes_xyxy_px`` [P, 4] = visible-silhouette boxes as x0, y0, x1, y1 in the pixel-edge convention).
"""

from __future__ import annotations

import json
import os
from typing import Dict, Iterator, List, Optional, Sequence

import cv2
import numpy as np

MANIFEST = 'manifest.json'
FORMAT_VERSION = 1


def shard_name(k: int) -> str:
    return f'shard-{k:05d}.npz'


def encode_image(image_rgb: np.ndarray, image_format: str, jpeg_quality: int = 92) -> np.ndarray:
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    if image_format == 'jpg':
        ok, buf = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    elif image_format == 'png':
        ok, buf = cv2.imencode('.png', bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        raise ValueError(f'image format must be jpg, png or raw, got {image_format!r}')
    if not ok:
        raise RuntimeError(f'image encoding ({image_format}) failed')
    return buf.reshape(-1)


def decode_image(data: np.ndarray) -> np.ndarray:
    bgr = cv2.imdecode(np.asarray(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError('corrupt image in shard')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_shard(path: str, kind: str, indices: Sequence[int], samples: List[Dict[str, np.ndarray]],
                image_format: str = 'jpg', jpeg_quality: int = 92) -> int:
    """Write ``samples`` (dicts from :mod:`scene`) to ``path`` atomically; returns the file size in bytes."""
    arrays: Dict[str, np.ndarray] = {'index': np.asarray(indices, np.int64)}
    if image_format == 'raw':
        arrays['images'] = np.stack([s['image'] for s in samples])
    else:
        encoded = [encode_image(s['image'], image_format, jpeg_quality) for s in samples]
        arrays['image_bytes'] = np.concatenate(encoded) if encoded else np.zeros(0, np.uint8)
        arrays['image_offsets'] = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.int64)
    keys = sorted({k for s in samples for k in s if k != 'image'})
    person_keys = [k for k in keys if k.startswith('people/')]
    sample_keys = [k for k in keys if not k.startswith('people/')]
    for k in sample_keys:
        arrays[k] = np.stack([np.asarray(s[k]) for s in samples])
    if kind == 'scenes':
        counts = [int(s['num_people']) for s in samples]
        arrays['people_offsets'] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        for k in person_keys:
            parts = [s[k] for s in samples if k in s]
            arrays[k] = np.concatenate(parts)
    tmp = path + '.tmp.npz'
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return os.path.getsize(path)


def write_manifest(folder: str, manifest: dict) -> None:
    tmp = os.path.join(folder, MANIFEST + '.tmp')
    with open(tmp, 'w') as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(folder, MANIFEST))


class SynthDataset:
    """Read access to a generated dataset folder: ``len(ds)``, ``ds[i]``, ``iter(ds)``, :meth:`iterate`."""

    def __init__(self, folder: str, cache_shards: int = 2):
        self.folder = folder
        path = os.path.join(folder, MANIFEST)
        if not os.path.isfile(path):
            raise FileNotFoundError(f'{folder} is not a synthetic dataset: no {MANIFEST}')
        with open(path) as f:
            self.manifest = json.load(f)
        if self.manifest.get('format_version') != FORMAT_VERSION:
            raise ValueError(f'{path}: format_version {self.manifest.get("format_version")} is not '
                             f'{FORMAT_VERSION}')
        self.kind: str = self.manifest['kind']
        self.shards = self.manifest['shards']            # list of {'file', 'start', 'count'}
        self._starts = np.array([s['start'] for s in self.shards], np.int64)
        self._cache: Dict[int, Dict[str, np.ndarray]] = {}
        self._cache_order: List[int] = []
        self._cache_shards = max(1, cache_shards)

    @property
    def joint_names(self) -> Dict[str, List[str]]:
        return self.manifest['joint_names']

    def __len__(self) -> int:
        return int(sum(s['count'] for s in self.shards))

    def _shard(self, k: int) -> Dict[str, np.ndarray]:
        if k not in self._cache:
            with np.load(os.path.join(self.folder, self.shards[k]['file'])) as data:
                self._cache[k] = {name: data[name] for name in data.files}
            self._cache_order.append(k)
            if len(self._cache_order) > self._cache_shards:
                self._cache.pop(self._cache_order.pop(0), None)
        return self._cache[k]

    def __getitem__(self, i: int) -> Dict[str, np.ndarray]:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f'sample {i} out of range for a dataset of {n}')
        k = int(np.searchsorted(self._starts, i, side='right') - 1)
        return self._sample(k, i - int(self._starts[k]))

    def _sample(self, k: int, j: int) -> Dict[str, np.ndarray]:
        shard = self._shard(k)
        out: Dict[str, np.ndarray] = {}
        if 'images' in shard:
            out['image'] = shard['images'][j]
        else:
            off = shard['image_offsets']
            out['image'] = decode_image(shard['image_bytes'][off[j]:off[j + 1]])
        po = shard.get('people_offsets')
        for name, arr in shard.items():
            if name in ('images', 'image_bytes', 'image_offsets', 'people_offsets'):
                continue
            if name.startswith('people/'):
                out[name] = arr[po[j]:po[j + 1]]
            else:
                out[name] = arr[j]
        if 'people/box_xywh' in out:     # convenience for detectors: x0, y0, x1, y1 in the pixel-edge convention
            b = out['people/box_xywh'].reshape(-1, 4)
            out['boxes_xyxy_px'] = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
        return out

    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        return self.iterate()

    def iterate(self, shuffle: bool = False, seed: int = 0, shard_subset: Optional[Sequence[int]] = None
                ) -> Iterator[Dict[str, np.ndarray]]:
        """Samples shard by shard (each shard read once); ``shuffle`` permutes the shard order and the samples
        within each shard (deterministic from ``seed``); ``shard_subset`` restricts to some shards (workers)."""
        rng = np.random.default_rng(seed)
        order = np.arange(len(self.shards)) if shard_subset is None else np.asarray(shard_subset)
        if shuffle:
            order = rng.permutation(order)
        for k in order:
            count = self.shards[int(k)]['count']
            within = rng.permutation(count) if shuffle else np.arange(count)
            for j in within:
                yield self._sample(int(k), int(j))


def open_dataset(folder: str) -> SynthDataset:
    """Open a folder written by ``metrabs-ros synth``."""
    return SynthDataset(folder)
