"""Best-of-n: draw n candidates, return the one with the highest proxy reward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from scipy import special

from .._limits import require_count
from ._base import NEGLIGIBLE_MASS, Mechanism
from ._numerics import FloatArray, check_parameter
from ._pool_weights import subset_maximum_weights, subset_negligible_start
from ._selection import IntArray, argmax_random_ties

if TYPE_CHECKING:
    from ..pools import Pools

# log1p(e) - e/(1+e) = sum_{k>=2} (-1)^k (k-1)/k e^k, for KL near n = 1.
_KL_SERIES = tuple([0.0, 0.0] + [(-1) ** k * (k - 1) / k for k in range(2, 12)])


@dataclass(frozen=True, repr=False)
class BestOfN(Mechanism):
    r"""Best-of-n (BoN).

    The selected quantile is the maximum of ``n`` uniforms:

    * ``Q(u) = u^n``, ``q(u) = n u^(n-1)``
    * ``E[U] = n / (n + 1)``, ``KL = log n - (n - 1) / n``
    * score ``psi(u) = 1/n + log u``, ``dQ/dn = u^n log u``

    ``n`` may be any real ``>= 1`` for the mathematics (HedgeTune searches a continuous ``n``);
    :meth:`draw_n` needs an integer. ``n = 1`` is the reference policy. The KL is exact for
    continuous proxies and an upper bound when proxies tie.
    """

    n: float

    name: ClassVar[str] = "bon"
    display_name: ClassVar[str] = "Best-of-n"
    parameter: ClassVar[str] = "n"
    reference_theta: ClassVar[float] = 1.0
    integer_parameter: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", check_parameter(self.n, "n", low=1.0))

    @property
    def theta(self) -> float:
        return self.n

    def with_theta(self, theta: float) -> BestOfN:
        return BestOfN(theta)

    def _logpdf(self, u: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore"):
            return np.log(self.n) + special.xlogy(self.n - 1.0, u)

    def _cdf(self, u: FloatArray) -> FloatArray:
        return np.power(u, self.n)

    def _score(self, u: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore"):
            return 1.0 / self.n + np.log(u)

    def cdf_many(self, thetas: FloatArray, u: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore"):
            log_u = np.log(u)
        return np.exp(np.asarray(thetas, dtype=float)[:, None] * log_u[None, :])  # SIMD exp, not pow

    def cdf_dtheta_many(self, thetas: FloatArray, u: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return special.xlogy(self.cdf_many(thetas, u), u[None, :])

    def _cdf_dtheta(self, u: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return special.xlogy(np.power(u, self.n), u)

    def kl(self) -> float:
        return float(self.kl_many(np.array([self.n]))[0])

    def kl_many(self, thetas: FloatArray) -> FloatArray:
        n = np.asarray(thetas, dtype=float)
        eps = n - 1.0
        near_one = np.polynomial.polynomial.polyval(np.minimum(eps, 1e-3), _KL_SERIES)
        return np.where(eps < 1e-3, near_one, np.log(n) - eps / n)

    def expected_samples_many(self, thetas: FloatArray) -> FloatArray:
        return np.asarray(thetas, dtype=float).copy()

    def mean(self) -> float:
        return self.n / (self.n + 1.0)

    def expected_samples(self) -> float:
        return self.n

    def _sample_quantiles(self, size: int | tuple[int, ...], rng: np.random.Generator) -> FloatArray:
        # Inverse CDF: U = V^(1/n), the law of the maximum of n uniforms (any real n >= 1).
        return np.power(rng.random(size), 1.0 / self.n)

    def _draw_n(self, size: int | tuple[int, ...], rng: np.random.Generator) -> IntArray:
        if self.n != np.floor(self.n):
            raise ValueError(f"draw_n needs an integer n; this BestOfN has n={self.n:g}")
        require_count(self.n, "n")
        return np.full(size, int(self.n), dtype=np.intp)

    _select_checks_values: ClassVar[bool] = True

    def _select(self, scores: FloatArray, rng: np.random.Generator) -> IntArray:
        return argmax_random_ties(scores, rng, check_values=True)

    # ------------------------------------------------------------------ on calibration pools
    def default_top(self, pools: Pools) -> float:
        return float(max(64, 4 * pools.max_size))

    def deployment_limit(self, m: int) -> float:
        return float(m)

    def budget_theta(self, max_samples: float) -> float:
        return float(max_samples)

    def pool_tail(self, theta: float, m: int) -> float:
        return 0.0 if theta <= m else 1.0

    def candidate_counts(self, m: int) -> tuple[FloatArray, FloatArray, FloatArray | None]:
        """Exactly n candidates: the U-statistic over n-subsets of the pool."""
        _check_counts(np.array([self.n]), m)
        if self.n == m:
            return np.empty(0), np.empty(0), None  # the whole pool
        return np.array([self.n]), np.array([1.0]), None

    def negligible_below(self, m: int) -> int:
        return int(subset_negligible_start(np.array([self.n]), m, NEGLIGIBLE_MASS)[0])

    def deployment_rows(self, thetas: FloatArray, m: int, derivative: bool = False) -> tuple[int, FloatArray]:
        """All the rows in one pass: ``C(i-1, n-1) / C(m, n)`` for each n of ``thetas``."""
        if derivative:
            raise ValueError("Best-of-n has a whole-number parameter: no derivative of its weights")
        n = np.asarray(thetas, dtype=float).reshape(-1)
        _check_counts(n, m)
        own = subset_negligible_start(n, m, NEGLIGIBLE_MASS)
        start = int(own.min(initial=m))
        values = subset_maximum_weights(n, m, start)
        for row in np.flatnonzero(own > start):  # each row from its own start
            values[row, : own[row] - start] = 0.0
        values[n == m] = 0.0  # the whole pool: its top position, exactly
        values[n == m, -1] = 1.0
        return start, values


def _check_counts(n: FloatArray, m: int) -> None:
    bad = (n != np.floor(n)) | (n < 1) | (n > m)
    if bad.any():
        raise ValueError(f"the unbiased estimator needs a whole n in [1, pool size {m}], got n={n[bad][0]:g}")
