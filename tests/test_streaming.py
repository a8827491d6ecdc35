"""Tables larger than memory: a Parquet folder read whole or streamed a chunk of prompts at a time
gives the in-memory results (to rounding), for every kind of mechanism and every chunk size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import hedgetune as ht
from hedgetune.cli import main


def ragged_table(seed: int = 0) -> ht.RewardTable:
    """Pools of 5 to 12 responses with a log-probability, a length and pairwise similarities."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 13, 60)
    ids = np.repeat(np.arange(sizes.size), sizes)
    quality = rng.normal(size=ids.size)
    proxy = quality + rng.standard_t(2, ids.size)
    embeddings = rng.normal(size=(ids.size, 4)) + quality[:, None]
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    lists = [embeddings[ids == ids[r]] @ embeddings[r] for r in range(ids.size)]
    return ht.RewardTable.from_long(
        ids,
        {"rm": proxy, "mean_logprob": 0.3 * quality + rng.normal(size=ids.size), "length": rng.integers(10, 90, ids.size).astype(float)},
        quality,
        pairwise_similarity=lists,
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ht.RewardTable]:
    table = ragged_table()
    root = tmp_path_factory.mktemp("shards")
    for k, part in enumerate(np.array_split(np.arange(table.n_prompts), 4)):
        ht.write_table(table.subset(part), root / f"part-{k:03d}.parquet")
    return root, table


def test_a_folder_reads_as_one_table(folder: tuple[Path, ht.RewardTable]) -> None:
    root, table = folder
    whole = ht.read_table(root)
    assert whole.n_prompts == table.n_prompts and whole.proxy == "rm"
    np.testing.assert_array_equal(whole.proxies["rm"], table.proxies["rm"])
    np.testing.assert_array_equal(whole.pairwise_similarity, table.pairwise_similarity)
    empty = root.parent / "empty"
    empty.mkdir(exist_ok=True)
    with pytest.raises(FileNotFoundError, match=r"no \*\.parquet"):
        ht.read_table(empty)


CASES = [
    ("bon", {}, "unbiased"),
    ("bop", {}, "unbiased"),
    ("sbon", {"n": 4}, "unbiased"),
    ("sbon", {"n": 4, "on": "quantile"}, "plugin"),
    ("tilted", {}, "plugin"),
    ("itp", {"n": 4}, "unbiased"),
    ("rbon_kl", {"n": 4}, "unbiased"),
    ("rbon_wd", {"n": 4}, "unbiased"),
]


@pytest.mark.parametrize("name, options, estimator", CASES)
@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_streamed_curves_equal_the_in_memory_ones(
    folder: tuple[Path, ht.RewardTable], name: str, options: dict[str, object], estimator: str, chunk: int
) -> None:
    root, table = folder
    streamed = ht.scan_table(root, chunk_prompts=chunk)
    a = ht.curve(table, name, estimator=estimator, bootstrap=40, **options)  # type: ignore[arg-type]
    b = ht.curve(streamed, name, estimator=estimator, bootstrap=40, **options)  # type: ignore[arg-type]
    for field in ("true_reward", "true_reward_low", "true_reward_high", "proxy_reward", "kl_pool"):
        np.testing.assert_allclose(getattr(b, field), getattr(a, field), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name, options", [("bon", {}), ("bop", {}), ("rbon_kl", {"n": 4})])
def test_streamed_tuning_and_evaluation_equal_the_in_memory_ones(
    folder: tuple[Path, ht.RewardTable], name: str, options: dict[str, object]
) -> None:
    root, table = folder
    streamed = ht.scan_table(root, chunk_prompts=9)
    a, b = ht.tune(table, name, bootstrap=60, **options), ht.tune(streamed, name, bootstrap=60, **options)  # type: ignore[arg-type]
    assert b.theta == pytest.approx(a.theta, rel=1e-9) and b.true_reward == pytest.approx(a.true_reward, rel=1e-11)
    assert b.theta_ci == pytest.approx(a.theta_ci, rel=1e-9) and b.conservative_theta == pytest.approx(a.conservative_theta, rel=1e-9)
    ea = ht.evaluate(table, name, repeats=2, bootstrap=30, **options)  # type: ignore[arg-type]
    eb = ht.evaluate(streamed, name, repeats=2, bootstrap=30, **options)  # type: ignore[arg-type]
    np.testing.assert_allclose(eb.tuned, ea.tuned, rtol=1e-11)
    np.testing.assert_allclose(eb.oracle, ea.oracle, rtol=1e-11)


def test_prompts_straddling_read_batches(folder: tuple[Path, ht.RewardTable]) -> None:
    """Batches of 5 rows split almost every prompt (pools of 5-12) across batches."""
    root, table = folder
    streamed = ht.StreamedPools(root, batch_rows=5, chunk_prompts=3)
    assert streamed.n_prompts == table.n_prompts and streamed.size_counts() == ht.curves.as_pools(table).size_counts()
    a, b = ht.curve(table, "bop", bootstrap=20), ht.curve(streamed, "bop", bootstrap=20)
    np.testing.assert_allclose(b.true_reward, a.true_reward, rtol=1e-12)
    np.testing.assert_allclose(b.true_reward_low, a.true_reward_low, rtol=1e-12)


def test_monte_carlo_subsets_do_not_depend_on_the_chunks(folder: tuple[Path, ht.RewardTable], monkeypatch: pytest.MonkeyPatch) -> None:
    """Sampled subsets are seeded per prompt: streaming draws the very same ones."""
    from hedgetune.mechanisms import _set_rules

    monkeypatch.setattr(_set_rules, "EXACT_SUBSETS", 0)
    root, table = folder
    a = ht.curve(table, "itp", [0.5, 3.0], n=4, bootstrap=0)
    b = ht.curve(ht.scan_table(root, chunk_prompts=7), "itp", [0.5, 3.0], n=4, bootstrap=0)
    assert a.monte_carlo_se is not None and b.monte_carlo_se is not None
    np.testing.assert_allclose(b.true_reward, a.true_reward, rtol=1e-12)
    np.testing.assert_allclose(b.monte_carlo_se, a.monte_carlo_se, rtol=1e-9)


def test_a_prompt_split_across_the_files_is_refused(tmp_path: Path) -> None:
    table = ragged_table(1)
    ht.write_table(table.subset([0, 1]), tmp_path / "a.parquet")
    ht.write_table(table.subset([2, 0]), tmp_path / "b.parquet")
    with pytest.raises(ht.TableError, match="appears in two places"):
        ht.scan_table(tmp_path)
    with pytest.raises(ValueError, match="chunk_prompts"):
        ht.scan_table(tmp_path / "a.parquet", chunk_prompts=0)
    with pytest.raises(ValueError, match="ranks by 'rm'"):
        ht.curve(ht.scan_table(tmp_path / "a.parquet"), "bon", proxy="length")


def test_the_command_line_streams_with_the_same_answer(folder: tuple[Path, ht.RewardTable]) -> None:
    root, _ = folder
    runner = CliRunner()
    whole = runner.invoke(main, ["tune", str(root), "-m", "bop", "--bootstrap", "50", "--json"])
    streamed = runner.invoke(main, ["tune", str(root), "-m", "bop", "--bootstrap", "50", "--json", "--stream", "11"])
    assert whole.exit_code == 0 and streamed.exit_code == 0, streamed.output
    a, b = json.loads(whole.stdout), json.loads(streamed.stdout)
    assert b["theta"] == pytest.approx(a["theta"], rel=1e-9) and b["true_reward"] == pytest.approx(a["true_reward"], rel=1e-11)
    refused = runner.invoke(main, ["tune", str(root), "--stream", "5", "--ensemble", "mean"])
    assert refused.exit_code == 2 and "--stream" in refused.output
    assert runner.invoke(main, ["curve", str(root), "--stream", "5", "--bootstrap", "10"]).exit_code == 0
