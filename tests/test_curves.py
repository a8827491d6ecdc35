"""Hacking curves on pools against Monte Carlo, exhaustive enumeration and the analytic limits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import hedgetune as ht
from hedgetune.mechanisms.soft_best_of_n import soft_best_of_n_on_pool


def _small_table(seed: int = 0, prompts: int = 12, m: int = 6, ties: bool = False) -> ht.RewardTable:
    rng = np.random.default_rng(seed)
    proxy = rng.normal(size=(prompts, m))
    if ties:
        proxy = np.round(proxy)  # many tied proxies
    true = proxy + rng.normal(size=(prompts, m))
    return ht.RewardTable.from_arrays(proxy, true)


def _enumerate_selection(scores: np.ndarray, n: int, choose: object) -> np.ndarray:
    """Exact selection probabilities of each pool item: all m^n ordered draws with replacement.

    ``choose(drawn_scores)`` returns the probability vector over the n drawn slots.
    """
    m = scores.size
    probs = np.zeros(m)
    for draw in itertools.product(range(m), repeat=n):
        slot_probs = choose(scores[list(draw)])  # type: ignore[operator]
        for slot, item in enumerate(draw):
            probs[item] += slot_probs[slot] / m**n
    return probs


def _argmax_uniform_ties(drawn: np.ndarray) -> np.ndarray:
    top = drawn == drawn.max()
    return top / top.sum()


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_bon_plugin_equals_enumeration_with_replacement(n: int, ties: bool) -> None:
    table = _small_table(1, prompts=5, m=5, ties=ties)
    expected_true, expected_kl = [], []
    for p in range(table.n_prompts):
        rows = slice(table.offsets[p], table.offsets[p + 1])
        s, g = table.proxy_values()[rows], table.true_reward[rows]  # type: ignore[index]
        probs = _enumerate_selection(s, n, _argmax_uniform_ties)
        expected_true.append(probs @ g)
        nz = probs[probs > 0]
        expected_kl.append(np.sum(nz * np.log(s.size * nz)))
    c = ht.curve(table, "bon", [n], estimator="plugin", bootstrap=0)
    assert c.true_reward[0] == pytest.approx(np.mean(expected_true), rel=1e-12)
    assert c.kl_pool[0] == pytest.approx(np.mean(expected_kl), rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("on", ["raw", "quantile"])
@pytest.mark.parametrize(("n", "beta"), [(2, 0.8), (3, 4.0), (4, 30.0)])
def test_sbon_plugin_equals_enumeration(n: int, beta: float, on: str) -> None:
    table = _small_table(2, prompts=4, m=5)
    expected = []
    for p in range(table.n_prompts):
        rows = slice(table.offsets[p], table.offsets[p + 1])
        s, g = table.proxy_values()[rows], table.true_reward[rows]  # type: ignore[index]
        scale = s if on == "raw" else (np.argsort(np.argsort(s)) + 1) / s.size

        def softmax(drawn: np.ndarray) -> np.ndarray:
            w = np.exp(beta * (drawn - drawn.max()))
            return w / w.sum()

        probs = _enumerate_selection(scale, n, softmax)
        expected.append(probs @ g)
    c = ht.curve(table, "sbon", [beta], n=n, on=on, estimator="plugin", bootstrap=0)
    assert c.true_reward[0] == pytest.approx(np.mean(expected), rel=1e-10)


def test_sbon_pool_probabilities_sum_to_one_and_limits() -> None:
    rng = np.random.default_rng(3)
    scores = np.sort(rng.normal(size=(7, 9)), axis=1)
    for beta in (1e-3, 0.5, 5.0, 80.0, 3e3):
        probs, _ = soft_best_of_n_on_pool(scores, beta, 6)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-10)
    # Gaps of at least 0.05 make every weight ratio e^(-500) or smaller at beta = 1e4: Best-of-n.
    spaced = np.sort(rng.permuted(np.tile(np.arange(40) * 0.05, (7, 1)), axis=1)[:, :9], axis=1)
    cold, _ = soft_best_of_n_on_pool(spaced, 1e4, 6)
    bon = ht.BestOfN(6).pool_probabilities(spaced)
    np.testing.assert_allclose(cold, np.broadcast_to(bon, cold.shape), atol=1e-9)


def test_unbiased_bon_equals_exhaustive_subsets() -> None:
    table = _small_table(4, prompts=6, m=7)
    for n in (1, 2, 3, 5, 7):
        expected = []
        for p in range(table.n_prompts):
            rows = slice(table.offsets[p], table.offsets[p + 1])
            s, g = table.proxy_values()[rows], table.true_reward[rows]  # type: ignore[index]
            subsets = list(itertools.combinations(range(s.size), n))
            expected.append(np.mean([g[list(sub)[int(np.argmax(s[list(sub)]))]] for sub in subsets]))
        c = ht.curve(table, "bon", [n], estimator="unbiased", bootstrap=0)
        assert c.true_reward[0] == pytest.approx(np.mean(expected), rel=1e-12)
    np.testing.assert_allclose(ht.BestOfN(3).deployment_probabilities(7).sum(), 1.0)


_MC_CASES = [
    (mech, ties)
    for mech in (ht.BestOfN(3), ht.BestOfPoisson(2.5), ht.SoftBestOfN(3, 2.0), ht.Tilted(5.0))
    for ties in (False, True)
] + [(ht.SoftBestOfN(4, 6.0, on="quantile"), False)]  # within-pool quantiles of ties are a convention


@pytest.mark.parametrize(("mech", "ties"), _MC_CASES, ids=[f"{m!r}-ties={t}" for m, t in _MC_CASES])
def test_plugin_equals_monte_carlo_on_the_pool(mech: ht.Mechanism, ties: bool) -> None:
    table = _small_table(5, prompts=8, m=6, ties=ties)
    rng = np.random.default_rng(9)
    reps = 40_000
    draws = []
    for p in range(table.n_prompts):
        rows = slice(table.offsets[p], table.offsets[p + 1])
        s, g = table.proxy_values()[rows], table.true_reward[rows]  # type: ignore[index]
        m = s.size
        if isinstance(mech, ht.Tilted):  # the tilt of the pool: a tilted quantile falls in cell ceil(u m)
            u = mech.sample_quantiles(reps, rng)
            sorted_s = np.sort(s)
            pos = np.clip(np.ceil(u * m).astype(int) - 1, 0, m - 1)
            # Ties: the mechanism breaks them at random, so pick uniformly within the tie group.
            picked = np.array([rng.choice(np.flatnonzero(s == v)) for v in sorted_s[pos]])
            draws.append(g[picked])
            continue
        sizes = mech.draw_n(reps, rng)
        idx = rng.integers(0, m, size=(reps, int(sizes.max())))
        scores = s[idx]
        if isinstance(mech, ht.SoftBestOfN) and mech.on == "quantile":
            scores = (np.argsort(np.argsort(s, kind="stable"), kind="stable") + 1)[idx] / m
        scores = scores.astype(float)
        scores[np.arange(scores.shape[1])[None, :] >= sizes[:, None]] = np.nan
        chosen = mech.select(scores, rng)
        draws.append(g[idx[np.arange(reps), chosen]])
    per_prompt = np.array(draws)  # (prompts, reps)
    estimate = per_prompt.mean()
    se = per_prompt.std(axis=1).mean() / np.sqrt(reps * table.n_prompts)
    c = ht.curve(table, mech, [mech.theta], estimator="plugin", bootstrap=0)
    assert abs(c.true_reward[0] - estimate) < 4 * se


def test_curves_converge_to_the_analytic_toy() -> None:
    table = ht.synthetic.make_table("toy", 40, 10_000, seed=2)
    c = ht.curve(table, "bon", [12, 128], bootstrap=0)
    assert c.true_reward[1] == pytest.approx(0.2203, abs=2e-3)
    assert c.true_reward[0] == pytest.approx(0.6794, abs=2e-3)
    mus = np.linspace(11, 14, 31)
    bop = ht.curve(table, "bop", mus, bootstrap=0)
    assert mus[np.argmax(bop.true_reward)] == pytest.approx(12.40, abs=0.3)
    tilt = ht.curve(table, "tilted", [13.53], bootstrap=0)
    assert tilt.true_reward[0] == pytest.approx(0.6658, abs=2e-3)
    # The pool KL approaches the analytic KL as pools grow.
    np.testing.assert_allclose(bop.kl_pool, bop.kl, rtol=2e-2)


def test_curve_reference_and_monotone_proxy() -> None:
    table = _small_table(6, prompts=30, m=8)
    c = ht.curve(table, "bop", bootstrap=200)
    assert c.true_reward[0] == pytest.approx(c.reference_true_reward)
    assert c.proxy_quantile[0] == pytest.approx(0.5)
    assert np.all(np.diff(c.proxy_quantile) > 0)
    assert np.all(np.diff(c.kl) > 0)
    assert np.all(c.true_reward_low <= c.true_reward + 1e-12)
    assert np.all(c.true_reward_high >= c.true_reward - 1e-12)
    frame = c.to_pandas()
    assert list(frame.columns)[:3] == ["theta", "expected_samples", "true_reward"]
    assert c.to_arrow().num_rows == c.theta.size
    assert c.to_dict()["mechanism"] == "bop"


def test_ragged_pools_average_over_prompts() -> None:
    proxy = [np.array([0.1, 0.5]), np.array([3.0, 1.0, 2.0, 0.0])]
    true = [np.array([1.0, 0.0]), np.array([4.0, 2.0, 3.0, 1.0])]
    table = ht.RewardTable.from_long(
        np.repeat(["a", "b"], [2, 4]), np.concatenate(proxy), np.concatenate(true)
    )
    c = ht.curve(table, "bon", [1, 1000], estimator="plugin", bootstrap=0)
    assert c.true_reward[0] == pytest.approx((0.5 + 2.5) / 2)
    assert c.true_reward[1] == pytest.approx((0.0 + 4.0) / 2, abs=1e-12)
    # Without replacement, up to the smallest pool: best of 2 from {1, 2, 3, 4} is (2 + 6 + 12) / 6.
    u = ht.curve(table, "bon", [1, 2], bootstrap=0)
    assert u.true_reward == pytest.approx([(0.5 + 2.5) / 2, (0.0 + 20 / 6) / 2], abs=1e-12)


@pytest.mark.parametrize(
    ("shape", "regime"),
    [
        ("toy", "rise-then-fall"),
        ("increasing", "increasing"),
        ("decreasing", "decreasing"),
        ("dip", "fall-then-rise"),
        ("flat", "flat"),
    ],
)
def test_diagnose_regimes(shape: str, regime: str) -> None:
    table = ht.synthetic.make_table(shape, 60, 200, seed=1)
    d = ht.diagnose(table, "bop", bootstrap=100)
    assert d.regime == regime
    assert isinstance(d.sentence(), str)
    if regime == "rise-then-fall":
        assert 5 < d.threshold < 40
        assert d.hacking_share > 0.9
        assert d.share_of_gain_lost > 0.5


def test_curve_bad_arguments() -> None:
    table = _small_table()
    with pytest.raises(ValueError, match="unknown mechanism"):
        ht.curve(table, "best")
    with pytest.raises(ValueError, match="n must be >= 1"):
        ht.curve(table, "bon", [0.5])
    with pytest.raises(ValueError, match="smallest pool"):
        ht.curve(table, "bon", [10], estimator="unbiased")
    with pytest.raises(ValueError, match="estimator must be"):
        ht.curve(table, "bop", [1.0], estimator="with-replacement")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n does not apply to 'bon'; it applies to 'sbon'"):
        ht.curve(table, "bon", n=4)
    with pytest.raises(ValueError, match="finite"):
        ht.curve(table, "bop", [np.nan])
    with pytest.raises(ht.TableError, match="no true-reward"):
        ht.curve(ht.RewardTable.from_arrays(np.ones((2, 3))), "bon", [2])


def test_gain_band_is_paired() -> None:
    table = ht.synthetic.make_table("toy", 60, 30, noise=0.3, seed=2)
    c = ht.curve(table, "bop", bootstrap=300)
    gain = c.true_reward - c.reference_true_reward
    assert c.gain_low is not None and c.gain_high is not None
    assert c.gain_low[0] == pytest.approx(0.0, abs=1e-12) and c.gain_high[0] == pytest.approx(0.0, abs=1e-12)
    assert np.all(c.gain_low <= gain + 1e-12) and np.all(gain <= c.gain_high + 1e-12)
    # Near the reference the pairing removes the prompt-to-prompt spread of the level.
    assert c.gain_high[1] - c.gain_low[1] < 0.5 * (c.true_reward_high[1] - c.true_reward_low[1])


def test_share_of_gain_lost_ignores_a_rounding_sized_gain() -> None:
    """Seen on the bundled arithmetic table (proxy `length`): the curve at n = 1 differs from the
    reference mean by 1e-15 of rounding, which made share_of_gain_lost 1.7e14. A gain within
    rounding is no gain: the share is 0."""
    from hedgetune.data import load

    d = ht.diagnose(load("arithmetic"), "bon", proxy="length", bootstrap=0)
    assert d.regime == "decreasing"
    assert d.share_of_gain_lost == 0.0


def test_unbiased_bon_curve_of_many_n_equals_one_n_at_a_time() -> None:
    """The curve computes the rows of all its n together; each equals the curve at that n alone
    (itself checked against exhaustive subsets above)."""
    table = _small_table(5, prompts=6, m=7)
    ns = [1, 2, 3, 5, 7]
    together = ht.curve(table, "bon", ns, estimator="unbiased", bootstrap=0)
    alone = [ht.curve(table, "bon", [n], estimator="unbiased", bootstrap=0).true_reward[0] for n in ns]
    np.testing.assert_allclose(together.true_reward, alone, rtol=1e-13)


def test_per_prompt_values_skip_leading_zeros_exactly() -> None:
    from hedgetune.curves import _per_prompt_values

    rng = np.random.default_rng(9)
    probs = rng.random((9, 64))
    for row, first in enumerate([0, 1, 5, 31, 32, 33, 60, 63, 64]):  # 64: an all-zero row
        probs[row, :first] = 0.0
    values = rng.normal(size=(7, 64))
    np.testing.assert_allclose(_per_prompt_values(probs, values), probs @ values.T, rtol=1e-13, atol=1e-13)
