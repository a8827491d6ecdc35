"""Generation and scoring on a Ray cluster (extra ``distributed``: ``pip install 'hedgetune[distributed]'``).

Why Ray actors, not Ray Data: the driver keeps the single-process runner's guarantees because it
keeps its code. It prepares the run exactly as :func:`~hedgetune.pipeline.generate.generate` does
(settings checked against ``run.json``, finished prompts skipped, the same shard-sized chunks and
per-prompt seeds) and writes each returned chunk as one atomic shard with the same name. Only the
model calls move: a pool of actors, each holding its backend (the model loaded once per actor),
takes chunks as it frees up. So a run through Ray writes the shards a local run writes, resumes
the same way after a crash of the driver, and refuses to resume with other settings. An actor
that dies (a killed worker, a node lost) is restarted and its chunk retried by Ray; a chunk is
written only when it comes back whole, so nothing is lost or written twice.

Scoring splits the generations into chunks of whole prompts, scores each on an actor holding the
scorers' models, and assembles the table on the driver in the original row order, so the table
equals the local one.

``address``: ``"local"`` starts Ray on this machine; ``"auto"`` joins a running cluster (``ray
start --head`` on this machine, or ``RAY_ADDRESS``); anything else is passed to ``ray.init``
(``ray://head:10001``).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import exclusive
from .backends import Backend, Prompt
from .generate import GenerationStats, prepare_run, write_chunk
from .scorers import Scores, score_columns, table_from_scores

#: Chunks in flight per actor (one computing, one queued), so an actor never waits for the driver.
IN_FLIGHT_PER_ACTOR = 2


def connect(address: str = "auto") -> Any:
    """The ``ray`` module, connected to ``address`` (``"local"``, ``"auto"`` or an address)."""
    import ray  # missing: the command line says to install the 'distributed' extra
    if not isinstance(address, str) or not address:
        raise ValueError(f"the Ray address must be 'local', 'auto' or an address, got {address!r}")
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address != "local":
            options["address"] = address
        ray.init(**options)
    return ray


def _actor_class(ray: Any) -> Any:
    """A Ray actor holding one backend; restarted, with its task retried, if its process dies."""

    @ray.remote(max_restarts=3, max_task_retries=3)
    class GenerationWorker:
        def __init__(self, backend: Backend) -> None:
            self.backend = backend

        def generate(self, prompts: list[Prompt], n: int, seeds: list[int]) -> list[list[Any]]:
            return [list(samples) for samples in self.backend.generate_many(prompts, n, seeds)]

    return GenerationWorker


def generate_on_ray(
    prompts: Sequence[Prompt],
    backend: Backend,
    out_dir: str | os.PathLike[str],
    *,
    n: int,
    seed: int = 0,
    prompts_per_shard: int = 8,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    address: str = "auto",
    progress: Callable[[GenerationStats], None] | None = None,
) -> GenerationStats:
    """:func:`~hedgetune.pipeline.generate.generate` with the model calls on Ray actors
    (``workers`` of them; default: one per CPU of the cluster, at most one per chunk).

    Each actor computes with Ray's default of one thread per CPU it holds, unless
    ``threads_per_worker`` says otherwise. Sampled log-probabilities are sums whose rounding depends
    on the thread count: give the local run's count to reproduce its table bit for bit.
    """
    with exclusive(Path(out_dir) / "run.json"):  # one run writes a folder at a time
        writer, chunks, stats = prepare_run(prompts, backend, out_dir, n=n, seed=seed, prompts_per_shard=prompts_per_shard)
        if not chunks:
            return stats
        ray = connect(address)
        count = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        if count < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        worker_class = _actor_class(ray)
        if threads_per_worker is not None:
            if threads_per_worker < 1:
                raise ValueError(f"threads_per_worker must be >= 1, got {threads_per_worker}")
            threads = str(threads_per_worker)
            env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
            worker_class = worker_class.options(runtime_env={"env_vars": env})
        actors = [worker_class.remote(backend) for _ in range(min(count, len(chunks)))]
        start = time.perf_counter()
        queue = list(range(len(chunks)))
        running: dict[Any, tuple[int, Any]] = {}  # object ref -> (chunk number, actor)

        def submit(actor: Any) -> None:
            if queue:
                number = queue.pop(0)
                chunk, seeds = chunks[number]
                running[actor.generate.remote([p for _, p in chunk], n, seeds)] = (number, actor)

        for actor in actors:
            for _ in range(IN_FLIGHT_PER_ACTOR):
                submit(actor)
        try:
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                number, actor = running.pop(ready[0])
                results = ray.get(ready[0])  # raises if the chunk failed even after Ray's retries
                write_chunk(writer, chunks[number][0], results, stats)
                stats.seconds = time.perf_counter() - start
                if progress:
                    progress(stats)
                submit(actor)
        finally:  # killing the actors ends their chunks in flight; finished shards are already written
            for actor in actors:
                ray.kill(actor)
        stats.seconds = time.perf_counter() - start
        return stats


def score_on_ray(
    generations: Any,
    proxies: Sequence[str],
    truth: str | None = "numeric",
    *,
    reward_models: Sequence[str] = (),
    judge_model: str | None = None,
    pairwise_similarity: bool = False,
    chunk_prompts: int = 64,
    address: str = "auto",
) -> Any:
    """:func:`~hedgetune.pipeline.scorers.score_table` with the scoring on Ray, ``chunk_prompts``
    whole prompts per task; the table equals the local one."""
    from .backends import DEFAULT_MODEL

    if chunk_prompts < 1:
        raise ValueError(f"chunk_prompts must be >= 1, got {chunk_prompts}")
    ids = np.array(generations.column("prompt_id").to_pylist())
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    if np.unique(ids[starts]).size != starts.size:
        raise ValueError("each prompt's generations must be together (read them with read_generations)")
    bounds = [*starts[::chunk_prompts].tolist(), ids.size]
    ray = connect(address)
    score_chunk = ray.remote(max_retries=3)(score_columns)  # a task per chunk, retried if its worker dies
    arguments = (proxies, truth, reward_models, judge_model or DEFAULT_MODEL, pairwise_similarity)
    refs = [score_chunk.remote(generations.slice(a, b - a), *arguments) for a, b in itertools.pairwise(bounds)]
    parts: list[Scores] = ray.get(refs)
    first = parts[0]
    merged = Scores(
        columns={name: np.concatenate([p.columns[name] for p in parts]) for name in first.columns},
        true=None if first.true is None else np.concatenate([p.true for p in parts if p.true is not None]),
        similarity=None if first.similarity is None else [row for p in parts for row in (p.similarity or [])],
        provenance=first.provenance,
    )
    return table_from_scores(generations, merged)
