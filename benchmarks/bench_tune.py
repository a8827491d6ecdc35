"""HedgeTune speed: ``tune`` with 1,000 bootstrap replicates on 800 prompts x 39 candidates.

Target: under 2 s each on 2 cores for BoN, BoP and SBoN; also reported as a ratio to one plug-in
curve evaluation (the true reward at 60 parameter values, no bootstrap) measured in the same run.
Run: ``.venv/bin/python benchmarks/bench_tune.py``.
"""

from __future__ import annotations

from _timing import best_time

import hedgetune as ht
from hedgetune.curves import default_thetas, make_mechanism, pool_sums
from hedgetune.pools import build_pools


def main(prompts: int = 800, m: int = 39, raw_sbon: bool = True) -> dict[str, float]:
    table = ht.synthetic.make_table("toy", prompts, m, noise=0.3, seed=0)
    pools = build_pools(table)
    out = {}
    print(f"tune with 1,000 bootstrap replicates on {prompts} prompts x {m} candidates")
    cases: list[tuple[str, dict[str, object]]] = [("bon", {}), ("bop", {}), ("sbon", {"n": 8, "on": "quantile"})]
    if raw_sbon:  # minutes: the deployment estimator on raw scores needs a quadrature per prompt
        cases.append(("sbon", {"n": 8}))
    for name, kwargs in cases:
        label = name + ("" if not kwargs else f" n={kwargs['n']} on={kwargs.get('on', 'raw')}")
        repeats = 1 if kwargs.get("on", "raw") == "raw" and name == "sbon" else 3
        template = make_mechanism(name, **kwargs)
        grid = default_thetas(template, pools)
        # One plug-in curve evaluation: the true reward at 60 parameter values, no bootstrap.
        baseline = best_time(lambda: pool_sums(pools, template, grid, kl_pool=False), repeats=repeats)  # noqa: B023
        seconds = best_time(lambda: ht.tune(table, name, bootstrap=1000, **kwargs), repeats=repeats)  # noqa: B023
        out[label] = seconds
        print(
            f"  {label:<22} {seconds:6.2f} s   {seconds / baseline:6.1f}x one curve ({baseline * 1e3:.0f} ms)"
        )
    return out


if __name__ == "__main__":
    import sys

    main(raw_sbon="--without-raw-sbon" not in sys.argv)
