"""The command line shared by the experiment scripts: ``--out`` and ``--quick``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cli(doc: str | None, run: Callable[[Path, bool], Any], report: Callable[[Any], None]) -> None:
    """Parse ``--out`` / ``--quick``, run the experiment and print its summary."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="experiments/out", help="folder for the figures and the JSON")
    parser.add_argument("--quick", action="store_true", help="reduced settings (for tests)")
    args = parser.parse_args()
    report(run(Path(args.out), args.quick))
