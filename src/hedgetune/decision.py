"""One decision per calibration table: what to deploy, how sure, and what to do next.

:func:`decide` tunes every (proxy, mechanism) pair once and :func:`decision_from` turns the tuning
results (and held-out checks, when there are any) into a :class:`Decision`. Every surface renders
this one object -- ``hedgetune decide``, ``tune``, the demo, the HTML report, ``--save-policy`` --
so they cannot disagree.

The rule, written once:

* a row's **verdict** is its tuning's (:meth:`hedgetune.TuneResult.sentence`): hacking only when
  the fall after the peak exceeds one bootstrap standard error;
* a row's **recommended** parameter is the tuning's safe default: the reference unless the
  conservative rule (a simultaneous lower confidence bound of the gain) finds a sure gain, then the
  point estimate; its **gain** is the true reward there minus the reference's, with a bootstrap
  interval;
* the **deployment** is the row with a sure gain whose gain interval has the highest lower end
  (ties: the higher gain), among the rows the hedged gateway can serve; with none, "do not hedge
  with these proxies".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ._jsonable import jsonable
from .mechanisms import servable
from .tune import OutOfSample, TuneResult, evaluate, tune

#: The mechanisms a decision weighs by default: key -> (registered name, options).
DEFAULT_MECHANISMS: dict[str, tuple[str, dict[str, Any]]] = {
    "bon": ("bon", {}),
    "bop": ("bop", {}),
    "sbon-n4": ("sbon", {"n": 4, "on": "quantile"}),
}

#: One line each: what the three parameters of a row mean.
DEFINITIONS = {
    "tuned": "where the estimated true-reward curve peaks (HedgeTune's point estimate)",
    "conservative": "where a simultaneous 97.5% lower bound of the gain over the reference peaks; the "
                    "reference when no gain is sure (never beyond the tuned value)",
    "recommended": "the safe default: the reference unless the conservative rule finds a sure gain, "
                   "then the tuned value",
}


@dataclass(frozen=True)
class DecisionRow:
    """One (proxy, mechanism) pair: its verdict, parameters and gains."""

    proxy: str
    mechanism: str
    label: str
    parameter: str
    regime: str
    verdict: str
    theta: float
    theta_ci: tuple[float, float]
    theta_ci_note: str
    conservative_theta: float
    recommended_theta: float
    reference_theta: float
    true_reward: float
    true_reward_ci: tuple[float, float]
    reference_true_reward: float
    gain: float
    gain_ci: tuple[float, float]
    sure: bool
    expected_samples: float
    #: Samples per prompt at the largest parameter the pools support (how far they reach).
    supported_samples: float
    next_step: str
    #: Whether the hedged gateway can serve it (Soft Best-of-n tuned on quantiles cannot: the
    #: gateway scores raw proxies); only a servable row can be the deployment.
    servable: bool = True
    held_out_gain: float | None = None
    held_out_gain_se: float | None = None

    @classmethod
    def from_tune(cls, key: str, r: TuneResult, held_out: OutOfSample | None = None) -> DecisionRow:
        held, held_se = None, None
        if held_out is not None:
            diff = np.asarray(held_out.recommended) - np.asarray(held_out.reference)
            held = float(diff.mean())
            held_se = float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else None
        return cls(
            proxy=r.proxy, mechanism=key, label=r.template.short_label(), parameter=r.parameter, regime=r.regime,
            verdict=r.sentence(), theta=r.theta, theta_ci=r.theta_ci, theta_ci_note=r.theta_ci_note,
            conservative_theta=r.conservative_theta, recommended_theta=r.recommended_theta,
            reference_theta=r.reference_theta, true_reward=r.true_reward, true_reward_ci=r.true_reward_ci,
            reference_true_reward=r.reference_true_reward, gain=r.gain, gain_ci=r.gain_ci,
            sure=r.recommended_theta != r.reference_theta,
            expected_samples=r.template.with_theta(r.recommended_theta).expected_samples(),
            supported_samples=r.template.with_theta(min(r.supported_max, r.unhedged_theta)).expected_samples(),
            next_step=r.next_step, servable=_servable(r), held_out_gain=held, held_out_gain_se=held_se,
        )

    def gain_phrase(self) -> str:
        """``Best-of-n with 'length' at n = 11: +0.0354 [+0.0146, +0.0551]``."""
        return (f"{self.label} with '{self.proxy}' at {self.parameter} = {self.recommended_theta:.4g}: "
                f"{self.gain:+.4f} [{self.gain_ci[0]:+.4f}, {self.gain_ci[1]:+.4f}]")

    def sentence(self) -> str:
        """What to do with this row, in words."""
        if not self.sure:
            return f"{self.label} with '{self.proxy}': stay at the reference (no sure gain)"
        if not self.servable:
            return f"{self.gain_phrase()} in calibration, but the gateway cannot serve it (tune on raw scores to deploy it)"
        return f"{self.gain_phrase()} true reward over the reference"

    def to_dict(self) -> dict[str, Any]:
        return dict(jsonable({**asdict(self), "sentence": self.sentence()}))


@dataclass(frozen=True)
class Decision:
    """Every row of a table, the deployment (``None``: do not hedge) and its sentence."""

    rows: tuple[DecisionRow, ...]
    deploy: DecisionRow | None

    def sentence(self) -> str:
        if self.deploy is None:
            return "no proxy gives a sure gain: do not hedge with these proxies (serve the reference)"
        return f"deploy {self.deploy.gain_phrase()} true reward over the reference"

    def ranked(self) -> list[DecisionRow]:
        """Rows by held-out gain where measured, else by the lower end of the gain interval."""
        def key(row: DecisionRow) -> tuple[float, float]:
            primary = row.held_out_gain if row.held_out_gain is not None else row.gain_ci[0]
            return (-primary, -row.gain)

        return sorted(self.rows, key=key)

    def furthest(self, proxy: str) -> DecisionRow | None:
        """The row of ``proxy`` whose mechanism the pools support furthest (most samples per
        prompt at its largest supported parameter)."""
        rows = [r for r in self.rows if r.proxy == proxy]
        return max(rows, key=lambda r: r.supported_samples) if rows else None

    def next_steps(self) -> list[str]:
        """For each proxy whose curves still rise where the pools stop: how many samples would
        resolve them, and which mechanism these pools support furthest."""
        out = []
        for proxy in dict.fromkeys(r.proxy for r in self.rows):
            rising = [r for r in self.rows if r.proxy == proxy and r.next_step]
            best = self.furthest(proxy)
            if not rising or best is None:
                continue
            others = ", ".join(f"{r.label} {r.supported_samples:.3g}" for r in self.rows
                               if r.proxy == proxy and r is not best and math.isfinite(r.supported_samples))
            out.append(f"'{proxy}': {rising[0].label}: {rising[0].next_step}. These pools support {best.label} "
                       f"furthest ({best.supported_samples:.3g} samples per prompt; {others})")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "sentence": self.sentence(),
            "deploy": None if self.deploy is None else self.deploy.to_dict(),
            "rows": [r.to_dict() for r in self.ranked()],
            "next_steps": self.next_steps(),
            "definitions": DEFINITIONS,
        }


def decision_from(
    results: Mapping[tuple[str, str], TuneResult], held_out: Mapping[tuple[str, str], OutOfSample] | None = None
) -> Decision:
    """The decision of tuning results keyed by (proxy, mechanism key)."""
    held_out = held_out or {}
    rows = tuple(DecisionRow.from_tune(key, r, held_out.get((proxy, key))) for (proxy, key), r in results.items())
    sure = [r for r in rows if r.sure and r.servable]
    deploy = max(sure, key=lambda r: (r.gain_ci[0], r.gain)) if sure else None
    return Decision(rows, deploy)


def _servable(r: TuneResult) -> bool:
    try:
        servable(r.template)
    except ValueError:
        return False
    return True


def decide(
    table: Any,
    *,
    proxies: Sequence[str] | None = None,
    mechanisms: Mapping[str, tuple[str, dict[str, Any]]] | None = None,
    bootstrap: int = 1000,
    repeats: int = 0,
    seed: int = 0,
) -> Decision:
    """Tune every (proxy, mechanism) of ``table`` once and decide (``repeats`` > 0: also check each
    on held-out prompts, over that many random half splits)."""
    mechs = mechanisms or DEFAULT_MECHANISMS
    results: dict[tuple[str, str], TuneResult] = {}
    held: dict[tuple[str, str], OutOfSample] = {}
    for proxy in proxies or table.proxy_names:
        for key, (name, options) in mechs.items():
            results[(proxy, key)] = tune(table, name, proxy=proxy, bootstrap=bootstrap, seed=seed, **options)
            if repeats:
                held[(proxy, key)] = evaluate(table, name, proxy=proxy, repeats=repeats, seed=seed,
                                              bootstrap=min(bootstrap, 200), **options)
    return decision_from(results, held)
