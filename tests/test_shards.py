"""The generation runner's shards: never overwritten, corrupt ones quarantined and regenerated."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from hedgetune.pipeline.generate import Prompt, Sample, generate, read_generations


class EchoBackend:
    """A deterministic stand-in for a model: samples depend only on the prompt and the seed."""

    name = "echo"
    model = "echo"

    def generate(self, prompt: Prompt, n: int, seed: int) -> list[Sample]:
        rng = random.Random(seed)
        return [Sample(f"{prompt.text}:{rng.random():.6f}", [-rng.random()]) for _ in range(n)]

    def generate_many(self, prompts: Sequence[Prompt], n: int, seeds: Sequence[int]) -> list[list[Sample]]:
        return [self.generate(p, n, s) for p, s in zip(prompts, seeds, strict=True)]


PROMPTS = [Prompt(f"p{i}", f"question {i}") for i in range(20)]


def _run(folder: Path) -> None:
    generate(PROMPTS, EchoBackend(), folder, n=3, seed=1, prompts_per_shard=3)


def test_a_deleted_shard_is_regenerated_without_overwriting_another(tmp_path: Path) -> None:
    _run(tmp_path / "whole")
    expected = read_generations(tmp_path / "whole")
    _run(tmp_path / "run")
    shards = sorted((tmp_path / "run").glob("shard-*.parquet"))
    assert len(shards) == 7
    shards[2].unlink()  # a user deletes one shard in the middle
    _run(tmp_path / "run")
    table = read_generations(tmp_path / "run")
    assert table.num_rows == expected.num_rows == 60
    assert table.equals(expected)


def test_a_truncated_shard_is_quarantined_and_regenerated(tmp_path: Path) -> None:
    _run(tmp_path / "whole")
    expected = read_generations(tmp_path / "whole")
    _run(tmp_path / "run")
    victim = sorted((tmp_path / "run").glob("shard-*.parquet"))[4]
    victim.write_bytes(victim.read_bytes()[:100])  # a crash or a full disk left half a file
    with pytest.raises(ValueError, match=r"unreadable shard .*rerun generate"):
        read_generations(tmp_path / "run")
    with pytest.warns(UserWarning, match="quarantine"):
        _run(tmp_path / "run")
    assert (tmp_path / "run" / "quarantine" / victim.name).exists()
    assert read_generations(tmp_path / "run").equals(expected)


def test_duplicated_prompts_across_shards_are_refused(tmp_path: Path) -> None:
    _run(tmp_path / "run")
    first = sorted((tmp_path / "run").glob("shard-*.parquet"))[0]
    (tmp_path / "run" / "shard-copy.parquet").write_bytes(first.read_bytes())
    with pytest.raises(ValueError, match="more than one shard"):
        read_generations(tmp_path / "run")
