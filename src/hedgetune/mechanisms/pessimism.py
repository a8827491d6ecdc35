"""InferenceTimePessimism (Huang et al. 2025, arXiv 2503.21878): chi^2-regularised rejection
sampling over n drawn candidates."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .._threads import over_row_blocks, row_workers
from ._compiled import SMALL_CALL, kernel_for
from ._numerics import FloatArray
from ._set_rules import SetRule, typical_spread

if TYPE_CHECKING:
    from ..pools import Pools


#: Fewest drawn candidates (sets x n) worth a thread of the compiled pass (each costs a quadrature).
_SETS_PER_THREAD = 1 << 16


@dataclass(frozen=True, repr=False)
class InferenceTimePessimism(SetRule):
    r"""InferenceTimePessimism (ITP) over ``n`` candidates, tuned by ``gamma = 1 / beta``.

    Huang et al. regularise with the chi^2 divergence, whose optimal policy is
    ``pi(y) = pi_ref(y) relu((r(y) - lambda) / beta)``. On the drawn candidates ``r_1..r_n``:

    * ``lambda`` solves ``(1/n) sum_i relu(gamma (r_i - lambda)) = 1`` (the weights average 1);
    * rejection sampling: the candidates are visited in their (random) order and candidate i is
      accepted with probability ``a_i = relu(r_i - lambda) / (r_max - lambda)``, the first accepted
      is returned. With the envelope ``M`` at the largest drawn weight the top candidate always
      accepts, so no fallback draw is needed (the paper bounds ``M`` with a known reward maximum
      ``R_max``; the drawn maximum is the tightest such bound).

    Over a uniformly random order, candidate i is returned with probability
    ``p_i = a_i * integral_0^1 prod_{j != i} (1 - t a_j) dt`` (i.i.d. uniform arrival times), a
    polynomial of degree n - 1 in t integrated exactly by Gauss-Legendre with ceil(n/2) nodes.

    ``gamma = 0`` (beta = infinity) accepts the first candidate: the reference policy. Large
    ``gamma`` puts only the top candidate above lambda: Best-of-n. The parameter is the paper's
    beta inverted so that, as for every mechanism here, 0 is the reference.
    """

    gamma: float
    n: int = 8

    name: ClassVar[str] = "itp"
    display_name: ClassVar[str] = "InferenceTimePessimism"
    parameter: ClassVar[str] = "gamma"

    def extras(self) -> tuple[str, ...]:
        return ()

    def set_probabilities(self, scores: FloatArray, extras: Mapping[str, FloatArray]) -> FloatArray:
        return next(self.set_probabilities_many(scores, extras, [self.gamma]))

    def set_probabilities_many(
        self, scores: FloatArray, extras: Mapping[str, FloatArray], thetas: Sequence[float] | FloatArray
    ) -> Iterator[FloatArray]:
        """:meth:`set_probabilities` at each gamma of ``thetas``: the drawn sets are sorted once."""
        prepared = _Sorted(scores)
        k = scores.shape[-1]
        t, w = _arrival_nodes(k)
        for gamma in thetas:
            acceptance = prepared.acceptance(float(gamma))
            # prod_{j != i} (1 - t a_j) = prod_j (1 - t a_j) / (1 - t a_i); every factor is at least
            # 1 - t > 0 at an interior node, so the quotient is exact to rounding (no log, no exp).
            factors = 1.0 - t[:, None] * acceptance[..., None, :]  # (..., nodes, k)
            others = np.prod(factors, axis=-1, keepdims=True) / factors
            yield acceptance * np.einsum("q,...qk->...k", w, others)

    def _positions(
        self, scores: FloatArray, picked: Mapping[str, FloatArray], index: Any, drawn_true: FloatArray,
        thetas: Sequence[float] | FloatArray, m: int, exact: bool,
    ) -> Iterator[tuple[FloatArray, FloatArray | None]]:
        """The compiled pass over the drawn sets when Numba is there (same numbers)."""
        kernel = kernel_for("auto", "_pessimism_compiled", float(scores.size), SMALL_CALL)
        if kernel is None:
            yield from super()._positions(scores, picked, index, drawn_true, thetas, m, exact)
            return
        rows, k, n = scores.shape
        t, w = _arrival_nodes(n)
        scores = np.ascontiguousarray(scores, dtype=float)
        index = np.ascontiguousarray(index, dtype=np.intp)
        drawn_true = np.ascontiguousarray(drawn_true, dtype=float)
        # Rows are independent and the kernel releases the GIL: blocks of rows on the kept threads.
        workers = row_workers(rows, max(1, _SETS_PER_THREAD // (k * n)))
        for gamma in thetas:
            positions = np.zeros((rows, m))
            total, squares = np.zeros(rows), np.zeros(rows)
            over_row_blocks(rows, workers, functools.partial(
                _accumulate_rows, kernel.accumulate, scores, index, drawn_true, float(gamma), t, w, positions, total, squares
            ))
            if exact:
                yield positions, None
            else:
                yield positions, np.maximum(squares - total**2 / k, 0.0) / (k - 1) / k

    def acceptance(self, scores: FloatArray) -> FloatArray:
        """Each drawn candidate's acceptance probability ``a_i`` (the top one's is 1)."""
        return _Sorted(scores).acceptance(self.gamma)

    def default_top(self, pools: Pools) -> float:
        # Past gamma * (gap to the runner-up) = n only the top candidate is above lambda (Best-of-n).
        return 1e3 * self.n / typical_spread(pools)

    def _repr_fields(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "n": self.n}


def _accumulate_rows(accumulate: Any, scores: FloatArray, index: Any, true: FloatArray, gamma: float, t: FloatArray,
                     w: FloatArray, positions: FloatArray, total: FloatArray, squares: FloatArray, a: int, b: int) -> None:
    """The compiled pass over rows ``a:b`` (each row's outputs are its own)."""
    accumulate(scores[a:b], index[a:b], true[a:b], gamma, t, w, positions[a:b], total[a:b], squares[a:b])


def _arrival_nodes(k: int) -> tuple[FloatArray, FloatArray]:
    """Gauss-Legendre nodes and weights on [0, 1] (nodes strictly inside) exact for the degree
    k - 1 polynomial ``prod_{j != i} (1 - t a_j)`` of k drawn candidates."""
    nodes, weights = np.polynomial.legendre.leggauss(max(1, (k + 1) // 2))
    return (nodes + 1.0) / 2.0, weights / 2.0


class _Sorted:
    """Drawn sets' scores shifted by their maximum and sorted once, for the thresholds of many gamma.

    ``sum_i relu(r_i - lambda) = k / gamma``: with the top c candidates above lambda,
    ``lambda_c = (S_c - k / gamma) / c``; the solution is the largest ``lambda_c`` (the threshold
    of a projection onto the simplex)."""

    def __init__(self, scores: FloatArray) -> None:
        self.k = scores.shape[-1]
        self.shifted = scores - scores.max(axis=-1, keepdims=True)  # <= 0; lambda is relative to the maximum
        self.sums = np.cumsum(-np.sort(-self.shifted, axis=-1), axis=-1)  # S_c over the descending order
        self.counts = np.arange(1, self.k + 1)

    def acceptance(self, gamma: float) -> FloatArray:
        if gamma == 0.0:
            return np.ones_like(self.shifted)
        lam = np.max((self.sums - self.k / gamma) / self.counts, axis=-1, keepdims=True)
        return np.maximum(self.shifted - lam, 0.0) / (-lam)
