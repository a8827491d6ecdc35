"""Exact hacking curves from a calibration table (docs/SPEC.md §3).

For each parameter value the mechanism is run, in expectation, on every prompt's pool: the pool is
the reference distribution (draws with replacement) and the selection probabilities of the sorted
positions come from the mechanism itself (:meth:`Mechanism.pool_probabilities`). No Monte Carlo:
the curve is exact for the pools, and its uncertainty over prompts comes from a bootstrap.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._jsonable import jsonable
from ._limits import require_memory
from .arrays import FloatArray, IntArray
from .mechanisms import POOL_TAIL_TOLERANCE as POOL_TAIL_TOLERANCE
from .mechanisms import BestOfN, Mechanism, SetRule, make
from .mechanisms import Estimator as Estimator
from .mechanisms.toolkit import NEGLIGIBLE_MASS, average_over_ties
from .pools import UNAVERAGED_TRUE, Pools, SharedValues, SizeGroup, build_pools
from .streaming import StreamedPools
from .table import RewardTable, TableError


def as_pools(table: RewardTable | Pools, proxy: str | None = None, template: Mechanism | None = None) -> Pools:
    """The sorted pools of a table (or the pools themselves), with the columns ``template`` needs
    besides the proxy; a clear error for anything else."""
    extras = template.extras() if isinstance(template, SetRule) else ()
    if isinstance(table, StreamedPools):  # read from disk a chunk at a time: ask for the columns
        if proxy is not None and proxy != table.proxy_name:
            raise ValueError(f"this streamed table ranks by {table.proxy_name!r}: scan it with proxy={proxy!r}")
        return table.with_extras(extras) if set(extras) - set(table.extras) else table
    if isinstance(table, Pools):
        missing = [name for name in extras if any(name not in g.extras for g in table.groups)]
        if missing:
            raise TableError(f"these pools lack {missing}: build them with build_pools(table, extras={missing})")
        return table
    if not isinstance(table, RewardTable):
        raise TypeError(
            f"expected a RewardTable (see hedgetune.read_table) or its Pools, got {type(table).__name__}"
        )
    for name in extras:
        if name != "pairwise_similarity" and name not in table.proxies:
            raise TableError(
                f"{template.display_name if template else 'this mechanism'} needs the column {name!r}; "
                f"the table has {table.proxy_names} (pass column=... to name another)"
            )
    return build_pools(table, proxy, extras)


def resolve_estimator(template: Mechanism, estimator: str) -> Estimator:
    """Check the estimator's name; ``"unbiased"`` (what a deployment gets) falls back to
    ``"plugin"`` for a mechanism with no deployment (the tilted policy, the infinite-sample
    frontier)."""
    if estimator not in ("plugin", "unbiased"):
        raise ValueError(f"estimator must be 'unbiased' or 'plugin', got {estimator!r}")
    if estimator == "unbiased" and not template.deployable:
        return "plugin"
    if estimator == "plugin" and isinstance(template, SetRule):
        raise ValueError(
            f"{template.display_name} is estimated without replacement only (a U-statistic over the "
            "pool's n-subsets): use estimator='unbiased'"
        )
    return estimator  # type: ignore[return-value]


@dataclass(frozen=True)
class Inputs:
    """What every analysis starts from: the mechanism's template, the sorted pools with the
    columns it needs, and the estimator resolved for it."""

    template: Mechanism
    pools: Pools
    estimator: Estimator


def prepare(
    table: RewardTable | Pools,
    mechanism: str | Mechanism,
    *,
    proxy: str | None = None,
    estimator: str = "unbiased",
    **options: Any,
) -> Inputs:
    """The one input normaliser of :func:`curve`, :func:`hedgetune.tune` and
    :func:`hedgetune.diagnose`: a registered name with its options (``n``, ``on``) or an instance
    becomes a template at its reference parameter, the table its sorted pools, the estimator's
    name a checked one."""
    template = make(mechanism, **options)
    pools = as_pools(table, proxy, template)
    return Inputs(template, pools, resolve_estimator(template, estimator))


@dataclass(frozen=True)
class Curve:
    """A hacking curve: what each parameter value does to the true reward, proxy and KL.

    All arrays have one entry per parameter value ``theta``. ``true_reward`` is the mean over
    prompts of the expected true reward of the selected response; ``true_reward_low/high`` the
    bootstrap band over prompts. ``proxy_quantile`` is the expected within-pool quantile of the
    selected response (0.5 = reference), ``proxy_reward`` its expected raw proxy. ``kl`` is the
    mechanism's analytic ``KL(pi_theta || pi_ref)`` for continuous proxies (NaN where it depends
    on the raw-score distribution), ``kl_pool`` the divergence of the selection distribution from
    uniform over the pool, ``sum_i P_i log(m P_i)``, tie-aware. ``gain_low/high`` is the bootstrap
    band of the gain over the reference policy, paired within each replicate: near the reference it
    is far narrower than the band of the level, and it is what says whether optimising helps.
    """

    mechanism: str
    parameter: str
    label: str
    estimator: str
    proxy: str
    theta: FloatArray
    expected_samples: FloatArray
    true_reward: FloatArray
    true_reward_low: FloatArray
    true_reward_high: FloatArray
    proxy_quantile: FloatArray
    proxy_reward: FloatArray
    kl: FloatArray
    kl_pool: FloatArray
    reference_true_reward: float
    n_prompts: int
    confidence: float
    gain_low: FloatArray | None = None
    gain_high: FloatArray | None = None
    replicates: FloatArray | None = field(default=None, repr=False)
    pool_tail: FloatArray | None = None
    reward_scale: float = 1.0
    supported_max: float = float("inf")
    template: Mechanism = field(default_factory=lambda: BestOfN(1), repr=False, compare=False)
    monte_carlo_se: FloatArray | None = None

    def columns(self) -> dict[str, FloatArray]:
        tail = {} if self.pool_tail is None else {"pool_tail": self.pool_tail}
        if self.monte_carlo_se is not None:
            tail["monte_carlo_se"] = self.monte_carlo_se
        return {
            "theta": self.theta,
            "expected_samples": self.expected_samples,
            "true_reward": self.true_reward,
            "true_reward_low": self.true_reward_low,
            "true_reward_high": self.true_reward_high,
            "proxy_quantile": self.proxy_quantile,
            "proxy_reward": self.proxy_reward,
            "kl": self.kl,
            "kl_pool": self.kl_pool,
        } | tail

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON values (lists for arrays, ``None`` for NaN), without the bootstrap
        replicates; the mechanism as its name and options."""
        out = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("replicates", "template")
        }
        out["options"] = self.template.options
        return jsonable(out)

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.columns())

    def to_arrow(self) -> Any:
        import pyarrow as pa

        return pa.table(self.columns())


@dataclass(frozen=True)
class PoolSums:
    """Per-parameter sums over prompts (divide by the prompt count for means).

    ``dtrue`` and ``dreplicates`` (with ``derivative=True``) are the exact derivatives in theta of
    ``true`` and ``replicates``: HedgeTune's residual.
    """

    true: FloatArray  # (T,)
    quantile: FloatArray
    proxy: FloatArray
    kl_pool: FloatArray
    replicates: FloatArray | None  # (B, T) sums over resampled prompts
    dtrue: FloatArray | None = None
    dreplicates: FloatArray | None = None
    mc_variance: FloatArray | None = None  # (T,) Monte Carlo variance of ``true`` (subset sampling)


def bootstrap_weights(n_prompts: int, replicates: int, seed: int | None) -> FloatArray:
    """Multinomial resampling counts of prompts, one row per bootstrap replicate."""
    # The counts, the replicate curves and their derivatives: a few (replicates x prompts) arrays.
    require_memory(4.0 * replicates * n_prompts, f"a bootstrap of {replicates} replicates over {n_prompts} prompts")
    rng = np.random.default_rng(seed)
    # Each replicate draws n_prompts prompts uniformly with replacement; its row counts the draws
    # (a multinomial, counted with one bincount: 5x faster than Generator.multinomial).
    draws = rng.integers(0, n_prompts, size=(replicates, n_prompts))
    draws += np.arange(replicates)[:, None] * n_prompts
    counts = np.bincount(draws.reshape(-1), minlength=replicates * n_prompts)
    return counts.reshape(replicates, n_prompts).astype(float)


def rank_probabilities(
    template: Mechanism, thetas: FloatArray, m: int, estimator: Estimator, derivative: bool = False
) -> tuple[int, FloatArray]:
    """Probabilities of the sorted positions of a pool of ``m`` for a rank-based mechanism (their
    derivatives in theta with ``derivative=True``).

    Returns ``(start, values)`` with ``values`` of shape ``(T, m - start)`` for positions
    ``start + 1 .. m``; the positions below ``start`` have cumulative probability under
    ``1e-17`` at every parameter (large n or mu put all the mass at the top of the pool).
    """
    if estimator == "plugin" and type(template).pool_probabilities is not Mechanism.pool_probabilities:
        # A mechanism with its own pool rule (Soft Best-of-n on the pool's quantiles i/m).
        grid_scores = np.zeros((1, m))
        per_theta = [template.with_theta(float(t)) for t in thetas]
        if derivative:
            return 0, np.concatenate([mech.pool_probabilities_dtheta(grid_scores) for mech in per_theta])
        return 0, np.concatenate([mech.pool_probabilities(grid_scores) for mech in per_theta])
    if estimator == "unbiased":
        return template.deployment_rows(thetas, m, derivative)
    coarse = np.linspace(0.0, 1.0, 129)
    negligible = template.cdf_many(thetas, coarse) <= NEGLIGIBLE_MASS
    last = np.where(negligible.any(axis=1), 128 - np.argmax(negligible[:, ::-1], axis=1), 0)
    start = int(np.floor(coarse[int(last.min())] * m)) if negligible[:, 0].all() else 0
    grid = np.arange(start, m + 1) / m
    cumulative = template.cdf_dtheta_many(thetas, grid) if derivative else template.cdf_many(thetas, grid)
    return start, np.diff(cumulative, axis=1)


#: Largest number of (parameter x position) probabilities held at once.
_CHUNK_ELEMENTS = 2_000_000


def pool_sums(
    pools: Pools,
    template: Mechanism,
    thetas: FloatArray,
    estimator: Estimator = "plugin",
    weights: FloatArray | None = None,
    kl_pool: bool = True,
    derivative: bool = False,
) -> PoolSums:
    """Sums over prompts of the expected true reward, proxy quantile, raw proxy and pool KL at each
    parameter; with ``weights`` (bootstrap counts, ``(B, P)``) also per replicate; with
    ``derivative`` also the derivative of the true-reward sums in theta."""
    t = thetas.size
    true, quant, proxy, klp = (np.zeros(t) for _ in range(4))
    reps = None if weights is None else np.zeros((weights.shape[0], t))
    dtrue = np.zeros(t) if derivative else None
    dreps = None if (weights is None or not derivative) else np.zeros((weights.shape[0], t))
    per_prompt = template.uses_raw_scores
    mc_var = np.zeros(t) if isinstance(template, SetRule) else None
    for group in pools.groups:
        w_g = None if weights is None else weights[:, group.prompts]
        if per_prompt:  # probabilities that differ from prompt to prompt (raw scores, drawn sets)
            for k, values in enumerate(_prompt_values(pools, group, template, thetas, estimator, derivative, kl_pool)):
                true[k] += values["true"].sum()
                quant[k] += values["quantile"].sum()
                proxy[k] += values["proxy"].sum()
                if reps is not None and w_g is not None:
                    reps[:, k] += w_g @ values["true"]
                if kl_pool:
                    klp[k] += values["kl"].sum()
                if "variance" in values and mc_var is not None:
                    mc_var[k] += values["variance"].sum()
                if dtrue is not None and "dtrue" in values:
                    dtrue[k] += values["dtrue"].sum()
                    if dreps is not None and w_g is not None:
                        dreps[:, k] += w_g @ values["dtrue"]
            continue
        # Rank-based: the same probabilities for every prompt of the group, so only the sums over
        # prompts of each sorted position's true reward, quantile and proxy are needed.
        g_all, q_all, s_all = group.true_sum, group.quantile_sum(), group.proxy_sum
        # The replicates: either resample the positions' sums once, (B, P) @ (P, m), then weigh them
        # per parameter, or value each prompt per parameter, (P, m) @ (m, T), then resample those.
        # Same numbers; the cheaper order wins (the second when parameters are fewer than replicates).
        by_prompt = w_g is not None and group.size * t * (group.m + w_g.shape[0]) < w_g.shape[0] * group.m * (group.size + t)
        resampled_all = None if (w_g is None or by_prompt) else w_g @ group.true  # (B, m)
        tied = np.flatnonzero(group.has_ties)
        untied = group.size - tied.size
        step = max(1, _CHUNK_ELEMENTS // group.m)
        for lo in range(0, t, step):
            block = slice(lo, min(t, lo + step))
            start, probs = rank_probabilities(template, thetas[block], group.m, estimator)
            g_sum, q_sum, s_sum = g_all[start:], q_all[start:], s_all[start:]
            resampled_true = None if resampled_all is None else resampled_all[:, start:]
            true[block] += probs @ g_sum
            quant[block] += probs @ q_sum
            proxy[block] += probs @ s_sum
            if reps is not None and resampled_true is not None:
                reps[:, block] += resampled_true @ probs.T
            elif reps is not None and by_prompt and w_g is not None:
                reps[:, block] += (_per_prompt_values(probs, group.true[:, start:]) @ w_g.T).T
            if dtrue is not None:
                dstart, dprobs = rank_probabilities(
                    template, thetas[block], group.m, estimator, derivative=True
                )
                dtrue[block] += dprobs @ g_all[dstart:]
                if dreps is not None and resampled_all is not None:
                    dreps[:, block] += resampled_all[:, dstart:] @ dprobs.T
                elif dreps is not None and by_prompt and w_g is not None:
                    dreps[:, block] += (_per_prompt_values(dprobs, group.true[:, dstart:]) @ w_g.T).T
            if kl_pool:
                if untied:
                    klp[block] += untied * _pool_kl(probs, group.m)
                for j, k in enumerate(range(block.start, block.stop)):
                    if tied.size:
                        full = np.zeros((tied.size, group.m))
                        full[:, start:] = probs[j]
                        klp[k] += _pool_kl(average_over_ties(group.proxy[tied], full), group.m).sum()
    return PoolSums(true, quant, proxy, klp, reps, dtrue, dreps, mc_var)


def _per_prompt_values(probs: FloatArray, values: FloatArray) -> FloatArray:
    """``probs @ values.T``, ``(T, P)``: each parameter's value on each prompt. Rows of ``probs``
    often start with many zeros (large n or mu weigh only the top of the pool), so rows are taken
    in groups of similar width, each product over the columns from its rows' first nonzero one.
    ``(T, m) @ (m, P)`` is also the order BLAS runs faster here."""
    width = probs.shape[1]
    first = np.argmax(probs != 0, axis=1)  # an all-zero row counts as full width
    level = np.floor(np.log2(np.maximum(width - first, 1)))  # widths within a factor of 2
    out = np.empty((probs.shape[0], values.shape[0]))
    for k in np.unique(level):
        rows = np.flatnonzero(level == k)
        col = int(first[rows].min())
        out[rows] = probs[rows, col:] @ values[:, col:].T
    return out


def _prompt_values(
    pools: Pools, group: SizeGroup, template: Mechanism, thetas: FloatArray, estimator: Estimator,
    derivative: bool, kl: bool,
) -> Iterator[dict[str, FloatArray]]:
    """For each parameter, each prompt's values (``(P_m,)`` each): ``true``, ``quantile``,
    ``proxy``; ``kl`` (with ``kl``), ``variance`` (the Monte Carlo variance, where sampled) and
    ``dtrue`` (with ``derivative``, where the mechanism has one). Read from, and added to, the
    pools' :class:`~hedgetune.pools.SharedValues` when they keep this mechanism's."""
    shared = pools.shared
    if shared is None or group.source is None or shared.key != _shared_key(template, estimator):
        yield from _computed_values(template, group, thetas, estimator, derivative, kl, pools.n_prompts)
        return
    wanted = "dtrue" if derivative else "true"

    def unknown(theta: float) -> IntArray:  # rows of this group not yet computed at theta
        column = shared.values.get(theta, {}).get(wanted)
        return np.arange(group.size) if column is None else np.flatnonzero(np.isnan(column[group.source]))

    todo = {theta: unknown(theta) for theta in map(float, thetas)}
    missing = [theta for theta, rows in todo.items() if rows.size]
    if missing:  # computed together (a drawn set's work is shared by the parameters)
        rows = np.unique(np.concatenate([todo[theta] for theta in missing]))
        part = group.take(rows, group.source[rows])  # numbered as in the whole pools: the same drawn subsets
        computed = _computed_values(template, part, np.array(missing), estimator, derivative, True, shared.pools.n_prompts)
        for theta, values in zip(missing, computed, strict=True):
            kept = shared.values.setdefault(theta, {})
            for name, column in values.items():
                kept.setdefault(name, np.full(shared.pools.n_prompts, np.nan))[part.prompts] = column
    for theta in thetas:
        kept = shared.values[float(theta)]
        yield {name: column[group.source] for name, column in kept.items() if derivative or name != "dtrue"}


def _shared_key(template: Mechanism, estimator: Estimator) -> tuple[Any, ...]:
    """What :class:`~hedgetune.pools.SharedValues` are kept for: a mechanism (at its reference)
    and an estimator."""
    return (repr(template.with_theta(template.reference_theta)), estimator)


def shared_values(pools: Pools, template: Mechanism, estimator: Estimator) -> Pools:
    """``pools`` keeping their prompts' values of ``template`` with ``estimator`` for the pools
    of subsets of their prompts (:func:`hedgetune.pools.select_prompts`)."""
    return pools.with_shared(SharedValues(pools, _shared_key(template, estimator)))


def _computed_values(
    template: Mechanism, group: SizeGroup, thetas: FloatArray, estimator: Estimator, derivative: bool, kl: bool,
    n_prompts: int,
) -> Iterator[dict[str, FloatArray]]:
    """:func:`_prompt_values` computed on ``group``."""
    quantiles = group.quantiles()
    per_theta = _per_prompt_probabilities(template, group, thetas, estimator, derivative, n_prompts)
    for probs, slopes, variance, true_values in per_theta:
        values = {
            "true": np.einsum("pm,pm->p", probs, true_values),
            "quantile": np.einsum("pm,pm->p", probs, quantiles),
            "proxy": np.einsum("pm,pm->p", probs, group.proxy),
        }
        if kl:
            values["kl"] = _pool_kl(probs)
        if variance is not None:
            values["variance"] = variance
        if derivative and slopes is not None:
            values["dtrue"] = np.einsum("pm,pm->p", slopes, true_values)
        yield values


def _per_prompt_probabilities(
    template: Mechanism, group: SizeGroup, thetas: FloatArray, estimator: Estimator, derivative: bool, n_prompts: int
) -> Iterator[tuple[FloatArray, FloatArray | None, FloatArray | None, FloatArray]]:
    """For each parameter: each prompt's position probabilities ``(P_m, m)``, their derivative (or
    ``None``), the Monte Carlo variance of each prompt's value (or ``None`` when exact) and the true
    rewards to weigh them with (``n_prompts``: the table's, which sets the drawn subsets per prompt)."""
    if isinstance(template, SetRule):  # choices that depend on each drawn set (U-statistics)
        true_values = group.extras.get(UNAVERAGED_TRUE, group.true)
        for probs, variance in template.group_probabilities(group, thetas, n_prompts=n_prompts):
            yield probs, None, variance, true_values
        return
    for theta in thetas:
        probs, slopes = _raw_probabilities(template, float(theta), group.proxy, estimator, derivative)
        yield probs, slopes, None, group.true


def _raw_probabilities(
    template: Mechanism,
    theta: float,
    sorted_scores: FloatArray,
    estimator: Estimator,
    derivative: bool = False,
) -> tuple[FloatArray, FloatArray | None]:
    """Selection probabilities of a mechanism that sees raw scores, and their theta-derivative
    with ``derivative`` (one pass computes both without replacement)."""
    mech = template.with_theta(theta)
    if estimator == "plugin":
        slopes = mech.pool_probabilities_dtheta(sorted_scores) if derivative else None
        return mech.pool_probabilities(sorted_scores), slopes
    return mech.raw_deployment_probabilities(sorted_scores, derivative)


def _pool_kl(probs: FloatArray, m: int | None = None) -> FloatArray:
    """``sum_i P_i log(m P_i)`` per row (``m`` defaults to the row length)."""
    m = probs.shape[1] if m is None else m
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(m * probs)
        logs *= probs  # 0 * log 0 = NaN, dropped by nansum: the convention 0 log 0 = 0
    return np.maximum(np.nansum(logs, axis=1), 0.0)


def curve(
    table: RewardTable | Pools,
    mechanism: str | Mechanism,
    thetas: ArrayLike | None = None,
    *,
    proxy: str | None = None,
    estimator: Estimator = "unbiased",
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int | None = 0,
    **options: Any,
) -> Curve:
    """The hacking curve of ``mechanism`` on a calibration table.

    Parameters
    ----------
    table : the calibration table (or its pools, already sorted by :func:`build_pools`).
    mechanism : ``"bon"``, ``"bop"``, ``"sbon"``, ``"tilted"`` or a :class:`Mechanism` instance.
    thetas : parameter values (default: a grid from the reference to past pool exhaustion).
    proxy : which proxy column ranks the responses (default: the table's default proxy).
    estimator : ``"unbiased"`` (the default): what a deployment drawing fresh candidates gets, estimated
        without replacement (U-statistics over the pool's n-subsets for Best-of-n and Soft
        Best-of-n, n up to the smallest pool; the Poisson mixture of Best-of-n values for
        Best-of-Poisson, whose ``pool_tail`` says how often a deployment would draw more candidates
        than the pool holds). Exactly unbiased for Best-of-n, Soft Best-of-n on raw scores and
        Best-of-Poisson up to its tail; Soft Best-of-n on quantiles uses each position's expected
        quantile ``i/(m+1)`` for the unknown population quantile (a small bias, O(1/m)). The
        tilted policy, a frontier rather than a sampler, always uses the plug-in. ``"plugin"``: the
        pool resampled with replacement (any parameter, every mechanism); on small pools its peak
        sits far beyond a deployment's (docs/SPEC.md §3).
    bootstrap : number of bootstrap replicates over prompts for the band (0 for none).
    confidence : coverage of the band.
    seed : seed of the bootstrap.
    options : the mechanism's options, the keyword arguments of its ``template`` (``n`` and ``on``
        for ``"sbon"``, ``n`` and ``column`` for the regularised Best-of-n, ...).
    """
    inputs = prepare(table, mechanism, proxy=proxy, estimator=estimator, **options)
    template, pools, estimator = inputs.template, inputs.pools, inputs.estimator
    grid = template.default_grid(pools, estimator) if thetas is None else _check_thetas(thetas, template)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    if estimator == "unbiased":
        top = template.supported_max(pools, estimator)  # raises where no pool can estimate it
        if template.integer_parameter and grid.max() > top:
            raise ValueError(
                f"the unbiased estimator needs {template.parameter} <= the smallest pool "
                f"({pools.min_size}); got {template.parameter} up to {grid.max():g}"
            )
    weights = bootstrap_weights(pools.n_prompts, bootstrap, seed) if bootstrap > 0 else None
    # With a band, the reference rides along as one more parameter (its replicates pair the gains):
    # one pass over the pools, not two.
    extended = grid if weights is None else np.append(grid, template.reference_theta)
    ev = pool_sums(pools, template, extended, estimator, weights)
    size = grid.size
    total = pools.n_prompts
    mean_true = ev.true[:size] / total
    replicates, low, high, gain_low, gain_high = _band(ev, size, total, confidence)
    analytic = np.full(grid.size, np.nan) if template.uses_raw_scores else template.kl_many(grid)
    tail = None
    if estimator == "unbiased":
        sizes = pools.size_counts()
        tail = np.array(
            [sum(count * template.pool_tail(float(th), m) for m, count in sizes) / total for th in grid]
        )
    reference = pools.reference_sum() / total
    return Curve(
        mechanism=template.name,
        parameter=template.parameter,
        label=template.short_label(),
        estimator=estimator,
        proxy=pools.proxy_name,
        theta=grid,
        expected_samples=template.expected_samples_many(grid),
        true_reward=mean_true,
        true_reward_low=low,
        true_reward_high=high,
        proxy_quantile=ev.quantile[:size] / total,
        proxy_reward=ev.proxy[:size] / total,
        kl=analytic,
        kl_pool=ev.kl_pool[:size] / total,
        reference_true_reward=reference,
        n_prompts=total,
        confidence=confidence,
        gain_low=gain_low,
        gain_high=gain_high,
        replicates=replicates,
        pool_tail=tail,
        reward_scale=pools.reward_scale,
        supported_max=template.supported_max(pools, estimator),
        template=template,
        monte_carlo_se=None
        if ev.mc_variance is None or not ev.mc_variance[:size].any()
        else np.sqrt(ev.mc_variance[:size]) / total,
    )


def _band(ev: PoolSums, size: int, total: int, confidence: float) -> tuple[Any, Any, Any, Any, Any]:
    """The bootstrap replicates of the first ``size`` parameters, their band, and the band of their
    gain over the reference (the last column of the pass); NaN bands without replicates."""
    if ev.replicates is None:
        nan = np.full(size, np.nan)
        return None, nan, nan.copy(), None, None
    replicates = ev.replicates[:, :size] / total
    alpha = (1 - confidence) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha], axis=0)
    gains = replicates - ev.replicates[:, size:] / total
    gain_low, gain_high = np.quantile(gains, [alpha, 1 - alpha], axis=0)
    return replicates, low, high, gain_low, gain_high


def _check_thetas(thetas: ArrayLike | Sequence[float], template: Mechanism) -> FloatArray:
    try:
        grid = np.atleast_1d(np.asarray(thetas, dtype=float))
    except (TypeError, ValueError):
        raise TypeError(f"thetas must be numbers, got {thetas!r}") from None
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError("thetas must be a non-empty 1-D sequence of parameter values")
    if not np.all(np.isfinite(grid)):
        raise ValueError("thetas must be finite")
    if grid.min() < template.reference_theta:
        raise ValueError(
            f"{template.parameter} must be >= {template.reference_theta:g} for {template.name}; got {grid.min():g}"
        )
    return grid


__all__ = ["Curve", "Inputs", "TableError", "curve", "prepare"]
