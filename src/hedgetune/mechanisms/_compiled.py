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
from typing import Literal

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


#: Fewest values for which ``engine="auto"`` takes a kernel that a small call gains nothing from.
SMALL_CALL = 1 << 16


def check_engine(engine: str) -> None:
    """Raise ``ValueError`` unless ``engine`` is ``"auto"``, ``"compiled"`` or ``"numpy"``."""
    if engine not in ("auto", "compiled", "numpy"):
        raise ValueError(f"engine must be 'auto', 'compiled' or 'numpy', got {engine!r}")


def kernel_for(engine: Engine, name: str, work: float = float("inf"), least_work: float = 0.0) -> ModuleType | None:
    """The kernel module ``name`` for ``engine`` (``None``: the NumPy route); ``"compiled"``
    without Numba raises ``ImportError``. ``"auto"`` also takes the NumPy route when the call's
    ``work`` is below ``least_work``: a small call (one request at a gateway) gains nothing from
    the kernel and would pay for importing Numba, or in a new environment for compiling it."""
    check_engine(engine)
    small = engine == "auto" and work < least_work
    kernel = None if engine == "numpy" or small else load(name)
    if kernel is None and engine == "compiled":
        raise ImportError("engine='compiled' needs Numba: pip install 'hedgetune[fast]'")
    return kernel
