"""Batched against one-at-a-time generation on the packaged SmolLM2 (CPU).

The same workload both ways: ``n`` samples of ``tokens`` new tokens for each of a few prompts,
either as one batch of ``n`` per prompt or as ``n`` separate calls of batch 1. Reports tokens/s and
the ratio (target >= 3x). Run: ``.venv/bin/python benchmarks/bench_generate.py``.
"""

from __future__ import annotations

import time

from hedgetune.pipeline.generate import Prompt, TransformersBackend, reasoning_gym_prompts


def main(n: int = 16, tokens: int = 24, prompts: int = 3) -> float:
    backend = TransformersBackend(max_new_tokens=tokens)
    backend.load()
    problems = reasoning_gym_prompts("chain_sum", prompts, 1, min_terms=2, max_terms=2, min_digits=1, max_digits=1)
    backend.generate(problems[0], 2, 0)  # warm-up

    def run(batch: int) -> float:
        produced = 0
        start = time.perf_counter()
        for k, prompt in enumerate(problems):
            for j in range(n // batch):
                samples = backend.generate(Prompt(prompt.prompt_id, prompt.text), batch, 1000 * k + j)
                produced += sum(len(s.token_logprobs) for s in samples)
        return produced / (time.perf_counter() - start)

    sequential = run(1)
    batched = run(n)
    print(f"SmolLM2-135M on CPU, {prompts} prompts x {n} samples x {tokens} tokens")
    print(f"  one at a time {sequential:7.1f} tokens/s;  batched (n={n}) {batched:7.1f} tokens/s;  ratio {batched / sequential:.1f}x")
    return batched / sequential


if __name__ == "__main__":
    main()
