"""Exact hacking curves from a calibration table (SPEC §3).

For each parameter value the mechanism is run, in expectation, on every prompt's pool: the pool is
the reference distribution (draws with replacement) and the selection probabilities of the sorted
positions come from the mechanism itself (:meth:`Mechanism.pool_probabilities`). No Monte Carlo:
the curve is exact for the pools, and its uncertainty over prompts comes from a bootstrap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, special, stats

from ._limits import require_memory
from .mechanisms import BestOfN, BestOfPoisson, Mechanism, SoftBestOfN, Tilted
from .mechanisms._numerics import FloatArray
from .mechanisms._selection import average_over_ties
from .mechanisms._subsets import soft_best_of_n_subsets
from .pools import Pools, build_pools
from .table import RewardTable, TableError

Estimator = Literal["plugin", "unbiased"]
MECHANISM_NAMES = ("bon", "sbon", "bop", "tilted")
#: Best-of-Poisson's deployment estimate is used only where a deployment draws more candidates
#: than the smallest pool holds with at most this probability.
POOL_TAIL_TOLERANCE = 0.01


def as_pools(table: RewardTable | Pools, proxy: str | None = None) -> Pools:
    """The sorted pools of a table (or the pools themselves); a clear error for anything else."""
    if isinstance(table, Pools):
        return table
    if not isinstance(table, RewardTable):
        raise TypeError(
            f"expected a RewardTable (see hedgetune.read_table) or its Pools, got {type(table).__name__}"
        )
    return build_pools(table, proxy)


def resolve_estimator(template: Mechanism, estimator: str) -> Estimator:
    """Check the estimator's name; ``"unbiased"`` (what a deployment gets) falls back to
    ``"plugin"`` for the tilted policy, the infinite-sample frontier, which has no deployment."""
    if estimator not in ("plugin", "unbiased"):
        raise ValueError(f"estimator must be 'unbiased' or 'plugin', got {estimator!r}")
    if estimator == "unbiased" and isinstance(template, Tilted):
        return "plugin"
    return estimator  # type: ignore[return-value]


def supported_max(template: Mechanism, pools: Pools, estimator: Estimator) -> float:
    """The largest parameter whose deployment the calibration pools can stand for.

    With the plug-in estimator there is no limit (it resamples the pool). Without replacement:
    Best-of-n up to n = the smallest pool; Best-of-Poisson up to the mu at which a deployment draws
    more candidates than the smallest pool holds with probability :data:`POOL_TAIL_TOLERANCE`;
    Soft Best-of-n needs its n within every pool and leaves beta unlimited.
    """
    if estimator == "plugin":
        return float("inf")
    m = pools.min_size
    if isinstance(template, BestOfN):
        return float(m)
    if isinstance(template, BestOfPoisson):
        return float(
            optimize.brentq(lambda mu: stats.poisson.sf(m - 1, mu) - POOL_TAIL_TOLERANCE, 0.0, 2.0 * m + 10)
        )
    if isinstance(template, SoftBestOfN) and template.n > m:
        raise ValueError(
            f"Soft Best-of-n with n = {template.n} cannot be estimated without replacement from pools of "
            f"{m}; use n <= {m} or estimator='plugin'"
        )
    return float("inf")


def make_mechanism(mechanism: str | Mechanism, *, n: int | None = None, on: str | None = None) -> Mechanism:
    """A mechanism template at its reference parameter, from a name or an instance."""
    if isinstance(mechanism, Mechanism):
        return mechanism
    if not isinstance(mechanism, str):
        raise TypeError(
            f"mechanism must be one of {MECHANISM_NAMES} or a Mechanism, got {type(mechanism).__name__}"
        )
    name = mechanism.lower()
    if name != "sbon" and (n is not None or on is not None):
        raise ValueError(f"n and on apply to 'sbon' only, not {name!r}")
    if name == "bon":
        return BestOfN(1)
    if name == "bop":
        return BestOfPoisson(0.0)
    if name == "tilted":
        return Tilted(0.0)
    if name == "sbon":
        return SoftBestOfN(4 if n is None else n, 0.0, "raw" if on is None else on)  # type: ignore[arg-type]
    raise ValueError(f"unknown mechanism {mechanism!r}; choose one of {MECHANISM_NAMES}")


def default_thetas(
    template: Mechanism, pools: Pools, count: int = 60, estimator: Estimator = "plugin"
) -> FloatArray:
    """A grid from the reference to well past the point where the pool is exhausted (plug-in), or
    to the largest parameter the pools support (without replacement)."""
    m = pools.max_size
    top = supported_max(template, pools, estimator)
    if isinstance(template, BestOfN) and np.isfinite(top):
        return np.unique(np.round(np.geomspace(1, top, min(count, int(top)))))
    if isinstance(template, BestOfPoisson) and np.isfinite(top):
        return np.concatenate([[0.0], np.geomspace(min(0.05, top / 2), top, count - 1)])
    if isinstance(template, BestOfN):
        return np.unique(np.round(np.geomspace(1, max(64, 4 * m), count)))
    if isinstance(template, BestOfPoisson):
        return np.concatenate([[0.0], np.geomspace(0.05, max(64.0, 4.0 * m), count - 1)])
    if isinstance(template, SoftBestOfN) and template.on == "raw":
        spread = float(np.mean([g.proxy.std(axis=1).mean() for g in pools.groups])) or 1.0
        return np.concatenate([[0.0], np.geomspace(0.05, 500.0, count - 1) / spread])
    return np.concatenate([[0.0], np.geomspace(0.05, 500.0, count - 1)])


def unbiased_bon_probabilities(n: float, m: int) -> FloatArray:
    """Best-of-n without replacement from a pool of m: position i (1-based) wins with
    ``C(i-1, n-1) / C(m, n)`` (zero for i < n). Log-space binomials (``gammaln``)."""
    if n != np.floor(n) or not 1 <= n <= m:
        raise ValueError(f"the unbiased estimator needs a whole n in [1, pool size {m}], got n={n:g}")
    return _bon_weight_rows(np.array([float(n)]), m)


def pool_tail(template: Mechanism, theta: float, m: int) -> float:
    """Probability that a deployment draws more candidates than a pool of ``m`` holds (0 for
    mechanisms with a fixed count n <= m; the Poisson tail P(1 + K > m) for Best-of-Poisson)."""
    if isinstance(template, BestOfPoisson):
        return float(stats.poisson.sf(m - 1, theta)) if theta > 0 else 0.0
    if isinstance(template, Tilted):
        return 1.0 if theta > 0 else 0.0
    return 0.0 if template.with_theta(theta).expected_samples() <= m else 1.0


def _bon_weight_rows(counts: FloatArray, m: int, start: int = 0) -> FloatArray:
    """``C(i-1, c-1) / C(m, c)`` for each count c (rows) and position i = start+1..m (columns)."""
    i = np.arange(start + 1, m + 1, dtype=float)[None, :]
    c = counts[:, None]
    ok = i >= c
    with np.errstate(invalid="ignore"):
        log_w = (
            special.gammaln(i)
            - special.gammaln(c)
            - special.gammaln(np.where(ok, i - c + 1, 1.0))
            - (special.gammaln(m + 1) - special.gammaln(c + 1) - special.gammaln(m - c + 1))
        )
    return np.where(ok, np.exp(np.where(ok, log_w, -np.inf)), 0.0)


def _poisson_window(mu: float, m: int) -> tuple[FloatArray, FloatArray]:
    """The Poisson counts k < m - 1 whose probability exceeds 1e-18, and those probabilities."""
    spread = 10.0 * np.sqrt(mu) + 40.0
    k = np.arange(max(0, int(mu - spread)), min(m - 1, int(np.ceil(mu + spread)) + 1), dtype=float)
    pmf = stats.poisson.pmf(k, mu)
    keep = pmf > 1e-18
    return k[keep], pmf[keep]


def _poisson_mixture_of_bon(mu: float, m: int, derivative: bool, start: int = 0) -> FloatArray:
    """Best-of-Poisson without replacement: ``sum_k Pois(k; mu) w_BoN(k + 1)`` over the counts a pool
    of m can stand for, the draws of m or more candidates valued as m. Only the counts whose Poisson
    probability is above 1e-18 (a window around mu) are summed: O(window x m)."""
    if mu <= 0 and not derivative:
        return np.full((1, m - start), 1.0 / m)
    k, pmf = _poisson_window(mu, m)
    rows = _bon_weight_rows(k + 1.0, m, start)  # (K, m - start)
    whole_pool = _bon_weight_rows(np.array([float(m)]), m, start)[0]
    if derivative:  # d/dmu Pois(k; mu) = Pois(k - 1; mu) - Pois(k; mu); the tail takes the rest
        dpmf = stats.poisson.pmf(k - 1, mu) - pmf
        return (dpmf @ (rows - whole_pool))[None, :]
    tail = max(0.0, 1.0 - pmf.sum())  # P(K >= m - 1) and the (< 1e-16) mass outside the window
    return (pmf @ rows + tail * whole_pool)[None, :]


def _negligible_below(template: Mechanism, theta: float, m: int) -> int:
    """A position below which a deployment's weights add up to less than 1e-17: with at least c
    candidates, all of them fall below position s with probability C(s, c)/C(m, c) <= (s/m)^c."""
    if isinstance(template, BestOfN):
        fewest = theta
    elif isinstance(template, BestOfPoisson) and theta > 0:
        k, _ = _poisson_window(theta, m)
        fewest = float(k[0]) + 1.0 if k.size else float(m)
    else:
        return 0
    return max(0, int(np.floor(m * _NEGLIGIBLE ** (1.0 / max(fewest, 1.0)))) - 1)


@lru_cache(maxsize=512)
def _sbon_quantile_weights(n: int, beta: float, m: int) -> tuple[FloatArray, FloatArray]:
    """Soft Best-of-n on quantiles over the n-subsets of a pool of m, and the beta-derivative: rank
    based, so the same for every prompt; cached, as tuning asks for both at the same beta."""
    positions = np.arange(1, m + 1)[None, :] / (m + 1)
    values, slopes = soft_best_of_n_subsets(positions, beta, n, derivative=True)
    assert slopes is not None
    values.setflags(write=False)
    slopes.setflags(write=False)
    return values, slopes


def deployment_probabilities(
    template: Mechanism, theta: float, m: int, derivative: bool = False, start: int = 0
) -> FloatArray:
    """Without-replacement (deployment) weights of the sorted positions of a pool of ``m`` for a
    rank-based mechanism at ``theta`` (their derivative in theta with ``derivative``), ``(1, m)``.

    * Best-of-n (whole n <= m): ``C(i-1, n-1) / C(m, n)``, the U-statistic over n-subsets.
    * Soft Best-of-n on quantiles (n <= m): the U-statistic over n-subsets of the softmax on the
      positions' expected population quantiles ``i / (m + 1)``.
    * Best-of-Poisson: the Poisson mixture of the Best-of-n weights, ``sum_k Pois(k; mu) w(k + 1)``;
      the draws of more than m candidates, which no pool of m can stand for, are counted as m
      (their probability is :func:`pool_tail`: use mu only where it is small).
    The tilted policy is not a sampler with finitely many candidates: it has no deployment estimator.
    With ``start``, only positions ``start + 1 .. m`` are returned, ``(1, m - start)``.
    """
    mech = template.with_theta(theta)
    if isinstance(mech, BestOfN):
        if derivative:
            raise ValueError(
                "Best-of-n has a whole-number parameter: no derivative of its deployment weights"
            )
        return unbiased_bon_probabilities(theta, m)[:, start:]
    if isinstance(mech, SoftBestOfN) and mech.on == "quantile":
        values, slopes = _sbon_quantile_weights(mech.n, mech.beta, m)
        return (slopes if derivative else values)[:, start:]
    if isinstance(mech, BestOfPoisson):
        return _poisson_mixture_of_bon(theta, m, derivative, start)
    raise ValueError(
        f"{mech.name} has no without-replacement (deployment) estimator on rank positions"
        + (
            "; the tilted policy is the infinite-sample frontier, not a sampler"
            if isinstance(mech, Tilted)
            else ""
        )
    )


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

    def columns(self) -> dict[str, FloatArray]:
        tail = {} if self.pool_tail is None else {"pool_tail": self.pool_tail}
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
        """Plain Python values (lists for arrays), without the bootstrap replicates."""
        out = {k: v for k, v in asdict(self).items() if k != "replicates"}
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in out.items()}

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


def bootstrap_weights(n_prompts: int, replicates: int, seed: int | None) -> FloatArray:
    """Multinomial resampling counts of prompts, one row per bootstrap replicate."""
    # The counts, the replicate curves and their derivatives: a few (replicates x prompts) arrays.
    require_memory(4.0 * replicates * n_prompts, f"a bootstrap of {replicates} replicates over {n_prompts} prompts")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_prompts, np.full(n_prompts, 1.0 / n_prompts), size=replicates).astype(float)


#: Positions whose cumulative selection probability stays below this for every parameter of a
#: block are skipped: they change a mean by less than this times the largest |reward|.
_NEGLIGIBLE = 1e-17


def rank_probabilities(
    template: Mechanism, thetas: FloatArray, m: int, estimator: Estimator, derivative: bool = False
) -> tuple[int, FloatArray]:
    """Probabilities of the sorted positions of a pool of ``m`` for a rank-based mechanism (their
    derivatives in theta with ``derivative=True``).

    Returns ``(start, values)`` with ``values`` of shape ``(T, m - start)`` for positions
    ``start + 1 .. m``; the positions below ``start`` have cumulative probability under
    ``1e-17`` at every parameter (large n or mu put all the mass at the top of the pool).
    """
    if isinstance(template, SoftBestOfN) and estimator == "plugin":  # on quantiles: the pool's own i/m
        grid_scores = np.zeros((1, m))
        per_theta = [template.with_theta(float(t)) for t in thetas]
        if derivative:
            return 0, np.concatenate([mech.pool_probabilities_dtheta(grid_scores) for mech in per_theta])
        return 0, np.concatenate([mech.pool_probabilities(grid_scores) for mech in per_theta])
    if estimator == "unbiased":
        starts = [_negligible_below(template, float(t), m) for t in thetas]
        start = min(starts)
        values = np.zeros((thetas.size, m - start))
        for row, (theta, own) in enumerate(zip(thetas, starts, strict=True)):
            values[row, own - start :] = deployment_probabilities(template, float(theta), m, derivative, own)[0]
        return start, values
    coarse = np.linspace(0.0, 1.0, 129)
    negligible = template.cdf_many(thetas, coarse) <= _NEGLIGIBLE
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
    for group in pools.groups:
        w_g = None if weights is None else weights[:, group.prompts]
        if per_prompt:  # softmax on raw scores: probabilities differ from prompt to prompt
            quantiles = group.quantiles()
            for k, theta in enumerate(thetas):
                probs = _raw_probabilities(template, float(theta), group.proxy, estimator)
                values = np.einsum("pm,pm->p", probs, group.true)
                true[k] += values.sum()
                quant[k] += np.einsum("pm,pm->", probs, quantiles)
                proxy[k] += np.einsum("pm,pm->", probs, group.proxy)
                if reps is not None and w_g is not None:
                    reps[:, k] += w_g @ values
                if kl_pool:
                    klp[k] += _pool_kl(probs).sum()
                if dtrue is not None:
                    dvalues = np.einsum(
                        "pm,pm->p",
                        _raw_probabilities(template, float(theta), group.proxy, estimator, derivative=True),
                        group.true,
                    )
                    dtrue[k] += dvalues.sum()
                    if dreps is not None and w_g is not None:
                        dreps[:, k] += w_g @ dvalues
            continue
        # Rank-based: the same probabilities for every prompt of the group, so only the sums over
        # prompts of each sorted position's true reward, quantile and proxy are needed.
        g_all, q_all, s_all = group.true.sum(axis=0), group.quantile_sum(), group.proxy.sum(axis=0)
        resampled_all = None if w_g is None else w_g @ group.true  # (B, m)
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
            if dtrue is not None:
                dstart, dprobs = rank_probabilities(
                    template, thetas[block], group.m, estimator, derivative=True
                )
                dtrue[block] += dprobs @ g_all[dstart:]
                if dreps is not None and resampled_all is not None:
                    dreps[:, block] += resampled_all[:, dstart:] @ dprobs.T
            if kl_pool:
                if untied:
                    klp[block] += untied * _pool_kl(probs, group.m)
                for j, k in enumerate(range(block.start, block.stop)):
                    if tied.size:
                        full = np.zeros((tied.size, group.m))
                        full[:, start:] = probs[j]
                        klp[k] += _pool_kl(average_over_ties(group.proxy[tied], full), group.m).sum()
    return PoolSums(true, quant, proxy, klp, reps, dtrue, dreps)


def _raw_probabilities(
    template: Mechanism,
    theta: float,
    sorted_scores: FloatArray,
    estimator: Estimator,
    derivative: bool = False,
) -> FloatArray:
    """Selection probabilities (or their theta-derivative) of a mechanism that sees raw scores."""
    mech = template.with_theta(theta)
    if estimator == "plugin":
        return (
            mech.pool_probabilities_dtheta(sorted_scores)
            if derivative
            else mech.pool_probabilities(sorted_scores)
        )
    if not isinstance(mech, SoftBestOfN):
        raise ValueError(f"{mech.name} on raw scores has no without-replacement (deployment) estimator")
    if np.isinf(mech.beta):
        return np.zeros_like(sorted_scores) if derivative else mech.pool_probabilities(sorted_scores)
    values, slopes = soft_best_of_n_subsets(sorted_scores, mech.beta, mech.n, derivative)
    return slopes if derivative and slopes is not None else values


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
    n: int | None = None,
    on: str | None = None,
    proxy: str | None = None,
    estimator: Estimator = "unbiased",
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int | None = 0,
) -> Curve:
    """The hacking curve of ``mechanism`` on a calibration table.

    Parameters
    ----------
    table : the calibration table (or its pools, already sorted by :func:`build_pools`).
    mechanism : ``"bon"``, ``"bop"``, ``"sbon"``, ``"tilted"`` or a :class:`Mechanism` instance.
    thetas : parameter values (default: a grid from the reference to past pool exhaustion).
    n, on : for ``"sbon"``, the number of candidates and the scores the softmax sees.
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
        sits far beyond a deployment's (SPEC §3b).
    bootstrap : number of bootstrap replicates over prompts for the band (0 for none).
    confidence : coverage of the band.
    seed : seed of the bootstrap.
    """
    pools = as_pools(table, proxy)
    template = make_mechanism(mechanism, n=n, on=on)
    estimator = resolve_estimator(template, estimator)
    grid = (
        default_thetas(template, pools, estimator=estimator)
        if thetas is None
        else _check_thetas(thetas, template)
    )
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    if estimator == "unbiased":
        needed = grid.max() if isinstance(template, BestOfN) else getattr(template, "n", 1)
        if needed > pools.min_size:
            raise ValueError(
                f"the unbiased estimator needs n <= the smallest pool ({pools.min_size}); got n up to {needed:g}"
            )
    weights = bootstrap_weights(pools.n_prompts, bootstrap, seed) if bootstrap > 0 else None
    ev = pool_sums(pools, template, grid, estimator, weights)
    total = pools.n_prompts
    mean_true = ev.true / total
    if ev.replicates is not None:
        replicates = ev.replicates / total
        alpha = (1 - confidence) / 2
        low, high = np.quantile(replicates, [alpha, 1 - alpha], axis=0)
        reference_reps = pool_sums(
            pools, template, np.array([template.reference_theta]), weights=weights, kl_pool=False
        )
        assert reference_reps.replicates is not None
        gains = replicates - reference_reps.replicates / total
        gain_low, gain_high = np.quantile(gains, [alpha, 1 - alpha], axis=0)
    else:
        replicates, low, high = None, np.full_like(mean_true, np.nan), np.full_like(mean_true, np.nan)
        gain_low = gain_high = None
    mechs = [template.with_theta(float(th)) for th in grid]
    analytic = np.array([_analytic_kl(mech) for mech in mechs])
    tail = None
    if estimator == "unbiased":
        tail = np.array(
            [sum(g.size * pool_tail(template, float(th), g.m) for g in pools.groups) / total for th in grid]
        )
    reference = sum(float(g.true.mean(axis=1).sum()) for g in pools.groups) / total
    return Curve(
        mechanism=template.name,
        parameter=template.parameter,
        label=repr(template.with_theta(template.reference_theta)),
        estimator=estimator,
        proxy=pools.proxy_name,
        theta=grid,
        expected_samples=np.array([mech.expected_samples() for mech in mechs]),
        true_reward=mean_true,
        true_reward_low=low,
        true_reward_high=high,
        proxy_quantile=ev.quantile / total,
        proxy_reward=ev.proxy / total,
        kl=analytic,
        kl_pool=ev.kl_pool / total,
        reference_true_reward=reference,
        n_prompts=total,
        confidence=confidence,
        gain_low=gain_low,
        gain_high=gain_high,
        replicates=replicates,
        pool_tail=tail,
        reward_scale=pools.reward_scale,
    )


def _analytic_kl(mech: Mechanism) -> float:
    if isinstance(mech, SoftBestOfN) and mech.on == "raw":
        return float("nan")
    return mech.kl()


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


__all__ = ["Curve", "TableError", "curve", "deployment_probabilities", "make_mechanism", "pool_tail"]
