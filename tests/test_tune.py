"""HedgeTune against brute-force maximisation, the SPEC toy optima and its own guarantees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize

import hedgetune as ht
from hedgetune.pools import build_pools


def _plugin_value(pools: object, mechanism: str, theta: float, **kw: object) -> float:
    return float(ht.curve(pools, mechanism, [theta], bootstrap=0, **kw).true_reward[0])  # type: ignore[arg-type]


def _brute_force_argmax(
    pools: object, mechanism: str, lo: float, hi: float, points: int = 400, **kw: object
) -> float:
    """Dense grid, then bounded golden-section search on the curve itself (no derivative)."""
    grid = np.geomspace(max(lo, 1e-3), hi, points)
    values = ht.curve(pools, mechanism, grid, bootstrap=0, **kw).true_reward  # type: ignore[arg-type]
    k = int(np.argmax(values))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
    res = optimize.minimize_scalar(
        lambda th: -_plugin_value(pools, mechanism, th, **kw),
        bounds=(a, b),
        method="bounded",
        options={"xatol": 1e-11},
    )
    return float(res.x)


@pytest.mark.parametrize(
    ("mechanism", "estimator"), [("bop", "unbiased"), ("bop", "plugin"), ("tilted", "plugin")]
)
@pytest.mark.parametrize("seed", [0, 1])
def test_root_is_the_brute_force_maximiser(mechanism: str, estimator: str, seed: int) -> None:
    table = ht.synthetic.make_table("toy", 30, 40, noise=0.2, seed=seed)
    pools = build_pools(table)
    result = ht.tune(pools, mechanism, estimator=estimator, bootstrap=0)  # type: ignore[arg-type]
    assert result.regime == "rise-then-fall" and result.estimator == estimator
    top = min(200.0, result.supported_max)
    brute = _brute_force_argmax(pools, mechanism, 0.5, top, estimator=estimator)
    assert result.theta == pytest.approx(brute, rel=1e-6)
    assert result.iterations > 0


@pytest.mark.parametrize(("estimator", "top"), [("unbiased", 40), ("plugin", 199)])
def test_bon_returns_the_best_integer(estimator: str, top: int) -> None:
    table = ht.synthetic.make_table("toy", 30, 40, noise=0.2, seed=4)
    pools = build_pools(table)
    result = ht.tune(pools, "bon", estimator=estimator, bootstrap=0)  # type: ignore[arg-type]
    ns = np.arange(1, top + 1)
    values = ht.curve(pools, "bon", ns, estimator=estimator, bootstrap=0).true_reward  # type: ignore[arg-type]
    assert result.theta == ns[int(np.argmax(values))]
    assert result.true_reward == pytest.approx(values.max())


@pytest.mark.parametrize(("n", "estimator"), [(4, "unbiased"), (4, "plugin"), (32, "plugin")])
def test_sbon_beta_is_the_grid_maximiser(n: int, estimator: str) -> None:
    table = ht.synthetic.make_table("toy", 20, 30, noise=0.1, seed=5)
    pools = build_pools(table)
    result = ht.tune(pools, "sbon", n=n, on="quantile", estimator=estimator, bootstrap=0)  # type: ignore[arg-type]
    betas = np.geomspace(1, 500, 120)
    values = ht.curve(pools, "sbon", betas, n=n, on="quantile", estimator=estimator, bootstrap=0).true_reward  # type: ignore[arg-type]
    k = int(np.argmax(values))
    assert betas[max(k - 1, 0)] <= result.theta <= betas[min(k + 1, betas.size - 1)]
    assert result.true_reward >= values.max() - 1e-12


@pytest.mark.parametrize(("estimator", "points"), [("plugin", 400), ("unbiased", 60)])
def test_sbon_on_raw_scores_tunes_the_raw_softmax(estimator: str, points: int) -> None:
    table = ht.synthetic.make_table("toy", 20, 16, noise=0.1, seed=6)
    pools = build_pools(table)
    result = ht.tune(pools, "sbon", n=8, estimator=estimator, bootstrap=0)  # type: ignore[arg-type]
    assert result.mechanism_at() == ht.SoftBestOfN(8, result.theta, on="raw")
    brute = _brute_force_argmax(pools, "sbon", 0.05, 500, points, n=8, estimator=estimator)
    assert result.theta == pytest.approx(brute, rel=1e-5)
    assert np.isnan(result.kl) and result.kl_pool > 0


def test_converges_to_the_toy_optima() -> None:
    # Large pools: the plug-in curve approaches the analytic one, and so does its maximiser.
    table = ht.synthetic.make_table("toy", 20, 20_000, seed=7)
    pools = build_pools(table)
    assert ht.tune(pools, "bon", bootstrap=0).theta in (12, 13)
    assert ht.tune(pools, "bop", bootstrap=0).theta == pytest.approx(12.40, abs=0.15)
    assert ht.tune(pools, "tilted", bootstrap=0).theta == pytest.approx(13.53, abs=0.15)


def test_score_residual_agrees_with_the_exact_one() -> None:
    table = ht.synthetic.make_table("toy", 20, 5000, noise=0.05, seed=8)
    pools = build_pools(table)
    for mechanism in ("bop", "tilted"):
        exact = ht.tune(pools, mechanism, estimator="plugin", bootstrap=0)
        score = ht.tune(pools, mechanism, estimator="plugin", residual="score", bootstrap=0)
        # The self-normalised form approximates the pool derivative with O(1/m) error.
        assert score.theta == pytest.approx(exact.theta, rel=2e-2)


@pytest.mark.parametrize(
    ("shape", "regime", "end"),
    [
        ("increasing", "increasing", "top"),
        ("decreasing", "decreasing", "reference"),
        ("dip", "fall-then-rise", "top"),
    ],
)
def test_monotone_and_u_shaped_rewards(shape: str, regime: str, end: str) -> None:
    table = ht.synthetic.make_table(shape, 40, 20, seed=9)
    for mechanism in ("bon", "bop"):
        result = ht.tune(table, mechanism, estimator="plugin", bootstrap=0)
        assert result.regime == regime
        expected = result.unhedged_theta if end == "top" else result.reference_theta
        assert result.theta == expected
        assert result.iterations == 0
        # Without replacement the range stops at what 20 samples support; the better end is taken.
        deployed = ht.tune(table, mechanism, bootstrap=0)
        assert deployed.search_range[1] == pytest.approx(deployed.supported_max)
        assert deployed.theta in (deployed.reference_theta, deployed.unhedged_theta)
        assert deployed.true_reward == pytest.approx(
            max(deployed.reference_true_reward, deployed.unhedged_true_reward), abs=1e-12
        )


def test_budgets_cap_the_search() -> None:
    table = ht.synthetic.make_table("increasing", 30, 20, seed=10)
    assert ht.tune(table, "bon", max_n=7, bootstrap=0).theta == 7
    assert ht.tune(table, "bop", max_samples=5, bootstrap=0).theta == pytest.approx(4.0)
    capped = ht.tune(table, "bop", max_kl=0.5, bootstrap=0)
    assert capped.kl == pytest.approx(0.5, rel=1e-8)
    assert ht.tune(table, "tilted", max_theta=3.0, bootstrap=0).theta == pytest.approx(3.0)


def test_intervals_cover_the_estimate_and_shrink() -> None:
    widths = []
    for prompts in (40, 400):
        table = ht.synthetic.make_table("toy", prompts, 30, noise=0.3, seed=11)
        result = ht.tune(table, "bop", bootstrap=300, seed=1)
        lo, hi = result.theta_ci
        assert lo <= result.theta <= hi
        assert result.true_reward_ci[0] <= result.true_reward <= result.true_reward_ci[1]
        widths.append(hi - lo)
    assert widths[1] < widths[0]


def test_conservative_rule_stays_put_when_the_proxy_is_useless() -> None:
    stays = 0
    seeds = 40
    for seed in range(seeds):
        rng = np.random.default_rng(500 + seed)
        table = ht.RewardTable.from_arrays(rng.normal(size=(60, 8)), rng.normal(size=(60, 8)))
        result = ht.tune(table, "bop", bootstrap=400, seed=seed)
        stays += result.conservative_theta == result.reference_theta
    assert stays >= 0.95 * seeds


def test_conservative_rule_approaches_the_point_estimate() -> None:
    gaps = []
    for prompts in (50, 1000):
        table = ht.synthetic.make_table("toy", prompts, 50, noise=0.3, seed=3)
        result = ht.tune(table, "bop", bootstrap=400)
        assert 0 < result.conservative_theta <= result.theta * 1.2
        gaps.append(abs(result.conservative_theta - result.theta) / result.theta)
    assert gaps[1] < gaps[0]


def test_out_of_sample_evaluation() -> None:
    table = ht.synthetic.make_table("toy", 120, 30, noise=0.3, seed=12)
    oos = ht.evaluate(table, "bop", repeats=4, seed=0)
    summary = oos.summary()
    assert summary["tuned"]["mean"] > summary["unhedged"]["mean"]
    assert summary["tuned"]["mean"] > summary["reference"]["mean"]
    assert np.all(oos.oracle >= oos.tuned - 1e-12)  # the held-out oracle is an upper bound
    assert oos.to_pandas().shape == (4, 10)


def test_grouped_tuning() -> None:
    a = ht.synthetic.make_table("toy", 30, 40, seed=1)
    b = ht.synthetic.make_table("increasing", 30, 40, seed=2)
    ids = np.concatenate(
        [a.prompt_of_response().astype(str), np.char.add("b", b.prompt_of_response().astype(str))]
    )
    groups = np.repeat(["toy", "inc"], [a.n_responses, b.n_responses])
    table = ht.RewardTable.from_long(
        ids,
        np.concatenate([a.proxy_values(), b.proxy_values()]),
        np.concatenate([a.true_reward, b.true_reward]),
        groups=groups,
    )
    results = ht.tune_by_group(table, "bop", bootstrap=0)
    assert results["toy"].regime == "rise-then-fall"
    assert results["inc"].regime == "increasing"
    with pytest.raises(ht.TableError, match="no group column"):
        ht.tune_by_group(a, "bop")


def test_json_ready_result() -> None:
    result = ht.tune(ht.synthetic.make_table("toy", 30, 20, seed=1), "bop", bootstrap=50)
    d = result.to_dict()
    for key in (
        "mechanism",
        "theta",
        "theta_ci",
        "true_reward",
        "true_reward_ci",
        "kl",
        "expected_samples",
        "regime",
        "reference_true_reward",
        "unhedged_theta",
        "unhedged_true_reward",
        "recommended_theta",
        "options",
    ):
        assert key in d
    assert "unhedged" not in d and "conservative" not in d  # one key per field, no nested copies
    json.dumps(d, allow_nan=False)  # strict JSON
    assert "template" not in d


def test_bad_input() -> None:
    table = ht.synthetic.make_table("toy", 10, 5)
    with pytest.raises(ht.TableError, match="no true-reward"):
        ht.tune(ht.RewardTable.from_arrays(np.ones((3, 3))), "bop")
    with pytest.raises(ht.TableError, match="at least two prompts"):
        ht.tune(table.subset([0]), "bop")
    with pytest.raises(ValueError, match="max_theta must exceed"):
        ht.tune(table, "bop", max_theta=0.0)
    with pytest.raises(ValueError, match="max_samples must be >= 1"):
        ht.tune(table, "bop", max_samples=0.5)
    with pytest.raises(ValueError, match="max_kl must be >= 0"):
        ht.tune(table, "bop", max_kl=-1)
    with pytest.raises(ValueError, match="max_n bounds a whole-number parameter"):
        ht.tune(table, "bop", max_n=3)
    with pytest.raises(ValueError, match="unboundedly many"):
        ht.tune(table, "tilted", max_samples=10)
    with pytest.raises(ValueError, match="residual must be"):
        ht.tune(table, "bop", residual="newton")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="score-function residual"):
        ht.tune(table, "sbon", n=4, residual="score", estimator="plugin")
    with pytest.raises(ValueError, match="score residual approximates the plug-in"):
        ht.tune(table, "bop", residual="score")
    with pytest.raises(ValueError, match="estimator must be"):
        ht.tune(table, "bop", estimator="plug-in")  # type: ignore[arg-type]


@pytest.mark.parametrize("m", [16, 32, 64])
@pytest.mark.parametrize("seed", [1, 2])
def test_default_tune_finds_what_a_deployment_gets_on_small_pools(m: int, seed: int) -> None:
    """The toy's deployed optimum is n = 12.49, mu = 12.40. Tuned on pools of m, the default
    (without-replacement) estimator finds it; the plug-in's peak sits far higher on small pools."""
    table = ht.synthetic.make_table("toy", 2000, m, seed=seed)
    bon = ht.tune(table, "bon")
    assert bon.theta in (12, 13) and bon.estimator == "unbiased" and bon.supported_max == m
    bop = ht.tune(table, "bop")
    if m == 16:  # 1 + Poisson(12.4) exceeds 16 draws 16% of the time: beyond what the pool supports
        assert bop.theta == pytest.approx(bop.supported_max) and bop.supported_max < 12.4
        assert "largest the calibration pools support" in bop.regime_note
        assert ht.tune(table, "bon", estimator="plugin").theta >= 20  # the biased target
    else:
        assert bop.theta == pytest.approx(12.40, rel=0.05)
        assert bop.regime == "rise-then-fall" and bop.regime_note == ""


def test_a_flat_curve_stays_at_the_reference() -> None:
    """Found by fuzzing: equal true rewards moved the tuned parameter off the reference."""
    flat = ht.RewardTable.from_arrays([[0.0, 2.0], [2.0, 2.0]], [[0.1, 0.1], [0.1, 0.1]])
    all_correct = ht.synthetic.make_table("increasing", 50, 8, seed=0)
    all_correct = ht.RewardTable.from_arrays(
        {"proxy_reward": all_correct.proxy_values().reshape(50, 8)}, np.ones((50, 8))
    )
    for table in (flat, all_correct):
        for mechanism in ("bon", "bop"):
            for estimator in ("unbiased", "plugin"):
                result = ht.tune(table, mechanism, estimator=estimator, bootstrap=50)  # type: ignore[arg-type]
                assert result.theta == result.reference_theta, (mechanism, estimator)
                assert result.conservative_theta == result.reference_theta


def test_best_of_n_conservative_parameter_is_a_whole_number() -> None:
    for seed in range(6):
        table = ht.synthetic.make_table("toy", 40, 30, noise=0.3, seed=seed)
        for estimator in ("unbiased", "plugin"):
            result = ht.tune(table, "bon", estimator=estimator, bootstrap=200, seed=seed)  # type: ignore[arg-type]
            assert result.conservative_theta == round(result.conservative_theta)
            result.mechanism_at(result.conservative_theta).draw_n(3, 0)  # usable as it is


def test_a_peak_below_the_first_grid_point_is_found() -> None:
    """The grid's first point after the reference is at 1e-4 of the range's top; a curve that
    peaks before it must not be reported at the reference."""
    table = ht.synthetic.make_table("toy", 200, 40, noise=0.0, seed=3)
    result = ht.tune(table, "bop", max_theta=1e6, estimator="plugin", bootstrap=0)
    assert result.theta == pytest.approx(_brute_force_argmax(build_pools(table), "bop", 1e-3, 1e3, estimator="plugin"), rel=1e-5)
    # A reward that only the first sliver of optimisation helps: the tiny peak is found, not skipped.
    u = np.linspace(0.0005, 0.9995, 1000)
    proxy = np.tile(u, (3, 1))
    true = np.tile(np.where(u > 0.5, 1.0, 0.0) - 10.0 * (u > 0.99), (3, 1))
    tiny = ht.RewardTable.from_arrays({"proxy_reward": proxy}, true)
    result = ht.tune(tiny, "bop", max_theta=1e5, estimator="plugin", bootstrap=0)
    brute = _brute_force_argmax(build_pools(tiny), "bop", 1e-3, 1e3, estimator="plugin")
    assert result.theta > 0 and result.theta == pytest.approx(brute, rel=1e-4)


def test_recommended_default_stays_put_without_a_sure_gain_and_moves_with_one() -> None:
    useless = ht.synthetic.make_table("flat", 200, 16, noise=1.0, seed=5)
    result = ht.tune(useless, "bop", bootstrap=300)
    assert result.recommended_theta == result.reference_theta
    assert result.recommended_true_reward == pytest.approx(result.reference_true_reward)
    assert "no gain" in result.recommended_rule or "agree" in result.recommended_rule
    helpful = ht.synthetic.make_table("tent:0.9", 200, 16, noise=0.5, seed=5)
    result = ht.tune(helpful, "bop", bootstrap=300)
    assert result.conservative_theta > 0
    assert result.recommended_theta == result.theta and result.recommended_true_reward == result.true_reward
    assert result.to_dict()["recommended_theta"] == result.theta
    assert ht.tune(helpful, "bop", bootstrap=0).recommended_theta == 0.0  # nothing shown sure


def test_recommended_experiment_meets_its_safety_target(tmp_path: Path) -> None:
    """Where the proxy does not help, the recommended default loses at most 0.002 to the reference
    on held-out prompts (quick settings of experiments/recommended.py)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("recommended", Path(__file__).parents[1] / "experiments" / "recommended.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["recommended"] = module
    spec.loader.exec_module(module)
    for label, row in module.run(tmp_path, quick=True).items():
        if not row["helps"]:
            assert row["recommended_below_reference"] <= 0.002, label
        elif label.startswith("synthetic"):
            assert row["recommended_share_of_oracle"] >= 0.95, label


def test_evaluate_with_smaller_held_out_pools() -> None:
    """Regression (found by the property tests): pools of 3 on the calibration side and of 2 on the
    held-out side; Best-of-n tuned to n = 3 could not be valued on the held-out pools. Both halves
    must support the parameter tuned, so the search stops at the smaller side's limit."""
    ids = np.repeat(np.arange(4), [3, 2, 3, 2])
    table = ht.RewardTable.from_long(ids, np.arange(10.0), np.full(10, 1e-30))
    for seed in range(4):
        result = ht.evaluate(table, "bon", repeats=2, bootstrap=10, seed=seed)
        assert np.all(result.tuned_theta <= 3) and np.all(np.isfinite(result.tuned))


def test_replicate_maximisers_from_values_alone_find_a_parabolas_vertex():
    """Without residuals (raw-score Soft Best-of-n tunes on a value-only grid), each replicate's
    maximiser is the vertex of the parabola through its grid argmax and neighbours: exact for
    parabolic curves, within the grid's resolution for others, and the argmax at the grid's ends."""
    from hedgetune.tune import _replicate_maximisers

    grid = np.r_[0.0, np.geomspace(0.1, 100.0, 31)]
    peaks = np.array([0.37, 3.3, 41.0, 80.0])
    curves = -((grid[None, :] - peaks[:, None]) ** 2)
    np.testing.assert_allclose(_replicate_maximisers(grid, curves, None), peaks, rtol=1e-12)
    # A smooth non-parabolic curve (peak at 7): values alone agree with the exact residual's route.
    smooth = np.log1p(grid) - grid / 8.0
    slope = 1.0 / (1.0 + grid) - 1.0 / 8.0
    from_values = _replicate_maximisers(grid, smooth[None, :], None)[0]
    from_slopes = _replicate_maximisers(grid, smooth[None, :], slope[None, :])[0]
    step = grid[np.searchsorted(grid, 7.0)] - grid[np.searchsorted(grid, 7.0) - 1]
    assert abs(from_values - 7.0) < 0.05 * step and abs(from_slopes - 7.0) < 0.05 * step
    # A maximum at either end of the grid stays there.
    ends = np.vstack([-grid, grid])
    np.testing.assert_array_equal(_replicate_maximisers(grid, ends, None), [grid[0], grid[-1]])


def test_raw_soft_best_of_n_tunes_on_a_value_only_grid_to_the_residuals_root():
    """On raw scores the grid carries values only; the answer is still the exact residual's root
    (Brent on the derivative, which is zero there)."""
    from hedgetune.tune import exact_residual

    table = ht.synthetic.make_table("toy", 60, 12, noise=0.3, seed=0)
    result = ht.tune(table, "sbon", n=4, bootstrap=50, seed=0)
    assert result.regime == "rise-then-fall" and result.iterations > 0
    residual = exact_residual(build_pools(table), ht.SoftBestOfN(4, 1.0), result.theta, "unbiased")
    assert abs(residual) < 1e-9
    lo, hi = result.theta_ci
    assert result.search_range[0] <= lo <= result.theta <= hi <= result.search_range[1]


def test_tune_stays_inside_its_search_range_on_proxies_spanning_90_decades() -> None:
    """Issue 28, item 14: proxies from 1e-3 to 1e89 make the searched range tiny (its top is
    500 per unit of the pooled spread); the answer, its interval and the conservative rule stay in it."""
    rng = np.random.default_rng(2)
    proxy = rng.normal(size=(30, 8)) * np.logspace(-3, 89, 30)[:, None]
    table = ht.RewardTable.from_arrays({"proxy_reward": proxy}, rng.normal(size=(30, 8)))
    for name in ("sbon", "tilted", "bop"):
        for estimator in ("unbiased", "plugin"):
            r = ht.tune(table, name, bootstrap=50, estimator=estimator)
            lo, hi = r.search_range
            for value in (r.theta, *r.theta_ci, r.conservative_theta):
                assert lo <= value <= hi, (name, estimator, value, (lo, hi))


@pytest.mark.parametrize("name", ["bon", "bop", "sbon", "tilted"])
def test_the_answer_does_not_depend_on_the_rewards_units(name: str) -> None:
    """Rewards times 1e-300 or 1e38 (issue 28, item 14): the same parameter and the same verdict
    (the bootstrap's noise is computed in the rewards' own units, so it does not underflow)."""
    rng = np.random.default_rng(1)
    proxy = rng.normal(size=(30, 8))
    true = rng.normal(size=(30, 8)) + 0.3 * proxy
    base = ht.tune(ht.RewardTable.from_arrays({"proxy_reward": proxy}, true), name, bootstrap=50)
    for c in (1e-300, 1e-38, 1e38):
        r = ht.tune(ht.RewardTable.from_arrays({"proxy_reward": proxy}, true * c), name, bootstrap=50)
        assert r.theta == pytest.approx(base.theta, rel=1e-8)
        assert r.regime == base.regime, (c, r.regime, base.regime)
