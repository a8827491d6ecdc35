"""Compiled kernels for Soft Best-of-n over the n-subsets of a pool (Numba, the ``fast`` extra).

Same quantity as :func:`hedgetune.mechanisms._subsets.soft_best_of_n_subsets` (its docstring has
the formula), computed with far fewer operations by exploiting where each item matters. With
``c_j = beta (s_max - s_j) >= 0`` (the item's centre), ``a_j = e^(-c_j)`` and ``x_j = exp(-t a_j)``:

``P_i = (n/m) int_0^inf a_i x_i E_i(t) dt``,

``E_i`` the mean over the (n-1)-subsets of the other items of the product of their ``x``.

**Quadrature** (:func:`_row`). At a node ``t`` every item is in one of three states:

* *dead*, ``t a_j >= e^3.6``: ``x_j < 1.3e-16``, so no subset that holds it contributes;
* *free*, ``t a_j < 1e-14 / n``: ``x_j`` is taken as 1, which changes any ``P_i`` by under 1e-14
  (at most n - 1 such factors per subset, and the item's own kernel below there integrates to
  under ``1e-14 / n``);
* *active*, in between: at large ``beta`` only a few items.

Only active items enter the elementary symmetric recurrences (normalised: ``p_k`` is the mean over
k-subsets, a convex update per item); free and dead items enter through the counts
``C(a, k) C(b, n-1-k) / C(m-1, n-1)`` that join the items on either side. The nodes: around each
item's kernel, ``log t`` in ``[c_j - log n + log 2, c_j + 3.6]``, 12-point Gauss-Legendre on cells
of width up to 2 in ``y = log t``; the stretches between these zones (and below the first) are
single 8-point Gauss-Legendre panels in ``t`` itself, where every item is dead or so slow
(``t a_j n <= 2``) that the integrand is a smooth function of ``t``.

**Near subsets** (:func:`_row_by_subsets`). An item more than ``L = log(n / 1e-15)`` above item ``i``
leaves it a softmax weight under ``e^-L`` in any subset that holds both; one more than ``L``
below weighs under ``e^-L`` against it. So ``P_i`` is a sum over the subsets of the items within
``L`` of ``c_i``, the others only counted: exact to 1e-15 relative, no quadrature, and cheap when
items are far apart (large ``beta``). Each pool takes whichever route is cheaper.

Derivatives in beta are carried in forward mode (``da_j/dbeta = a_j g_j``, ``g_j = dz_j/dbeta``).

**Lanes.** Up to 16 neighbouring nodes go through the recurrences together, one SIMD lane each:
the innermost loops run over lanes, which the compiler vectorises, and ``exp(-t a)`` is computed
in a vectorisable form (:func:`_exp_negative`). The lanes share the union of their nodes' active
items; an item dead or free at some lanes only is computed exactly there (a difference under
1e-14 from dropping it).
"""

from __future__ import annotations

import math

import numba
import numpy as np

_LOG_RHO = math.log(2.0)  # t-panels hold every live item to t * n * a_j <= 2
_DEAD_LOG = 3.6  # t a_j >= e^3.6 = 36.6: x_j < 1.3e-16, dead
_FREE_TOLERANCE = 1e-14  # t a_j < 1e-14 / n: free (changes any P_i by under 1e-14)


@numba.njit(cache=True, nogil=True)
def _nodes(
    c: np.ndarray, n: int, xt: np.ndarray, wt: np.ndarray, xy: np.ndarray, wy: np.ndarray, cell: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """The row's quadrature nodes in ascending order: ``log t`` and the weight of ``t a x`` (the
    weight of ``dy``, or of ``dt`` divided by ``t``). Gauss-Legendre rules on [0, 1]: ``(xt, wt)``
    for the panels in ``t``, ``(xy, wy)`` for the cells of width up to ``cell`` in ``y``."""
    m = c.size
    log_n = math.log(n)
    zone = _DEAD_LOG - _LOG_RHO + log_n  # width of one item's zone
    capacity = m * (xt.size + (int(zone / cell) + 2) * xy.size)
    log_ts = np.empty(capacity)
    weights = np.empty(capacity)
    count = 0
    log_prev = -math.inf
    k = 0
    while k < m:
        lo = c[k] - log_n + _LOG_RHO
        hi = c[k] + _DEAD_LOG
        k += 1
        while k < m and c[k] - log_n + _LOG_RHO <= hi:
            hi = max(hi, c[k] + _DEAD_LOG)
            k += 1
        # A panel in t from the previous zone (or 0) up to this zone, in log space: t itself can
        # pass e^709 (centres reach 800 per item); only t a_j = e^(log t - c_j) is ever formed.
        ratio = math.exp(log_prev - lo)  # t_prev / t_hi, 0 for the first panel
        if ratio < 1.0:
            for j in range(xt.size):
                frac = ratio + (1.0 - ratio) * xt[j]  # t / t_hi
                log_ts[count] = lo + math.log(frac)
                weights[count] = (1.0 - ratio) * wt[j] / frac
                count += 1
        cells = math.ceil((hi - lo) / cell)
        step = (hi - lo) / cells
        for i in range(cells):
            for j in range(xy.size):
                log_ts[count] = lo + (i + xy[j]) * step
                weights[count] = step * wy[j]
                count += 1
        log_prev = hi
    return log_ts, weights, count


@numba.njit(cache=True, nogil=True)
def _ratios_down(c: np.ndarray) -> np.ndarray:
    """``a_(j+1) / a_j = e^(c_j - c_(j+1)) <= 1`` (0 past the last item): ``t a_j`` down a run of
    items by products, one exponential per node instead of one per item."""
    m = c.size
    down = np.zeros(m)
    for j in range(m - 1):
        down[j] = math.exp(c[j] - c[j + 1])
    return down


@numba.njit(cache=True, nogil=True)
def _advance(c: np.ndarray, log_t: float, free_log: float, dead: int, end: int) -> tuple[int, int]:
    """Move the pointers to the node at ``log t`` (nodes come in ascending order): items below
    ``dead`` are dead (``t a >= e^3.6``), items from ``end`` on are free (``t a < e^free_log``)."""
    m = c.size
    while dead < m and c[dead] <= log_t - _DEAD_LOG:
        dead += 1
    while end < m and c[end] < log_t - free_log:
        end += 1
    return dead, end


_LN2_HIGH = 6.93147180369123816490e-01  # log 2 in two parts (Cody and Waite): k * high is exact
_LN2_LOW = 1.90821492927058770002e-10
_LOG2_E = 1.4426950408889634
_EXP_FLOOR = 708.0  # e^-708 = 3.3e-308: the smallest argument kept normal; larger ones give that


@numba.njit(cache=True, nogil=True, inline="always")
def _exp_negative(u: np.ndarray, out: np.ndarray, bits: np.ndarray, scale: np.ndarray, lanes: int) -> None:
    """``out = exp(-u)`` for ``u >= 0`` in a form the compiler vectorises (``math.exp`` is a scalar
    call): ``u = k log 2 - r`` with ``|r| <= log(2) / 2``, ``e^r`` by its degree-13 Taylor polynomial
    (truncation under 4e-18) and ``2^-k`` built from its IEEE bits (``bits`` and its float view
    ``scale``: lanes x 1 scratch). Within 2e-16 relative of ``math.exp`` for ``u <= 708``; above,
    ``exp(-708)`` = 3.3e-308 instead of a smaller number, which no sum here can tell apart."""
    for lane in range(lanes):
        v = min(u[lane], _EXP_FLOOR)
        k = math.floor(v * _LOG2_E + 0.5)
        r = (k * _LN2_HIGH - v) + k * _LN2_LOW
        p = 1.0 / 6227020800.0  # 1/13!, then Horner down to 1/0!
        p = p * r + 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 1.0 / 2.0
        p = p * r + 1.0
        p = p * r + 1.0
        out[lane] = p
        bits[lane] = (1023 - np.int64(k)) << 52
    for lane in range(lanes):
        out[lane] *= scale[lane]


#: Neighbouring nodes within this many units of ``log t`` share one pass as SIMD lanes.
_LANE_SPAN = 4.0


@numba.njit(cache=True, nogil=True)
def _row(
    c: np.ndarray,
    g: np.ndarray,
    n: int,
    lf: np.ndarray,
    log_ts: np.ndarray,
    weights: np.ndarray,
    count: int,
    derivative: bool,
    probs: np.ndarray,
    dprobs: np.ndarray,
    lanes: int,
) -> None:
    """One pool: ``c`` ascending centres (the top item first), ``g`` their beta-directions; adds
    ``P_i`` and ``dP_i/dbeta`` into ``probs`` and ``dprobs``.

    Up to ``lanes`` consecutive nodes (within ``_LANE_SPAN`` in ``log t``) go through the
    recurrences together, one lane each (the innermost loops run over lanes and vectorise). Their
    active items are the union of each node's: an item dead or free at some lanes only is computed
    exactly there, which differs from dropping it by under 1e-14."""
    m = c.size
    d = n - 1
    free_log = math.log(_FREE_TOLERANCE / n)
    lc_all = lf[m - 1] - lf[d] - lf[m - 1 - d]
    pre = np.zeros((m + 1, n, lanes))
    suf = np.zeros((m + 1, n, lanes))
    rows_d = m + 1 if derivative else 1
    dpre = np.zeros((rows_d, n, lanes))
    dsuf = np.zeros((rows_d, n, lanes))
    ta = np.zeros((m, lanes))
    xs = np.zeros((m, lanes))
    dxs = np.zeros((rows_d, lanes))
    log_t = np.zeros(lanes)
    w = np.zeros(lanes)
    e = np.zeros(lanes)
    de = np.zeros(lanes)
    kern = np.zeros(lanes)
    bits = np.zeros(lanes, dtype=np.int64)  # 2^-k as IEEE bits, read through a float view
    powers = bits.view(np.float64)
    # 1 / j: a new item's weight k / size in a mean over k-subsets, and the coefficients' chain,
    # multiply instead of dividing.
    recip = np.zeros(m + 1)
    for j in range(1, m + 1):
        recip[j] = 1.0 / j
    coefs = np.zeros(n)
    down = _ratios_down(c)
    pre[0, :, :] = 1.0
    dead = 0
    end = 0
    node = 0
    while node < count:
        stop = node + 1
        while stop < count and stop - node < lanes and log_ts[stop] - log_ts[node] <= _LANE_SPAN:
            stop += 1
        for lane in range(lanes):  # spare lanes repeat the last node with weight 0
            j = min(node + lane, stop - 1)
            log_t[lane] = log_ts[j]
            w[lane] = weights[j] if node + lane < stop else 0.0
        node = stop
        # The union of the lanes' active items: dead at the smallest t, free at the largest.
        dead = _advance(c, log_t[0], free_log, dead, end)[0]
        end = _advance(c, log_t[lanes - 1], free_log, dead, end)[1]
        width = end - dead
        free = m - end
        if width == 0 or free + width < n:  # nothing active, or every n-subset holds a dead item
            continue
        for lane in range(lanes):
            ta[0, lane] = math.exp(log_t[lane] - c[dead])
        for idx in range(1, width):  # t a_j down the active items by the ratio of neighbours
            ratio = down[dead + idx - 1]
            for lane in range(lanes):
                ta[idx, lane] = ta[idx - 1, lane] * ratio
        for idx in range(width):
            _exp_negative(ta[idx], xs[idx], bits, powers, lanes)
        if derivative:
            for idx in range(width):
                gq = g[dead + idx]
                for lane in range(lanes):
                    dxs[idx, lane] = -ta[idx, lane] * gq * xs[idx, lane]
        last = width - 1
        # Prefix means: the free items and active items 0..idx-1 (entries past a set's size are
        # never read). The suffix below is the same update, written out again on purpose: as a
        # shared helper function the pass measured 30% slower (its lane loops vectorise worse).
        for idx in range(width):
            cnt = free + idx + 1
            top = min(d, cnt - 1)
            for lane in range(lanes):
                pre[idx + 1, 0, lane] = 1.0
            for k in range(1, top + 1):
                tk = k * recip[cnt]
                for lane in range(lanes):
                    p = pre[idx, k, lane]
                    pre[idx + 1, k, lane] = p + tk * (xs[idx, lane] * pre[idx, k - 1, lane] - p)
            if cnt <= d:
                for lane in range(lanes):
                    pre[idx + 1, cnt, lane] = xs[idx, lane] * pre[idx, cnt - 1, lane]
            if derivative:
                for lane in range(lanes):
                    dpre[idx + 1, 0, lane] = 0.0
                for k in range(1, top + 1):
                    tk = k * recip[cnt]
                    for lane in range(lanes):
                        q0 = dpre[idx, k, lane]
                        dpre[idx + 1, k, lane] = q0 + tk * (
                            dxs[idx, lane] * pre[idx, k - 1, lane] + xs[idx, lane] * dpre[idx, k - 1, lane] - q0
                        )
                if cnt <= d:
                    for lane in range(lanes):
                        dpre[idx + 1, cnt, lane] = dxs[idx, lane] * pre[idx, cnt - 1, lane] + xs[idx, lane] * dpre[idx, cnt - 1, lane]
        # Suffix means over active items idx+1..last.
        for lane in range(lanes):
            suf[last, 0, lane] = 1.0
            if derivative:
                dsuf[last, 0, lane] = 0.0
        for idx in range(last, 0, -1):
            cnt = width - idx
            top = min(d, cnt - 1)
            for lane in range(lanes):
                suf[idx - 1, 0, lane] = 1.0
            for k in range(1, top + 1):
                tk = k * recip[cnt]
                for lane in range(lanes):
                    p = suf[idx, k, lane]
                    suf[idx - 1, k, lane] = p + tk * (xs[idx, lane] * suf[idx, k - 1, lane] - p)
            if cnt <= d:
                for lane in range(lanes):
                    suf[idx - 1, cnt, lane] = xs[idx, lane] * suf[idx, cnt - 1, lane]
            if derivative:
                for lane in range(lanes):
                    dsuf[idx - 1, 0, lane] = 0.0
                for k in range(1, top + 1):
                    tk = k * recip[cnt]
                    for lane in range(lanes):
                        q0 = dsuf[idx, k, lane]
                        dsuf[idx - 1, k, lane] = q0 + tk * (
                            dxs[idx, lane] * suf[idx, k - 1, lane] + xs[idx, lane] * dsuf[idx, k - 1, lane] - q0
                        )
                if cnt <= d:
                    for lane in range(lanes):
                        dsuf[idx - 1, cnt, lane] = dxs[idx, lane] * suf[idx, cnt - 1, lane] + xs[idx, lane] * dsuf[idx, cnt - 1, lane]
        for idx in range(width):
            q = dead + idx
            a = free + idx  # the others in the prefix (free and earlier active items)
            b = last - idx  # the others in the suffix
            lo_k = d - b if d > b else 0
            hi_k = a if a < d else d
            if lo_k > hi_k:
                continue
            # C(a, k) C(b, d - k) / C(m - 1, d): the first from log-factorials, the rest by
            # neighbours' ratio.
            coef = math.exp(lf[a] - lf[lo_k] - lf[a - lo_k] + lf[b] - lf[d - lo_k] - lf[b - d + lo_k] - lc_all)
            for k in range(lo_k, hi_k + 1):
                coefs[k] = coef
                coef *= (a - k) * (d - k) * (recip[k + 1] * recip[b - d + k + 1])
            for lane in range(lanes):
                e[lane] = 0.0
            for k in range(lo_k, hi_k + 1):
                ck = coefs[k]
                for lane in range(lanes):
                    e[lane] += ck * pre[idx, k, lane] * suf[idx, d - k, lane]
            total = 0.0
            for lane in range(lanes):
                kern[lane] = w[lane] * ta[idx, lane] * xs[idx, lane]
                total += kern[lane] * e[lane]
            probs[q] += total
            if not derivative:
                continue
            for lane in range(lanes):
                de[lane] = 0.0
            for k in range(lo_k, hi_k + 1):
                ck = coefs[k]
                for lane in range(lanes):
                    de[lane] += ck * (dpre[idx, k, lane] * suf[idx, d - k, lane] + pre[idx, k, lane] * dsuf[idx, d - k, lane])
            gq = g[q]
            total = 0.0
            for lane in range(lanes):
                total += kern[lane] * (gq * (1.0 - ta[idx, lane]) * e[lane] + de[lane])
            dprobs[q] += total
    scale = n / m
    for q in range(m):
        probs[q] *= scale
        dprobs[q] *= scale


#: Enumerating subsets is chosen when it visits fewer than this many subsets per (node x item) of
#: the quadrature (a node's work per item is a few recurrences of length n, shared by up to 16 nodes as
#: SIMD lanes; measured on 800 x 39 tune grids, 0.4 to 1.0 did best).
_QUADRATURE_COST = 1.0
_NEAR_TOLERANCE = 1e-15  # items further apart than log(n / 1e-15) in centre do not interact


@numba.njit(cache=True, nogil=True)
def _near_windows(c: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, float]:
    """For each item, the items within ``log(n / 1e-15)`` of its centre: ``[lo, hi)``; and the
    number of subsets that enumerating them visits (``sum_r C(K, r)``, ``r <= n - 1``, ``K`` the
    window's size less one), capped at 1e12."""
    m = c.size
    near = math.log(n / _NEAR_TOLERANCE)
    lo = np.empty(m, dtype=np.int64)
    hi = np.empty(m, dtype=np.int64)
    a = 0
    b = 0
    visits = 0.0
    for i in range(m):
        while c[a] <= c[i] - near:
            a += 1
        while b < m and c[b] < c[i] + near:
            b += 1
        lo[i] = a
        hi[i] = b
        k = b - a - 1
        term = 1.0
        total = 1.0
        for r in range(1, min(n - 1, k) + 1):
            term *= (k - r + 1) / r
            total += term
        visits = min(visits + total, 1e12)
    return lo, hi, visits


@numba.njit(cache=True, nogil=True)
def _row_by_subsets(
    c: np.ndarray,
    g: np.ndarray,
    n: int,
    lf: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    derivative: bool,
    probs: np.ndarray,
    dprobs: np.ndarray,
) -> None:
    """One pool by enumerating, for each item ``i``, the subsets of the items near it.

    An item more than ``L = log(n / 1e-15)`` above ``i`` in a subset leaves ``i`` a softmax weight
    under ``e^-L``: such subsets count as zero. Items more than ``L`` below weigh under ``e^-L`` each
    against ``i``: they only count subsets (``F`` of them). So

    ``P_i = sum_(T subset of the near items, |T| <= n-1) C(F, n-1-|T|) / C(m, n) / (1 + sum_(j in T) r_j)``

    with ``r_j = a_j / a_i = e^(c_i - c_j)``, and ``dr_j/dbeta = r_j (g_j - g_i)``. Exact up to the
    dropped weights (relative 1e-15), with no quadrature; cheap when few items are near each other
    (large beta).
    """
    m = c.size
    d = n - 1
    lc_total = lf[m] - lf[n] - lf[m - n]
    coef = np.empty(n)
    ratios = np.empty(m)
    dratios = np.empty(m)
    sums = np.empty(n + 1)
    dsums = np.empty(n + 1)
    nxt = np.empty(n + 1, dtype=np.int64)
    for i in range(m):
        free = m - hi[i]
        k = 0
        for j in range(lo[i], hi[i]):
            if j != i:
                ratios[k] = math.exp(c[i] - c[j])
                dratios[k] = ratios[k] * (g[j] - g[i])
                k += 1
        for r in range(n):  # C(F, d - r) / C(m, n) for a subset of r near items
            coef[r] = math.exp(lf[free] - lf[d - r] - lf[free - d + r] - lc_total) if d - r <= free else 0.0
        # Depth-first over increasing index sequences: each subset's sum extends its parent's (no
        # cancellation).
        total = coef[0]
        dtotal = 0.0
        depth = 0
        sums[0] = 0.0
        dsums[0] = 0.0
        nxt[0] = 0
        while True:
            if depth < d and nxt[depth] < k:
                j = nxt[depth]
                nxt[depth] = j + 1
                sums[depth + 1] = sums[depth] + ratios[j]
                dsums[depth + 1] = dsums[depth] + dratios[j]
                depth += 1
                nxt[depth] = j + 1
                inv = 1.0 / (1.0 + sums[depth])
                total += coef[depth] * inv
                if derivative:
                    dtotal -= coef[depth] * dsums[depth] * inv * inv
            elif depth == 0:
                break
            else:
                depth -= 1
        probs[i] = total
        dprobs[i] = dtotal


@numba.njit(cache=True, nogil=True)
def fill_rows(
    centres: np.ndarray,
    directions: np.ndarray,
    n: int,
    lf: np.ndarray,
    rules: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    cell: float,
    derivative: bool,
    method: int,
    lanes: int,
    probs: np.ndarray,
    dprobs: np.ndarray,
    start: int,
    stop: int,
) -> None:
    """Rows ``start..stop-1`` of ascending centres (``(R, m)``, the top item first): each item's
    probability under Soft Best-of-n averaged over the n-subsets, and its beta-derivative (left
    at zero without ``derivative``), written into ``probs`` and ``dprobs`` (zeros on entry).
    ``lf[k] = log k!`` for ``k <= m``; ``rules``: Gauss-Legendre nodes and weights on [0, 1] of the
    panels in t and of the cells (width up to ``cell``) in y. ``method``: 1 the quadrature, 2 the
    enumeration of near subsets, 0 the cheaper of the two for each pool; ``lanes``: how many
    quadrature nodes share a pass (:func:`_row`). Releases the GIL, so threads can fill disjoint
    blocks of rows at once."""
    m = centres.shape[1]
    xt, wt, xy, wy = rules
    for r in range(start, stop):
        log_ts, weights, count = _nodes(centres[r], n, xt, wt, xy, wy, cell)
        lo, hi, visits = _near_windows(centres[r], n)
        if method == 2 or (method == 0 and visits <= _QUADRATURE_COST * count * m):
            _row_by_subsets(centres[r], directions[r], n, lf, lo, hi, derivative, probs[r], dprobs[r])
        else:
            _row(centres[r], directions[r], n, lf, log_ts, weights, count, derivative, probs[r], dprobs[r], lanes)


@numba.njit(cache=True, nogil=True)
def _row_with_replacement(
    c: np.ndarray,
    g: np.ndarray,
    n: int,
    log_ts: np.ndarray,
    weights: np.ndarray,
    count: int,
    derivative: bool,
    probs: np.ndarray,
    dprobs: np.ndarray,
) -> None:
    """One pool resampled with replacement (the plug-in): ``P_i = (n/m) int a_i x_i phi^(n-1) dt``
    with ``phi = (1/m) sum_j x_j``, on the same nodes and with the same dead and free items as
    :func:`_row` (a free item's ``x`` changes ``phi^(n-1)`` by under 1e-14 relative)."""
    m = c.size
    free_log = math.log(_FREE_TOLERANCE / n)
    ta = np.empty(m)
    xs = np.empty(m)
    down = _ratios_down(c)
    dead = 0
    end = 0
    for node in range(count):
        log_t = log_ts[node]
        dead, end = _advance(c, log_t, free_log, dead, end)
        width = end - dead
        if width == 0:
            continue
        total = float(m - end)  # the free items, x = 1
        dtotal = 0.0
        for idx in range(width):
            ta[idx] = math.exp(log_t - c[dead]) if idx == 0 else ta[idx - 1] * down[dead + idx - 1]
            xs[idx] = math.exp(-ta[idx])
            total += xs[idx]
            dtotal -= ta[idx] * g[dead + idx] * xs[idx]
        phi = total / m
        power = phi ** (n - 1)
        dpower = (n - 1) * phi ** (n - 2) * dtotal / m if derivative else 0.0
        w = weights[node]
        for idx in range(width):
            q = dead + idx
            kern = w * ta[idx] * xs[idx]
            probs[q] += kern * power
            if derivative:
                dprobs[q] += kern * (g[q] * (1.0 - ta[idx]) * power + dpower)
    scale = n / m
    for q in range(m):
        probs[q] *= scale
        dprobs[q] *= scale


@numba.njit(cache=True, nogil=True)
def fill_rows_with_replacement(
    centres: np.ndarray,
    directions: np.ndarray,
    n: int,
    rules: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    cell: float,
    derivative: bool,
    probs: np.ndarray,
    dprobs: np.ndarray,
    start: int,
    stop: int,
) -> None:
    """As :func:`fill_rows`, for Soft Best-of-n on each pool resampled with replacement."""
    xt, wt, xy, wy = rules
    for r in range(start, stop):
        log_ts, weights, count = _nodes(centres[r], n, xt, wt, xy, wy, cell)
        _row_with_replacement(centres[r], directions[r], n, log_ts, weights, count, derivative, probs[r], dprobs[r])
