"""The gateway's HTTP client to its upstream: one small interface, two implementations.

:class:`AiohttpUpstream` is what the gateway uses. It is aiohttp rather than httpx because a
hedged request fans out to many concurrent calls, and there the client's CPU per call decides the
latency: on 2 cores, eight concurrent calls to a 20 ms upstream took 1.1x one call with aiohttp
and 1.6-1.9x with httpx (``benchmarks/bench_gateway.py``). :class:`HttpxUpstream` runs over an
``httpx`` transport, so tests can script an upstream with ``httpx.MockTransport``.

Both raise :class:`UpstreamUnreachable` for connection errors and timeouts, and return the status
and body of every reply that arrived, whatever its status. :class:`RetryingUpstream` wraps either
with the project's one :class:`~hedgetune.protocol.RetryPolicy`, inside a whole-request
:class:`~hedgetune.protocol.Deadline`: each attempt gets only the time left, and no retry starts
after it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

from ..protocol import ApiError, Deadline, RetryPolicy, redact


class UpstreamUnreachable(Exception):
    """No reply: the connection failed, was closed or timed out (the message names which)."""


class Upstream(Protocol):
    async def post(self, path: str, body: dict[str, Any], timeout: float) -> tuple[int, bytes]: ...

    async def get(self, path: str, timeout: float, authorised: bool = True) -> tuple[int, bytes]: ...

    async def stream(
        self, path: str, body: dict[str, Any], timeout: float
    ) -> tuple[int, str, AsyncIterator[bytes]]: ...

    async def close(self) -> None: ...


class AiohttpUpstream:
    """An aiohttp session to ``base`` + path (created on first use, in the server's event loop)."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base, self.headers = base, headers
        self._session: Any = None

    def _open(self) -> Any:
        import aiohttp

        if self._session is None:
            # No connection cap here: the gateway's own concurrency limit and candidate cap bound it.
            self._session = aiohttp.ClientSession(headers=self.headers, connector=aiohttp.TCPConnector(limit=0))
        return self._session

    async def post(self, path: str, body: dict[str, Any], timeout: float) -> tuple[int, bytes]:
        import aiohttp

        try:
            limit = aiohttp.ClientTimeout(total=timeout)
            async with self._open().post(self.base + path, json=body, timeout=limit) as reply:
                return reply.status, await reply.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamUnreachable(_describe(exc)) from None

    async def get(self, path: str, timeout: float, authorised: bool = True) -> tuple[int, bytes]:
        import aiohttp

        limit = aiohttp.ClientTimeout(total=timeout)
        try:
            if not authorised:  # a session of its own, without the upstream's key
                async with aiohttp.ClientSession(timeout=limit) as bare, bare.get(self.base + path) as reply:
                    return reply.status, await reply.read()
            async with self._open().get(self.base + path, timeout=limit) as reply:
                return reply.status, await reply.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamUnreachable(_describe(exc)) from None

    async def stream(self, path: str, body: dict[str, Any], timeout: float) -> tuple[int, str, AsyncIterator[bytes]]:
        import aiohttp

        try:
            limit = aiohttp.ClientTimeout(total=timeout)
            reply = await self._open().post(self.base + path, json=body, timeout=limit)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamUnreachable(_describe(exc)) from None

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in reply.content.iter_any():
                    yield chunk
            finally:
                reply.release()

        return reply.status, reply.headers.get("content-type", ""), chunks()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpxUpstream:
    """An ``httpx.AsyncClient`` over ``transport`` (tests script an upstream with it)."""

    def __init__(self, base: str, headers: dict[str, str], transport: Any) -> None:
        import httpx

        self._client = httpx.AsyncClient(base_url=base, headers=headers, transport=transport)

    async def post(self, path: str, body: dict[str, Any], timeout: float) -> tuple[int, bytes]:
        import httpx

        try:
            reply = await asyncio.wait_for(self._client.post(path, json=body, timeout=timeout), timeout)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise UpstreamUnreachable(_describe(exc)) from None
        return reply.status_code, reply.content

    async def get(self, path: str, timeout: float, authorised: bool = True) -> tuple[int, bytes]:
        import httpx

        try:
            request = self._client.build_request("GET", path, timeout=timeout)
            if not authorised:
                request.headers.pop("Authorization", None)
            reply = await asyncio.wait_for(self._client.send(request), timeout)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise UpstreamUnreachable(_describe(exc)) from None
        return reply.status_code, reply.content

    async def stream(self, path: str, body: dict[str, Any], timeout: float) -> tuple[int, str, AsyncIterator[bytes]]:
        import httpx

        try:
            request = self._client.build_request("POST", path, json=body, timeout=timeout)
            reply = await asyncio.wait_for(self._client.send(request, stream=True), timeout)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise UpstreamUnreachable(_describe(exc)) from None

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in reply.aiter_bytes():
                    yield chunk
            finally:
                await reply.aclose()

        return reply.status_code, reply.headers.get("content-type", ""), chunks()

    async def close(self) -> None:
        await self._client.aclose()


class RetryingUpstream:
    """Upstream calls with the retry policy inside a deadline; replies checked and parsed.

    A reply is used only when it is a JSON object with a ``choices`` list and no NaN or infinity
    anywhere (Python's ``json`` would accept them; OpenAI's protocol has none). Errors the client
    sees are :class:`~hedgetune.protocol.ApiError` with any credential redacted.
    """

    def __init__(self, client: Upstream, retry: RetryPolicy, secrets: tuple[str | None, ...] = ()) -> None:
        self.client, self.retry, self.secrets = client, retry, secrets
        self.errors = 0

    async def call(self, path: str, body: dict[str, Any], deadline: Deadline) -> dict[str, Any]:
        """One completion call, retried on 429, 5xx, timeouts and connection errors while the
        deadline allows; a 4xx is relayed (redacted) as the client's mistake."""
        last = "no attempt"
        for attempt in range(self.retry.attempts):
            wait = self.retry.delay(attempt)
            if attempt and wait >= deadline.remaining():
                break
            await asyncio.sleep(wait)
            try:
                status, content = await self.client.post(path, body, deadline.remaining())
            except UpstreamUnreachable as exc:
                self.errors += 1
                last = str(exc)
                if deadline.expired:
                    raise ApiError(504, f"the request's deadline of {deadline.seconds:g} s passed ({last})") from None
                continue
            if self.retry.retryable(status):
                self.errors += 1
                last = f"HTTP {status}"
                continue
            text = content.decode("utf-8", "replace")
            if status >= 400:  # the client's mistake: report it, do not retry
                raise ApiError(status if status in (400, 401, 403, 404, 413, 422) else 502,
                               f"the upstream refused the request: {self.clean(text)}")
            data = _strict_json(text)
            if isinstance(data, dict) and isinstance(data.get("choices"), list):
                return data
            self.errors += 1
            last = "malformed JSON" if data is None else "a reply without choices"
        if deadline.expired:
            raise ApiError(504, f"the request's deadline of {deadline.seconds:g} s passed ({last})")
        raise ApiError(502, f"the upstream failed: {last}")

    def clean(self, text: str) -> str:
        """An excerpt of upstream text, safe to relay: credentials redacted, 200 characters."""
        return redact(_excerpt(redact(text, self.secrets)), self.secrets)


def _strict_json(text: str) -> Any:
    """The JSON value of ``text``, or ``None`` if it is not JSON or holds NaN or infinities."""

    def refuse(constant: str) -> Any:
        raise ValueError(constant)

    try:
        return json.loads(text, parse_constant=refuse)
    except (ValueError, RecursionError):
        return None


def _excerpt(text: str, limit: int = 200) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


def _describe(exc: BaseException) -> str:
    """The failure's kind, never its details (they may carry URLs with credentials)."""
    return "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
