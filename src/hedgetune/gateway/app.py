"""The hedged gateway: an OpenAI-compatible server in front of any OpenAI-compatible upstream.

For each hedged request it draws the number of candidates from the policy's mechanism (Best-of-n:
n; Best-of-Poisson: 1 + Poisson(mu); Soft Best-of-n: n), gets them from the upstream (one request
with ``n``, the rest concurrently when the upstream returns fewer), scores them with the policy's
proxy, selects with the mechanism's own :meth:`~hedgetune.Mechanism.select`, and answers with the
chosen candidate as ``choices[0]``, ``usage`` summed over every candidate and the decision under
``hedgetune``. ``"hedge": false`` in the body passes the request through; ``"hedge": {...}``
overrides the policy. Streaming requests are answered after selection, as one buffered event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..ensembles import RULES
from ..mechanisms import Mechanism, SetRule, lookup, make
from ..mechanisms.registry import option_names
from .log import DecisionLog
from .policy import Policy
from .requests import RequestError, check_body, parse_body
from .scoring import EnsembleScorer, Scorer, choice_logprobs, choice_text, make_scorer
from .upstream import AiohttpUpstream, HttpxUpstream, Upstream, UpstreamUnreachable

ROUTES = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


@dataclass
class Limits:
    """Request limits and upstream behaviour (all configurable from the command line)."""

    max_body_bytes: int = 1 << 20
    max_candidates: int = 64
    max_tokens: int = 8192
    max_concurrency: int = 32
    max_queue: int = 256
    timeout_s: float = 120.0
    retries: int = 2
    backoff_s: float = 0.2


@dataclass
class Metrics:
    """Counters and a latency histogram, exposed in Prometheus' text format."""

    requests: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    candidates: int = 0
    upstream_errors: int = 0
    reload_errors: int = 0
    buckets: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
    latency_counts: list[int] = field(default_factory=list)
    latency_sum: float = 0.0
    latency_total: int = 0

    def __post_init__(self) -> None:
        self.latency_counts = [0] * len(self.buckets)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests[(route, status)] += 1
        self.latency_sum += seconds
        self.latency_total += 1
        for i, edge in enumerate(self.buckets):
            if seconds <= edge:
                self.latency_counts[i] += 1

    def render(self, policy: Policy | None) -> str:
        lines = ["# TYPE hedgetune_requests_total counter"]
        for (route, status), count in sorted(self.requests.items()):
            lines.append(f'hedgetune_requests_total{{route="{route}",status="{status}"}} {count}')
        lines += [
            "# TYPE hedgetune_candidates_total counter",
            f"hedgetune_candidates_total {self.candidates}",
            "# TYPE hedgetune_upstream_errors_total counter",
            f"hedgetune_upstream_errors_total {self.upstream_errors}",
            "# TYPE hedgetune_policy_reload_errors_total counter",
            f"hedgetune_policy_reload_errors_total {self.reload_errors}",
            "# TYPE hedgetune_request_seconds histogram",
        ]
        for edge, count in zip(self.buckets, self.latency_counts, strict=True):
            lines.append(f'hedgetune_request_seconds_bucket{{le="{edge}"}} {count}')
        lines += [
            f'hedgetune_request_seconds_bucket{{le="+Inf"}} {self.latency_total}',
            f"hedgetune_request_seconds_sum {self.latency_sum:.6f}",
            f"hedgetune_request_seconds_count {self.latency_total}",
        ]
        if policy is not None:
            lines += [
                "# TYPE hedgetune_policy_info gauge",
                f'hedgetune_policy_info{{mechanism="{policy.mechanism}",theta="{policy.theta:g}",'
                f'proxy="{policy.proxy}"}} 1',
            ]
        return "\n".join(lines) + "\n"


class GatewayError(Exception):
    """An error answered in OpenAI's format: ``{"error": {"message", "type", "code"}}``."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def make_app(
    upstream: str,
    policy: Policy | str | os.PathLike[str] | None = None,
    reward: str | Sequence[str] | None = None,
    *,
    ensemble: str | None = None,
    ensemble_k: float = 1.0,
    limits: Limits | None = None,
    api_key: str | None = None,
    token: str | None = None,
    transport: Any = None,
    seed: int | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    log_rotate: int = 256,
) -> Any:
    """The gateway as an ASGI application (Starlette).

    ``upstream`` is the base URL of an OpenAI-compatible server (``http://host:port``, with or
    without ``/v1``); ``api_key`` is sent to it and never logged; ``token``, if set, is the bearer
    token clients must present. ``policy`` is a :class:`Policy` or the path of a policy file, which
    is then reloaded when it changes (between requests, so none is dropped; a broken file keeps the
    last good policy and counts a reload error). ``reward`` names the proxy (default: the policy's,
    an ensemble included); several names make an ensemble combined by ``ensemble`` (mean, min,
    mean-std with ``ensemble_k``), standardised as the policy's recipe says when its members are
    the same, else across each request's candidates (:class:`~.scoring.EnsembleScorer`). ``transport``, an ``httpx`` transport, replaces the aiohttp client to
    the upstream (tests script an upstream with ``httpx.MockTransport``).
    ``log_dir`` appends every decision to Parquet shards there (:mod:`hedgetune.gateway.log`).
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    limits = limits or Limits()
    base = upstream.rstrip("/")
    base = base[:-3] if base.endswith("/v1") else base
    metrics = Metrics()
    state = _PolicyState(policy, reward, ensemble, ensemble_k)
    # Whether the upstream was seen to return fewer choices than the n it was asked for (as
    # `transformers serve` does): then the candidates are requested one by one, concurrently.
    upstream_ignores_n = {kind: False for kind in ROUTES}
    log = None if log_dir is None else DecisionLog(log_dir, log_rotate)
    rng = np.random.default_rng(seed)
    slots = asyncio.Semaphore(limits.max_concurrency)
    waiting = 0
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    client: Upstream = (
        AiohttpUpstream(base, headers, limits.timeout_s)
        if transport is None
        else HttpxUpstream(base, headers, limits.timeout_s, transport)
    )

    def error_response(exc: GatewayError) -> JSONResponse:
        body = {"error": {"message": exc.message, "type": exc.kind, "code": exc.status}}
        extra = {"Retry-After": "1"} if exc.status == 429 else None
        return JSONResponse(body, status_code=exc.status, headers=extra)

    async def call_upstream(path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One upstream call with retries on 429, 5xx and connection errors."""
        last = "no attempt"
        for attempt in range(limits.retries + 1):
            if attempt:
                await asyncio.sleep(limits.backoff_s * 2 ** (attempt - 1))
            try:
                status, content = await client.post(path, body)
            except UpstreamUnreachable as exc:
                metrics.upstream_errors += 1
                last = str(exc)
                continue
            if status == 429 or status >= 500:
                metrics.upstream_errors += 1
                last = f"HTTP {status}"
                continue
            text = content.decode("utf-8", "replace")
            if status >= 400:  # the client's mistake: report it, do not retry
                raise GatewayError(status, f"the upstream refused the request: {_excerpt(text)}")
            try:
                data = json.loads(text)
            except ValueError:
                metrics.upstream_errors += 1
                last = "malformed JSON"
                continue
            if isinstance(data, dict) and isinstance(data.get("choices"), list):
                return data
            metrics.upstream_errors += 1
            last = "a reply without choices"
        raise GatewayError(502, f"the upstream failed: {last}", "upstream_error")

    async def candidates(
        kind: str, body: dict[str, Any], count: int
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, str]:
        """``count`` candidates: one request with ``n``, the rest filled concurrently with n = 1;
        also how many calls failed and the last failure."""
        path = ROUTES[kind]
        replies: list[dict[str, Any]] = []
        failed, reason = 0, ""
        if count > 1 and upstream_ignores_n[kind]:
            got = 0  # learnt from an earlier reply: ask for every candidate at once, concurrently
        else:
            try:
                replies.append(await call_upstream(path, {**body, "n": count}))
            except GatewayError as exc:
                if exc.status != 502:
                    raise
                failed, reason = failed + 1, exc.message
            got = sum(len(r["choices"]) for r in replies)
            if replies and count > 1 and got < count:
                upstream_ignores_n[kind] = True
        if got < count:
            missing = count - got
            results = await asyncio.gather(
                *(call_upstream(path, {**body, "n": 1}) for _ in range(missing)), return_exceptions=True
            )
            for result in results:
                if isinstance(result, dict):
                    replies.append(result)
                elif isinstance(result, GatewayError) and result.status == 502:
                    failed, reason = failed + 1, result.message
                elif isinstance(result, BaseException):
                    raise result
        choices = [c for r in replies for c in r["choices"] if isinstance(c, dict)][:count]
        return replies, choices, failed, reason

    async def hedged(kind: str, body: dict[str, Any], mechanism: Mechanism) -> dict[str, Any]:
        count = int(mechanism.draw_n(1, rng)[0])
        capped = count > limits.max_candidates
        count = min(count, limits.max_candidates)
        upstream_body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        scorer = state.scorer
        if scorer.needs_logprobs:
            upstream_body["logprobs"] = True if kind == "chat" else max(1, int(body.get("logprobs") or 1))
        replies, choices, failed, reason = await candidates(kind, upstream_body, count)
        if not choices:
            raise GatewayError(502, f"no candidate arrived from the upstream ({reason})", "upstream_error")
        metrics.candidates += len(choices)
        texts = [choice_text(c) for c in choices]
        logprobs = [choice_logprobs(c) for c in choices]
        from starlette.concurrency import run_in_threadpool

        try:
            scores = await run_in_threadpool(scorer.score, _prompt_text(kind, body), texts, logprobs)
        except ValueError as exc:
            raise GatewayError(500, f"scoring failed: {exc}", "server_error") from None
        chosen = int(mechanism.select(scores[None, :], rng=rng)[0])
        out = dict(replies[0])
        out["choices"] = [{**choices[chosen], "index": 0}]
        out["usage"] = _summed_usage(replies)
        out["hedgetune"] = {
            "mechanism": mechanism.name,
            "theta": mechanism.theta,
            "options": mechanism.options,
            "proxy": scorer.name,
            "candidates": len(choices),
            "requested": count,
            "failed": failed,
            "capped": capped,
            "scores": scores.tolist(),
            "chosen": chosen,
        }
        if log is not None:
            out["hedgetune"]["request_id"] = log.add(
                ROUTES[kind], _prompt_text(kind, body), texts, scores.tolist(), chosen, out["hedgetune"]
            )
        return out

    async def completions(request: Request, kind: str) -> Response:
        nonlocal waiting
        started = time.perf_counter()
        status = 200
        try:
            if token is not None and request.headers.get("authorization") != f"Bearer {token}":
                raise GatewayError(401, "missing or wrong bearer token", "authentication_error")
            if slots.locked() and waiting >= limits.max_queue:  # no free slot and the queue is full
                raise GatewayError(429, "the gateway is at capacity; retry shortly", "rate_limit_error")
            waiting += 1
            try:
                await slots.acquire()
            finally:
                waiting -= 1
            try:
                return await answer(kind, await _read_body(request, limits))
            finally:
                slots.release()
        except GatewayError as exc:
            status = exc.status
            return error_response(exc)
        finally:
            metrics.observe(ROUTES[kind], status, time.perf_counter() - started)

    async def answer(kind: str, body: dict[str, Any]) -> Response:
        hedge = body.pop("hedge", None)
        stream = bool(body.get("stream", False))
        if hedge is False:
            return await passthrough(kind, body, stream)
        state.refresh(metrics)
        mechanism = state.served if hedge is None else _override(hedge)
        if mechanism is None:
            raise GatewayError(400, "no policy is loaded: pass \"hedge\": {...} or start with --policy")
        if body.get("n", 1) != 1:
            raise GatewayError(400, "a hedged request returns one selected response: leave n at 1")
        result = await hedged(kind, body, mechanism)
        if stream:
            return StreamingResponse(_buffered_events(kind, result), media_type="text/event-stream")
        return JSONResponse(result)

    async def passthrough(kind: str, body: dict[str, Any], stream: bool) -> Response:
        if not stream:
            return JSONResponse(await call_upstream(ROUTES[kind], body))
        try:
            status, chunks = await client.stream(ROUTES[kind], body)
        except UpstreamUnreachable as exc:
            metrics.upstream_errors += 1
            raise GatewayError(502, f"the upstream failed: {exc}", "upstream_error") from None
        return StreamingResponse(chunks, status_code=status, media_type="text/event-stream")

    async def models(request: Request) -> Response:
        try:
            status, content = await client.get("/v1/models")
            return JSONResponse(json.loads(content), status_code=status)
        except (UpstreamUnreachable, ValueError):
            metrics.upstream_errors += 1
            return error_response(GatewayError(502, "the upstream's model list is unavailable", "upstream_error"))

    async def health(request: Request) -> Response:
        current = state.policy
        return JSONResponse({"status": "ok", "policy": None if current is None else current.to_dict()})

    async def metrics_page(request: Request) -> Response:
        return PlainTextResponse(metrics.render(state.policy), media_type="text/plain; version=0.0.4")

    async def chat(request: Request) -> Response:
        return await completions(request, "chat")

    async def legacy(request: Request) -> Response:
        return await completions(request, "completions")

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        yield
        await client.close()
        if log is not None:
            log.flush()

    app = Starlette(
        routes=[
            Route(ROUTES["chat"], chat, methods=["POST"]),
            Route(ROUTES["completions"], legacy, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    return app


class _PolicyState:
    """The policy being served, its mechanism and scorer; reloaded from its file when it changes."""

    def __init__(
        self,
        policy: Policy | str | os.PathLike[str] | None,
        reward: str | Sequence[str] | None,
        ensemble: str | None = None,
        ensemble_k: float = 1.0,
    ) -> None:
        self.path = None if policy is None or isinstance(policy, Policy) else Path(policy)
        self.rewards = (reward,) if isinstance(reward, str) else tuple(reward or ())
        self.ensemble, self.ensemble_k = ensemble, ensemble_k
        if len(set(self.rewards)) < len(self.rewards):
            raise ValueError(f"each reward may be named once, got {list(self.rewards)}")
        if ensemble is not None and len(self.rewards) < 2:
            raise ValueError("an ensemble rule needs at least two rewards")
        if ensemble is not None and ensemble not in RULES:
            raise ValueError(f"the ensemble rule must be one of {RULES}, got {ensemble!r}")
        self.stamp: tuple[int, int] | None = None
        loaded = Policy.load(self.path) if self.path is not None else policy
        assert loaded is None or isinstance(loaded, Policy)
        self._install(loaded)
        if self.path is not None:
            self.stamp = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self.path)  # type: ignore[arg-type]
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size

    def _install(self, policy: Policy | None) -> None:
        served = None if policy is None else policy.mechanism_at_theta()
        if served is not None:
            _check_servable(served)
        recipe = None if policy is None else policy.ensemble
        if len(self.rewards) == 1:
            scorer: Scorer | EnsembleScorer = Scorer(self.rewards[0])
        elif self.rewards and recipe and list(recipe.get("ensemble", ())) == list(self.rewards) and self.ensemble is None:
            scorer = make_scorer(policy.proxy, recipe)  # type: ignore[union-attr]
        elif self.rewards:
            members = tuple(Scorer(name) for name in self.rewards)
            scorer = EnsembleScorer(members, self.ensemble or "mean", self.ensemble_k)
        elif policy is not None:
            scorer = make_scorer(policy.proxy, policy.ensemble)
        else:
            scorer = Scorer("length")
        self.policy, self.served, self.scorer = policy, served, scorer

    def refresh(self, metrics: Metrics) -> None:
        """Reload the policy file if it changed since it was last read."""
        if self.path is None:
            return
        stamp = self._stat()
        if stamp is None or stamp == self.stamp:
            return
        self.stamp = stamp
        try:
            self._install(Policy.load(self.path))
        except ValueError:
            metrics.reload_errors += 1  # keep serving the last good policy


def _check_servable(mechanism: Mechanism) -> None:
    if not mechanism.deployable:
        raise ValueError(f"{mechanism.display_name} is a frontier, not a sampler: it cannot be served")
    if isinstance(mechanism, SetRule) and mechanism.extras():
        raise ValueError(
            f"{mechanism.display_name} needs {list(mechanism.extras())} for each candidate, which the gateway "
            "does not compute: serve bon, bop, sbon or itp"
        )
    if mechanism.options.get("on") == "quantile":
        raise ValueError("the gateway scores raw proxies: serve Soft Best-of-n with on='raw'")


def _override(hedge: Any) -> Mechanism:
    """A mechanism from the request's ``"hedge"`` object: ``{"mechanism": "bon", "n": 4}``,
    ``{"mechanism": "bop", "mu": 3}``, ``{"mechanism": "sbon", "n": 8, "beta": 2}`` (the tuned
    parameter by its name or as ``"theta"``, and the mechanism's options)."""
    if not isinstance(hedge, dict) or not isinstance(hedge.get("mechanism"), str):
        raise GatewayError(400, '"hedge" must be false or an object with a "mechanism" name')
    try:
        cls = lookup(hedge["mechanism"])
        options = {k: hedge[k] for k in option_names(cls) if k in hedge}
        template = make(cls.name, **options)
        names = {"mechanism", "theta", *options} | ({template.parameter} - set(options))
        unknown = sorted(set(hedge) - names)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}")
        theta = hedge.get("theta", hedge.get(template.parameter) if template.parameter not in options else None)
        if not isinstance(theta, int | float) or isinstance(theta, bool):
            raise ValueError(f"give the {template.parameter} (or theta) as a number")
        mechanism = template.with_theta(float(theta))
        _check_servable(mechanism)
    except (TypeError, ValueError) as exc:
        raise GatewayError(400, f'bad "hedge": {exc}') from None
    return mechanism


async def _read_body(request: Any, limits: Limits) -> dict[str, Any]:
    size = request.headers.get("content-length")
    if size is not None and (not size.isdigit() or int(size) > limits.max_body_bytes):
        raise GatewayError(413, f"the body exceeds {limits.max_body_bytes} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limits.max_body_bytes:
            raise GatewayError(413, f"the body exceeds {limits.max_body_bytes} bytes")
    try:
        body = parse_body(raw, limits.max_body_bytes)
        check_body(body, limits.max_candidates, limits.max_tokens)
    except RequestError as exc:
        raise GatewayError(exc.status, exc.message) from None
    return body


def _prompt_text(kind: str, body: dict[str, Any]) -> str:
    if kind == "completions":
        prompt = body.get("prompt")
        return prompt if isinstance(prompt, str) else json.dumps(prompt)
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str):
                return message["content"]
    return ""


def _summed_usage(replies: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for reply in replies:
        usage = reply.get("usage")
        if isinstance(usage, dict):
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                value = usage.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    total[key] += value
    return dict(total)


async def _buffered_events(kind: str, result: dict[str, Any]) -> Any:
    """The selected response as server-sent events: one chunk with everything, then ``[DONE]``."""
    choice = result["choices"][0]
    if kind == "chat":
        delta = {"role": "assistant", "content": choice_text(choice)}
        chunk_choice = {"index": 0, "delta": delta, "finish_reason": choice.get("finish_reason")}
        obj = "chat.completion.chunk"
    else:
        chunk_choice = {"index": 0, "text": choice_text(choice), "finish_reason": choice.get("finish_reason")}
        obj = "text_completion"
    chunk = {**{k: v for k, v in result.items() if k != "choices"}, "object": obj, "choices": [chunk_choice]}
    yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"


def _excerpt(text: str, limit: int = 200) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 3] + "..."
