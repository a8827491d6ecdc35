"""Generation on the packaged SmolLM2 (CPU): hedgetune's ``generate`` against a plain batched
``model.generate`` loop, and batched against one-at-a-time sampling.

1. **Overhead** (target <= 1.5x): the same prompts, model, threads and seeds, ``n`` samples each,
   (a) through :func:`hedgetune.pipeline.generate.generate` with the transformers backend (chat
   template, per-token log-probabilities, Parquet shards written atomically, progress after every
   prompt), and (b) a plain loop: the chat template, ``model.generate`` on a batch of ``n`` copies,
   nothing kept but the tokens. The same seeds draw the same tokens both ways, so the times compare
   the same work; each is timed twice in alternation and the better time kept.
2. **Batching** (target >= 3x): ``n`` samples per prompt as one batch of ``n`` or as ``n`` calls
   of batch 1.

Run: ``.venv/bin/python benchmarks/bench_generate.py`` (``--quick``: fewer prompts and tokens).
"""

from __future__ import annotations

import sys
import tempfile
import time

from hedgetune.pipeline.generate import (
    Prompt,
    TransformersBackend,
    generate,
    prompt_seed,
    reasoning_gym_prompts,
)


def plain_loop(backend: TransformersBackend, prompts: list[Prompt], n: int, tokens: int, seed: int) -> int:
    """What a user would write by hand: one batched ``model.generate`` per prompt; new tokens up to EOS."""
    import torch

    tokenizer, model = backend.load()
    produced = 0
    for prompt in prompts:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt.text}], tokenize=False, add_generation_prompt=True)
        encoded = tokenizer([text] * n, return_tensors="pt")
        torch.manual_seed(prompt_seed(seed, prompt.prompt_id))
        with torch.no_grad():
            out = model.generate(**encoded, do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=tokens,
                                 pad_token_id=tokenizer.pad_token_id)
        new = out[:, encoded["input_ids"].shape[1]:]
        for row in new:
            eos = (row == tokenizer.eos_token_id).nonzero()
            produced += int(eos[0]) if len(eos) else int((row != tokenizer.pad_token_id).sum())
    return produced


def overhead(backend: TransformersBackend, prompts: list[Prompt], n: int, tokens: int) -> float:
    import torch

    times: dict[str, list[float]] = {"hedgetune": [], "plain": []}
    counts: dict[str, int] = {}
    for attempt in range(2):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            stats = generate(prompts, backend, out, n=n, seed=attempt, progress=lambda s: None)
            times["hedgetune"].append(time.perf_counter() - start)
            counts["hedgetune"] = stats.tokens
        start = time.perf_counter()
        counts["plain"] = plain_loop(backend, prompts, n, tokens, seed=attempt)
        times["plain"].append(time.perf_counter() - start)
    ours, plain = min(times["hedgetune"]), min(times["plain"])
    print(f"SmolLM2-135M on CPU ({torch.get_num_threads()} threads), {len(prompts)} prompts x {n} samples x <= {tokens} tokens")
    print(f"  hedgetune generate: {ours:6.2f} s ({counts['hedgetune'] / ours:6.1f} tokens/s, {counts['hedgetune']} tokens)")
    print(f"  plain model.generate loop: {plain:6.2f} s ({counts['plain'] / plain:6.1f} tokens/s, {counts['plain']} tokens)")
    print(f"  ratio {ours / plain:.2f}x (target <= 1.5x)")
    return ours / plain


def batching(backend: TransformersBackend, prompts: list[Prompt], n: int) -> float:
    def run(batch: int) -> float:
        produced = 0
        start = time.perf_counter()
        for k, prompt in enumerate(prompts):
            for j in range(n // batch):
                samples = backend.generate(Prompt(prompt.prompt_id, prompt.text), batch, 1000 * k + j)
                produced += sum(len(s.token_logprobs) for s in samples)
        return produced / (time.perf_counter() - start)

    sequential, batched = run(1), run(n)
    print(f"  one at a time {sequential:7.1f} tokens/s;  batched (n={n}) {batched:7.1f} tokens/s;  ratio {batched / sequential:.1f}x (target >= 3x)")
    return batched / sequential


def main(quick: bool = False) -> tuple[float, float]:
    tokens = 16 if quick else 24
    backend = TransformersBackend(max_new_tokens=tokens)
    backend.load()
    problems = reasoning_gym_prompts("chain_sum", 2 if quick else 4, 1, min_terms=2, max_terms=2, min_digits=1, max_digits=1)
    backend.generate(problems[0], 2, 0)  # warm-up
    ratio = overhead(backend, problems, 8 if quick else 16, tokens)
    speedup = batching(backend, problems[:2] if quick else problems[:3], 8 if quick else 16)
    return ratio, speedup


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
