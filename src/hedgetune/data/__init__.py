"""Calibration tables that ship with hedgetune (see ``README.md`` in this folder for provenance)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..io import read_table
from ..table import RewardTable

BUNDLED = {
    "alpacaeval": "alpacaeval_tulu2dpo13b.parquet",
    "arithmetic": "chainsum_smollm2.parquet",
}


def path(name: str) -> Path:
    """The file of a bundled table."""
    if name not in BUNDLED:
        raise ValueError(f"unknown bundled table {name!r}; choose one of {sorted(BUNDLED)}")
    return Path(str(resources.files(__package__) / BUNDLED[name]))


def available() -> list[str]:
    """Bundled tables present in this installation."""
    return [name for name in BUNDLED if path(name).exists()]


def load(name: str = "alpacaeval") -> RewardTable:
    """A bundled table, with the group column (AlpacaEval subset) and every proxy."""
    return read_table(path(name))
