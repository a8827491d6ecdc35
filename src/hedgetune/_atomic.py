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
import errno
import os
import re
import shutil
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


class OutputBusy(ValueError):
    """Another live process is writing the same output."""


#: errno values that mean "this output cannot be written here" (said in one line, not a traceback).
UNWRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def cannot_write(exc: OSError, target: str | os.PathLike[str]) -> ValueError:
    """A one-line error for an output that cannot be written (read-only, full, over a size limit)."""
    reason = exc.strerror or type(exc).__name__
    return ValueError(f"cannot write {str(target)!r}: {reason}; nothing was written")


@contextlib.contextmanager
def exclusive(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``target`` for this process while the block runs: a lock file ``.NAME.lock`` beside it,
    created with ``O_EXCL`` (one process wins, atomically, on any local file system) and holding
    the owner's pid. A second process gets :class:`OutputBusy` while the owner lives; a lock whose
    owner is gone (a killed run) is taken over. Creating the lock also proves the folder writable
    before any work starts. The target's folder is created when missing."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.parent / f".{target.name}.lock"
    for _attempt in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _lock_owner(lock)
            if owner is not None and owner != os.getpid() and _alive(owner):
                raise OutputBusy(
                    f"another hedgetune run (pid {owner}) is writing {str(target)!r}: wait for it, or write elsewhere"
                ) from None
            with contextlib.suppress(FileNotFoundError):  # its owner is gone: take it over
                lock.unlink()
            continue
        except OSError as exc:
            if exc.errno in UNWRITABLE:
                raise cannot_write(exc, target) from None
            raise
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        break
    else:
        raise OutputBusy(f"another hedgetune run is writing {str(target)!r}: wait for it, or write elsewhere")
    try:
        yield target
    finally:
        if _lock_owner(lock) == os.getpid():
            with contextlib.suppress(OSError):
                lock.unlink()


#: The least free space an output's folder must have before a command starts its work.
MIN_FREE_BYTES = 16 << 20


def require_free_space(target: str | os.PathLike[str], needed: int = MIN_FREE_BYTES) -> None:
    """Refuse, before any work, to write into a folder with less than ``needed`` bytes free (a full
    disk would otherwise be found only when the results are written)."""
    folder = Path(target).parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # cannot tell: the atomic writes still leave nothing half-written
    if free < needed:
        raise ValueError(
            f"cannot write {str(target)!r}: only {free >> 20} MiB free in {str(folder)!r} "
            f"(at least {needed >> 20} MiB needed); nothing was written"
        )


def _lock_owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip() or "0") or None
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; when the block ends without error its
    files move into ``target`` (renames: a full disk while writing leaves no half a report; a
    folder that exists keeps its other files). On error the temporary folder is removed and
    ``target`` is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}-", suffix=_SUFFIX))
    try:
        yield staging
        staging.chmod(0o777 & ~_umask())
        if not target.exists():
            os.replace(staging, target)
        else:
            for entry in sorted(staging.iterdir()):
                os.replace(entry, target / entry.name)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
