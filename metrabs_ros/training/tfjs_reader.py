"""Reads a TensorFlow.js graph model (``model.json`` + ``.bin`` weight shards) into named numpy arrays.

Development-time only (the conversion commands use it; the runtime never does). No TensorFlow needed: the format
is plain JSON plus little-endian binary shards (https://www.tensorflow.org/js/guide/save_load, tfjs-converter):

* ``model.json``: ``modelTopology`` (a GraphDef as JSON: ``node`` list with ``name``, ``op``, ``input``, ``attr``),
  ``weightsManifest`` (groups of ``paths`` = shard files, concatenated in order, and ``weights`` = entries
  ``{name, shape, dtype[, quantization]}`` stored back to back in that byte stream), ``signature``.
* a weight is stored as its ``dtype`` (float32, int32, bool, uint8, string is not supported here) unless it has
  ``quantization``: ``{dtype: float16}`` stores IEEE half floats; ``{dtype: uint8|uint16, scale, min}`` stores
  integers ``q`` meaning ``q * scale + min``. Either way the array is returned in ``original_dtype`` (else the
  entry's ``dtype``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, List

import numpy as np

_STORED_DTYPES = {'float32': np.float32, 'int32': np.int32, 'bool': np.bool_, 'uint8': np.uint8,
                  'uint16': np.uint16, 'float16': np.float16, 'int64': np.int64}


@dataclasses.dataclass
class TfjsGraphModel:
    """A TFJS graph model: its GraphDef nodes (JSON dicts, in file order), named weight arrays and signature."""

    nodes: List[dict]
    weights: Dict[str, np.ndarray]
    signature: dict
    format: str
    source: str

    @property
    def nodes_by_name(self) -> Dict[str, dict]:
        return {node['name']: node for node in self.nodes}

    def ops(self) -> Dict[str, int]:
        """Op type -> count (for reports and sanity checks)."""
        counts: Dict[str, int] = {}
        for node in self.nodes:
            counts[node['op']] = counts.get(node['op'], 0) + 1
        return counts


def _decode_entry(entry: dict, buffer: memoryview, offset: int):
    """One manifest entry at ``offset`` of the concatenated shards -> (array, bytes consumed)."""
    shape = [int(d) for d in entry.get('shape', [])]
    count = int(np.prod(shape)) if shape else 1
    quantization = entry.get('quantization')
    target = np.dtype(_STORED_DTYPES[quantization.get('original_dtype', entry['dtype'])
                                     if quantization else entry['dtype']])
    stored_name = quantization['dtype'] if quantization else entry['dtype']
    if stored_name not in _STORED_DTYPES:
        raise ValueError(f"weight {entry['name']!r}: unsupported stored dtype {stored_name!r}")
    stored = np.dtype(_STORED_DTYPES[stored_name]).newbyteorder('<')
    size = count * stored.itemsize
    if offset + size > len(buffer):
        raise ValueError(f"weight {entry['name']!r} ({stored_name} {shape}) runs past the end of the shards "
                         f"({offset + size} > {len(buffer)} bytes)")
    raw = np.frombuffer(buffer, dtype=stored, count=count, offset=offset)
    if quantization and stored_name in ('uint8', 'uint16'):
        values = raw.astype(np.float64) * float(quantization['scale']) + float(quantization['min'])
    else:
        values = raw
    return values.astype(target).reshape(shape), size


def read_tfjs_graph_model(model_json_path) -> TfjsGraphModel:
    """Parses ``model.json`` and its shards (looked up beside it). Raises ValueError naming the problem for a
    layers model, a missing shard, a size mismatch or an unsupported dtype."""
    path = Path(model_json_path)
    spec = json.loads(path.read_text())
    if spec.get('format') not in (None, 'graph-model'):
        raise ValueError(f'{path}: format {spec.get("format")!r} is not a TFJS graph model')
    topology = spec.get('modelTopology') or {}
    nodes = topology.get('node')
    if not isinstance(nodes, list):
        raise ValueError(f'{path}: modelTopology has no node list (a layers model?)')
    weights: Dict[str, np.ndarray] = {}
    for group in spec.get('weightsManifest', []):
        shards = []
        for name in group['paths']:
            shard = path.parent / name
            if not shard.is_file():
                raise ValueError(f'{path}: weight shard {name!r} not found beside it')
            shards.append(shard.read_bytes())
        buffer = memoryview(b''.join(shards))
        offset = 0
        for entry in group['weights']:
            array, used = _decode_entry(entry, buffer, offset)
            weights[entry['name']] = array
            offset += used
        if offset != len(buffer):
            raise ValueError(f'{path}: shards {group["paths"]} hold {len(buffer)} bytes, the manifest describes '
                             f'{offset}')
    return TfjsGraphModel(nodes=nodes, weights=weights, signature=spec.get('signature') or {},
                          format=spec.get('format', 'graph-model'), source=str(path))


def write_tfjs_graph_model(directory, nodes: List[dict], weights: Dict[str, np.ndarray], signature=None,
                           name='model', shard_bytes: int = 4 << 20, float16: bool = False) -> Path:
    """Writes a TFJS graph model (the inverse of :func:`read_tfjs_graph_model`), for tests and fixtures:
    ``weights`` in dict order, float arrays optionally stored as float16 quantized entries, split into shards of
    at most ``shard_bytes``. Returns the path of the JSON file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    entries, blobs = [], []
    for key, value in weights.items():
        array = np.asarray(value)
        dtype = {np.dtype(np.float32): 'float32', np.dtype(np.float64): 'float32', np.dtype(np.int32): 'int32',
                 np.dtype(np.int64): 'int32', np.dtype(np.bool_): 'bool'}[array.dtype]
        entry = {'name': key, 'shape': list(array.shape), 'dtype': dtype}
        if dtype == 'float32' and float16:
            entry['quantization'] = {'dtype': 'float16', 'original_dtype': 'float32'}
            blobs.append(array.astype('<f2').tobytes())
        else:
            blobs.append(array.astype(np.dtype(_STORED_DTYPES[dtype]).newbyteorder('<')).tobytes())
        entries.append(entry)
    data = b''.join(blobs)
    paths = []
    for i in range(0, max(len(data), 1), shard_bytes):
        shard = f'{name}.group1-shard{i // shard_bytes + 1}of{-(-max(len(data), 1) // shard_bytes)}.bin'
        (directory / shard).write_bytes(data[i:i + shard_bytes])
        paths.append(shard)
    spec = {'format': 'graph-model', 'generatedBy': 'metrabs_ros test fixture', 'convertedBy': None,
            'signature': signature or {}, 'modelTopology': {'node': nodes, 'library': {}, 'versions': {}},
            'weightsManifest': [{'paths': paths, 'weights': entries}]}
    out = directory / f'{name}.json'
    out.write_text(json.dumps(spec))
    return out
