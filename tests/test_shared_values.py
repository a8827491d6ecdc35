"""Pools of subsets of prompts (evaluate's splits): selected without sorting again, and each
prompt's values of a prompt-by-prompt mechanism computed once for every split."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_hedges import hedge_table

import hedgetune as ht
from hedgetune import curves
from hedgetune.curves import as_pools, pool_sums, shared_values
from hedgetune.mechanisms import InferenceTimePessimism, RegularisedBoNWD, SoftBestOfN, _set_rules
from hedgetune.pools import build_pools, select_prompts


def ragged(seed: int = 0) -> ht.RewardTable:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(4, 9, 30)
    ids = np.repeat(np.arange(sizes.size), sizes)
    proxy = np.round(rng.normal(size=ids.size), 1)  # ties within pools
    return ht.RewardTable.from_long(ids, {"rm": proxy, "length": rng.integers(5, 50, ids.size).astype(float)}, rng.normal(size=ids.size))


def test_selected_pools_equal_the_pools_of_the_subset_table() -> None:
    table = ragged()
    whole = build_pools(table, extras=("length",))
    positions = np.array([0, 3, 4, 9, 17, 28])
    expected = build_pools(table.subset(positions), extras=("length",))
    got = select_prompts(whole, positions)
    assert got.n_prompts == expected.n_prompts == positions.size
    pairs = list(zip(got.groups, expected.groups, strict=True))
    assert pairs
    for g, e in pairs:
        assert g.m == e.m
        np.testing.assert_array_equal(g.prompts, e.prompts)
        for name in ("proxy", "true", "has_ties"):
            np.testing.assert_array_equal(getattr(g, name), getattr(e, name))
        np.testing.assert_array_equal(g.extras["length"], e.extras["length"])
        assert g.source is not None
        np.testing.assert_array_equal(g.source, positions[g.prompts])
    with pytest.raises(ValueError, match="ascending"):
        select_prompts(whole, np.array([3, 1]))


@pytest.mark.parametrize(
    "template, sampled",
    [(InferenceTimePessimism(0.0, 4), False), (InferenceTimePessimism(0.0, 4), True), (RegularisedBoNWD(0.0, 3), True),
     (SoftBestOfN(3, 0.0), False)],
)
def test_shared_values_add_up_to_the_whole_tables(template: Any, sampled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two complementary subsets' sums, read from one store, add up to the whole pools' sums
    (the same drawn subsets: seeded by the prompt's place in the whole table), and the second
    subset computes nothing the first one did not leave unknown."""
    if sampled:
        monkeypatch.setattr(_set_rules, "EXACT_SUBSETS", 0)
    table = hedge_table(prompts=14, m=7, seed=2)
    whole = as_pools(table, None, template)
    thetas = np.array([0.0, 0.3, 2.0])
    direct = pool_sums(whole, template, thetas, "unbiased", kl_pool=True)
    kept = shared_values(whole, template, "unbiased")
    a, b = np.arange(0, 14, 2), np.arange(1, 14, 2)
    first = pool_sums(select_prompts(kept, a), template, thetas, "unbiased", kl_pool=True)
    calls = []
    original = curves._computed_values

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1].size)
        return original(*args, **kwargs)

    monkeypatch.setattr(curves, "_computed_values", counted)
    second = pool_sums(select_prompts(kept, b), template, thetas, "unbiased", kl_pool=True)
    assert sum(calls) == b.size  # only b's prompts were computed
    calls.clear()
    weights = np.random.default_rng(0).integers(0, 4, (3, 14)).astype(float)  # prompt by prompt
    again = pool_sums(select_prompts(kept, a), template, thetas, "unbiased", weights=weights[:, a])
    assert calls == []  # read back, not computed
    np.testing.assert_array_equal(again.true, first.true)
    only_a = weights.copy()
    only_a[:, b] = 0.0
    own = pool_sums(whole, template, thetas, "unbiased", weights=only_a)
    assert again.replicates is not None and own.replicates is not None
    np.testing.assert_allclose(again.replicates, own.replicates, rtol=1e-12, atol=1e-12)
    for name in ("true", "quantile", "proxy", "kl_pool"):
        np.testing.assert_allclose(getattr(first, name) + getattr(second, name), getattr(direct, name), rtol=1e-12, atol=1e-12)
    if sampled:
        assert first.mc_variance is not None and second.mc_variance is not None and direct.mc_variance is not None
        np.testing.assert_allclose(first.mc_variance + second.mc_variance, direct.mc_variance, rtol=1e-12)


def test_a_derivative_is_kept_and_exact() -> None:
    """Soft Best-of-n on raw scores has an exact derivative: read from the store it equals the
    subset table's own, and asking for it after the values computes it."""
    template = SoftBestOfN(3, 0.0)
    table = hedge_table(prompts=10, m=6, seed=4)
    whole = shared_values(as_pools(table, None, template), template, "unbiased")
    positions = np.array([1, 2, 5, 7, 8])
    sub = select_prompts(whole, positions)
    theta = np.array([1.7])
    values = pool_sums(sub, template, theta, "unbiased", kl_pool=False)
    slopes = pool_sums(sub, template, theta, "unbiased", kl_pool=False, derivative=True)
    own = pool_sums(build_pools(table.subset(positions)), template, theta, "unbiased", kl_pool=False, derivative=True)
    assert slopes.dtrue is not None and own.dtrue is not None
    np.testing.assert_allclose(values.true, own.true, rtol=1e-12)
    np.testing.assert_allclose(slopes.dtrue, own.dtrue, rtol=1e-12)


def test_evaluate_values_each_prompt_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twenty splits of a table: every (prompt, parameter) is computed at most once, and the
    splits share one searched range (the whole table's)."""
    table = hedge_table(prompts=16, m=6, seed=5)
    seen: list[tuple[int, float]] = []
    original = curves._computed_values

    def counted(template: Any, group: Any, thetas: Any, *args: Any, **kwargs: Any) -> Any:
        seen.extend((int(p), float(t)) for p in group.prompts for t in thetas)
        return original(template, group, thetas, *args, **kwargs)

    monkeypatch.setattr(curves, "_computed_values", counted)
    out = ht.evaluate(table, "itp", n=3, repeats=20, bootstrap=20)
    assert len(seen) == len(set(seen)) > 0
    assert np.all(np.isfinite(out.tuned)) and out.tuned.size == 20
