"""Soft Best-of-n: draw n candidates, return candidate i with probability softmax(beta * s)_i."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from numpy.polynomial import legendre
from scipy import special

from ._base import Mechanism
from ._compiled import Engine, check_engine
from ._numerics import (
    FloatArray,
    check_parameter,
    composite_gauss_legendre,
    expm1_plus_x_over_x2,
    gauss_legendre,
    log_expm1,
)
from ._selection import IntArray, argmax_random_ties, sample_softmax
from ._softmax_cells import softmax_exponents, union_of_cells
from ._subsets import choose_kernel, run_kernel, slopes_at_zero, soft_best_of_n_subsets
from .best_of_n import BestOfN

if TYPE_CHECKING:
    from ..pools import Pools

# ---------------------------------------------------------------------------------------------
# Quadrature in y = log(s) + beta*u for q(u) = n * int K(y) phi(e^(y - beta u))^(n-1) dy, where
# K(y) = exp(y - e^y) is the density of log of an Exp(1) variable. K is negligible outside
# [-38 - log n, 4.5] (the mass below, times n, is under e^-38 ~ 3e-17), and on unit panels 8-point
# Gauss-Legendre integrates it, times the smooth phi^(n-1), to near machine precision.


@cache
def _y_quadrature(n: int) -> tuple[FloatArray, FloatArray]:
    """Nodes ``y`` and ``log(weight) + log K(y)`` for a given number of candidates."""
    lower = -38.0 - np.ceil(np.log(n))
    nodes, weights = composite_gauss_legendre(np.arange(lower, 4.5 + 0.5, 1.0), 8)
    return nodes, np.log(weights) + nodes - np.exp(nodes)


# Gauss-Legendre in v for phi(s) = int_0^1 exp(-s e^(beta v)) dv when beta is small.
_V_NODES, _V_WEIGHTS = gauss_legendre(16)
_SMALL_BETA = 0.05
_SMALL_S = -27.6  # log(s e^beta) below this: s e^beta < 1e-12, first-order expansion in s
# Panels in u for the CDF, KL and mean: uniform, plus geometric grading towards both ends, where
# large n or beta put boundary layers.
_U_BREAKS = np.unique(
    np.concatenate([np.linspace(0.0, 1.0, 33), 2.0 ** -np.arange(6, 21), 1.0 - 2.0 ** -np.arange(6, 41)])
)
_U_ORDER = 8
_U_NODES, _U_WEIGHTS = composite_gauss_legendre(_U_BREAKS, _U_ORDER)
# Maps the values at the 8 Gauss nodes of a panel to Legendre coefficients on [-1, 1].
_LEGENDRE_FROM_NODES = np.linalg.inv(
    legendre.legvander(2.0 * gauss_legendre(_U_ORDER)[0] - 1.0, _U_ORDER - 1)
)
_CHUNK = 2048


def _exp1_of_log(t: FloatArray) -> FloatArray:
    """``E1(e^t)``; for ``t < -30`` the series ``-gamma - t + e^t`` (exact to rounding there), which
    stays finite where ``e^t`` underflows."""
    out = np.empty_like(t)
    tiny = t < -30.0
    out[tiny] = -np.euler_gamma - t[tiny] + np.exp(t[tiny])
    with np.errstate(over="ignore"):
        out[~tiny] = special.exp1(np.exp(t[~tiny]))
    return out


def _phi_terms(t: FloatArray, beta: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    """For ``s = e^t``: ``log phi(s)``, ``A(s) = -s dphi/ds`` and ``B(s) = -dphi/dbeta``.

    ``phi(s) = int_0^1 exp(-s e^(beta v)) dv = (E1(s) - E1(s e^beta)) / beta``,
    ``A = int_0^1 s e^(beta v) exp(-s e^(beta v)) dv = (e^-s - e^(-s e^beta)) / beta``,
    ``B = int_0^1 v s e^(beta v) exp(-s e^(beta v)) dv = (phi - e^(-s e^beta)) / beta``.
    """
    log_phi = np.empty_like(t)
    a = np.empty_like(t)
    b = np.empty_like(t)
    small = t + beta < _SMALL_S
    if small.any():
        # phi = 1 - s E[W] + O(s^2 E[W^2]) with W = e^(beta V); relative error below 1e-12.
        ts = t[small]
        s_c1 = np.exp(ts + log_expm1(np.array(beta)) - np.log(beta))
        s_c2 = np.exp(ts + beta + np.log(expm1_plus_x_over_x2(np.array(beta))))
        log_phi[small] = -s_c1
        a[small] = s_c1
        b[small] = s_c2
    rest = ~small
    tr = t[rest]
    if beta < _SMALL_BETA:
        w = np.exp(tr)[:, None] * np.exp(beta * _V_NODES)[None, :]
        we = w * np.exp(-w)
        phi = np.exp(-w) @ _V_WEIGHTS
        a[rest] = we @ _V_WEIGHTS
        b[rest] = we @ (_V_WEIGHTS * _V_NODES)
    else:
        s = np.exp(tr)
        with np.errstate(over="ignore"):
            s_top = np.exp(tr + beta)
            s_gap = np.exp(tr + log_expm1(np.array(beta)))  # s (e^beta - 1)
        phi = (_exp1_of_log(tr) - _exp1_of_log(tr + beta)) / beta
        a[rest] = -np.exp(-s) * np.expm1(-s_gap) / beta
        b[rest] = (phi - np.exp(-s_top)) / beta
    log_phi[rest] = np.log(phi)
    return log_phi, a, b


_POOL_CHUNK_ELEMENTS = 4_000_000
_BAND_BELOW, _BAND_ABOVE = 5.0, 37.0  # phi's terms are exactly 0 / 1 to double precision outside


def soft_best_of_n_on_pool(
    sorted_scores: FloatArray, beta: float, n: int, derivative: bool = False, engine: Engine = "auto"
) -> tuple[FloatArray, FloatArray | None]:
    """Soft Best-of-n run on finite pools (draws with replacement), exactly up to quadrature.

    For a pool with scores ``s_1..s_m`` (``(R, m)``, rows ascending) and ``z_i = beta (s_i - s_max)``:

    ``P_i = (n/m) int exp(t + z_i - e^(t + z_i)) phi(t)^(n-1) dt``,
    ``phi(t) = (1/m) sum_j exp(-e^(t + z_j))``

    (``1/x = int_0^inf e^(-sx) ds`` with ``t = log s``), integrated with 8-point Gauss-Legendre on
    the unit cells where some item's kernel lives. With ``derivative``, also ``dP_i/dbeta``.
    ``engine`` as in :func:`._subsets.soft_best_of_n_subsets`: with Numba (``"auto"``) the
    compiled kernel integrates on its own nodes, carrying only the items in transition.
    """
    rows, m = sorted_scores.shape
    check_engine(engine)  # before any shortcut
    if n == 1 or beta == 0.0:
        uniform = np.full((1, m), 1.0 / m)
        return uniform, (slopes_at_zero(sorted_scores, n, replacement=True) if derivative else None)
    z, direction = softmax_exponents(sorted_scores, beta)  # z_i = beta (s_i - s_max) <= 0
    kernel = choose_kernel(engine, rows * m)
    if kernel is not None:
        values, slopes = run_kernel(kernel, z, direction, n, derivative, replacement=True)
        return values, (slopes if derivative else None)
    # Items in ascending order of c_i = beta (s_max - s_i) >= 0 (highest score first).
    centres = np.ascontiguousarray(-z[:, ::-1])
    gap = np.ascontiguousarray(direction[:, ::-1])  # dz_i / dbeta
    probs = np.zeros(rows * m)
    dprobs = np.zeros(rows * m) if derivative else None
    x, w = gauss_legendre(8)
    starts, valid = union_of_cells(centres)
    # Row offsets make one globally sorted array, so one searchsorted finds every node's band.
    spacing = float(centres.max()) + 100.0
    offsets = np.arange(rows) * spacing
    flat_centres = (centres + offsets[:, None]).ravel()
    nodes = starts.shape[1] * 8
    for lo_row in range(0, rows, max(1, _POOL_CHUNK_ELEMENTS // (nodes * min(m, 64)))):
        hi_row = min(rows, lo_row + max(1, _POOL_CHUNK_ELEMENTS // (nodes * min(m, 64))))
        r = np.arange(lo_row, hi_row)
        t = (starts[r, :, None] + x).reshape(r.size, -1)  # (r, K8)
        with np.errstate(divide="ignore"):  # padded cells get weight 0, log weight -inf
            log_w = np.log((valid[r, :, None] * w).reshape(r.size, -1))
        # Band of items whose terms are neither ~1 nor ~0 at t: c_j in [t - 5, t + 37]. Items with
        # c_j > t + 37 contribute exp(-e^(t - c_j)) = 1 - O(e^-37) to phi; below t - 5, exp(-e^5) ~ 0.
        shifted = t + offsets[r, None]
        band_lo = np.searchsorted(flat_centres, shifted - _BAND_BELOW, side="left") - (r * m)[:, None]
        band_hi = np.searchsorted(flat_centres, shifted + _BAND_ABOVE, side="right") - (r * m)[:, None]
        width = max(1, int((band_hi - band_lo).max()))
        idx = band_lo[:, :, None] + np.arange(width)
        inside = idx < band_hi[:, :, None]
        idx = np.minimum(idx, m - 1)
        c = centres[r[:, None, None], idx]
        with np.errstate(over="ignore"):
            e = np.exp(t[:, :, None] - c)  # e^(t - c_j), (r, K8, width)
        ex = np.where(inside, np.exp(-e), 0.0)
        phi = (m - band_hi + ex.sum(axis=2)) / m  # (r, K8)
        ell = (log_w + (n - 1) * np.log(phi))[:, :, None] + t[:, :, None] - c - e
        kern = np.where(inside, np.exp(ell), 0.0)
        flat = (r[:, None, None] * m + idx).ravel()
        probs += n / m * np.bincount(flat, weights=kern.ravel(), minlength=rows * m)
        if dprobs is not None:
            d = gap[r[:, None, None], idx]
            e_ex = np.where(inside, np.exp(t[:, :, None] - c - e), 0.0)  # e * exp(-e)
            dphi_over_phi = -(e_ex * d).sum(axis=2) / m / phi
            # kern * (1 - e) without inf * 0: kern carries the factor exp(-e).
            kern_one_minus_e = kern - np.where(inside, np.exp(ell + t[:, :, None] - c), 0.0)
            contrib = kern_one_minus_e * d + kern * (n - 1) * dphi_over_phi[:, :, None]
            dprobs += n / m * np.bincount(flat, weights=contrib.ravel(), minlength=rows * m)
    out = probs.reshape(rows, m)[:, ::-1]
    dout = None if dprobs is None else dprobs.reshape(rows, m)[:, ::-1]
    return np.ascontiguousarray(out), (None if dout is None else np.ascontiguousarray(dout))


@lru_cache(maxsize=512)
def _subset_weights_on_quantiles(n: int, beta: float, m: int) -> tuple[FloatArray, FloatArray]:
    """Soft Best-of-n on quantiles over the n-subsets of a pool of m, and the beta-derivative: rank
    based, so the same for every prompt; cached, as tuning asks for both at the same beta."""
    if np.isinf(beta):
        values = BestOfN(n).deployment_probabilities(m)
        return values, np.zeros_like(values)
    positions = np.arange(1, m + 1)[None, :] / (m + 1)
    values, slopes = soft_best_of_n_subsets(positions, beta, n, derivative=True)
    assert slopes is not None
    values.setflags(write=False)
    slopes.setflags(write=False)
    return values, slopes


@lru_cache(maxsize=1024)
def _cached_panels(
    n: int, beta: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, float, float]:
    """The CDF panels depend on (n, beta) only: shared by every object (and every table) that asks."""
    return SoftBestOfN(n, beta, "quantile")._compute_panels()


@dataclass(frozen=True, repr=False)
class SoftBestOfN(Mechanism):
    r"""Soft Best-of-n (SBoN) with inverse temperature ``beta``.

    Draw ``n`` candidates and return candidate ``i`` with probability
    ``exp(beta s_i) / sum_j exp(beta s_j)``. ``beta = 0`` is the reference policy and
    ``beta -> inf`` is Best-of-n; the tuned parameter is ``beta`` at fixed ``n``.

    ``on`` records which scores the softmax sees, so that curves and HedgeTune model the same
    rule that :meth:`select` applies:

    * ``"raw"`` (default): the proxy rewards themselves, as at inference time, where one prompt's
      candidates carry no quantiles. The induced density then depends on the distribution of the
      raw scores, so the analytic methods (``pdf``, ``cdf``, ``kl``, ...) need ``on="quantile"``.
    * ``"quantile"``: the proxy quantiles ``u = F(r_p)`` under the reference, which makes the rule
      scale-free and gives the closed integral below; :meth:`select` then expects quantiles.

    On quantiles (with ``phi(s) = int_0^1 exp(-s e^(beta v)) dv = (E1(s) - E1(s e^beta)) / beta``):

    ``q(u) = n int_0^inf e^(beta u) exp(-s e^(beta u)) phi(s)^(n-1) ds``,

    integrated with Gauss-Legendre nodes in ``log s``; the CDF, KL and mean integrate ``q`` over
    graded panels in ``u`` (computed once per object and cached).
    """

    n: int
    beta: float
    on: Literal["raw", "quantile"] = "raw"

    name: ClassVar[str] = "sbon"
    display_name: ClassVar[str] = "Soft Best-of-n"
    parameter: ClassVar[str] = "beta"
    reference_theta: ClassVar[float] = 0.0
    needs_quadrature: ClassVar[bool] = True

    def __post_init__(self) -> None:
        n = check_parameter(self.n, "n", low=1.0)
        if n != np.floor(n):
            raise ValueError(f"n must be a whole number of candidates, got {n:g}")
        object.__setattr__(self, "n", int(n))
        object.__setattr__(self, "beta", check_parameter(self.beta, "beta", low=0.0, allow_inf=True))
        if self.on not in ("raw", "quantile"):
            raise ValueError(f"on must be 'raw' or 'quantile', got {self.on!r}")

    @property
    def theta(self) -> float:
        return self.beta

    def with_theta(self, theta: float) -> SoftBestOfN:
        return SoftBestOfN(self.n, theta, self.on)

    def _repr_fields(self) -> dict[str, object]:
        return {"n": self.n, "beta": self.beta, "on": self.on}

    @classmethod
    def template(cls, n: int = 4, on: Literal["raw", "quantile"] = "raw") -> SoftBestOfN:  # type: ignore[override]
        """Soft Best-of-n at beta = 0 with ``n`` candidates, softmax on ``on`` scores."""
        return cls(n, 0.0, on)

    @property
    def options(self) -> dict[str, object]:
        return {"n": self.n, "on": self.on}

    # ------------------------------------------------------------------ on calibration pools
    def default_top(self, pools: Pools) -> float:
        """beta = 500 per unit of the scores' spread on raw scores, 500 on quantiles."""
        if self.on == "raw":
            # The mean over prompts (not over size groups: the answer must not depend on how the
            # prompts are grouped, e.g. in chunks read from disk).
            spread = float(sum(g.proxy.std(axis=1).sum() for g in pools.groups)) / pools.n_prompts or 1.0
            return 500.0 / spread
        return 500.0

    def deployment_limit(self, m: int) -> float:
        if self.n > m:
            raise ValueError(
                f"Soft Best-of-n with n = {self.n} cannot be estimated without replacement from pools of "
                f"{m}; use n <= {m} or estimator='plugin'"
            )
        return float("inf")

    def budget_theta(self, max_samples: float) -> float:
        if self.n > max_samples:
            raise ValueError(f"SoftBestOfN draws n = {self.n} responses, above max_samples = {max_samples}")
        return float("inf")

    def deployment_probabilities(self, m: int, derivative: bool = False, start: int = 0) -> FloatArray:
        """On quantiles: the U-statistic over n-subsets of the softmax on the positions' expected
        population quantiles ``i / (m + 1)``."""
        if self.on == "raw":
            raise ValueError("Soft Best-of-n on raw scores depends on the scores: use raw_deployment_probabilities")
        values, slopes = _subset_weights_on_quantiles(self.n, self.beta, m)
        return (slopes if derivative else values)[:, start:]

    def raw_deployment_probabilities(
        self, sorted_scores: FloatArray, derivative: bool = False
    ) -> tuple[FloatArray, FloatArray | None]:
        if np.isinf(self.beta):
            hard = self._limit.pool_probabilities(sorted_scores)
            return hard, (np.zeros_like(sorted_scores) if derivative else None)
        return soft_best_of_n_subsets(sorted_scores, self.beta, self.n, derivative)

    # ------------------------------------------------------------------ the analytic density
    def _require_quantiles(self) -> None:
        if self.on != "quantile":
            raise ValueError(
                "the density of SoftBestOfN on raw scores depends on how the raw proxy rewards are "
                "distributed; the analytic methods describe the softmax on quantiles: use "
                f"SoftBestOfN({self.n}, {self.beta}, on='quantile') (curves and tuning on a table "
                "handle on='raw' from the data)"
            )

    @property
    def _trivial(self) -> bool:
        """The reference policy: one candidate, or a flat softmax."""
        return self.n == 1 or self.beta == 0.0

    @cached_property
    def _limit(self) -> BestOfN:
        return BestOfN(self.n)

    def _logpdf_and_score(self, u: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``log q(u)`` and ``d/dbeta log q(u)`` from one pass of the ``y`` quadrature."""
        flat = u.ravel()
        logq = np.empty_like(flat)
        score = np.empty_like(flat)
        for start in range(0, flat.size, _CHUNK):  # bounds memory; each chunk is vectorised
            uc = flat[start : start + _CHUNK, None]
            y_nodes, log_kernel = _y_quadrature(self.n)
            t = y_nodes[None, :] - self.beta * uc
            log_phi, a, b = _phi_terms(t.ravel(), self.beta)
            log_phi, a, b = (x.reshape(t.shape) for x in (log_phi, a, b))
            ell = log_kernel[None, :] + (self.n - 1) * log_phi
            top = ell.max(axis=1, keepdims=True)
            weights = np.exp(ell - top)
            total = weights.sum(axis=1)
            logq[start : start + _CHUNK] = np.log(self.n) + top[:, 0] + np.log(total)
            dlogphi = (uc * a - b) * np.exp(-log_phi)
            score[start : start + _CHUNK] = (self.n - 1) * (weights * dlogphi).sum(axis=1) / total
        return logq.reshape(u.shape), score.reshape(u.shape)

    @property
    def _panels(self) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, float, float]:
        return _cached_panels(self.n, self.beta)

    def _compute_panels(self) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, float, float]:
        """Per-panel antiderivatives of ``q`` and ``dq/dbeta``, their sums, the KL and the mean.

        On each panel, ``q`` (and ``q * score``) is interpolated by the degree-7 Legendre
        polynomial through its 8 Gauss nodes, whose integral over the whole panel is the Gauss rule
        itself; ``Q(u)`` is the sum of the panels below ``u`` plus the antiderivative of the
        interpolant on ``u``'s panel. Computed once per object.
        """
        logq, score = self._logpdf_and_score(_U_NODES)
        q = np.exp(logq)
        half_width = np.diff(_U_BREAKS) / 2.0
        antiderivatives = []
        cumulative = []
        for values in (q, q * score):
            coefficients = values.reshape(-1, _U_ORDER) @ _LEGENDRE_FROM_NODES.T
            anti = legendre.legint(coefficients.T, lbnd=-1) * half_width  # (order + 1) x panels
            antiderivatives.append(anti)
            panel_totals = legendre.legval(1.0, anti)
            cumulative.append(np.concatenate([[0.0], np.cumsum(panel_totals)]))
        kl = float(np.sum(_U_WEIGHTS * q * logq))
        mean = float(np.sum(_U_WEIGHTS * q * _U_NODES))
        return antiderivatives[0], antiderivatives[1], cumulative[0], cumulative[1], kl, mean

    def _partial_integrals(self, u: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``Q(u)`` and ``dQ/dbeta(u)`` from the cached panel interpolants."""
        anti_q, anti_dq, cum_q, cum_dq, _, _ = self._panels
        k = np.clip(np.searchsorted(_U_BREAKS, u, side="right") - 1, 0, _U_BREAKS.size - 2)
        xi = 2.0 * (u - _U_BREAKS[k]) / (_U_BREAKS[k + 1] - _U_BREAKS[k]) - 1.0
        return (
            cum_q[k] + legendre.legval(xi, anti_q[:, k], tensor=False),
            cum_dq[k] + legendre.legval(xi, anti_dq[:, k], tensor=False),
        )

    def _logpdf(self, u: FloatArray) -> FloatArray:
        self._require_quantiles()
        if self._trivial:
            return np.zeros_like(u)
        if np.isinf(self.beta):
            return self._limit._logpdf(u)
        return self._logpdf_and_score(u)[0]

    def _score(self, u: FloatArray) -> FloatArray:
        self._require_quantiles()
        if self.n == 1 or np.isinf(self.beta):
            return np.zeros_like(u)
        if self.beta == 0.0:
            return (self.n - 1) / self.n * (u - 0.5)
        return self._logpdf_and_score(u)[1]

    def _cdf(self, u: FloatArray) -> FloatArray:
        self._require_quantiles()
        if self._trivial:
            return u.copy()
        if np.isinf(self.beta):
            return self._limit._cdf(u)
        return self._partial_integrals(u)[0]

    def _cdf_dtheta(self, u: FloatArray) -> FloatArray:
        self._require_quantiles()
        if self.n == 1 or np.isinf(self.beta):
            return np.zeros_like(u)
        if self.beta == 0.0:
            return (self.n - 1) / self.n * (u * u - u) / 2.0
        return self._partial_integrals(u)[1]

    def kl(self) -> float:
        self._require_quantiles()
        if self._trivial:
            return 0.0
        if np.isinf(self.beta):
            return self._limit.kl()
        if self.beta < 1e-5:  # KL = beta^2 Var(psi_0)/2 + O(beta^3), psi_0 = (n-1)/n (u - 1/2)
            return self.beta**2 * (self.n - 1) ** 2 / (24.0 * self.n**2)
        return max(self._panels[4], 0.0)

    def mean(self) -> float:
        self._require_quantiles()
        if self._trivial:
            return 0.5
        if np.isinf(self.beta):
            return self._limit.mean()
        return self._panels[5]

    def expected_samples(self) -> float:
        return float(self.n)

    # ------------------------------------------------------------------ on a finite pool
    @property
    def uses_raw_scores(self) -> bool:  # type: ignore[override]
        return self.on == "raw"

    def _pool_scores(self, sorted_scores: FloatArray) -> FloatArray:
        if self.on == "raw":
            return sorted_scores
        m = sorted_scores.shape[1]
        return (np.arange(1, m + 1) / m)[None, :]  # the pool's own quantiles i/m

    def pool_probabilities(self, sorted_scores: FloatArray) -> FloatArray:
        if np.isinf(self.beta):
            return self._limit.pool_probabilities(sorted_scores)
        return soft_best_of_n_on_pool(self._pool_scores(sorted_scores), self.beta, self.n)[0]

    def pool_probabilities_dtheta(self, sorted_scores: FloatArray) -> FloatArray:
        if np.isinf(self.beta):
            return np.zeros((1, sorted_scores.shape[1]))
        derivative = soft_best_of_n_on_pool(
            self._pool_scores(sorted_scores), self.beta, self.n, derivative=True
        )[1]
        assert derivative is not None
        return derivative

    # ------------------------------------------------------------------ sampling and selection
    def _sample_quantiles(self, size: int | tuple[int, ...], rng: np.random.Generator) -> FloatArray:
        self._require_quantiles()
        shape = (size,) if isinstance(size, int | np.integer) else tuple(size)
        total = int(np.prod(shape))
        out = np.empty(total)
        rows = max(1, 2**20 // self.n)
        for start in range(0, total, rows):  # memory-bounded chunks of whole draws
            count = min(rows, total - start)
            u = rng.random((count, self.n))
            out[start : start + count] = u[np.arange(count), self._choose(u, rng)]
        return out.reshape(shape)

    def _draw_n(self, size: int | tuple[int, ...], rng: np.random.Generator) -> IntArray:
        return np.full(size, self.n, dtype=np.intp)

    def _choose(self, scores: FloatArray, rng: np.random.Generator) -> IntArray:
        if np.isinf(self.beta):
            return argmax_random_ties(scores, rng)
        return sample_softmax(scores, self.beta, rng)

    def _select(self, scores: FloatArray, rng: np.random.Generator) -> IntArray:
        if self.on == "quantile":
            present = scores[~np.isnan(scores)]
            if ((present < 0) | (present > 1)).any():
                raise ValueError(
                    "SoftBestOfN(on='quantile').select expects proxy quantiles in [0, 1]; "
                    "map raw scores through the reference CDF first, or use on='raw'"
                )
        return self._choose(scores, rng)
