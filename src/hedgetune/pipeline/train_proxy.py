"""Proxy reward models trained on part of the gold labels: a Bradley-Terry head on frozen features.

The paper's lever for making hacking appear earlier: a proxy fitted on fewer labelled pairs, or on
pairs whose preference labels are flipped at random, is a worse stand-in for the gold reward.
Pure NumPy/SciPy: the features (for example sentence embeddings) are computed beforehand.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special

from .._atomic import atomic_write_text
from ..arrays import FloatArray
from ..table import RewardTable

#: The features every trained head sees (computed by :func:`head_features`).
FEATURES = "minilm:[e(response), e(prompt)*e(response), log1p(chars)]"


@dataclass(frozen=True)
class BradleyTerryHead:
    """A linear reward ``r(x) = w . standardise(x)`` fitted to pairwise preferences.

    ``pairs`` is how many preference pairs it was trained on and ``flip_rate`` the share of their
    labels that were flipped at random.
    """

    weights: FloatArray
    mean: FloatArray
    scale: FloatArray
    pairs: int
    flip_rate: float
    l2: float

    def score(self, features: FloatArray) -> FloatArray:
        return ((features - self.mean) / self.scale) @ self.weights

    def save(self, path: str | os.PathLike[str], features: str = FEATURES) -> Path:
        """Write the head as JSON (numbers only: nothing to unpickle), atomically."""
        data = {
            "kind": "bradley-terry-head",
            "features": features,
            "weights": self.weights.tolist(),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "pairs": self.pairs,
            "flip_rate": self.flip_rate,
            "l2": self.l2,
        }
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, json.dumps(data, allow_nan=False))
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BradleyTerryHead:
        """Read a head written by :meth:`save`, checking every field."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError, RecursionError) as exc:
            raise ValueError(f"cannot read the reward head {str(path)!r}: {exc}") from None
        if not isinstance(data, dict) or data.get("kind") != "bradley-terry-head":
            raise ValueError(f"{str(path)!r} is not a hedgetune reward head")
        if data.get("features") != FEATURES:
            raise ValueError(f"{str(path)!r} was trained on other features: {data.get('features')!r}")
        try:
            arrays = [np.asarray(data[k], dtype=float) for k in ("weights", "mean", "scale")]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{str(path)!r}: weights, mean and scale must be lists of numbers") from None
        if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1 or not all(np.isfinite(a).all() for a in arrays):
            raise ValueError(f"{str(path)!r}: weights, mean and scale must be finite vectors of one length")
        if not (arrays[2] > 0).all():
            raise ValueError(f"{str(path)!r}: scale must be positive")
        return cls(arrays[0], arrays[1], arrays[2], int(data.get("pairs", 0)), float(data.get("flip_rate", 0.0)), float(data.get("l2", 0.0)))


def head_features(prompts: Sequence[str], responses: Sequence[str], model: Any = None) -> FloatArray:
    """MiniLM embeddings of response and prompt, their product and the log length: the features of
    :data:`FEATURES`, computed alike for training and at the gateway (``model``: an already loaded
    MiniLM, else it is loaded here)."""
    from .embeddings import embed, minilm_model

    model = model or minilm_model()
    e_r = embed(model, list(responses))
    e_p = embed(model, list(prompts))
    lengths = np.log1p([len(r) for r in responses])[:, None]
    return np.hstack([e_r, e_r * e_p, lengths])


def preference_pairs(
    prompt_index: NDArray[np.intp], gold: FloatArray, prompts: NDArray[np.intp]
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """All ``(winner, loser)`` response pairs with different gold scores within the given prompts."""
    winners, losers = [], []
    for p in prompts:  # a loop over training prompts; pairs within each are built vectorised
        rows = np.flatnonzero(prompt_index == p)
        i, j = np.triu_indices(rows.size, k=1)
        a, b = rows[i], rows[j]
        differ = gold[a] != gold[b]
        a, b = a[differ], b[differ]
        a_wins = gold[a] > gold[b]
        winners.append(np.where(a_wins, a, b))
        losers.append(np.where(a_wins, b, a))
    if not winners:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    return np.concatenate(winners), np.concatenate(losers)


def fit_bradley_terry(
    features: FloatArray,
    prompt_index: NDArray[np.intp],
    gold: FloatArray,
    train_prompts: NDArray[np.intp],
    *,
    flip_rate: float = 0.0,
    l2: float = 1.0,
    seed: int = 0,
) -> BradleyTerryHead:
    """Fit ``P(a beats b) = sigmoid(r(a) - r(b))`` on the pairs of ``train_prompts``.

    A share ``flip_rate`` of the pair labels is flipped at random (seeded) to mimic noisy
    annotators. The loss is the mean logistic loss plus ``l2 / 2 * |w|^2 / pairs``.
    """
    if not 0 <= flip_rate < 0.5:
        raise ValueError(f"flip_rate must lie in [0, 0.5), got {flip_rate}")
    winners, losers = preference_pairs(prompt_index, gold, train_prompts)
    if winners.size == 0:
        raise ValueError(
            "no training pairs: the training prompts have no responses with different gold scores"
        )
    rng = np.random.default_rng(seed)
    flipped = rng.random(winners.size) < flip_rate
    winners, losers = np.where(flipped, losers, winners), np.where(flipped, winners, losers)
    train_rows = np.unique(np.concatenate([winners, losers]))
    mean = features[train_rows].mean(axis=0)
    scale = features[train_rows].std(axis=0)
    scale[scale == 0] = 1.0
    diff = (features[winners] - features[losers]) / scale
    pairs = diff.shape[0]

    def loss(w: FloatArray) -> tuple[float, FloatArray]:
        margin = diff @ w
        value = np.mean(np.logaddexp(0.0, -margin)) + 0.5 * l2 * (w @ w) / pairs
        grad = -(diff.T @ special.expit(-margin)) / pairs + l2 * w / pairs
        return float(value), grad

    result = optimize.minimize(
        loss, np.zeros(diff.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 500}
    )
    return BradleyTerryHead(result.x, mean, scale, pairs, flip_rate, l2)


def train_heads(
    features: FloatArray,
    prompt_index: NDArray[np.intp],
    gold: FloatArray,
    train_pool: NDArray[np.intp],
    sizes: Sequence[int],
    flip_rates: Sequence[float],
    *,
    seed: int,
    features_described: str,
    heads_dir: str | os.PathLike[str] | None = None,
) -> dict[str, tuple[FloatArray, str]]:
    """One Bradley-Terry head per (training size, flip rate): ``rm_{size}p_flip{percent}`` ->
    (scores of every response, provenance); with ``heads_dir``, each head is also saved there as
    ``<name>.json`` (for ``hedgetune gateway --reward``)."""
    out = {}
    for size in sizes:
        if size > train_pool.size:
            raise ValueError(f"--train-prompts {size} exceeds the {train_pool.size} reserved prompts")
        for flip in flip_rates:
            head = fit_bradley_terry(
                features, prompt_index, gold, train_pool[:size], flip_rate=flip, seed=seed
            )
            name = f"rm_{size}p_flip{round(100 * flip)}"
            if heads_dir is not None:
                head.save(Path(heads_dir) / f"{name}.json")
            out[name] = (
                head.score(features),
                f"Bradley-Terry head on frozen MiniLM features {features_described}, trained on {head.pairs} gold "
                f"preference pairs from {size} prompts, {round(100 * flip)}% labels flipped, L2 {head.l2:g}, seed {seed}; "
                "training prompts excluded",
            )
    return out


def add_trained_proxies(
    generations: Any,
    table: RewardTable,
    train_sizes: Sequence[int],
    flip_rates: Sequence[float],
    *,
    holdout: int | None = None,
    seed: int = 0,
    heads_dir: str | os.PathLike[str] | None = None,
) -> RewardTable:
    """Add one Bradley-Terry proxy per (training size, flip rate) to ``table``.

    Features: MiniLM embeddings of prompt and response (and their product) and log length. A
    seeded permutation reserves ``holdout`` prompts (default: the largest training size) for
    training; the returned table holds only the other prompts.
    """
    gold = table.require_true_reward()
    ids = np.array(generations.column("prompt_id").to_pylist()).astype(str)
    samples = np.array(generations.column("sample_idx").to_pylist())
    order = {(p, s): i for i, (p, s) in enumerate(zip(ids, samples, strict=True))}
    table_ids = table.prompt_of_response().astype(str)
    # The table stores responses prompt by prompt in generation order; match rows explicitly.
    per_prompt_rank = np.concatenate([np.arange(k) for k in table.pool_sizes])
    try:
        rows = np.array([order[(p, int(s))] for p, s in zip(table_ids, per_prompt_rank, strict=True)])
    except KeyError as missing:
        raise ValueError(f"the table has a response the run does not: {missing}") from None
    responses = generations.column("response").to_pylist()
    prompts = generations.column("prompt").to_pylist()
    features = head_features([prompts[i] for i in rows], [responses[i] for i in rows])
    prompt_index = np.repeat(np.arange(table.n_prompts), table.pool_sizes)
    reserved = max(train_sizes) if holdout is None else holdout
    if reserved >= table.n_prompts:
        raise ValueError(f"cannot reserve {reserved} of {table.n_prompts} prompts for training")
    permutation = np.random.default_rng(seed).permutation(table.n_prompts)
    train_pool = permutation[:reserved]
    proxies = dict(table.proxies)
    provenance = dict(table.provenance)
    heads = train_heads(
        features,
        prompt_index,
        gold,
        train_pool,
        train_sizes,
        flip_rates,
        seed=seed,
        features_described="[e(response), e(prompt)*e(response), log1p(chars)]",
        heads_dir=heads_dir,
    )
    for name, (scores, how) in heads.items():
        proxies[name], provenance[name] = scores, how
    full = RewardTable(
        table.prompt_ids, table.offsets, proxies, gold, table.groups, table.proxy, provenance, table.dropped
    )
    return full.subset(np.sort(permutation[reserved:]))
