"""Scoring candidates at the gateway with the same proxies that scored the calibration table.

A proxy is a name of :data:`hedgetune.pipeline.scorers.PROXIES` (``length``, ``mean_logprob``,
``judge``, ``similarity``), a local sequence-classification reward-model folder, a reward head
saved by ``hedgetune train-proxy --save-heads`` (``.json``), or the URL of a remote scoring server
that speaks vLLM's score API (``POST /score`` with ``text_1`` = the prompt and ``text_2`` = the
candidates, answering ``{"data": [{"index", "score"}]}``). Local proxies go through the very
function ``hedgetune score`` applies to a generation run, so the scores a policy was tuned on and
the scores it serves with are computed alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..arrays import FloatArray

#: Proxies that ``hedgetune score`` computes by name (:data:`hedgetune.pipeline.scorers.PROXIES`).
_NAMED = ("length", "mean_logprob", "judge", "similarity")


@dataclass(frozen=True)
class Scorer:
    """One proxy: ``name`` (a named proxy, a reward-model folder, a head (.json) or a URL).

    Models are loaded once, on first use, and kept for the scorer's life (the gateway's), never
    per request.
    """

    name: str
    _models: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.name in _NAMED or self.name.startswith(("http://", "https://")) or Path(self.name).is_dir():
            return
        if self.name.endswith(".json") and Path(self.name).is_file():
            from ..pipeline.train_proxy import BradleyTerryHead

            self._models["head"] = BradleyTerryHead.load(self.name)  # a broken head is refused at start
            return
        raise ValueError(
            f"unknown reward {self.name!r}: use length, mean_logprob, judge, similarity, a local "
            "sequence-classification reward-model folder, a reward head (.json) or a scoring-server URL"
        )

    @property
    def needs_logprobs(self) -> bool:
        return self.name == "mean_logprob"

    def _model(self, key: str, load: Any) -> Any:
        if key not in self._models:
            self._models[key] = load()
        return self._models[key]

    def score(self, prompt: str, responses: list[str], token_logprobs: list[list[float]]) -> FloatArray:
        """One score per response (blocking; the gateway runs it in a worker thread)."""
        from ..pipeline import scorers

        if self.name.startswith(("http://", "https://")):
            values = remote_scores(self.name, prompt, responses)
        elif "head" in self._models:
            from ..pipeline.alpacaeval import minilm_model
            from ..pipeline.train_proxy import head_features

            minilm = self._model("minilm", minilm_model)
            values = self._models["head"].score(head_features([prompt] * len(responses), responses, minilm))
        else:
            import pyarrow as pa

            candidates = pa.table(
                {
                    "prompt": [prompt] * len(responses),
                    "response": responses,
                    "token_logprobs": pa.array(token_logprobs, type=pa.list_(pa.float64())),
                }
            )
            if self.name == "judge":
                from ..pipeline.backends import TransformersBackend

                values, _ = scorers.judge(candidates, self._model("judge", TransformersBackend))
            elif self.name == "similarity":
                from ..pipeline.alpacaeval import minilm_model

                values, _ = scorers.similarity(candidates, self._model("minilm", minilm_model))
            elif self.name in _NAMED:
                values, _ = scorers.PROXIES[self.name](candidates)
            else:
                loaded = self._model("reward_model", lambda: scorers.load_reward_model(self.name))
                values, _ = scorers.reward_model(candidates, self.name, loaded=loaded)
        scores = np.asarray(values, dtype=float)
        if scores.shape != (len(responses),) or not np.all(np.isfinite(scores)):
            raise ValueError(f"the reward {self.name!r} gave invalid scores")
        return scores


@dataclass(frozen=True)
class EnsembleScorer:
    """Several proxies as one: each member standardised, then combined by ``rule`` (mean, min,
    mean - k std across members).

    With ``centres`` and ``scales`` (from a policy tuned on an ensemble column) each member is
    standardised exactly as in the calibration table. Without them (``--reward a --reward b`` and
    no matching recipe) each member is standardised across the request's own candidates,
    z = (s - mean) / std; a member that gives every candidate the same score contributes 0.
    """

    members: tuple[Scorer, ...]
    rule: str
    k: float
    centres: tuple[float, ...] | None = None
    scales: tuple[float, ...] | None = None

    @property
    def name(self) -> str:
        from ..ensembles import ensemble_name

        return ensemble_name([m.name for m in self.members], self.rule, self.k)

    @property
    def needs_logprobs(self) -> bool:
        return any(m.needs_logprobs for m in self.members)

    def score(self, prompt: str, responses: list[str], token_logprobs: list[list[float]]) -> FloatArray:
        from ..ensembles import ensemble_scores

        values = {m.name: m.score(prompt, responses, token_logprobs) for m in self.members}
        if self.centres is not None and self.scales is not None:
            return ensemble_scores(values, self.rule, self.k, self.centres, self.scales)
        stacked = np.stack(list(values.values()))
        spread = stacked.std(axis=1, keepdims=True)
        z = np.divide(stacked - stacked.mean(axis=1, keepdims=True), spread, out=np.zeros_like(stacked), where=spread > 0)
        return ensemble_scores(
            {name: z_row for name, z_row in zip(values, z, strict=True)}, self.rule, self.k,
            [0.0] * len(values), [1.0] * len(values),
        )


def make_scorer(name: str, ensemble: dict[str, Any] | None = None) -> Scorer | EnsembleScorer:
    """The scorer of a proxy: one :class:`Scorer`, or an :class:`EnsembleScorer` from a recipe."""
    if not ensemble:
        return Scorer(name)
    try:
        return EnsembleScorer(
            members=tuple(Scorer(str(m)) for m in ensemble["ensemble"]),
            rule=str(ensemble["rule"]),
            k=float(ensemble["k"]),
            centres=tuple(float(c) for c in ensemble["centres"]),
            scales=tuple(float(s) for s in ensemble["scales"]),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"the ensemble recipe of {name!r} is incomplete ({exc})") from None


def remote_scores(url: str, prompt: str, responses: list[str], timeout: float = 60.0) -> FloatArray:
    """Scores from a server speaking vLLM's score API: ``POST {url}/score`` with
    ``{"text_1": prompt, "text_2": responses}``, answered by ``{"data": [{"index", "score"}]}``."""
    import httpx

    try:
        reply = httpx.post(url.rstrip("/") + "/score", json={"text_1": prompt, "text_2": responses}, timeout=timeout)
        reply.raise_for_status()
        data = reply.json()["data"]
        scores = np.full(len(responses), np.nan)
        for item in data:
            scores[int(item["index"])] = float(item["score"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"the scoring server {url} failed: {type(exc).__name__}") from None
    return scores


def choice_text(choice: dict[str, Any]) -> str:
    """The text of an OpenAI chat or completions choice."""
    message = choice.get("message")
    if isinstance(message, dict):
        content = message.get("content")
        return content if isinstance(content, str) else ""
    text = choice.get("text")
    return text if isinstance(text, str) else ""


def choice_logprobs(choice: dict[str, Any]) -> list[float]:
    """Token log-probabilities of a choice, in either protocol's layout (empty when absent)."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return []
    content = logprobs.get("content")  # chat: [{"token": ..., "logprob": ...}, ...]
    if isinstance(content, list):
        return [float(t["logprob"]) for t in content if isinstance(t, dict) and _number(t.get("logprob"))]
    tokens = logprobs.get("token_logprobs")  # completions: [float, ...]
    if isinstance(tokens, list):
        return [float(x) for x in tokens if _number(x)]
    return []


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)
