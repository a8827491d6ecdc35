"""Optional compiled kernels (Numba, the ``fast`` extra), imported on first use.

Each kernel module has a pure-NumPy counterpart that gives the same numbers; a caller asks
:func:`load` and takes the NumPy route when it returns ``None``. Numba takes about 0.2 s to import
and compiles each kernel once per environment (cached on disk), so nothing is imported until a
kernel is needed.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType


@cache
def load(name: str) -> ModuleType | None:
    """The kernel module ``hedgetune.mechanisms.<name>``, or ``None`` without Numba."""
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ImportError as error:
        if error.name not in ("numba", "llvmlite"):  # only a missing Numba is expected
            raise
        return None
