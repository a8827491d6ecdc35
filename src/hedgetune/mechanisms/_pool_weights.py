"""Weights of sorted pool positions shared by the mechanisms that take a maximum of a count of
candidates (Best-of-n, Best-of-Poisson, any random count)."""

from __future__ import annotations

import numpy as np
from scipy import special

from ._numerics import FloatArray


def subset_maximum_weights(counts: FloatArray, m: int, start: int = 0) -> FloatArray:
    """Best-of-c without replacement from a pool of m, for each count c (rows): sorted position i
    (1-based) is the maximum of a uniform c-subset with probability ``C(i-1, c-1) / C(m, c)``
    (zero for i < c). Columns are positions ``start + 1 .. m``; log-space binomials."""
    i = np.arange(start + 1, m + 1, dtype=float)[None, :]
    c = np.asarray(counts, dtype=float)[:, None]
    ok = i >= c
    with np.errstate(invalid="ignore"):
        log_w = (
            special.gammaln(i)
            - special.gammaln(c)
            - special.gammaln(np.where(ok, i - c + 1, 1.0))
            - (special.gammaln(m + 1) - special.gammaln(c + 1) - special.gammaln(m - c + 1))
        )
    return np.where(ok, np.exp(np.where(ok, log_w, -np.inf)), 0.0)
