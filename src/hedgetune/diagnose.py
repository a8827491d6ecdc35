"""Hacking diagnosis: which of the four regimes of docs/SPEC.md §5 a curve is in, and what it costs."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._jsonable import jsonable
from .curves import Curve, curve
from .mechanisms import Mechanism
from .pools import Pools
from .table import RewardTable

REGIMES = ("increasing", "decreasing", "rise-then-fall", "fall-then-rise", "flat")


def classify(values: ArrayLike, rtol: float = 1e-6, atol: float = 0.0, scale: float | None = None) -> str:
    """The shape of a curve sampled along increasing parameter values.

    * ``"rise-then-fall"`` (hacking): an interior maximum above both ends;
    * ``"fall-then-rise"``: an interior minimum below both ends;
    * ``"increasing"`` / ``"decreasing"``: otherwise, by the sign of ``last - first``;
    * ``"flat"``: the whole curve varies by less than the tolerance.

    Differences below ``rtol`` times ``scale`` (by default the curve's largest magnitude; pass the
    rewards' scale when the curve sits near zero), or ``atol`` if larger, count as equal.
    """
    f = np.asarray(values, dtype=float)
    tol = max(rtol * (float(np.max(np.abs(f))) if scale is None else scale), atol)
    if f.max() - f.min() <= tol:
        return "flat"
    ends_max, ends_min = max(f[0], f[-1]), min(f[0], f[-1])
    if f.max() - ends_max > tol:
        return "rise-then-fall"
    if ends_min - f.min() > tol:
        return "fall-then-rise"
    return "increasing" if f[-1] > f[0] else "decreasing"


def regime_with_noise(values: ArrayLike, noise: float, tol: float) -> str:
    """The one hacking verdict: :func:`classify` of the curve, where a fall after the peak counts
    as hacking ("rise-then-fall") only when it exceeds ``noise`` -- one bootstrap standard error
    of the drop from the peak to the top of the range (0 without a bootstrap) -- and rounding
    (``tol``). A smaller fall is within noise: the curve is reported as "increasing" (flat after
    its peak). Every surface (tune, curve, the demo, the report) reports this verdict."""
    f = np.asarray(values, dtype=float)
    regime = classify(f, rtol=0.0, atol=tol)
    if regime == "rise-then-fall" and float(f.max() - f[-1]) <= noise:
        return "increasing"
    return regime


def standard_deviation(values: ArrayLike, scale: float) -> float:
    """``np.std(values, ddof=1)`` computed in units of ``scale`` (the rewards' size), so that
    rewards near the smallest floats do not square to zero (and tiny noise to no noise)."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return 0.0
    unit = scale if scale > 0 and np.isfinite(scale) else 1.0
    return float(np.std(x / unit, ddof=1)) * unit


def percent(share: float) -> str:
    """A share as a percentage that never reads 0% for a positive share."""
    value = 100 * share
    return f"{value:.0f}%" if value >= 9.5 else f"{value:.2g}%"


def describe(
    label: str,
    parameter: str,
    regime: str,
    peak_theta: float,
    peak_value: float,
    reference_value: float,
    top_theta: float,
    top_value: float,
    at_pool_limit: bool,
) -> str:
    """The verdict in words, one formatter for every surface."""
    p = parameter
    gain = peak_value - reference_value
    if regime == "rise-then-fall":
        peak = f"{label} peaks at {p} = {peak_theta:.3g} (true reward {peak_value:.4f})"
        lost = (peak_value - top_value) / gain if gain > 0 else float("inf")
        if lost > 1:
            return (
                f"{peak} and by {p} = {top_theta:.3g} falls below the reference "
                f"({top_value:.4f} vs {reference_value:.4f})"
            )
        return f"{peak} and loses {percent(lost)} of its gain by {p} = {top_theta:.3g}: hacking"
    if regime == "increasing":
        if peak_theta < top_theta and peak_value > top_value:
            return (
                f"{label} peaks at {p} = {peak_theta:.3g} (true reward {peak_value:.4f}); the fall after it is within "
                f"noise: no sure hacking up to {p} = {top_theta:.3g}"
            )
        where = (
            "no hacking up to what the calibration pools support (larger pools would tell beyond)"
            if at_pool_limit
            else "no hacking in range"
        )
        return f"{label} keeps improving up to {p} = {top_theta:.3g} (true reward {top_value:.4f}): {where}"
    if regime == "decreasing":
        return f"{label} only hurts: the proxy is anti-aligned, stay at the reference (true reward {reference_value:.4f})"
    if regime == "fall-then-rise":
        return f"{label} first hurts, then helps: best at {p} = {peak_theta:.3g} (true reward {peak_value:.4f})"
    return f"{label} leaves the true reward unchanged ({reference_value:.4f}): the proxy carries no signal"


@dataclass(frozen=True)
class Diagnosis:
    """Where a mechanism's true reward peaks on the searched range, and what overshooting costs.

    ``threshold`` is the parameter of the highest true reward on the grid (the hacking threshold
    ``theta_dagger`` when the regime is rise-then-fall). ``loss_at_top`` is the true reward given up
    by going to the top of the range; ``share_of_gain_lost`` that loss as a share of the best gain
    over the reference. ``hacking_share`` is the share of bootstrap replicates that rise then fall.
    """

    mechanism: str
    parameter: str
    regime: str
    threshold: float
    best_true_reward: float
    reference_true_reward: float
    top_theta: float
    top_true_reward: float
    loss_at_top: float
    share_of_gain_lost: float
    hacking_share: float
    curve: Curve
    #: The verdict in words (the tuning's, when the diagnosis was given one).
    summary: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON values, the curve included."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "curve"}
        out["curve"] = self.curve.to_dict()
        return jsonable(out)

    def sentence(self) -> str:
        """The regime in words."""
        return self.summary


def diagnose_curve(c: Curve, tuned: Any = None) -> Diagnosis:
    """Diagnose an already computed :class:`Curve`.

    With ``tuned`` (the :class:`~hedgetune.TuneResult` of the same mechanism on the same table)
    the regime, peak and sentence are the tuning's, so that a curve and its tuning never disagree;
    otherwise the curve's own, by the same rule (:func:`regime_with_noise`)."""
    f = c.true_reward
    best = int(np.argmax(f))
    reference = c.reference_true_reward
    noise = 0.0
    hacking = float("nan")
    if c.replicates is not None:
        reps = np.asarray(c.replicates)
        noise = standard_deviation(reps[:, best] - reps[:, -1], c.reward_scale)
        tol = 1e-12 * c.reward_scale
        hacking = float(np.mean([regime_with_noise(rep, 0.0, tol) == "rise-then-fall" for rep in reps]))
    regime = regime_with_noise(f, noise, 1e-12 * c.reward_scale)
    peak_theta, peak_value = float(c.theta[best]), float(f[best])
    top_theta, top_value = float(c.theta[-1]), float(f[-1])
    label = c.template.short_label()
    summary = describe(label, c.parameter, regime, peak_theta, peak_value, reference, top_theta, top_value,
                       top_theta >= c.supported_max * (1 - 1e-9))
    if tuned is not None:
        regime, summary = tuned.regime, tuned.sentence()
        peak_theta, peak_value = tuned.theta, tuned.true_reward
    gain = peak_value - reference
    loss = float(peak_value - top_value)
    rounding = 1e-12 * c.reward_scale  # sums over prompts differ by ~1e-16 of the rewards' scale
    share: float = loss / gain if gain > rounding else 0.0
    return Diagnosis(
        mechanism=c.mechanism,
        parameter=c.parameter,
        regime=regime,
        threshold=peak_theta,
        best_true_reward=peak_value,
        reference_true_reward=reference,
        top_theta=top_theta,
        top_true_reward=top_value,
        loss_at_top=loss,
        share_of_gain_lost=share,
        hacking_share=hacking,
        curve=c,
        summary=summary,
    )


def diagnose(
    table: RewardTable | Pools,
    mechanism: str | Mechanism,
    thetas: ArrayLike | None = None,
    **curve_kwargs: Any,
) -> Diagnosis:
    """Compute the curve of ``mechanism`` on ``table`` (see :func:`hedgetune.curve`) and diagnose it."""
    return diagnose_curve(curve(table, mechanism, thetas, **curve_kwargs))
