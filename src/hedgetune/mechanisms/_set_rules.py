"""Mechanisms that choose among a fixed number n of candidates using more than the proxy's ranks
(docs/SPEC.md §2-3).

The related hedges (InferenceTimePessimism, regularised Best-of-n) look at the raw proxy of every
drawn candidate together with a covariate (the policy's log-probability, the length) or the
similarities between the drawn candidates. None has a density in proxy-quantile space, so instead
of ``pdf``/``cdf`` they give each drawn set's selection probabilities, and the library estimates a
deployment by averaging over the pool's n-subsets:

    E[true reward of the choice] = (1 / C(m, n)) sum_{S subset of the pool, |S| = n} sum_{i in S} p_i(S) t_i,

a U-statistic, hence unbiased for a deployment that draws n fresh candidates. Every subset is
enumerated when there are at most :data:`EXACT_SUBSETS` of them; otherwise
:func:`monte_carlo_subsets` uniform subsets per prompt (seeded, the same for every parameter, so a
curve is smooth in the parameter) and the Monte Carlo standard error is reported
(:attr:`hedgetune.Curve.monte_carlo_se`). The number per prompt falls as prompts grow, from 1,000 to
200, so that the table's total stays near :data:`MONTE_CARLO_BUDGET`: the Monte Carlo variance of
the mean over P prompts is the mean within-prompt variance over (P x subsets), far below the
prompts' own sampling variance either way. Rules whose choice is the argmax of a per-candidate
score (RBoN-KL, length-regularised BoN) are exact at any pool size: sort by that score, then
position j of m is the best of a uniform n-subset with probability C(j-1, n-1) / C(m, n).

Their parameter has no derivative worth the name (an argmax is piecewise constant in it), so
HedgeTune maximises these curves on a grid (:attr:`Mechanism.has_derivative` is False).
"""

from __future__ import annotations

import dataclasses
import itertools
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from .._limits import require_memory
from ._base import Mechanism
from ._numerics import FloatArray, check_parameter
from ._pool_weights import subset_maximum_weights
from ._selection import IntArray, average_over_ties, sample_from_weights

if TYPE_CHECKING:
    from ..pools import Pools, SizeGroup

#: Enumerate every n-subset of a pool when there are at most this many.
EXACT_SUBSETS = 5000
#: Otherwise draw at most this many uniform n-subsets per prompt ...
MONTE_CARLO_SUBSETS = 1000
#: ... and at least this many ...
MIN_MONTE_CARLO_SUBSETS = 200
#: ... aiming at this many over the whole table.
MONTE_CARLO_BUDGET = 200_000


def monte_carlo_subsets(n_prompts: int) -> int:
    """Subsets drawn per prompt for a table of ``n_prompts`` prompts (when not enumerated)."""
    return int(np.clip(MONTE_CARLO_BUDGET // max(n_prompts, 1), MIN_MONTE_CARLO_SUBSETS, MONTE_CARLO_SUBSETS))


class SetRule(Mechanism):
    """A rule over a fixed number ``n`` of drawn candidates that sees their raw proxies and the
    table columns named by :meth:`extras` (subclasses are frozen dataclasses)."""

    uses_raw_scores: ClassVar[bool] = True
    has_derivative: ClassVar[bool] = False
    #: The rule at theta = 0 is this mechanism's base, which tuning starts from and the
    #: conservative rule falls back to (the reference policy for ITP, plain Best-of-n for RBoN).
    reference_theta: ClassVar[float] = 0.0
    #: Whether the choice is the argmax of a per-candidate score (then exact at any pool size).
    per_candidate: ClassVar[bool] = False
    #: Averaging over subsets costs far more per parameter than a rank rule: coarser tuning grids.
    needs_quadrature: ClassVar[bool] = True

    n: int

    # ----------------------------------------------------------------- what a subclass gives
    @abstractmethod
    def extras(self) -> tuple[str, ...]:
        """Table columns the rule needs besides the proxy (proxy-column names or ``"pairwise_similarity"``)."""

    @abstractmethod
    def set_probabilities(self, scores: FloatArray, extras: Mapping[str, FloatArray]) -> FloatArray:
        """Selection probabilities within drawn sets: ``scores`` is ``(..., n)``, each extra
        ``(..., n)`` (a covariate) or ``(..., n, n)`` (similarities); the result is ``(..., n)``."""

    # ----------------------------------------------------------------- the protocol
    # Subclasses are dataclasses with a field named after their ``parameter`` and a field ``n``.
    def __post_init__(self) -> None:
        value = check_parameter(getattr(self, self.parameter), self.parameter, low=0.0)
        object.__setattr__(self, self.parameter, value)
        object.__setattr__(self, "n", check_candidates(self.n))

    @classmethod
    def template(cls, n: int | None = None) -> Self:  # type: ignore[override]
        return cls(**{cls.parameter: 0.0, "n": 8 if n is None else n})

    @property
    def theta(self) -> float:
        return float(getattr(self, self.parameter))

    def with_theta(self, theta: float) -> Self:
        return dataclasses.replace(self, **{self.parameter: theta})  # type: ignore[type-var]

    @property
    def options(self) -> dict[str, Any]:
        return {"n": self.n}

    def expected_samples(self) -> float:
        return float(self.n)

    def _draw_n(self, size: int | tuple[int, ...], rng: np.random.Generator) -> IntArray:
        return np.full(size, self.n, dtype=np.intp)

    def _no_density(self, what: str) -> ValueError:
        return ValueError(
            f"{self.display_name} chooses from the raw proxies and {', '.join(self.extras())} of the drawn "
            f"candidates: it has no {what} in proxy-quantile space (use hedgetune.curve on a table)"
        )

    def _logpdf(self, u: FloatArray) -> FloatArray:
        raise self._no_density("density")

    def _cdf(self, u: FloatArray) -> FloatArray:
        raise self._no_density("CDF")

    def _score(self, u: FloatArray) -> FloatArray:
        raise self._no_density("score function")

    def _cdf_dtheta(self, u: FloatArray) -> FloatArray:
        raise self._no_density("CDF derivative")

    def kl(self) -> float:
        return float("nan")  # depends on the joint law of proxy and covariates; see Curve.kl_pool

    def mean(self) -> float:
        raise self._no_density("mean quantile")

    def _sample_quantiles(self, size: int | tuple[int, ...], rng: np.random.Generator) -> FloatArray:
        raise self._no_density("quantile law to sample")

    def deployment_limit(self, m: int) -> float:
        if self.n > m:
            raise ValueError(
                f"{self.display_name} with n = {self.n} needs pools of at least {self.n} responses; "
                f"the smallest has {m}: pass a smaller n"
            )
        return float("inf")

    def supported_max(self, pools: Pools, estimator: str) -> float:
        self.deployment_limit(pools.min_size)
        return float("inf")

    def budget_theta(self, max_samples: float) -> float:
        raise ValueError(
            f"{self.display_name} draws n = {self.n} candidates whatever its {self.parameter}: "
            "bound the samples with n, not max_samples"
        )

    def pool_tail(self, theta: float, m: int) -> float:
        return 0.0 if self.n <= m else 1.0

    def default_grid(self, pools: Pools, estimator: str, count: int = 60) -> FloatArray:
        top = self.default_top(pools)
        return np.concatenate([[0.0], np.geomspace(self.grid_start(top), top, count - 1)])

    def grid_start(self, top: float) -> float:
        return top * 1e-5

    # ----------------------------------------------------------------- selection
    def _select(self, scores: FloatArray, rng: np.random.Generator) -> IntArray:
        raise ValueError(
            f"{self.display_name} also needs {', '.join(self.extras())}: call select(scores, extras={{...}})"
        )

    def select(  # type: ignore[override]
        self,
        scores: ArrayLike,
        rng: np.random.Generator | int | None = None,
        *,
        extras: Mapping[str, ArrayLike] | None = None,
    ) -> IntArray:
        """Index of the chosen candidate for each prompt: ``scores`` is ``(prompts, k)`` (every
        prompt with the same number k of candidates, no NaN) and ``extras`` maps each name in
        :meth:`extras` to a ``(prompts, k)`` covariate or ``(prompts, k, k)`` similarities."""
        from ._numerics import rng_from

        matrix = np.asarray(scores, dtype=float)
        if matrix.ndim == 1:
            matrix = matrix[None, :]
        if matrix.ndim != 2 or matrix.shape[1] == 0:
            raise ValueError(f"scores must be a (prompts, candidates) matrix, got shape {np.shape(scores)}")
        if not np.all(np.isfinite(matrix)):
            raise ValueError(f"{self.display_name} needs finite scores for every candidate (no NaN or inf)")
        given = dict(extras or {})
        missing = [name for name in self.extras() if name not in given]
        if missing:
            raise ValueError(
                f"{self.display_name} needs {missing} for every candidate besides its score: pass "
                "select(scores, extras={...}) in Python (the command line's select reads scores only)"
            )
        arrays = {}
        for name in self.extras():
            value = np.asarray(given[name], dtype=float)
            shape = (*matrix.shape, matrix.shape[1]) if name == "pairwise_similarity" else matrix.shape
            if value.shape == shape[1:]:
                value = value[None]
            if value.shape != shape:
                raise ValueError(f"extras[{name!r}] must have shape {shape}, got {value.shape}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"extras[{name!r}] has NaN or infinite values")
            arrays[name] = value
        return sample_from_weights(self.set_probabilities(matrix, arrays), rng_from(rng))

    # ----------------------------------------------------------------- on calibration pools
    def group_probabilities(
        self, group: SizeGroup, thetas: Sequence[float] | FloatArray, seed: int = 0, n_prompts: int | None = None
    ) -> Iterator[tuple[FloatArray, FloatArray | None]]:
        """For each parameter in ``thetas``: each sorted position's probability of being chosen
        when n fresh candidates are drawn, ``(P_m, m)``, and the Monte Carlo variance of each
        prompt's expected true reward (``None`` when exact). The subsets (when not enumerated,
        :func:`monte_carlo_subsets` of the table's ``n_prompts`` per prompt; by default this
        group's) are drawn once, so the parameters share them (common random numbers: the curve
        is smooth in the parameter)."""
        from ..pools import UNAVERAGED_TRUE

        m, rows = group.m, group.size
        extras = {name: group.extras[name] for name in self.extras()}
        true = group.extras.get(UNAVERAGED_TRUE, group.true)
        if self.per_candidate:
            for theta in thetas:
                yield self.with_theta(float(theta))._per_candidate_probabilities(group.proxy, extras), None
            return
        total = special.comb(m, self.n, exact=True)
        sets = monte_carlo_subsets(rows if n_prompts is None else n_prompts)
        width = self.n * (self.n if "pairwise_similarity" in extras else 1)
        require_memory(
            8.0 * 4 * rows * (sets if total > EXACT_SUBSETS else total) * width,
            f"{self.display_name}'s drawn sets for {rows} prompts",
        )
        if total <= EXACT_SUBSETS:
            subsets = np.array(list(itertools.combinations(range(m), self.n)), dtype=np.intp)
            index = np.broadcast_to(subsets, (rows, *subsets.shape))
            exact = True
        else:
            # Seeded per prompt (by its position in the table), so that the draws do not depend on
            # how prompts are grouped (by pool size, or in chunks read from disk).
            index = np.empty((rows, sets, self.n), dtype=np.intp)
            for row, prompt in enumerate(group.prompts):
                rng = np.random.default_rng([seed, int(prompt), m, self.n])
                index[row] = np.argsort(rng.random((sets, m)), axis=1)[:, : self.n]
            exact = False
        take = np.arange(rows)[:, None, None]
        scores = group.proxy[take, index]
        picked = {}
        for name, values in extras.items():
            if values.ndim == 3:  # similarities: the drawn set's own n x n block
                picked[name] = values[take[..., None], index[..., :, None], index[..., None, :]]
            else:
                picked[name] = values[take, index]
        drawn_true = true[take, index]
        yield from self._positions(scores, picked, index, drawn_true, thetas, m, exact)

    def _positions(
        self, scores: FloatArray, picked: Mapping[str, FloatArray], index: Any, drawn_true: FloatArray,
        thetas: Sequence[float] | FloatArray, m: int, exact: bool,
    ) -> Iterator[tuple[FloatArray, FloatArray | None]]:
        """Each position's probability of being chosen, averaged over the drawn sets, and the
        Monte Carlo variance of each prompt's value (``None`` when exact), for each parameter."""
        rows, k = scores.shape[0], scores.shape[1]
        flat = (np.arange(rows)[:, None, None] * m + index).ravel()
        for probs in self.set_probabilities_many(scores, picked, thetas):  # (rows, k, n) each
            positions = np.bincount(flat, weights=probs.ravel(), minlength=rows * m).reshape(rows, m) / k
            if exact:
                yield positions, None
            else:
                per_subset = np.einsum("rkn,rkn->rk", probs, drawn_true)
                yield positions, per_subset.var(axis=1, ddof=1) / k

    def set_probabilities_many(
        self, scores: FloatArray, extras: Mapping[str, FloatArray], thetas: Sequence[float] | FloatArray
    ) -> Iterator[FloatArray]:
        """:meth:`set_probabilities` at each parameter of ``thetas`` (a rule may share work
        between them, as InferenceTimePessimism shares its sort)."""
        for theta in thetas:
            yield self.with_theta(float(theta)).set_probabilities(scores, extras)

    def _per_candidate_probabilities(self, proxy: FloatArray, extras: Mapping[str, FloatArray]) -> FloatArray:
        """Argmax of a per-candidate score: the Best-of-n U-statistic on that score's order."""
        effective = self.candidate_scores(proxy, extras)
        m = proxy.shape[1]
        order = np.argsort(effective, axis=1, kind="stable")
        sorted_effective = np.take_along_axis(effective, order, axis=1)
        weights = np.broadcast_to(subset_maximum_weights(np.array([float(self.n)]), m)[0], proxy.shape).copy()
        ties = np.any(sorted_effective[:, 1:] == sorted_effective[:, :-1], axis=1)
        if ties.any():
            weights[ties] = average_over_ties(sorted_effective[ties], weights[ties])
        out = np.empty_like(weights)
        np.put_along_axis(out, order, weights, axis=1)
        return out

    def candidate_scores(self, proxy: FloatArray, extras: Mapping[str, FloatArray]) -> FloatArray:
        """For :attr:`per_candidate` rules: the score whose argmax is chosen."""
        raise NotImplementedError

    def _repr_fields(self) -> dict[str, object]:
        return {self.parameter: self.theta, "n": self.n}


def check_candidates(n: Any) -> int:
    """A whole number of candidates >= 1."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer | float) or not float(n).is_integer() or n < 1:
        raise ValueError(f"n (the number of candidates) must be a whole number >= 1, got {n!r}")
    if n > 4096:
        raise ValueError(f"n = {n} candidates per prompt is beyond what these rules are meant for (<= 4096)")
    return int(n)


def argmax_share(values: FloatArray) -> FloatArray:
    """Uniform over the maxima of the last axis: ``1{v_i = max} / #max``."""
    top = values == values.max(axis=-1, keepdims=True)
    return top / top.sum(axis=-1, keepdims=True)


def typical_spread(pools: Pools, column: str | None = None) -> float:
    """The typical within-prompt standard deviation of the proxy (or of an extra ``column``),
    pooled over prompts; 1 when every pool is constant."""
    squares = 0.0
    for group in pools.groups:
        values = group.proxy if column is None else group.extras[column]
        squares += float(np.var(values, axis=1).sum())
    spread = float(np.sqrt(squares / pools.n_prompts))
    return spread if spread > 0 else 1.0
