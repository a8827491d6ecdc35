"""Selection speed: ``select`` over 100,000 prompts x 64 candidates against ``np.argmax``.

Targets (ratios to ``np.argmax(scores, axis=1)`` measured in the same run): BoN within 1.5x,
SBoN within 5x. Run: ``.venv/bin/python benchmarks/bench_select.py``.
"""

from __future__ import annotations

import numpy as np
from _timing import best_time, peak_bytes

import hedgetune as ht


def main(prompts: int = 100_000, candidates: int = 64) -> dict[str, float]:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(prompts, candidates))
    baseline = best_time(lambda: np.argmax(scores, axis=1))
    calls = {
        "BestOfN.select": lambda: ht.BestOfN(candidates).select(scores, rng),
        "BestOfPoisson.select": lambda: ht.BestOfPoisson(40.0).select(scores, rng),
        "SoftBestOfN.select (raw)": lambda: ht.SoftBestOfN(candidates, 2.0).select(scores, rng),
    }
    rows = {name: best_time(call) for name, call in calls.items()}
    print(
        f"select on {prompts:,} prompts x {candidates} candidates; baseline np.argmax {baseline * 1e3:.1f} ms"
    )
    ratios = {}
    for name, seconds in rows.items():
        ratios[name] = seconds / baseline
        peak = peak_bytes(calls[name]) / scores.nbytes
        ratios[f"{name} peak / input"] = peak
        print(f"  {name:<28} {seconds * 1e3:8.1f} ms   {ratios[name]:5.2f}x argmax   peak memory {peak:.2f}x the scores")
    return ratios


if __name__ == "__main__":
    main()
