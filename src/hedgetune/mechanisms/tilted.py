"""The exponentially tilted policy: the KL-optimal frontier for the proxy quantile."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ._base import Mechanism
from ._numerics import FloatArray, check_parameter, expm1_plus_x, polynomial_series
from ._selection import IntArray, rank_based_choice

# With x = beta/2: KL = x coth x - 1 - log(sinh x / x) = x^2/6 - x^4/60 + ... (series in x^2).
_KL_SERIES = (0.0, 1 / 6, -1 / 60, 1 / 567, -1 / 5400, 1 / 51975, -691 / 348279750, 2 / 9823275)
# Langevin function coth x - 1/x = x/3 - x^3/45 + ... = x * (series in x^2).
_LANGEVIN_SERIES = (1 / 3, -1 / 45, 2 / 945, -1 / 4725, 2 / 93555, -1382 / 638512875, 4 / 18243225)
_SERIES_BELOW = 0.25  # in x = beta / 2


@dataclass(frozen=True, repr=False)
class Tilted(Mechanism):
    r"""The tilted policy ``q(u) proportional to exp(beta u)`` on the proxy quantile.

    It maximises ``E[U] - KL / beta``: the reward-KL frontier the sampling mechanisms are measured
    against. With ``m = E[U]``:

    * ``q(u) = beta e^(beta u) / (e^beta - 1)``, ``Q(u) = expm1(beta u) / expm1(beta)``
    * ``E[U] = 1 / (1 - e^-beta) - 1 / beta``, ``KL = beta E[U] - log(expm1(beta) / beta)``
    * score ``psi(u) = u - E[U]``

    It cannot be realised exactly with finitely many samples, so :meth:`draw_n` raises;
    :meth:`select` tilts the empirical distribution of whatever pool it is given (sorted position
    ``i`` of ``m`` gets ``Q(i/m) - Q((i-1)/m)``). ``beta = 0`` is the reference policy.
    """

    beta: float

    name: ClassVar[str] = "tilted"
    display_name: ClassVar[str] = "Tilted policy"
    parameter: ClassVar[str] = "beta"
    reference_theta: ClassVar[float] = 0.0
    deployable: ClassVar[bool] = False  # the infinite-sample frontier, not a sampler

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", check_parameter(self.beta, "beta", low=0.0))

    @property
    def theta(self) -> float:
        return self.beta

    def with_theta(self, theta: float) -> Tilted:
        return Tilted(theta)

    def _one_minus_exp(self) -> float:
        """``1 - e^-beta``."""
        return float(-np.expm1(-self.beta))

    def _logpdf(self, u: FloatArray) -> FloatArray:
        b = self.beta
        if b == 0.0:
            return np.zeros_like(u)
        return np.log(b / self._one_minus_exp()) + b * (u - 1.0)

    def _cdf(self, u: FloatArray) -> FloatArray:
        b = self.beta
        if b == 0.0:
            return u.copy()
        return np.exp(b * (u - 1.0)) * -np.expm1(-b * u) / self._one_minus_exp()

    def _score(self, u: FloatArray) -> FloatArray:
        return u - self.mean()

    def _cdf_dtheta(self, u: FloatArray) -> FloatArray:
        # dQ/dbeta = e^(beta(u-1)) [g(beta u) - u g(beta)] / (1 - e^-beta)^2, g(x) = e^-x - 1 + x;
        # g keeps full accuracy at small beta, where the textbook form cancels. For beta >= 1 the
        # linear terms cancel exactly: g(beta u) - u g(beta) = expm1(-beta u) - u expm1(-beta).
        b = self.beta
        if b == 0.0:
            return (u * u - u) / 2.0
        if b >= 1.0:
            numerator = np.expm1(-b * u) - u * np.expm1(-b)
        else:
            numerator = expm1_plus_x(b * u) - u * expm1_plus_x(np.array(b))
        return np.exp(b * (u - 1.0)) * numerator / self._one_minus_exp() ** 2

    def mean(self) -> float:
        x = self.beta / 2.0
        if x < _SERIES_BELOW:
            langevin = x * float(polynomial_series(np.array(x * x), _LANGEVIN_SERIES))
            return 0.5 + langevin / 2.0
        return 1.0 / self._one_minus_exp() - 1.0 / self.beta

    def kl(self) -> float:
        x = self.beta / 2.0
        if x < _SERIES_BELOW:
            return float(polynomial_series(np.array(x * x), _KL_SERIES))
        # x coth x - x = 2x / (e^(2x) - 1) and log(sinh x / x) - x = log1p(-e^-2x) - log 2x: the
        # x's cancel analytically, not in floating point (where they ruined the answer past ~1e16).
        coth_excess = x * (2.0 * np.exp(-2.0 * x)) / -np.expm1(-2.0 * x)
        return float(coth_excess - 1.0 - np.log1p(-np.exp(-2.0 * x)) + np.log(2.0 * x))

    def expected_samples(self) -> float:
        return 1.0 if self.beta == 0.0 else float("inf")

    def _sample_quantiles(self, size: int | tuple[int, ...], rng: np.random.Generator) -> FloatArray:
        v = rng.random(size)
        b = self.beta
        if b == 0.0:
            return v
        if b < 1.0:
            u = np.log1p(v * np.expm1(b)) / b
        else:
            with np.errstate(divide="ignore"):
                u = 1.0 + np.log(v + (1.0 - v) * np.exp(-b)) / b
        return np.clip(u, 0.0, 1.0)

    def _draw_n(self, size: int | tuple[int, ...], rng: np.random.Generator) -> IntArray:
        raise ValueError(
            "the tilted policy is a frontier that no finite number of samples realises exactly; "
            "use BestOfPoisson (its near-exact sampler) or pass any pool to Tilted.select"
        )

    def _select(self, scores: FloatArray, rng: np.random.Generator) -> IntArray:
        return rank_based_choice(scores, self._cdf, rng)

    def budget_theta(self, max_samples: float) -> float:
        raise ValueError("the tilted policy draws unboundedly many samples; max_samples cannot bound it")
