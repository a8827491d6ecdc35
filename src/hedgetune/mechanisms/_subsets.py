"""Soft Best-of-n over the n-subsets of a pool: the unbiased (without replacement) estimator.

A deployment draws ``n`` fresh candidates. Given a pool of ``m >= n`` candidates drawn i.i.d. from
the same policy, averaging the mechanism over all ``C(m, n)`` subsets of the pool (a U-statistic)
is an unbiased estimate of what the deployment gets. For Soft Best-of-n with weights
``a_j = exp(beta (s_j - s_max))`` the chance that the subset ``S`` returns ``i`` is
``a_i / sum_{j in S} a_j``; with ``1/x = int_0^inf e^(-t x) dt`` and ``t = e^y``,

``P_i = (1 / C(m, n)) sum_{S contains i} a_i / sum_{j in S} a_j
      = (n/m) int exp(y + z_i - e^(y + z_i)) E_i(y) dy``,   ``z_i = log a_i``,

where ``E_i(y)`` is the mean, over the ``(n-1)``-subsets ``T`` of the other ``m - 1`` items, of
``prod_{j in T} x_j``, ``x_j = exp(-e^(y + z_j))``. (Draws with replacement put ``phi(y)^(n-1)``,
``phi`` the mean of the ``x_j``, in its place.)

``E_i`` is computed exactly with *normalised* elementary symmetric polynomials: ``p_k`` is the mean
over the k-subsets of a set of items of the product of their ``x``; adding an item to a set of
``c - 1`` gives ``p_k <- (1 - k/c) p_k + (k/c) x p_(k-1)``, a convex combination, so every value
stays in [0, 1] and no step cancels. Prefix values (items below i) and suffix values (items above
i) combine through the hypergeometric law of how many of the ``n - 1`` others lie below i:
``E_i = sum_k Hyp(k) p_k(below) p_(n-1-k)(above)``. The derivative in beta follows the same
recurrences in forward mode (``dx_j/dbeta = -e^(y + z_j) d_j x_j``, ``d_j = s_j - s_max``).
"""

from __future__ import annotations

import warnings
from types import ModuleType

import numpy as np
from scipy import special

from .._limits import require_memory
from .._threads import over_row_blocks, row_workers
from ._compiled import Engine, check_engine, kernel_for, load
from ._numerics import FloatArray, gauss_legendre
from ._softmax_cells import softmax_exponents, union_of_cells

#: Largest number of (lane x item x degree) values held at once.
_CHUNK_ELEMENTS = 3_000_000


def _hypergeometric_weights(m: int, n: int) -> FloatArray:
    """``H[i, k]``: probability that a uniform (n-1)-subset of the other m-1 items has k of its
    members among the i items below item i (0-based i; zero outside the support)."""
    i = np.arange(m)[:, None].astype(float)
    k = np.arange(n)[None, :].astype(float)
    with np.errstate(invalid="ignore"):
        log_h = (
            special.gammaln(i + 1)
            - special.gammaln(k + 1)
            - special.gammaln(i - k + 1)
            + special.gammaln(m - i)
            - special.gammaln(n - k)
            - special.gammaln(m - i - n + k + 1)
            - (special.gammaln(m) - special.gammaln(n) - special.gammaln(m - n + 1))
        )
    ok = (k <= i) & (n - 1 - k <= m - 1 - i)
    return np.where(ok, np.exp(np.where(ok, log_h, 0.0)), 0.0)


def _add_item(
    p: FloatArray,
    dp: FloatArray | None,
    x: FloatArray,
    dx: FloatArray | None,
    keep: FloatArray,
    take: FloatArray,
) -> tuple[FloatArray, FloatArray | None]:
    """Normalised elementary symmetric values of a set after adding one item: ``p`` is ``(L, n)``
    with ``p[:, 0] = 1``; ``keep = 1 - k/c`` and ``take = k/c`` (clipped to [0, 1]) for a set of
    ``c`` items after the addition."""
    new = p * keep
    new[:, 1:] += (x[:, None] * take[1:]) * p[:, :-1]
    if dp is None or dx is None:
        return new, None
    dnew = dp * keep
    dnew[:, 1:] += take[1:] * (dx[:, None] * p[:, :-1] + x[:, None] * dp[:, :-1])
    return new, dnew


def _leave_one_out_means(
    x: FloatArray, dx: FloatArray | None, n: int
) -> tuple[FloatArray, FloatArray | None]:
    """``E[l, i]``: mean over (n-1)-subsets of the items other than i of the product of ``x[l, :]``
    (and its derivative from ``dx``). ``x`` is ``(L, m)``."""
    lanes, m = x.shape
    hyper = _hypergeometric_weights(m, n)  # (m, n)
    k = np.arange(n, dtype=float)[None, :]
    counts = np.arange(1, m + 1, dtype=float)[:, None]
    keeps, takes = np.clip(1.0 - k / counts, 0.0, None), np.minimum(k / counts, 1.0)  # (m, n)
    prefix = np.empty((m, lanes, n))
    dprefix = None if dx is None else np.empty((m, lanes, n))
    p = np.zeros((lanes, n))
    p[:, 0] = 1.0
    dp = None if dx is None else np.zeros((lanes, n))
    for i in range(m):  # prefix[i]: the items below i
        prefix[i] = p
        if dprefix is not None and dp is not None:
            dprefix[i] = dp
        p, dp = _add_item(p, dp, x[:, i], None if dx is None else dx[:, i], keeps[i], takes[i])
    out = np.empty((lanes, m))
    dout = None if dx is None else np.empty((lanes, m))
    s = np.zeros((lanes, n))
    s[:, 0] = 1.0
    ds = None if dx is None else np.zeros((lanes, n))
    for i in range(m - 1, -1, -1):  # s: the items above i
        reversed_suffix = s[:, ::-1]  # reversed_suffix[:, k] = p_(n-1-k)(above)
        out[:, i] = np.einsum("lk,lk,k->l", prefix[i], reversed_suffix, hyper[i])
        if dout is not None and dprefix is not None and ds is not None:
            dout[:, i] = np.einsum("lk,lk,k->l", dprefix[i], reversed_suffix, hyper[i]) + np.einsum(
                "lk,lk,k->l", prefix[i], ds[:, ::-1], hyper[i]
            )
        s, ds = _add_item(s, ds, x[:, i], None if dx is None else dx[:, i], keeps[m - i - 1], takes[m - i - 1])
    return out, dout


def compiled_kernel() -> ModuleType | None:
    """The Numba kernel (:mod:`._subsets_compiled`), or ``None`` when Numba is not installed
    (``pip install hedgetune[fast]``)."""
    return load("_subsets_compiled")


#: The compiled kernel's rules: 8-point Gauss-Legendre on the panels in t, 12-point on cells of
#: width 2 in y (within 4e-13 of exhaustive enumeration in the tests).
_CELL_WIDTH, _CELL_ORDER = 2.0, 12
_MAX_LANES = 16  # quadrature nodes per pass of the compiled kernel
_LANE_BUDGET = 1 << 19  # table entries per thread (4 MiB) that lanes may use


class SlowPathWarning(UserWarning):
    """A computation that has a compiled kernel runs on its (much slower) NumPy fallback."""


#: Pools (rows x candidates) from which the NumPy fallback warns that it will be slow.
_WARN_FROM = 10_000


def choose_kernel(engine: Engine, size: int) -> ModuleType | None:
    """The compiled kernel to use for ``engine`` (``None``: the NumPy route), for an input of
    ``size`` scores. Without Numba, ``"compiled"`` raises ``ImportError`` and ``"auto"`` warns
    (:class:`SlowPathWarning`) once the input is large enough for the difference to be minutes."""
    kernel = kernel_for(engine, "_subsets_compiled")
    if kernel is None and engine == "auto" and size >= _WARN_FROM:
        warnings.warn(
            "Soft Best-of-n on raw scores is running its NumPy quadrature, about 100x slower than the "
            "compiled kernel (tuning 800 prompts x 39 takes minutes instead of seconds); "
            "install it with: pip install 'hedgetune[fast]'",
            SlowPathWarning,
            stacklevel=3,
        )
    return kernel


def run_kernel(
    kernel: ModuleType,
    z: FloatArray,
    gap: FloatArray,
    n: int,
    derivative: bool,
    method: int = 0,
    replacement: bool = False,
) -> tuple[FloatArray, FloatArray]:
    """The compiled kernel over blocks of rows, one thread per available core (it releases the
    GIL), on rows ascending as :func:`softmax_exponents` gives them (``z_j = beta (s_j - s_max)``
    and ``gap_j = dz_j/dbeta``); returns ``P`` and ``dP/dbeta`` in the same order. The kernel itself
    takes the top item first, with centres ``c = -z``. ``replacement``: the pools resampled with
    replacement (the plug-in) instead of their n-subsets."""
    rows, m = z.shape
    centres = np.ascontiguousarray(-z[:, ::-1])
    directions = np.ascontiguousarray(gap[:, ::-1])
    rules = (*gauss_legendre(8), *gauss_legendre(_CELL_ORDER))
    log_factorials = special.gammaln(np.arange(m + 1) + 1.0)
    probs = np.zeros((rows, m))
    dprobs = np.zeros((rows, m))
    workers = row_workers(rows)
    # Nodes share a pass as SIMD lanes while the four (m + 1) x n x lanes recurrence tables stay
    # small (a few MB); large pools with large n get one lane, as much memory as before.
    lanes = int(np.clip(_LANE_BUDGET // (4 * (m + 1) * n), 1, _MAX_LANES))
    # Per thread: the recurrence tables and about 70 quadrature nodes per candidate.
    require_memory(
        workers * (4.0 * (m + 1) * n * lanes + 80.0 * m), f"Soft Best-of-n over {n}-subsets of pools of {m}"
    )

    def block(start: int, stop: int) -> None:
        if replacement:
            kernel.fill_rows_with_replacement(
                centres, directions, n, rules, _CELL_WIDTH, derivative, probs, dprobs, start, stop
            )
        else:
            kernel.fill_rows(
                centres, directions, n, log_factorials, rules, _CELL_WIDTH, derivative, method, lanes, probs, dprobs, start, stop
            )

    over_row_blocks(rows, workers, block)
    return np.ascontiguousarray(probs[:, ::-1]), np.ascontiguousarray(dprobs[:, ::-1])


def slopes_at_zero(sorted_scores: FloatArray, n: int, replacement: bool) -> FloatArray:
    """``dP_i/dbeta`` at ``beta = 0``, where every softmax is uniform and moves by
    ``(1/n) (s_i - mean of the drawn scores)``: ``(n - 1) / (n m) (s_i - r_i)`` with ``r_i`` the
    mean of the other ``m - 1`` scores (n-subsets), or of all ``m`` (draws with replacement)."""
    m = sorted_scores.shape[1]
    if n == 1:
        return np.zeros_like(sorted_scores)
    total = sorted_scores.sum(axis=1, keepdims=True)
    others = total / m if replacement else (total - sorted_scores) / (m - 1)
    slopes: FloatArray = (n - 1) / (n * m) * (sorted_scores - others)
    return slopes


def soft_best_of_n_subsets(
    sorted_scores: FloatArray, beta: float, n: int, derivative: bool = False, engine: Engine = "auto"
) -> tuple[FloatArray, FloatArray | None]:
    """Soft Best-of-n averaged over all n-subsets of each pool (rows ascending, ``(R, m)``).

    Returns the selection probability of every position (each row sums to 1) and, with
    ``derivative``, its derivative in ``beta``. Needs ``1 <= n <= m``.

    ``engine``: ``"compiled"`` runs the Numba kernel (:mod:`._subsets_compiled`: each node only
    carries the items in transition, about 50 nodes per item at large beta), ``"numpy"`` the
    vectorised quadrature below (O(nodes x m x n) per row, the nodes covering the union of the
    items' 42-cell windows in ``y``), ``"auto"`` the kernel when Numba is installed. Both agree
    to about 1e-13.
    """
    rows, m = sorted_scores.shape
    if not 1 <= n <= m:
        raise ValueError(f"the without-replacement estimator needs 1 <= n <= pool size {m}, got n = {n}")
    check_engine(engine)  # before any shortcut
    if n == 1 or beta == 0.0:
        slopes = slopes_at_zero(sorted_scores, n, replacement=False) if derivative else None
        return np.full((rows, m), 1.0 / m), slopes
    z, gap = softmax_exponents(sorted_scores, beta)  # z_j = beta d_j, d_j = s_j - s_max <= 0
    if n == m:  # the only subset is the pool: the softmax itself, dP_i = P_i (g_i - sum_j P_j g_j)
        weights = np.exp(z)
        whole = weights / weights.sum(axis=1, keepdims=True)
        slope = whole * (gap - np.einsum("rm,rm->r", whole, gap)[:, None]) if derivative else None
        return whole, slope
    kernel = choose_kernel(engine, rows * m)
    if kernel is not None:
        values, slopes = run_kernel(kernel, z, gap, n, derivative)
        return values, (slopes if derivative else None)
    x8, w8 = gauss_legendre(8)
    # Every prompt's quadrature nodes become lanes of one computation: lane l belongs to row[l]
    # (row-major order keeps each row's lanes together).
    starts, valid = union_of_cells(np.ascontiguousarray(-z))
    row_of_cell = np.nonzero(valid)[0]
    y_all = (starts[valid.astype(bool)][:, None] + x8[None, :]).ravel()
    row_all = np.repeat(row_of_cell, 8)
    log_w_all = np.log(np.tile(w8, row_of_cell.size))
    probs = np.zeros((rows, m))
    dprobs = np.zeros((rows, m)) if derivative else None
    step = max(1, _CHUNK_ELEMENTS // (m * n))
    for lo in range(0, y_all.size, step):
        row = row_all[lo : lo + step]
        yz = y_all[lo : lo + step, None] + z[row]  # y + z_j, (L, m)
        lw = log_w_all[lo : lo + step, None]
        with np.errstate(over="ignore"):
            e = np.exp(yz)  # may overflow to inf: then x_j = 0 and every term below is 0
        x = np.exp(-e)
        ex = np.exp(yz - e)  # e x_j, never inf * 0
        dx = -ex * gap[row] if derivative else None
        means, dmeans = _leave_one_out_means(x, dx, n)
        kernel = np.exp(lw + yz - e)  # (L, m)
        # Lanes are grouped by row: sum each row's segment.
        first = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
        probs[row[first]] += n / m * np.add.reduceat(kernel * means, first, axis=0)
        if dprobs is not None and dmeans is not None:
            # d kernel / d beta = kernel (1 - e) d_i, with kernel * e = w e^(2 (y + z_i) - e).
            dkernel = (kernel - np.exp(lw + 2.0 * yz - e)) * gap[row]
            dprobs[row[first]] += n / m * np.add.reduceat(dkernel * means + kernel * dmeans, first, axis=0)
    return probs, dprobs
