"""The gateway's HTTP client to its upstream: one small interface, two implementations.

:class:`AiohttpUpstream` is what the gateway uses. It is aiohttp rather than httpx because a
hedged request fans out to many concurrent calls, and there the client's CPU per call decides the
latency: on 2 cores, eight concurrent calls to a 20 ms upstream took 1.1x one call with aiohttp
and 1.6-1.9x with httpx (``benchmarks/bench_gateway.py``). :class:`HttpxUpstream` runs over an
``httpx`` transport, so tests can script an upstream with ``httpx.MockTransport``.

Both raise :class:`UpstreamUnreachable` for connection errors and timeouts, and return the status
and body of every reply that arrived, whatever its status: retrying is the caller's decision.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol


class UpstreamUnreachable(Exception):
    """No reply: the connection failed, was closed or timed out (the message names which)."""


class Upstream(Protocol):
    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]: ...

    async def get(self, path: str) -> tuple[int, bytes]: ...

    async def stream(self, path: str, body: dict[str, Any]) -> tuple[int, AsyncIterator[bytes]]: ...

    async def close(self) -> None: ...


class AiohttpUpstream:
    """An aiohttp session to ``base`` + path (created on first use, in the server's event loop)."""

    def __init__(self, base: str, headers: dict[str, str], timeout_s: float) -> None:
        self.base, self.headers, self.timeout_s = base, headers, timeout_s
        self._session: Any = None

    def _open(self) -> Any:
        import aiohttp

        if self._session is None:
            # No connection cap here: the gateway's own concurrency limit and candidate cap bound it.
            self._session = aiohttp.ClientSession(
                headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=0),
            )
        return self._session

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        import aiohttp

        try:
            async with self._open().post(self.base + path, json=body) as reply:
                return reply.status, await reply.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamUnreachable(_describe(exc)) from None

    async def get(self, path: str) -> tuple[int, bytes]:
        import aiohttp

        try:
            async with self._open().get(self.base + path) as reply:
                return reply.status, await reply.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamUnreachable(_describe(exc)) from None

    async def stream(self, path: str, body: dict[str, Any]) -> tuple[int, AsyncIterator[bytes]]:
        import aiohttp

        try:
            reply = await self._open().post(self.base + path, json=body)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamUnreachable(_describe(exc)) from None

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in reply.content.iter_any():
                    yield chunk
            finally:
                reply.release()

        return reply.status, chunks()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpxUpstream:
    """An ``httpx.AsyncClient`` over ``transport`` (tests script an upstream with it)."""

    def __init__(self, base: str, headers: dict[str, str], timeout_s: float, transport: Any) -> None:
        import httpx

        self._client = httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout_s, transport=transport)

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        import httpx

        try:
            reply = await self._client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise UpstreamUnreachable(_describe(exc)) from None
        return reply.status_code, reply.content

    async def get(self, path: str) -> tuple[int, bytes]:
        import httpx

        try:
            reply = await self._client.get(path)
        except httpx.HTTPError as exc:
            raise UpstreamUnreachable(_describe(exc)) from None
        return reply.status_code, reply.content

    async def stream(self, path: str, body: dict[str, Any]) -> tuple[int, AsyncIterator[bytes]]:
        import httpx

        try:
            reply = await self._client.send(self._client.build_request("POST", path, json=body), stream=True)
        except httpx.HTTPError as exc:
            raise UpstreamUnreachable(_describe(exc)) from None

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in reply.aiter_raw():
                    yield chunk
            finally:
                await reply.aclose()

        return reply.status_code, chunks()

    async def close(self) -> None:
        await self._client.aclose()


def _describe(exc: BaseException) -> str:
    """The failure's kind, never its details (they may carry URLs with credentials)."""
    return "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
