"""The mechanisms' mathematics against independent computations.

Quadrature (SciPy's adaptive ``quad``), finite differences, Monte Carlo with tolerances from the
standard error, and the reference numbers of SPEC §2 and §5.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import INTERIOR, MECHANISMS, ids, integrate_unit, scalar, toy_reward
from scipy import optimize, stats

import hedgetune as ht

U_POINTS = np.array([0.0, 1e-6, 0.01, 0.2, 0.5, 0.8, 0.97, 0.999, 0.999999, 1.0])


@pytest.mark.parametrize("mech", MECHANISMS, ids=ids(MECHANISMS))
class TestDensity:
    def test_pdf_integrates_to_one(self, mech: ht.Mechanism) -> None:
        assert integrate_unit(scalar(mech.pdf)) == pytest.approx(1.0, abs=1e-9)

    def test_cdf_is_integral_of_pdf(self, mech: ht.Mechanism) -> None:
        expected = [integrate_unit(scalar(mech.pdf), upper=u) if u > 0 else 0.0 for u in U_POINTS]
        np.testing.assert_allclose(mech.cdf(U_POINTS), expected, rtol=1e-8, atol=1e-11)

    def test_logpdf_is_log_of_pdf(self, mech: ht.Mechanism) -> None:
        u = np.linspace(0.01, 0.99, 7)
        np.testing.assert_allclose(np.exp(mech.logpdf(u)), mech.pdf(u), rtol=1e-12)

    def test_kl_is_quadrature(self, mech: ht.Mechanism) -> None:
        def q_log_q(u: float) -> float:
            lq = float(mech.logpdf(np.array([u]))[0])
            return 0.0 if lq == -np.inf else float(np.exp(lq) * lq)

        assert mech.kl() == pytest.approx(integrate_unit(q_log_q), rel=1e-7, abs=1e-12)

    def test_mean_is_quadrature(self, mech: ht.Mechanism) -> None:
        expected = integrate_unit(lambda u: u * scalar(mech.pdf)(u))
        assert mech.mean() == pytest.approx(expected, rel=1e-9)

    def test_samples_follow_cdf(self, mech: ht.Mechanism) -> None:
        draws = mech.sample_quantiles(20_000, rng=np.random.default_rng(7))
        assert stats.kstest(draws, mech.cdf).pvalue > 1e-3

    def test_score_has_mean_zero(self, mech: ht.Mechanism) -> None:
        # E_theta[psi] = d/dtheta int q = 0: an identity the derivative must satisfy.
        def q_psi(u: float) -> float:
            p = scalar(mech.pdf)(u)
            return 0.0 if p == 0.0 else p * scalar(mech.score)(u)

        assert integrate_unit(q_psi) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("mech", INTERIOR, ids=ids(INTERIOR))
class TestDerivatives:
    u = np.array([0.001, 0.1, 0.4, 0.7, 0.9, 0.99, 0.9999])

    def _step(self, mech: ht.Mechanism) -> float:
        return 1e-5 * max(1.0, mech.theta)

    def test_score_is_finite_difference_of_logpdf(self, mech: ht.Mechanism) -> None:
        h = self._step(mech)
        hi, lo = mech.with_theta(mech.theta + h), mech.with_theta(mech.theta - h)
        fd = (hi.logpdf(self.u) - lo.logpdf(self.u)) / (2 * h)
        np.testing.assert_allclose(mech.score(self.u), fd, rtol=2e-6, atol=1e-7)

    def test_cdf_dtheta_is_finite_difference_of_cdf(self, mech: ht.Mechanism) -> None:
        h = self._step(mech)
        hi, lo = mech.with_theta(mech.theta + h), mech.with_theta(mech.theta - h)
        fd = (hi.cdf(self.u) - lo.cdf(self.u)) / (2 * h)
        np.testing.assert_allclose(mech.cdf_dtheta(self.u), fd, rtol=2e-6, atol=1e-9)


# ------------------------------------------------------------------------------ reference values
@pytest.mark.parametrize(
    ("mu", "kl", "mean"),
    [
        (1, 0.1072, 0.6321),
        (4, 0.6739, 0.8114),
        (8, 1.2132, 0.8906),
        (16, 1.8371, 0.9414),
        (32, 2.4975, 0.9697),
    ],
)
def test_best_of_poisson_reference_table(mu: float, kl: float, mean: float) -> None:
    bop = ht.BestOfPoisson(mu)
    assert bop.kl() == pytest.approx(kl, abs=1e-4)
    assert bop.mean() == pytest.approx(mean, abs=1e-4)


@pytest.mark.parametrize(
    ("n", "beta", "kl", "mean"), [(4, 2, 0.0830, 0.6164), (8, 10, 0.8740, 0.8445), (32, 20, 1.7889, 0.9382)]
)
def test_soft_best_of_n_check_values(n: int, beta: float, kl: float, mean: float) -> None:
    sbon = ht.SoftBestOfN(n, beta, on="quantile")
    assert sbon.kl() == pytest.approx(kl, abs=1e-4)
    assert sbon.mean() == pytest.approx(mean, abs=1e-4)


def test_soft_best_of_n_mean_matches_monte_carlo() -> None:
    sbon = ht.SoftBestOfN(8, 10, on="quantile")
    draws = sbon.sample_quantiles(200_000, rng=np.random.default_rng(1))
    se = draws.std() / np.sqrt(draws.size)
    assert abs(draws.mean() - sbon.mean()) < 4 * se


@pytest.mark.parametrize("beta", [0.05, 0.7, 3.0, 25.0, 400.0])
def test_soft_best_of_two_closed_form(beta: float) -> None:
    # n = 2: q(u) = 2 int_0^1 dv / (1 + e^(beta (v - u))) = 2 [1 - (L(1-u) - L(-u)) / beta],
    # with L(x) = log(1 + e^(beta x)).
    u = np.linspace(0, 1, 41)
    soft_plus = lambda x: np.logaddexp(0.0, beta * x)  # noqa: E731
    exact = 2 * (1 - (soft_plus(1 - u) - soft_plus(-u)) / beta)
    np.testing.assert_allclose(ht.SoftBestOfN(2, beta, on="quantile").pdf(u), exact, rtol=1e-10)


def test_soft_best_of_n_limits() -> None:
    u = np.linspace(0, 1, 21)
    np.testing.assert_allclose(ht.SoftBestOfN(6, 0.0, on="quantile").pdf(u), 1.0)
    np.testing.assert_allclose(ht.SoftBestOfN(6, 1e4, on="quantile").cdf(u), ht.BestOfN(6).cdf(u), atol=2e-3)
    np.testing.assert_allclose(
        ht.SoftBestOfN(6, np.inf, on="quantile").pdf(u), ht.BestOfN(6).pdf(u), rtol=1e-12
    )
    # n -> infinity: the tilted policy at the same beta, with an O(1/n) gap.
    gap = ht.SoftBestOfN(4096, 3.0, on="quantile").pdf(u) - ht.Tilted(3.0).pdf(u)
    assert np.max(np.abs(gap)) < 5e-3


def test_tilted_closed_forms() -> None:
    beta = 3.0
    t = ht.Tilted(beta)
    u = np.linspace(0, 1, 11)
    np.testing.assert_allclose(t.pdf(u), beta * np.exp(beta * u) / np.expm1(beta), rtol=1e-13)
    np.testing.assert_allclose(t.cdf(u), np.expm1(beta * u) / np.expm1(beta), rtol=1e-13, atol=1e-16)
    mean = 1 / (1 - np.exp(-beta)) - 1 / beta
    assert t.mean() == pytest.approx(mean, rel=1e-14)
    assert t.kl() == pytest.approx(beta * mean - np.log(np.expm1(beta) / beta), rel=1e-13)


def test_best_of_n_closed_forms() -> None:
    for n in (1, 2, 5, 64):
        b = ht.BestOfN(n)
        assert b.kl() == pytest.approx(np.log(n) - (n - 1) / n, abs=1e-15)
        assert b.mean() == pytest.approx(n / (n + 1))


# ------------------------------------------------------------------------------ the toy (SPEC §5)
def _true_reward(mech: ht.Mechanism) -> float:
    return integrate_unit(lambda u: float(toy_reward(u)) * scalar(mech.pdf)(u))


def test_toy_best_of_n() -> None:
    assert _true_reward(ht.BestOfN(12)) == pytest.approx(0.6794, abs=1e-4)
    assert _true_reward(ht.BestOfN(13)) == pytest.approx(0.6794, abs=1e-4)
    assert _true_reward(ht.BestOfN(128)) == pytest.approx(0.2203, abs=1e-4)
    best = optimize.minimize_scalar(lambda n: -_true_reward(ht.BestOfN(n)), bounds=(2, 60), method="bounded")
    assert best.x == pytest.approx(np.sqrt(156), abs=1e-3)


def test_toy_best_of_poisson() -> None:
    best = optimize.minimize_scalar(
        lambda mu: -_true_reward(ht.BestOfPoisson(mu)), bounds=(1, 60), method="bounded"
    )
    assert best.x == pytest.approx(12.40, abs=0.01)
    assert -best.fun == pytest.approx(0.6669, abs=1e-4)
    assert _true_reward(ht.BestOfPoisson(127)) == pytest.approx(0.2214, abs=1e-4)


def test_toy_tilted() -> None:
    best = optimize.minimize_scalar(lambda b: -_true_reward(ht.Tilted(b)), bounds=(1, 60), method="bounded")
    assert best.x == pytest.approx(13.53, abs=0.01)
    assert -best.fun == pytest.approx(0.6658, abs=1e-4)


# ------------------------------------------------------------------------------ BoP vs the tilt
def _kl_bop_to_tilt(mu: float, beta: float) -> float:
    bop, tilt = ht.BestOfPoisson(mu), ht.Tilted(beta)

    def integrand(u: float) -> float:
        lp = float(bop.logpdf(np.array([u]))[0])
        return float(np.exp(lp) * (lp - tilt.logpdf(np.array([u]))[0]))

    return integrate_unit(integrand)


def test_best_of_poisson_is_close_to_the_tilt() -> None:
    def gap(mu: float) -> float:
        res = optimize.minimize_scalar(
            lambda b: _kl_bop_to_tilt(mu, b),
            bounds=(0, 4 * mu + 5),
            method="bounded",
            options={"xatol": 1e-6},
        )
        return float(res.fun)

    worst = optimize.minimize_scalar(
        lambda mu: -gap(mu), bounds=(1, 8), method="bounded", options={"xatol": 1e-3}
    )
    assert -worst.fun == pytest.approx(6.75e-4, abs=2e-5)
    assert worst.x == pytest.approx(3.36, abs=0.1)


# ------------------------------------------------------------------------------ extreme parameters
@pytest.mark.parametrize(
    "mech",
    [
        ht.BestOfN(1e4),
        ht.BestOfPoisson(1e4),
        ht.Tilted(1e4),
        ht.SoftBestOfN(16, 1e4, on="quantile"),
        ht.BestOfPoisson(1e-9),
        ht.Tilted(1e-9),
        ht.BestOfN(1 + 1e-9),
        ht.SoftBestOfN(16, 1e-9, on="quantile"),
    ],
    ids=repr,
)
def test_extreme_parameters_stay_finite(mech: ht.Mechanism) -> None:
    u = np.linspace(0, 1, 101)
    for value in (mech.kl(), mech.mean()):
        assert np.isfinite(value)
    for arr in (mech.pdf(u), mech.cdf(u), mech.cdf_dtheta(u)):
        assert np.all(np.isfinite(arr))
    assert mech.cdf(np.array([1.0]))[0] == pytest.approx(1.0, abs=1e-9)
    assert mech.kl() >= 0


def test_small_parameters_keep_relative_accuracy() -> None:
    # KL ~ theta^2 * (Fisher information) / 2 near the reference: relative, not absolute, accuracy.
    assert ht.BestOfPoisson(1e-6).kl() == pytest.approx(1e-12 / 6, rel=1e-5)
    assert ht.Tilted(1e-6).kl() == pytest.approx(1e-12 / 24, rel=1e-5)
    assert ht.BestOfN(1 + 1e-6).kl() == pytest.approx(1e-12 / 2, rel=1e-5)
    assert ht.BestOfPoisson(1e-6).mean() - 0.5 == pytest.approx(1e-6 / 6, rel=1e-5)


def test_large_parameters_approach_their_asymptotes() -> None:
    # KL(BoN_n) ~ log n - 1, KL(BoP_mu) ~ log(1 + mu) - 1, KL(tilt) ~ log(beta) - 1.
    assert ht.BestOfPoisson(1e6).kl() == pytest.approx(np.log(1e6) - 1, abs=1e-5)
    assert ht.Tilted(1e6).kl() == pytest.approx(np.log(1e6) - 1, abs=1e-5)
    assert ht.BestOfPoisson(1e4).mean() == pytest.approx(1 - (1e4 - 1) / 1e8, rel=1e-14)


@pytest.mark.parametrize(
    "template, thetas",
    [
        (ht.BestOfN(1), [1.0, 1.0 + 1e-7, 1.0009, 1.0011, 2.0, 7.5, 1e4]),
        (ht.BestOfPoisson(0.0), [0.0, 1e-4, 0.5, 30.0, 1e4]),
        (ht.SoftBestOfN(4, 0.0, "quantile"), [0.0, 0.3, 12.0]),
    ],
    ids=["bon", "bop", "sbon"],
)
def test_kl_and_expected_samples_over_a_grid_equal_one_parameter_at_a_time(template, thetas) -> None:
    grid = np.array(thetas)
    one_at_a_time = [template.with_theta(t) for t in thetas]
    np.testing.assert_allclose(template.kl_many(grid), [m.kl() for m in one_at_a_time], rtol=1e-14, atol=1e-300)
    np.testing.assert_array_equal(template.expected_samples_many(grid), [m.expected_samples() for m in one_at_a_time])
    if template.name == "bon":  # both sides of the series' switch point against the closed form
        n = grid[grid > 1.0005]  # where the closed form has no cancellation to speak of
        np.testing.assert_allclose(template.kl_many(n), np.log(n) - (n - 1) / n, rtol=1e-8)
