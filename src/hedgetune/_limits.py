"""Sizes checked before allocation: a request that cannot fit gets a clear error, not a crash."""

from __future__ import annotations

import os

import numpy as np

#: Largest count of candidates a sampler may be asked to draw for one prompt.
MAX_COUNT = int(np.iinfo(np.intp).max)


def memory_bytes() -> int:
    """Physical memory of this machine (16 GiB when the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 16 << 30


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.3g} {unit}"
        size /= 1024
    return f"{size:.3g} PiB"  # pragma: no cover


def require_memory(elements: float, what: str, itemsize: int = 8) -> None:
    """Raise ``MemoryError`` naming ``what`` when ``elements`` values would not fit in memory."""
    needed = float(elements) * itemsize
    available = memory_bytes()
    if needed > available:
        raise MemoryError(
            f"{what} needs {human_bytes(needed)}, more than this machine's {human_bytes(available)} of memory"
        )


def require_count(value: float, name: str) -> None:
    """Raise ``ValueError`` when a number of candidates cannot be represented."""
    if value > MAX_COUNT:
        raise ValueError(f"{name} = {value:g} is too large to draw (at most {MAX_COUNT} candidates)")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the system reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
