"""Scoring candidates at the gateway with the same proxies that scored the calibration table.

A proxy is a name of :data:`hedgetune.pipeline.scorers.PROXIES` (``length``, ``mean_logprob``,
``judge``, ``similarity``), a local sequence-classification reward-model folder, a reward head
saved by ``hedgetune train-proxy --save-heads`` (``.json``), or a reward model behind a server,
written ``PROTOCOL+URL`` (a bare ``http(s)://`` URL means ``vllm-score``; ``#model=NAME`` at the
end names the served model):

=====================  =================================================================
``vllm-score``         ``POST /score`` ``{"text_1": prompt, "text_2": [candidates]}`` ->
                       ``{"data": [{"index", "score"}]}``
``vllm-classify``      ``POST /classify`` ``{"input": [prompt + "\n\n" + candidate, ...]}`` ->
                       ``{"data": [{"index", "probs"}]}``; the score is the last class's probability
``vllm-pooling``       ``POST /pooling`` ``{"input": [...]}`` -> ``{"data": [{"index", "data"}]}``;
                       the score is the last value of the pooled output (a reward model's
                       reward at the final token)
``sglang-classify``    ``POST /v1/classify`` ``{"input": text}``, one call per candidate, answered
                       like vLLM's ``/classify``
``chat-reward``        ``POST /v1/chat/completions`` with the prompt as the user turn and the
                       candidate as the assistant turn; the score is the number in the reply
                       text (``"reward:-3.2"``, NVIDIA NIM style, or a bare number)
=====================  =================================================================

Local proxies go through the very function ``hedgetune score`` applies to a generation run, so the
scores a policy was tuned on and the scores it serves with are computed alike.

A scorer never invents a score: a candidate it cannot score (no log-probabilities for
``mean_logprob``, a non-finite value) gets NaN, which the gateway treats as missing, and a scorer
that fails as a whole (a server down, a malformed reply) raises :class:`ScoringFailed`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..arrays import FloatArray

#: Proxies that ``hedgetune score`` computes by name (:data:`hedgetune.pipeline.scorers.PROXIES`).
_NAMED = ("length", "mean_logprob", "judge", "similarity")
#: Remote reward-model protocols (module docstring).
PROTOCOLS = ("vllm-score", "vllm-classify", "vllm-pooling", "sglang-classify", "chat-reward")
_REWARD_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


class ScoringFailed(Exception):
    """The scorer could not score the request's candidates at all (the message says why)."""


def remote_spec(name: str) -> tuple[str, str, str | None] | None:
    """``(protocol, base URL, model)`` of a remote reward ``name``, or ``None`` for a local one."""
    protocol, _, rest = name.partition("+")
    if not rest:
        protocol, rest = "vllm-score", name
    if protocol not in PROTOCOLS or not rest.startswith(("http://", "https://")):
        return None
    url, _, fragment = rest.partition("#")
    model = fragment[len("model="):] if fragment.startswith("model=") else None
    return protocol, url.rstrip("/"), model or None


@dataclass(frozen=True)
class Scorer:
    """One proxy: ``name`` (a named proxy, a reward-model folder, a head (.json) or a URL).

    Models are loaded once, on first use, and kept for the scorer's life (the gateway's), never
    per request.
    """

    name: str
    _models: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.name in _NAMED or remote_spec(self.name) is not None or Path(self.name).is_dir():
            return
        if self.name.endswith(".json") and Path(self.name).is_file():
            from ..pipeline.train_proxy import BradleyTerryHead

            self._models["head"] = BradleyTerryHead.load(self.name)  # a broken head is refused at start
            return
        raise ValueError(
            f"unknown reward {self.name!r}: use length, mean_logprob, judge, similarity, a local "
            "sequence-classification reward-model folder, a reward head (.json) or PROTOCOL+URL of a reward "
            f"server (PROTOCOL one of {', '.join(PROTOCOLS)})"
        )

    @property
    def needs_logprobs(self) -> bool:
        return self.name == "mean_logprob"

    def _model(self, key: str, load: Any) -> Any:
        if key not in self._models:
            self._models[key] = load()
        return self._models[key]

    def score(
        self, prompt: str, responses: list[str], token_logprobs: list[list[float] | None], timeout: float = 60.0
    ) -> FloatArray:
        """One score per response, NaN where it cannot be computed (blocking; the gateway runs it
        in a worker thread). Raises :class:`ScoringFailed` when nothing can be scored."""
        from ..pipeline import scorers

        remote = remote_spec(self.name)
        if remote is not None:
            values = remote_scores(*remote, prompt, responses, timeout=timeout)
        elif self.name == "mean_logprob":
            values = np.array([np.mean(lp) if lp else np.nan for lp in token_logprobs], dtype=float)
        elif "head" in self._models:
            from ..pipeline.embeddings import minilm_model
            from ..pipeline.train_proxy import head_features

            minilm = self._model("minilm", minilm_model)
            values = self._models["head"].score(head_features([prompt] * len(responses), responses, minilm))
        else:
            import pyarrow as pa

            candidates = pa.table(
                {
                    "prompt": [prompt] * len(responses),
                    "response": responses,
                    "token_logprobs": pa.array([lp or [] for lp in token_logprobs], type=pa.list_(pa.float64())),
                }
            )
            if self.name == "judge":
                from ..pipeline.backends import TransformersBackend

                values, _ = scorers.judge(candidates, self._model("judge", TransformersBackend))
            elif self.name == "similarity":
                from ..pipeline.embeddings import minilm_model

                values, _ = scorers.similarity(candidates, self._model("minilm", minilm_model))
            elif self.name in _NAMED:
                values, _ = scorers.PROXIES[self.name](candidates)
            else:
                loaded = self._model("reward_model", lambda: scorers.load_reward_model(self.name))
                values, _ = scorers.reward_model(candidates, self.name, loaded=loaded)
        scores = np.asarray(values, dtype=float)
        if scores.shape != (len(responses),):
            raise ScoringFailed(f"the reward {self.name!r} gave {scores.size} scores for {len(responses)} candidates")
        return np.where(np.isfinite(scores), scores, np.nan)  # a non-finite score is missing, never a number


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

    def score(
        self, prompt: str, responses: list[str], token_logprobs: list[list[float] | None], timeout: float = 60.0
    ) -> FloatArray:
        """As :meth:`Scorer.score`; a candidate missing any member's score is missing."""
        values = {m.name: m.score(prompt, responses, token_logprobs, timeout) for m in self.members}
        missing = np.any([np.isnan(v) for v in values.values()], axis=0)
        if missing.any():
            present = ~missing
            out = np.full(len(responses), np.nan)
            if present.any():
                out[present] = self.score_present({k: v[present] for k, v in values.items()})
            return out
        return self.score_present(values)

    def score_present(self, values: dict[str, FloatArray]) -> FloatArray:
        """The rule applied to members that scored every candidate."""
        from ..ensembles import ensemble_scores

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


def remote_scores(
    protocol: str, url: str, model: str | None, prompt: str, responses: list[str], timeout: float = 60.0
) -> FloatArray:
    """Scores from a reward-model server speaking ``protocol`` (module docstring); NaN for a
    candidate the reply leaves out. Raises :class:`ScoringFailed` when the server fails."""
    import httpx

    named = {"model": model} if model else {}
    joined = [f"{prompt}\n\n{r}" for r in responses]
    scores = np.full(len(responses), np.nan)
    try:
        with httpx.Client(timeout=timeout) as client:
            if protocol == "vllm-score":
                data = _post(client, url + "/score", {**named, "text_1": prompt, "text_2": responses})["data"]
                _fill(scores, data, lambda item: item["score"])
            elif protocol in ("vllm-classify", "vllm-pooling"):
                path = "/classify" if protocol == "vllm-classify" else "/pooling"
                data = _post(client, url + path, {**named, "input": joined})["data"]
                _fill(scores, data, _last_prob if protocol == "vllm-classify" else _last_value)
            elif protocol == "sglang-classify":
                for k, text in enumerate(joined):
                    item = _post(client, url + "/v1/classify", {**named, "input": text})["data"][0]
                    scores[k] = _last_prob(item)
            else:  # chat-reward
                for k, response in enumerate(responses):
                    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
                    reply = _post(client, url + "/v1/chat/completions", {**named, "messages": messages})
                    scores[k] = _reward_in_text(reply["choices"][0]["message"]["content"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ScoringFailed(f"the reward server ({protocol}) failed: {type(exc).__name__}") from None
    return np.where(np.isfinite(scores), scores, np.nan)


def _post(client: Any, url: str, body: dict[str, Any]) -> Any:
    reply = client.post(url, json=body)
    reply.raise_for_status()
    return reply.json()


def _fill(scores: FloatArray, data: Any, value: Any) -> None:
    for item in data:
        index = int(item["index"])
        if not 0 <= index < scores.size:
            raise IndexError(index)
        scores[index] = float(value(item))


def _last_prob(item: dict[str, Any]) -> float:
    return float(item["probs"][-1])


def _last_value(item: dict[str, Any]) -> float:
    return float(np.asarray(item["data"], dtype=float).ravel()[-1])


def _reward_in_text(text: Any) -> float:
    """The reward in a chat reward model's reply: after ``reward:`` if present, else the only number."""
    if not isinstance(text, str):
        raise TypeError("the reply has no text")
    tagged = re.search(r"(?i)reward\s*[:=]\s*(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)", text)
    if tagged:
        return float(tagged.group(1))
    numbers = _REWARD_NUMBER.findall(text)
    if len(numbers) != 1:
        raise ValueError("no single reward in the reply")
    return float(numbers[0])


def choice_text(choice: dict[str, Any]) -> str:
    """The text of an OpenAI chat or completions choice."""
    message = choice.get("message")
    if isinstance(message, dict):
        content = message.get("content")
        return content if isinstance(content, str) else ""
    text = choice.get("text")
    return text if isinstance(text, str) else ""


def choice_logprobs(choice: dict[str, Any]) -> list[float] | None:
    """Token log-probabilities of a choice, in either protocol's layout; ``None`` when the choice
    has none or any of them is not a finite number (never a partial list)."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return None
    content = logprobs.get("content")  # chat: [{"token": ..., "logprob": ...}, ...]
    values: list[Any]
    if isinstance(content, list):
        values = [t.get("logprob") if isinstance(t, dict) else None for t in content]
    else:
        tokens = logprobs.get("token_logprobs")  # completions: [float, ...]
        if not isinstance(tokens, list):
            return None
        values = tokens
    if not all(_number(v) for v in values):
        return None
    return [float(v) for v in values]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)
