"""Content hashes for provenance: a file, or a folder of files (names and contents)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


def _feed(digest: Any, path: Path) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def file_digest(path: str | os.PathLike[str]) -> str:
    """The first 16 hex digits of the SHA-256 of a file's content."""
    digest = hashlib.sha256()
    _feed(digest, Path(path))
    return digest.hexdigest()[:16]


def folder_digest(folder: str | os.PathLike[str]) -> str:
    """SHA-256 over the names and contents of a folder's files (a model: weights, config,
    tokenizer), first 16 hex digits."""
    digest = hashlib.sha256()
    root = Path(folder)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\x00")
        _feed(digest, path)
        digest.update(b"\x01")
    return digest.hexdigest()[:16]
