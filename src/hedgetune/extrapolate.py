"""Beyond the pools: an extrapolation of a hacking curve that still rises where the data stop.

A calibration pool of m responses can estimate a deployment of Best-of-n only up to n = m. When the
curve still rises there, the peak lies beyond the data. Gao et al. (2022, "Scaling Laws for Reward
Model Overoptimization") found that best-of-n gains in gold reward follow

    gain(d) = d (alpha - beta d),   d = sqrt(KL(pi_theta || pi_ref)),

which peaks at d* = alpha / (2 beta) with gain alpha^2 / (4 beta). We fit it by least squares (no
intercept: no gain at the reference) to the supported part of the curve, and to each bootstrap
replicate for intervals, and map d* back to the mechanism's parameter through its analytic KL.

This is a model, not a measurement: it is offered only when it fits the supported range
(R^2 >= :data:`MIN_R2` on at least :data:`MIN_POINTS` points with d > 0), predicts a finite peak
beyond it but within the horizon (:data:`HORIZON` times the largest supported parameter), and
that peak stays below the reward ceiling; every output says "extrapolated". In the interval, a
bootstrap replicate whose fit has no peak, or a peak past the horizon, counts as a peak at +inf:
an interval is never built from the replicates that happen to peak alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import optimize

from ._jsonable import jsonable
from .arrays import FloatArray
from .mechanisms import Mechanism

MODEL = "gain = d (alpha - beta d), d = sqrt(KL)  [Gao et al. 2022]"
#: The fit must explain this share of the variance of the supported gains.
MIN_R2 = 0.9
#: ... on at least this many supported parameters beyond the reference.
MIN_POINTS = 4
#: Peaks are predicted at most this many times past the largest supported parameter.
HORIZON = 8.0
#: Whether an accepted extrapolation is offered at all: only while its intervals cover the true
#: peak in at least 90% of offers on the paper's toy (``experiments/extrapolation.py``).
OFFERED = True


@dataclass(frozen=True)
class Extrapolation:
    """The fitted model, its quality, and the predicted peak with bootstrap intervals.

    ``accepted`` says whether it passed the gate (``reason`` says why not); only then are the peak
    fields finite. ``theta`` and ``true_reward`` trace the extrapolated curve past the data (for the
    dashed line of the figures). Everything here is extrapolated, never measured.
    """

    model: str
    alpha: float
    beta: float
    r2: float
    points: int
    accepted: bool
    reason: str
    peak_theta: float
    peak_theta_ci: tuple[float, float]
    peak_true_reward: float
    peak_true_reward_ci: tuple[float, float]
    peak_kl: float
    share_of_replicates_with_a_peak: float
    theta: FloatArray
    true_reward: FloatArray

    def to_dict(self) -> dict[str, Any]:
        return dict(jsonable(asdict(self)))

    def sentence(self, parameter: str) -> str:
        if not self.accepted:
            return f"no extrapolation beyond the data: {self.reason}"
        lo, hi = self.peak_theta_ci
        vlo, vhi = self.peak_true_reward_ci
        return (
            f"extrapolated beyond the data (Gao et al. 2022 form, R^2 {self.r2:.2f}): peak near {parameter} = "
            f"{self.peak_theta:.3g} [{lo:.3g}, {hi:.3g}], true reward {self.peak_true_reward:.4f} "
            f"[{vlo:.4f}, {vhi:.4f}]; a model, not a measurement"
        )


def _fit(d: FloatArray, gain: FloatArray) -> tuple[float, float, float]:
    """Least squares of ``gain = alpha d - beta d^2``: ``(alpha, beta, R^2)``."""
    design = np.column_stack([d, -(d**2)])
    coef, *_ = np.linalg.lstsq(design, gain, rcond=None)
    residual = gain - design @ coef
    spread = float(np.sum((gain - gain.mean()) ** 2))
    r2 = 1.0 - float(residual @ residual) / spread if spread > 0 else 0.0
    return float(coef[0]), float(coef[1]), r2


def _theta_at_kl(template: Mechanism, kl: float, start: float, limit: float) -> float:
    """The parameter in ``[start, limit]`` whose analytic KL equals ``kl`` (KL grows with the
    parameter; ``kl`` lies above the KL at ``start``); ``inf`` when even ``limit`` falls short."""
    if template.with_theta(limit).kl() < kl:
        return float("inf")
    return float(optimize.brentq(lambda t: template.with_theta(t).kl() - kl, start, limit, xtol=1e-10, rtol=1e-12))


def _thetas_at_kls(template: Mechanism, kls: FloatArray, start: float, limit: float) -> FloatArray:
    """:func:`_theta_at_kl` for many targets at once: the KL on a fine geometric grid of
    ``[start, limit]`` (one vectorised call), inverted by interpolation in log-parameter; ``inf``
    past ``limit``, ``start`` below it (targets there are inside the supported range)."""
    grid = np.geomspace(max(start, 1e-9), limit, 512)
    curve = np.maximum.accumulate(np.asarray(template.kl_many(grid), dtype=float))
    out = np.exp(np.interp(kls, curve, np.log(grid)))
    return np.where(kls > curve[-1], np.inf, out)


def extrapolate(
    template: Mechanism,
    grid: FloatArray,
    curve: FloatArray,
    reference: float,
    supported_max: float,
    replicates: FloatArray | None = None,
    replicate_references: FloatArray | None = None,
    confidence: float = 0.95,
    reward_range: tuple[float, float] = (-np.inf, np.inf),
) -> Extrapolation:
    """Fit the model to ``curve`` on ``grid`` (the supported parameters) and predict past
    ``supported_max``; ``replicates`` (``(B, len(grid))``) with their own reference values give the
    intervals. Predicted true rewards are clipped to ``reward_range`` (the table's: no mechanism
    can leave it)."""
    low_r, high_r = reward_range
    kls = np.asarray(template.kl_many(np.asarray(grid, dtype=float)), dtype=float)
    d = np.sqrt(np.maximum(kls, 0.0))
    use = d > 0
    alpha, beta, r2 = _fit(d[use], curve[use] - reference) if use.sum() >= 2 else (np.nan, np.nan, 0.0)
    d_max = float(np.sqrt(template.with_theta(supported_max).kl()))
    horizon = HORIZON * supported_max
    d_horizon = float(np.sqrt(template.with_theta(horizon).kl()))
    reason = ""
    if use.sum() < MIN_POINTS:
        reason = f"only {int(use.sum())} supported parameters beyond the reference (needs {MIN_POINTS})"
    elif r2 < MIN_R2:
        reason = f"the model fits the supported curve poorly (R^2 {r2:.2f} < {MIN_R2})"
    elif not beta > 0:
        reason = "the fitted curve has no peak (it rises without bound)"
    elif alpha / (2 * beta) <= d_max:
        reason = "the fitted peak lies inside the supported range"
    elif alpha / (2 * beta) > d_horizon:
        reason = (f"the fitted peak lies past the horizon ({HORIZON:g}x the largest supported {template.parameter}, "
                  f"{horizon:.4g}): larger pools would tell")
    elif reference + alpha**2 / (4 * beta) >= high_r:
        reason = "the fitted peak reaches the reward ceiling: the model cannot locate it"
    nan2 = (float("nan"), float("nan"))
    if reason:
        empty = np.empty(0)
        return Extrapolation(MODEL, alpha, beta, r2, int(use.sum()), False, reason, float("nan"), nan2,
                             float("nan"), nan2, float("nan"), float("nan"), empty, empty)
    d_star = alpha / (2 * beta)
    peak_theta = _theta_at_kl(template, d_star**2, supported_max, horizon)
    peak_value = float(np.clip(reference + alpha**2 / (4 * beta), low_r, high_r))
    theta_ci, value_ci, share = nan2, nan2, float("nan")
    if replicates is not None and replicate_references is not None:
        design = np.column_stack([d[use], -(d[use] ** 2)])
        gains = (replicates[:, use] - np.asarray(replicate_references)[:, None]).T
        coef, *_ = np.linalg.lstsq(design, gains, rcond=None)
        a, b = coef
        peaked = b > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            d_peak = np.where(peaked, a / (2 * b), np.inf)
        inside = peaked & (d_peak <= d_horizon)
        thetas = np.full(a.size, np.inf)  # no peak, or past the horizon: +inf
        thetas[inside] = np.maximum(_thetas_at_kls(template, d_peak[inside] ** 2, supported_max, horizon), supported_max)
        # Each replicate's best within the horizon: its peak, or its model's value at the horizon.
        d_best = np.minimum(np.where(peaked, d_peak, np.inf), d_horizon)
        values = np.clip(np.asarray(replicate_references) + d_best * (a - b * d_best), low_r, high_r)
        share = float(inside.mean())
        tail = (1 - confidence) / 2
        # "nearest": replicates at +inf keep an infinite bound, not NaN
        theta_ci = (float(np.quantile(thetas, tail, method="nearest")), float(np.quantile(thetas, 1 - tail, method="nearest")))
        value_ci = (float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail)))
        theta_ci = (min(theta_ci[0], peak_theta), max(theta_ci[1], peak_theta))
        value_ci = (min(value_ci[0], peak_value), max(value_ci[1], peak_value))
    top = peak_theta
    trace = np.geomspace(supported_max, min(max(2 * top, supported_max * 1.01), horizon), 40)
    d_trace = np.sqrt(np.asarray(template.kl_many(trace), dtype=float))
    values_trace = np.clip(reference + d_trace * (alpha - beta * d_trace), low_r, high_r)
    return Extrapolation(MODEL, alpha, beta, r2, int(use.sum()), True, "", peak_theta, theta_ci,
                         peak_value, value_ci, d_star**2, share, trace, values_trace)
