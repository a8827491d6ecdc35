"""What ``import hedgetune`` loads: the heavy optional stacks only when used."""

from __future__ import annotations

import subprocess
import sys


def test_import_loads_no_heavy_module() -> None:
    """Importing the package must not pull in scipy.stats (about a second), Numba (compiled kernels
    load on first use), plotting, tables or the LLM, cluster and HTTP stacks."""
    heavy = ("scipy.stats", "numba", "matplotlib", "pyarrow", "torch", "transformers", "ray", "aiohttp", "pandas")
    code = (
        "import sys, hedgetune\n"
        f"heavy = {heavy!r}\n"
        "print(sorted({m for m in sys.modules for h in heavy if m == h or m.startswith(h + '.')}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
