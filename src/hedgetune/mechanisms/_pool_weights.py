"""Weights of sorted pool positions shared by the mechanisms that take a maximum of a count of
candidates (Best-of-n, Best-of-Poisson, any random count)."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import special

from ..arrays import IntArray
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


#: What a best-of-N mechanism's :meth:`Mechanism.candidate_counts` gives: the counts c < m with
#: non-negligible probability, ``P(N = c)`` and its derivative in theta (``None`` for a
#: whole-number parameter); the rest of the probability is on the whole pool.
Counts = tuple[FloatArray, FloatArray, FloatArray | None]


def negligible_start(counts: Counts, m: int, mass: float) -> int:
    """A position s below which the mixture's weights (and their derivatives) add up to at most
    ``mass``. All c candidates fall below s with probability ``C(s, c) / C(m, c) <= x^c``,
    ``x = s/m``; so s is where the bound ``sum_c (|P(N = c)| + |P'(N = c)|) x^c + tail x^m`` (a
    probability generating function, increasing in x) reaches it, found by bisection (to within
    ``m / 256`` below it)."""
    values, pmf, dpmf = counts
    if values.size == 0:  # only the whole pool: the top position
        return m - 1
    weight = np.abs(pmf) + (0.0 if dpmf is None else np.abs(dpmf))
    tail = max(0.0, 1.0 - float(pmf.sum()))
    log_weight = np.log(np.maximum(np.append(weight, tail), 1e-300))
    exponents = np.append(values, float(m))
    target = np.log(mass)

    def negligible(s: int) -> bool:
        terms = log_weight + exponents * np.log(s / m)
        top = terms.max()
        return bool(top + np.log(np.exp(terms - top).sum()) <= target)

    low, high = 0, m  # positions 1 .. low are negligible; 1 .. high are not (the bound is ~1 at m)
    while high - low > max(1, m >> 8):  # to within 0.4% of the pool: a little more width is harmless
        mid = (low + high) // 2
        low, high = (mid, high) if negligible(mid) else (low, mid)
    return low


def subset_negligible_start(counts: FloatArray, m: int, mass: float) -> IntArray:
    """For each count c, the largest s with ``(s/m)^c <= mass``, a bound on the chance that all c
    candidates fall in positions 1 .. s (``m - 1`` at c = m: only the top position)."""
    s = np.floor(m * mass ** (1.0 / counts)).astype(np.intp)
    return np.where(counts == m, m - 1, np.minimum(s, m - 1))


def mixture_rows(
    counts: Sequence[Counts], m: int, derivative: bool, starts: Sequence[int], mass: float
) -> tuple[int, FloatArray]:
    """For each mixture of counts, ``sum_c P(N = c) C(i-1, c-1) / C(m, c)`` at positions
    ``start + 1 .. m`` (``start`` the smallest of ``starts``; below its own ``starts[r]``, row r
    holds zeros or its own negligible weights), the draws of m or more valued as the whole pool
    (its top position); with
    ``derivative``, the same with ``P'(N = c)`` (which each mixture must then give).

    Neighbouring mixtures (a curve's grid) share most of their counts, so they are taken in
    batches: blocks of :func:`subset_maximum_weights` over the union of their counts, then matrix
    products, wherever that costs fewer weights than a block per mixture. Each count is weighed only
    from where its own weights stop being negligible (``mass``: positions skipped weigh less than
    ``mass`` times the mixture's total).
    """
    start = min(starts, default=m)
    values = np.zeros((len(counts), m - start))
    for batch in _batches(counts, starts, m):
        first = min(starts[r] for r in batch)
        low = int(min(counts[r][0][0] for r in batch))
        high = int(max(counts[r][0][-1] for r in batch))
        mixing = np.zeros((len(batch), high - low + 1))
        for row, r in enumerate(batch):
            c, pmf, dpmf = counts[r]
            mixing[row, c.astype(np.intp) - low] = dpmf if derivative else pmf  # dpmf is given with derivative
        rows = slice(batch[0], batch[-1] + 1)  # a run of consecutive mixtures
        # Counts in bands [c, 2c): the best of at least c candidates is below position s with
        # probability <= (s/m)^c, so a band starts where that falls under NEGLIGIBLE_MASS.
        band = low
        while band <= high:
            end = min(high, 2 * band - 1)
            own = max(first, int(subset_negligible_start(np.array([float(band)]), m, mass)[0]))
            block = subset_maximum_weights(np.arange(band, end + 1.0), m, own)
            values[rows, own - start :] += mixing[:, band - low : end - low + 1] @ block
            band = end + 1
    for r, (_, pmf, dpmf) in enumerate(counts):  # the whole pool: its top position
        if derivative:
            values[r, -1] -= 0.0 if dpmf is None else float(dpmf.sum())
        else:
            values[r, -1] += max(0.0, 1.0 - float(pmf.sum()))
    return start, values


#: Cost of one multiply-add of the mixing product, in units of one weight of
#: :func:`subset_maximum_weights` (about 10 ns each against 0.02 ns, measured on 800 x 12,600).
_PRODUCT_COST = 1 / 400


def _batches(counts: Sequence[Counts], starts: Sequence[int], m: int) -> Iterator[list[int]]:
    """Runs of consecutive mixtures computed together: a mixture joins the run when that adds no
    more work (weights of the widened block, plus the product) than computing it alone."""
    batch: list[int] = []
    low = high = first = 0

    def cost(lo: float, hi: float, s: int, rows: int) -> float:
        return (hi - lo + 1) * (m - s) * (1 + rows * _PRODUCT_COST)

    for r, ((c, _, _), s) in enumerate(zip(counts, starts, strict=True)):
        if c.size == 0:
            continue
        if batch:
            now = cost(low, high, first, len(batch))
            joined = cost(min(low, c[0]), max(high, c[-1]), min(first, s), len(batch) + 1)
            if joined - now <= cost(c[0], c[-1], s, 1):
                batch.append(r)
                low, high, first = min(low, c[0]), max(high, c[-1]), min(first, s)
                continue
            yield batch
        batch, low, high, first = [r], c[0], c[-1], s
    if batch:
        yield batch
