"""The hedged gateway's HTTP layer: an OpenAI-compatible server in front of any OpenAI-compatible
upstream (the routes only; the work is :class:`~hedgetune.gateway.service.HedgeService`'s).

Routes: ``POST /v1/chat/completions`` and ``/v1/completions`` (hedged, or passed through with
``"hedge": false``), ``GET /v1/models``, ``/health``, ``/metrics``. Every error is JSON in OpenAI's
schema ``{"error": {"message", "type", "param", "code"}}`` -- 404 and 405 included, and a bug's 500
-- and ``/metrics`` counts each request under its real status (499: the client left).

Auth: with a ``token`` every route but ``/health`` needs ``Authorization: Bearer <token>``
(``public_metrics`` opens ``/metrics``). ``/v1/models`` is forwarded with the upstream's key only
to an authenticated caller: without a token configured it is forwarded without the key.
``/health`` says whether the upstream answers (503 when it does not) and never shows file paths.

Streaming (``"stream": true``): the selected candidate's text goes out as server-sent chunks once
selection is done; the last chunk carries ``finish_reason``, ``usage`` and ``hedgetune``. A
pass-through stream from an upstream that answers without streaming gets an error, not an empty 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..ensembles import RULES
from ..mechanisms import servable
from ..protocol import ApiError, Deadline, RetryPolicy
from .log import DecisionLog
from .monitor import Histogram, LiveMonitor
from .policy import FALLBACKS, Policy
from .protocol import OVERRIDES, ROUTES, HedgeRequest, parse_hedge, parse_request
from .scoring import EnsembleScorer, Scorer, choice_text, make_scorer
from .service import HedgeService, Limits
from .support import MODES
from .upstream import AiohttpUpstream, HttpxUpstream, RetryingUpstream, Upstream, UpstreamUnreachable

__all__ = ["Limits", "make_app"]

_logger = logging.getLogger("hedgetune.gateway")


@dataclass
class Metrics:
    """Counters and a latency histogram, exposed in Prometheus' text format."""

    requests: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    reload_errors: int = 0
    latency: Histogram = field(
        default_factory=lambda: Histogram((0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))
    )

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests[(route, status)] += 1
        self.latency.add(seconds)

    def render(self, policy: Policy | None, service: HedgeService, monitor: LiveMonitor) -> str:
        lines = ["# TYPE hedgetune_requests_total counter"]
        for (route, status), count in sorted(self.requests.items()):
            lines.append(f'hedgetune_requests_total{{route="{route}",status="{status}"}} {count}')
        lines += [
            "# TYPE hedgetune_candidates_total counter",
            f"hedgetune_candidates_total {service.candidates}",
            "# TYPE hedgetune_upstream_errors_total counter",
            f"hedgetune_upstream_errors_total {service.upstream.errors}",
            "# TYPE hedgetune_policy_reload_errors_total counter",
            f"hedgetune_policy_reload_errors_total {self.reload_errors}",
            *self.latency.render("hedgetune_request_seconds"),
            *monitor.render(),
        ]
        if policy is not None:
            lines += [
                "# TYPE hedgetune_policy_info gauge",
                f'hedgetune_policy_info{{mechanism="{policy.mechanism}",theta="{policy.theta:g}",'
                f'proxy="{policy.proxy}",calibrated="{str(policy.calibration is not None).lower()}"}} 1',
            ]
        return "\n".join(lines) + "\n"


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
    public_metrics: bool = False,
    out_of_support: str | None = None,
    fallback: str | None = None,
    transport: Any = None,
    seed: int | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    log_rotate: int = 64,
    log_seconds: float = 5.0,
) -> Any:
    """The gateway as an ASGI application (Starlette).

    ``upstream`` is the base URL of an OpenAI-compatible server (``http://host:port``, with or
    without ``/v1``); ``api_key`` is sent to it and never logged or relayed; ``token``, if set, is
    the bearer token clients must present. ``policy`` is a :class:`Policy` or the path of a policy
    file, which is then reloaded when it changes (between requests, so none is dropped; a broken
    file keeps the last good policy and counts a reload error). ``reward`` names the proxy
    (default: the policy's); several names make an ensemble combined by ``ensemble`` (mean, min,
    mean-std with ``ensemble_k``). ``out_of_support`` and ``fallback`` override the policy's
    serving mode (:mod:`hedgetune.gateway.support`; default ``exclude`` and ``reference``).
    ``transport``, an ``httpx`` transport, replaces the aiohttp client to the upstream (tests
    script an upstream with ``httpx.MockTransport``). ``log_dir`` appends every decision to
    Parquet shards there, flushed every ``log_rotate`` requests or ``log_seconds``.
    """
    limits = limits or Limits()
    for value, allowed, what in ((out_of_support, MODES, "out_of_support"), (fallback, FALLBACKS, "fallback"),
                                 (limits.allow_override, OVERRIDES, "allow_override")):
        if value is not None and value not in allowed:
            raise ValueError(f"{what} must be one of {allowed}, got {value!r}")
    base = upstream.rstrip("/")
    base = base[:-3] if base.endswith("/v1") else base
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    client: Upstream = AiohttpUpstream(base, headers) if transport is None else HttpxUpstream(base, headers, transport)
    gateway = Gateway(
        client=client,
        state=_PolicyState(policy, reward, ensemble, ensemble_k),
        limits=limits,
        secrets=(api_key, token),
        token=token,
        public_metrics=public_metrics,
        out_of_support=out_of_support,
        fallback=fallback,
        rng=np.random.default_rng(seed),
        log=None if log_dir is None else DecisionLog(log_dir, log_rotate, log_seconds),
    )
    return gateway.asgi()


class Gateway:
    """The routes over one :class:`HedgeService`; :meth:`asgi` is the Starlette application."""

    def __init__(self, client: Upstream, state: _PolicyState, limits: Limits, secrets: tuple[str | None, ...],
                 token: str | None, public_metrics: bool, out_of_support: str | None, fallback: str | None,
                 rng: np.random.Generator, log: DecisionLog | None) -> None:
        self.client, self.state, self.limits, self.token = client, state, limits, token
        self.public_metrics, self.out_of_support, self.fallback, self.log = public_metrics, out_of_support, fallback, log
        self.metrics, self.monitor = Metrics(), LiveMonitor()
        self.upstream = RetryingUpstream(client, RetryPolicy(limits.retries, limits.backoff_s), secrets)
        self.service = HedgeService(self.upstream, limits, rng, log, self.monitor)
        self.slots = asyncio.Semaphore(limits.max_concurrency)
        self.waiting = 0
        self.health_checked, self.upstream_ok = -1e9, False

    # ------------------------------------------------------------------ helpers
    def authorise(self, request: Any) -> None:
        if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
            raise ApiError(401, "missing or wrong bearer token")

    @staticmethod
    def error(exc: ApiError) -> Any:
        from starlette.responses import JSONResponse

        extra = {"Retry-After": "1"} if exc.status == 429 else None
        return JSONResponse(exc.to_dict(), status_code=exc.status, headers=extra)

    def guarded(self, handler: Any, route: str) -> Any:
        """``handler`` answering every error as JSON and counted under its real status."""

        async def endpoint(request: Any) -> Any:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status_code
                return response
            except ApiError as exc:
                status = exc.status
                return self.error(exc)
            except Exception:  # a bug: logged here, a JSON 500 to the client, never a traceback
                _logger.exception("unhandled error on %s", route)
                return self.error(ApiError(500, "internal error in the gateway"))
            finally:
                self.metrics.observe(route, status, time.perf_counter() - started)

        return endpoint

    # ------------------------------------------------------------------ completions
    async def completions(self, request: Any, kind: str) -> Any:
        self.authorise(request)
        limits = self.limits
        if self.slots.locked() and self.waiting >= limits.max_queue:  # no free slot and the queue is full
            raise ApiError(429, "the gateway is at capacity; retry shortly")
        deadline = Deadline(limits.deadline_s)
        raw = await _read_body(request, limits.max_body_bytes)
        parsed = parse_request(kind, raw, limits.max_body_bytes, limits.max_candidates, limits.max_tokens)
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        try:
            work = asyncio.ensure_future(self.answer(parsed, deadline))
            while True:  # the client may leave: then the work is cancelled, not finished for nobody
                done, _ = await asyncio.wait({work}, timeout=0.2)
                if done:
                    return work.result()
                if await request.is_disconnected():
                    work.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await work
                    raise ApiError(499, "the client closed the request")
        finally:
            self.slots.release()

    async def answer(self, request: HedgeRequest, deadline: Deadline) -> Any:
        from starlette.responses import JSONResponse, StreamingResponse

        state, limits = self.state, self.limits
        if request.hedge is False:
            if limits.allow_override == "none":
                raise ApiError(403, "this gateway serves its policy only: requests may not set \"hedge\"", param="hedge")
            return await self.passthrough(request, deadline)
        state.refresh(self.metrics)
        if request.hedge is None:
            mechanism = state.served
            if mechanism is None:
                raise ApiError(400, 'no policy is loaded: pass "hedge": {...} or start with --policy', param="hedge")
        else:
            mechanism = parse_hedge(request.hedge, state.served, limits.allow_override, limits.max_candidates)
        current = state.policy
        mode = self.out_of_support or (current.out_of_support if current and current.out_of_support else limits.out_of_support)
        backup = self.fallback or (current.fallback if current and current.fallback else limits.fallback)
        result = await self.service.serve(request, mechanism, state.scorer, state.calibration, mode, backup, deadline)
        if request.stream:
            return StreamingResponse(_events(request.kind, result), media_type="text/event-stream")
        return JSONResponse(result)

    async def passthrough(self, request: HedgeRequest, deadline: Deadline) -> Any:
        from starlette.responses import JSONResponse, StreamingResponse

        body = dict(request.body)
        if not request.stream:
            return JSONResponse(await self.upstream.call(request.route, body, deadline))
        try:
            status, kind, chunks = await self.client.stream(request.route, {**body, "stream": True}, deadline.remaining())
        except UpstreamUnreachable as exc:
            self.upstream.errors += 1
            raise ApiError(502, f"the upstream failed: {exc}") from None
        if status != 200 or not kind.startswith("text/event-stream"):
            content = b"".join([c async for c in chunks])
            self.upstream.errors += 1
            what = "refused the stream" if status >= 400 else "answered a streaming request without streaming"
            text = self.upstream.clean(content.decode("utf-8", "replace"))
            raise ApiError(status if 400 <= status < 500 else 502, f"the upstream {what} (HTTP {status}): {text}")
        return StreamingResponse(chunks, status_code=200, media_type="text/event-stream")

    # ------------------------------------------------------------------ the other routes
    async def models(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        self.authorise(request)
        try:
            timeout = min(10.0, self.limits.deadline_s)
            status, content = await self.client.get("/v1/models", timeout, authorised=self.token is not None)
            data = json.loads(content)
        except (UpstreamUnreachable, ValueError):
            self.upstream.errors += 1
            raise ApiError(502, "the upstream's model list is unavailable") from None
        if status >= 400 or not isinstance(data, dict):
            raise ApiError(502, f"the upstream's model list is unavailable (HTTP {status})")
        return JSONResponse(data)

    async def health(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        now = time.monotonic()
        if now - self.health_checked > 5.0:  # the upstream is asked at most every 5 s
            try:
                status, _ = await self.client.get("/v1/models", 2.0)
                self.upstream_ok = status < 500
            except UpstreamUnreachable:
                self.upstream_ok = False
            self.health_checked = now
        current, ok = self.state.policy, self.upstream_ok
        body = {"status": "ok" if ok else "degraded", "upstream": "reachable" if ok else "unreachable",
                "policy": None if current is None else current.public_dict()}
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics_page(self, request: Any) -> Any:
        from starlette.responses import PlainTextResponse

        if not self.public_metrics:
            self.authorise(request)
        text = self.metrics.render(self.state.policy, self.service, self.monitor)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def unrouted(self, request: Any, exc: Exception) -> Any:
        from starlette.exceptions import HTTPException

        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        self.metrics.observe("other", status, 0.0)
        return self.error(ApiError(status, message.get(status, "request failed")))

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        log = self.log

        async def flush_periodically() -> None:
            while log is not None:
                await asyncio.sleep(min(1.0, log.flush_seconds / 2))
                if log.due():
                    await asyncio.to_thread(log.flush)

        flusher = asyncio.ensure_future(flush_periodically())
        try:
            yield
        finally:
            flusher.cancel()
            await self.client.close()
            if log is not None:
                log.flush()

    def asgi(self) -> Any:
        from starlette.applications import Starlette
        from starlette.routing import Route

        chat, legacy = ROUTES["chat"], ROUTES["completions"]
        routes = [
            Route(chat, self.guarded(lambda r: self.completions(r, "chat"), chat), methods=["POST"]),
            Route(legacy, self.guarded(lambda r: self.completions(r, "completions"), legacy), methods=["POST"]),
            Route("/v1/models", self.guarded(self.models, "/v1/models"), methods=["GET"]),
            Route("/health", self.guarded(self.health, "/health"), methods=["GET"]),
            Route("/metrics", self.guarded(self.metrics_page, "/metrics"), methods=["GET"]),
        ]
        handlers = {404: self.unrouted, 405: self.unrouted, 500: self.unrouted}
        app = Starlette(routes=routes, exception_handlers=handlers, lifespan=self.lifespan)
        app.state.metrics, app.state.service, app.state.log = self.metrics, self.service, self.log
        return app


class _PolicyState:
    """The policy being served, its mechanism, scorer and calibration; reloaded from its file when
    it changes."""

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
            servable(served)
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
        # The calibration describes the policy's own proxy: another scorer's scores cannot be placed in it.
        calibration = None if policy is None or scorer.name != policy.proxy else policy.calibration
        self.policy, self.served, self.scorer, self.calibration = policy, served, scorer, calibration

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


async def _read_body(request: Any, max_bytes: int) -> bytes:
    size = request.headers.get("content-length")
    if size is not None and (not size.isdigit() or int(size) > max_bytes):
        raise ApiError(413, f"the body exceeds {max_bytes} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise ApiError(413, f"the body exceeds {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _split(text: str, size: int = 24) -> list[str]:
    """The text in pieces of about ``size`` characters, cut after white space where possible."""
    pieces, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            space = text.rfind(" ", start + 1, end + 1)
            end = space + 1 if space > start else end
        pieces.append(text[start:end])
        start = end
    return pieces or [""]


async def _events(kind: str, result: dict[str, Any]) -> AsyncIterator[str]:
    """The selected response as server-sent events: a chunk per piece of text, then a last chunk
    with ``finish_reason``, ``usage`` and ``hedgetune``, then ``[DONE]``."""
    choice = result["choices"][0]
    head = {k: v for k, v in result.items() if k not in ("choices", "usage", "hedgetune")}
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    for k, piece in enumerate(_split(choice_text(choice))):
        if kind == "chat":
            delta: dict[str, Any] = {"content": piece} if k else {"role": "assistant", "content": piece}
            part: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
        else:
            part = {"index": 0, "text": piece, "finish_reason": None}
        yield f"data: {json.dumps({**head, 'object': obj, 'choices': [part]})}\n\n"
    last: dict[str, Any] = {"index": 0, "finish_reason": choice.get("finish_reason") or "stop"}
    if kind == "chat":
        last["delta"] = {}
    else:
        last["text"] = ""
    final = {**head, "object": obj, "choices": [last], "usage": result["usage"], "hedgetune": result["hedgetune"]}
    yield f"data: {json.dumps(final)}\n\n"
    yield "data: [DONE]\n\n"
