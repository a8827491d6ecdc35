"""Atomic file writes: the one way hedgetune writes an output file.

A file is written to a temporary name in the target's folder, flushed to disk (``fsync``), given the
permissions the process's umask allows (``mkstemp``'s 0600 would hide it from others), then renamed
over the target in one step. A reader never sees a half-written file; a crash leaves the old file
(or none) and at worst a ``.NAME.*.tmp`` file, which :func:`remove_stale_temporaries` cleans. The
rename replaces a symbolic link at the target instead of writing through it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_SUFFIX = ".tmp"


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; when the block ends without error, the file written
    there becomes ``target`` atomically. On error the temporary file is removed. ``mode`` (e.g.
    ``0o600`` for files holding user data) replaces the umask's permissions."""
    target = Path(target)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        tmp.chmod(0o666 & ~_umask() if mode is None else mode)
        os.replace(tmp, target)
        with contextlib.suppress(OSError):  # make the rename itself durable
            directory = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that writes into ``folder`` left behind when they were killed."""
    removed = []
    for path in Path(folder).glob(f".*{_SUFFIX}"):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
