"""Atomic file writes: the one way hedgetune writes an output file.

A file is written to a temporary name in the target's folder, flushed to disk (``fsync``), given the
permissions the process's umask allows (``mkstemp``'s 0600 would hide it from others), then renamed
over the target in one step. A reader never sees a half-written file; a crash leaves the old file
(or none) and at worst a temporary ``.NAME.<pid>-<random>.tmp``. Temporaries carry their writer's
process id, so that :func:`remove_stale_temporaries` removes only provably abandoned ones (their
process is gone and they are older than an hour): concurrent writers into one folder never delete
each other's files, and a user's own ``.something.tmp`` is never touched. The rename replaces a
symbolic link at the target instead of writing through it.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
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
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}-", suffix=_SUFFIX)
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


#: A temporary of :func:`atomic_path`: ``.NAME.<pid>-<random>.tmp``.
_TEMPORARY = re.compile(r"^\..+\.(\d+)-[A-Za-z0-9_]+\.tmp$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # another user's process, or no such pid: leave it
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str], older_than: float = 3600.0) -> list[Path]:
    """Delete the temporaries that killed writes left in ``folder``: only files named as
    :func:`atomic_path` names them, whose writing process no longer exists and that were last
    modified more than ``older_than`` seconds ago. Anything else is left alone."""
    removed = []
    now = time.time()
    for path in Path(folder).glob(f".*{_SUFFIX}"):
        match = _TEMPORARY.match(path.name)
        if match is None or not path.is_file() or path.is_symlink():
            continue
        try:
            if now - path.stat().st_mtime < older_than or _alive(int(match.group(1))):
                continue
            path.unlink()
        except OSError:  # gone already (another sweeper), or not ours to remove
            continue
        removed.append(path)
    return removed
