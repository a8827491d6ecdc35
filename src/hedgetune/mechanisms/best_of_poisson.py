"""Best-of-Poisson: draw N ~ Poisson(mu), then run Best-of-(N + 1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from scipy import optimize, special

from .._limits import require_count
from ._base import Mechanism
from ._numerics import FloatArray, check_parameter, polynomial_series, scaled_expi
from ._selection import IntArray, argmax_random_ties

if TYPE_CHECKING:
    from ..pools import Pools

#: Best-of-Poisson is estimated from pools up to the mu at which a deployment draws more candidates
#: than the smallest pool holds this often.
POOL_TAIL_TOLERANCE = 0.01

# Taylor coefficients of KL(BoP_mu) at mu = 0 (derived symbolically; used for mu < 0.05 where the
# closed form cancels): mu^2/6 - mu^3/12 + mu^4/30 - ...
_KL_SERIES = (
    0.0,
    0.0,
    1 / 6,
    -1 / 12,
    1 / 30,
    -1 / 72,
    17 / 2520,
    -11 / 2880,
    437 / 181440,
    -2957 / 1814400,
    23117 / 19958400,
    -204557 / 239500800,
)
# (mu - 1 + e^-mu) / mu^2 = 1/2 - mu/6 + mu^2/24 - ... for the mean at small mu.
_MEAN_GAP_SERIES = tuple((-1.0) ** k / float(np.prod(np.arange(1, k + 3))) for k in range(10))
_E1_SCALED = float(scaled_expi(np.array([1.0]))[0])  # e^-1 Ei(1)


@dataclass(frozen=True, repr=False)
class BestOfPoisson(Mechanism):
    r"""Best-of-Poisson (BoP): a cheap, near-exact stand-in for the KL-optimal tilted policy.

    With ``N ~ Poisson(mu)`` and Best-of-(N+1) on top:

    * ``Q(u) = u e^(mu (u - 1))``, ``q(u) = (1 + mu u) e^(mu (u - 1))``
    * ``E[U] = 1 - (mu - 1 + e^-mu) / mu^2``, expected samples ``mu + 1``
    * ``KL = log(1 + mu) - 1 + e^-(1+mu) [Ei(1 + mu) - Ei(1)] / mu``
    * score ``psi(u) = u / (1 + mu u) + u - 1``, ``dQ/dmu = u (u - 1) e^(mu (u - 1))``

    ``mu = 0`` is the reference policy. ``e^-x Ei(x)`` is evaluated in scaled form, so any finite
    ``mu`` gives a finite KL.
    """

    mu: float

    name: ClassVar[str] = "bop"
    display_name: ClassVar[str] = "Best-of-Poisson"
    parameter: ClassVar[str] = "mu"
    reference_theta: ClassVar[float] = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mu", check_parameter(self.mu, "mu", low=0.0))

    @property
    def theta(self) -> float:
        return self.mu

    def with_theta(self, theta: float) -> BestOfPoisson:
        return BestOfPoisson(theta)

    def _logpdf(self, u: FloatArray) -> FloatArray:
        return np.log1p(self.mu * u) + self.mu * (u - 1.0)

    def _cdf(self, u: FloatArray) -> FloatArray:
        return u * np.exp(self.mu * (u - 1.0))

    def cdf_many(self, thetas: FloatArray, u: FloatArray) -> FloatArray:
        return u[None, :] * np.exp(np.asarray(thetas, dtype=float)[:, None] * (u[None, :] - 1.0))

    def cdf_dtheta_many(self, thetas: FloatArray, u: FloatArray) -> FloatArray:
        return (u * (u - 1.0))[None, :] * np.exp(
            np.asarray(thetas, dtype=float)[:, None] * (u[None, :] - 1.0)
        )

    def _score(self, u: FloatArray) -> FloatArray:
        return u / (1.0 + self.mu * u) + u - 1.0

    def _cdf_dtheta(self, u: FloatArray) -> FloatArray:
        return u * (u - 1.0) * np.exp(self.mu * (u - 1.0))

    def kl(self) -> float:
        return float(self.kl_many(np.array([self.mu]))[0])

    def kl_many(self, thetas: FloatArray) -> FloatArray:
        mu = np.asarray(thetas, dtype=float)
        small = mu < 0.05
        # e^-(1+mu) Ei(1+mu) and e^-(1+mu) Ei(1), both finite for any mu.
        large = np.where(small, 1.0, mu)
        tail = scaled_expi(1.0 + large) - np.exp(-large) * _E1_SCALED
        return np.where(small, polynomial_series(np.minimum(mu, 0.05), _KL_SERIES), np.log1p(large) - 1.0 + tail / large)

    def mean(self) -> float:
        mu = self.mu
        if mu < 1e-2:
            gap = float(polynomial_series(np.array(mu), _MEAN_GAP_SERIES))
        else:
            gap = (mu + np.expm1(-mu)) / mu**2
        return 1.0 - gap

    def expected_samples(self) -> float:
        return self.mu + 1.0

    def _sample_quantiles(self, size: int | tuple[int, ...], rng: np.random.Generator) -> FloatArray:
        n = 1 + rng.poisson(self.mu, size)
        return np.power(rng.random(size), 1.0 / n)

    def _draw_n(self, size: int | tuple[int, ...], rng: np.random.Generator) -> IntArray:
        require_count(self.mu + 1 + 20 * np.sqrt(self.mu), "mu")  # 1 + Poisson(mu) stays below it
        return (1 + rng.poisson(self.mu, size)).astype(np.intp)

    _select_checks_values: ClassVar[bool] = True

    def _select(self, scores: FloatArray, rng: np.random.Generator) -> IntArray:
        # The randomness of BoP is in how many candidates were drawn; among them it is BoN.
        return argmax_random_ties(scores, rng, check_values=True)

    # ------------------------------------------------------------------ on calibration pools
    def default_top(self, pools: Pools) -> float:
        return float(max(64, 4 * pools.max_size))

    def grid_start(self, top: float) -> float:
        return min(0.05, top / 2)

    def deployment_limit(self, m: int) -> float:
        """The mu at which a deployment draws more than m candidates with probability
        :data:`POOL_TAIL_TOLERANCE`."""
        return float(
            optimize.brentq(lambda mu: special.pdtrc(m - 1, mu) - POOL_TAIL_TOLERANCE, 0.0, 2.0 * m + 10)
        )

    def budget_theta(self, max_samples: float) -> float:
        return float(max_samples) - 1.0

    def pool_tail(self, theta: float, m: int) -> float:
        """``P(1 + K > m)``, ``K ~ Poisson(theta)``."""
        return float(special.pdtrc(m - 1, theta)) if theta > 0 else 0.0

    def candidate_counts(self, m: int) -> tuple[FloatArray, FloatArray, FloatArray | None]:
        """``N = 1 + K``: the counts below m whose Poisson probability exceeds 1e-18 (a window of
        about 10 standard deviations around mu), with ``d/dmu Pois(k) = Pois(k - 1) - Pois(k)``."""
        mu = self.mu
        spread = 10.0 * np.sqrt(mu) + 40.0
        k = np.arange(max(0, int(mu - spread)), min(m - 1, int(np.ceil(mu + spread)) + 1), dtype=float)
        pmf = _poisson_pmf(k, mu)
        dpmf = _poisson_pmf(k - 1, mu) - pmf
        keep = (pmf > 1e-18) | (np.abs(dpmf) > 1e-18)  # at mu = 0, Pois(1) = 0 but its slope is 1
        return k[keep] + 1.0, pmf[keep], dpmf[keep]


def _poisson_pmf(k: FloatArray, mu: float) -> FloatArray:
    """``P(K = k)``, ``K ~ Poisson(mu)``: ``exp(k log mu - log k! - mu)``, 0 below 0 (SciPy's own
    formula, without importing ``scipy.stats``, which costs about a second at import)."""
    inside = np.maximum(k, 0.0)
    return np.where(k >= 0, np.exp(special.xlogy(inside, mu) - special.gammaln(inside + 1.0) - mu), 0.0)

