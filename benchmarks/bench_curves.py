"""Curve speed and memory (issue: calibration tables and exact hacking curves).

1. On 800 prompts x 12,600 candidates (the size of the largest public overoptimisation pool):
   ``curve(table, "bon")`` and ``curve(table, "bop")`` as a user calls them (default grid, default
   1,000-replicate bootstrap band), then the full Best-of-n (every n <= m) and Best-of-Poisson
   (200 mu) mean curves without the band: time and peak memory as ratios to ``np.sort`` of the
   same matrix and to the table's size (targets <= 3x each).
2. On 800 prompts x 39 candidates (the paper authors' setting): the exact curves against a
   1,200-permutation Monte Carlo estimate of the same curves, computed the way research scripts do
   it (shuffle each pool, take the best of the first n): speed ratio (target >= 100x) and the Monte
   Carlo error that exactness removes.

Run: ``.venv/bin/python benchmarks/bench_curves.py [--quick]``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from _timing import alternating, best_time, peak_bytes

import hedgetune as ht


def large_pools(prompts: int = 800, m: int = 12_600) -> dict[str, float]:
    rng = np.random.default_rng(0)
    proxy = rng.normal(size=(prompts, m))
    true = proxy + rng.normal(size=(prompts, m))
    table = ht.RewardTable.from_arrays(proxy, true)
    sort_time = best_time(lambda: np.sort(proxy, axis=1), repeats=3)
    table_bytes = proxy.nbytes + true.nbytes
    ns = np.arange(1, m + 1, dtype=float)
    mus = np.geomspace(0.01, 4 * m, 200)

    def bon_default() -> object:
        return ht.curve(table, "bon")

    def bop_default() -> object:
        return ht.curve(table, "bop")

    def bon() -> object:
        return ht.curve(table, "bon", ns, bootstrap=0)

    def bop() -> object:
        return ht.curve(table, "bop", mus, bootstrap=0)

    out = {}
    print(
        f"{prompts} prompts x {m:,} candidates; np.sort of the matrix: {sort_time:.2f} s; table {table_bytes / 2**20:.0f} MiB"
    )
    cases = (
        ("BoN, as called (band)", bon_default),
        ("BoP, as called (band)", bop_default),
        ("BoN, every n <= m", bon),
        ("BoP, 200 mu", bop),
    )
    def sort() -> object:
        return np.sort(proxy, axis=1)

    for name, fn in cases:
        seconds, baseline = alternating(fn, sort)
        peak = peak_bytes(fn)
        out[f"{name} time / sort"] = seconds / baseline
        out[f"{name} peak / table"] = peak / table_bytes
        print(
            f"  {name:<22} {seconds:6.2f} s = {seconds / baseline:5.2f}x sort   peak memory {peak / table_bytes:5.2f}x table"
        )
    return out


def monte_carlo_bon(
    proxy: np.ndarray, true: np.ndarray, ns: np.ndarray, permutations: int, seed: int
) -> np.ndarray:
    """Research-script estimate: shuffle each pool, the true reward of the best proxy among the first n."""
    rng = np.random.default_rng(seed)
    prompts, m = proxy.shape
    total = np.zeros(ns.size)
    for _ in range(permutations):
        order = rng.permuted(np.tile(np.arange(m), (prompts, 1)), axis=1)
        p, g = np.take_along_axis(proxy, order, axis=1), np.take_along_axis(true, order, axis=1)
        running = np.maximum.accumulate(p, axis=1)
        best_idx = np.maximum.accumulate(np.where(p == running, np.arange(m), 0), axis=1)
        chosen = np.take_along_axis(g, best_idx, axis=1)  # (prompts, m): best of the first n
        total += chosen[:, ns.astype(int) - 1].mean(axis=0)
    return total / permutations


def authors_setting(prompts: int = 800, m: int = 39, permutations: int = 1200) -> dict[str, float]:
    rng = np.random.default_rng(1)
    proxy = rng.normal(size=(prompts, m))
    true = proxy + 2 * rng.normal(size=(prompts, m))
    table = ht.RewardTable.from_arrays(proxy, true)
    ns = np.arange(1, m + 1, dtype=float)
    exact = ht.curve(table, "bon", ns, estimator="unbiased", bootstrap=0).true_reward
    exact_time = best_time(lambda: ht.curve(table, "bon", ns, estimator="unbiased", bootstrap=0), repeats=3)
    start = time.perf_counter()
    mc = monte_carlo_bon(proxy, true, ns, permutations, seed=2)
    mc_time = time.perf_counter() - start
    error = float(np.max(np.abs(mc - exact)))
    print(f"{prompts} prompts x {m} candidates, BoN n = 1..{m} (without replacement)")
    print(
        f"  exact {exact_time * 1e3:.1f} ms; {permutations}-permutation Monte Carlo {mc_time:.2f} s: "
        f"{mc_time / exact_time:.0f}x faster; Monte Carlo error removed: max {error:.2e}"
    )
    return {"speedup vs Monte Carlo": mc_time / exact_time, "Monte Carlo max error": error}


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    authors_setting(permutations=120 if quick else 1200)
    large_pools(m=1_260 if quick else 12_600)
