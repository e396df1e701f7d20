"""PyTorch adapters for generated datasets (torch is imported here, when this module is imported).

``SynthTorchDataset`` (map-style) and ``SynthIterableDataset`` (shard-wise streaming, split across DataLoader
workers by shard, shuffled per epoch) yield dicts of tensors: ``image`` float32 [3, H, W] in [0, 1] (or uint8
[H, W, 3] with ``as_uint8=True``) and every other array as a tensor. Scenes have a varying number of people: use
``batch_size=None`` or a custom ``collate_fn``.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from metrabs_ros.training.synth.shards import SynthDataset, open_dataset


def to_tensors(sample: Dict[str, np.ndarray], as_uint8: bool = False) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in sample.items():
        if k == 'image' and not as_uint8:
            out[k] = torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1))).float().div_(255.0)
        else:
            out[k] = torch.as_tensor(np.asarray(v))
    return out


class SynthTorchDataset(Dataset):
    """Map-style dataset over a generated folder; ``transform`` (optional) receives the numpy sample dict."""

    def __init__(self, folder: str, transform: Optional[Callable] = None, as_uint8: bool = False):
        self.folder = folder
        self.transform = transform
        self.as_uint8 = as_uint8
        self._ds: Optional[SynthDataset] = None
        self._len = len(open_dataset(folder))

    def _dataset(self) -> SynthDataset:
        if self._ds is None:       # opened lazily so that each DataLoader worker has its own shard cache
            self._ds = open_dataset(self.folder)
        return self._ds

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i):
        sample = self._dataset()[i]
        if self.transform is not None:
            sample = self.transform(sample)
        return to_tensors(sample, self.as_uint8)


class SynthIterableDataset(IterableDataset):
    """Streams shards (each read once per epoch); DataLoader workers take disjoint shard subsets; ``shuffle``
    permutes shards and samples with ``seed + epoch`` (call :meth:`set_epoch`)."""

    def __init__(self, folder: str, shuffle: bool = True, seed: int = 0, transform: Optional[Callable] = None,
                 as_uint8: bool = False):
        self.folder = folder
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.transform = transform
        self.as_uint8 = as_uint8

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        ds = open_dataset(self.folder)
        shards = np.arange(len(ds.shards))
        info = get_worker_info()
        if info is not None:
            shards = shards[info.id::info.num_workers]
        for sample in ds.iterate(self.shuffle, self.seed + self.epoch, shards):
            if self.transform is not None:
                sample = self.transform(sample)
            yield to_tensors(sample, self.as_uint8)
