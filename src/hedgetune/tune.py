"""HedgeTune: the parameter where the true reward peaks, with its uncertainty (docs/SPEC.md §4).

The true reward of the plug-in curve is ``f(theta) = mean_p sum_i P_i(theta) g_pi``. Its exact
derivative ``rho(theta) = mean_p sum_i dP_i/dtheta g_pi`` is the residual whose root is the
maximiser; the root is found by Brent's method inside a bracket located on a grid. A bootstrap over
prompts gives the intervals (vectorised: every replicate's curve and residual come from one pass
over the pools) and the conservative rule, which moves off the reference only as far as a lower
confidence bound of the gain stays positive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize

from ._jsonable import jsonable
from .arrays import FloatArray, IntArray
from .curves import (
    Estimator,
    PoolSums,
    as_pools,
    bootstrap_weights,
    pool_sums,
    prepare,
    resolve_estimator,
    shared_values,
)
from .diagnose import describe, regime_with_noise, standard_deviation
from .extrapolate import Extrapolation, extrapolate
from .mechanisms import BestOfN, Mechanism, lookup, make
from .mechanisms.registry import option_names
from .pools import Pools, select_prompts
from .streaming import StreamedPools
from .table import RewardTable, TableError

Residual = Literal["exact", "score"]
_GRID_POINTS = 96


@dataclass(frozen=True)
class TuneResult:
    """HedgeTune's answer for one mechanism on one calibration table.

    ``theta`` is the point estimate (the maximiser of the curve of ``estimator``: by default what
    a deployment with fresh samples gets), ``theta_ci`` its bootstrap interval; ``true_reward``
    the curve at ``theta`` and ``true_reward_ci`` its bootstrap interval. ``conservative_theta``
    maximises a lower confidence bound of the gain over the reference (it stays at the reference
    when no gain is sure). ``unhedged_*`` is the top of the searched range: what optimising the
    proxy as hard as allowed gives. ``supported_max`` is the largest parameter the calibration
    pools can stand for (the pool size for Best-of-n); ``regime_note`` says in words when the pool
    size, not the curve, stopped the search, or when a fall after the peak is within noise.

    ``recommended_theta`` is the safe default: the reference unless the conservative rule finds a
    sure gain, and then the point estimate (``recommended_rule`` says which and why).

    ``extrapolation`` is set when the curve still rises at ``supported_max``: Gao et al.'s model
    fitted to the supported curve, with its predicted peak past the data, or why it was not
    offered (:class:`hedgetune.extrapolate.Extrapolation`; a model, never a measurement).
    """

    mechanism: str
    parameter: str
    label: str
    theta: float
    theta_ci: tuple[float, float]
    true_reward: float
    true_reward_ci: tuple[float, float]
    kl: float
    kl_pool: float
    expected_samples: float
    regime: str
    reference_theta: float
    reference_true_reward: float
    unhedged_theta: float
    unhedged_true_reward: float
    conservative_theta: float
    conservative_true_reward: float
    search_range: tuple[float, float]
    residual: str
    iterations: int
    n_prompts: int
    bootstrap: int
    confidence: float
    proxy: str
    estimator: str = "unbiased"
    supported_max: float = float("inf")
    regime_note: str = ""
    recommended_theta: float = float("nan")
    recommended_true_reward: float = float("nan")
    recommended_rule: str = ""
    #: Why ``theta_ci`` reads as it does: widened to contain the point estimate, or
    #: "uninformative: more prompts needed" when it spans the whole searched range ("" otherwise).
    theta_ci_note: str = ""
    #: The gain of ``recommended_theta`` over the reference and its bootstrap interval (0 at the
    #: reference itself).
    gain: float = 0.0
    gain_ci: tuple[float, float] = (0.0, 0.0)
    #: When the curve still rises where the pools stop: how many samples per prompt would resolve
    #: it, with its basis ("" otherwise).
    next_step: str = ""
    template: Mechanism = field(repr=False, compare=False, default_factory=lambda: BestOfN(1))
    extrapolation: Extrapolation | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON values, one key per field (``None`` for NaN or infinity); the mechanism as
        its name and options."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("template", "extrapolation")}
        out["options"] = self.template.options
        out["extrapolation"] = None if self.extrapolation is None else self.extrapolation.to_dict()
        return jsonable(out)

    def sentence(self) -> str:
        """The hacking verdict in words (:func:`hedgetune.diagnose.describe`): the one sentence
        that ``tune``, ``curve``, the demo and the report print."""
        at_limit = self.unhedged_theta >= self.supported_max * (1 - 1e-9)
        return describe(self.template.short_label(), self.parameter, self.regime, self.theta, self.true_reward,
                        self.reference_true_reward, self.unhedged_theta, self.unhedged_true_reward, at_limit)

    def mechanism_at(self, theta: float | None = None) -> Mechanism:
        """The tuned mechanism, ready for :meth:`Mechanism.select`."""
        return self.template.with_theta(self.theta if theta is None else theta)


# ---------------------------------------------------------------------------------------- range
def search_range(
    template: Mechanism,
    pools: Pools,
    *,
    max_theta: float | None = None,
    max_n: float | None = None,
    max_samples: float | None = None,
    max_kl: float | None = None,
) -> tuple[float, float]:
    """The interval searched: from the reference to the tightest of the budgets.

    Without a budget the top is :meth:`Mechanism.default_top`, well past pool exhaustion (BoN/BoP:
    4 m, at least 64; SBoN/tilt: beta = 500 per unit of the scores' spread), of the whole pools
    when ``pools`` are a subset of them (:func:`scale_pools`).
    """
    for name, value in (
        ("max_theta", max_theta),
        ("max_n", max_n),
        ("max_samples", max_samples),
        ("max_kl", max_kl),
    ):
        if value is not None and not (isinstance(value, int | float | np.number) and np.isfinite(value)):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    lo = template.reference_theta
    hi = float(max_theta) if max_theta is not None else template.default_top(scale_pools(pools))
    if max_n is not None:
        if not template.integer_parameter:
            raise ValueError(
                f"max_n bounds a whole-number parameter (Best-of-n's n); {template.display_name} "
                "takes max_samples"
            )
        if max_n < 1:
            raise ValueError(f"max_n must be >= 1 (the reference draws one response), got {max_n}")
        hi = min(hi, float(np.floor(max_n)))  # n <= 2.5 is n <= 2: the search range says 2
    if max_samples is not None:
        if max_samples < 1:
            raise ValueError(
                f"max_samples must be >= 1 (the reference draws one response), got {max_samples}"
            )
        hi = min(hi, template.budget_theta(float(max_samples)))
    if max_kl is not None:
        if max_kl < 0:
            raise ValueError(f"max_kl must be >= 0 (the reference has KL 0), got {max_kl}")
        if template.uses_raw_scores:
            raise ValueError(
                f"max_kl needs the analytic KL, which {template.short_label()} on raw scores lacks; "
                "use on='quantile'"
            )
        if template.with_theta(hi).kl() > max_kl:
            hi = float(optimize.brentq(lambda th: template.with_theta(th).kl() - max_kl, lo, hi, xtol=1e-10))
    if max_theta is not None and max_theta <= lo:
        raise ValueError(
            f"max_theta must exceed the reference {template.parameter} = {lo:g}, got {max_theta}"
        )
    return lo, hi


def scale_pools(pools: Pools) -> Pools:
    """The pools whose spread sets the searched range and grid: the whole pools that a subset of
    prompts was selected from (:func:`hedgetune.pools.select_prompts`; their proxies only, no
    labels), so that :func:`evaluate`'s splits search one grid and share its values."""
    return pools.shared.pools if pools.shared is not None else pools


def _grid(lo: float, hi: float, template: Mechanism, points: int = _GRID_POINTS, scale: float = 0.0) -> FloatArray:
    """Geometric grid from the reference to ``hi``. It starts at 1e-4 of the range, or of ``scale``
    (the default top) when that is smaller, so that a huge budget does not skip the parameters
    that matter; a range of more than 4 decades gets proportionally more points (at most 4x)."""
    if hi <= lo:
        return np.array([lo])
    if template.integer_parameter:
        inner = np.geomspace(max(lo, 1.0), hi, points)
        integers = np.arange(max(lo, 1.0), min(hi, 64.0) + 1)
        return np.unique(np.concatenate([integers, inner]))
    if lo == 0:  # 1e-4 of the range (or scale), at least 1e-6 -- but never past 1e-4 of a tiny range
        first = min(max(min(hi, scale or np.inf) * 1e-4, 1e-6), hi * 1e-4)
    else:
        first = lo
    decades = np.log10(hi / first)
    count = int(np.clip(points * decades / 4, points, 4 * points))
    return np.unique(np.concatenate([[lo], np.geomspace(first, hi, count - 1)]))


# -------------------------------------------------------------------------------------- residual
def score_residual(pools: Pools, template: Mechanism, theta: float) -> float:
    """The paper's residual ``E_theta[R(U) psi(U, theta)]``, self-normalised on each pool's
    mid-rank quantiles ``u_j = (j - 1/2)/m``: ``sum_j q(u_j) g_j psi(u_j) / sum_j q(u_j)``."""
    if template.uses_raw_scores:
        raise ValueError(
            "the score-function residual needs the analytic density: use on='quantile' or residual='exact'"
        )
    mech = template.with_theta(theta)
    total = 0.0
    for group in pools.groups:
        u = (np.arange(1, group.m + 1) - 0.5) / group.m
        weights = mech.pdf(u)
        weights = weights / weights.sum()
        total += float((weights * mech.score(u)) @ group.true_sum)
    return total / pools.n_prompts


def exact_residual(pools: Pools, template: Mechanism, theta: float, estimator: Estimator = "plugin") -> float:
    """The exact derivative in theta of the estimator's curve at ``theta``."""
    sums = pool_sums(pools, template, np.array([theta]), estimator, kl_pool=False, derivative=True)
    assert sums.dtrue is not None
    return float(sums.dtrue[0]) / pools.n_prompts


# ----------------------------------------------------------------------------------------- tune
def tune(
    table: RewardTable | Pools,
    mechanism: str | Mechanism,
    *,
    proxy: str | None = None,
    estimator: Estimator = "unbiased",
    residual: Residual = "exact",
    max_theta: float | None = None,
    max_n: float | None = None,
    max_samples: float | None = None,
    max_kl: float | None = None,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    conservative_level: float = 0.025,
    seed: int | None = 0,
    **options: Any,
) -> TuneResult:
    """Find the parameter where ``mechanism``'s true reward peaks on the calibration table.

    Parameters
    ----------
    table : calibration table (or its pools).
    mechanism : ``"bon"``, ``"bop"``, ``"sbon"``, ``"tilted"`` or a :class:`Mechanism` instance.
    options : the mechanism's options, the keyword arguments of its ``template`` (``n`` and
        ``on`` for ``"sbon"``: the number of candidates and the scores the softmax sees; tune on the
        variant that selection will use).
    estimator : ``"unbiased"`` (default): maximise what a deployment drawing fresh candidates
        gets, estimated without replacement (see :func:`hedgetune.curve`); the search stops at the
        largest parameter the pools support (``supported_max``). ``"plugin"``: maximise the
        with-replacement plug-in curve of the pools (any parameter; on small pools its peak lies
        far beyond a deployment's). The tilted frontier always uses the plug-in.
    residual : ``"exact"`` (the derivative of the estimator's curve; its root is the curve's exact
        maximiser) or ``"score"`` (the paper's self-normalised score-function form, an
        approximation of the plug-in curve's derivative; plug-in only).
    max_theta, max_n, max_samples, max_kl : budgets; the search stops at the tightest.
    bootstrap : replicates over prompts for the intervals and the conservative rule.
    confidence : coverage of the intervals.
    conservative_level : one-sided level of the lower bound that the conservative rule maximises.
    seed : seed of the bootstrap.

    Use ``theta`` when the calibration set is large and representative; use
    ``conservative_theta`` when it is small or the proxy may not help: it leaves the policy at the
    reference unless a gain is sure at the chosen level.

    The steps: the inputs normalised once (:func:`hedgetune.curves.prepare`, shared with
    :func:`~hedgetune.curve` and :func:`evaluate`); the searched range; one pass of the curve (and
    its bootstrap replicates) over a grid; the maximiser refined by the mechanism's search
    strategy (:func:`search_for`); the intervals, the conservative rule, the verdict.
    """
    inputs = prepare(table, mechanism, proxy=proxy, estimator=estimator, **options)
    template, pools, estimator = inputs.template, inputs.pools, inputs.estimator
    _check_tune_arguments(pools, estimator, residual, confidence, conservative_level, bootstrap)
    lo, hi = search_range(template, pools, max_theta=max_theta, max_n=max_n, max_samples=max_samples, max_kl=max_kl)
    top = template.supported_max(pools, estimator)
    pool_limited = hi > top
    hi = min(hi, top)
    search = search_for(template, estimator)
    grid = search.grid(lo, hi, template, pools)
    weights = bootstrap_weights(pools.n_prompts, bootstrap, seed) if bootstrap > 0 else None
    curve = _GridCurve(pools, template, estimator, residual, grid, weights, search.grid_slopes)
    theta, iterations = search.refine(curve, lo, hi)
    return _result(curve, search, theta, iterations, lo, hi, top, pool_limited, confidence, conservative_level)


def _check_tune_arguments(
    pools: Pools, estimator: str, residual: str, confidence: float, conservative_level: float, bootstrap: int
) -> None:
    if pools.n_prompts < 2:
        raise TableError(
            f"tuning needs at least two prompts (the bootstrap resamples prompts), got {pools.n_prompts}"
        )
    if residual not in ("exact", "score"):
        raise ValueError(f"residual must be 'exact' or 'score', got {residual!r}")
    if residual == "score" and estimator != "plugin":
        raise ValueError(
            "the score residual approximates the plug-in curve's derivative: use estimator='plugin'"
        )
    if not 0 < confidence < 1 or not 0 < conservative_level < 0.5:
        raise ValueError("confidence must lie in (0, 1) and conservative_level in (0, 0.5)")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")


class _GridCurve:
    """The curve on the search grid (values, bootstrap replicates, residuals where computed) and
    single points off the grid, each computed once."""

    def __init__(self, pools: Pools, template: Mechanism, estimator: Estimator, residual: str, grid: FloatArray,
                 weights: FloatArray | None, slopes: bool) -> None:
        self.pools, self.template, self.estimator, self.residual = pools, template, estimator, residual
        self.grid, self.weights, self.total = grid, weights, pools.n_prompts
        self.sums = pool_sums(pools, template, grid, estimator, weights=weights, kl_pool=False, derivative=slopes)
        self.values = self.sums.true / self.total
        # Ties within rounding (a flat curve) go to the smallest parameter: never move off the
        # reference, or further from it, for no gain.
        self.flat_tol = 1e-12 * pools.reward_scale  # rounding of sums over prompts, in the rewards' units
        self.best = int(np.flatnonzero(self.values >= self.values.max() - self.flat_tol)[0])
        self.passes: dict[float, PoolSums] = {}

    def residual_at(self, theta: float) -> float:
        if self.residual == "exact":
            return exact_residual(self.pools, self.template, theta, self.estimator)
        return score_residual(self.pools, self.template, theta)

    def values_at(self, thetas: FloatArray) -> FloatArray:
        return pool_sums(self.pools, self.template, thetas, self.estimator, kl_pool=False).true / self.total

    def at(self, theta: float) -> tuple[float, FloatArray | None, PoolSums | None]:
        """The curve at ``theta``, its bootstrap replicates, and the pass that computed it (None
        for a grid point, read off the grid's pass)."""
        weights = self.weights
        hit = np.flatnonzero(self.grid == theta)
        if hit.size:
            k = int(hit[0])
            reps = None if self.sums.replicates is None or weights is None else self.sums.replicates[:, k] / weights.sum(axis=1)
            return float(self.values[k]), reps, None
        if theta not in self.passes:
            self.passes[theta] = pool_sums(self.pools, self.template, np.array([theta]), self.estimator, weights=weights)
        one = self.passes[theta]
        reps = None if one.replicates is None or weights is None else one.replicates[:, 0] / weights.sum(axis=1)
        return float(one.true[0]) / self.total, reps, one

    def kl_pool_at(self, theta: float) -> float:
        _, _, one = self.at(theta)
        if one is None:  # a grid point: its pool KL was not computed with the grid
            one = self.passes[theta] = pool_sums(self.pools, self.template, np.array([theta]), self.estimator)
        return float(one.kl_pool[0]) / self.total


# ------------------------------------------------------------------------------ search strategies
class _Search:
    """How a mechanism's maximiser is found on its grid: chosen once per mechanism and estimator
    (:func:`search_for`). The base strategy is Brent's method on the exact residual."""

    #: Whether the grid's pass computes residuals (the derivative costs about a value's time).
    grid_slopes = True

    def __init__(self, estimator: Estimator = "unbiased") -> None:
        self.estimator = estimator

    def grid(self, lo: float, hi: float, template: Mechanism, pools: Pools) -> FloatArray:
        # A quadrature per parameter (per prompt on raw scores): a coarser grid, still refined by Brent.
        expensive = template.uses_raw_scores or (template.needs_quadrature and self.estimator == "unbiased")
        points = _GRID_POINTS // 3 if expensive else _GRID_POINTS
        return _grid(lo, hi, template, points, scale=template.default_top(scale_pools(pools)))

    def refine(self, c: _GridCurve, lo: float, hi: float) -> tuple[float, int]:
        grid, best, values = c.grid, c.best, c.values
        known = c.residual == "exact" and c.sums.dtrue is not None
        rho = c.sums.dtrue / c.total if c.sums.dtrue is not None else np.full(grid.size, np.nan)
        theta, iterations = float(grid[best]), 0
        if 0 < best < grid.size - 1:
            theta, iterations = _refine(c, rho, best, known)
        elif best == 0 and grid.size > 1:  # a peak between the reference and the first grid point
            if not known:
                rho[:2] = [c.residual_at(float(th)) for th in grid[:2]]
            if rho[0] > 0 > rho[1]:
                theta, iterations = _refine(c, rho[[0, 0, 1]], 1, True, np.r_[grid[0], grid[:2]])
        # Keep the refinement only for a real gain over the grid's best (never move for rounding).
        if theta != grid[best] and c.at(theta)[0] <= values[best] + c.flat_tol:
            theta = float(grid[best])
        if c.template.integer_parameter:
            candidates = sorted(x for x in {np.floor(theta), np.ceil(theta)} if lo <= x <= hi)
            theta = max(candidates, key=lambda x: c.at(x)[0]) if candidates else float(np.floor(hi))
        return theta, iterations

    def replicate_maximisers(self, c: _GridCurve, curves: FloatArray) -> FloatArray:
        return _replicate_maximisers(c.grid, curves, c.sums.dreplicates)


class _SearchSamplerQuadrature(_Search):
    """Soft Best-of-n on raw scores: a quadrature per prompt for each parameter, so the grid takes
    values only and residuals are computed where Brent's method needs them."""

    grid_slopes = False


class _SearchOnGrid(_Search):
    """A mechanism without a derivative (an argmax jumping with the parameter): the best grid
    point, refined on a finer grid around it."""

    grid_slopes = False

    def grid(self, lo: float, hi: float, template: Mechanism, pools: Pools) -> FloatArray:
        points = _GRID_POINTS // 2 if template.needs_quadrature else _GRID_POINTS
        return _grid(lo, hi, template, points, scale=template.default_top(scale_pools(pools)))

    def refine(self, c: _GridCurve, lo: float, hi: float) -> tuple[float, int]:
        grid, best = c.grid, c.best
        if not 0 < best < grid.size - 1:
            return float(grid[best]), 0
        between = np.linspace(grid[best - 1], grid[best + 1], 17)[1:-1]
        values = c.values_at(between)
        finer = int(np.flatnonzero(values >= values.max() - c.flat_tol)[0])
        if values[finer] > c.values[best] + c.flat_tol:
            return float(between[finer]), 1
        return float(grid[best]), 0

    def replicate_maximisers(self, c: _GridCurve, curves: FloatArray) -> FloatArray:
        return c.grid[np.argmax(curves, axis=1)].astype(float)


class _SearchWholeNumbers(_SearchOnGrid):
    """Best-of-n without replacement: its curve lives on the whole numbers 1..m, with no
    derivative; every whole number near the grid's best is evaluated and the best taken."""

    def grid(self, lo: float, hi: float, template: Mechanism, pools: Pools) -> FloatArray:
        grid = np.unique(np.round(_grid(lo, hi, template)))
        return grid[grid <= hi]

    def refine(self, c: _GridCurve, lo: float, hi: float) -> tuple[float, int]:
        grid, best = c.grid, c.best
        if not (0 < best < grid.size - 1 and grid[best + 1] - grid[best - 1] > 2):
            return float(grid[best]), 0
        between = np.arange(grid[best - 1] + 1, grid[best + 1])
        values = c.values_at(between)
        top = int(np.flatnonzero(values >= values.max() - c.flat_tol)[0])
        if values[top] > c.values[best] + c.flat_tol:
            return float(between[top]), 1
        return float(grid[best]), 0


def search_for(template: Mechanism, estimator: Estimator) -> _Search:
    """The search strategy of ``template`` with ``estimator``, chosen once."""
    if template.integer_parameter and estimator == "unbiased":
        return _SearchWholeNumbers(estimator)
    if not template.has_derivative:
        return _SearchOnGrid(estimator)
    if template.uses_raw_scores:
        return _SearchSamplerQuadrature(estimator)
    return _Search(estimator)


# ------------------------------------------------------------------------------ the answer
def _result(c: _GridCurve, search: _Search, theta: float, iterations: int, lo: float, hi: float, top: float,
            pool_limited: bool, confidence: float, conservative_level: float) -> TuneResult:
    """Intervals, the conservative rule, the verdict and the recommendation at ``theta``."""
    template, grid, weights = c.template, c.grid, c.weights
    f_theta, rep_values, _ = c.at(theta)
    f_ref, rep_ref, _ = c.at(lo)
    f_top, rep_top, _ = c.at(hi)
    kl_pool = c.kl_pool_at(theta)
    alpha = (1 - confidence) / 2
    theta_ci: tuple[float, float] = (theta, theta)
    value_ci: tuple[float, float] = (f_theta, f_theta)
    ci_note = ""
    conservative = lo
    noise = 0.0
    rep_curves = None
    if weights is not None and c.sums.replicates is not None and rep_values is not None and rep_top is not None:
        rep_curves = c.sums.replicates / weights.sum(axis=1, keepdims=True)
        rep_thetas = search.replicate_maximisers(c, rep_curves)
        if template.integer_parameter:
            rep_thetas = np.round(rep_thetas)
        theta_ci = (float(np.quantile(rep_thetas, alpha)), float(np.quantile(rep_thetas, 1 - alpha)))
        value_ci = (float(np.quantile(rep_values, alpha)), float(np.quantile(rep_values, 1 - alpha)))
        theta_ci, value_ci, ci_note = _contain(theta_ci, theta, value_ci, f_theta, (lo, hi), template.parameter)
        allowed = (grid == np.round(grid)) if template.integer_parameter else np.ones(grid.size, dtype=bool)
        conservative = _conservative_theta(grid, c.values, rep_curves, lo, conservative_level, allowed)
        # The bootstrap standard error of the drop from the peak to the top of the range.
        noise = standard_deviation(rep_values - rep_top, c.pools.reward_scale)
    regime, note = _regime(c.values, theta, f_theta, f_top, noise, c.flat_tol, template, pool_limited, hi)
    extrapolation = None
    if note.startswith("still rising") and not template.uses_raw_scores and template.deployable:
        extrapolation = extrapolate(
            template, grid, c.values, f_ref, hi, rep_curves, rep_ref, confidence, c.pools.reward_range
        )
    conservative = min(conservative, theta)  # the conservative rule never goes further than the point estimate
    mech = template.with_theta(theta)
    recommended, rule = _recommend(theta, conservative, lo, weights is not None, template.base_name)
    gain, gain_ci = 0.0, (0.0, 0.0)
    if recommended != lo:
        gain = f_theta - f_ref
        gain_ci = (gain, gain)
        if rep_values is not None and rep_ref is not None:
            gains = rep_values - rep_ref
            gain_ci = (min(float(np.quantile(gains, alpha)), gain), max(float(np.quantile(gains, 1 - alpha)), gain))
    return TuneResult(
        mechanism=template.name, parameter=template.parameter, label=repr(mech), theta=theta, theta_ci=theta_ci,
        true_reward=f_theta, true_reward_ci=value_ci, kl=float("nan") if template.uses_raw_scores else mech.kl(),
        kl_pool=kl_pool, expected_samples=mech.expected_samples(), regime=regime, reference_theta=lo,
        reference_true_reward=f_ref, unhedged_theta=hi, unhedged_true_reward=f_top, conservative_theta=conservative,
        conservative_true_reward=c.at(conservative)[0], search_range=(lo, hi), residual=c.residual,
        iterations=iterations, n_prompts=c.total, bootstrap=0 if weights is None else weights.shape[0],
        confidence=confidence, proxy=c.pools.proxy_name, estimator=c.estimator, supported_max=top, regime_note=note,
        recommended_theta=recommended, recommended_true_reward=f_theta if recommended == theta else f_ref,
        recommended_rule=rule, theta_ci_note=ci_note, gain=gain, gain_ci=gain_ci,
        next_step=_next_step(template, c.pools, hi, extrapolation) if note.startswith("still rising") else "",
        template=template, extrapolation=extrapolation,
    )


def pool_size_for(template: Mechanism, theta: float, limit: int = 1 << 20) -> int | None:
    """The smallest pool size whose deployment estimate reaches ``theta`` (``None`` past ``limit``)."""
    if not np.isfinite(theta) or template.deployment_limit(limit) < theta:
        return None
    lo, hi = 1, 2
    while template.deployment_limit(hi) < theta:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # the limit grows with the pool size
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if template.deployment_limit(mid) < theta else (lo, mid)
    return hi


def _next_step(template: Mechanism, pools: Pools, top: float, extrapolation: Extrapolation | None) -> str:
    """How many samples per prompt would resolve a curve still rising where the pools stop."""
    m = pools.min_size
    p = template.parameter
    if extrapolation is not None and extrapolation.accepted:
        target = 1.5 * extrapolation.peak_theta
        basis = (f"to see past the extrapolated peak near {p} = {extrapolation.peak_theta:.3g} "
                 f"(a model, not a measurement) with room to spare")
    else:
        target = 2.0 * top
        basis = f"to measure twice the {p} the current pools support ({top:.4g}); the curve has not turned by then"
    needed = pool_size_for(template, target)
    if needed is None or needed <= m:
        return ""
    return f"about {needed} samples per prompt (now {m}) would resolve it: {basis}"


def _recommend(
    point: float, conservative: float, reference: float, bootstrapped: bool, base: str = "reference"
) -> tuple[float, str]:
    """The safe default: leave the reference only when a gain is sure, and then go all the way to
    the point estimate.

    The conservative rule's simultaneous lower bound decides *whether* to move (it stays at the
    reference unless some gain over it is sure at its level); the point estimate decides *where*
    to (the conservative parameter itself stops short of the peak, giving up part of the gain).
    """
    if not bootstrapped:
        return reference, f"{base}: without a bootstrap no gain can be shown to be sure"
    if point == conservative:
        return point, "the point estimate and the conservative rule agree"
    if conservative == reference:
        return reference, f"{base}: no gain over it is sure at the conservative level"
    return point, f"point estimate: a gain over the {base} is sure at the conservative level"


def _regime(
    f_grid: FloatArray,
    theta: float,
    f_theta: float,
    f_top: float,
    noise: float,
    flat_tol: float,
    template: Mechanism,
    pool_limited: bool,
    hi: float,
) -> tuple[str, str]:
    """The curve's regime and a sentence for the cases a label alone would hide.

    A fall after the peak counts as hacking only when it exceeds one bootstrap standard error of the
    drop from the peak to the top of the range (or rounding, without a bootstrap): a smaller fall is
    noise, so the curve is reported as "increasing", with a note that it is flat after its peak.
    """
    regime = regime_with_noise(f_grid, noise, flat_tol)
    note = ""
    name = template.parameter
    if regime == "increasing" and f_theta - f_top > flat_tol and theta < hi:
        note = (
            f"peaks at {name} = {theta:.4g}, but the fall after it ({f_theta - f_top:.2g}) is within "
            f"its bootstrap standard error ({noise:.2g}): flat after the peak"
        )
    if pool_limited and regime in ("increasing", "fall-then-rise") and theta >= hi * (1 - 1e-9):
        note = (
            f"still rising at {name} = {hi:.4g}, the largest the calibration pools support: "
            "a deployment beyond it is not estimated (larger pools would tell)"
        )
    return regime, note


def _contain(
    theta_ci: tuple[float, float],
    theta: float,
    value_ci: tuple[float, float],
    value: float,
    searched: tuple[float, float],
    parameter: str,
) -> tuple[tuple[float, float], tuple[float, float], str]:
    """Intervals that contain their point: a bootstrap percentile interval of a maximiser (or of
    its value) can miss the point estimate when the replicates' maximisers are skewed; it is then
    widened to reach it, and the note says so. An interval spanning the whole searched range is
    labelled uninformative."""
    note = ""
    if not theta_ci[0] <= theta <= theta_ci[1] or not value_ci[0] <= value <= value_ci[1]:
        note = (f"the bootstrap interval was widened to contain the point estimate (the replicates' "
                f"maximisers are skewed: read the {parameter} with caution)")
    theta_ci = (min(theta_ci[0], theta), max(theta_ci[1], theta))
    value_ci = (min(value_ci[0], value), max(value_ci[1], value))
    lo, hi = searched
    if hi > lo and theta_ci[0] <= lo + 1e-9 * max(1.0, abs(lo)) and theta_ci[1] >= hi * (1 - 1e-9):
        note = "uninformative: more prompts needed (the interval spans the whole searched range)"
    return theta_ci, value_ci, note


def _conservative_theta(
    grid: FloatArray,
    curve: FloatArray,
    replicates: FloatArray,
    reference: float,
    level: float,
    allowed: np.ndarray | None = None,
) -> float:
    """The parameter that maximises a simultaneous lower confidence bound of the gain over the
    reference; the reference itself when that bound is nowhere positive.

    The bound is ``G(theta) - c s(theta)``, with ``G`` the gain of the plug-in curve, ``s`` its
    bootstrap standard error and ``c`` the ``1 - level`` quantile over replicates of
    ``max_theta (G_b - G) / s`` (a sup-t band), so that it holds at every parameter at once: picking
    the best of many parameters does not inflate the chance of leaving the reference for nothing.
    """
    ref = int(np.argmin(np.abs(grid - reference)))
    gain = curve - curve[ref]
    rep_gain = replicates - replicates[:, [ref]]
    se = rep_gain.std(axis=0, ddof=1)
    moving = se > 0
    if not moving.any():
        return reference
    z = (rep_gain[:, moving] - gain[moving]) / se[moving]
    c = float(np.quantile(z.max(axis=1), 1 - level))
    lower = np.full(grid.shape, -np.inf)
    lower[moving] = gain[moving] - c * se[moving]
    if allowed is not None:  # e.g. whole numbers only for Best-of-n
        lower[~allowed] = -np.inf
    best = int(np.argmax(lower))
    return float(grid[best]) if lower[best] > 0 else reference


def _refine(
    c: _GridCurve, rho_grid: FloatArray, best: int, known: bool = False, grid: FloatArray | None = None
) -> tuple[float, int]:
    """Brent's root of the residual in the grid bracket around the grid maximiser (``known``: the
    grid's values ``rho_grid`` are the residual's, so the bracket's ends are not recomputed;
    otherwise a tighter bracket near the vertex of the parabola through the grid's values is tried
    first, which saves Brent most of its iterations).

    The root is found to a relative 1e-10 in the parameter: the curve is flat at its peak, so that
    moves the value by about 1e-20, far below its rounding.
    """
    grid = c.grid if grid is None else grid
    a, b = float(grid[best - 1]), float(grid[best + 1])
    tight = None
    if not known:  # a tight bracket first, around the grid's parabola's vertex
        tight = _bracket_near_vertex(c, grid[best - 1 : best + 2], c.values[best - 1 : best + 2])
    if tight is not None:
        a, b, fa, fb = tight
    elif known:
        fa, fb = float(rho_grid[best - 1]), float(rho_grid[best + 1])
    else:
        fa, fb = c.residual_at(a), c.residual_at(b)
    if not (fa > 0 > fb):  # the score form may not bracket where the exact one does
        return float(grid[best]), 2
    ends = {a: fa, b: fb}  # Brent starts by evaluating both ends: hand it the values known
    root, info = optimize.brentq(
        lambda th: ends[th] if th in ends else c.residual_at(th),
        a,
        b,
        xtol=1e-12,
        rtol=1e-10,
        full_output=True,
    )
    return float(root), int(info.iterations)


def _parabola_vertex(
    x0: ArrayLike, x1: ArrayLike, x2: ArrayLike, f0: ArrayLike, f1: ArrayLike, f2: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """The vertex of the parabola through ``(x_k, f_k)``, and its second derivative (elementwise):
    ``x1 - ((x1-x0)^2 (f1-f2) - (x2-x1)^2 (f1-f0)) / (2 ((x1-x0)(f1-f2) + (x2-x1)(f1-f0)))``."""
    x0, x1, x2, f0, f1, f2 = (np.asarray(v, dtype=float) for v in (x0, x1, x2, f0, f1, f2))
    den = 2.0 * ((x1 - x0) * (f1 - f2) + (x2 - x1) * (f1 - f0))
    vertex = x1 - ((x1 - x0) ** 2 * (f1 - f2) - (x2 - x1) ** 2 * (f1 - f0)) / den
    curvature = -den / ((x1 - x0) * (x2 - x1) * (x2 - x0))
    return vertex, curvature


def _bracket_near_vertex(c: _GridCurve, thetas: FloatArray, values: FloatArray) -> tuple[float, float, float, float] | None:
    """A bracket of the residual's root from two evaluations: at the vertex ``v`` of the parabola
    through three grid points (the middle one the highest), and one and a half Newton steps from
    it (the parabola's curvature standing in for the residual's slope). ``None`` when the two do
    not bracket a root; then the caller brackets with the grid points."""
    vertex_, curvature_ = _parabola_vertex(*thetas, *values)
    vertex, curvature = float(vertex_), float(curvature_)
    if not curvature < 0:
        return None
    fv = c.residual_at(vertex)
    other = float(np.clip(vertex - 1.5 * fv / curvature, thetas[0], thetas[2]))
    fo = c.residual_at(other)
    lo, hi = sorted(((vertex, fv), (other, fo)))
    return (lo[0], hi[0], lo[1], hi[1]) if lo[1] > 0 > hi[1] else None


def _replicate_maximisers(grid: FloatArray, curves: FloatArray, residuals: FloatArray | None) -> FloatArray:
    """Each replicate's maximiser: the grid argmax, refined by linear interpolation of the residual's
    sign change next to it (the residual is the curve's exact derivative); without residuals, by
    the vertex of the parabola through the argmax and its two neighbours (the same order of
    accuracy: that parabola's slope is the linear interpolation of the derivative)."""
    rows = np.arange(curves.shape[0])
    best = np.argmax(curves, axis=1)
    theta = grid[best].astype(float)
    right = np.minimum(best + 1, grid.size - 1)
    left = np.maximum(best - 1, 0)
    if residuals is None:
        inner = (left < best) & (best < right)
        x0, x2 = grid[left], grid[right]
        with np.errstate(divide="ignore", invalid="ignore"):  # at the grid's ends: not used
            vertex, curvature = _parabola_vertex(
                x0, grid[best], x2, curves[rows, left], curves[rows, best], curves[rows, right]
            )
        # The middle value is the highest, so a curved parabola peaks within [x0, x2].
        ok = inner & (curvature < 0)
        return np.where(ok, np.clip(vertex, x0, x2), theta)
    r_best = residuals[rows, best]
    # Root between best and right when the residual is still positive at best, else left and best.
    use_right = (r_best > 0) & (right > best)
    use_left = (r_best < 0) & (left < best)
    for mask, a_idx, b_idx in ((use_right, best, right), (use_left, left, best)):
        ra, rb = residuals[rows, a_idx], residuals[rows, b_idx]
        ok = mask & (ra > 0) & (rb < 0)
        frac = np.where(ok, ra / np.where(ok, ra - rb, 1.0), 0.0)
        theta = np.where(ok, grid[a_idx] + frac * (grid[b_idx] - grid[a_idx]), theta)
    return theta


def tune_by_group(table: RewardTable, mechanism: str | Mechanism, **kwargs: Any) -> dict[str, TuneResult]:
    """One :func:`tune` per group of the table's group column (task, dataset)."""
    return {label: tune(group, mechanism, **kwargs) for label, group in table.by_group().items()}


# ------------------------------------------------------------------------------ out of sample
_OOS_POINTS = ("tuned", "conservative", "recommended", "oracle", "reference", "unhedged")
_OOS_COLUMNS = ("tuned_theta", "oracle_theta", "conservative_theta", "recommended_theta", *_OOS_POINTS)


@dataclass(frozen=True)
class OutOfSample:
    """HedgeTune checked on prompts it was not tuned on, over repeated random splits.

    Each array has one entry per split: the held-out true reward at the parameter tuned on the
    calibration prompts (``tuned``), at the conservative rule's parameter (``conservative``), at the
    safe default (``recommended``), at
    the held-out prompts' own best parameter (``oracle``, an upper bound), at the reference and at
    the un-hedged top of the range.
    """

    mechanism: str
    parameter: str
    calibration_fraction: float
    tuned_theta: FloatArray
    oracle_theta: FloatArray
    conservative_theta: FloatArray
    recommended_theta: FloatArray
    tuned: FloatArray
    conservative: FloatArray
    recommended: FloatArray
    oracle: FloatArray
    reference: FloatArray
    unhedged: FloatArray
    template: Mechanism = field(default_factory=lambda: BestOfN(1), repr=False, compare=False)

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean and standard error over splits of each held-out true reward."""
        out = {}
        for name in _OOS_POINTS:
            values = getattr(self, name)
            se = float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else float("nan")
            out[name] = {"mean": float(values.mean()), "se": se}
        return out

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON values, with the :meth:`summary`."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "template"}
        out["options"] = self.template.options
        out["summary"] = self.summary()
        return jsonable(out)

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame({c: getattr(self, c) for c in _OOS_COLUMNS})


def _splitter(
    table: RewardTable | StreamedPools, proxy: str | None, template: Mechanism, estimator: str
) -> Callable[[IntArray], Pools]:
    """The pools of the prompts at given positions. A mechanism valued prompt by prompt (raw
    scores, drawn sets) keeps each prompt's values for every split and searches the whole table's
    range (:class:`hedgetune.pools.SharedValues`, :func:`scale_pools`). A table in memory is
    sorted once; a streamed one is read per split (its groups carry no row source, so only the
    range is shared)."""
    whole = as_pools(table, proxy, template)
    if template.uses_raw_scores:
        whole = shared_values(whole, template, resolve_estimator(template, estimator))
    if isinstance(whole, StreamedPools):
        return whole.subset
    return lambda positions: select_prompts(whole, positions)


def evaluate(
    table: RewardTable | StreamedPools,
    mechanism: str | Mechanism,
    *,
    calibration_fraction: float = 0.5,
    repeats: int = 20,
    seed: int | None = 0,
    bootstrap: int = 200,
    **tune_kwargs: Any,
) -> OutOfSample:
    """Tune on a random ``calibration_fraction`` of the prompts, score on the rest, ``repeats`` times.

    ``tune_kwargs`` go to :func:`tune` (the mechanism's options, ``proxy``, budgets, ...).
    """
    if not isinstance(table, RewardTable | StreamedPools):
        raise TypeError(
            f"expected a RewardTable (see hedgetune.read_table) or hedgetune.scan_table, got {type(table).__name__}"
        )
    if not 0 < calibration_fraction < 1:
        raise ValueError(f"calibration_fraction must lie in (0, 1), got {calibration_fraction}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    n_cal = round(calibration_fraction * table.n_prompts)
    if n_cal < 2 or table.n_prompts - n_cal < 2:
        raise TableError(
            f"{table.n_prompts} prompts cannot be split {calibration_fraction:g} / {1 - calibration_fraction:g} with at least two on each side"
        )
    rng = np.random.default_rng(seed)
    proxy = tune_kwargs.pop("proxy", None)
    estimator: Estimator = tune_kwargs.pop("estimator", "unbiased")
    rows: dict[str, list[float]] = {k: [] for k in _OOS_COLUMNS}
    names = option_names(lookup(mechanism)) if isinstance(mechanism, str) else ()
    template = make(mechanism, **{k: tune_kwargs.pop(k) for k in names if k in tune_kwargs})
    split = _splitter(table, proxy, template, estimator)
    for r in range(repeats):
        order = rng.permutation(table.n_prompts)
        calibration, held_out = split(np.sort(order[:n_cal])), split(np.sort(order[n_cal:]))
        # Both halves must stand for the parameter: a Best-of-n tuned on pools of 3 cannot be
        # valued without replacement on held-out pools of 2, so the search stops at the smaller limit.
        kwargs = dict(tune_kwargs)
        used = resolve_estimator(template, estimator)
        both = min(template.supported_max(calibration, used), template.supported_max(held_out, used))
        if np.isfinite(both):
            kwargs["max_theta"] = min(both, kwargs.get("max_theta") or np.inf)
        fit = tune(
            calibration,
            template,
            estimator=estimator,
            bootstrap=bootstrap,
            seed=None if seed is None else seed + r,
            **kwargs,
        )
        oracle = tune(held_out, template, estimator=estimator, bootstrap=0, **kwargs)
        points = np.array(
            [
                fit.theta,
                fit.conservative_theta,
                fit.recommended_theta,
                oracle.theta,
                fit.reference_theta,
                fit.unhedged_theta,
            ]
        )
        # Scored with the tuning's estimator (by default what a deployment gets) on held-out pools.
        values = (
            pool_sums(
                held_out, template, points, resolve_estimator(template, fit.estimator), kl_pool=False
            ).true
            / held_out.n_prompts
        )
        for key, value in zip(_OOS_POINTS, values, strict=True):
            rows[key].append(float(value))
        rows["tuned_theta"].append(fit.theta)
        rows["oracle_theta"].append(oracle.theta)
        rows["conservative_theta"].append(fit.conservative_theta)
        rows["recommended_theta"].append(fit.recommended_theta)
    arrays = {k: np.array(v) for k, v in rows.items()}
    return OutOfSample(
        mechanism=template.name,
        parameter=template.parameter,
        calibration_fraction=calibration_fraction,
        **arrays,
        template=template,
    )
