"""Shared timing helper for the benchmarks: best-of-k wall time of a callable."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_time(fn: Callable[[], object], repeats: int = 7) -> float:
    """Smallest wall-clock time of ``repeats`` calls (seconds): robust to noise from other work."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak memory allocated during one call (tracemalloc, which sees NumPy's allocations)."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def alternating(fn: Callable[[], object], baseline: Callable[[], object], rounds: int = 5) -> tuple[float, float]:
    """Best wall-clock times of ``fn`` and ``baseline``, timed in alternation (``rounds`` each): the
    machine's speed drifts from minute to minute, and a ratio of times taken minutes apart drifts
    with it."""
    best_fn = best_baseline = float("inf")
    for _ in range(rounds):
        best_fn = min(best_fn, best_time(fn, repeats=1))
        best_baseline = min(best_baseline, best_time(baseline, repeats=1))
    return best_fn, best_baseline
