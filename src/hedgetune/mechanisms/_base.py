"""The protocol every mechanism follows.

A mechanism with one parameter ``theta`` turns the reference policy into ``pi_theta`` by looking
only at proxy ranks. In quantile space (``U = F(r_p(X))`` is uniform under the reference) it is a
distribution on [0, 1] with density ``q_theta(u)`` and CDF ``Q_theta(u)``; everything downstream
(curves, HedgeTune, selection, figures) uses these through the methods below, so a new mechanism is
one new subclass.

Public methods validate their input once and call the private ``_logpdf``, ``_cdf``, ...
implementations, which assume a float array with values in [0, 1]; the core of the library calls
the private ones directly on its rank grids.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Self

import numpy as np
from numpy.typing import ArrayLike

from .._limits import require_memory
from ._numerics import FloatArray, check_unit_interval, rng_from
from ._selection import IntArray, as_pool_matrix


class Mechanism(ABC):
    """A one-parameter, rank-based inference-time selection rule.

    Subclasses are immutable dataclasses; see :class:`BestOfN`, :class:`SoftBestOfN`,
    :class:`BestOfPoisson` and :class:`Tilted`.
    """

    #: Short name used by the CLI and result tables (``"bon"``, ``"sbon"``, ``"bop"``, ``"tilted"``).
    name: ClassVar[str]
    #: Name of the tuned parameter (``"n"``, ``"beta"``, ``"mu"``).
    parameter: ClassVar[str]
    #: Value of the parameter at which the mechanism is the reference policy.
    reference_theta: ClassVar[float]

    # ----------------------------------------------------------------- the tuned parameter
    @property
    @abstractmethod
    def theta(self) -> float:
        """The value of the mechanism's tuned parameter."""

    @abstractmethod
    def with_theta(self, theta: float) -> Self:
        """The same mechanism with its tuned parameter set to ``theta``."""

    # ----------------------------------------------------------------- density and friends
    def pdf(self, u: ArrayLike) -> FloatArray:
        """Density ``q_theta(u)`` of the selected response's proxy quantile."""
        return np.exp(self._logpdf(check_unit_interval(u)))

    def logpdf(self, u: ArrayLike) -> FloatArray:
        """``log q_theta(u)``."""
        return self._logpdf(check_unit_interval(u))

    def cdf(self, u: ArrayLike) -> FloatArray:
        """``Q_theta(u) = P(U <= u)`` under the mechanism."""
        return self._cdf(check_unit_interval(u))

    def score(self, u: ArrayLike) -> FloatArray:
        """Score function ``psi(u, theta) = d/dtheta log q_theta(u)``."""
        return self._score(check_unit_interval(u))

    def cdf_dtheta(self, u: ArrayLike) -> FloatArray:
        """``d/dtheta Q_theta(u)``: drives the exact HedgeTune residual on a pool."""
        return self._cdf_dtheta(check_unit_interval(u))

    @abstractmethod
    def _logpdf(self, u: FloatArray) -> FloatArray: ...

    @abstractmethod
    def _cdf(self, u: FloatArray) -> FloatArray: ...

    @abstractmethod
    def _score(self, u: FloatArray) -> FloatArray: ...

    @abstractmethod
    def _cdf_dtheta(self, u: FloatArray) -> FloatArray: ...

    # ----------------------------------------------------------------- summaries
    @abstractmethod
    def kl(self) -> float:
        """``KL(pi_theta || pi_ref)`` in nats (exact for continuous proxies)."""

    @abstractmethod
    def mean(self) -> float:
        """Expected proxy quantile ``E_theta[U]`` of the selected response."""

    @abstractmethod
    def expected_samples(self) -> float:
        """Number of candidates the mechanism draws per prompt, on average."""

    # ----------------------------------------------------------------- sampling and selection
    @abstractmethod
    def _sample_quantiles(self, size: int | tuple[int, ...], rng: np.random.Generator) -> FloatArray: ...

    def sample_quantiles(
        self, size: int | tuple[int, ...], rng: np.random.Generator | int | None = None
    ) -> FloatArray:
        """Draw proxy quantiles of selected responses by simulating the mechanism."""
        require_memory(np.prod(size, dtype=float), f"sample_quantiles({size})")
        return self._sample_quantiles(size, rng_from(rng))

    @abstractmethod
    def _draw_n(self, size: int | tuple[int, ...], rng: np.random.Generator) -> IntArray: ...

    def draw_n(self, size: int | tuple[int, ...], rng: np.random.Generator | int | None = None) -> IntArray:
        """How many candidates to generate for each of ``size`` prompts."""
        require_memory(np.prod(size, dtype=float), f"draw_n({size})")
        return self._draw_n(size, rng_from(rng))

    @abstractmethod
    def _select(self, scores: FloatArray, rng: np.random.Generator) -> IntArray: ...

    def select(
        self,
        scores: ArrayLike | Sequence[ArrayLike],
        rng: np.random.Generator | int | None = None,
    ) -> IntArray:
        """Index of the chosen candidate for each prompt.

        ``scores`` is a 2-D array (prompts x candidates) where ``NaN`` marks a missing candidate,
        or a list of 1-D arrays of any lengths. Missing candidates are never chosen; ties are
        broken uniformly at random.
        """
        return self._select(as_pool_matrix(scores), rng_from(rng))

    # ----------------------------------------------------------------- on a finite pool
    #: Whether :meth:`pool_probabilities` depends on the scores themselves (not only on ranks).
    uses_raw_scores: ClassVar[bool] = False

    def cdf_many(self, thetas: FloatArray, u: FloatArray) -> FloatArray:
        """``Q_theta(u)`` for every parameter in ``thetas`` (no validation): ``(T, len(u))``.

        Subclasses with closed forms broadcast instead of looping.
        """
        return np.stack([self.with_theta(float(t))._cdf(u) for t in thetas])

    def cdf_dtheta_many(self, thetas: FloatArray, u: FloatArray) -> FloatArray:
        """``dQ_theta/dtheta(u)`` for every parameter in ``thetas``: ``(T, len(u))``."""
        return np.stack([self.with_theta(float(t))._cdf_dtheta(u) for t in thetas])

    def pool_probabilities(self, sorted_scores: FloatArray) -> FloatArray:
        """Probability of returning each sorted position when the reference is a finite pool.

        ``sorted_scores`` is ``(R, m)``, each row ascending. For a rank-based mechanism the pool
        is the reference distribution (draws with replacement), so position ``i`` (1-based) gets
        ``Q(i/m) - Q((i-1)/m)`` whatever the scores: the result is ``(1, m)``. Mechanisms that
        look at the scores themselves (:attr:`uses_raw_scores`) return ``(R, m)``. Ties are not
        averaged here; callers average within tie groups.
        """
        grid = np.arange(sorted_scores.shape[1] + 1) / sorted_scores.shape[1]
        return np.diff(self._cdf(grid))[None, :]

    def pool_probabilities_dtheta(self, sorted_scores: FloatArray) -> FloatArray:
        """``d/dtheta`` of :meth:`pool_probabilities`: the exact HedgeTune residual's weights."""
        grid = np.arange(sorted_scores.shape[1] + 1) / sorted_scores.shape[1]
        return np.diff(self._cdf_dtheta(grid))[None, :]

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._repr_fields().items())
        return f"{type(self).__name__}({fields})"

    def _repr_fields(self) -> dict[str, object]:
        return {self.parameter: self.theta}
