"""Numerically careful building blocks shared by the mechanisms.

Every function here is vectorised, works in log space where values over- or underflow, and keeps
full relative accuracy near the parameter values where the textbook formula cancels (small
parameters) or overflows (large ones).
"""

from __future__ import annotations

from functools import cache

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from ..arrays import FloatArray as FloatArray

#: Above this argument ``exp(-x) * Ei(x)`` is evaluated by its asymptotic series.
_EI_ASYMPTOTIC_FROM = 40.0


def log_expm1(x: ArrayLike) -> FloatArray:
    """``log(exp(x) - 1)`` for ``x >= 0``, without overflow for large ``x``."""
    x = np.asarray(x, dtype=float)
    big = x > 30.0
    out = np.empty_like(x)
    out[big] = x[big] + np.log1p(-np.exp(-x[big]))
    with np.errstate(divide="ignore"):
        out[~big] = np.log(np.expm1(x[~big]))
    return out


def scaled_expi(x: ArrayLike) -> FloatArray:
    """``exp(-x) * Ei(x)`` for ``x > 0``: finite for every ``x`` (``Ei`` itself overflows at 710).

    Below 40 the product is formed directly from SciPy's ``expi``; above, from the asymptotic series
    ``(1/x) * sum_k k! / x^k`` truncated at its smallest term (error below ``1e-17`` there).
    """
    x = np.asarray(x, dtype=float)
    out = np.empty_like(x)
    small = x < _EI_ASYMPTOTIC_FROM
    out[small] = np.exp(-x[small]) * special.expi(x[small])
    xl = x[~small]
    if xl.size:
        term = np.ones_like(xl)
        total = np.ones_like(xl)
        for k in range(1, 60):
            new = term * k / xl
            keep = new < term  # stop each series at its smallest term
            term = np.where(keep, new, 0.0)
            total += term
        out[~small] = total / xl
    return out


def expm1_plus_x(x: ArrayLike) -> FloatArray:
    """``exp(-x) - 1 + x`` (= ``x^2/2 - x^3/6 + ...``) with full relative accuracy for small ``x``."""
    x = np.asarray(x, dtype=float)
    small = np.abs(x) < 1e-2
    xs = np.where(small, x, 0.0)
    return np.where(small, xs * xs * expm1_plus_x_over_x2(xs), np.expm1(-np.where(small, 1.0, x)) + x)


def expm1_plus_x_over_x2(x: ArrayLike) -> FloatArray:
    """``(exp(-x) - 1 + x) / x^2`` (= ``1/2 - x/6 + ...``), finite and accurate down to ``x = 0``."""
    x = np.asarray(x, dtype=float)
    small = np.abs(x) < 1e-2
    xs = np.where(small, x, 0.0)
    series = (1 - xs / 3 * (1 - xs / 4 * (1 - xs / 5 * (1 - xs / 6 * (1 - xs / 7))))) / 2
    xl = np.where(small, 1.0, x)
    return np.where(small, series, (np.expm1(-xl) + xl) / (xl * xl))


@cache
def gauss_legendre(order: int) -> tuple[FloatArray, FloatArray]:
    """Gauss-Legendre nodes and weights on [0, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(order)
    return (nodes + 1.0) / 2.0, weights / 2.0


def composite_gauss_legendre(breaks: ArrayLike, order: int = 8) -> tuple[FloatArray, FloatArray]:
    """Nodes and weights of Gauss-Legendre rules of ``order`` on each panel between ``breaks``."""
    b = np.asarray(breaks, dtype=float)
    x, w = gauss_legendre(order)
    width = np.diff(b)[:, None]
    nodes = b[:-1, None] + width * x[None, :]
    weights = width * w[None, :]
    return nodes.ravel(), weights.ravel()


def polynomial_series(x: FloatArray, coefficients: tuple[float, ...]) -> FloatArray:
    """``sum_k coefficients[k] * x**k`` by Horner's rule."""
    out = np.zeros_like(x)
    for c in reversed(coefficients):
        out = out * x + c
    return out


def as_float_array(value: ArrayLike, name: str) -> FloatArray:
    """Convert to a float array or raise ``TypeError`` naming the argument."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be numeric, got {type(value).__name__}: {exc}") from None
    return arr


def check_unit_interval(u: ArrayLike, name: str = "u") -> FloatArray:
    """Validate quantiles: numeric, no NaN, every value in [0, 1]."""
    arr = as_float_array(u, name)
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN; quantiles must lie in [0, 1]")
    if ((arr < 0) | (arr > 1)).any():
        bad = arr[(arr < 0) | (arr > 1)].ravel()[0]
        raise ValueError(f"{name} must lie in [0, 1]; got a value {bad!r}")
    return arr


def check_parameter(
    value: object,
    name: str,
    *,
    low: float,
    allow_inf: bool = False,
) -> float:
    """Validate a scalar mechanism parameter and return it as a float.

    Raises ``TypeError`` for non-numbers (``bool`` included) and ``ValueError`` for NaN, values below
    ``low`` and, unless ``allow_inf``, infinity.
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if np.isnan(v):
        raise ValueError(f"{name} must be a number, got NaN")
    if np.isinf(v) and not (allow_inf and v > 0):
        raise ValueError(f"{name} must be finite, got {v}")
    if v < low:
        raise ValueError(f"{name} must be >= {low:g}, got {v:g}")
    return v


def rng_from(rng: object) -> np.random.Generator:
    """Accept a ``numpy.random.Generator``, a seed or ``None``."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, int | np.integer):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")
