"""The related hedges (ITP, RBoN-KL, RBoN-WD, length-regularised BoN) against independent
computations: every n-subset of every pool enumerated, each rule's choice computed from its paper's
definition (InferenceTimePessimism's rejection sampler over every visiting order), and the Monte
Carlo path checked against the exact one within its reported standard error."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import optimize

import hedgetune as ht
from hedgetune.cli import main
from hedgetune.mechanisms import (
    InferenceTimePessimism,
    LengthRegularisedBoN,
    RegularisedBoNKL,
    RegularisedBoNWD,
    _set_rules,
)

HEDGES = ("itp", "rbon_kl", "rbon_wd", "rbon_len")


def hedge_table(prompts: int = 12, m: int = 6, seed: int = 0, ties: bool = False) -> ht.RewardTable:
    """Random pools with a log-probability, a length and pairwise cosine similarities."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(prompts), m)
    quality = rng.normal(size=ids.size)
    length = rng.integers(20, 400, ids.size).astype(float)
    proxy = quality + 0.004 * length + rng.normal(0, 0.5, ids.size)  # a proxy that likes length
    if ties:
        proxy = np.round(proxy)
    logprob = -1.0 + 0.3 * quality + rng.normal(0, 0.3, ids.size)
    embeddings = rng.normal(size=(ids.size, 5)) + quality[:, None]
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    lists = []
    for row in range(ids.size):
        same = np.flatnonzero(ids == ids[row])
        lists.append(embeddings[same] @ embeddings[row])
    return ht.RewardTable.from_long(
        ids,
        {"proxy": proxy, "mean_logprob": logprob, "length": length},
        quality - 0.002 * length,
        pairwise_similarity=lists,
    )


# ----------------------------------------------------------------------- independent definitions
def itp_choice(x: np.ndarray, gamma: float) -> np.ndarray:
    """Huang et al.'s sampler from scratch: lambda by root finding, then every visiting order."""
    k = x.size
    if gamma == 0:
        return np.full(k, 1.0 / k)
    lam = optimize.brentq(lambda v: np.mean(np.maximum(gamma * (x - v), 0.0)) - 1.0, x.min() - 10 * k / gamma, x.max())
    weight = np.maximum(gamma * (x - lam), 0.0)
    accept = weight / weight.max()
    out = np.zeros(k)
    orders = list(itertools.permutations(range(k)))
    for order in orders:
        survive = 1.0
        for i in order:
            out[i] += survive * accept[i]
            survive *= 1.0 - accept[i]
    return out / len(orders)


def argmax_choice(score: np.ndarray) -> np.ndarray:
    top = np.isclose(score, score.max(), rtol=0, atol=1e-12)
    return top / top.sum()


def brute_force_value(table: ht.RewardTable, name: str, theta: float, n: int) -> float:
    """Mean over prompts of the average over every n-subset of the chosen response's true reward."""
    proxy, logprob, length = (table.proxies[c] for c in ("proxy", "mean_logprob", "length"))
    true = table.true_reward
    assert true is not None
    values = []
    for p in range(table.n_prompts):
        rows = np.arange(table.offsets[p], table.offsets[p + 1])
        sim = table.similarity_block(p)
        total, count = 0.0, 0
        for subset in itertools.combinations(range(rows.size), n):
            s = np.array(subset)
            r = proxy[rows[s]]
            if name == "itp":
                probs = itp_choice(r, theta)
            elif name == "rbon_kl":
                probs = argmax_choice(r + theta * logprob[rows[s]])
            elif name == "rbon_len":
                probs = argmax_choice(r - theta * length[rows[s]])
            else:  # RBoN-WD: r_i - beta * mean_j (1 - sim_ij) over the drawn set
                probs = argmax_choice(r - theta * np.mean(1.0 - sim[np.ix_(s, s)], axis=1))
            total += float(probs @ true[rows[s]])
            count += 1
        values.append(total / count)
    return float(np.mean(values))


# ----------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("name", HEDGES)
@pytest.mark.parametrize("ties", [False, True])
def test_pool_curves_equal_enumeration_of_every_subset(name: str, ties: bool) -> None:
    table = hedge_table(prompts=5, m=6, seed=1, ties=ties)
    n = 4
    template = ht.mechanisms.make(name, n=n)
    scale = {"itp": 1.0, "rbon_kl": 1.0, "rbon_wd": 1.0, "rbon_len": 0.004}[name]
    thetas = np.array([0.0, 0.3, 1.0, 3.0, 30.0]) * scale
    c = ht.curve(table, template, thetas, bootstrap=0)
    assert c.monte_carlo_se is None  # C(6, 4) = 15 subsets: enumerated
    for theta, value in zip(thetas, c.true_reward, strict=True):
        assert value == pytest.approx(brute_force_value(table, name, float(theta), n), abs=1e-12)


def test_itp_spans_the_reference_and_best_of_n() -> None:
    table = hedge_table(prompts=8, m=7, seed=2)
    c = ht.curve(table, InferenceTimePessimism(0.0, 5), [0.0, 1e6], bootstrap=0)
    bon = ht.curve(table.with_proxy("proxy"), "bon", [5], bootstrap=0)
    assert c.true_reward[0] == pytest.approx(c.reference_true_reward, abs=1e-12)  # gamma = 0
    assert c.true_reward[1] == pytest.approx(bon.true_reward[0], abs=1e-12)  # gamma -> infinity


def test_itp_choice_probabilities_match_the_rejection_sampler() -> None:
    rng = np.random.default_rng(5)
    for k in (1, 2, 3, 5):
        x = rng.normal(size=k)
        for gamma in (0.0, 0.1, 1.0, 10.0, 1e4):
            got = InferenceTimePessimism(gamma, k).set_probabilities(x[None, :], {})[0]
            np.testing.assert_allclose(got, itp_choice(x, gamma), atol=1e-12)
            assert got.sum() == pytest.approx(1.0, abs=1e-12)


def test_monte_carlo_subsets_agree_with_enumeration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    table = hedge_table(prompts=20, m=8, seed=3)
    exact = ht.curve(table, InferenceTimePessimism(0.0, 4), [0.5, 2.0], bootstrap=0)
    monkeypatch.setattr(_set_rules, "EXACT_SUBSETS", 0)
    sampled = ht.curve(table, InferenceTimePessimism(0.0, 4), [0.5, 2.0], bootstrap=0)
    assert sampled.monte_carlo_se is not None and np.all(sampled.monte_carlo_se > 0)
    assert np.all(np.abs(sampled.true_reward - exact.true_reward) < 4.5 * sampled.monte_carlo_se)
    assert "monte_carlo_se" in sampled.to_pandas().columns
    path = Path(str(tmp_path)) / "t.parquet"
    ht.write_table(table, path)
    out = CliRunner().invoke(main, ["curve", str(path), "-m", "itp", "--n", "4", "--bootstrap", "10"])
    assert out.exit_code == 0 and "MC s.e." in out.output


def test_per_candidate_rules_are_exact_on_large_pools() -> None:
    """RBoN-KL is the Best-of-n U-statistic on its own score: no subsets, whatever the pool size."""
    table = hedge_table(prompts=4, m=40, seed=4)
    c = ht.curve(table, RegularisedBoNKL(0.0, 8), [0.0, 2.0], bootstrap=0)
    assert c.monte_carlo_se is None
    shifted = table.with_new_proxy("kl_score", table.proxies["proxy"] + 2.0 * table.proxies["mean_logprob"])
    assert c.true_reward[1] == pytest.approx(ht.curve(shifted, "bon", [8], bootstrap=0).true_reward[0], abs=1e-12)
    assert c.true_reward[0] == pytest.approx(ht.curve(table.with_proxy("proxy"), "bon", [8], bootstrap=0).true_reward[0], abs=1e-12)


# ------------------------------------------------------------------------------------ selection
@pytest.mark.parametrize(
    "mechanism",
    [InferenceTimePessimism(1.5, 4), RegularisedBoNKL(0.8, 4), LengthRegularisedBoN(0.01, 4), RegularisedBoNWD(2.0, 4)],
)
def test_selection_frequencies_match_the_choice_probabilities(mechanism: _set_rules.SetRule) -> None:
    rng = np.random.default_rng(6)
    scores = rng.normal(size=4)
    extras = {"mean_logprob": rng.normal(size=4), "length": rng.integers(10, 200, 4).astype(float)}
    emb = rng.normal(size=(4, 3))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    extras["pairwise_similarity"] = emb @ emb.T
    wanted = {name: extras[name] for name in mechanism.extras()}
    expected = mechanism.set_probabilities(scores[None, :], {k: v[None] for k, v in wanted.items()})[0]
    draws = 40_000
    chosen = mechanism.select(np.tile(scores, (draws, 1)), rng=7, extras={k: np.broadcast_to(v, (draws, *v.shape)) for k, v in wanted.items()})
    freq = np.bincount(chosen, minlength=4) / draws
    se = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(freq - expected) <= 5 * se + 1e-12)


def test_selection_says_what_is_missing() -> None:
    with pytest.raises(ValueError, match="mean_logprob"):
        RegularisedBoNKL(1.0, 3).select(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        RegularisedBoNWD(1.0, 3).select(np.zeros((2, 3)), extras={"pairwise_similarity": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="finite"):
        InferenceTimePessimism(1.0, 3).select(np.array([[0.0, np.nan, 1.0]]))
    assert InferenceTimePessimism(1.0, 3).select(np.array([0.0, 2.0, 1.0]), rng=0).shape == (1,)


# ------------------------------------------------------------------------- the whole library
@pytest.mark.parametrize("name", HEDGES)
def test_every_hedge_runs_through_the_library(name: str, tmp_path: Path) -> None:
    table = hedge_table(prompts=30, m=6, seed=8)
    c = ht.curve(table, name, n=4, bootstrap=30)
    assert np.all(np.isfinite(c.true_reward)) and c.template.name == name and c.theta[0] == 0.0
    json.dumps(c.to_dict(), allow_nan=False)
    result = ht.tune(table, name, n=4, bootstrap=50)
    assert np.isfinite(result.true_reward) and result.theta_ci[0] <= result.theta_ci[1]
    dense = ht.curve(table, name, np.linspace(0, result.search_range[1], 400), n=4, bootstrap=0)
    assert result.true_reward >= dense.true_reward.max() - 0.02 * np.ptp(dense.true_reward)  # the grid maximum
    json.dumps(result.to_dict(), allow_nan=False)
    diagnosis = ht.diagnose(table, name, n=4, bootstrap=30)
    assert result.template.display_name in diagnosis.sentence()
    oos = ht.evaluate(table, name, n=4, repeats=2, bootstrap=20)
    json.dumps(oos.to_dict(), allow_nan=False)

    path = tmp_path / "t.parquet"
    ht.write_table(table, path)
    back = ht.read_table(path)
    assert back.pairwise_similarity is not None
    np.testing.assert_array_equal(back.pairwise_similarity, table.pairwise_similarity)
    runner = CliRunner()
    for args in (
        ["curve", str(path), "-m", name, "--n", "4", "--bootstrap", "20", "--json"],
        ["tune", str(path), "-m", name, "--n", "4", "--bootstrap", "20", "--json"],
        ["evaluate", str(path), "-m", name, "--n", "4", "--bootstrap", "20", "--repeats", "2", "--json"],
    ):
        out = runner.invoke(main, args)
        assert out.exit_code == 0, (args, out.output)
        json.loads(out.stdout)
    mechanism = result.mechanism_at()
    wanted = {"mean_logprob": np.zeros((3, 4)), "length": np.ones((3, 4)), "pairwise_similarity": np.ones((3, 4, 4))}
    chosen = mechanism.select(np.random.default_rng(0).random((3, 4)), rng=0, extras={k: wanted[k] for k in mechanism.extras()})
    assert chosen.shape == (3,) and np.all((chosen >= 0) & (chosen < 4))

    from hedgetune.report.analysis import analyse, write_report

    analysis = analyse(table, "contract", mechanisms={name: (name, {"n": 4})}, repeats=2, bootstrap=20)
    page = write_report([analysis], tmp_path / "report")
    assert page.is_file() and result.template.display_name in page.read_text()


def test_missing_columns_are_named() -> None:
    table = ht.synthetic.make_table("toy", 10, 6, seed=0)
    for name, what in (("rbon_kl", "mean_logprob"), ("rbon_len", "length"), ("rbon_wd", "pairwise_similarity")):
        with pytest.raises(ht.TableError, match=what):
            ht.curve(table, name, n=3)
    with pytest.raises(ValueError, match="smallest has 6"):
        ht.curve(hedge_table(m=6), "itp", n=7)
    with pytest.raises(ValueError, match="unbiased"):
        ht.curve(hedge_table(), "itp", n=3, estimator="plugin")


def test_pairwise_similarity_is_checked_and_subset() -> None:
    table = hedge_table(prompts=4, m=3)
    sub = table.subset([2, 0])
    np.testing.assert_array_equal(sub.similarity_block(0), table.similarity_block(2))
    np.testing.assert_array_equal(sub.similarity_block(1), table.similarity_block(0))
    ids = np.repeat([0, 1], 2)
    with pytest.raises(ht.TableError, match="pool size"):
        ht.RewardTable.from_long(ids, np.arange(4.0), pairwise_similarity=[[1, 0], [0, 1], [1], [0, 1]])
    with pytest.raises(ht.TableError, match="NaN"):
        ht.RewardTable.from_long(ids, np.arange(4.0), pairwise_similarity=[[1, 0], [0, 1], [1, np.nan], [0, 1]])
    with pytest.raises(ht.TableError, match="cannot"):
        ht.RewardTable.from_long(
            np.repeat([0, 1], 3), [0, 1, np.nan, 3, 4, 5], invalid="drop", pairwise_similarity=[[1, 0, 0]] * 6
        )
    # Rows given out of prompt order keep each list aligned with its prompt's responses.
    shuffled = ht.RewardTable.from_long([1, 0, 1, 0], [5.0, 1.0, 6.0, 2.0], pairwise_similarity=[[1, 0.5], [1, 0.2], [0.5, 1], [0.2, 1]])
    np.testing.assert_array_equal(shuffled.similarity_block(0), [[1, 0.5], [0.5, 1]])
    assert math.isclose(shuffled.similarity_block(1)[0, 1], 0.2)


def test_the_command_line_names_the_covariate_and_the_base(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    ht.write_table(hedge_table(prompts=20, m=6, seed=9), path)
    runner = CliRunner()
    out = runner.invoke(main, ["tune", str(path), "-m", "rbon_len", "--n", "4", "--column", "mean_logprob", "--bootstrap", "20"])
    assert out.exit_code == 0, out.output
    assert "column=mean_logprob" in out.output and "Best-of-n (beta = 0)" in out.output and "KL on the pool" in out.output
    out = runner.invoke(main, ["tune", str(path), "-m", "rbon_kl", "--column", "nope"])
    assert out.exit_code == 2 and "'nope'" in out.output and "Traceback" not in out.output
    out = runner.invoke(main, ["tune", str(path), "-m", "bop", "--column", "length"])
    assert out.exit_code == 2 and "--column applies to -m rbon_kl, rbon_len only" in out.output
    out = runner.invoke(main, ["select", "-m", "rbon_kl", "--n", "2", "--theta", "1"], input="0.1 0.5\n")
    assert out.exit_code == 2 and "in Python" in out.output


@pytest.mark.parametrize("n, m, gamma", [(4, 9, 0.0), (4, 9, 3.0), (8, 16, 0.7), (8, 16, 1e4), (3, 5, 50.0)])
def test_compiled_pessimism_equals_the_numpy_route(n: int, m: int, gamma: float) -> None:
    """The compiled pass over drawn sets gives the NumPy route's positions and Monte Carlo variances."""
    from hedgetune.mechanisms._compiled import SMALL_CALL
    from hedgetune.mechanisms._set_rules import SetRule
    from hedgetune.mechanisms.pessimism import InferenceTimePessimism

    rng = np.random.default_rng(n * m)
    rows, sets = 30, 1000
    assert rows * sets * n >= SMALL_CALL  # large enough for the compiled route
    index = np.stack([np.stack([rng.permutation(m)[:n] for _ in range(sets)]) for _ in range(rows)])
    proxy = rng.normal(size=(rows, m))
    true = rng.random((rows, m))
    take = np.arange(rows)[:, None, None]
    scores, drawn = proxy[take, index], true[take, index]
    itp = InferenceTimePessimism(0.0, n)
    for exact in (True, False):
        compiled = list(itp._positions(scores, {}, index, drawn, [gamma, 2 * gamma], m, exact))
        numpy_route = list(SetRule._positions(itp, scores, {}, index, drawn, [gamma, 2 * gamma], m, exact))
        for (pc, vc), (pn, vn) in zip(compiled, numpy_route, strict=True):
            np.testing.assert_allclose(pc, pn, rtol=1e-10, atol=1e-13)
            np.testing.assert_allclose(pc.sum(axis=1), 1.0, rtol=1e-10)
            if exact:
                assert vc is None and vn is None
            else:
                np.testing.assert_allclose(vc, vn, rtol=1e-7, atol=1e-15)
