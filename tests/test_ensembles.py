"""Reward-model ensembles as proxies: the combination rules against direct NumPy, the ensemble
used everywhere a proxy is, and the penalty k tuned by HedgeTune."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import hedgetune as ht
from hedgetune.cli import main
from hedgetune.ensembles import ensemble_scores


def _table(seed: int = 0, prompts: int = 150, m: int = 12) -> ht.RewardTable:
    """Three noisy reward models of one gold reward, on different scales."""
    rng = np.random.default_rng(seed)
    gold = rng.random((prompts, m))
    proxies = {
        "rm_a": gold + rng.normal(0, 0.3, gold.shape),
        "rm_b": 10.0 * (gold + rng.normal(0, 0.3, gold.shape)) - 3.0,
        "rm_c": 0.01 * (gold + rng.normal(0, 0.6, gold.shape)),
    }
    return ht.RewardTable.from_arrays(proxies, gold)


def test_rules_equal_direct_numpy() -> None:
    table = _table()
    members = {name: table.proxy_values(name) for name in table.proxy_names}
    z = np.stack([(v - v.mean()) / v.std() for v in members.values()])
    np.testing.assert_allclose(ensemble_scores(members, "mean"), z.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ensemble_scores(members, "min"), z.min(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        ensemble_scores(members, "mean-std", k=1.7), z.mean(axis=0) - 1.7 * z.std(axis=0), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(ensemble_scores(members, "mean-std", k=0.0), ensemble_scores(members, "mean"))


def test_an_ensemble_is_a_proxy_like_any_other() -> None:
    table = _table()
    combined = ht.with_ensemble(table, ["rm_a", "rm_b"], "min")
    assert combined.proxy == "ensemble_min(rm_a,rm_b)"
    recipe = json.loads(combined.provenance[combined.proxy])
    assert recipe["ensemble"] == ["rm_a", "rm_b"] and recipe["rule"] == "min" and len(recipe["scales"]) == 2
    # Its curve equals the curve of a table built independently from the same combined column.
    values = np.minimum(
        *(
            (table.proxy_values(c) - table.proxy_values(c).mean()) / table.proxy_values(c).std()
            for c in ("rm_a", "rm_b")
        )
    )
    ids = np.repeat(np.arange(table.n_prompts), table.pool_sizes)
    direct = ht.RewardTable.from_long(ids, {"x": values}, table.true_reward)
    for mechanism in ("bon", "bop"):
        a = ht.curve(combined, mechanism, bootstrap=0).true_reward
        b = ht.curve(direct, mechanism, bootstrap=0).true_reward
        np.testing.assert_allclose(a, b, rtol=1e-12)
    ht.tune(combined, "bop", bootstrap=50)  # and tuning, selection, reports take it as usual


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"columns": ["rm_a"]}, "at least two"),
        ({"rule": "median"}, "rule must be one of"),
        ({"rule": "mean-std", "k": float("nan")}, "k must be a finite number"),
        ({"rule": "mean-std", "k": -1.0}, "k must be a finite number >= 0"),
        ({"columns": ["rm_a", "nope"]}, "unknown proxy 'nope'"),
    ],
)
def test_bad_ensembles_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ht.with_ensemble(_table(), **kwargs)  # type: ignore[arg-type]


def test_a_constant_member_is_refused() -> None:
    table = _table()
    flat = ht.RewardTable.from_arrays(
        {"rm_a": table.proxy_values("rm_a").reshape(150, 12), "flat": np.ones((150, 12))},
        table.true_reward.reshape(150, 12),
    )
    with pytest.raises(ht.TableError, match="constant"):
        ht.with_ensemble(flat)


def test_the_penalty_is_tuned_by_hedgetune() -> None:
    table = _table(seed=1)
    tuning = ht.tune_ensemble(table, "bon", ks=[0.0, 0.5, 1.0, 2.0], bootstrap=50)
    for k, value in zip(tuning.ks, tuning.true_rewards, strict=True):
        alone = ht.tune(ht.with_ensemble(table, None, "mean-std", k), "bon", bootstrap=50)
        assert value == pytest.approx(alone.true_reward, abs=1e-12)
    assert tuning.best.true_reward == pytest.approx(tuning.true_rewards.max())
    assert tuning.best_k == tuning.ks[int(np.argmax(tuning.true_rewards))]
    json.dumps(tuning.to_dict(), allow_nan=False)


def test_ensembles_on_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    ht.write_table(_table(), path)
    runner = CliRunner()
    result = runner.invoke(main, ["curve", str(path), "-m", "bon", "--ensemble", "mean", "--bootstrap", "20", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["proxy"] == "ensemble_mean(rm_a,rm_b,rm_c)"
    result = runner.invoke(
        main, ["tune", str(path), "-m", "bon", "--ensemble", "mean-std", "--ensemble-k", "auto", "--bootstrap", "20"]
    )
    assert result.exit_code == 0, result.output
    assert "<- best" in result.stdout
    for args, fragment in (
        (["curve", str(path), "--ensemble", "mean", "--ensemble-k", "auto"], "tune only"),
        (["tune", str(path), "--ensemble", "mean-std", "--ensemble-k", "big"], "must be a number"),
        (["tune", str(path), "--ensemble", "mean", "--proxy", "rm_a"], "give one"),
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 2 and fragment in result.stderr, (args, result.stderr)
