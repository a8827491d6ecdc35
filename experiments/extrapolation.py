"""Is the extrapolation past the pools honest? Coverage of its interval on the paper's toy.

On the toy ``R(u) = u^12 (1 - u) / C`` the deployed true reward is known exactly: Best-of-n
gives ``f(n) = n / ((n + 12)(n + 13)) / C`` (peak at n = sqrt(156) = 12.49) and Best-of-Poisson
``sum_k Poisson(k; mu) f(k + 1)``. For pools of m in {11, 16, 32} responses and K in {50, 200}
prompts, 100 replicate tables each, we tune both mechanisms and count, when the tuning offers an
extrapolated peak, whether its interval covers the true peak. An extrapolation whose offered
intervals cover the truth in fewer than 90% of offers must not be offered
(:data:`hedgetune.extrapolate.OFFERED`).

Run: ``.venv/bin/python experiments/extrapolation.py [--out experiments/out] [--quick]`` (~1 min).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, stats

import hedgetune as ht
from hedgetune import extrapolate as extra

C = (12 / 13) ** 12 / 13  # the toy's normaliser: R peaks at 1


def bon_value(n: Any) -> Any:
    n = np.asarray(n, dtype=float)
    return n / ((n + 12) * (n + 13)) / C


def bop_value(mu: float) -> float:
    k = np.arange(0, 4000)
    return float(stats.poisson.pmf(k, mu) @ bon_value(k + 1))


TRUE_PEAK = {
    "bon": float(np.sqrt(156.0)),
    "bop": float(optimize.minimize_scalar(lambda mu: -bop_value(mu), bounds=(0.1, 200), method="bounded", options={"xatol": 1e-9}).x),
}


def run(out: Path, quick: bool) -> dict[str, Any]:
    replicates, bootstrap = (10, 100) if quick else (100, 300)
    rows = []
    started = time.perf_counter()
    for mech in ("bon", "bop"):
        for m in (11, 16, 32):
            for k in (50, 200):
                offers = covered = 0
                slowest = 0.0
                for r in range(replicates):
                    table = ht.synthetic.make_table("toy", k, m, seed=1000 * m + 10 * k + r)
                    begun = time.perf_counter()
                    tuned = ht.tune(table, mech, bootstrap=bootstrap, seed=r)
                    slowest = max(slowest, time.perf_counter() - begun)
                    e = tuned.extrapolation
                    if e is not None and e.accepted:
                        offers += 1
                        lo, hi = e.peak_theta_ci
                        covered += int(lo <= TRUE_PEAK[mech] <= hi)
                rows.append({"mechanism": mech, "m": m, "prompts": k, "replicates": replicates, "offers": offers,
                             "covered": covered, "coverage": covered / offers if offers else None,
                             "slowest_tune_s": slowest})
    offers = sum(r["offers"] for r in rows)
    covered = sum(r["covered"] for r in rows)
    result = {"true_peak": TRUE_PEAK, "rows": rows, "offers": offers, "covered": covered,
              "coverage": covered / offers if offers else None, "offered": extra.OFFERED,
              "seconds": time.perf_counter() - started}
    out.mkdir(parents=True, exist_ok=True)
    (out / "extrapolation.json").write_text(json.dumps(result, indent=1))
    return result


def report(result: dict[str, Any]) -> None:
    print(f"true peaks: n* = {result['true_peak']['bon']:.3f}, mu* = {result['true_peak']['bop']:.3f}")
    print(f"{'mech':>5} {'m':>3} {'K':>4} {'offers':>7} {'covered':>8} {'coverage':>9} {'slowest tune':>13}")
    for r in result["rows"]:
        cov = "-" if r["coverage"] is None else f"{r['coverage']:.0%}"
        print(f"{r['mechanism']:>5} {r['m']:>3} {r['prompts']:>4} {r['offers']:>7} {r['covered']:>8} {cov:>9} {r['slowest_tune_s']:>12.2f}s")
    cov = "-" if result["coverage"] is None else f"{result['coverage']:.0%}"
    print(f"all: {result['covered']} of {result['offers']} offered intervals cover the truth ({cov}); "
          f"extrapolation offered by hedgetune: {result['offered']}")


if __name__ == "__main__":
    from _common import cli

    cli(__doc__, run, report)
