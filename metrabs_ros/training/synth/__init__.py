"""Synthetic training / evaluation data: Anny bodies, DeepMimic and procedural poses, CPU rendering, exact GT.

Modules (torch is imported only by ``body_model`` when a body model is loaded and by ``torch_dataset``):
  body_model   Anny loading, batched skinning, skeleton formats (anny_104, coco_19, h36m_17, smpl_24)
  motion       DeepMimic clips from the pybullet wheel, procedural poses, retargeting to Anny
  appearance   per-vertex skin / hair / clothing colours, Lambert lighting
  backgrounds  scikit-image photos, procedural ground / blob backgrounds
  raster       numba z-buffer rasteriser, vertex normals
  scene        cameras, people placement, rendering, ground truth (``crops`` and ``scenes`` samples)
  shards       shard writing / reading, manifest, ``open_dataset``
  generate     multi-process generation, preview contact sheet (``metrabs-ros synth``)
  torch_dataset  torch Dataset / IterableDataset adapters
  commands     ``register_commands(subparsers)`` for the CLI

See docs/synthetic_data.md.
"""

from metrabs_ros.training.synth.shards import SynthDataset, open_dataset  # noqa: E402  (numpy + OpenCV only)

__all__ = ['SynthDataset', 'open_dataset']
