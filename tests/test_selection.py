"""Selection at inference time: draw_n and select against the mechanisms' own mathematics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

import hedgetune as ht


def _chi_square_pvalue(observed_values: np.ndarray, cdf: object, bins: int = 20) -> float:
    """Chi-square goodness of fit of values in [0, 1] against ``cdf`` on equal-probability bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts, _ = np.histogram(observed_values, bins=edges)
    probs = np.diff(cdf(edges))  # type: ignore[operator]
    keep = probs * observed_values.size >= 5
    expected = probs[keep] / probs[keep].sum() * counts[keep].sum()
    return float(stats.chisquare(counts[keep], expected).pvalue)


@pytest.mark.parametrize(
    "mech",
    [
        ht.BestOfN(1),
        ht.BestOfN(5),
        ht.BestOfPoisson(0.5),
        ht.BestOfPoisson(6),
        ht.SoftBestOfN(4, 3.0, on="quantile"),
        ht.SoftBestOfN(16, 25.0, on="quantile"),
        ht.SoftBestOfN(6, np.inf, on="quantile"),
    ],
    ids=repr,
)
def test_selected_scores_follow_the_density(mech: ht.Mechanism) -> None:
    # Draw i.i.d. uniform scores (they are their own quantiles), select, and compare the chosen
    # scores with the mechanism's CDF.
    rng = np.random.default_rng(11)
    prompts = 40_000
    sizes = mech.draw_n(prompts, rng)
    scores = rng.random((prompts, int(sizes.max())))
    scores[np.arange(scores.shape[1])[None, :] >= sizes[:, None]] = np.nan  # ragged pools
    chosen = mech.select(scores, rng)
    picked = scores[np.arange(prompts), chosen]
    assert not np.isnan(picked).any()
    assert _chi_square_pvalue(picked, mech.cdf) > 1e-3


def test_tilted_select_tilts_the_pool_ranks() -> None:
    rng = np.random.default_rng(3)
    tilt = ht.Tilted(4.0)
    m, prompts = 10, 50_000
    scores = rng.normal(size=(prompts, m))
    chosen = tilt.select(scores, rng)
    ranks = np.argsort(np.argsort(scores, axis=1), axis=1)[np.arange(prompts), chosen]  # 0-based
    grid = np.arange(m + 1) / m
    expected = np.diff(tilt.cdf(grid)) * prompts
    observed = np.bincount(ranks, minlength=m)
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    with pytest.raises(ValueError, match="frontier"):
        tilt.draw_n(3)


def test_best_of_poisson_draw_n_is_one_plus_poisson() -> None:
    mu, size = 7.3, 200_000
    draws = ht.BestOfPoisson(mu).draw_n(size, rng=5) - 1
    assert draws.min() >= 0
    assert abs(draws.mean() - mu) < 4 * np.sqrt(mu / size)
    # Var of the sample variance of a Poisson: (mu4 - sigma^4)/N = (mu + 2 mu^2)/N.
    assert abs(draws.var(ddof=1) - mu) < 4 * np.sqrt((mu + 2 * mu**2) / size)


def test_draw_n_of_fixed_size_mechanisms() -> None:
    assert (ht.BestOfN(8).draw_n((3, 2)) == 8).all()
    assert (ht.SoftBestOfN(4, 1.0).draw_n(5) == 4).all()
    with pytest.raises(ValueError, match="integer n"):
        ht.BestOfN(2.5).draw_n(3)


def test_ties_are_broken_uniformly() -> None:
    scores = np.tile([0.0, 3.0, 1.0, 3.0, 3.0, np.nan], (30_000, 1))
    chosen = ht.BestOfN(5).select(scores, rng=0)
    counts = np.bincount(chosen, minlength=6)
    assert counts[[0, 2, 5]].sum() == 0
    assert stats.chisquare(counts[[1, 3, 4]]).pvalue > 1e-3


def test_soft_best_of_n_on_raw_scores_is_the_softmax() -> None:
    beta = 1.5
    row = np.array([0.2, -1.0, 2.0, 0.7])
    chosen = ht.SoftBestOfN(4, beta).select(np.tile(row, (60_000, 1)), rng=2)
    expected = np.exp(beta * row) / np.exp(beta * row).sum() * chosen.size
    assert stats.chisquare(np.bincount(chosen, minlength=4), expected).pvalue > 1e-3


def test_soft_best_of_n_records_its_score_scale() -> None:
    raw = ht.SoftBestOfN(4, 2.0)
    assert raw.on == "raw"
    with pytest.raises(ValueError, match="on='quantile'"):
        raw.kl()
    quant = ht.SoftBestOfN(4, 2.0, on="quantile")
    with pytest.raises(ValueError, match="quantiles in \\[0, 1\\]"):
        quant.select(np.array([[0.5, 3.0]]))
    assert quant.with_theta(5.0) == ht.SoftBestOfN(4, 5.0, on="quantile")


def test_select_accepts_ragged_lists() -> None:
    pools = [np.array([0.1, 0.9]), np.array([3.0]), np.array([-1.0, -2.0, 5.0, 4.0])]
    assert ht.BestOfN(2).select(pools, rng=0).tolist() == [1, 0, 2]


def test_single_candidate_is_always_chosen() -> None:
    for mech in (ht.BestOfN(3), ht.SoftBestOfN(3, 2.0), ht.BestOfPoisson(2.0), ht.Tilted(3.0)):
        assert mech.select(np.array([[4.2]]), rng=0).tolist() == [0]


# ------------------------------------------------------------------------------ property tests
score_matrices = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
    elements=st.one_of(st.floats(-1e6, 1e6), st.just(np.nan), st.sampled_from([0.0, 1.0])),
)


@settings(max_examples=150, deadline=None)
@given(scores=score_matrices, seed=st.integers(0, 2**32 - 1))
def test_select_never_picks_a_missing_candidate(scores: np.ndarray, seed: int) -> None:
    rows_ok = ~np.isnan(scores).all(axis=1)
    scores = scores[rows_ok]
    if scores.shape[0] == 0:
        return
    for mech in (ht.BestOfN(4), ht.SoftBestOfN(4, 0.7), ht.BestOfPoisson(3.0), ht.Tilted(2.0)):
        chosen = mech.select(scores, rng=seed)
        assert chosen.shape == (scores.shape[0],)
        assert not np.isnan(scores[np.arange(scores.shape[0]), chosen]).any()
    best = ht.BestOfN(4).select(scores, rng=seed)
    np.testing.assert_array_equal(scores[np.arange(scores.shape[0]), best], np.nanmax(scores, axis=1))


@settings(max_examples=100, deadline=None)
@given(
    theta=st.floats(0, 1e4),
    u=hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(0, 1)),
)
def test_cdf_is_a_distribution_function(theta: float, u: np.ndarray) -> None:
    for mech in (ht.BestOfN(1 + theta), ht.BestOfPoisson(theta), ht.Tilted(theta)):
        q = mech.cdf(np.sort(u))
        assert np.all(np.isfinite(q))
        assert np.all((q >= 0) & (q <= 1 + 1e-12))
        assert np.all(np.diff(q) >= -1e-12)
        assert np.all(mech.pdf(u) >= 0)
        assert mech.kl() >= -1e-15
        assert 0.5 - 1e-12 <= mech.mean() <= 1.0


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 200), beta=st.floats(0, 1e4))
def test_soft_best_of_n_is_a_distribution(n: int, beta: float) -> None:
    mech = ht.SoftBestOfN(n, beta, on="quantile")
    assert mech.cdf(np.array([1.0]))[0] == pytest.approx(1.0, abs=1e-8)
    q = mech.cdf(np.linspace(0, 1, 50))
    assert np.all(np.diff(q) >= -1e-10)
    assert mech.kl() >= -1e-12
    # More candidates or a colder softmax never lowers the expected quantile below the reference.
    assert 0.5 - 1e-9 <= mech.mean() <= ht.BestOfN(n).mean() + 1e-9


# ------------------------------------------------------------------- the compiled softmax sampler
@pytest.mark.parametrize("width", [1, 5, 64, 300])
@pytest.mark.parametrize("beta", [0.0, 1e-3, 1.0, 40.0, 1e4])
def test_compiled_softmax_sampler_draws_what_the_numpy_route_draws(width: int, beta: float) -> None:
    """Same uniforms, same inverse-CDF rule: the two engines agree draw for draw (they could differ
    only where a uniform falls within rounding of a cumulative boundary), with missing candidates,
    ties, wide rows (np.cumsum on the NumPy route) and weights that underflow."""
    from hedgetune.mechanisms._selection import sample_softmax

    pytest.importorskip("numba")
    rng = np.random.default_rng(width)
    scores = np.round(rng.standard_normal((3000, width)), 1)
    scores[rng.random(scores.shape) < 0.2] = np.nan
    scores[np.isnan(scores).all(axis=1), 0] = 0.5
    compiled = sample_softmax(scores, beta, np.random.default_rng(7), engine="compiled")
    numpy_route = sample_softmax(scores, beta, np.random.default_rng(7), engine="numpy")
    np.testing.assert_array_equal(compiled, numpy_route)
    assert not np.isnan(scores[np.arange(scores.shape[0]), compiled]).any()


def test_compiled_softmax_sampler_follows_the_softmax() -> None:
    """The kernel's draws against the softmax probabilities (chi-square), rows split across threads."""
    from hedgetune.mechanisms._selection import sample_softmax

    pytest.importorskip("numba")
    beta, row = 1.5, np.array([0.2, -1.0, 2.0, 0.7, np.nan])
    chosen = sample_softmax(np.tile(row, (60_000, 1)), beta, np.random.default_rng(3), engine="compiled")
    weights = np.exp(beta * row[:4])
    expected = weights / weights.sum() * chosen.size
    assert np.bincount(chosen, minlength=5)[4] == 0
    assert stats.chisquare(np.bincount(chosen, minlength=5)[:4], expected).pvalue > 1e-3


def test_softmax_sampler_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    from hedgetune.mechanisms import _compiled
    from hedgetune.mechanisms._selection import sample_softmax

    scores = np.array([[0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match="engine must be"):
        sample_softmax(scores, 1.0, np.random.default_rng(0), engine="gpu")  # type: ignore[arg-type]
    monkeypatch.setattr(_compiled, "load", lambda name: None)  # as without Numba
    with pytest.raises(ImportError, match=r"hedgetune\[fast\]"):
        sample_softmax(scores, 1.0, np.random.default_rng(0), engine="compiled")
    assert sample_softmax(scores, 1.0, np.random.default_rng(0)).shape == (1,)


# ------------------------------------------------------------- the compiled Best-of-n selection
@pytest.mark.parametrize("width", [1, 2, 7, 64, 300])
@pytest.mark.parametrize("kind", ["continuous", "ties", "missing", "sums overflow"])
def test_compiled_argmax_chooses_what_the_numpy_route_chooses(width: int, kind: str) -> None:
    """Same blocks, same draws for ties: the two engines choose the same candidates, with missing
    candidates, ties at the top and scores whose row sums overflow (the kernel's slow path)."""
    from hedgetune.mechanisms._selection import argmax_random_ties

    pytest.importorskip("numba")
    rng = np.random.default_rng(width)
    scores = rng.standard_normal((5000, width))
    if kind in ("ties", "missing"):
        scores = np.round(scores)
    if kind == "missing":
        scores[rng.random(scores.shape) < 0.3] = np.nan
        scores[np.isnan(scores).all(axis=1), -1] = 0.0
    if kind == "sums overflow":
        scores = np.sign(scores) * rng.choice([1.7e308, 1.6e308], size=scores.shape)
    numpy_route = argmax_random_ties(scores, np.random.default_rng(1), engine="numpy")
    compiled = argmax_random_ties(scores, np.random.default_rng(1), engine="compiled", check_values=True)
    np.testing.assert_array_equal(compiled, numpy_route)
    best = np.nanmax(scores, axis=1)
    np.testing.assert_array_equal(scores[np.arange(scores.shape[0]), compiled], best)


@pytest.mark.parametrize("engine", ["numpy", "compiled"])
def test_best_of_n_select_checks_values_in_its_own_pass(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Best-of-n and Best-of-Poisson skip the separate check of the scores: their selection pass
    reports the same errors, naming the first bad prompt."""
    from hedgetune.mechanisms import _compiled

    if engine == "numpy":
        monkeypatch.setattr(_compiled, "load", lambda name: None)
    else:
        pytest.importorskip("numba")
    for mech in (ht.BestOfN(2), ht.BestOfPoisson(1.0)):
        with pytest.raises(ValueError, match=r"infinite score \(prompt 1\)"):
            mech.select(np.array([[1.0, 2.0], [1.0, -np.inf], [np.nan, np.nan]]))
        with pytest.raises(ValueError, match="prompt 2 has no candidate"):
            mech.select(np.array([[1.0, 2.0], [1.0, np.nan], [np.nan, np.nan]]))
        assert mech.select(np.array([[1.0, np.nan, 3.0], [np.nan, 2.0, 1.0]]), 0).tolist() == [2, 1]
    # Ties at the top are broken uniformly (and never onto a lower score).
    chosen = ht.BestOfN(3).select(np.tile([1.0, 3.0, 3.0, 2.0, 3.0], (30_000, 1)), 5)
    counts = np.bincount(chosen, minlength=5)
    assert counts[[0, 3]].sum() == 0
    assert stats.chisquare(counts[[1, 2, 4]]).pvalue > 1e-3


def test_small_selections_stay_on_the_numpy_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway selects among a few candidates per request: "auto" must not import (or compile)
    Numba for that, only for large batches."""
    from hedgetune.mechanisms import _compiled

    asked: list[str] = []
    monkeypatch.setattr(_compiled, "load", lambda name: asked.append(name))  # records, returns None
    ht.BestOfN(4).select(np.arange(8.0)[None, :], 0)
    ht.SoftBestOfN(4, 2.0).select(np.arange(8.0)[None, :], 0)
    assert asked == []
    ht.BestOfN(4).select(np.zeros((2000, 64)), 0)
    assert asked == ["_selection_compiled"]
