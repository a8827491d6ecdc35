"""Generation and scoring on a real local Ray cluster (started here, 2 CPUs): the same shards and
table as the single-process run, a killed worker loses and duplicates nothing, a crashed driver
resumes, and vLLM's tensor/pipeline parallelism is wired to its Ray executor."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from hedgetune.pipeline.backends import Prompt, Sample  # noqa: E402
from hedgetune.pipeline.distributed import generate_on_ray, score_on_ray  # noqa: E402
from hedgetune.pipeline.generate import generate, read_generations  # noqa: E402
from hedgetune.pipeline.scorers import score_table  # noqa: E402


@dataclass
class SeededBackend:
    """A stand-in model: each sample is a function of the prompt and its seed only; with
    ``die_once`` set, the worker process that first meets prompt p3 exits (a killed worker)."""

    model: str = "seeded"
    name: str = "seeded"
    die_once: str = ""

    def generate(self, prompt: Prompt, n: int, seed: int) -> list[Sample]:
        return self.generate_many([prompt], n, [seed])[0]

    def generate_many(self, prompts: list[Prompt], n: int, seeds: list[int]) -> list[list[Sample]]:
        if self.die_once and any(p.prompt_id == "p3" for p in prompts) and not Path(self.die_once).exists():
            Path(self.die_once).touch()
            os._exit(1)  # the worker dies mid-task
        out = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            rng = np.random.default_rng(seed)
            out.append(
                [Sample(f"{prompt.text} = {int(rng.integers(0, 20))}", rng.normal(-1, 0.3, 3).tolist()) for _ in range(n)]
            )
        return out


PROMPTS = [Prompt(f"p{i}", f"{i} + {i}", str(2 * i)) for i in range(10)]


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Any:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import tests/
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_run_through_ray_writes_the_local_run(tmp_path: Path) -> None:
    generate(PROMPTS, SeededBackend(), tmp_path / "local", n=3, seed=5, prompts_per_shard=3)
    stats = generate_on_ray(PROMPTS, SeededBackend(), tmp_path / "ray", n=3, seed=5, prompts_per_shard=3, workers=2)
    assert stats.prompts == 10
    local, distributed = read_generations(tmp_path / "local"), read_generations(tmp_path / "ray")
    assert distributed.equals(local)
    assert sorted(p.name for p in (tmp_path / "ray").glob("shard-*")) == sorted(p.name for p in (tmp_path / "local").glob("shard-*"))
    table_local = score_table(local, ["length", "mean_logprob"], "numeric")
    table_ray = score_on_ray(distributed, ["length", "mean_logprob"], "numeric", chunk_prompts=3)
    from hedgetune.io import to_arrow

    assert to_arrow(table_ray).equals(to_arrow(table_local))


def test_a_killed_worker_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "died"
    generate(PROMPTS, SeededBackend(), tmp_path / "local", n=2, seed=1, prompts_per_shard=2)
    generate_on_ray(PROMPTS, SeededBackend(die_once=str(marker)), tmp_path / "ray", n=2, seed=1, prompts_per_shard=2, workers=2)
    assert marker.exists()  # a worker did die, and its chunk was done again by a restarted one
    assert read_generations(tmp_path / "ray").equals(read_generations(tmp_path / "local"))


def test_a_crashed_driver_resumes_and_other_settings_are_refused(tmp_path: Path) -> None:
    class Crash(Exception):
        pass

    def crash_after_two(stats: Any) -> None:
        if stats.prompts >= 4:
            raise Crash

    with pytest.raises(Crash):
        generate_on_ray(PROMPTS, SeededBackend(), tmp_path / "run", n=2, seed=1, prompts_per_shard=2, workers=1, progress=crash_after_two)
    assert 0 < len(list((tmp_path / "run").glob("shard-*"))) < 5
    stats = generate_on_ray(PROMPTS, SeededBackend(), tmp_path / "run", n=2, seed=1, prompts_per_shard=2)
    assert stats.skipped >= 4 and stats.skipped + stats.prompts == 10
    generate(PROMPTS, SeededBackend(), tmp_path / "local", n=2, seed=1, prompts_per_shard=2)
    assert read_generations(tmp_path / "run").equals(read_generations(tmp_path / "local"))
    with pytest.raises(ValueError, match="other settings"):
        generate_on_ray(PROMPTS, SeededBackend(), tmp_path / "run", n=3, seed=1, prompts_per_shard=2)


def test_vllm_parallelism_is_wired_to_its_ray_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU here: the wiring only. The command line's vLLM backend on Ray asks vLLM for its Ray
    executor with the tensor and pipeline sizes given."""
    import types

    from hedgetune.cli.pipeline import _make_backend

    seen: dict[str, Any] = {}

    class FakeLLM:
        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=FakeLLM))
    backend = _make_backend(
        "vllm", model="m", max_new_tokens=8, temperature=1.0, top_p=1.0, device="cuda", base_url=None,
        concurrency=1, api_key_env=None, tensor_parallel_size=4, pipeline_parallel_size=2, on_ray=True,
    )
    backend.load()
    assert seen["tensor_parallel_size"] == 4 and seen["pipeline_parallel_size"] == 2
    assert seen["distributed_executor_backend"] == "ray" and seen["trust_remote_code"] is False


def test_the_command_line_on_ray_with_the_packaged_model(tmp_path: Path) -> None:
    """`hedgetune generate --ray` and `hedgetune score --ray` with SmolLM2 on two Ray actors give
    the shards and the table of the same commands without Ray."""
    pytest.importorskip("torch")
    pytest.importorskip("reasoning_gym")
    from click.testing import CliRunner

    from hedgetune.cli import main
    from hedgetune.io import read_table

    common = ["generate", "--task", "chain_sum", "--task-config", "min_terms=2", "--task-config", "max_terms=2",
              "--size", "2", "--n", "2", "--max-new-tokens", "4", "--seed", "2"]
    import torch

    runner = CliRunner()
    local = runner.invoke(main, [*common, "--out", str(tmp_path / "local")])
    threads = str(torch.get_num_threads())  # the local run's: log-prob sums then round alike
    remote = runner.invoke(
        main, [*common, "--out", str(tmp_path / "ray"), "--ray", "local", "--workers", "2", "--threads-per-worker", threads]
    )
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    assert read_generations(tmp_path / "ray").equals(read_generations(tmp_path / "local"))
    for where, extra in (("local", []), ("ray", ["--ray", "local", "--chunk-prompts", "2"])):
        out = runner.invoke(main, ["score", str(tmp_path / where), "--out", str(tmp_path / f"{where}.parquet"), *extra])
        assert out.exit_code == 0, out.output
    a, b = read_table(tmp_path / "local.parquet"), read_table(tmp_path / "ray.parquet")
    np.testing.assert_array_equal(a.proxies["mean_logprob"], b.proxies["mean_logprob"])
    np.testing.assert_array_equal(a.true_reward, b.true_reward)
