"""Compiled second half of sorting pools (Numba, the ``fast`` extra): one pass per row.

Same numbers as the NumPy route of :func:`hedgetune.pools._sort_rows`: given each row's sorted
packed keys (a score's high bits, then its column), read the columns back out, gather the scores and
true rewards in that order and check the order, all while the row is in cache, instead of one
NumPy pass over the whole block for each step.
"""

from __future__ import annotations

import numba
import numpy as np

#: Status of a row after :func:`gather_sorted`.
ORDERED, TIED, DISORDERED = 0, 1, 2


@numba.njit(cache=True, nogil=True)
def gather_sorted(
    keys: np.ndarray,
    low: np.uint64,
    scores: np.ndarray,
    true: np.ndarray,
    sorted_scores: np.ndarray,
    sorted_true: np.ndarray,
    status: np.ndarray,
    start: int,
    stop: int,
) -> None:
    """Rows ``start..stop-1``: ``keys[r - start]`` holds row r's sorted keys, whose lowest bits
    (``low``) are columns. Write the scores and true rewards in that order and the row's status:
    ``ORDERED`` (strictly increasing), ``TIED`` (equal neighbours, none decreasing) or
    ``DISORDERED`` (scores that agree in all but their last bits came out in the wrong order; the
    caller sorts that row exactly). Releases the GIL."""
    m = scores.shape[1]
    for r in range(start, stop):
        row_keys = keys[r - start]
        for j in range(m):
            column = np.intp(row_keys[j] & low)
            sorted_scores[r, j] = scores[r, column]
            sorted_true[r, j] = true[r, column]
        tied = False
        disordered = False
        for j in range(1, m):  # ORs of comparisons: vectorised
            tied |= sorted_scores[r, j] == sorted_scores[r, j - 1]
            disordered |= sorted_scores[r, j] < sorted_scores[r, j - 1]
        status[r] = DISORDERED if disordered else (TIED if tied else ORDERED)
