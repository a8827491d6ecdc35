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

import numpy as np
from scipy import special

from ._numerics import FloatArray, gauss_legendre

#: Cells of the quadrature in y around each item's kernel (as in the with-replacement version).
_CELL_FROM, _CELL_TO = -37, 5
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


def _add_item(p: FloatArray, dp: FloatArray | None, x: FloatArray, dx: FloatArray | None, count: int):  # type: ignore[no-untyped-def]
    """Normalised elementary symmetric values of a set after adding one item (the set now has
    ``count`` items); ``p`` is ``(L, n)`` with ``p[:, 0] = 1``."""
    k = np.arange(p.shape[1], dtype=float)
    keep = np.clip(1.0 - k / count, 0.0, None)
    take = np.minimum(k / count, 1.0)
    shifted = np.zeros_like(p)
    shifted[:, 1:] = p[:, :-1]
    new = keep * p + take * x[:, None] * shifted
    if dp is None or dx is None:
        return new, None
    dshifted = np.zeros_like(dp)
    dshifted[:, 1:] = dp[:, :-1]
    dnew = keep * dp + take * (dx[:, None] * shifted + x[:, None] * dshifted)
    return new, dnew


def _leave_one_out_means(
    x: FloatArray, dx: FloatArray | None, n: int
) -> tuple[FloatArray, FloatArray | None]:
    """``E[l, i]``: mean over (n-1)-subsets of the items other than i of the product of ``x[l, :]``
    (and its derivative from ``dx``). ``x`` is ``(L, m)``."""
    lanes, m = x.shape
    hyper = _hypergeometric_weights(m, n)  # (m, n)
    prefix = np.empty((m, lanes, n))
    dprefix = None if dx is None else np.empty((m, lanes, n))
    p = np.zeros((lanes, n))
    p[:, 0] = 1.0
    dp = None if dx is None else np.zeros((lanes, n))
    for i in range(m):  # prefix[i]: the items below i
        prefix[i] = p
        if dprefix is not None and dp is not None:
            dprefix[i] = dp
        p, dp = _add_item(p, dp, x[:, i], None if dx is None else dx[:, i], i + 1)
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
        s, ds = _add_item(s, ds, x[:, i], None if dx is None else dx[:, i], m - i)
    return out, dout


def soft_best_of_n_subsets(
    sorted_scores: FloatArray, beta: float, n: int, derivative: bool = False
) -> tuple[FloatArray, FloatArray | None]:
    """Soft Best-of-n averaged over all n-subsets of each pool (rows ascending, ``(R, m)``).

    Returns the selection probability of every position (each row sums to 1) and, with
    ``derivative``, its derivative in ``beta``. Needs ``1 <= n <= m``. Cost: O(nodes x m x n) per
    row, the nodes covering the union of the items' kernels in ``y`` (8-point Gauss-Legendre on
    unit cells).
    """
    rows, m = sorted_scores.shape
    if not 1 <= n <= m:
        raise ValueError(f"the without-replacement estimator needs 1 <= n <= pool size {m}, got n = {n}")
    if n == 1 or beta == 0.0:
        return np.full((rows, m), 1.0 / m), (np.zeros((rows, m)) if derivative else None)
    gap = sorted_scores - sorted_scores[:, -1:]  # d_j = s_j - s_max <= 0
    z = beta * gap
    x8, w8 = gauss_legendre(8)
    probs = np.zeros((rows, m))
    dprobs = np.zeros((rows, m)) if derivative else None
    for r in range(rows):
        cells = np.unique(np.floor(-z[r])[:, None] + np.arange(_CELL_FROM, _CELL_TO)[None, :])
        y = (cells[:, None] + x8[None, :]).ravel()  # (K,)
        log_w = np.log(np.broadcast_to(w8, (cells.size, 8)).ravel())
        step = max(1, _CHUNK_ELEMENTS // (m * n))
        for lo in range(0, y.size, step):
            yy, lw = y[lo : lo + step], log_w[lo : lo + step]
            yz = yy[:, None] + z[r][None, :]  # y + z_j, (K, m)
            with np.errstate(over="ignore"):
                e = np.exp(yz)  # may overflow to inf: then x_j = 0 and every term below is 0
            x = np.exp(-e)
            ex = np.exp(yz - e)  # e x_j, never inf * 0
            dx = -ex * gap[r][None, :] if derivative else None
            means, dmeans = _leave_one_out_means(x, dx, n)
            kernel = np.exp(lw[:, None] + yz - e)  # (K, m)
            probs[r] += n / m * np.einsum("km,km->m", kernel, means)
            if dprobs is not None and dmeans is not None:
                # d kernel / d beta = kernel (1 - e) d_i, with kernel * e = w e^(2 (y + z_i) - e).
                dkernel = (kernel - np.exp(lw[:, None] + 2.0 * yz - e)) * gap[r][None, :]
                dprobs[r] += n / m * (
                    np.einsum("km,km->m", dkernel, means) + np.einsum("km,km->m", kernel, dmeans)
                )
    return probs, dprobs
