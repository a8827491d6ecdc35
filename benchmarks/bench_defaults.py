"""No default call over 5 s: ``curve``, ``tune`` and ``evaluate`` with their defaults, for every
registered mechanism and both estimators, on the bundled tables and on synthetic tables up to
1,000 prompts x 64 candidates (with the columns the set rules need). Prints every call's time and
the slowest ones; exits 1 if any default call takes more than 5 s.

Run on the install a user gets (``./dev demo`` builds it): ``.venv/bin/python benchmarks/bench_defaults.py``
(``--quick``: the synthetic tables at 200 x 16 only).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import hedgetune as ht
from hedgetune.data import load
from hedgetune.mechanisms import registry

LIMIT_S = 5.0


def synthetic(prompts: int, m: int, seed: int = 0) -> ht.RewardTable:
    """A toy-shaped table with the extra columns the related hedges read."""
    rng = np.random.default_rng(seed)
    base = ht.synthetic.make_table("toy", prompts, m, seed=seed)
    proxy = base.proxies["proxy_reward"].reshape(prompts, m)
    true = np.asarray(base.true_reward).reshape(prompts, m)
    columns = {"proxy_reward": proxy, "mean_logprob": -rng.gamma(2.0, 0.3, (prompts, m)),
               "length": rng.integers(5, 400, (prompts, m)).astype(float)}
    embeddings = rng.normal(size=(prompts, m, 8))
    embeddings /= np.linalg.norm(embeddings, axis=2, keepdims=True)
    similarity = list(np.einsum("pid,pjd->pij", embeddings, embeddings).reshape(prompts * m, m))  # a list per response
    return ht.RewardTable.from_arrays(columns, true, pairwise_similarity=similarity)


def calls(table: ht.RewardTable, name: str) -> list[tuple[str, Callable[[], Any]]]:
    out = []
    for estimator in ("unbiased", "plugin"):
        out.append((f"curve {name} {estimator}", lambda e=estimator: ht.curve(table, name, estimator=e)))
        out.append((f"tune {name} {estimator}", lambda e=estimator: ht.tune(table, name, estimator=e)))
    out.append((f"evaluate {name}", lambda: ht.evaluate(table, name)))
    return out


def main(quick: bool = False) -> list[tuple[float, str]]:
    tables: dict[str, ht.RewardTable] = {"alpacaeval": load("alpacaeval"), "arithmetic": load("arithmetic")}
    for prompts, m in ((200, 16),) if quick else ((200, 16), (1000, 32), (1000, 64)):
        tables[f"synthetic {prompts}x{m}"] = synthetic(prompts, m)
    ht.tune(synthetic(20, 8), "sbon", bootstrap=10)  # load the compiled kernels once, as any first call does
    timings: list[tuple[float, str]] = []
    for label, table in tables.items():
        for name in registry.names():
            for what, call in calls(table, name):
                start = time.perf_counter()
                try:
                    call()
                    note = ""
                except (ValueError, ht.TableError) as exc:  # a combination that is refused, with its reason
                    note = f" (refused: {str(exc)[:60]})"
                seconds = time.perf_counter() - start
                timings.append((seconds, f"{label}: {what}{note}"))
                print(f"{seconds:7.2f} s  {label}: {what}{note}", flush=True)
    timings.sort(reverse=True)
    print("\nslowest:")
    for seconds, what in timings[:10]:
        print(f"{seconds:7.2f} s  {what}{'  <- over ' + str(LIMIT_S) + ' s' if seconds > LIMIT_S else ''}")
    return timings


if __name__ == "__main__":
    result = main(quick="--quick" in sys.argv)
    sys.exit(1 if result and result[0][0] > LIMIT_S else 0)
