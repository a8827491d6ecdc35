"""The ``hedgetune`` command line: a thin layer over the library.

User mistakes (a missing file or column, a bad parameter) end with a one-line error and exit code
2, never a traceback; ``--json`` prints exactly one JSON object on stdout. One module per group of
commands: :mod:`.analysis` (demo, info, curve, tune, evaluate, plot, report), :mod:`.pipeline`
(generate, score, train-proxy) and :mod:`.serving` (select, serve); :mod:`._common` holds the
shared option groups.
"""

from . import analysis, pipeline, serving  # noqa: F401  (each registers its commands)
from ._group import main

__all__ = ["main"]
