"""TensorRT engine cache (pure Python, no tensorrt import).

A serialized engine is valid only for one ONNX file, GPU model (compute capability), TensorRT version, precision
recipe and set of optimisation-profile shapes. The cache stores ``NAME.engine`` with ``NAME.engine.json`` beside it:
the readable key it was built for. A lookup compares the stored key with the wanted one field by field; any
difference (listed in the log) means a rebuild that replaces the file.

File name: ``{model}-{onnx_sha256[:10]}-{precision}-{gpu}-sm{cc}.engine`` so that one cache folder can serve
several models and GPUs. The timing cache is shared per GPU model and TensorRT version:
``timing-{gpu}-sm{cc}-trt{version}.cache``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

ENGINE_CACHE_ENV = 'METRABS_ROS_ENGINE_CACHE'
KEY_FORMAT = 'metrabs_ros.engine/1'


def default_cache_dir() -> Path:
    """``$METRABS_ROS_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/metrabs_ros/engines`` (default ~/.cache/...)."""
    if os.environ.get(ENGINE_CACHE_ENV):
        return Path(os.environ[ENGINE_CACHE_ENV]).expanduser()
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / 'metrabs_ros' / 'engines'


def file_sha256(path, chunk_bytes: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks (ONNX files reach hundreds of MB)."""
    digest = hashlib.sha256()
    with open(os.fspath(path), 'rb') as f:
        for block in iter(lambda: f.read(chunk_bytes), b''):
            digest.update(block)
    return digest.hexdigest()


def slug(text: str) -> str:
    """File-name-safe lower-case form: 'NVIDIA GeForce RTX 4090' -> 'nvidia-geforce-rtx-4090'."""
    return re.sub(r'[^a-z0-9.]+', '-', str(text).lower()).strip('-') or 'unknown'


@dataclasses.dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. ``profiles``: input name -> [min, opt, max] shapes (lists of ints)."""
    onnx_sha256: str
    onnx_name: str
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    precision: str
    strongly_typed: bool
    profiles: Mapping[str, List[List[int]]]
    builder_options: Mapping[str, object] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {'format': KEY_FORMAT, 'onnx_sha256': self.onnx_sha256, 'onnx_name': self.onnx_name,
                'gpu_name': self.gpu_name, 'compute_capability': self.compute_capability,
                'tensorrt_version': self.tensorrt_version, 'precision': self.precision,
                'strongly_typed': bool(self.strongly_typed),
                'profiles': {k: [list(map(int, s)) for s in v] for k, v in sorted(self.profiles.items())},
                'builder_options': dict(sorted(self.builder_options.items()))}

    @classmethod
    def create(cls, onnx_path, gpu_name: str, compute_capability: str, tensorrt_version: str, precision: str,
               strongly_typed: bool, profiles: Mapping, builder_options: Optional[Mapping] = None,
               onnx_sha256: Optional[str] = None) -> 'EngineKey':
        return cls(onnx_sha256 or file_sha256(onnx_path), os.path.basename(os.fspath(onnx_path)), str(gpu_name),
                   str(compute_capability), str(tensorrt_version), str(precision), bool(strongly_typed),
                   {k: [list(map(int, s)) for s in v] for k, v in profiles.items()}, dict(builder_options or {}))

    def file_stem(self) -> str:
        model = slug(os.path.splitext(self.onnx_name)[0])
        return (f'{model}-{self.onnx_sha256[:10]}-{self.precision}-{slug(self.gpu_name)}-'
                f'sm{self.compute_capability.replace(".", "")}')

    def timing_cache_name(self) -> str:
        return (f'timing-{slug(self.gpu_name)}-sm{self.compute_capability.replace(".", "")}-'
                f'trt{slug(self.tensorrt_version)}.cache')


def engine_paths(cache_dir, key: EngineKey) -> Tuple[Path, Path]:
    """(engine file, its key JSON) for ``key`` in ``cache_dir``."""
    engine = Path(cache_dir) / f'{key.file_stem()}.engine'
    return engine, engine.with_name(engine.name + '.json')


def key_differences(stored: Mapping, wanted: EngineKey) -> List[str]:
    """Readable differences between a stored key dict and the wanted key ('' fields compared verbatim)."""
    want = wanted.to_dict()
    out = []
    for field in want:
        if field not in stored:
            out.append(f'{field}: missing in the stored key')
        elif stored[field] != want[field]:
            if field == 'profiles':
                names = sorted(set(stored[field]) | set(want[field]))
                changed = [n for n in names if stored[field].get(n) != want[field].get(n)]
                out.append('profile shapes of ' + ', '.join(
                    f'{n}: stored {stored[field].get(n)} != wanted {want[field].get(n)}' for n in changed))
            else:
                out.append(f'{field}: stored {stored[field]!r} != wanted {want[field]!r}')
    return out


def lookup(cache_dir, key: EngineKey) -> Tuple[Optional[Path], List[str]]:
    """(engine path, []) when a matching engine is cached, else (None, reasons why it must be built)."""
    engine, meta = engine_paths(cache_dir, key)
    if not engine.is_file():
        return None, [f'no cached engine {engine.name} in {engine.parent}']
    if not meta.is_file():
        return None, [f'{engine.name} has no key file {meta.name}']
    try:
        stored = json.loads(meta.read_text())
    except (OSError, ValueError) as error:
        return None, [f'key file {meta.name} unreadable: {error}']
    differences = key_differences(stored, key)
    if differences:
        return None, differences
    if engine.stat().st_size == 0:
        return None, [f'{engine.name} is empty']
    return engine, []


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + '.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def store(cache_dir, key: EngineKey, engine_bytes: bytes, extra: Optional[Dict] = None) -> Path:
    """Write the engine and its key JSON atomically (the JSON last, so a half-written pair never matches)."""
    engine, meta = engine_paths(cache_dir, key)
    if meta.exists():
        meta.unlink()
    _atomic_write(engine, bytes(engine_bytes))
    record = key.to_dict()
    record['created'] = time.strftime('%Y-%m-%dT%H:%M:%S%z')
    record['engine_bytes'] = len(engine_bytes)
    record.update(extra or {})
    _atomic_write(meta, json.dumps(record, indent=2).encode())
    return engine


def read_timing_cache(cache_dir, key: EngineKey) -> bytes:
    path = Path(cache_dir) / key.timing_cache_name()
    return path.read_bytes() if path.is_file() else b''


def write_timing_cache(cache_dir, key: EngineKey, data: bytes) -> Path:
    path = Path(cache_dir) / key.timing_cache_name()
    _atomic_write(path, bytes(data))
    return path
