"""The library's error for unusable input tables (every layer raises it; none imports another to)."""

from __future__ import annotations


class TableError(ValueError):
    """A calibration table that cannot be used as given; the message names the problem."""
