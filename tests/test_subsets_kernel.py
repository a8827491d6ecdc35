"""The compiled Soft Best-of-n subset kernel (Numba, the ``fast`` extra) and its NumPy fallback.

Both routes of the kernel (the quadrature that carries only the items in transition, and the
enumeration of each item's near subsets) and the NumPy quadrature are checked against exhaustive
enumeration of every n-subset, against each other on pools too large to enumerate, and against
finite differences for the derivative.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special
from test_estimators import enumerate_subsets

from hedgetune import _threads
from hedgetune.mechanisms import _compiled, _subsets
from hedgetune.mechanisms._softmax_cells import softmax_exponents
from hedgetune.mechanisms._subsets import soft_best_of_n_subsets
from hedgetune.mechanisms.soft_best_of_n import soft_best_of_n_on_pool

pytest.importorskip("numba", reason="the compiled kernel needs the 'fast' extra (numba)")

QUADRATURE, SUBSETS, CHEAPER = 1, 2, 0


def kernel(scores: np.ndarray, beta: float, n: int, method: int) -> tuple[np.ndarray, np.ndarray]:
    """The compiled kernel with a forced route, in the ascending order of ``scores``."""
    z, gap = softmax_exponents(scores, beta)
    module = _subsets.compiled_kernel()
    assert module is not None
    return _subsets.run_kernel(module, z, gap, n, True, method)


@pytest.mark.parametrize("method", [QUADRATURE, SUBSETS, CHEAPER])
@pytest.mark.parametrize("seed", range(10))
def test_each_route_equals_exhaustive_enumeration(method: int, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    m = int(rng.integers(2, 10))
    n = int(rng.integers(2, m + 1))
    scores = np.sort(np.round(rng.standard_normal(m), 1))  # rounding makes ties
    for beta in (0.01, 0.3, 2.0, 15.0, 300.0, 1e4, 1e17):
        probs, dprobs = kernel(scores[None], beta, n, method)
        assert probs[0] == pytest.approx(enumerate_subsets(scores, beta, n), abs=1e-12)
        h = 1e-5 * beta
        numeric = (enumerate_subsets(scores, beta + h, n) - enumerate_subsets(scores, beta - h, n)) / (2 * h)
        assert dprobs[0] == pytest.approx(numeric, abs=1e-6 * max(1.0, np.abs(numeric).max()))


@pytest.mark.parametrize("beta", [0.05, 1.0, 8.0, 30.0, 120.0, 600.0])
def test_kernel_routes_and_numpy_agree_on_pools_too_large_to_enumerate(beta: float) -> None:
    """40 candidates, n = 8: 76.9 million subsets per pool. The three computations share no code
    past the softmax exponents."""
    rng = np.random.default_rng(3)
    scores = np.sort(rng.standard_normal((6, 40)), axis=1)
    scores[0, 10:13] = scores[0, 10]  # ties
    numpy_probs, numpy_slopes = soft_best_of_n_subsets(scores, beta, 8, derivative=True, engine="numpy")
    assert numpy_slopes is not None
    for method in (QUADRATURE, CHEAPER) if beta < 100 else (QUADRATURE, SUBSETS, CHEAPER):
        probs, slopes = kernel(scores, beta, 8, method)
        np.testing.assert_allclose(probs, numpy_probs, atol=1e-12)
        np.testing.assert_allclose(slopes, numpy_slopes, atol=1e-10 * max(1.0, np.abs(numpy_slopes).max()))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)


def test_kernel_on_a_large_pool_with_huge_gaps() -> None:
    """300 candidates with gaps that put beta * gap past the 800 cap of the exponents; n = m and
    n = 2 (the softmax over the whole pool, and pairs, both in closed form)."""
    rng = np.random.default_rng(5)
    scores = np.sort(np.concatenate([rng.standard_normal(150), 50.0 + rng.standard_normal(150)]))[None]
    for beta in (0.5, 40.0, 1e3):
        whole, _ = kernel(scores, beta, 300, CHEAPER)
        w = np.exp(beta * (scores[0] - scores[0].max()))
        np.testing.assert_allclose(whole[0], w / w.sum(), atol=1e-12)
        pairs, _ = kernel(scores, beta, 2, CHEAPER)
        share = special.expit(beta * (scores[0][:, None] - scores[0][None, :]))  # a_i / (a_i + a_j)
        np.fill_diagonal(share, 0.0)
        np.testing.assert_allclose(pairs[0], share.sum(axis=1) / (300 * 299 / 2), atol=1e-12)


def test_engines_and_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    scores = np.sort(np.random.default_rng(1).standard_normal((3, 9)), axis=1)
    compiled = soft_best_of_n_subsets(scores, 2.0, 4, engine="compiled")[0]
    numpy = soft_best_of_n_subsets(scores, 2.0, 4, engine="numpy")[0]
    np.testing.assert_allclose(compiled, numpy, atol=1e-13)
    with pytest.raises(ValueError, match="engine must be"):
        soft_best_of_n_subsets(scores, 2.0, 4, engine="fortran")  # type: ignore[arg-type]
    # Without Numba, "auto" falls back to NumPy and "compiled" says what to install.
    monkeypatch.setattr(_compiled, "load", lambda name: None)  # as without Numba
    np.testing.assert_allclose(soft_best_of_n_subsets(scores, 2.0, 4)[0], numpy, atol=0)
    with pytest.raises(ImportError, match=r"hedgetune\[fast\]"):
        soft_best_of_n_subsets(scores, 2.0, 4, engine="compiled")


def test_kernel_splits_rows_across_threads_without_changing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    scores = np.sort(np.random.default_rng(2).standard_normal((64, 12)), axis=1)
    threaded = soft_best_of_n_subsets(scores, 3.0, 5, derivative=True)
    monkeypatch.setattr(_threads, "available_cores", lambda: 1)
    single = soft_best_of_n_subsets(scores, 3.0, 5, derivative=True)
    np.testing.assert_array_equal(threaded[0], single[0])
    assert threaded[1] is not None and single[1] is not None
    np.testing.assert_array_equal(threaded[1], single[1])


def test_kernel_is_finite_and_normalised_over_the_whole_tuning_range() -> None:
    """The grid that tune searches, on the toy table (a run compiled with fast-math once gave NaN
    here: the kernel must not rely on assumptions about infinities)."""
    rng = np.random.default_rng(6)
    scores = np.sort(rng.standard_normal((20, 16)), axis=1)
    for beta in np.geomspace(1e-3, 1e5, 60):
        for method in (QUADRATURE, CHEAPER):
            probs, slopes = kernel(scores, float(beta), 8, method)
            assert np.isfinite(probs).all() and np.isfinite(slopes).all()
            np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
            np.testing.assert_allclose(slopes.sum(axis=1), 0.0, atol=1e-9 * max(1.0, float(beta)))



def test_whole_pool_shortcut_equals_the_general_routes() -> None:
    """n = m: the only subset is the pool, so the estimator is the softmax itself (a shortcut that
    skips the quadrature); checked against the kernel's general routes, value and derivative."""
    scores = np.sort(np.random.default_rng(9).standard_normal((5, 12)), axis=1)
    scores[1, 3:6] = scores[1, 3]
    for beta in (0.4, 7.0, 900.0):
        probs, slopes = soft_best_of_n_subsets(scores, beta, 12, derivative=True)
        assert slopes is not None
        for method in (QUADRATURE, SUBSETS):
            general, general_slopes = kernel(scores, beta, 12, method)
            np.testing.assert_allclose(probs, general, atol=1e-13)
            np.testing.assert_allclose(slopes, general_slopes, atol=1e-10 * max(1.0, np.abs(slopes).max()))


# ------------------------------------------------------------------ with replacement (plug-in)
def enumerate_draws(scores: np.ndarray, beta: float, n: int) -> np.ndarray:
    """Selection probability of each item over every ordered draw of n items with replacement."""
    m = scores.size
    draws = np.array(np.meshgrid(*[np.arange(m)] * n, indexing="ij")).reshape(n, -1).T
    probs = np.zeros(m)
    for draw in draws:
        weights = np.exp(beta * (scores[draw] - scores[draw].max()))
        np.add.at(probs, draw, weights / weights.sum())
    return probs / len(draws)


@pytest.mark.parametrize("seed", range(6))
def test_compiled_plugin_equals_enumeration_of_draws(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    m = int(rng.integers(2, 7))
    n = int(rng.integers(2, 5))
    scores = np.sort(np.round(rng.standard_normal(m), 1))
    for beta in (0.01, 0.7, 9.0, 300.0, 1e5):
        probs, slopes = soft_best_of_n_on_pool(scores[None], beta, n, derivative=True, engine="compiled")
        assert probs[0] == pytest.approx(enumerate_draws(scores, beta, n), abs=1e-12)
        h = 1e-5 * beta
        numeric = (enumerate_draws(scores, beta + h, n) - enumerate_draws(scores, beta - h, n)) / (2 * h)
        assert slopes is not None
        assert slopes[0] == pytest.approx(numeric, abs=1e-6 * max(1.0, np.abs(numeric).max()))


@pytest.mark.parametrize("beta", [0.05, 1.0, 8.0, 30.0, 120.0, 600.0])
def test_compiled_plugin_agrees_with_numpy(beta: float) -> None:
    rng = np.random.default_rng(4)
    scores = np.sort(rng.standard_normal((6, 40)), axis=1)
    scores[0, 10:13] = scores[0, 10]
    expected, expected_slopes = soft_best_of_n_on_pool(scores, beta, 8, derivative=True, engine="numpy")
    probs, slopes = soft_best_of_n_on_pool(scores, beta, 8, derivative=True, engine="compiled")
    assert expected_slopes is not None and slopes is not None
    np.testing.assert_allclose(probs, expected, atol=1e-12)
    np.testing.assert_allclose(slopes, expected_slopes, atol=1e-10 * max(1.0, np.abs(expected_slopes).max()))
    with pytest.raises(ValueError, match="engine must be"):
        soft_best_of_n_on_pool(scores, beta, 8, engine="gpu")  # type: ignore[arg-type]


def test_the_numpy_fallback_says_it_is_slow_on_large_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    scores = np.sort(np.random.default_rng(3).standard_normal((300, 40)), axis=1)
    monkeypatch.setattr(_compiled, "load", lambda name: None)  # as without Numba
    with pytest.warns(_subsets.SlowPathWarning, match=r"pip install 'hedgetune\[fast\]'"):
        soft_best_of_n_subsets(scores, 2.0, 4)
    with pytest.warns(_subsets.SlowPathWarning):
        soft_best_of_n_on_pool(scores, 2.0, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        soft_best_of_n_subsets(scores, 2.0, 4, engine="numpy")  # asked for: no warning
        soft_best_of_n_subsets(scores[:3], 2.0, 4)  # small: no warning


@pytest.mark.parametrize("engine", ["compiled", "numpy"])
@pytest.mark.parametrize("seed", range(4))
def test_the_derivative_at_beta_zero_is_the_first_order_term_not_zero(seed: int, engine: str) -> None:
    """Regression: at beta = 0 both estimators returned a zero derivative, although the curve
    moves at once: d P_i / d beta = (n - 1) / (n m) (s_i - mean of the others) over n-subsets, and
    (s_i - mean of the pool) with replacement. Checked against enumeration by central differences
    (the curves are smooth through 0)."""
    rng = np.random.default_rng(300 + seed)
    m = int(rng.integers(2, 8))
    scores = np.sort(np.round(rng.standard_normal(m), 1))  # ties too
    h = 1e-5
    for n in sorted({1, 2, m}):
        _, slopes = soft_best_of_n_subsets(scores[None], 0.0, n, derivative=True, engine=engine)
        numeric = (enumerate_subsets(scores, h, n) - enumerate_subsets(scores, -h, n)) / (2 * h)
        assert slopes is not None and slopes[0] == pytest.approx(numeric, abs=1e-8)
        _, slopes = soft_best_of_n_on_pool(scores[None], 0.0, n, derivative=True, engine=engine)
        numeric = (enumerate_draws(scores, h, n) - enumerate_draws(scores, -h, n)) / (2 * h)
        assert slopes is not None and slopes[0] == pytest.approx(numeric, abs=1e-8)
