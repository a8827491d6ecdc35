"""Optional compiled kernels (Numba, the ``fast`` extra), imported on first use.

Each kernel module has a pure-NumPy counterpart that gives the same numbers; a caller asks
:func:`load` and takes the NumPy route when it returns ``None``. Numba takes about 0.2 s to import
and compiles each kernel once per environment (cached on disk), so nothing is imported until a
kernel is needed.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from types import ModuleType
from typing import Literal

import numpy as np

from .._limits import available_cores

#: ``"compiled"`` the Numba kernel, ``"numpy"`` the NumPy route, ``"auto"`` the kernel when Numba
#: is installed.
Engine = Literal["auto", "compiled", "numpy"]


@cache
def load(name: str) -> ModuleType | None:
    """The kernel module ``hedgetune.mechanisms.<name>``, or ``None`` without Numba."""
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ImportError as error:
        if error.name not in ("numba", "llvmlite"):  # only a missing Numba is expected
            raise
        return None


def check_engine(engine: str) -> None:
    """Raise ``ValueError`` unless ``engine`` is ``"auto"``, ``"compiled"`` or ``"numpy"``."""
    if engine not in ("auto", "compiled", "numpy"):
        raise ValueError(f"engine must be 'auto', 'compiled' or 'numpy', got {engine!r}")


def kernel_for(engine: Engine, name: str) -> ModuleType | None:
    """The kernel module ``name`` for ``engine`` (``None``: the NumPy route); ``"compiled"``
    without Numba raises ``ImportError``."""
    check_engine(engine)
    kernel = None if engine == "numpy" else load(name)
    if kernel is None and engine == "compiled":
        raise ImportError("engine='compiled' needs Numba: pip install 'hedgetune[fast]'")
    return kernel


def row_workers(rows: int, min_rows: int = 8) -> int:
    """Threads for a kernel over ``rows`` rows: one per available core, at least ``min_rows`` each."""
    return max(1, min(available_cores(), rows // min_rows))


def over_row_blocks(rows: int, workers: int, fill: Callable[[int, int], None]) -> None:
    """``fill(start, stop)`` over a few blocks of rows per worker thread (the kernels release the
    GIL, so the threads run at once; several blocks each balance rows of unequal cost)."""
    edges = np.linspace(0, rows, 4 * workers + 1).astype(int)
    blocks = [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]
    if workers == 1:
        for start, stop in blocks:
            fill(start, stop)
        return
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda bounds: fill(*bounds), blocks))
