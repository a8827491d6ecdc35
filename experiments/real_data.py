"""Real data: hacking curves and HedgeTune, in and out of sample, on every bundled table and proxy.

For each bundled table (AlpacaEval with a GPT-4-Turbo gold; SmolLM2 arithmetic with a verifier,
when built) and each proxy: the regime and threshold of Best-of-n, Best-of-Poisson and Soft
Best-of-n (n = 4, quantiles), HedgeTune's parameter with its interval, and the out-of-sample check
(tuned on half the prompts, scored on the other half, 20 splits) for Best-of-n and Best-of-Poisson.
The trained proxies answer the paper's question: does less data, or noisier labels, hack earlier?

Run: ``.venv/bin/python experiments/real_data.py [--out experiments/out] [--quick]`` (about 1 min).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

import hedgetune as ht
from hedgetune.data import available, load
from hedgetune.report import figures

MECHS = {"bon": ("bon", {}), "bop": ("bop", {}), "sbon-n4": ("sbon", {"n": 4, "on": "quantile"})}


def analyse_table(name: str, repeats: int, bootstrap: int) -> dict[str, Any]:
    table = load(name)
    out: dict[str, Any] = {"prompts": table.n_prompts, "responses": table.n_responses, "proxies": {}}
    for proxy in table.proxy_names:
        t = table.with_proxy(proxy)
        entry: dict[str, Any] = {"provenance": table.provenance.get(proxy, "")}
        for key, (mech, kwargs) in MECHS.items():
            r = ht.tune(t, mech, bootstrap=bootstrap, **kwargs)
            d = ht.diagnose(t, mech, bootstrap=0, **kwargs)
            entry[key] = {
                "theta": r.theta,
                "theta_ci": list(r.theta_ci),
                "true_reward": r.true_reward,
                "reference": r.reference_true_reward,
                "unhedged": r.unhedged_true_reward,
                "regime": r.regime,
                "conservative_theta": r.conservative_theta,
                "kl_pool": r.kl_pool,
                "share_of_gain_lost": d.share_of_gain_lost,
                "sentence": d.sentence(),
            }
        for key in ("bon", "bop"):
            mech, kwargs = MECHS[key]
            oos = ht.evaluate(t, mech, repeats=repeats, bootstrap=min(bootstrap, 200), **kwargs)
            entry[f"{key}_out_of_sample"] = oos.summary()
        out["proxies"][proxy] = entry
    return out


def run(out: Path, quick: bool = False) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    repeats, bootstrap = (4, 100) if quick else (20, 500)
    results = {name: analyse_table(name, repeats, bootstrap) for name in available()}

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, res in results.items():
        proxies = list(res["proxies"])
        fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(proxies) + 2), 4.5))
        x = np.arange(len(proxies))
        keys = [
            ("reference", "#bbbbbb"),
            ("unhedged", "#ff9896"),
            ("tuned", "#1f77b4"),
            ("conservative", "#aec7e8"),
            ("oracle", "#2ca02c"),
        ]
        for k, (key, color) in enumerate(keys):
            means = [res["proxies"][p]["bop_out_of_sample"][key]["mean"] for p in proxies]
            ses = [res["proxies"][p]["bop_out_of_sample"][key]["se"] for p in proxies]
            ax.bar(x + (k - 2) * 0.16, means, 0.16, yerr=ses, color=color, label=key, capsize=2)
        ax.set_xticks(x, proxies, fontsize=8, rotation=15)
        lo = min(res["proxies"][p]["bop_out_of_sample"]["reference"]["mean"] for p in proxies)
        hi = max(res["proxies"][p]["bop_out_of_sample"]["oracle"]["mean"] for p in proxies)
        ax.set_ylim(lo - 0.6 * (hi - lo), hi + 0.4 * (hi - lo))
        ax.set_ylabel("held-out true reward (mean ± s.e.)")
        ax.set_title(f"{name}: Best-of-Poisson tuned on half the prompts, scored on the other half")
        ax.legend(fontsize=8, ncol=5)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        figures.save(fig, out / f"real_{name}_out_of_sample")
        default = load(name)
        t = default.with_proxy(_hacking_proxy(res) or default.proxy)
        curves = {key: ht.curve(t, mech, bootstrap=200, **kwargs) for key, (mech, kwargs) in MECHS.items()}
        tuned = {key: ht.tune(t, mech, bootstrap=0, **kwargs) for key, (mech, kwargs) in MECHS.items()}
        figures.save(
            figures.reward_vs_kl(curves, tuned, title=f"{name}, proxy '{t.proxy}'"),
            out / f"real_{name}_reward_vs_kl",
        )
    (out / "real_data.json").write_text(json.dumps(results, indent=1, default=float))
    return results


def _hacking_proxy(res: dict[str, Any]) -> str | None:
    for proxy, entry in res["proxies"].items():
        if entry["bon"]["regime"] == "rise-then-fall":
            return str(proxy)
    return None


def report(results: dict[str, Any]) -> None:
    for name, res in results.items():
        print(f"== {name}")
        for proxy, entry in res["proxies"].items():
            oos = entry["bop_out_of_sample"]
            print(
                f"  {proxy:<18} BoN {entry['bon']['regime']:<15} n* = {entry['bon']['theta']:<5g} "
                f"BoP mu* = {entry['bop']['theta']:<8.3g} held out: tuned {oos['tuned']['mean']:.4f} "
                f"un-hedged {oos['unhedged']['mean']:.4f} reference {oos['reference']['mean']:.4f}"
            )


if __name__ == "__main__":
    from _common import cli

    cli(__doc__, run, report)
