"""Deployment (without replacement) estimators: Soft Best-of-n over the n-subsets of a pool."""

from __future__ import annotations

import itertools
from math import comb

import numpy as np
import pytest
from helpers import integrate_unit, scalar

import hedgetune as ht
from hedgetune.mechanisms._subsets import soft_best_of_n_subsets


def enumerate_subsets(scores: np.ndarray, beta: float, n: int) -> np.ndarray:
    """Selection probability of each item, averaged over every n-subset of the pool (brute force)."""
    m = scores.size
    probs = np.zeros(m)
    for subset in itertools.combinations(range(m), n):
        chosen = list(subset)
        weights = np.exp(beta * (scores[chosen] - scores[chosen].max()))
        probs[chosen] += weights / weights.sum()
    return probs / comb(m, n)


@pytest.mark.parametrize("seed", range(12))
def test_subsets_equal_exhaustive_enumeration(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 10))
    n = int(rng.integers(1, m + 1))
    beta = float(rng.choice([0.0, 0.3, 2.0, 15.0, 300.0, 1e4]))
    scores = np.sort(np.round(rng.standard_normal(m), 1))  # rounding makes ties
    probs, dprobs = soft_best_of_n_subsets(scores[None], beta, n, derivative=True)
    assert probs[0] == pytest.approx(enumerate_subsets(scores, beta, n), abs=1e-12)
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    h = 1e-5 * max(beta, 1.0)
    if beta > h:
        numeric = (enumerate_subsets(scores, beta + h, n) - enumerate_subsets(scores, beta - h, n)) / (2 * h)
        assert dprobs is not None
        assert dprobs[0] == pytest.approx(numeric, abs=1e-6 * max(1.0, np.abs(numeric).max()))


def test_subsets_of_the_whole_pool_and_of_one() -> None:
    scores = np.array([[0.1, 0.5, 0.7, 2.0]])
    whole = soft_best_of_n_subsets(scores, 1.5, 4)[0]
    weights = np.exp(1.5 * scores)
    assert whole == pytest.approx(weights / weights.sum(), abs=1e-13)  # n = m: the plain softmax
    assert soft_best_of_n_subsets(scores, 1.5, 1)[0] == pytest.approx(np.full((1, 4), 0.25))
    with pytest.raises(ValueError, match="1 <= n <= pool size 4"):
        soft_best_of_n_subsets(scores, 1.5, 5)


def test_subsets_are_unbiased_for_fresh_draws() -> None:
    """Averaged over many small pools drawn from a known distribution, the estimate equals what a
    deployment drawing n fresh candidates gets (the analytic SBoN density), within Monte Carlo error.
    Scores are exact uniform quantiles, so raw-score SBoN on them is SBoN on quantiles."""
    n, beta, m, pools = 3, 4.0, 6, 20_000
    rng = np.random.default_rng(7)
    u = np.sort(rng.random((pools, m)), axis=1)
    reward = u**2
    estimates = np.einsum("pm,pm->p", soft_best_of_n_subsets(u, beta, n)[0], reward)
    mech = ht.SoftBestOfN(n, beta, "quantile")
    truth = integrate_unit(lambda x: x**2 * scalar(mech.pdf)(x))
    standard_error = estimates.std(ddof=1) / np.sqrt(pools)
    assert abs(estimates.mean() - truth) < 4 * standard_error
    # The with-replacement plug-in on the same pools is biased by many standard errors.
    plugin = np.einsum("pm,pm->p", mech.with_theta(beta).pool_probabilities(np.zeros((1, m))), reward)
    assert abs(plugin.mean() - truth) > 4 * standard_error


def test_curve_unbiased_soft_best_of_n_on_raw_scores_equals_enumeration() -> None:
    rng = np.random.default_rng(4)
    proxy = np.round(rng.standard_normal((7, 6)), 1)  # ties within prompts
    true = rng.standard_normal((7, 6))
    table = ht.RewardTable.from_arrays({"proxy_reward": proxy}, true)
    thetas = np.array([0.0, 0.7, 3.0, 40.0])
    c = ht.curve(table, "sbon", thetas, n=4, on="raw", estimator="unbiased", bootstrap=0)
    expected = [
        np.mean([enumerate_subsets(proxy[p], beta, 4) @ true[p] for p in range(7)]) for beta in thetas
    ]
    assert c.true_reward == pytest.approx(expected, abs=1e-12)
    assert c.pool_tail is not None and (c.pool_tail == 0).all()
    with pytest.raises(ValueError, match="n = 7 cannot be estimated without replacement from pools of 6"):
        ht.curve(table, "sbon", [1.0], n=7, estimator="unbiased", bootstrap=0)
    # The tilted policy is a frontier, not a sampler: it keeps the plug-in (ratio) estimator.
    assert ht.curve(table, "tilted", [1.0], estimator="unbiased", bootstrap=0).estimator == "plugin"
    with pytest.raises(ValueError, match="infinite-sample frontier"):
        ht.Tilted(1.0).deployment_probabilities(6)


def test_best_of_poisson_deployment_estimate_is_unbiased_for_fresh_draws() -> None:
    """Averaged over many pools of m = 12 from a known distribution, the Poisson mixture of the
    Best-of-n U-statistics equals a Monte Carlo of deployments that draw 1 + Poisson(mu) fresh
    candidates, within 4 standard errors (the tail P(1 + K > 12) at mu = 3 is 7e-5)."""
    m, mu, pools = 12, 3.0, 20_000
    rng = np.random.default_rng(11)
    u = rng.random((pools, m))
    table = ht.RewardTable.from_arrays({"proxy_reward": u}, np.sin(3 * u))
    per_prompt = ht.BestOfPoisson(0.0).with_theta(mu).deployment_probabilities(m)[0]
    estimates = np.sin(3 * np.sort(u, axis=1)) @ per_prompt
    c = ht.curve(table, "bop", [mu], estimator="unbiased", bootstrap=0)
    assert c.true_reward[0] == pytest.approx(estimates.mean(), abs=1e-12)
    from math import exp, factorial

    tail = 1 - sum(exp(-mu) * mu**k / factorial(k) for k in range(m))  # P(1 + K > m)
    assert c.pool_tail is not None and c.pool_tail[0] == pytest.approx(tail, rel=1e-9)
    counts = 1 + rng.poisson(mu, size=400_000)
    deployed = np.sin(3 * rng.random(counts.size) ** (1.0 / counts))  # the max of k uniforms is U^(1/k)
    se = np.hypot(estimates.std(ddof=1) / np.sqrt(pools), deployed.std(ddof=1) / np.sqrt(deployed.size))
    assert abs(estimates.mean() - deployed.mean()) < 4 * se
    truth = integrate_unit(lambda x: np.sin(3 * x) * scalar(ht.BestOfPoisson(mu).pdf)(x))
    assert abs(estimates.mean() - truth) < 4 * se


def test_deployment_weights_and_their_derivatives() -> None:
    m = 9
    for template, theta in ((ht.BestOfPoisson(0.0), 2.5), (ht.SoftBestOfN(4, 0.0, "quantile"), 6.0)):
        weights = template.with_theta(theta).deployment_probabilities(m)
        assert weights.shape == (1, m) and weights.sum() == pytest.approx(1.0, abs=1e-12)
        h = 1e-5
        numeric = (
            template.with_theta(theta + h).deployment_probabilities(m)
            - template.with_theta(theta - h).deployment_probabilities(m)
        ) / (2 * h)
        slope = template.with_theta(theta).deployment_probabilities(m, derivative=True)
        assert slope == pytest.approx(numeric, abs=1e-7)
    # Best-of-Poisson at mu = 0 is one draw: uniform over the pool.
    assert ht.BestOfPoisson(0.0).with_theta(0.0).deployment_probabilities(m) == pytest.approx(np.full((1, m), 1 / m))


def test_best_of_poisson_deployment_slope_at_zero_matches_a_difference_quotient() -> None:
    """At mu = 0 the count 2 has probability 0 but slope 1: dropping it gave the wrong residual."""

    for m in (2, 3, 8):
        slope = ht.BestOfPoisson(0.0).deployment_probabilities(m, derivative=True)
        h = 1e-7
        quotient = (ht.BestOfPoisson(h).deployment_probabilities(m) - ht.BestOfPoisson(0.0).deployment_probabilities(m)) / h
        np.testing.assert_allclose(slope, quotient, atol=1e-6)


def test_subset_maximum_weights_equal_binomial_ratios() -> None:
    """``C(i-1, c-1) / C(m, c)`` for any set of counts (consecutive ones read a strided view, others
    a gathered one) and any first position, zero exactly where i < c."""
    from hedgetune.mechanisms._pool_weights import subset_maximum_weights

    for m in (1, 2, 7, 40):
        for counts in (np.arange(1, m + 1), np.unique([m, 1, (m + 1) // 2])[::-1], np.array([(m + 1) // 2])):
            for start in sorted({0, m // 2, m - 1}):
                got = subset_maximum_weights(counts.astype(float), m, start)
                want = [[comb(i - 1, c - 1) / comb(m, c) for i in range(start + 1, m + 1)] for c in counts]
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    # A large pool against exact rationals: the log-factorials reach 1e5, so 1e-10 relative.
    from fractions import Fraction

    m = 12_600
    counts = np.array([1.0, 2.0, 150.0, 6_000.0, m])
    rows = subset_maximum_weights(counts, m, 0)
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=1e-10)
    for row, c in zip(rows, counts.astype(int), strict=True):
        for i in (c, (c + m) // 2, m):
            assert row[i - 1] == pytest.approx(float(Fraction(comb(i - 1, c - 1), comb(m, c))), rel=1e-10)
    for bad in ([0.0], [2.5], [m + 1.0]):
        with pytest.raises(ValueError, match="whole numbers"):
            subset_maximum_weights(np.array(bad), m)


@pytest.mark.parametrize(
    "mech",
    [ht.BestOfN(1), ht.BestOfN(30), ht.BestOfN(5000), ht.BestOfPoisson(0.0), ht.BestOfPoisson(0.5),
     ht.BestOfPoisson(100.0), ht.BestOfPoisson(3000.0)],
    ids=repr,
)
def test_positions_below_the_start_carry_negligible_weight(mech: ht.Mechanism) -> None:
    """The curves skip positions 1 .. start: their weight (and, for a real parameter, the weight of
    their derivative) is under NEGLIGIBLE_MASS in total, and the cut is close to the exact one."""
    from hedgetune.mechanisms.toolkit import NEGLIGIBLE_MASS

    m = 5000
    start = mech.negligible_below(m)
    full = mech.deployment_probabilities(m)[0]
    assert full[:start].sum() <= NEGLIGIBLE_MASS
    exact = int(np.searchsorted(np.cumsum(full), NEGLIGIBLE_MASS))  # positions 1 .. exact are negligible
    assert start >= 0.8 * exact
    if not mech.integer_parameter:
        assert np.abs(mech.deployment_probabilities(m, derivative=True)[0][:start]).sum() <= NEGLIGIBLE_MASS


def test_best_of_n_rows_together_equal_rows_one_at_a_time() -> None:
    m = 300
    ns = np.array([1.0, 2.0, 3.0, 17.0, 150.0, 299.0, 300.0])
    start, together = ht.BestOfN(1).deployment_rows(ns, m)
    generic_start, one_at_a_time = ht.Mechanism.deployment_rows(ht.BestOfN(1), ns, m)
    assert start == generic_start == 0
    # One at a time, each row starts at its own negligible position (zeros below it).
    np.testing.assert_allclose(together, one_at_a_time, rtol=1e-12, atol=1e-17)
    np.testing.assert_array_equal(together[-1], np.eye(m)[-1])  # n = m: the top position, exactly
    with pytest.raises(ValueError, match="whole n"):
        ht.BestOfN(1).deployment_rows(np.array([2.0, 2.5]), m)
    with pytest.raises(ValueError, match="no derivative"):
        ht.BestOfN(1).deployment_rows(ns, m, derivative=True)
