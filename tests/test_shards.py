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


_KILLABLE_RUN = """
import random, sys, time
from hedgetune.pipeline.generate import Prompt, Sample, generate

class SlowEcho:
    name = "echo"
    model = "echo"
    def generate_many(self, prompts, n, seeds):
        time.sleep(0.01)
        out = []
        for p, s in zip(prompts, seeds):
            rng = random.Random(s)
            out.append([Sample(f"{p.text}:{rng.random():.6f}", [-rng.random()]) for _ in range(n)])
        return out

prompts = [Prompt(f"p{i}", f"question {i}") for i in range(20)]
generate(prompts, SlowEcho(), sys.argv[1], n=3, seed=1, prompts_per_shard=3)
"""


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3, 0.8, 1.5])
def test_a_run_killed_at_any_point_resumes_to_the_uninterrupted_table(tmp_path: Path, delay: float) -> None:
    """SIGKILL at a chosen moment (from before the first shard to after the last), then resume."""
    import signal
    import subprocess
    import sys
    import time

    _run(tmp_path / "whole")
    expected = read_generations(tmp_path / "whole")
    script = tmp_path / "run.py"
    script.write_text(_KILLABLE_RUN)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "run")])
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _run(tmp_path / "run")
    assert read_generations(tmp_path / "run").equals(expected)
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_an_unfinished_run_is_refused_unless_partial_is_asked_for(tmp_path: Path) -> None:
    generate(PROMPTS[:7], EchoBackend(), tmp_path / "x", n=3, seed=1, prompts_per_shard=3)
    whole = read_generations(tmp_path / "x")
    # The same run, stopped after two shards: simulate by deleting the last shard.
    generate(PROMPTS, EchoBackend(), tmp_path / "run", n=3, seed=1, prompts_per_shard=3)
    sorted((tmp_path / "run").glob("shard-*.parquet"))[-1].unlink()
    with pytest.raises(ValueError, match=r"18 of 20 prompts.*--partial"):
        read_generations(tmp_path / "run")
    assert read_generations(tmp_path / "run", partial=True).num_rows == 54
    assert whole.num_rows == 21


def test_a_changed_model_folder_cannot_resume_a_run(tmp_path: Path) -> None:
    from hedgetune.pipeline.generate import folder_digest

    weights = tmp_path / "model"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"weights v1")

    class FolderEcho(EchoBackend):
        def model_digest(self) -> str:
            return folder_digest(weights)

    generate(PROMPTS[:6], FolderEcho(), tmp_path / "run", n=2, seed=1, prompts_per_shard=3)
    generate(PROMPTS, FolderEcho(), tmp_path / "other", n=2, seed=1, prompts_per_shard=3)
    (weights / "model.safetensors").write_bytes(b"weights v2")  # same name, other weights
    with pytest.raises(ValueError, match="model_digest"):
        generate(PROMPTS[:6], FolderEcho(), tmp_path / "run", n=2, seed=1, prompts_per_shard=3)


def test_the_manifest_holds_no_secret_and_no_transport_settings(tmp_path: Path) -> None:
    import json

    from hedgetune.pipeline.backends import OpenAIBackend
    from hedgetune.pipeline.generate import _settings_of

    backend = OpenAIBackend("http://127.0.0.1:9", "m", api_key="sk-secret-123", timeout=5.0)
    settings = _settings_of(backend)
    assert "sk-secret-123" not in json.dumps(settings)
    assert not {"api_key", "timeout", "retries"} & set(settings)


def test_a_shard_changed_after_it_was_written_is_caught_by_its_checksum(tmp_path: Path) -> None:
    """Silent corruption (issue 28, item 5): a shard still readable as Parquet but not the bytes
    that were written -- here a response rewritten -- is refused by score's reader and, on
    resume, quarantined and generated again."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _run(tmp_path / "whole")
    expected = read_generations(tmp_path / "whole")
    _run(tmp_path / "run")
    victim = sorted((tmp_path / "run").glob("shard-*.parquet"))[3]
    table = pq.read_table(victim)
    responses = table.column("response").to_pylist()
    responses[1] = responses[1][::-1]
    pq.write_table(table.set_column(table.column_names.index("response"), "response", pa.array(responses)), victim)
    with pytest.raises(ValueError, match="checksum"):
        read_generations(tmp_path / "run")
    with pytest.warns(UserWarning, match="checksum"):
        _run(tmp_path / "run")
    assert (tmp_path / "run" / "quarantine" / victim.name).exists()
    assert read_generations(tmp_path / "run").equals(expected)


def test_a_shard_without_its_checksum_is_checked_and_recorded_on_resume(tmp_path: Path) -> None:
    """A crash between a shard's rename and the checksum's record leaves an unlisted shard:
    score refuses it until generate has read it whole and recorded it."""
    import json

    _run(tmp_path / "run")
    sums_path = tmp_path / "run" / "checksums.json"
    sums = json.loads(sums_path.read_text())
    assert len(sums) == 7
    name = sorted(sums)[0]
    del sums[name]
    sums_path.write_text(json.dumps(sums))
    with pytest.raises(ValueError, match="no checksum"):
        read_generations(tmp_path / "run")
    _run(tmp_path / "run")
    assert name in json.loads(sums_path.read_text())
    assert read_generations(tmp_path / "run").num_rows == 60
