"""Row blocks on worker threads, for NumPy calls and compiled kernels that release the GIL."""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._limits import available_cores

#: Fewest values worth a worker thread of their own: below it, threads cost more than they save.
THREAD_VALUES = 1 << 20


def row_workers(rows: int, min_rows: int = 8) -> int:
    """Threads for work over ``rows`` rows: one per available core, at least ``min_rows`` each."""
    return max(1, min(available_cores(), rows // max(1, min_rows)))


_PREFIX = "hedgetune-rows"


@functools.cache
def _pool(workers: int, process: int) -> ThreadPoolExecutor:
    """One pool of worker threads per size and process, started on first use and kept: starting
    threads for every call cost milliseconds each, which a tune (dozens of calls) felt. Keyed by
    the process id: a forked child inherits the pool but not its threads, so it starts its own."""
    return ThreadPoolExecutor(workers, thread_name_prefix=_PREFIX)


def over_row_blocks(rows: int, workers: int, fill: Callable[[int, int], None]) -> None:
    """``fill(start, stop)`` over a few blocks of rows per worker thread (the work must release the
    GIL for the threads to run at once; several blocks each balance rows of unequal cost). An
    exception in any block is raised here. Called from one of the workers, it runs inline (a
    worker waiting on its own pool could wait forever)."""
    edges = np.linspace(0, rows, 4 * workers + 1).astype(int)
    blocks = [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]
    if workers == 1 or threading.current_thread().name.startswith(_PREFIX):
        for start, stop in blocks:
            fill(start, stop)
        return
    list(_pool(workers, os.getpid()).map(lambda bounds: fill(*bounds), blocks))


def flat_copy(values: np.ndarray) -> np.ndarray:
    """A contiguous 1-D copy of ``values`` (C order), in blocks on worker threads when it is large:
    a large copy is bound by first touches of fresh memory, which the threads share out."""
    source = values.reshape(-1)
    out = np.empty(source.size, dtype=source.dtype)
    over_row_blocks(source.size, row_workers(source.size, THREAD_VALUES), lambda a, b: np.copyto(out[a:b], source[a:b]))
    return out
