"""The gateway's guards, one scenario per defect of the serving review: empty or unscorable
candidates never win by default, scores are never invented, fan-out candidates differ, every
error is OpenAI JSON with its real status, one deadline bounds a request, credentials never leak,
the decision log is durable and private, and the monitor sees drift without labels."""

from __future__ import annotations

import json
import math
import os
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from hedgetune.gateway import Policy
from hedgetune.gateway.app import Limits, make_app
from hedgetune.gateway.monitor import psi
from hedgetune.gateway.service import candidate_seed
from hedgetune.gateway.support import Calibration

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Compute 7*6. Answer:"}]}


class Scripted:
    """An OpenAI upstream scripted per candidate: ``make(k, body)`` gives the k-th candidate's
    (text, token log-probs or None); it records every body and header it was sent."""

    def __init__(self, make: Any, honours_n: bool = True, usage: bool = True, reply: Any = None) -> None:
        self.make, self.honours_n, self.usage, self.reply = make, honours_n, usage, reply
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.served = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(dict(request.headers))
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "m", "object": "model"}]})
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.reply is not None:
            return self.reply(body)
        n = body.get("n", 1) if self.honours_n else 1
        choices = []
        for i in range(n):
            text, logprobs = self.make(self.served, body)
            self.served += 1
            choice: dict[str, Any] = {"index": i, "finish_reason": "stop"}
            if request.url.path.endswith("/chat/completions"):
                choice["message"] = {"role": "assistant", "content": text}
                if logprobs is not None:
                    choice["logprobs"] = {"content": [{"token": "t", "logprob": v} for v in logprobs]}
            else:
                choice["text"] = text
                if logprobs is not None:
                    choice["logprobs"] = {"token_logprobs": logprobs}
            choices.append(choice)
        out: dict[str, Any] = {"id": "x", "object": "chat.completion", "choices": choices}
        if self.usage:
            out["usage"] = {"prompt_tokens": 5, "completion_tokens": 3 * n, "total_tokens": 5 + 3 * n}
        return httpx.Response(200, json=out)


def _calibrated(mechanism: str = "bon", theta: float = 4, proxy: str = "mean_logprob", **options: Any) -> Policy:
    """A policy tuned on mean log-probs spread over [-2, -0.32] and answers of 3-40 characters."""
    rng = np.random.default_rng(0)
    calibration = Calibration.from_values(rng.uniform(-2.0, -0.32, 4000), rng.integers(3, 41, 4000))
    return Policy(mechanism=mechanism, theta=theta, proxy=proxy, options=options, calibration=calibration)


def _every_third_empty(k: int, body: dict[str, Any]) -> tuple[str, list[float] | None]:
    if k % 3 == 2:
        return "", []  # an empty answer: no tokens, mean log-prob undefined (once scored 0.0, the maximum)
    return f"42 (answer {k})", [-0.5 - 0.1 * (k % 5)] * 4


def _client(upstream: Any, policy: Policy | None, **kwargs: Any) -> TestClient:
    return TestClient(make_app("http://upstream", policy, transport=httpx.MockTransport(upstream), seed=0, **kwargs))


# ---------------------------------------------------------------------------- 1. support
def test_empty_answers_never_win() -> None:
    """Review: in front of an upstream where every third answer is empty, an empty text won 30 of 30."""
    with _client(Scripted(_every_third_empty), _calibrated()) as client:
        for _ in range(30):
            data = client.post("/v1/chat/completions", json=CHAT).json()
            assert data["choices"][0]["message"]["content"] != ""
            decision = data["hedgetune"]
            empties = [k for k, s in enumerate(decision["scores"]) if s is None]
            assert {e["candidate"] for e in decision["excluded"]} >= set(empties)
            assert all(e["reason"] in ("empty", "no_tokens", "score_missing") for e in decision["excluded"])


def test_a_candidate_beyond_the_calibration_is_excluded_clipped_or_allowed() -> None:
    # Candidate 1 scores -0.01, far above the calibration's best (-0.32, margin 0.168): out of support.
    def make(k: int, body: dict[str, Any]) -> tuple[str, list[float]]:
        return f"answer {k}", [-0.01] if k % 4 == 1 else [-1.0 + 0.1 * (k % 4)]

    with _client(Scripted(make), _calibrated()) as client:
        decision = client.post("/v1/chat/completions", json=CHAT).json()["hedgetune"]
    assert decision["excluded"] == [{"candidate": 1, "reason": "score_above_support"}]
    assert decision["chosen"] == 3 and decision["support"] == "calibrated"
    with _client(Scripted(make), _calibrated(), out_of_support="allow") as client:
        assert client.post("/v1/chat/completions", json=CHAT).json()["hedgetune"]["chosen"] == 1
    with _client(Scripted(make), _calibrated(), out_of_support="clip") as client:
        decision = client.post("/v1/chat/completions", json=CHAT).json()["hedgetune"]
    # Clipped to the support's edge (-0.32 + 0.1 * 1.68 = -0.152), it still beats -0.7: kept, flagged.
    assert decision["chosen"] == 1 and decision["excluded"] == [] and decision["flagged"][0]["candidate"] == 1
    policy = Policy(**{**_calibrated().__dict__, "out_of_support": "allow"})
    with _client(Scripted(make), policy) as client:  # the policy's own setting applies without a flag
        assert client.post("/v1/chat/completions", json=CHAT).json()["hedgetune"]["out_of_support"] == "allow"


def test_length_outside_the_calibration_is_flagged() -> None:
    def make(k: int, body: dict[str, Any]) -> tuple[str, list[float]]:
        return ("x" * 500 if k == 0 else f"short {k}"), [-0.5] if k == 0 else [-1.0]

    with _client(Scripted(make), _calibrated()) as client:
        decision = client.post("/v1/chat/completions", json=CHAT).json()["hedgetune"]
    assert decision["excluded"] == [{"candidate": 0, "reason": "length_above_support"}] and decision["chosen"] != 0


def test_every_candidate_excluded_falls_back_or_fails_as_asked() -> None:
    def make(k: int, body: dict[str, Any]) -> tuple[str, list[float]]:
        return f"answer {k}", [5.0]  # all far above the calibration

    with _client(Scripted(make), _calibrated()) as client:
        data = client.post("/v1/chat/completions", json=CHAT).json()
    assert data["hedgetune"]["fallback"] == "reference" and data["hedgetune"]["chosen"] == 0
    with _client(Scripted(make), _calibrated(), fallback="error") as client:
        reply = client.post("/v1/chat/completions", json=CHAT)
    assert reply.status_code == 502 and "score_above_support" in reply.json()["error"]["message"]
    assert reply.json()["error"]["code"] == "no_eligible_candidate"


# ---------------------------------------------------------------------------- 2. no invented scores
def test_missing_logprobs_are_missing_not_zero() -> None:
    """Review: `transformers serve` sends no log-probs; every candidate scored 0.0, a random pick."""
    upstream = Scripted(lambda k, body: (f"answer {k}", None))
    with _client(upstream, _calibrated()) as client:
        data = client.post("/v1/chat/completions", json=CHAT).json()
        assert upstream.bodies[0]["logprobs"] is True  # asked for, since the scorer needs them
        decision = data["hedgetune"]
        assert decision["scores"] == [None] * 4 and decision["fallback"] == "reference"
        assert "logprobs" not in data["choices"][0]  # the client did not ask for them
    with _client(upstream, _calibrated(), fallback="error") as client:
        reply = client.post("/v1/chat/completions", json=CHAT)
    assert reply.status_code == 502 and "log-probabilities" in reply.json()["error"]["message"]


def test_a_nan_logprob_makes_that_candidate_missing() -> None:
    def make(k: int, body: dict[str, Any]) -> tuple[str, list[float]]:
        return f"answer {k}", [-0.4] if k else [-2.0]

    def reply(body: dict[str, Any]) -> httpx.Response:  # candidate 1's logprobs hold null
        choices = [{"index": k, "message": {"role": "assistant", "content": f"a{k}"}, "finish_reason": "stop",
                    "logprobs": {"content": [{"token": "t", "logprob": None if k == 1 else -1.0 + 0.1 * k}]}}
                   for k in range(body["n"])]
        return httpx.Response(200, json={"id": "x", "choices": choices})

    with _client(Scripted(make, reply=reply), _calibrated()) as client:
        decision = client.post("/v1/chat/completions", json=CHAT).json()["hedgetune"]
    assert decision["scores"][1] is None and {"candidate": 1, "reason": "score_missing"} in decision["excluded"]
    assert decision["chosen"] == 3


def test_logprobs_are_asked_only_when_needed_and_kept_when_asked() -> None:
    upstream = Scripted(lambda k, body: (f"answer {k}", [-1.0]))
    policy = Policy(mechanism="bon", theta=2, proxy="length")
    with _client(upstream, policy) as client:
        client.post("/v1/chat/completions", json=CHAT)
        assert "logprobs" not in upstream.bodies[-1]
        data = client.post("/v1/chat/completions", json={**CHAT, "logprobs": True}).json()
        assert upstream.bodies[-1]["logprobs"] is True and "logprobs" in data["choices"][0]


# ---------------------------------------------------------------------------- 3. distinct candidates
def test_fan_out_calls_get_distinct_reproducible_seeds() -> None:
    """Review: the client's seed was copied into every fan-out call: identical candidates at 4x cost."""
    upstream = Scripted(lambda k, body: (f"sample of seed {body.get('seed')}", [-1.0]), honours_n=False)
    with _client(upstream, Policy(mechanism="bon", theta=4, proxy="length")) as client:
        first = client.post("/v1/chat/completions", json={**CHAT, "seed": 104}).json()["hedgetune"]
        seeds = [b["seed"] for b in upstream.bodies]
        again = client.post("/v1/chat/completions", json={**CHAT, "seed": 104}).json()["hedgetune"]
    assert sorted(seeds) == sorted(candidate_seed(104, k) for k in range(4)) and len(set(seeds)) == 4
    assert all(0 <= s < 2**63 for s in seeds)
    assert first["duplicates"] == 0 and first["scores"] == again["scores"]  # reproducible
    assert sorted(b["seed"] for b in upstream.bodies[4:]) == sorted(seeds)


def test_identical_candidates_are_counted() -> None:
    with _client(Scripted(lambda k, body: ("same", [-1.0])), Policy(mechanism="bon", theta=4, proxy="length")) as client:
        decision = client.post("/v1/chat/completions", json=CHAT).json()["hedgetune"]
        assert decision["duplicates"] == 3
        assert "hedgetune_duplicates_total 3" in client.get("/metrics").text


# ---------------------------------------------------------------------------- 5. errors
@pytest.mark.parametrize(
    ("hedge", "param"),
    [
        ({"mechanism": "bon", "n": 2.5}, "hedge.n"),
        ({"mechanism": "bop", "mu": 1e300}, "hedge.mu"),
        ({"mechanism": "bop", "mu": 1e19}, "hedge.mu"),
        ({"mechanism": "bon", "n": 2**63}, "hedge.n"),
        ({"mechanism": "bon", "n": 10000}, "hedge.n"),
        ({"mechanism": "bop", "mu": float("inf")}, None),  # not even JSON: refused as the body
        ({"mechanism": "sbon", "n": 4, "beta": "x"}, "hedge.beta"),
        ({"mechanism": "sbon", "n": 4.5, "beta": 1}, "hedge.n"),
        ({"mechanism": "bon", "n": 4, "z": 1}, "hedge.z"),
        ({"mechanism": "nope"}, "hedge.mechanism"),
        ({"mechanism": "tilted", "beta": 1}, "hedge.mechanism"),
    ],
)
def test_invalid_hedge_parameters_are_400_naming_the_param(hedge: dict[str, Any], param: str | None) -> None:
    with _client(Scripted(lambda k, b: ("a", [-1.0])), Policy(mechanism="bon", theta=2, proxy="length")) as client:
        body = json.dumps({**CHAT, "hedge": hedge}, allow_nan=True)
        reply = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert reply.status_code == 400 and reply.headers["content-type"] == "application/json", reply.text
        error = reply.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
        assert 'status="400"' in client.get("/metrics").text


@pytest.mark.parametrize(
    ("patch", "param"),
    [({"logprobs": "x"}, "logprobs"), ({"stream": "yes"}, "stream"), ({"messages": "hi"}, "messages"),
     ({"top_logprobs": 99}, "top_logprobs"), ({"seed": -1}, "seed"), ({"messages": [{"role": "user", "content": "\ud800"}]}, None)],
)
def test_invalid_fields_are_400_naming_the_param(patch: dict[str, Any], param: str | None) -> None:
    with _client(Scripted(lambda k, b: ("a", [-1.0])), Policy(mechanism="bon", theta=2, proxy="length")) as client:
        reply = client.post("/v1/chat/completions", content=json.dumps({**CHAT, **patch}),
                            headers={"content-type": "application/json"})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == param, reply.text


def test_404_405_500_and_a_nan_reply_are_json_with_their_real_status(monkeypatch: pytest.MonkeyPatch) -> None:
    def nan_reply(body: dict[str, Any]) -> httpx.Response:
        return httpx.Response(200, content=b'{"choices": [{"index": 0, "text": "a", "x": NaN}]}')

    with _client(Scripted(lambda k, b: ("a", None), reply=nan_reply), Policy(mechanism="bon", theta=2, proxy="length"),
                 limits=Limits(backoff_s=0.0)) as client:
        reply = client.post("/v1/completions", json={"model": "m", "prompt": "p"})
        assert reply.status_code == 502 and "malformed JSON" in reply.json()["error"]["message"]
        for method, path, status in (("GET", "/nope", 404), ("GET", "/v1/chat/completions", 405), ("DELETE", "/health", 405)):
            reply = client.request(method, path)
            assert reply.status_code == status and reply.json()["error"]["type"] == "invalid_request_error"
            assert set(reply.json()["error"]) == {"message", "type", "param", "code"}
        service = client.app.state.service  # type: ignore[attr-defined]

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(service, "serve", broken)
        reply = client.post("/v1/completions", json={"model": "m", "prompt": "p"})
        assert reply.status_code == 500 and reply.json()["error"]["type"] == "server_error"
        assert "a bug" not in reply.text
        metrics = client.get("/metrics").text
    for line in ('route="/v1/completions",status="502"', 'route="/v1/completions",status="500"',
                 'route="other",status="404"', 'route="other",status="405"'):
        assert line in metrics, line


# ---------------------------------------------------------------------------- 4. cost, deadline, cancel
def test_overrides_can_be_forbidden_or_limited_to_the_parameter() -> None:
    upstream = Scripted(lambda k, b: (f"a{k}", [-1.0]))
    policy = Policy(mechanism="bon", theta=2, proxy="length")
    with _client(upstream, policy, limits=Limits(allow_override="none")) as client:
        for hedge in ({"mechanism": "bon", "n": 8}, False):
            reply = client.post("/v1/chat/completions", json={**CHAT, "hedge": hedge})
            assert reply.status_code == 403 and reply.json()["error"]["param"] == "hedge"
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    with _client(upstream, policy, limits=Limits(allow_override="parameter")) as client:
        assert client.post("/v1/chat/completions", json={**CHAT, "hedge": {"n": 3}}).json()["hedgetune"]["candidates"] == 3
        reply = client.post("/v1/chat/completions", json={**CHAT, "hedge": {"mechanism": "bop", "mu": 3}})
        assert reply.status_code == 403 and reply.json()["error"]["param"] == "hedge.mechanism"
    with _client(upstream, policy, limits=Limits(max_candidates=8)) as client:
        reply = client.post("/v1/chat/completions", json={**CHAT, "hedge": {"mechanism": "bon", "n": 9}})
        assert reply.status_code == 400 and "at most 8" in reply.json()["error"]["message"]


def test_a_client_that_leaves_cancels_its_work() -> None:
    """Review: a client that disconnected did not stop its work; the next request waited 37 s."""
    import asyncio
    import threading

    from test_gateway import _serve_in_thread

    started, cancelled = threading.Event(), threading.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if "slow" in json.dumps(body):
            started.set()
            try:
                await asyncio.sleep(20)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return Scripted(lambda k, b: (f"a{k}", [-1.0]))(request)

    app = make_app("http://upstream", Policy(mechanism="bon", theta=1, proxy="length"),
                   transport=httpx.MockTransport(slow), limits=Limits(max_concurrency=1))
    server, url = _serve_in_thread(app)
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/completions", json={"model": "m", "prompt": "slow"}, timeout=1.0)
        assert started.is_set()
        begun = time.monotonic()
        reply = httpx.post(url + "/v1/completions", json={"model": "m", "prompt": "fast"}, timeout=10)
        assert reply.status_code == 200 and time.monotonic() - begun < 3.0  # the slot was freed
        assert cancelled.wait(5)
        assert 'status="499"' in httpx.get(url + "/metrics").text
    finally:
        server.should_exit = True


# ---------------------------------------------------------------------------- 6. auth and exposure
def test_credentials_never_reach_a_client() -> None:
    def echo(body: dict[str, Any]) -> httpx.Response:  # an upstream that echoes what it was sent
        return httpx.Response(400, text="bad request; you sent Authorization: Bearer sk-upstream-KEY-123456 key=sk-upstream-KEY-123456")

    upstream = Scripted(lambda k, b: ("a", None), reply=echo)
    with _client(upstream, Policy(mechanism="bon", theta=2, proxy="length"), api_key="sk-upstream-KEY-123456") as client:
        reply = client.post("/v1/chat/completions", json=CHAT)
        assert reply.status_code == 400 and "KEY" not in reply.text and "[redacted]" in reply.text
        client.get("/v1/models")  # no token configured: forwarded without the upstream's key
        assert "authorization" not in upstream.headers[-1]
    with _client(upstream, Policy(mechanism="bon", theta=2, proxy="length"), api_key="sk-upstream-KEY-123456",
                 token="t0k") as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer t0k"}).status_code == 200
        assert upstream.headers[-1]["authorization"] == "Bearer sk-upstream-KEY-123456"


def test_health_reports_the_upstream_and_no_paths(tmp_path: Path) -> None:
    path = tmp_path / "secret-place" / "policy.json"
    path.parent.mkdir()
    Policy(mechanism="bon", theta=2, proxy="length", source={"table": str(tmp_path / "t.parquet")}).save(path)

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with TestClient(make_app("http://upstream", str(path), transport=httpx.MockTransport(down))) as client:
        reply = client.get("/health")
        assert reply.status_code == 503 and reply.json()["upstream"] == "unreachable"
        assert str(tmp_path) not in reply.text and "secret-place" not in reply.text
    with TestClient(make_app("http://upstream", str(path), transport=httpx.MockTransport(Scripted(lambda k, b: ("a", None))))) as client:
        assert client.get("/health").status_code == 200 and client.get("/health").json()["status"] == "ok"


def test_usage_is_counted_or_labelled_estimated_when_the_upstream_sends_none() -> None:
    upstream = Scripted(lambda k, b: ("four tokens of text", [-1.0] * 4), usage=False)
    with _client(upstream, _calibrated()) as client:
        data = client.post("/v1/chat/completions", json=CHAT).json()
    accounting = data["hedgetune"]["usage"]
    assert data["usage"]["completion_tokens"] == 16 and accounting["completion_source"] == "counted"
    assert accounting["prompt_source"] == "estimated" and data["usage"]["total_tokens"] > 16
    assert [c["completion_tokens"] for c in accounting["candidates"]] == [4] * 4
    upstream = Scripted(lambda k, b: ("x" * 40, None), usage=False)
    with _client(upstream, Policy(mechanism="bon", theta=2, proxy="length")) as client:
        data = client.post("/v1/chat/completions", json=CHAT).json()
    assert data["usage"]["completion_tokens"] == 20 and data["hedgetune"]["usage"]["completion_source"] == "estimated"
    with _client(Scripted(lambda k, b: ("x", [-1.0])), Policy(mechanism="bon", theta=2, proxy="length")) as client:
        data = client.post("/v1/chat/completions", json=CHAT).json()
    assert data["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    assert data["hedgetune"]["usage"]["completion_source"] == "upstream"


# ---------------------------------------------------------------------------- 11. streaming
def test_streaming_sends_the_chosen_text_in_chunks_then_the_decision() -> None:
    import openai

    long = "a long answer " * 6
    upstream = Scripted(lambda k, b: (long if k % 2 == 1 else "short", [-1.0]))
    with _client(upstream, Policy(mechanism="bon", theta=2, proxy="length")) as http:
        raw = http.post("/v1/chat/completions", json={**CHAT, "stream": True}).text
        events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
        assert len(events) >= 4 and raw.rstrip().endswith("data: [DONE]")
        assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == long
        assert "hedgetune" in events[-1] and "usage" in events[-1] and "hedgetune" not in events[0]
        client = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http)
        stream = client.chat.completions.create(model="m", messages=CHAT["messages"], stream=True)  # type: ignore[arg-type]
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == long


def test_a_pass_through_stream_from_an_upstream_that_cannot_stream_is_an_error() -> None:
    upstream = Scripted(lambda k, b: ("a", None))  # answers JSON, never SSE
    with _client(upstream, Policy(mechanism="bon", theta=2, proxy="length")) as client:
        reply = client.post("/v1/chat/completions", json={**CHAT, "hedge": False, "stream": True})
    assert reply.status_code == 502 and "without streaming" in reply.json()["error"]["message"]


# ---------------------------------------------------------------------------- 7. decision log
def test_the_log_is_flushed_on_time_private_and_holds_the_whole_chat(tmp_path: Path) -> None:
    from hedgetune.gateway.log import read_log

    chat = {"model": "m", "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"},
                                       {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"}]}
    with _client(Scripted(lambda k, b: (f"a{k}", [-1.0])), _calibrated(), log_dir=tmp_path / "log", log_seconds=0.3) as client:
        for _ in range(3):
            client.post("/v1/chat/completions", json=chat)
        deadline = time.monotonic() + 10
        while not list((tmp_path / "log").glob("log-*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.1)
        shards = list((tmp_path / "log").glob("log-*.parquet"))
        assert shards, "nothing flushed within the flush interval while the gateway ran"
        assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in shards)
        assert stat.S_IMODE(os.stat(tmp_path / "log").st_mode) == 0o700
    log = read_log(tmp_path / "log")
    assert log.num_rows == 12
    assert json.loads(log.column("context")[0].as_py()) == chat["messages"]
    assert log.column("prompt")[0].as_py() == "system: Be terse.\n\nuser: 2+2?\n\nassistant: 4\n\nuser: and 3+3?"


def test_the_log_buffer_is_bounded_in_bytes(tmp_path: Path) -> None:
    from hedgetune.gateway.log import DecisionLog

    log = DecisionLog(tmp_path, flush_requests=1000, flush_seconds=100, max_bytes=50_000)
    decision = {"candidates": 1, "mechanism": "bon", "theta": 1.0, "proxy": "length"}
    row = {"response": "x" * 10_000, "score": 1.0, "quantile": 0.5, "flag": None, "eligible": True, "duplicate": False, "chosen": True}
    for _ in range(20):
        log.add("/v1/completions", "p", '"p"', [row], decision)
        assert log.bytes < 50_000 + 11_000
    assert len(list(tmp_path.glob("log-*.parquet"))) >= 3


def test_sigkill_loses_at_most_the_unflushed_window(tmp_path: Path) -> None:
    """A gateway process killed with SIGKILL: every request answered more than the flush interval
    before the kill is on disk."""
    import signal
    import socket
    import subprocess
    import sys

    from test_gateway import _echo_upstream, _serve_in_thread

    from hedgetune.gateway.log import read_log

    upstream, upstream_url = _serve_in_thread(_echo_upstream())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    Policy(mechanism="bon", theta=2, proxy="length").save(tmp_path / "p.json")
    process = subprocess.Popen(
        [sys.executable, "-m", "hedgetune.cli", "gateway", "--upstream", upstream_url, "--policy", str(tmp_path / "p.json"),
         "--port", str(port), "--log", str(tmp_path / "log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        for i in range(10):
            assert httpx.post(url + "/v1/completions", json={"model": "m", "prompt": f"p{i}"}, timeout=10).status_code == 200
        time.sleep(6.5)  # more than the 5 s flush interval
        httpx.post(url + "/v1/completions", json={"model": "m", "prompt": "late"}, timeout=10)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        process.kill()
        upstream.should_exit = True
    prompts = set(read_log(tmp_path / "log").column("prompt").to_pylist())
    assert {f"p{i}" for i in range(10)} <= prompts


# ---------------------------------------------------------------------------- 8. monitor
def test_psi_and_quantiles_against_direct_computation() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=5000)
    calibration = Calibration.from_values(values)
    probe = rng.normal(size=400) * 1.2
    ecdf = (values[None, :] <= probe[:, None]).mean(axis=1)
    assert np.max(np.abs(calibration.quantile(probe) - ecdf)) < 0.015
    shares = np.array([0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05])
    quantiles = np.concatenate([rng.uniform(k / 10, (k + 1) / 10, int(s * 10000)) for k, s in enumerate(shares)])
    assert psi(quantiles) == pytest.approx(float(np.sum((shares - 0.1) * np.log(shares / 0.1))), rel=1e-9)
    assert psi(rng.uniform(size=100_000)) < 0.001


def test_the_monitor_sees_drift_without_labels(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hedgetune.cli import main

    policy = _calibrated()
    policy.save(tmp_path / "p.json")
    drifted = Scripted(lambda k, b: (f"answer {k}", [-0.1 if k % 4 == 0 else -0.4 + 0.02 * (k % 3)]))
    with _client(drifted, policy, log_dir=tmp_path / "log", out_of_support="allow") as client:
        for _ in range(40):
            client.post("/v1/chat/completions", json=CHAT)
        metrics = client.get("/metrics").text
    assert 'hedgetune_candidates_out_of_support_total{reason="score_above_support"}' in metrics
    psi_line = next(line for line in metrics.splitlines() if line.startswith("hedgetune_score_drift_psi "))
    assert float(psi_line.split()[1]) > 0.2
    for name in ("hedgetune_selected_score_quantile_bucket", "hedgetune_winner_margin_count", "hedgetune_selected_length_sum"):
        assert name in metrics
    out = CliRunner().invoke(main, ["monitor", str(tmp_path / "log"), "--policy", str(tmp_path / "p.json"), "--json",
                                    "--out", str(tmp_path / "page")])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["requests"] == 40 and report["score_drift_psi"] > 0.2
    assert any("re-calibrate" in v and "PSI" in v for v in report["verdicts"])
    assert any("outside the calibrated range" in v for v in report["verdicts"])
    assert (tmp_path / "page" / "monitor.html").read_text().count("re-calibrate") >= 1
    assert (tmp_path / "page" / "monitor.png").stat().st_size > 1000
    text = CliRunner().invoke(main, ["monitor", str(tmp_path / "log"), "--policy", str(tmp_path / "p.json")])
    assert text.exit_code == 0 and "PSI" in text.stdout


def test_a_quiet_deployment_gets_no_alarm(tmp_path: Path) -> None:
    from hedgetune.gateway.monitor import monitor_log

    rng = np.random.default_rng(3)
    policy = _calibrated()
    upstream = Scripted(lambda k, b: (f"answer {k:03d}"[: 3 + int(rng.integers(0, 30))], [float(rng.uniform(-2.0, -0.32))]))
    with _client(upstream, policy, log_dir=tmp_path / "log") as client:
        for _ in range(300):
            client.post("/v1/chat/completions", json=CHAT)
    signals, _ = monitor_log(tmp_path / "log", policy)
    assert signals.verdicts() == [] and signals.psi < 0.1 and signals.out_of_support_share < 0.05


# ---------------------------------------------------------------------------- policy calibration
def test_save_policy_carries_the_calibration(tmp_path: Path) -> None:
    from click.testing import CliRunner

    import hedgetune as ht
    from hedgetune.cli import main

    table = ht.synthetic.make_table("toy", 100, 8, seed=0)
    ht.write_table(table, tmp_path / "t.parquet")
    out = CliRunner().invoke(main, ["tune", str(tmp_path / "t.parquet"), "-m", "bon", "--bootstrap", "20",
                                    "--save-policy", str(tmp_path / "p.json")])
    assert out.exit_code == 0, out.output
    policy = Policy.load(tmp_path / "p.json")
    assert policy.calibration is not None and policy.calibration.n_responses == 800
    scores = table.proxies[table.proxy]
    np.testing.assert_allclose(policy.calibration.score_quantiles, np.quantile(scores, np.linspace(0, 1, 101)))
    assert policy.calibration.score_bounds[1] == pytest.approx(scores.max() + 0.1 * (scores.max() - scores.min()))
    bad = json.loads((tmp_path / "p.json").read_text())
    bad["calibration"]["score_quantiles"] = [1.0, 0.0]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="score_quantiles"):
        Policy.load(tmp_path / "bad.json")
    assert not math.isnan(policy.theta)


# ---------------------------------------------------------------------------- 10. reward servers
def _reward_server(calls: list[tuple[str, Any]]) -> Any:
    """One loopback server speaking every supported reward protocol; each prefers the *shortest*
    candidate (score = -characters of the candidate), unlike the length proxy."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def candidate(text: str) -> str:
        return text.split("\n\n", 1)[1]

    async def score(request: Request) -> JSONResponse:
        body = await request.json()
        calls.append(("score", body))
        return JSONResponse({"data": [{"index": i, "score": -float(len(t))} for i, t in enumerate(body["text_2"])]})

    async def classify(request: Request) -> JSONResponse:
        body = await request.json()
        calls.append(("classify", body))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"index": i, "label": "x", "probs": [0.5, -float(len(candidate(t)))], "num_classes": 2} for i, t in enumerate(inputs)]
        return JSONResponse({"object": "list", "data": data})

    async def pooling(request: Request) -> JSONResponse:
        body = await request.json()
        calls.append(("pooling", body))
        data = [{"index": i, "object": "pooling", "data": [[0.0], [-float(len(candidate(t)))]]} for i, t in enumerate(body["input"])]
        return JSONResponse({"object": "list", "data": data})

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        calls.append(("chat", body))
        reward = -float(len(body["messages"][1]["content"]))
        return JSONResponse({"choices": [{"index": 0, "message": {"role": "assistant", "content": f"reward:{reward}"}}]})

    return Starlette(routes=[
        Route("/score", score, methods=["POST"]), Route("/classify", classify, methods=["POST"]),
        Route("/pooling", pooling, methods=["POST"]), Route("/v1/classify", classify, methods=["POST"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
    ])


@pytest.mark.parametrize("protocol", ["", "vllm-score+", "vllm-classify+", "vllm-pooling+", "sglang-classify+", "chat-reward+"])
def test_reward_models_behind_servers(protocol: str) -> None:
    from test_gateway import _serve_in_thread

    calls: list[tuple[str, Any]] = []
    server, url = _serve_in_thread(_reward_server(calls))
    try:
        upstream = Scripted(lambda k, b: ("w " * (k % 4 + 1), None))
        reward = f"{protocol}{url}#model=rm-8b"
        with _client(upstream, Policy(mechanism="bon", theta=4, proxy="length"), reward=reward) as client:
            decision = client.post("/v1/chat/completions", json=CHAT).json()["hedgetune"]
        assert decision["scores"] == [-2.0, -4.0, -6.0, -8.0] and decision["chosen"] == 0
        assert decision["proxy"] == reward and all(body.get("model") == "rm-8b" for _, body in calls)
        if protocol == "sglang-classify+":
            assert len(calls) == 4 and isinstance(calls[0][1]["input"], str)  # one call per candidate
    finally:
        server.should_exit = True


def test_a_reward_server_that_is_down_invents_nothing() -> None:
    upstream = Scripted(lambda k, b: (f"answer {k}", None))
    with _client(upstream, Policy(mechanism="bon", theta=3, proxy="length"), reward="vllm-classify+http://127.0.0.1:9") as client:
        data = client.post("/v1/chat/completions", json=CHAT).json()
        assert data["hedgetune"]["scores"] == [None] * 3 and data["hedgetune"]["fallback"] == "reference"
        assert "reward server" in data["hedgetune"]["scoring_error"]
    with _client(upstream, Policy(mechanism="bon", theta=3, proxy="length"), reward="vllm-classify+http://127.0.0.1:9",
                 fallback="error") as client:
        reply = client.post("/v1/chat/completions", json=CHAT)
        assert reply.status_code == 502 and "the scorer failed" in reply.json()["error"]["message"]


def test_a_chat_reward_reply_without_a_single_number_is_missing() -> None:
    from hedgetune.gateway.scoring import _reward_in_text

    assert _reward_in_text("reward:-3.25") == -3.25 and _reward_in_text(" 4.5e-1 ") == 0.45
    assert _reward_in_text("helpfulness:1.6,correctness:1.2,reward: 2") == 2.0
    for text in ("no number", "1 and 2", None):
        with pytest.raises((ValueError, TypeError)):
            _reward_in_text(text)


# ---------------------------------------------------------------------------- any body
def test_any_json_body_gets_a_json_answer() -> None:
    """Hypothesis over request bodies: whatever JSON arrives, the gateway answers JSON with a 2xx
    or 4xx status, never a 500, a traceback or a dropped connection."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
    keys = st.sampled_from(["model", "messages", "prompt", "n", "max_tokens", "temperature", "top_p", "seed", "stream",
                            "stream_options", "logprobs", "top_logprobs", "hedge"])
    hedges = st.fixed_dictionaries({}, optional={"mechanism": st.sampled_from(["bon", "bop", "sbon", "itp", "x"]) | values,
                                                 "n": values, "mu": values, "beta": values, "theta": values, "on": values})
    bodies = st.dictionaries(keys, values | hedges, max_size=6).map(lambda b: {**CHAT, **b})
    client = _client(Scripted(lambda k, b: (f"a{k}", [-1.0])), Policy(mechanism="bon", theta=2, proxy="length"))
    with client:
        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(body=bodies, route=st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
        def check(body: dict[str, Any], route: str) -> None:
            reply = client.post(route, content=json.dumps(body), headers={"content-type": "application/json"})
            assert reply.status_code < 500, (body, reply.text)
            if reply.headers["content-type"].startswith("application/json"):
                data = reply.json()
                assert "error" in data or "choices" in data
            else:
                assert reply.headers["content-type"].startswith("text/event-stream")

        check()
