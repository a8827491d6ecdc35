"""InferenceTimePessimism (Huang et al. 2025, arXiv 2503.21878): chi^2-regularised rejection
sampling over n drawn candidates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ._numerics import FloatArray
from ._set_rules import SetRule, typical_spread

if TYPE_CHECKING:
    from ..pools import Pools


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
        acceptance = self.acceptance(scores)
        k = acceptance.shape[-1]
        nodes, weights = np.polynomial.legendre.leggauss(max(1, (k + 1) // 2))
        t, w = (nodes + 1.0) / 2.0, weights / 2.0  # Gauss-Legendre on [0, 1]
        # log prod_{j != i} (1 - t a_j) = sum_j log1p(-t a_j) - log1p(-t a_i), at each node
        logs = np.log1p(-t[:, None] * acceptance[..., None, :])  # (..., nodes, k)
        others = logs.sum(axis=-1, keepdims=True) - logs
        return acceptance * np.einsum("q,...qk->...k", w, np.exp(others))

    def acceptance(self, scores: FloatArray) -> FloatArray:
        """Each drawn candidate's acceptance probability ``a_i`` (the top one's is 1)."""
        k = scores.shape[-1]
        if self.gamma == 0.0:
            return np.ones_like(scores)
        top = scores.max(axis=-1, keepdims=True)
        shifted = scores - top  # <= 0; lambda is found relative to the maximum
        ordered = -np.sort(-shifted, axis=-1)  # descending
        counts = np.arange(1, k + 1)
        # Sum_i relu(r_i - lambda) = k / gamma: with the top c candidates above lambda,
        # lambda_c = (S_c - k / gamma) / c; the solution is the largest lambda_c (the threshold of
        # a projection onto the simplex).
        lam = np.max((np.cumsum(ordered, axis=-1) - k / self.gamma) / counts, axis=-1, keepdims=True)
        return np.maximum(shifted - lam, 0.0) / (-lam)

    def default_top(self, pools: Pools) -> float:
        # Past gamma * (gap to the runner-up) = n only the top candidate is above lambda (Best-of-n).
        return 1e3 * self.n / typical_spread(pools)

    def _repr_fields(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "n": self.n}
