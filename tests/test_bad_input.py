"""Bad input gets an error that names the argument and the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hedgetune as ht


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: ht.BestOfN(0.5), ValueError, "n must be >= 1"),
        (lambda: ht.BestOfN(float("nan")), ValueError, "n must be a number, got NaN"),
        (lambda: ht.BestOfN(float("inf")), ValueError, "n must be finite"),
        (lambda: ht.BestOfN("4"), TypeError, "n must be a real number"),
        (lambda: ht.BestOfN(True), TypeError, "n must be a real number"),
        (lambda: ht.BestOfPoisson(-1), ValueError, "mu must be >= 0"),
        (lambda: ht.BestOfPoisson(None), TypeError, "mu must be a real number"),
        (lambda: ht.Tilted(-0.1), ValueError, "beta must be >= 0"),
        (lambda: ht.Tilted(float("inf")), ValueError, "beta must be finite"),
        (lambda: ht.SoftBestOfN(4, -1.0), ValueError, "beta must be >= 0"),
        (lambda: ht.SoftBestOfN(2.5, 1.0), ValueError, "whole number"),
        (lambda: ht.SoftBestOfN(0, 1.0), ValueError, "n must be >= 1"),
        (lambda: ht.SoftBestOfN(4, 1.0, on="logits"), ValueError, "on must be 'raw' or 'quantile'"),
    ],
)
def test_bad_parameters(factory: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        factory()  # type: ignore[operator]


@pytest.mark.parametrize("bad_u", [[-0.1, 0.5], [0.5, 1.5], [np.nan], ["a"]])
def test_quantiles_outside_the_unit_interval(bad_u: list[object]) -> None:
    for method in ("pdf", "logpdf", "cdf", "score", "cdf_dtheta"):
        with pytest.raises((ValueError, TypeError), match="u "):
            getattr(ht.BestOfPoisson(2.0), method)(bad_u)


@pytest.mark.parametrize(
    ("scores", "match"),
    [
        (np.empty((0, 3)), "empty"),
        (np.empty((2, 0)), "empty"),
        (np.array([[1.0, np.nan], [np.nan, np.nan]]), "prompt 1 has no candidate"),
        (np.array([[1.0, np.inf]]), "infinite"),
        (np.array([1.0, 2.0]), "must be 2-D"),
        (np.ones((2, 2, 2)), "must be 2-D"),
        ([np.array([1.0]), np.ones((2, 2))], r"scores\[1\] must be 1-D"),
    ],
)
def test_bad_pools(scores: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ht.BestOfN(2).select(scores)


def test_non_numeric_scores() -> None:
    with pytest.raises(TypeError, match=r"scores(\[0\])? must be numeric"):
        ht.BestOfN(2).select([["a", "b"]])


def test_bad_rng() -> None:
    with pytest.raises(TypeError, match="rng must be"):
        ht.BestOfN(2).select(np.ones((1, 2)), rng="seed")


def test_nan_budgets_and_negative_bootstrap_are_refused() -> None:
    """Found by the audit: NaN budgets were silently ignored, and curve(bootstrap=-5) gave NaN bands."""
    import pytest

    import hedgetune as ht

    table = ht.synthetic.make_table("toy", 20, 16, seed=0)
    for budget in ("max_theta", "max_n", "max_samples", "max_kl"):
        mechanism = "bon" if budget == "max_n" else "bop"
        with pytest.raises(ValueError, match=f"{budget} must be a finite number"):
            ht.tune(table, mechanism, bootstrap=0, **{budget: float("nan")})
    with pytest.raises(ValueError, match="bootstrap must be >= 0"):
        ht.curve(table, "bop", bootstrap=-5)


def test_nan_budget_on_the_command_line_exits_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    import hedgetune as ht
    from hedgetune.cli import main

    path = tmp_path / "t.parquet"
    ht.write_table(ht.synthetic.make_table("toy", 20, 16, seed=0), path)
    result = CliRunner().invoke(main, ["tune", str(path), "--max-kl", "nan", "--bootstrap", "0"])
    assert result.exit_code == 2 and "--max-kl must be a finite number" in result.output


def test_a_nan_proxy_with_a_true_reward_is_invalid_not_missing() -> None:
    """Found by the audit: in 2-D arrays a NaN proxy beside a finite true reward was taken for a
    missing response and its true reward silently dropped. Missing means both are NaN."""
    import numpy as np
    import pytest

    import hedgetune as ht

    proxy = np.array([[0.1, np.nan, 0.5], [0.2, 0.3, np.nan]])
    true = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, np.nan]])  # prompt 0: invalid; prompt 1: missing
    with pytest.raises(ht.TableError, match="NaN or infinite"):
        ht.RewardTable.from_arrays({"proxy_reward": proxy}, true)
    with pytest.warns(UserWarning, match="dropped 1 responses"):
        dropped = ht.RewardTable.from_arrays({"proxy_reward": proxy}, true, invalid="drop")
    assert dropped.n_responses == 4 and dropped.dropped == 1
    ragged = ht.RewardTable.from_arrays({"proxy_reward": proxy[1:]}, true[1:])
    assert ragged.n_responses == 2 and ragged.dropped == 0


def test_silent_coercions_are_refused_with_clear_errors() -> None:
    """Found by the audit (#8): each of these was accepted silently or raised a raw error."""
    import numpy as np
    import pytest

    import hedgetune as ht

    with pytest.raises(ht.TableError, match="complex"):
        ht.RewardTable.from_arrays({"p": np.array([[1 + 2j, 2.0]])}, [[0.0, 1.0]])
    with pytest.raises(ht.TableError, match="must be numeric"):
        ht.RewardTable.from_arrays({"p": np.array([["2024-01-01", "2024-01-02"]], dtype="datetime64[D]")}, [[0.0, 1.0]])
    with pytest.raises(ht.TableError, match="mixes types"):
        ht.RewardTable.from_long(np.array([1, "1"], dtype=object), [0.1, 0.2], [0.0, 1.0])
    with pytest.raises(ht.TableError, match="duplicate prompt ids"):
        ht.RewardTable.from_arrays({"p": np.ones((2, 3))}, np.ones((2, 3)), prompt_ids=["a", "a"])
    with pytest.raises(ht.TableError, match="prompt_ids has missing values"):
        ht.RewardTable.from_long(np.array([None, "a"], dtype=object), [0.1, 0.2], [0.0, 1.0])
    with pytest.raises(ht.TableError, match="at least one proxy"):
        ht.RewardTable.from_arrays({})
    with pytest.raises(TypeError, match="RewardTable"):
        ht.curve(None, "bop")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RewardTable"):
        ht.tune("table.parquet", "bop")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RewardTable"):
        ht.evaluate(None, "bop")  # type: ignore[arg-type]


# ------------------------------------------------------------------ extreme magnitudes (item 7)
@pytest.mark.parametrize("column", ["proxy", "true"])
def test_rewards_beyond_the_documented_magnitude_are_refused(column: str) -> None:
    proxy = np.array([[0.1, 0.2], [0.3, 0.4]])
    true = np.array([[0.0, 1.0], [1.0, 0.0]])
    if column == "proxy":
        proxy = proxy * 1e160
    else:
        true = true * 1.7e308
    with pytest.raises(ht.TableError, match="1e\\+100"):
        ht.RewardTable.from_arrays(proxy, true)


@pytest.mark.parametrize("beta", [1e6, 1e12, 1e17, 1e20, 1e300])
def test_soft_best_of_n_at_huge_beta_times_gap_is_exact(beta: float) -> None:
    """Past beta * gap ~ 800 the softmax of any subset is a hard maximum among the items tied with
    its top to within 1/beta; checked against enumeration of every subset (with ties)."""
    from itertools import combinations

    from hedgetune.mechanisms._subsets import soft_best_of_n_subsets
    from hedgetune.mechanisms.soft_best_of_n import soft_best_of_n_on_pool

    scores = np.array([[0.1, 0.1, 0.1, 0.4, 0.5, 0.5 + 1e-30, 0.9]])
    n, m = 3, scores.shape[1]
    expected = np.zeros(m)
    subsets = list(combinations(range(m), n))
    for subset in subsets:
        z = beta * (scores[0, list(subset)] - scores[0, list(subset)].max())
        w = np.exp(z)
        expected[list(subset)] += w / w.sum() / len(subsets)
    got, slope = soft_best_of_n_subsets(scores, beta, n, derivative=True)
    np.testing.assert_allclose(got[0], expected, atol=1e-12)
    assert slope is not None and np.all(np.isfinite(slope))
    # With replacement: every ordered draw of n positions.
    draws = np.array(np.meshgrid(*[np.arange(m)] * n, indexing="ij")).reshape(n, -1).T
    expected_pool = np.zeros(m)
    for draw in draws:
        z = beta * (scores[0, draw] - scores[0, draw].max())
        w = np.exp(z)
        np.add.at(expected_pool, draw, w / w.sum() / len(draws))
    pool, _ = soft_best_of_n_on_pool(scores, beta, n)
    np.testing.assert_allclose(pool[0], expected_pool, atol=1e-12)


def test_quantile_soft_best_of_n_at_huge_beta_is_best_of_n_and_has_no_false_peak() -> None:
    """Past beta ~ 40 (m + 1) the softmax on a pool's quantiles is a hard maximum: the curve equals
    Best-of-n's there, for both estimators, instead of inventing a peak at beta ~ 1e16."""
    table = ht.synthetic.make_table("toy", 200, 16, seed=0)
    betas = [1e4, 1e8, 1e12, 1e16, 1e20, 1e300]
    for estimator in ("unbiased", "plugin"):
        bon = ht.curve(table, "bon", thetas=[4], bootstrap=0, estimator=estimator).true_reward[0]
        sbon = ht.curve(table, "sbon", n=4, on="quantile", thetas=betas, bootstrap=0, estimator=estimator)
        np.testing.assert_allclose(sbon.true_reward, bon, atol=1e-9)
    result = ht.tune(table, "sbon", n=4, on="quantile", max_theta=1e20, bootstrap=0)
    assert result.theta < 1e4


# ------------------------------------------------------------------ resource exhaustion (item 9)
def test_soft_best_of_n_selection_memory_is_linear_in_the_width() -> None:
    """A 40,000-wide row used to build a 40,000 x 40,000 matrix (11.9 GiB)."""
    import tracemalloc

    scores = np.zeros((1, 40_000))
    scores[0, 123] = 50.0
    tracemalloc.start()
    choice = ht.SoftBestOfN(4, 1.0).select(scores, rng=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40 * scores.nbytes
    assert choice[0] == 123  # e^50 outweighs 39,999 candidates at e^0
    draws = ht.SoftBestOfN(10**6, 1000.0, on="quantile").sample_quantiles(3, rng=0)
    assert draws.shape == (3,) and np.all((draws > 0.99) & (draws <= 1))


def test_sizes_that_cannot_fit_are_refused_before_allocation() -> None:
    with pytest.raises(ValueError, match="too large"):
        ht.BestOfN(1e19).draw_n(3)
    with pytest.raises(ValueError, match="too large"):
        ht.BestOfPoisson(1e19).draw_n(3)
    with pytest.raises(MemoryError, match="memory"):
        ht.BestOfN(4).sample_quantiles(10**15)
    table = ht.synthetic.make_table("toy", 6, 5, seed=0)
    with pytest.raises(MemoryError, match="bootstrap"):
        ht.tune(table, "bon", bootstrap=2_000_000_000_000)
    with pytest.raises(MemoryError, match="bootstrap"):
        ht.curve(table, "bon", bootstrap=2_000_000_000_000)


def test_an_npz_declaring_a_huge_array_is_refused_unread(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The header of an .npz member says 7 TiB; its payload is a few bytes."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (1_000_000, 1_000_000)}
    )
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("proxy_reward.npy", header.getvalue() + b"\0" * 64)
        archive.writestr("true_reward.npy", header.getvalue() + b"\0" * 64)
    with pytest.raises(ht.TableError, match="declares"):
        ht.read_table(path)


@pytest.mark.parametrize("beta", [3.0, 1e3, 1e10, 1e100, 1e200, 1e308])
def test_tilted_at_huge_beta_is_finite_and_accurate(beta: float) -> None:
    """KL = beta E[U] - log(expm1(beta) / beta) -> log(beta) - 1 + O(beta e^-beta); it read 0 at
    beta = 1e100 (x coth x - x cancelled), and the beta-derivative of the CDF overflowed."""
    tilted = ht.Tilted(beta)
    exact = beta / -np.expm1(-beta) - 1.0 - beta - np.log(-np.expm1(-beta)) + np.log(beta)
    if beta > 100:
        exact = np.log(beta) - 1.0
    assert tilted.kl() == pytest.approx(exact, rel=1e-12)
    u = np.array([0.0, 0.3, 0.999, 1.0])
    slope = tilted.cdf_dtheta(u)
    assert np.all(np.isfinite(slope))
    h = beta * 1e-6
    numeric = (ht.Tilted(beta + h).cdf(u) - ht.Tilted(beta - h).cdf(u)) / (2 * h)
    np.testing.assert_allclose(slope, numeric, rtol=1e-5, atol=1e-12 / beta)


def test_string_ids_with_a_single_response_prompt_get_a_clear_error(tmp_path: Path) -> None:
    """Issue 28: string prompt ids plus one single-response prompt gave `'str' object has no
    attribute 'item'` (a traceback)."""
    from click.testing import CliRunner

    from hedgetune.cli import main

    (tmp_path / "s.csv").write_text("prompt_id,proxy_reward,true_reward\na,1,1\na,2,0\nb,1,1\n")
    out = CliRunner().invoke(main, ["info", str(tmp_path / "s.csv")])
    assert out.exit_code == 2 and "fewer than two responses" in out.output and "'b'" in out.output


def test_a_duplicate_csv_header_is_refused_by_name(tmp_path: Path) -> None:
    """Issue 28: a duplicate CSV header gave a KeyError traceback."""
    from click.testing import CliRunner

    from hedgetune.cli import main

    (tmp_path / "d.csv").write_text("prompt_id,proxy_reward,proxy_reward,true_reward\n0,1,2,1\n0,2,1,0\n")
    out = CliRunner().invoke(main, ["info", str(tmp_path / "d.csv")])
    assert out.exit_code == 2 and "proxy_reward" in out.output and "twice" in out.output, out.output


def test_a_fractional_max_n_bounds_n_by_its_whole_part() -> None:
    """Issue 28, item 15: --max-n 2.5 allows n <= 2 (was refused with an error about n = 2.5)."""
    from click.testing import CliRunner

    from hedgetune.cli import main
    from hedgetune.data import path as data_path

    result = CliRunner().invoke(main, ["tune", str(data_path("arithmetic")), "-m", "bon", "--max-n", "2.5", "--bootstrap", "10"])
    assert result.exit_code == 0, result.output
    assert "n = 2 " in result.output and "up to n = 2" in result.output
