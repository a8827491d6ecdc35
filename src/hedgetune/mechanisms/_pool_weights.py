"""Weights of sorted pool positions shared by the mechanisms that take a maximum of a count of
candidates (Best-of-n, Best-of-Poisson, any random count)."""

from __future__ import annotations

import functools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import special

from ._numerics import FloatArray


@functools.lru_cache(maxsize=8)
def _log_factorials(m: int) -> FloatArray:
    """``log (k - 1)!`` at index ``m + k`` for k = 1 .. m + 1, and ``+inf`` at the m + 1 indices
    below (where a binomial coefficient is zero). Read-only; cached per pool size, since a curve
    asks for rows at many parameters."""
    table = np.concatenate([np.full(m + 1, np.inf), special.gammaln(np.arange(1, m + 2, dtype=float))])
    table.setflags(write=False)
    return table


def subset_maximum_weights(counts: FloatArray, m: int, start: int = 0) -> FloatArray:
    """Best-of-c without replacement from a pool of m, for each whole count ``1 <= c <= m`` (rows):
    sorted position i (1-based) is the maximum of a uniform c-subset with probability

        C(i-1, c-1) / C(m, c) = exp( log (i-1)! - log (i-c)! + log[c (m-c)! / m!] )

    (zero for i < c). Columns are positions ``start + 1 .. m``.

    The first and last terms are a column and a row; the middle one, ``log (i-c)!``, is a Toeplitz
    matrix, read as a strided view of one table of log-factorials (``+inf`` where i < c). So a
    block of rows costs three passes: an outer sum, a subtraction and ``exp``.
    """
    c = np.asarray(counts, dtype=float).reshape(-1)
    if c.size and (np.any(c != np.round(c)) or c.min() < 1 or c.max() > m):
        raise ValueError(f"counts must be whole numbers in [1, {m}], got {c.min():g} .. {c.max():g}")
    if not 0 <= start <= m:
        raise ValueError(f"start must lie in [0, {m}], got {start}")
    width = m - start
    table = _log_factorials(m)  # log (k-1)! at m + k
    cc = c.astype(np.intp)
    positions = np.arange(start + 1, m + 1)
    log_w = table[m + positions][None, :] + (
        np.log(c) + table[m + m - cc + 1] - table[m + m + 1]  # log[c (m-c)! / m!]
    )[:, None]
    if width == 0 or c.size == 0:
        return np.exp(log_w)
    # log (i-c)! = table[m + i - c + 1]: for row c, columns start+1 .. m read the window beginning
    # at m + start + 2 - c, i.e. window index m + start + 2 - c of the table.
    windows = sliding_window_view(table, width)
    first = m + start + 2 - cc
    if c.size > 1 and np.all(np.diff(cc) == 1):  # consecutive counts: a strided view, no copy
        toeplitz = windows[first[-1] : first[0] + 1][::-1]
    else:
        toeplitz = windows[first]
    log_w -= toeplitz
    return np.exp(log_w, out=log_w)
