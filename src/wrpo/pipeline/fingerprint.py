"""Content fingerprints of a stage's inputs: what decides whether its outputs are still current."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path


def path_fingerprint(location: str) -> str:
    """Files by content, folders by file names, sizes and times, a Python scorer (module:function) by
    its module's source, anything else (a Hub id) by name: a new Hub revision is not noticed."""
    path = Path(location)
    digest = hashlib.sha256()
    if not path.exists() and ":" in location:
        spec = importlib.util.find_spec(location.split(":", 1)[0])
        if spec is not None and spec.origin and Path(spec.origin).is_file():
            digest.update(location.encode())  # the function's name, beside its module's source
            path = Path(spec.origin)
    if path.is_file():
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    elif path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.relative_to(path).parts[0].startswith("checkpoint-")):
            stat = file.stat()
            digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    else:
        digest.update(location.encode())  # a Hub id
    return digest.hexdigest()
