"""HedgeTune speed: ``tune`` with 1,000 bootstrap replicates on 800 prompts x 39 candidates.

Target: under 2 s each on 2 cores for BoN, BoP and SBoN (on quantiles and on raw scores); also
reported as a ratio to one plug-in curve evaluation (the true reward at 60 parameter values, no
bootstrap) measured in the same run. Soft Best-of-n on raw scores runs the compiled kernel when
the ``fast`` extra (Numba) is installed; the script also reports, in a fresh process with an
empty Numba cache, how long importing the kernel and compiling it take (paid once per
environment: the compiled code is cached on disk).
Run: ``.venv/bin/python benchmarks/bench_tune.py`` (``--without-raw-sbon`` skips raw scores).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from _timing import best_time

import hedgetune as ht
from hedgetune.curves import pool_sums
from hedgetune.mechanisms import make
from hedgetune.mechanisms._subsets import compiled_kernel
from hedgetune.pools import build_pools

_COLD_START = """
import time
t0 = time.perf_counter()
import numpy as np
from hedgetune.mechanisms._subsets import compiled_kernel, soft_best_of_n_subsets
t1 = time.perf_counter()
compiled_kernel()
t2 = time.perf_counter()
soft_best_of_n_subsets(np.sort(np.random.default_rng(0).random((4, 9)), axis=1), 2.0, 3, True)
t3 = time.perf_counter()
print(f"{t2 - t1:.2f} {t3 - t2:.2f}")
"""


def cold_start() -> tuple[float, float]:
    """Seconds to import the Numba kernel and to compile it, in a fresh process and cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        out = subprocess.run([sys.executable, "-c", _COLD_START], env=env, capture_output=True, text=True, check=True)
    load, compile_ = (float(x) for x in out.stdout.split())
    return load, compile_


def main(prompts: int = 800, m: int = 39, raw_sbon: bool = True) -> dict[str, float]:
    table = ht.synthetic.make_table("toy", prompts, m, noise=0.3, seed=0)
    pools = build_pools(table)
    out = {}
    print(f"tune with 1,000 bootstrap replicates on {prompts} prompts x {m} candidates")
    cases: list[tuple[str, dict[str, object]]] = [("bon", {}), ("bop", {}), ("sbon", {"n": 8, "on": "quantile"})]
    if raw_sbon:
        if compiled_kernel() is None:
            print("  (Soft Best-of-n on raw scores skipped: without the 'fast' extra it takes minutes)")
        else:
            load, compile_ = cold_start()
            print(f"  compiled kernel: import {load:.2f} s, first compile {compile_:.2f} s (once per environment)")
            cases += [("sbon", {"n": 8}), ("sbon", {"n": 4})]
    for name, kwargs in cases:
        label = name + ("" if not kwargs else f" n={kwargs['n']} on={kwargs.get('on', 'raw')}")
        template = make(name, **kwargs)
        seconds = best_time(lambda: ht.tune(table, name, bootstrap=1000, **kwargs), repeats=3)  # noqa: B023
        out[label] = seconds
        # One plug-in curve evaluation: the true reward at 60 parameter values, no bootstrap.
        grid = template.default_grid(pools, "plugin")
        baseline = best_time(lambda: pool_sums(pools, template, grid, kl_pool=False), repeats=3)  # noqa: B023
        print(
            f"  {label:<22} {seconds:6.2f} s   {seconds / baseline:6.1f}x one curve ({baseline * 1e3:.1f} ms)"
        )
    return out


if __name__ == "__main__":
    main(raw_sbon="--without-raw-sbon" not in sys.argv)
