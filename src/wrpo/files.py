"""Files: written so that readers see the old content or the new, never half of it; and fingerprinted
by content, to tell whether what was computed from them is still current."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Writes `text` to a temporary file beside `path` (unique per call, so processes writing the same
    path do not share one), flushes it to disk and renames it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                     suffix=".tmp", delete=False) as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)
    return path


def missing_module(location: str) -> str | None:
    """The module of a Python scorer (`module:function`, not a path) that cannot be imported here, else None."""
    if ":" not in location or Path(location).exists():
        return None
    module = location.split(":", 1)[0]
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a package above it missing, or an empty name
        found = None
    return module if found is None else None


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
        for file in sorted(p for p in path.rglob("*")
                           if p.is_file() and not p.relative_to(path).parts[0].startswith("checkpoint-")):
            stat = file.stat()
            digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    else:
        digest.update(location.encode())  # a Hub id
    return digest.hexdigest()


def text_fingerprint(*parts: str) -> str:
    """A short name for what was computed from `parts` (fingerprints, settings as JSON): a cache
    file's name changes when any of them does."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]
