"""Weights of sorted pool positions shared by the mechanisms that take a maximum of a count of
candidates (Best-of-n, Best-of-Poisson, any random count)."""

from __future__ import annotations

import functools

import numpy as np
from scipy import special

from ._numerics import FloatArray


@functools.lru_cache(maxsize=8)
def _log_factorials(m: int) -> FloatArray:
    """``log (k - 1)!`` at index k, for k = 0 .. m + 1 (read-only; cached per pool size, since a
    curve asks for one row per parameter)."""
    table = special.gammaln(np.arange(m + 2, dtype=float))
    table.setflags(write=False)
    return table


def subset_maximum_weights(counts: FloatArray, m: int, start: int = 0) -> FloatArray:
    """Best-of-c without replacement from a pool of m, for each count c (rows): sorted position i
    (1-based) is the maximum of a uniform c-subset with probability ``C(i-1, c-1) / C(m, c)``
    (zero for i < c). Columns are positions ``start + 1 .. m``; log-space binomials (log-factorials
    looked up from one table when every count is a whole number)."""
    i = np.arange(start + 1, m + 1, dtype=float)[None, :]
    c = np.asarray(counts, dtype=float)[:, None]
    ok = i >= c
    if c.size > 1 and np.all(c == np.round(c)) and c.min() >= 1 and c.max() <= m:  # a mixture of counts
        log_factorial = _log_factorials(m)  # log (k - 1)! at index k
        ii, cc = i.astype(np.intp), c.astype(np.intp)
        diff = np.where(ok, ii - cc, 0)
        log_w = (
            log_factorial[ii]  # log (i-1)!
            - log_factorial[cc]  # log (c-1)!
            - log_factorial[diff + 1]  # log (i-c)!
            - (log_factorial[m + 1] - log_factorial[cc + 1] - log_factorial[m - cc + 1])
        )
    else:
        with np.errstate(invalid="ignore"):
            log_w = (
                special.gammaln(i)
                - special.gammaln(c)
                - special.gammaln(np.where(ok, i - c + 1, 1.0))
                - (special.gammaln(m + 1) - special.gammaln(c + 1) - special.gammaln(m - c + 1))
            )
    return np.where(ok, np.exp(np.where(ok, log_w, -np.inf)), 0.0)
