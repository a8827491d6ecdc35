"""Pipeline commands: generate candidates, score them, train proxies."""

from __future__ import annotations

import json
from typing import Any

import click

from ..io import read_table
from ._common import (
    announce,
    claim_output,
    force_option,
    progress_bar,
    quiet_option,
    user_errors,
)
from ._group import main


# ------------------------------------------------------------------------------------ pipeline
def _parse_config(items: tuple[str, ...]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise click.BadParameter(f"--task-config takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return config


@main.command()
@click.option("--task", default=None, help="A reasoning-gym dataset name (e.g. chain_sum, gsm_symbolic).")
@click.option(
    "--task-config", multiple=True, help="KEY=VALUE options of the reasoning-gym dataset (repeatable)."
)
@click.option(
    "--size", type=click.IntRange(min=1), default=200, show_default=True, help="Number of task prompts."
)
@click.option(
    "--prompts",
    "prompts_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="A JSONL file of prompts instead of a task (fields --text-field, --answer-field).",
)
@click.option("--text-field", default="question", show_default=True)
@click.option("--answer-field", default="answer", show_default=True)
@click.option(
    "--n", "n", type=click.IntRange(min=1), default=32, show_default=True, help="Samples per prompt."
)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run folder (resumable).")
@click.option(
    "--model",
    default="smollm2-135m-instruct",
    show_default=True,
    help="A local model folder (safetensors), or the packaged SmolLM2.",
)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=48, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="transformers backend: cpu, cuda, ...")
@click.option(
    "--backend",
    "backend_name",
    type=click.Choice(["transformers", "openai", "vllm"]),
    default="transformers",
    show_default=True,
    help="transformers: a local model in this process; openai: any OpenAI-compatible server "
    "(--base-url); vllm: vLLM in this process (GPUs; install vllm yourself).",
)
@click.option("--base-url", default=None, help="openai backend: the server, e.g. http://127.0.0.1:8000")
@click.option(
    "--retries", type=click.IntRange(min=0), default=5, show_default=True,
    help="openai backend: retries of a failed request (exponential backoff).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="openai backend: requests in flight at once.",
)
@click.option(
    "--api-key-env",
    default=None,
    metavar="VAR",
    help="openai backend: the environment variable holding the API key (never written to disk).",
)
@click.option(
    "--tensor-parallel-size", type=click.IntRange(min=1), default=1, show_default=True, help="vllm backend."
)
@click.option(
    "--pipeline-parallel-size", type=click.IntRange(min=1), default=1, show_default=True,
    help="vllm backend (with --ray: stages on several machines).",
)
@click.option(
    "--ray", "ray_address", default=None, metavar="ADDRESS",
    help="Run the model calls on Ray: 'local' (start Ray here), 'auto' (join the running cluster) or an "
    "address; needs the 'distributed' extra. Same shards, seeds and resume as without.",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=None,
    help="With --ray: model replicas (Ray actors; default one per cluster CPU).",
)
@click.option(
    "--threads-per-worker", type=click.IntRange(min=1), default=None,
    help="With --ray: CPU threads of each replica (default: Ray's, one per CPU it holds).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@quiet_option
@user_errors
def generate(
    task: str | None,
    task_config: tuple[str, ...],
    size: int,
    prompts_path: str | None,
    text_field: str,
    answer_field: str,
    n: int,
    out: str,
    model: str,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    device: str,
    backend_name: str,
    base_url: str | None,
    retries: int,
    concurrency: int,
    api_key_env: str | None,
    tensor_parallel_size: int,
    pipeline_parallel_size: int,
    ray_address: str | None,
    workers: int | None,
    threads_per_worker: int | None,
    seed: int,
    quiet: bool,
) -> None:
    """Sample N responses per prompt with their token log-probabilities.

    Finished prompts are written in Parquet shards atomically; rerun the same command after a crash
    to continue where it stopped.
    """
    from ..pipeline.generate import generate as run_generation
    from ..pipeline.generate import jsonl_prompts, reasoning_gym_prompts

    if (task is None) == (prompts_path is None):
        raise click.UsageError("give either --task or --prompts")
    backend = _make_backend(
        backend_name,
        model=model,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        device=device,
        base_url=base_url,
        retries=retries,
        concurrency=concurrency,
        api_key_env=api_key_env,
        tensor_parallel_size=tensor_parallel_size,
        pipeline_parallel_size=pipeline_parallel_size,
        on_ray=ray_address is not None,
    )
    if (workers is not None or threads_per_worker is not None) and ray_address is None:
        raise click.UsageError("--workers and --threads-per-worker set the Ray actors: give --ray too")
    prompts = (
        jsonl_prompts(prompts_path, text_field, answer_field)
        if prompts_path
        else reasoning_gym_prompts(str(task), size, seed, **_parse_config(task_config))
    )
    announce(f"generating {n} samples for each of {len(prompts)} prompts with {backend.name}", quiet)
    with progress_bar(len(prompts), "generating", quiet, item_show_func=lambda s: s) as bar:
        last = [0]

        def progress(stats: Any) -> None:
            bar.update(
                stats.prompts - last[0],
                f"{stats.prompts_per_second:.2f} prompts/s, {stats.tokens_per_second:.0f} tokens/s",
            )
            last[0] = stats.prompts

        if ray_address is not None:
            from ..pipeline.distributed import generate_on_ray

            stats = generate_on_ray(
                prompts, backend, out, n=n, seed=seed, workers=workers, threads_per_worker=threads_per_worker,
                address=ray_address, progress=progress,
            )
        else:
            stats = run_generation(prompts, backend, out, n=n, seed=seed, progress=progress)
    click.echo(
        f"{stats.prompts} prompts generated, {stats.skipped} already done; {stats.tokens} tokens in "
        f"{stats.seconds:.1f} s ({stats.tokens_per_second:.0f} tokens/s) -> {out}"
    )


def _make_backend(
    name: str,
    *,
    model: str,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    device: str,
    base_url: str | None,
    concurrency: int,
    api_key_env: str | None,
    tensor_parallel_size: int,
    pipeline_parallel_size: int = 1,
    on_ray: bool = False,
    retries: int = 5,
) -> Any:
    """The generation backend the command line asked for, its options checked (on Ray, vLLM
    spreads its tensor/pipeline-parallel workers over the cluster with its Ray executor)."""
    import os

    if name != "vllm" and pipeline_parallel_size != 1:
        raise click.UsageError("--pipeline-parallel-size is an option of --backend vllm")
    if name != "openai" and (base_url or api_key_env):
        raise click.UsageError("--base-url and --api-key-env are options of --backend openai")
    if name == "transformers":
        from ..pipeline.backends import TransformersBackend

        return TransformersBackend(
            model=model, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, device=device
        )
    if name == "openai":
        from ..pipeline.backends import OpenAIBackend

        if not base_url:
            raise click.UsageError("--backend openai needs --base-url")
        if not base_url.startswith(("http://", "https://")):
            raise click.UsageError(f"--base-url must start with http:// or https://, got {base_url!r}")
        api_key = None
        if api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise click.UsageError(f"the environment variable {api_key_env} (--api-key-env) is not set")
        return OpenAIBackend(
            base_url,
            model=model,
            api_key=api_key,
            max_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            max_concurrency=concurrency,
            retries=retries,
        )
    from ..pipeline.backends import VLLMBackend

    return VLLMBackend(
        model,
        max_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        tensor_parallel_size=tensor_parallel_size,
        pipeline_parallel_size=pipeline_parallel_size,
        distributed_executor_backend="ray" if on_ray or pipeline_parallel_size > 1 else None,
    )


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option(
    "--proxy",
    "proxies",
    multiple=True,
    type=click.Choice(["length", "mean_logprob", "judge", "similarity"]),
    help="Proxy scorers (repeatable).",
)
@click.option(
    "--reward-model",
    "reward_models",
    multiple=True,
    type=click.Path(file_okay=False),
    help="A local sequence-classification reward model folder (repeatable).",
)
@click.option(
    "--truth", type=click.Choice(["numeric", "reasoning-gym", "none"]), default="numeric", show_default=True
)
@click.option("--judge-model", default="smollm2-135m-instruct", show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False), required=True, help="The calibration table (Parquet)."
)
@click.option(
    "--partial", is_flag=True, help="Score an unfinished run's finished prompts (else it is refused)."
)
@click.option(
    "--pairwise-similarity", is_flag=True,
    help="Also store the MiniLM cosine similarity between each prompt's responses (for -m rbon_wd).",
)
@click.option(
    "--ray", "ray_address", default=None, metavar="ADDRESS",
    help="Score on Ray ('local', 'auto' or an address; the 'distributed' extra), --chunk-prompts prompts per task.",
)
@click.option("--chunk-prompts", type=click.IntRange(min=1), default=64, show_default=True, help="With --ray.")
@force_option
@user_errors
def score(
    run_dir: str,
    proxies: tuple[str, ...],
    reward_models: tuple[str, ...],
    truth: str,
    judge_model: str,
    out: str,
    partial: bool,
    pairwise_similarity: bool,
    ray_address: str | None,
    chunk_prompts: int,
    force: bool,
) -> None:
    """Score a generation run: proxy columns and the verifier's true reward, with provenance."""
    from ..io import write_table
    from ..pipeline.generate import read_generations
    from ..pipeline.scorers import score_table

    claim_output(out, force)
    generations = read_generations(run_dir, partial=partial)
    if partial:
        click.echo(f"scoring the {len(set(generations.column('prompt_id').to_pylist()))} finished prompts", err=True)
    options: dict[str, Any] = dict(
        reward_models=reward_models, judge_model=judge_model, pairwise_similarity=pairwise_similarity
    )
    chosen, verifier = proxies or ("length", "mean_logprob"), None if truth == "none" else truth
    if ray_address is not None:
        from ..pipeline.distributed import score_on_ray

        table = score_on_ray(generations, chosen, verifier, chunk_prompts=chunk_prompts, address=ray_address, **options)
    else:
        table = score_table(generations, chosen, verifier, **options)
    write_table(table, out)
    click.echo(f"{table} -> {out}")


@main.command("train-proxy")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("table_path", metavar="TABLE", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--train-prompts",
    type=click.IntRange(min=1),
    multiple=True,
    default=(50,),
    show_default=True,
    help="Prompts whose gold labels train the head (repeatable: one proxy each).",
)
@click.option(
    "--flip-rate",
    type=click.FloatRange(0, 0.5, max_open=True),
    multiple=True,
    default=(0.0,),
    show_default=True,
    help="Share of preference labels flipped (repeatable).",
)
@click.option(
    "--holdout",
    type=click.IntRange(min=1),
    default=None,
    help="Prompts reserved for training (default: the largest --train-prompts); excluded from the output.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True)
@click.option(
    "--save-heads", type=click.Path(file_okay=False), default=None,
    help="Also save each trained head as <name>.json here (for `hedgetune gateway --reward`).",
)
@force_option
@user_errors
def train_proxy(
    run_dir: str,
    table_path: str,
    train_prompts: tuple[int, ...],
    flip_rate: tuple[float, ...],
    holdout: int | None,
    seed: int,
    out: str,
    save_heads: str | None,
    force: bool,
) -> None:
    """Fit Bradley-Terry reward heads on frozen MiniLM embeddings of a run's responses, using part of
    the table's gold labels, and add them as proxies (the training prompts are dropped)."""
    from ..io import write_table
    from ..pipeline.generate import read_generations
    from ..pipeline.train_proxy import add_trained_proxies

    claim_output(out, force)
    table = add_trained_proxies(
        read_generations(run_dir, partial=True),  # the table says which prompts were scored
        read_table(table_path),
        train_prompts,
        flip_rate,
        holdout=holdout,
        seed=seed,
        heads_dir=save_heads,
    )
    write_table(table, out)
    click.echo(f"{table} -> {out}")
