"""Compiled InferenceTimePessimism over drawn sets (Numba): one pass per set, no temporaries.

The same numbers as the NumPy route of :meth:`InferenceTimePessimism.set_probabilities_many`
followed by :meth:`SetRule.group_probabilities`' accumulation: for each drawn set, the threshold
lambda (the simplex projection over its sorted scores), the acceptance probabilities, the
Gauss-Legendre integral of ``prod_{j != i} (1 - t a_j)``, then each position's share of the set's
choice and the set's expected true reward (for the Monte Carlo variance).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def accumulate(
    scores: np.ndarray,
    index: np.ndarray,
    true: np.ndarray,
    gamma: float,
    t: np.ndarray,
    w: np.ndarray,
    positions: np.ndarray,
    value_sum: np.ndarray,
    value_sq: np.ndarray,
) -> None:
    """Sets ``scores[r, k]`` (n scores each) of rows r: add each member's choice probability / K to
    ``positions[r, index[r, k, i]]`` and the set's expected true reward (and its square) to
    ``value_sum[r]`` (``value_sq[r]``)."""
    rows, sets, n = scores.shape
    ordered = np.empty(n)
    a = np.empty(n)
    p = np.empty(n)
    inverse_sets = 1.0 / sets
    for r in range(rows):
        for k in range(sets):
            top = scores[r, k, 0]
            for i in range(1, n):
                top = max(top, scores[r, k, i])
            if gamma == 0.0:
                for i in range(n):
                    a[i] = 1.0
            else:
                for i in range(n):  # descending insertion sort of the shifted scores
                    x = scores[r, k, i] - top
                    j = i
                    while j > 0 and ordered[j - 1] < x:
                        ordered[j] = ordered[j - 1]
                        j -= 1
                    ordered[j] = x
                total = 0.0
                lam = -np.inf
                for c in range(n):
                    total += ordered[c]
                    lam = max(lam, (total - n / gamma) / (c + 1))
                for i in range(n):
                    a[i] = max(scores[r, k, i] - top - lam, 0.0) / (-lam)
            for i in range(n):
                p[i] = 0.0
            for q in range(t.size):
                prod = 1.0
                for j in range(n):
                    prod *= 1.0 - t[q] * a[j]
                for i in range(n):
                    p[i] += w[q] * prod / (1.0 - t[q] * a[i])
            value = 0.0
            for i in range(n):
                share = a[i] * p[i]
                positions[r, index[r, k, i]] += share * inverse_sets
                value += share * true[r, k, i]
            value_sum[r] += value
            value_sq[r] += value * value
