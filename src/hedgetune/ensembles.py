"""Reward-model ensembles as proxies (Coste et al. 2024, "Reward model ensembles help mitigate
overoptimization"; Eisenstein et al. 2024, "Helping or herding?").

Several proxy columns ``r_1..r_K`` become one, per response:

* ``"mean"``: ``mean_k z_k``;
* ``"min"``: ``min_k z_k`` (worst-case optimisation);
* ``"mean-std"``: ``mean_k z_k - k_penalty * std_k z_k`` (uncertainty-weighted optimisation;
  ``std`` over members, ``ddof = 0``), with the penalty ``k`` set by hand or tuned
  (:func:`tune_ensemble`).

``z_k`` is member ``k`` standardised over the whole table (``(r_k - mean) / std``), so that reward
models on different scales weigh alike; the centres and scales are recorded in the new column's
provenance, so selection on fresh candidates can apply the same transformation. The result is an
ordinary proxy column: every curve, tuning, report and CLI command takes it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ._jsonable import jsonable
from .arrays import FloatArray
from .mechanisms import Mechanism
from .table import RewardTable, TableError

RULES = ("mean", "min", "mean-std")


def ensemble_scores(
    members: Mapping[str, FloatArray],
    rule: str = "mean",
    k: float = 1.0,
    centres: Sequence[float] | None = None,
    scales: Sequence[float] | None = None,
) -> FloatArray:
    """Combine member scores (one array per member, same shape) by ``rule`` after standardising
    each member with ``centres`` and ``scales`` (default: its own mean and standard deviation)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if not (isinstance(k, int | float | np.number) and np.isfinite(k) and k >= 0):
        raise ValueError(f"k must be a finite number >= 0, got {k!r}")
    if len(members) < 2:
        raise TableError(f"an ensemble needs at least two proxy columns, got {list(members)}")
    stacked = np.stack([np.asarray(v, dtype=float) for v in members.values()])
    centre = stacked.mean(axis=tuple(range(1, stacked.ndim))) if centres is None else np.asarray(centres, float)
    scale = stacked.std(axis=tuple(range(1, stacked.ndim))) if scales is None else np.asarray(scales, float)
    constant = [name for name, s in zip(members, scale, strict=True) if not s > 0]
    if constant:
        raise TableError(f"proxy column(s) {constant} are constant: they carry no signal to an ensemble")
    shape = (-1,) + (1,) * (stacked.ndim - 1)
    z = (stacked - centre.reshape(shape)) / scale.reshape(shape)
    if rule == "mean":
        return z.mean(axis=0)
    if rule == "min":
        return z.min(axis=0)
    return z.mean(axis=0) - k * z.std(axis=0)


def ensemble_name(columns: Sequence[str], rule: str, k: float = 1.0) -> str:
    """The new column's name: ``ensemble_mean(a,b)``, ``ensemble_mean-1.5std(a,b)``."""
    tag = f"mean-{k:g}std" if rule == "mean-std" else rule
    return f"ensemble_{tag}({','.join(columns)})"


def with_ensemble(
    table: RewardTable,
    columns: Sequence[str] | None = None,
    rule: str = "mean",
    k: float = 1.0,
    name: str | None = None,
) -> RewardTable:
    """The table with one more proxy, the ensemble of ``columns`` (default: every proxy), made its
    default proxy; its recipe (members, rule, k, centres, scales) goes into the provenance."""
    members = list(columns) if columns is not None else table.proxy_names
    values = {c: table.proxy_values(c) for c in members}
    stacked = np.stack(list(values.values()))
    centres, scales = stacked.mean(axis=1), stacked.std(axis=1)
    combined = ensemble_scores(values, rule, k, centres, scales)
    column = name or ensemble_name(members, rule, k)
    recipe = {
        "ensemble": members,
        "rule": rule,
        "k": k,
        "centres": centres.tolist(),
        "scales": scales.tolist(),
    }
    return table.with_new_proxy(column, combined, json.dumps(recipe))


@dataclass(frozen=True)
class EnsembleTuning:
    """HedgeTune over the ensemble's penalty ``k`` (rule ``"mean-std"``): for each ``k`` on the
    grid, the mechanism tuned on the ensemble proxy and the true reward at its peak, with the
    bootstrap interval; ``best_k`` has the highest peak and ``best`` is its :class:`TuneResult`."""

    members: list[str]
    ks: FloatArray
    thetas: FloatArray
    true_rewards: FloatArray
    true_reward_low: FloatArray
    true_reward_high: FloatArray
    best_k: float
    best: Any  # TuneResult

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "best"}
        out["best"] = self.best.to_dict()
        return jsonable(out)


def tune_ensemble(
    table: RewardTable,
    mechanism: str | Mechanism,
    columns: Sequence[str] | None = None,
    ks: Sequence[float] | None = None,
    **tune_kwargs: Any,
) -> EnsembleTuning:
    """Tune the penalty ``k`` of ``mean - k std`` together with the mechanism's parameter: the
    HedgeTune peak on each ensemble proxy, and the ``k`` whose peak is highest (ties: the smallest
    k). ``tune_kwargs`` go to :func:`hedgetune.tune`. The choice of k is made on the same prompts:
    check it out of sample with :func:`hedgetune.evaluate` on the returned table's proxy."""
    from .tune import tune

    grid = np.asarray(np.linspace(0.0, 3.0, 13) if ks is None else ks, dtype=float)
    if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid < 0):
        raise ValueError(f"ks must be a non-empty list of finite numbers >= 0, got {ks!r}")
    members = list(columns) if columns is not None else table.proxy_names
    results = [tune(with_ensemble(table, members, "mean-std", float(k)), mechanism, **tune_kwargs) for k in grid]
    values = np.array([r.true_reward for r in results])
    best = int(np.flatnonzero(values >= values.max() - 1e-12 * max(1.0, abs(values.max())))[0])
    return EnsembleTuning(
        members=members,
        ks=grid,
        thetas=np.array([r.theta for r in results]),
        true_rewards=values,
        true_reward_low=np.array([r.true_reward_ci[0] for r in results]),
        true_reward_high=np.array([r.true_reward_ci[1] for r in results]),
        best_k=float(grid[best]),
        best=results[best],
    )
