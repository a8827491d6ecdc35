"""The protocol every mechanism follows (the mathematics: docs/SPEC.md §1-2).

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
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import numpy as np
from numpy.typing import ArrayLike

from .._limits import require_memory
from ._numerics import FloatArray, check_unit_interval, rng_from
from ._pool_weights import Counts, mixture_rows, negligible_start
from ._selection import IntArray, as_pool_matrix

if TYPE_CHECKING:
    from ..pools import Pools

Estimator = Literal["plugin", "unbiased"]

#: Positions whose total selection probability stays below this are skipped: they change a mean
#: by less than this times the largest |reward|.
NEGLIGIBLE_MASS = 1e-17


class Mechanism(ABC):
    """A one-parameter, rank-based inference-time selection rule.

    Subclasses are immutable dataclasses; see :class:`BestOfN`, :class:`SoftBestOfN`,
    :class:`BestOfPoisson` and :class:`Tilted`.
    """

    #: Short name used by the CLI and result tables (``"bon"``, ``"sbon"``, ``"bop"``, ``"tilted"``).
    name: ClassVar[str]
    #: Name shown in sentences, figures and reports (``"Best-of-n"``).
    display_name: ClassVar[str]
    #: Name of the tuned parameter (``"n"``, ``"beta"``, ``"mu"``).
    parameter: ClassVar[str]
    #: Value of the parameter at which the mechanism is the reference policy.
    reference_theta: ClassVar[float]
    #: Whether the tuned parameter takes whole numbers only (then tuning searches the integers).
    integer_parameter: ClassVar[bool] = False
    #: Whether a deployment drawing fresh candidates can be estimated from a pool without
    #: replacement; the tilted frontier, which no finite sample realises, cannot.
    deployable: ClassVar[bool] = True
    #: Whether its pool probabilities cost a quadrature per parameter (tuning then uses fewer
    #: grid points before refining).
    needs_quadrature: ClassVar[bool] = False
    #: What the mechanism is at ``reference_theta``, in sentences ("reference"; "Best-of-n" for a
    #: family that never reaches the reference policy).
    base_name: ClassVar[str] = "reference"
    #: Whether the curve has a derivative in the parameter that HedgeTune can find the root of;
    #: without one (an argmax that jumps with the parameter) tuning maximises on a grid.
    has_derivative: ClassVar[bool] = True

    # ----------------------------------------------------------------- construction
    @classmethod
    def template(cls, **options: Any) -> Self:
        """The mechanism at its reference parameter; ``options`` fix its other settings (a
        mechanism with none, the default, refuses any)."""
        if options:
            raise ValueError(
                f"{', '.join(sorted(options))} do not apply to {cls.name!r} (it has no options)"
            )
        return cls(cls.reference_theta)  # type: ignore[call-arg]

    @property
    def options(self) -> dict[str, Any]:
        """The fixed settings besides the tuned parameter (``{"n": 4, "on": "raw"}``)."""
        return {}

    def short_label(self) -> str:
        """``display_name`` with the options, for legends and tables (``"Soft Best-of-n (n=4)"``)."""
        if not self.options:
            return self.display_name
        return f"{self.display_name} ({', '.join(f'{k}={v}' for k, v in self.options.items())})"

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
        matrix = as_pool_matrix(scores, check_values=not self._select_checks_values)
        return self._select(matrix, rng_from(rng))

    #: Whether :meth:`_select` checks the scores' values itself (in the pass that selects).
    _select_checks_values: ClassVar[bool] = False

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

    def kl_many(self, thetas: FloatArray) -> FloatArray:
        """:meth:`kl` at every parameter in ``thetas`` (no validation)."""
        return np.array([self.with_theta(float(t)).kl() for t in thetas])

    def expected_samples_many(self, thetas: FloatArray) -> FloatArray:
        """:meth:`expected_samples` at every parameter in ``thetas`` (no validation)."""
        return np.array([self.with_theta(float(t)).expected_samples() for t in thetas])

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

    # ------------------------------------------------------------ what a calibration pool supports
    def default_top(self, pools: Pools) -> float:
        """Top of the parameter range searched without a budget (well past pool exhaustion)."""
        return 500.0

    def grid_start(self, top: float) -> float:
        """First positive parameter of a default geometric grid up to ``top``."""
        return top * 1e-4

    def supported_max(self, pools: Pools, estimator: Estimator) -> float:
        """The largest parameter whose deployment the pools can stand for: unlimited with the
        plug-in (it resamples the pools); without replacement, :meth:`deployment_limit` of the
        smallest pool."""
        return float("inf") if estimator == "plugin" else self.deployment_limit(pools.min_size)

    def deployment_limit(self, m: int) -> float:
        """The largest parameter a pool of ``m`` can estimate without replacement (unlimited by
        default; a mechanism that needs more candidates than ``m`` raises)."""
        return float("inf")

    def default_grid(self, pools: Pools, estimator: Estimator, count: int = 60) -> FloatArray:
        """Parameters for a curve: from the reference to the default top or the supported max."""
        top = min(self.default_top(pools), self.supported_max(pools, estimator))
        if self.integer_parameter:
            start = max(self.reference_theta, 1.0)
            return np.unique(np.round(np.geomspace(start, top, max(1, min(count, int(top))))))
        return np.concatenate([[self.reference_theta], np.geomspace(self.grid_start(top), top, count - 1)])

    def budget_theta(self, max_samples: float) -> float:
        """The largest parameter whose expected number of candidates stays within ``max_samples``."""
        raise ValueError(f"{self.display_name} does not say how many samples it draws; max_samples cannot bound it")

    def pool_tail(self, theta: float, m: int) -> float:
        """Probability that a deployment at ``theta`` draws more candidates than a pool of ``m``."""
        return 0.0 if self.with_theta(theta).expected_samples() <= m else 1.0

    # ------------------------------------------------------ deployment: fresh draws, no replacement
    def candidate_counts(self, m: int) -> Counts | None:
        """For mechanisms that return the best of a (random) number N of candidates: the counts
        ``c < m`` with non-negligible probability, ``P(N = c)`` and its derivative in theta (or
        ``None`` where the parameter is a whole number); the rest, ``P(N >= m)``, is implied.
        ``None`` (the default) for other mechanisms."""
        return None

    def deployment_probabilities(self, m: int, derivative: bool = False, start: int = 0) -> FloatArray:
        """Probabilities (their theta-derivatives with ``derivative``) of the sorted positions
        ``start + 1 .. m`` of a pool when a deployment draws fresh candidates, ``(1, m - start)``.

        The default serves every best-of-N mechanism (:meth:`candidate_counts`): the mixture
        ``sum_c P(N = c) C(i-1, c-1) / C(m, c)`` of U-statistics over c-subsets, the draws of m or
        more candidates valued as the whole pool (their share is :meth:`pool_tail`).
        """
        return mixture_rows([self._counts(m, derivative)], m, derivative, [start], NEGLIGIBLE_MASS)[1]

    def deployment_rows(self, thetas: FloatArray, m: int, derivative: bool = False) -> tuple[int, FloatArray]:
        """:meth:`deployment_probabilities` at each parameter of ``thetas``, as ``(start, values)``:
        ``values`` is ``(T, m - start)`` for positions ``start + 1 .. m``, and every position below
        ``start`` has probability under :data:`NEGLIGIBLE_MASS` in total at every parameter (see
        :meth:`negligible_below`). Best-of-N mixtures are computed together (see
        :func:`mixture_rows`), other mechanisms one parameter at a time."""
        mechs = [self.with_theta(float(t)) for t in thetas]
        if self.candidate_counts(m) is not None:
            counts = [mech._counts(m, derivative) for mech in mechs]
            starts = [negligible_start(c, m, NEGLIGIBLE_MASS) for c in counts]
            return mixture_rows(counts, m, derivative, starts, NEGLIGIBLE_MASS)
        starts = [mech.negligible_below(m) for mech in mechs]
        start = min(starts, default=m)
        values = np.zeros((len(mechs), m - start))
        for row, (mech, own) in enumerate(zip(mechs, starts, strict=True)):
            values[row, own - start :] = mech.deployment_probabilities(m, derivative, own)[0]
        return start, values

    def negligible_below(self, m: int) -> int:
        """A position below which the deployment weights (and their derivatives) add up to less
        than :data:`NEGLIGIBLE_MASS` (see :func:`negligible_start`; 0 for mechanisms that are not
        best-of-N mixtures)."""
        counts = self.candidate_counts(m)
        return 0 if counts is None else negligible_start(counts, m, NEGLIGIBLE_MASS)

    def _counts(self, m: int, derivative: bool) -> Counts:
        """:meth:`candidate_counts`, or the error that says why there are none."""
        counts = self.candidate_counts(m)
        if counts is None:
            why = ": it is the infinite-sample frontier, not a sampler" if not self.deployable else " on rank positions"
            raise ValueError(f"{self.display_name} has no without-replacement (deployment) estimator{why}")
        if derivative and counts[2] is None:
            raise ValueError(f"{self.display_name} has a whole-number parameter: no derivative of its weights")
        return counts

    def raw_deployment_probabilities(
        self, sorted_scores: FloatArray, derivative: bool = False
    ) -> tuple[FloatArray, FloatArray | None]:
        """For mechanisms that see raw scores: each sorted position's probability under fresh
        draws, ``(R, m)``, and its theta-derivative with ``derivative``."""
        raise ValueError(f"{self.display_name} on raw scores has no without-replacement (deployment) estimator")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._repr_fields().items())
        return f"{type(self).__name__}({fields})"

    def _repr_fields(self) -> dict[str, object]:
        return {self.parameter: self.theta}
