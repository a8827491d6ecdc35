"""The bundled real table and the trained proxy reward heads."""

from __future__ import annotations

import numpy as np
import pytest

import hedgetune as ht
from hedgetune.data import available, load
from hedgetune.pipeline.train_proxy import fit_bradley_terry, preference_pairs


def test_bundled_alpacaeval_table() -> None:
    assert "alpacaeval" in available()
    table = load("alpacaeval")
    assert table.n_prompts == 505 and table.n_responses == 505 * 11
    assert set(table.proxy_names) >= {"length", "minilm_similarity", "rm_30p_flip0", "rm_300p_flip25"}
    for column in [*table.proxy_names, "true_reward"]:
        assert table.provenance.get(column), f"no provenance for {column}"
    assert "reward-bench" in table.provenance["true_reward"]
    assert table.groups is not None and set(table.groups) == {
        "helpful_base",
        "koala",
        "oasst",
        "selfinstruct",
        "vicuna",
    }
    gold = table.require_true_reward()
    assert np.all((gold >= 0) & (gold <= 1))


def test_bundled_arithmetic_table() -> None:
    table = load("arithmetic")
    assert table.n_prompts == 140 and set(table.pool_sizes) == {32}
    assert set(table.require_true_reward()) <= {0.0, 1.0}
    for column in [*table.proxy_names, "true_reward"]:
        assert table.provenance.get(column), f"no provenance for {column}"
    assert "chain_sum" in table.provenance["true_reward"]


def test_bradley_terry_learns_the_gold_order() -> None:
    rng = np.random.default_rng(0)
    prompts, m, d = 80, 6, 5
    features = rng.normal(size=(prompts * m, d))
    gold = features @ np.array([1.0, -0.5, 0.0, 0.0, 0.2]) + 0.1 * rng.normal(size=prompts * m)
    index = np.repeat(np.arange(prompts), m)
    train = np.arange(40)
    accuracies = []
    for flip in (0.0, 0.4):
        head = fit_bradley_terry(features, index, gold, train, flip_rate=flip, seed=1)
        w, losers = preference_pairs(index, gold, np.arange(40, 80))  # held-out prompts
        scores = head.score(features)
        accuracies.append(np.mean(scores[w] > scores[losers]))
    assert accuracies[0] > 0.9
    assert accuracies[1] < accuracies[0]
    with pytest.raises(ValueError, match="flip_rate"):
        fit_bradley_terry(features, index, gold, train, flip_rate=0.5)
    with pytest.raises(ValueError, match="no training pairs"):
        fit_bradley_terry(features, index, np.zeros_like(gold), train)


def test_reward_table_from_bundled_roundtrip(tmp_path: object) -> None:
    table = load("alpacaeval")
    sub = table.subset(np.arange(20))
    assert ht.curve(sub, "bon", [1, 4], bootstrap=0).true_reward[0] == pytest.approx(
        sub.require_true_reward().mean()
    )
