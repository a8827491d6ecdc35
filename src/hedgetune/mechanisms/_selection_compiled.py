"""Compiled softmax sampler (Numba, the ``fast`` extra): one pass over each row.

Same draws as :func:`hedgetune.mechanisms._selection.sample_softmax` given the same uniforms: the
first candidate whose cumulative weight ``sum_(k <= j) exp(beta (s_k - s_max))`` exceeds
``u * total``, missing (NaN) candidates weighing 0. The weights agree with ``np.exp`` to 2e-16
relative and are summed in order, so a draw can differ only when ``u * total`` falls within
rounding of a cumulative boundary (about 1e-16 of the draws).
"""

from __future__ import annotations

import numba
import numpy as np

from ._subsets_compiled import _EXP_FLOOR, _exp_negative


@numba.njit(cache=True, nogil=True)
def sample_rows(
    scores: np.ndarray, beta: float, uniform: np.ndarray, choice: np.ndarray, start: int, stop: int
) -> None:
    """Rows ``start..stop-1`` of ``scores`` (finite or NaN, each row with a number): write into
    ``choice`` the column drawn with probability ``exp(beta s_j) / sum_k exp(beta s_k)`` by the
    uniform ``uniform[r]``. Releases the GIL."""
    width = scores.shape[1]
    gaps = np.empty(width)
    weights = np.empty(width)
    bits = np.zeros(width, dtype=np.int64)
    powers = bits.view(np.float64)
    for r in range(start, stop):
        top = -np.inf
        for j in range(width):  # NaN compares false: ignored
            if scores[r, j] > top:
                top = scores[r, j]
        for j in range(width):
            gaps[j] = beta * (top - scores[r, j])
        _exp_negative(gaps, weights, bits, powers, width)
        total = 0.0
        for j in range(width):
            # Past the exponential's floor the weight is 0, as np.exp gives (to 3e-308); NaN (missing): 0.
            w = weights[j] if gaps[j] <= _EXP_FLOOR else 0.0
            weights[j] = w
            total += w
        target = uniform[r] * total
        cumulative = 0.0
        pick = -1
        for j in range(width):
            cumulative += weights[j]
            if cumulative > target:
                pick = j
                break
        if pick < 0:  # target == total by rounding: the last candidate with weight
            for j in range(width - 1, -1, -1):
                if weights[j] > 0.0:
                    pick = j
                    break
        choice[r] = pick


#: Status of a row after :func:`ties_at_top`.
UNIQUE, TIED, INFINITE, EMPTY = 0, 1, 2, 3


@numba.njit(cache=True, nogil=True)
def ties_at_top(scores: np.ndarray, first: np.ndarray, status: np.ndarray, start: int, stop: int) -> None:
    """Rows ``start..stop-1`` of ``scores``, given ``first = np.argmax(scores, axis=1)`` (which
    lands on a row's first NaN or infinity if it has one): correct ``first`` to the first column
    holding the row's largest score, NaN ignored, and write its ``status``: ``UNIQUE``, ``TIED``
    (another column holds that score), ``INFINITE`` (an infinite score) or ``EMPTY`` (every score
    NaN). One vectorised sum tells a finite row at once. Releases the GIL."""
    width = scores.shape[1]
    for r in range(start, stop):
        row = scores[r]
        top = row[first[r]]
        total = _sum(row)
        if total - total != 0.0:  # a NaN or an infinity somewhere (or a sum that overflowed)
            top = -np.inf
            found = False
            for j in range(width):
                if row[j] == np.inf or row[j] == -np.inf:
                    status[r] = INFINITE
                    break
                if row[j] == row[j] and (not found or row[j] > top):  # NaN: a missing candidate
                    top = row[j]
                    first[r] = j
                    found = True
            else:
                if not found:
                    status[r] = EMPTY
                else:
                    status[r] = TIED if _count(row, top) > 1 else UNIQUE
            continue
        status[r] = TIED if _count(row, top) > 1 else UNIQUE


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _sum(row: np.ndarray) -> float:
    """Sum of a row, in any order (vectorised): NaN or infinite exactly when a score is, or on overflow."""
    total = 0.0
    for j in range(row.size):
        total += row[j]
    return total


@numba.njit(cache=True, nogil=True)
def _count(row: np.ndarray, top: float) -> int:
    count = 0
    for j in range(row.size):
        count += row[j] == top
    return count
