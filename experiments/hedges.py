"""The related hedges side by side on the same data (issue 15, item 4).

Best-of-n (free, and capped at the set rules' 8 candidates), Soft Best-of-n (n = 8, quantiles), Best-of-Poisson, InferenceTimePessimism (n = 8),
RBoN-KL (n = 8; needs log-probabilities), RBoN-WD (n = 8; needs pairwise similarities),
length-regularised BoN (n = 8) and reward-model ensembles (Best-of-n on the mean, and on
mean - 1 std, of the proxy columns), each tuned by HedgeTune on what a deployment with fresh samples
gets (the default, unbiased estimator), on:

* the bundled AlpacaEval table (11 responses per prompt; MiniLM pairwise similarities; no
  log-probabilities: Tulu-2-DPO-13B's are not in the source and the model cannot run here);
* the bundled SmolLM2 chain-sum table (32 per prompt; mean token log-probabilities; no pairwise
  similarities: the generation run's texts are not bundled);
* two synthetic shapes with every input, both hacked within their 24 samples: "length bias" (the
  proxy rewards length linearly, the truth penalises a length far from typical, quadratically;
  texts of similar length are similar) and "heavy-tailed errors" (Student-t(1.2) proxy errors;
  the covariates carry no signal).

For each: the peak true reward HedgeTune finds on the whole table, its parameter, the KL at the
peak (analytic where it exists, else the pool divergence ``kl_pool``), candidates drawn per prompt,
and the out-of-sample check: tune on half of the prompts, measure the true reward on the other
half, over the same random splits for every mechanism.

Run: ``.venv/bin/python experiments/hedges.py [--out experiments/out] [--quick]`` (about 5 minutes;
``--quick``: under a minute).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

import hedgetune as ht
from hedgetune.data import load

N = 8  # candidates for Soft Best-of-n and the set rules


def synthetic(shape: str, prompts: int = 300, m: int = 24, seed: int = 0) -> ht.RewardTable:
    """A table with three proxy columns, a length, a log-probability and pairwise similarities."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(prompts), m)
    quality = rng.normal(size=ids.size)
    length = np.exp(rng.normal(5.0, 0.5, ids.size))
    z_len = (np.log(length) - 5.0) / 0.5
    if shape == "length bias":  # the proxy loves length; the truth wants a typical length
        proxies = {f"rm{k}": quality + 1.5 * z_len + rng.normal(0, 0.7, ids.size) for k in range(3)}
        true = quality - 0.4 * z_len**2
        logprob = -1.0 + 0.4 * quality + rng.normal(0, 0.4, ids.size)
        embeddings = np.column_stack([z_len, rng.normal(0, 0.8, (ids.size, 4))])  # similar lengths, similar texts
    else:  # heavy-tailed errors: rare huge proxy errors, uninformative covariates
        proxies = {f"rm{k}": quality + rng.standard_t(1.2, ids.size) for k in range(3)}
        true = quality
        logprob = -1.0 + rng.normal(0, 0.4, ids.size)
        embeddings = rng.normal(size=(ids.size, 5))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    lists = []
    for prompt in range(prompts):
        block = embeddings[prompt * m : (prompt + 1) * m]
        lists.extend(block @ block.T)
    return ht.RewardTable.from_long(
        ids,
        {**proxies, "length": length, "mean_logprob": logprob},
        true,
        proxy="rm0",
        pairwise_similarity=lists,
    )


def mechanisms(table: ht.RewardTable) -> list[tuple[str, str, dict[str, Any], ht.RewardTable]]:
    """(label, mechanism, options, table) for every hedge the table has the inputs for."""
    rms = [c for c in table.proxy_names if c.startswith("rm")]
    out: list[tuple[str, str, dict[str, Any], ht.RewardTable]] = [
        ("Best-of-n", "bon", {}, table),
        ("Best-of-n, n <= 8 (the set rules' budget)", "bon", {"max_n": N}, table),
        ("Soft Best-of-n (n=8)", "sbon", {"n": N, "on": "quantile"}, table),
        ("Best-of-Poisson", "bop", {}, table),
        ("InferenceTimePessimism (n=8)", "itp", {"n": N}, table),
    ]
    if "mean_logprob" in table.proxies:
        out.append(("RBoN-KL (n=8)", "rbon_kl", {"n": N}, table))
    if table.pairwise_similarity is not None:
        out.append(("RBoN-WD (n=8)", "rbon_wd", {"n": N}, table))
    if "length" in table.proxies:
        out.append(("length-regularised BoN (n=8)", "rbon_len", {"n": N}, table))
    if len(rms) >= 2:
        for rule, label in (("mean", "ensemble mean"), ("mean-std", "ensemble mean - std")):
            out.append((f"{label} + Best-of-n", "bon", {}, ht.with_ensemble(table, rms, rule, 1.0)))
    return out


def compare(table: ht.RewardTable, repeats: int, bootstrap: int) -> list[dict[str, Any]]:
    rows = []
    reference = _held_out_reference(table, repeats)
    for label, name, options, data in mechanisms(table):
        started = time.perf_counter()
        tuned = ht.tune(data, name, bootstrap=bootstrap, **options)
        oos = ht.evaluate(data, name, repeats=repeats, bootstrap=bootstrap, seed=0, **options)
        kl = tuned.kl if np.isfinite(tuned.kl) else tuned.kl_pool
        rows.append(
            {
                "hedge": label,
                "mechanism": name,
                "proxy": data.proxy,
                "parameter": tuned.parameter,
                "theta": tuned.theta,
                "peak_true_reward": tuned.true_reward,
                "kl_at_peak": kl,
                "kl_is_pool": not np.isfinite(tuned.kl),
                "samples_per_prompt": tuned.expected_samples,
                "regime": tuned.regime,
                "held_out_tuned": float(np.mean(oos.tuned)),
                "held_out_tuned_se": float(np.std(oos.tuned, ddof=1) / np.sqrt(repeats)) if repeats > 1 else 0.0,
                "held_out_gain": float(np.mean(oos.tuned - reference)),
                "held_out_gain_se": float(np.std(oos.tuned - reference, ddof=1) / np.sqrt(repeats)) if repeats > 1 else 0.0,
                "seconds": time.perf_counter() - started,
            }
        )
        print(f"  {label:36s} peak {tuned.true_reward:.4f} at {tuned.parameter}={tuned.theta:.4g}; held-out gain {rows[-1]['held_out_gain']:+.4f}")
    return rows


def _held_out_reference(table: ht.RewardTable, repeats: int, seed: int = 0) -> np.ndarray:
    """The reference policy's true reward on the held-out half of the very splits ``evaluate``
    draws with ``seed`` (one permutation per repeat)."""
    rng = np.random.default_rng(seed)
    true = table.require_true_reward()
    per_prompt = np.add.reduceat(true, table.offsets[:-1]) / table.pool_sizes
    n_cal = round(0.5 * table.n_prompts)
    return np.array([per_prompt[rng.permutation(table.n_prompts)[n_cal:]].mean() for _ in range(repeats)])


def run(out: Path, quick: bool = False) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    repeats, bootstrap = (2, 50) if quick else (10, 200)
    alpaca, smol = load("alpacaeval"), load("arithmetic")
    datasets: dict[str, ht.RewardTable] = {
        "AlpacaEval (rm_300p_flip0)": alpaca.with_proxy("rm_300p_flip0"),
        "AlpacaEval (rm_30p_flip25)": alpaca.with_proxy("rm_30p_flip25"),
        "SmolLM2 chain-sum (rm_60p_flip0)": smol.with_proxy("rm_60p_flip0"),
        "SmolLM2 chain-sum (rm_20p_flip25)": smol.with_proxy("rm_20p_flip25"),
        "synthetic: length bias": synthetic("length bias"),
        "synthetic: heavy-tailed errors": synthetic("heavy-tailed errors"),
    }
    if quick:  # a smoke run: one real table, one small synthetic one
        datasets = {
            "AlpacaEval (rm_300p_flip0)": alpaca.with_proxy("rm_300p_flip0"),
            "synthetic: length bias": synthetic("length bias", 80, m=12),
        }
    results: dict[str, Any] = {"repeats": repeats, "bootstrap": bootstrap, "datasets": {}}
    for title, table in datasets.items():
        print(title)
        results["datasets"][title] = compare(table, repeats, bootstrap)
    (out / "hedges.json").write_text(json.dumps(results, indent=1, allow_nan=False))
    (out / "hedges.md").write_text(markdown(results))
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for title, rows in results["datasets"].items():
        lines += [
            f"**{title}**",
            "",
            "| hedge | tuned parameter | peak true reward | KL at peak | samples | held-out gain over the reference |",
            "|---|---|---|---|---|---|",
        ]
        best = max(r["held_out_gain"] for r in rows)
        for r in rows:
            kl = f"{r['kl_at_peak']:.2f}" + (" (pool)" if r["kl_is_pool"] else "")
            gain = f"{r['held_out_gain']:+.4f} ± {r['held_out_gain_se']:.4f}"
            if r["held_out_gain"] == best:
                gain = f"**{gain}**"
            lines.append(
                f"| {r['hedge']} | {r['parameter']} = {r['theta']:.3g} | {r['peak_true_reward']:.4f} | {kl} | "
                f"{r['samples_per_prompt']:.3g} | {gain} |"
            )
        lines.append("")
    return "\n".join(lines)


def report(results: dict[str, Any]) -> None:
    print(markdown(results))


if __name__ == "__main__":
    from _common import cli

    cli(__doc__, run, report)
