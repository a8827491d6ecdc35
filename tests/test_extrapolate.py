"""Extrapolation past the pools (Gao et al. 2022's form): exact on curves of that form, refused
with a reason when it does not fit, labelled everywhere it appears."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import optimize

import hedgetune as ht
from hedgetune.cli import main
from hedgetune.data import path as bundled
from hedgetune.extrapolate import MIN_R2, extrapolate


def gao_curve(template: ht.Mechanism, grid: np.ndarray, alpha: float, beta: float, ref: float) -> np.ndarray:
    d = np.sqrt([template.with_theta(float(t)).kl() for t in grid])
    return ref + d * (alpha - beta * d)


@pytest.mark.parametrize("template", [ht.BestOfN(1), ht.BestOfPoisson(0)])
def test_a_curve_of_the_model_form_is_recovered(template: ht.Mechanism) -> None:
    alpha, beta, ref = 0.3, 0.1, 0.2  # peak at d* = 1.5: past the supported range, within the horizon
    top = 11.0
    grid = np.unique(np.r_[template.reference_theta, np.geomspace(0.5, top, 12)]) if not template.integer_parameter else np.arange(1.0, top + 1)
    e = extrapolate(template, grid, gao_curve(template, grid, alpha, beta, ref), ref, top)
    assert e.accepted and e.r2 == pytest.approx(1.0, abs=1e-12)
    assert (e.alpha, e.beta) == pytest.approx((alpha, beta), rel=1e-9)
    # Independent inversion of the KL: the parameter whose KL is (alpha / 2 beta)^2.
    expected = optimize.brentq(lambda t: template.with_theta(t).kl() - (alpha / (2 * beta)) ** 2, 1.0, 1e7)
    assert e.peak_theta == pytest.approx(expected, rel=1e-8) and e.peak_theta > top
    assert e.peak_true_reward == pytest.approx(ref + alpha**2 / (4 * beta), rel=1e-12)
    assert e.theta[0] == pytest.approx(top) and e.true_reward.max() <= e.peak_true_reward + 1e-12


def test_replicates_give_intervals_around_the_peak() -> None:
    template, grid, ref = ht.BestOfN(1), np.arange(1.0, 12.0), 0.2
    rng = np.random.default_rng(0)
    alphas, betas = 0.3 + rng.normal(0, 0.005, 200), 0.1 + rng.normal(0, 0.002, 200)
    reps = np.stack([gao_curve(template, grid, a, b, ref) for a, b in zip(alphas, betas, strict=True)])
    e = extrapolate(template, grid, gao_curve(template, grid, 0.3, 0.1, ref), ref, 11.0, reps, np.full(200, ref))
    lo, hi = e.peak_theta_ci
    assert lo < e.peak_theta < hi and e.share_of_replicates_with_a_peak == 1.0
    vlo, vhi = e.peak_true_reward_ci
    assert vlo < e.peak_true_reward < vhi


def test_the_gate_refuses_what_the_model_does_not_support() -> None:
    template, grid, ref = ht.BestOfN(1), np.arange(1.0, 12.0), 0.2
    d = np.sqrt([template.with_theta(float(t)).kl() for t in grid])
    rising = extrapolate(template, grid, ref + 0.1 * d + 0.01 * d**2, ref, 11.0)
    assert not rising.accepted and "no peak" in rising.reason
    noisy = extrapolate(template, grid, ref + np.random.default_rng(1).normal(0, 0.05, grid.size), ref, 11.0)
    assert not noisy.accepted and (f"< {MIN_R2}" in noisy.reason or "no peak" in noisy.reason)
    inside = extrapolate(template, grid, gao_curve(template, grid, 0.3, 0.3, ref), ref, 11.0)
    assert not inside.accepted and "inside" in inside.reason
    few = extrapolate(template, grid[:3], gao_curve(template, grid[:3], 0.3, 0.06, ref), ref, 3.0)
    assert not few.accepted and "only 2" in few.reason
    assert "no extrapolation" in few.sentence("n") and np.isnan(few.peak_theta)
    json.dumps(few.to_dict(), allow_nan=False)


def test_no_peak_at_the_reward_ceiling_or_past_the_horizon() -> None:
    """Review: a peak was reported at n = inf with true reward 1.0000 (the ceiling), from replicates
    of which a third had no peak at all."""
    from hedgetune.extrapolate import HORIZON

    template, grid, ref = ht.BestOfN(1), np.arange(1.0, 12.0), 0.5
    ceiling = extrapolate(template, grid, gao_curve(template, grid, 2.0, 2 / 3, ref), ref, 11.0, reward_range=(0.0, 1.0))
    assert not ceiling.accepted and "ceiling" in ceiling.reason
    far = extrapolate(template, grid, gao_curve(template, grid, 0.3, 0.06, 0.2), 0.2, 11.0)  # d* = 2.5: n ~ 1,400
    assert not far.accepted and "horizon" in far.reason and f"{HORIZON * 11:.4g}" in far.reason
    # A third of the replicates rise without a peak: they count as +inf, so the interval is open.
    rng = np.random.default_rng(0)
    reps = np.stack([gao_curve(template, grid, 0.3, 0.1 if k % 3 else -0.01, 0.2) + rng.normal(0, 1e-4, grid.size)
                     for k in range(300)])
    e = extrapolate(template, grid, gao_curve(template, grid, 0.3, 0.1, 0.2), 0.2, 11.0, reps, np.full(300, 0.2))
    assert e.accepted and e.peak_theta_ci[1] == np.inf and e.share_of_replicates_with_a_peak == pytest.approx(2 / 3, abs=0.01)
    assert e.theta.max() <= HORIZON * 11 * (1 + 1e-12)


def test_tune_offers_it_labelled_where_the_curve_still_rises(tmp_path: Path) -> None:
    """Bundled AlpacaEval, length proxy: Best-of-n still rises at n = 11, the pool size."""
    table = ht.read_table(bundled("alpacaeval")).with_proxy("length")
    result = ht.tune(table, "bon", bootstrap=200)
    e = result.extrapolation
    assert e is not None and e.accepted and e.peak_theta > result.supported_max == 11
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False))["extrapolation"]["accepted"] is True
    out = CliRunner().invoke(main, ["tune", str(bundled("alpacaeval")), "-m", "bon", "--proxy", "length", "--bootstrap", "100"])
    assert out.exit_code == 0 and "extrapolated beyond the data" in out.output and "not a measurement" in out.output
    # Where the curve peaks inside the data there is nothing to extrapolate.
    assert ht.tune(ht.read_table(bundled("arithmetic")).with_proxy("rm_20p_flip25"), "bon", bootstrap=50).extrapolation is None
    from hedgetune.report import figures

    curve = ht.curve(table, "bon", bootstrap=50)
    fig = figures.hacking_curve(curve, result)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert any(label.startswith("extrapolated") for label in labels)
    dashed = next(line for line in fig.axes[0].get_lines() if line.get_label().startswith("extrapolated"))
    assert dashed.get_linestyle() == "--"
