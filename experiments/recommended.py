"""Is ``recommended_theta`` a safe default? Held-out checks on every bundled proxy and on synthetic
tables whose proxy helps, does nothing or hurts.

For each table and proxy, Best-of-Poisson is tuned on a random half of the prompts and valued on
the other half with the deployment (without replacement) estimator, 20 times. Reported: the mean
held-out gain over the reference of the point estimate, the conservative rule, the recommended
default (the reference unless the conservative rule finds a sure gain, then the point estimate) and
the held-out oracle (the held-out half's own best, an optimistic upper bound). The targets: where the proxy helps, the
recommended choice keeps >= 95% of the oracle's gain; where it does not, it is on average no more
than 0.002 below the reference.

Run: ``.venv/bin/python experiments/recommended.py [--out experiments/out] [--quick]`` (about
90 s; ``--quick`` about 10 s).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

import hedgetune as ht
from hedgetune.data import load

SYNTHETIC = {  # name -> (shape, noise)
    "synthetic: independent proxy": ("flat", 1.0),
    "synthetic: anti-aligned proxy": ("decreasing", 0.5),
    "synthetic: tent at 90%": ("tent:0.9", 0.5),
    "synthetic: rising": ("increasing", 0.5),
}


def tables(quick: bool) -> list[tuple[str, ht.RewardTable, str | None]]:
    out: list[tuple[str, ht.RewardTable, str | None]] = []
    for name in ("alpacaeval", "arithmetic"):
        table = load(name)
        for proxy in table.proxy_names[: 2 if quick else None]:
            out.append((f"{name}: {proxy}", table, proxy))
    for label, (shape, noise) in SYNTHETIC.items():
        out.append((label, ht.synthetic.make_table(shape, 200, 16, noise=noise, seed=5), None))
    return out


def run(out: Path, quick: bool = False) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    repeats = 4 if quick else 20
    results: dict[str, Any] = {}
    for label, table, proxy in tables(quick):
        oos = ht.evaluate(table, "bop", proxy=proxy, repeats=repeats, bootstrap=200, seed=0)
        gain = {k: getattr(oos, k) - oos.reference for k in ("tuned", "conservative", "recommended", "oracle")}
        oracle_gain = gain["oracle"].mean()
        oracle_se = gain["oracle"].std(ddof=1) / np.sqrt(repeats) if repeats > 1 else 0.0
        helps = bool(oracle_gain > 3 * oracle_se and oracle_gain > 1e-3)
        row: dict[str, Any] = {k: float(v.mean()) for k, v in gain.items()}
        row["helps"] = helps
        row["recommended_share_of_oracle"] = float(gain["recommended"].mean() / oracle_gain) if helps else None
        row["recommended_below_reference"] = float(-gain["recommended"].mean())
        row["chose_point"] = float(np.mean(oos.recommended_theta == oos.tuned_theta))
        results[label] = row
    (out / "recommended.json").write_text(json.dumps(results, indent=1))
    return results


def report(results: dict[str, Any]) -> None:
    print(f"{'table: proxy':<40} {'helps':>5} {'tuned':>8} {'conserv.':>8} {'recomm.':>8} {'oracle':>8} {'share':>6} {'point':>6}")
    for label, r in results.items():
        share = "" if r["recommended_share_of_oracle"] is None else f"{100 * r['recommended_share_of_oracle']:.0f}%"
        print(
            f"{label:<40} {'yes' if r['helps'] else 'no':>5} {r['tuned']:>+8.4f} {r['conservative']:>+8.4f} "
            f"{r['recommended']:>+8.4f} {r['oracle']:>+8.4f} {share:>6} {100 * r['chose_point']:>5.0f}%"
        )


if __name__ == "__main__":
    from _common import cli

    cli(__doc__, run, report)
