"""Regularised Best-of-n: the argmax over n drawn candidates of the proxy plus a regulariser.

* RBoN-KL and RBoN-WD: Jinnai et al. 2024, "Regularized Best-of-N Sampling with Minimum Bayes Risk
  Objective for Language Model Alignment" (arXiv 2404.01054).
* Length-regularised Best-of-n: the length penalty of the best-of-n variants evaluated by
  CyberAgent's ``srbon`` (Ichihara et al.).

Each is Best-of-n at beta = 0 (this family's base point: it never reaches the reference policy)
and, as beta grows, the argmax of its regulariser alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np

from ._numerics import FloatArray
from ._set_rules import SetRule, argmax_share, typical_spread

if TYPE_CHECKING:
    from ..pools import Pools


def _column_name(column: Any, default: str) -> str:
    column = default if column is None else column
    if not isinstance(column, str) or not column or column == "pairwise_similarity":
        raise ValueError(f"column must name a proxy column of the table, got {column!r}")
    return column


class _CovariateBoN(SetRule):
    """The argmax of ``proxy + sign * beta * covariate``: exact at any pool size."""

    base_name: ClassVar[str] = "Best-of-n"

    per_candidate: ClassVar[bool] = True
    needs_quadrature: ClassVar[bool] = False
    parameter: ClassVar[str] = "beta"
    sign: ClassVar[float]
    default_column: ClassVar[str]

    beta: float
    n: int
    column: str

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "column", _column_name(self.column, self.default_column))

    @classmethod
    def template(cls, n: int | None = None, column: str | None = None) -> Self:  # type: ignore[override]
        return cls(0.0, 8 if n is None else n, _column_name(column, cls.default_column))  # type: ignore[call-arg]

    @property
    def options(self) -> dict[str, Any]:
        return {"n": self.n, "column": self.column}

    def extras(self) -> tuple[str, ...]:
        return (self.column,)

    def candidate_scores(self, proxy: FloatArray, extras: Mapping[str, FloatArray]) -> FloatArray:
        return proxy + self.sign * self.beta * extras[self.column]

    def set_probabilities(self, scores: FloatArray, extras: Mapping[str, FloatArray]) -> FloatArray:
        return argmax_share(self.candidate_scores(scores, extras))

    def default_top(self, pools: Pools) -> float:
        # beta * (covariate spread) = 100 x (proxy spread): the covariate decides alone.
        return 100.0 * typical_spread(pools) / typical_spread(pools, self.column)

    def _repr_fields(self) -> dict[str, Any]:
        return {"beta": self.beta, "n": self.n, "column": self.column}


@dataclass(frozen=True, repr=False)
class RegularisedBoNKL(_CovariateBoN):
    r"""RBoN-KL (Jinnai et al. 2024): ``argmax_i r_i + beta * log pi_ref(y_i | x)``.

    The KL regulariser ``KL(1_y || pi_ref) = -log pi_ref(y | x)`` of a point mass favours responses
    the policy itself finds likely. ``column`` names the table's log-probability column (default
    ``mean_logprob``, the mean token log-probability, which does not penalise length; a column of
    summed log-probabilities gives the paper's sequence form).
    """

    beta: float
    n: int = 8
    column: str = "mean_logprob"

    name: ClassVar[str] = "rbon_kl"
    display_name: ClassVar[str] = "RBoN-KL"
    sign: ClassVar[float] = 1.0
    default_column: ClassVar[str] = "mean_logprob"


@dataclass(frozen=True, repr=False)
class LengthRegularisedBoN(_CovariateBoN):
    r"""Length-regularised Best-of-n: ``argmax_i r_i - beta * length_i``.

    Penalises the proxy's well-known preference for long answers; ``column`` names the length
    column (default ``length``; any unit, beta scales with it).
    """

    beta: float
    n: int = 8
    column: str = "length"

    name: ClassVar[str] = "rbon_len"
    display_name: ClassVar[str] = "Length-regularised BoN"
    sign: ClassVar[float] = -1.0
    default_column: ClassVar[str] = "length"


@dataclass(frozen=True, repr=False)
class RegularisedBoNWD(SetRule):
    r"""RBoN-WD (Jinnai et al. 2024), an MBR-regularised Best-of-n:
    ``argmax_{i in S} r_i - beta * (1/n) sum_{j in S} (1 - sim(y_i, y_j))``.

    The Wasserstein distance between the point mass on ``y_i`` and the empirical reference over
    the drawn set ``S`` is the mean distance ``1 - sim`` to the drawn candidates: the rule favours
    responses typical of the sample (minimum Bayes risk). It needs the table's pairwise
    ``pairwise_similarity`` column (e.g. cosine similarity of sentence embeddings). The choice depends on
    the whole drawn set, so its deployment estimator averages over the pool's n-subsets
    (enumerated, or Monte Carlo with a reported standard error).
    """

    beta: float
    n: int = 8

    base_name: ClassVar[str] = "Best-of-n"
    name: ClassVar[str] = "rbon_wd"
    display_name: ClassVar[str] = "RBoN-WD"
    parameter: ClassVar[str] = "beta"

    def extras(self) -> tuple[str, ...]:
        return ("pairwise_similarity",)

    def set_probabilities(self, scores: FloatArray, extras: Mapping[str, FloatArray]) -> FloatArray:
        return next(self.set_probabilities_many(scores, extras, [self.beta]))

    def set_probabilities_many(
        self, scores: FloatArray, extras: Mapping[str, FloatArray], thetas: Sequence[float] | FloatArray
    ) -> Iterator[FloatArray]:
        """:meth:`set_probabilities` at each beta of ``thetas``; the drawn sets' closeness is
        computed once."""
        closeness = extras["pairwise_similarity"].mean(axis=-1)  # (1/n) sum_j sim(y_i, y_j); the -beta is common
        for beta in thetas:
            yield argmax_share(scores + float(beta) * closeness)

    def default_top(self, pools: Pools) -> float:
        # The typical within-prompt spread of the mean similarity to the pool, pooled over prompts.
        squares = sum(float(np.var(g.extras["pairwise_similarity"].mean(axis=-1), axis=1).sum()) for g in pools.groups)
        spread = float(np.sqrt(squares / pools.n_prompts))
        return 100.0 * typical_spread(pools) / (spread if spread > 0 else 1.0)
