"""Hacking diagnosis: which of the four regimes of SPEC §4 a curve is in, and what it costs."""

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

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON values, the curve included."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "curve"}
        out["curve"] = self.curve.to_dict()
        return jsonable(out)

    def sentence(self) -> str:
        """The regime in words."""
        name = self.curve.template.short_label()
        p = self.parameter
        if self.regime == "rise-then-fall":
            peak = f"{name} peaks at {p} = {self.threshold:.3g} (true reward {self.best_true_reward:.4f})"
            if self.share_of_gain_lost > 1:
                return (
                    f"{peak} and by {p} = {self.top_theta:.3g} falls below the reference "
                    f"({self.top_true_reward:.4f} vs {self.reference_true_reward:.4f})"
                )
            return f"{peak} and loses {100 * self.share_of_gain_lost:.0f}% of its gain by {p} = {self.top_theta:.3g}"
        if self.regime == "increasing":
            where = (
                "no hacking up to what the calibration pools support (larger pools would tell beyond)"
                if self.top_theta >= self.curve.supported_max * (1 - 1e-9)
                else "no hacking in range"
            )
            return f"{name} keeps improving up to {p} = {self.top_theta:.3g} (true reward {self.top_true_reward:.4f}): {where}"
        if self.regime == "decreasing":
            return f"{name} only hurts: the proxy is anti-aligned, stay at the reference (true reward {self.reference_true_reward:.4f})"
        if self.regime == "fall-then-rise":
            return f"{name} first hurts, then helps: best at {p} = {self.threshold:.3g} (true reward {self.best_true_reward:.4f})"
        return f"{name} leaves the true reward unchanged ({self.reference_true_reward:.4f}): the proxy carries no signal"


def diagnose_curve(c: Curve) -> Diagnosis:
    """Diagnose an already computed :class:`Curve`."""
    f = c.true_reward
    regime = classify(f, scale=c.reward_scale)
    best = int(np.argmax(f))
    reference = c.reference_true_reward
    gain = f[best] - reference
    loss = float(f[best] - f[-1])
    rounding = 1e-12 * c.reward_scale  # sums over prompts differ by ~1e-16 of the rewards' scale
    share: float = loss / gain if gain > rounding else 0.0
    hacking = float("nan")
    if c.replicates is not None:
        hacking = float(np.mean([classify(rep, scale=c.reward_scale) == "rise-then-fall" for rep in c.replicates]))
    return Diagnosis(
        mechanism=c.mechanism,
        parameter=c.parameter,
        regime=regime,
        threshold=float(c.theta[best]),
        best_true_reward=float(f[best]),
        reference_true_reward=reference,
        top_theta=float(c.theta[-1]),
        top_true_reward=float(f[-1]),
        loss_at_top=loss,
        share_of_gain_lost=share,
        hacking_share=hacking,
        curve=c,
    )


def diagnose(
    table: RewardTable | Pools,
    mechanism: str | Mechanism,
    thetas: ArrayLike | None = None,
    **curve_kwargs: Any,
) -> Diagnosis:
    """Compute the curve of ``mechanism`` on ``table`` (see :func:`hedgetune.curve`) and diagnose it."""
    return diagnose_curve(curve(table, mechanism, thetas, **curve_kwargs))
