"""The paper's synthetic experiment: what hedging buys at a fixed sample budget, on tent rewards.

The true reward is a tent of the proxy quantile u, rising linearly to 1 at u = alpha and falling back
to 0 at u = 1 (alpha in 80, 85, 90, 95). The paper's comparison is made **at the same number of
samples**: a user who has paid for n candidates can keep the best (Best-of-n) or hedge with Soft
Best-of-n at its best inverse temperature beta; Best-of-Poisson is compared with Best-of-n at the
same expected number of samples (mu = n - 1). Reported for each alpha and n:

* exact values from the mechanisms' densities (uniform quantiles, no sampling): the improvement of
  best-beta SBoN(n) and of BoP(n - 1) over BoN(n), in expected true reward and in the paper's
  metric, P(chosen reward > 1.1 x a single sample's reward);
* what a user gets: SBoN(n) at HedgeTune's beta (``hedgetune.tune`` with its defaults, on a
  calibration table), valued exactly;
* bootstrap bands over prompts, from calibration tables estimated with the without-replacement
  (deployment) estimators: the U-statistics of BoN(n), SBoN(n) and the Poisson mixture of BoN.

Also reported, as a second observation: the peaks over all n. BoP's curve is a Poisson mixture of
BoN values, E_BoP(mu) = sum_k Pois(k; mu) E_BoN(k + 1), so its peak can never exceed BoN's.

Run: ``.venv/bin/python experiments/tent.py [--out experiments/out] [--quick]`` (about 2.5 minutes;
``--quick`` about 30 s).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize

import hedgetune as ht
from hedgetune.mechanisms import BestOfN, BestOfPoisson, Mechanism, SoftBestOfN
from hedgetune.mechanisms._numerics import composite_gauss_legendre
from hedgetune.pools import build_pools
from hedgetune.synthetic import tent_reward

ALPHAS = (0.80, 0.85, 0.90, 0.95)
NS = (2, 4, 8, 16, 32, 64, 128)
MARGIN = 1.1  # the paper's metric: P(R(chosen) > 1.1 R(single sample))
LOG_BETA = (-2.0, 8.0)  # search range of log beta for the best temperature


# ------------------------------------------------------------------------------ exact values
def _u_rule(alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes on [0, 1] with a break at the tent's kink and graded towards 1."""
    breaks = np.unique(np.r_[np.linspace(0, 1, 65), alpha, 1 - 2.0 ** -np.arange(6, 30)])
    return composite_gauss_legendre(breaks, 8)


def _single_sample_cdf(alpha: float) -> Any:
    """``G(t) = P(R(V) < t)`` for V uniform, from a fine grid (for a tent it is min(t, 1))."""
    v = (np.arange(400_000) + 0.5) / 400_000
    values = np.sort(tent_reward(alpha)(v))
    return lambda t: np.searchsorted(values, t, side="left") / values.size


def expected_reward(mech: Mechanism, alpha: float) -> float:
    """Exact expected true reward of ``mech`` on uniform quantiles, integrating against its CDF:
    E[R(U)] = R(1) - int_0^1 R'(u) Q(u) du, with R(1) = 0 for the tent."""
    u, w = _u_rule(alpha)
    slope = np.where(u < alpha, 1 / alpha, -1 / (1 - alpha))
    return -float(np.sum(w * slope * mech.cdf(u)))


def paper_metric(mech: Mechanism, alpha: float) -> float:
    """P(R(chosen) > 1.1 R(V)), V a single independent sample: E[G(R(U) / 1.1)] with G the CDF of
    R(V), integrated against the mechanism's probabilities on a fine grid."""
    grid = np.linspace(0, 1, 20_001)
    mid = (grid[1:] + grid[:-1]) / 2
    return float(np.sum(np.diff(mech.cdf(grid)) * _single_sample_cdf(alpha)(tent_reward(alpha)(mid) / MARGIN)))


def exact_values(mech: Mechanism, alphas: tuple[float, ...] = ALPHAS) -> dict[float, tuple[float, float]]:
    """Per alpha: (expected true reward, the paper's metric)."""
    return {alpha: (expected_reward(mech, alpha), paper_metric(mech, alpha)) for alpha in alphas}


def best_beta(n: int, alphas: tuple[float, ...] = ALPHAS, grid_points: int = 41) -> dict[float, float]:
    """The inverse temperature maximising SBoN(n)'s exact true reward, per alpha (grid, then Brent)."""
    grid = np.linspace(*LOG_BETA, grid_points)
    mechs = [SoftBestOfN(n, float(np.exp(b)), "quantile") for b in grid]
    values = np.array([[expected_reward(mech, a) for a in alphas] for mech in mechs])
    out = {}
    for j, alpha in enumerate(alphas):
        k = int(np.argmax(values[:, j]))
        lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
        res = optimize.minimize_scalar(
            lambda b, a=alpha: -expected_reward(SoftBestOfN(n, float(np.exp(b)), "quantile"), a),
            bounds=(lo, hi),
            method="bounded",
            options={"xatol": 1e-3},
        )
        out[alpha] = float(np.exp(res.x))
    return out


# ------------------------------------------------------------------------------ calibration tables
def table_values(table: ht.RewardTable, n: int, beta: float) -> dict[str, np.ndarray]:
    """Per-prompt deployment (without replacement) estimates of BoN(n), SBoN(n, beta) on quantiles
    and BoP(n - 1), from pools of equal size m >= n (rank-based: one weight vector per mechanism,
    from :meth:`hedgetune.Mechanism.deployment_probabilities`)."""
    (group,) = build_pools(table).groups
    m = group.m
    weights = {
        "bon": BestOfN(n).deployment_probabilities(m)[0],
        "sbon": SoftBestOfN(n, beta, "quantile").deployment_probabilities(m)[0],
        "bop": BestOfPoisson(n - 1.0).deployment_probabilities(m)[0],  # 1 + Poisson(n - 1)
    }
    # P(chosen > 1.1 x another response of the same pool), the other drawn from the pool.
    single = np.sort(group.true, axis=1)
    below = np.stack(
        [np.searchsorted(row, row_true / MARGIN, side="left") for row, row_true in zip(single, group.true, strict=True)]
    )
    out = {}
    for name, w in weights.items():
        out[name] = group.true @ w
        out[name + "_metric"] = (below / m) @ w
    return out


def bootstrap_band(numerator: np.ndarray, denominator: np.ndarray, replicates: int, seed: int) -> tuple[float, float]:
    """95% band of 100 (mean(numerator) / mean(denominator) - 1), resampling prompts."""
    rng = np.random.default_rng(seed)
    p = numerator.size
    weights = rng.multinomial(p, np.full(p, 1 / p), size=replicates)
    ratios = 100 * ((weights @ numerator) / (weights @ denominator) - 1)
    low, high = np.quantile(ratios, [0.025, 0.975])
    return float(low), float(high)


# ------------------------------------------------------------------------------ the experiment
def run(out: Path, quick: bool = False) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    ns = NS[:5] if quick else NS
    prompts, samples, replicates = (150, 64, 300) if quick else (400, 256, 1000)
    bon = {n: exact_values(BestOfN(n)) for n in ns}
    bop = {n: exact_values(BestOfPoisson(n - 1.0)) for n in ns}
    betas = {n: best_beta(n, grid_points=21 if quick else 41) for n in ns}
    sbon = {n: {a: exact_values(SoftBestOfN(n, betas[n][a], "quantile"), (a,))[a] for a in ALPHAS} for n in ns}
    results: dict[str, Any] = {"settings": {"ns": list(ns), "table": [prompts, samples], "replicates": replicates}}
    for alpha in ALPHAS:
        table = ht.synthetic.make_table(f"tent:{alpha}", prompts, samples, seed=int(alpha * 100))
        rows = []
        for n in ns:
            b, s, p = bon[n][alpha], sbon[n][alpha], bop[n][alpha]
            tuned = ht.tune(table, "sbon", n=n, on="quantile")
            user = (expected_reward(SoftBestOfN(n, tuned.theta, "quantile"), alpha),)
            row: dict[str, Any] = {
                "n": n,
                "bon_kl": float(np.log(n) - (n - 1) / n),
                "bon": b[0],
                "sbon_best_beta": betas[n][alpha],
                "sbon": s[0],
                "sbon_gain_pct": 100 * (s[0] / b[0] - 1),
                "sbon_metric_gain_pct": 100 * (s[1] / b[1] - 1),
                "hedgetune_beta": tuned.theta,
                "hedgetune_sbon": user[0],
                "hedgetune_gain_pct": 100 * (user[0] / b[0] - 1),
                "bop": p[0],
                "bop_gain_pct": 100 * (p[0] / b[0] - 1),
                "bop_metric_gain_pct": 100 * (p[1] / b[1] - 1),
                "bon_metric": b[1],
                "sbon_metric": s[1],
            }
            if 2 * n <= samples:  # the Poisson tail beyond the pool is negligible (< 1e-6) here
                per_prompt = table_values(table, n, betas[n][alpha])
                row["table_sbon_gain_pct"] = 100 * (per_prompt["sbon"].mean() / per_prompt["bon"].mean() - 1)
                row["table_sbon_gain_band"] = bootstrap_band(per_prompt["sbon"], per_prompt["bon"], replicates, n)
                row["table_bop_gain_pct"] = 100 * (per_prompt["bop"].mean() / per_prompt["bon"].mean() - 1)
                row["table_bop_gain_band"] = bootstrap_band(per_prompt["bop"], per_prompt["bon"], replicates, n)
                for mech in ("sbon", "bop"):  # the paper's metric, same bands
                    row[f"table_{mech}_metric_gain_band"] = bootstrap_band(
                        per_prompt[f"{mech}_metric"], per_prompt["bon_metric"], replicates, n
                    )
            rows.append(row)
        bop_peak = optimize.minimize_scalar(
            lambda mu, a=alpha: -expected_reward(BestOfPoisson(mu), a), bounds=(0.0, 200.0), method="bounded"
        )
        results[f"alpha={alpha}"] = {
            "rows": rows,
            "peaks": {  # the best over all parameters (n in NS for BoN and SBoN, every mu for BoP)
                "bon": max(bon[n][alpha][0] for n in ns),
                "sbon_best_beta": max(sbon[n][alpha][0] for n in ns),
                "bop": -float(bop_peak.fun),
                "bop_mu": float(bop_peak.x),
            },
        }
    _figure(results, ns, out)
    (out / "tent.json").write_text(json.dumps(results, indent=1, default=float))
    return results


def _figure(results: dict[str, Any], ns: tuple[int, ...], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, alpha in zip(colours, ALPHAS, strict=False):
        rows = results[f"alpha={alpha}"]["rows"]
        kl = [r["bon_kl"] for r in rows]
        label = f"tent at {int(alpha * 100)}%"
        left.plot(kl, [r["sbon_gain_pct"] for r in rows], "o-", color=colour, label=f"{label}: best beta")
        left.plot(kl, [r["hedgetune_gain_pct"] for r in rows], "x--", color=colour, label=f"{label}: HedgeTune's beta")
        banded = [r for r in rows if "table_sbon_gain_band" in r]
        for ax, x_key, band_key in ((left, "bon_kl", "table_sbon_gain_band"), (right, "n", "table_bop_gain_band")):
            ax.fill_between(
                [r[x_key] for r in banded],
                [r[band_key][0] for r in banded],
                [r[band_key][1] for r in banded],
                color=colour,
                alpha=0.15,
                lw=0,
            )
        right.plot([r["n"] for r in rows], [r["bop_gain_pct"] for r in rows], "o-", color=colour, label=label)
    left.set_yscale("symlog", linthresh=10)
    left.set_xlabel("log n - (n - 1)/n  (KL of Best-of-n)")
    left.set_ylabel("reward improvement over BoN(n), %")
    left.set_title("Soft Best-of-n vs Best-of-n at the same n")
    secondary = left.secondary_xaxis("top", functions=(lambda x: x, lambda x: x))
    secondary.set_ticks([float(np.log(n) - (n - 1) / n) for n in ns], labels=[str(n) for n in ns])
    secondary.set_xlabel("n")
    right.set_xscale("log", base=2)
    right.set_xlabel("expected samples (BoP: 1 + mu; BoN: n)")
    right.set_ylabel("reward improvement over BoN(n), %")
    right.set_title("Best-of-Poisson vs Best-of-n at equal expected samples")
    for ax in (left, right):
        ax.axhline(0, color="black", lw=0.8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Tent-shaped true rewards: exact values (lines), 95% bootstrap bands from calibration tables (shaded)")
    fig.tight_layout()
    for fmt in ("png", "svg"):
        fig.savefig(out / f"tent.{fmt}", dpi=120)
    plt.close(fig)


def report(results: dict[str, Any]) -> None:
    for key, entry in results.items():
        if not key.startswith("alpha"):
            continue
        print(key)
        for r in entry["rows"]:
            band = r.get("table_sbon_gain_band")
            band_text = f" [table {band[0]:+.1f}%, {band[1]:+.1f}%]" if band else ""
            print(
                f"  n={r['n']:4d}  BoN {r['bon']:.4f}  SBoN(beta*={r['sbon_best_beta']:.2f}) {r['sbon_gain_pct']:+7.1f}%{band_text}"
                f"  HedgeTune beta={r['hedgetune_beta']:.2f} {r['hedgetune_gain_pct']:+7.1f}%  BoP(mu=n-1) {r['bop_gain_pct']:+5.1f}%"
            )
        print(f"  peaks: {entry['peaks']}")


if __name__ == "__main__":
    from _common import cli

    cli(__doc__, run, report)
