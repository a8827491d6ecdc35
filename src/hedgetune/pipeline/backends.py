"""Generation backends beyond local ``transformers``: OpenAI-compatible servers and vLLM.

* :class:`OpenAIBackend` talks to any server that speaks the OpenAI completions protocol (vLLM
  serve, SGLang, TGI, llama.cpp server, ``hedgetune serve``) over plain HTTP, with a concurrency
  limit and retries with exponential backoff.
* :class:`VLLMBackend` runs vLLM in-process on GPUs (tensor/pipeline parallel; several machines
  through vLLM's own Ray executor). vLLM is imported lazily; the mapping between our prompts and
  its requests/responses is pure and unit-tested here.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .generate import Prompt, Sample, folder_digest

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


# ------------------------------------------------------------------------------------ OpenAI
def completion_request(
    prompt: Prompt, n: int, seed: int, *, model: str, max_tokens: int, temperature: float, top_p: float
) -> dict[str, Any]:
    """The JSON body of an OpenAI ``/v1/completions`` request for ``n`` samples of one prompt."""
    return {
        "model": model,
        "prompt": prompt.text,
        "n": n,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "logprobs": 1,
    }


def completion_samples(response: dict[str, Any], n: int) -> list[Sample]:
    """Samples from an OpenAI completions response, in choice order, with token log-probabilities."""
    choices = sorted(response.get("choices", []), key=lambda c: c.get("index", 0))
    if len(choices) != n:
        raise ValueError(f"the server returned {len(choices)} choices for n = {n}")
    samples = []
    for choice in choices:
        logprobs = choice.get("logprobs") or {}
        values = [float(v) for v in (logprobs.get("token_logprobs") or []) if v is not None]
        samples.append(Sample(str(choice.get("text", "")), values))
    return samples


@dataclass
class OpenAIBackend:
    """Generation through an OpenAI-compatible ``/v1/completions`` endpoint.

    ``max_concurrency`` requests are in flight at once (see :meth:`generate_many`); a request that
    fails with a connection error or a retryable status (429, 5xx, ...) is retried up to
    ``retries`` times with exponential backoff and jitter.
    """

    base_url: str
    model: str
    api_key: str | None = None
    max_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    timeout: float = 120.0
    retries: int = 5
    backoff: float = 0.5
    max_concurrency: int = 8
    name: str = "openai"
    requests_made: int = field(default=0, repr=False)

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        url = self.base_url.rstrip("/") + "/v1/completions"
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode()
        for attempt in range(self.retries + 1):
            self.requests_made += 1
            try:
                request = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    result: dict[str, Any] = json.loads(response.read())
                    return result
            except urllib.error.HTTPError as exc:
                if exc.code not in _RETRY_STATUS or attempt == self.retries:
                    raise RuntimeError(f"{url} answered {exc.code}: {exc.read()[:200]!r}") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                if attempt == self.retries:
                    raise RuntimeError(f"{url} unreachable after {self.retries + 1} tries: {exc}") from None
            time.sleep(self.backoff * 2**attempt * (1 + random.random()))
        raise AssertionError("unreachable")

    def generate(self, prompt: Prompt, n: int, seed: int) -> list[Sample]:
        body = completion_request(
            prompt,
            n,
            seed,
            model=self.model,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
        )
        return completion_samples(self._post(body), n)

    def generate_many(self, prompts: Sequence[Prompt], n: int, seeds: Sequence[int]) -> list[list[Sample]]:
        """Several prompts concurrently (at most ``max_concurrency`` requests in flight)."""
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(lambda ps: self.generate(ps[0], n, ps[1]), zip(prompts, seeds, strict=True)))


# ------------------------------------------------------------------------------------ vLLM
def vllm_sampling_kwargs(
    n: int, seed: int, *, max_tokens: int, temperature: float, top_p: float
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for ``n`` samples with token log-probabilities."""
    return {
        "n": n,
        "seed": seed,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "logprobs": 0,
    }


def vllm_samples(output: Any) -> list[Sample]:
    """Samples from one ``vllm.RequestOutput``: each completion's text and the log-probability of
    each generated token (``logprobs`` is a list of {token_id: Logprob} per position)."""
    samples = []
    for completion in sorted(output.outputs, key=lambda c: c.index):
        values = []
        for token_id, position in zip(completion.token_ids, completion.logprobs or [], strict=False):
            entry = position.get(token_id)
            values.append(float(entry.logprob if hasattr(entry, "logprob") else entry))
        samples.append(Sample(str(completion.text), values))
    return samples


@dataclass
class VLLMBackend:
    """In-process vLLM on GPUs (install ``vllm`` yourself; it is not a dependency).

    ``tensor_parallel_size`` / ``pipeline_parallel_size`` split the model over GPUs; with
    ``distributed_executor_backend="ray"`` vLLM spreads them over the machines of a Ray cluster.
    The model is a local folder; ``trust_remote_code`` stays off.
    """

    model: str
    max_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    distributed_executor_backend: str | None = None
    name: str = "vllm"
    _llm: Any = field(default=None, repr=False)

    def model_digest(self) -> str | None:
        """Content hash of the model folder (``None`` for a name vLLM resolves itself)."""
        return folder_digest(self.model) if Path(self.model).is_dir() else None

    def load(self) -> Any:
        if self._llm is None:
            from vllm import LLM

            self._llm = LLM(
                model=self.model,
                trust_remote_code=False,
                tensor_parallel_size=self.tensor_parallel_size,
                pipeline_parallel_size=self.pipeline_parallel_size,
                distributed_executor_backend=self.distributed_executor_backend,
            )
        return self._llm

    def generate(self, prompt: Prompt, n: int, seed: int) -> list[Sample]:
        return self.generate_many([prompt], n, [seed])[0]

    def generate_many(self, prompts: Sequence[Prompt], n: int, seeds: Sequence[int]) -> list[list[Sample]]:
        """All prompts in one ``LLM.generate`` call (vLLM batches them), each with its own seed."""
        from vllm import SamplingParams

        params = [
            SamplingParams(
                **vllm_sampling_kwargs(
                    n, seed, max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p
                )
            )
            for seed in seeds
        ]
        outputs = self.load().generate([p.text for p in prompts], params, use_tqdm=False)
        return [vllm_samples(output) for output in outputs]
