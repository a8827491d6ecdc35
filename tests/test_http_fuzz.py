"""Both servers under arbitrary JSON bodies and slow clients (issue 28, item 17): every request gets
a JSON answer -- never a dropped connection, never a 500 in plain text -- and a client that
dribbles its request is dropped after a bounded time."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_gateway import Upstream, _client, _policy

from hedgetune.pipeline.backends import Sample

SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
#: Request-shaped bodies (the fields the routes read, with any values) and anything at all.
FIELDS = ["model", "prompt", "messages", "n", "max_tokens", "temperature", "top_p", "logprobs", "stream", "seed", "hedge", "stop"]
BODIES = st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=6) | VALUES
ROUTES = st.sampled_from(["/v1/completions", "/v1/chat/completions"])


def _is_json_answer(status: int, text: str) -> None:
    data = json.loads(text)  # always JSON
    if status >= 400:
        assert isinstance(data.get("error"), dict) and isinstance(data["error"].get("message"), str), text
    assert status != 500, text  # a bug would answer 500 (as JSON): none may be found here


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(route=ROUTES, body=BODIES)
def test_the_gateway_answers_any_json_body_with_json(route: str, body: Any) -> None:
    with _client(Upstream(), _policy("bon", 2)) as client:
        reply = client.post(route, content=json.dumps(body))
    _is_json_answer(reply.status_code, reply.text)


class _Instant:
    """A stand-in model for ``serve``: answers at once with as many words as asked."""

    model = "stand-in"

    def load(self) -> None:
        return None

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def chat_messages(self, messages: list[dict[str, str]]) -> str:
        return " ".join(str(m.get("content", "")) for m in messages)

    def sample_text(self, text: str, n: int, seed: int, *, max_new_tokens: int, temperature: float, top_p: float,
                    stop: Any = None) -> list[Sample]:
        return [Sample("w " * max_new_tokens, [-0.5] * max_new_tokens) for _ in range(n)]


@pytest.fixture(scope="module")
def serve_url() -> Any:
    from hedgetune.pipeline.serve import make_server

    server = make_server(_Instant(), port=0)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(route=ROUTES, body=BODIES)
def test_serve_answers_any_json_body_with_json(serve_url: Any, route: str, body: Any) -> None:
    url, _ = serve_url
    reply = httpx.post(url + route, content=json.dumps(body), timeout=10)
    _is_json_answer(reply.status_code, reply.text)


def test_serve_drops_a_client_that_dribbles_its_request(serve_url: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A byte every 0.2 s resets any per-read timeout; the request as a whole has a deadline."""
    from hedgetune.pipeline import serve

    monkeypatch.setattr(serve._Handler, "read_deadline", 1.0)
    url, server = serve_url
    host, port = server.server_address[:2]
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=5) as sock:
        dropped = False
        for byte in b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
            try:
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
                sock.setblocking(False)
                try:
                    if sock.recv(1) == b"":
                        dropped = True
                        break
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
            except OSError:  # reset by the server
                dropped = True
                break
    assert dropped and time.monotonic() - started < 5
    assert httpx.get(url + "/health", timeout=5).status_code == 200  # the server is fine
