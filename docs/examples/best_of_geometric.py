"""Best-of-Geometric: a worked example of adding a mechanism to hedgetune in one file.

Draw ``N = 1 + K`` candidates with ``K`` geometric of mean ``mu`` (``P(K = k) = (1 - p) p^k``,
``p = mu / (1 + mu)``) and return the best. Register it with one line,
``hedgetune.mechanisms.register(BestOfGeometric)``, and ``curve``, ``tune``, ``diagnose``,
``select``, ``hedgetune ... -m bog`` and the report all work, the unbiased deployment estimator
included (it is the geometric mixture of Best-of-n's U-statistics, which the base class builds from
:meth:`candidate_counts`). ``tests/test_registry.py`` runs it through all of them.

In quantile space, with ``Q`` the law of the best of N uniforms, ``Q(u) = E[u^N]``:

* ``Q(u) = u (1 - p) / (1 - p u)``, ``q(u) = (1 - p) / (1 - p u)^2``
* ``dQ/dmu = u (u - 1) / (1 - p u)^2 * dp/dmu``, ``dp/dmu = 1 / (1 + mu)^2``
* expected samples ``1 + mu``; ``P(N > m) = p^m``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import integrate

from hedgetune.mechanisms import Mechanism
from hedgetune.mechanisms.toolkit import FloatArray, IntArray, argmax_random_ties, check_parameter


@dataclass(frozen=True, repr=False)
class BestOfGeometric(Mechanism):
    """Best-of-(1 + Geometric(mu)): a heavier-tailed cousin of Best-of-Poisson."""

    mu: float

    name: ClassVar[str] = "bog"
    display_name: ClassVar[str] = "Best-of-Geometric"
    parameter: ClassVar[str] = "mu"
    reference_theta: ClassVar[float] = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mu", check_parameter(self.mu, "mu", low=0.0))

    @property
    def theta(self) -> float:
        return self.mu

    def with_theta(self, theta: float) -> BestOfGeometric:
        return BestOfGeometric(theta)

    @property
    def _p(self) -> float:
        return self.mu / (1.0 + self.mu)

    # The law of the selected quantile and its derivatives.
    def _cdf(self, u: FloatArray) -> FloatArray:
        p = self._p
        return u * (1.0 - p) / (1.0 - p * u)

    def _logpdf(self, u: FloatArray) -> FloatArray:
        p = self._p
        return np.log1p(-p) - 2.0 * np.log1p(-p * u)

    def _score(self, u: FloatArray) -> FloatArray:
        p, dp = self._p, 1.0 / (1.0 + self.mu) ** 2
        return dp * (-1.0 / (1.0 - p) + 2.0 * u / (1.0 - p * u))

    def _cdf_dtheta(self, u: FloatArray) -> FloatArray:
        p, dp = self._p, 1.0 / (1.0 + self.mu) ** 2
        return dp * u * (u - 1.0) / (1.0 - p * u) ** 2

    # Summaries (quadrature keeps the example short; closed forms exist).
    def kl(self) -> float:
        q = lambda u: float(np.exp(self._logpdf(np.array(u))))  # noqa: E731
        return float(integrate.quad(lambda u: q(u) * np.log(q(u)), 0.0, 1.0, epsabs=1e-13)[0])

    def mean(self) -> float:
        return float(1.0 - integrate.quad(lambda u: float(self._cdf(np.array(u))), 0.0, 1.0, epsabs=1e-13)[0])

    def expected_samples(self) -> float:
        return 1.0 + self.mu

    # The rule at inference time.
    def _sample_quantiles(self, size: int | tuple[int, ...], rng: np.random.Generator) -> FloatArray:
        n = rng.geometric(1.0 - self._p, size)  # P(N = c) = (1 - p) p^(c - 1), c >= 1
        return np.power(rng.random(size), 1.0 / n)

    def _draw_n(self, size: int | tuple[int, ...], rng: np.random.Generator) -> IntArray:
        return rng.geometric(1.0 - self._p, size).astype(np.intp)

    def _select(self, scores: FloatArray, rng: np.random.Generator) -> IntArray:
        return argmax_random_ties(scores, rng)

    # What a calibration pool can say about it.
    def default_top(self, pools: object) -> float:
        return float(max(64, 4 * pools.max_size))  # type: ignore[attr-defined]

    def deployment_limit(self, m: int) -> float:
        p = 0.01 ** (1.0 / m)  # P(N > m) = p^m = 1%
        return p / (1.0 - p)

    def budget_theta(self, max_samples: float) -> float:
        return float(max_samples) - 1.0

    def pool_tail(self, theta: float, m: int) -> float:
        return float((theta / (1.0 + theta)) ** m)

    def candidate_counts(self, m: int) -> tuple[FloatArray, FloatArray, FloatArray | None]:
        c = np.arange(1.0, m)
        p, dp = self._p, 1.0 / (1.0 + self.mu) ** 2
        pmf = (1.0 - p) * p ** (c - 1.0)
        # d/dp [(1 - p) p^(c-1)] = (c - 1) p^(c-2) - c p^(c-1), written with p^max(c-2, 0).
        slope = (c - 1.0) * p ** np.maximum(c - 2.0, 0.0) - c * p ** (c - 1.0)
        return c, pmf, dp * slope
