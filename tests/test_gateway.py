"""The hedged gateway against a scripted upstream (httpx.MockTransport) and the official openai
client: the choice equals the mechanism's own selection on the same scores, usage is summed,
overrides and pass-through work, faults and bad requests get OpenAI-style errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

import hedgetune as ht
from hedgetune.gateway import Policy, PolicyError
from hedgetune.gateway.app import Limits, make_app


class Upstream:
    """An OpenAI-compatible upstream whose k-th candidate answers with k+1 words, so that the
    ``length`` proxy orders candidates by their position; it may ignore ``n`` or fail."""

    def __init__(self, honours_n: bool = True, fail: int = 0, status: int = 503) -> None:
        self.honours_n, self.fail, self.status = honours_n, fail, status
        self.calls: list[dict[str, Any]] = []
        self.served = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "stub", "object": "model"}]})
        body = json.loads(request.content)
        self.calls.append(body)
        if self.fail > 0:
            self.fail -= 1
            return httpx.Response(self.status, text="busy")
        n = body.get("n", 1) if self.honours_n else 1
        choices = []
        for i in range(n):
            words = " ".join(["w"] * (self.served + 1))
            self.served += 1
            if request.url.path.endswith("/chat/completions"):
                choice = {"index": i, "message": {"role": "assistant", "content": words}, "finish_reason": "stop"}
            else:
                choice = {"index": i, "text": words, "finish_reason": "stop"}
            choice["logprobs"] = {"token_logprobs": [-0.1 * (self.served % 3)]} if body.get("logprobs") else None
            choices.append(choice)
        usage = {"prompt_tokens": 5, "completion_tokens": 2 * n, "total_tokens": 5 + 2 * n}
        return httpx.Response(200, json={"id": "x", "object": "chat.completion", "choices": choices, "usage": usage})


def _client(upstream: Upstream, policy: Policy | None, **kwargs: Any) -> TestClient:
    app = make_app("http://upstream", policy, transport=httpx.MockTransport(upstream), seed=0, **kwargs)
    return TestClient(app)


def _policy(mechanism: str, theta: float, **options: Any) -> Policy:
    return Policy(mechanism=mechanism, theta=theta, proxy="length", options=options)


CHAT = {"model": "stub", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("honours_n", [True, False])
def test_best_of_n_returns_the_best_candidate_with_usage_summed(honours_n: bool) -> None:
    upstream = Upstream(honours_n=honours_n)
    with _client(upstream, _policy("bon", 4)) as client:
        reply = client.post("/v1/chat/completions", json=CHAT)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    decision = data["hedgetune"]
    assert decision["mechanism"] == "bon" and decision["candidates"] == 4
    assert decision["scores"] == [float(len(" ".join(["w"] * k))) for k in range(1, 5)]
    assert decision["chosen"] == 3 and data["choices"][0]["message"]["content"] == "w w w w"
    assert data["choices"][0]["index"] == 0
    calls = len(upstream.calls)
    assert calls == (1 if honours_n else 4)  # an upstream that ignores n is filled concurrently
    assert data["usage"]["completion_tokens"] == 8 and data["usage"]["prompt_tokens"] == 5 * calls


@pytest.mark.parametrize("policy", [_policy("bop", 3.0), _policy("sbon", 0.7, n=5, on="raw")])
def test_the_choice_is_the_mechanisms_own_selection_on_the_same_scores(policy: Policy) -> None:
    mechanism = policy.mechanism_at_theta()
    with _client(Upstream(), policy) as client:
        for _ in range(5):
            data = client.post("/v1/completions", json={"model": "stub", "prompt": "2+2="}).json()
            decision = data["hedgetune"]
            assert decision["mechanism"] == policy.mechanism and decision["theta"] == policy.theta
            scores = np.array(decision["scores"])
            if policy.mechanism == "bop":  # Best-of-Poisson is the best of what it drew
                assert decision["chosen"] == int(np.argmax(scores))
            assert len(data["choices"][0]["text"]) == scores[decision["chosen"]]  # the length proxy
    # The same rng stream replayed: draw counts and choices equal the mechanism's own calls.
    rng = np.random.default_rng(0)
    count = int(mechanism.draw_n(1, rng)[0])
    with _client(Upstream(), policy) as client:
        decision = client.post("/v1/completions", json={"model": "stub", "prompt": "x"}).json()["hedgetune"]
    assert decision["candidates"] == count
    assert decision["chosen"] == int(mechanism.select(np.array([decision["scores"]]), rng=rng)[0])


def test_override_and_pass_through() -> None:
    upstream = Upstream()
    with _client(upstream, _policy("bon", 2)) as client:
        data = client.post("/v1/chat/completions", json={**CHAT, "hedge": {"mechanism": "bon", "n": 6}}).json()
        assert data["hedgetune"]["candidates"] == 6 and data["hedgetune"]["chosen"] == 5
        plain = client.post("/v1/chat/completions", json={**CHAT, "hedge": False}).json()
        assert "hedgetune" not in plain and len(plain["choices"]) == 1
        assert "hedge" not in upstream.calls[-1]
        bad = client.post("/v1/chat/completions", json={**CHAT, "hedge": {"mechanism": "tilted", "beta": 1}})
        assert bad.status_code == 400 and "frontier" in bad.json()["error"]["message"]
        # InferenceTimePessimism needs only the scores; RBoN-KL needs log-probabilities per candidate.
        itp = client.post("/v1/chat/completions", json={**CHAT, "hedge": {"mechanism": "itp", "gamma": 1e6, "n": 4}}).json()
        assert itp["hedgetune"]["candidates"] == 4 and itp["hedgetune"]["chosen"] == 3  # gamma -> inf: the best
        bad = client.post("/v1/chat/completions", json={**CHAT, "hedge": {"mechanism": "rbon_kl", "beta": 1, "n": 4}})
        assert bad.status_code == 400 and "mean_logprob" in bad.json()["error"]["message"]


def test_official_openai_client_talks_to_the_gateway() -> None:
    import openai

    with _client(Upstream(), _policy("bon", 3)) as http:
        client = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http)
        reply = client.chat.completions.create(model="stub", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "w w w"
        assert reply.model_extra is not None and reply.model_extra["hedgetune"]["candidates"] == 3
        stream = client.chat.completions.create(
            model="stub", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
        assert text == "w w w w w w"  # buffered: the selected answer in one event
        assert client.models.list().data[0].id == "stub"


def test_upstream_faults() -> None:
    # Transient 503s are retried; when every call fails the gateway answers 502 in OpenAI's format.
    with _client(Upstream(fail=1), _policy("bon", 2), limits=Limits(backoff_s=0.0)) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    with _client(Upstream(fail=100), _policy("bon", 2), limits=Limits(backoff_s=0.0, retries=1)) as client:
        reply = client.post("/v1/chat/completions", json=CHAT)
        assert reply.status_code == 502 and reply.json()["error"]["type"] == "upstream_error"
        metrics = client.get("/metrics").text
        assert 'hedgetune_requests_total{route="/v1/chat/completions",status="502"} 1' in metrics

    def malformed(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="{not json")

    app = make_app("http://upstream", _policy("bon", 2), transport=httpx.MockTransport(malformed), limits=Limits(backoff_s=0.0))
    with TestClient(app) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 502

    # Some fan-out calls fail: the gateway selects among those that arrived, and says so.
    upstream = Upstream(honours_n=False)
    with _client(upstream, _policy("bon", 4), limits=Limits(backoff_s=0.0, retries=0)) as client:
        assert client.post("/v1/chat/completions", json=CHAT).json()["hedgetune"]["candidates"] == 4  # learns: n ignored
        upstream.fail = 2
        decision = client.post("/v1/chat/completions", json=CHAT).json()["hedgetune"]
        assert decision["failed"] == 2 and decision["candidates"] == 2  # 4 concurrent calls, 2 failed


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({**CHAT, "n": 10**9}).encode(), 400, "exceeds"),
        (json.dumps({**CHAT, "max_tokens": "abc"}).encode(), 400, "positive integer"),
        (json.dumps({**CHAT, "max_tokens": 10**9}).encode(), 400, "exceeds"),
        (json.dumps({**CHAT, "n": 2}).encode(), 400, "leave n at 1"),
        (json.dumps({**CHAT, "hedge": "yes"}).encode(), 400, "hedge"),
        (json.dumps({**CHAT, "hedge": {"mechanism": "bon", "n": 2, "x": 1}}).encode(), 400, "unknown key"),
        (b"{" + b'"a":' * 100_000 + b"1" + b"}" * 100_000, 413, "exceeds"),
    ],
)
def test_bad_requests_get_openai_style_errors(body: bytes, status: int, fragment: str) -> None:
    with _client(Upstream(), _policy("bon", 2), limits=Limits(max_body_bytes=100_000)) as client:
        reply = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == status, reply.text
    assert fragment in reply.json()["error"]["message"]


def test_bearer_token_health_and_metrics() -> None:
    auth = {"Authorization": "Bearer s3cret"}
    with _client(Upstream(), _policy("bop", 1.5), token="s3cret") as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 401
        ok = client.post("/v1/chat/completions", json=CHAT, headers=auth)
        assert ok.status_code == 200
        assert client.get("/health").json()["policy"]["mechanism"] == "bop"
        assert client.get("/metrics").status_code == 401 and client.get("/v1/models").status_code == 401
        text = client.get("/metrics", headers=auth).text
        assert "hedgetune_candidates_total" in text and 'mechanism="bop"' in text
    with _client(Upstream(), _policy("bop", 1.5), token="s3cret", public_metrics=True) as client:
        assert client.get("/metrics").status_code == 200 and client.get("/v1/models").status_code == 401


def test_policy_files(tmp_path: Path) -> None:
    table = ht.synthetic.make_table("toy", 200, 16, seed=0)
    path = tmp_path / "t.parquet"
    ht.write_table(table, path)
    result = ht.tune(table, "bop", bootstrap=100)
    policy = Policy.from_tune(result, path)
    saved = policy.save(tmp_path / "policy.json")
    loaded = Policy.load(saved)
    assert loaded == policy and loaded.theta == result.recommended_theta
    assert loaded.source["table_sha256"] and loaded.source["hedgetune_version"] == ht.__version__
    for text, fragment in (
        ("{", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"mechanism": "bop", "theta": "x", "proxy": "p", "options": {}}', "wrong type"),
        ('{"mechanism": "nope", "theta": 1, "proxy": "p", "options": {}}', "unknown mechanism"),
        ('{"mechanism": "bop", "theta": -1, "proxy": "p", "options": {}}', "invalid"),
        ('{"mechanism": "bop", "theta": 1, "proxy": "p", "options": {}, "extra": 1}', "unknown keys"),
    ):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(PolicyError, match=fragment):
            Policy.load(tmp_path / "bad.json")
    from click.testing import CliRunner

    from hedgetune.cli import main

    out = CliRunner().invoke(main, ["tune", str(path), "-m", "bon", "--bootstrap", "50", "--save-policy", str(tmp_path / "p.json")])
    assert out.exit_code == 0, out.output
    assert Policy.load(tmp_path / "p.json").mechanism == "bon"


def _serve_in_thread(app: Any) -> tuple[Any, str]:
    """Run an ASGI app with uvicorn on a free loopback port; returns (server, base URL)."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def _echo_upstream() -> Any:
    """A real HTTP upstream on loopback: each candidate echoes the prompt and its own number."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        n = body.get("n", 1)
        choices = [{"index": i, "text": f"{body['prompt']}|{'x' * (i + 1)}", "finish_reason": "stop"} for i in range(n)]
        return JSONResponse({"id": body["prompt"], "object": "text_completion", "choices": choices,
                             "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": 1 + n}})

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])


def test_loopback_load_loses_and_duplicates_nothing() -> None:
    """Real HTTP on loopback, both hops: 32 concurrent clients (each keeping its connection, as
    real clients do), 640 requests through the gateway; none lost, none answered twice or with
    another request's text."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    upstream, upstream_url = _serve_in_thread(_echo_upstream())
    gateway, gateway_url = _serve_in_thread(make_app(upstream_url, _policy("bon", 3), seed=1))
    local, clients = threading.local(), []
    try:
        def ask(i: int) -> tuple[int, str, int]:
            if not hasattr(local, "http"):
                local.http = httpx.Client(base_url=gateway_url, timeout=30)
                clients.append(local.http)
            reply = local.http.post("/v1/completions", json={"model": "m", "prompt": f"p{i}"})
            return i, reply.json()["choices"][0]["text"], reply.status_code

        with ThreadPoolExecutor(max_workers=32) as pool:
            results = list(pool.map(ask, range(640)))
        assert len(clients) > 1  # concurrent clients
        assert all(status == 200 for _, _, status in results)
        assert sorted(i for i, _, _ in results) == list(range(640))
        assert all(text == f"p{i}|xxx" for i, text, _ in results)  # its own prompt, the longest of 3
    finally:
        for http in clients:
            http.close()
        gateway.should_exit = upstream.should_exit = True


def test_the_policy_file_is_reloaded_when_it_changes(tmp_path: Path) -> None:
    import os

    path = tmp_path / "policy.json"
    _policy("bon", 2).save(path)
    app = make_app("http://upstream", str(path), transport=httpx.MockTransport(Upstream()), seed=0)
    with TestClient(app) as client:
        assert client.post("/v1/chat/completions", json=CHAT).json()["hedgetune"]["candidates"] == 2
        _policy("bon", 5).save(path)
        os.utime(path, ns=(1, 10**18))  # a new modification time whatever the clock's resolution
        assert client.post("/v1/chat/completions", json=CHAT).json()["hedgetune"]["candidates"] == 5
        path.write_text("{broken")
        os.utime(path, ns=(1, 2 * 10**18))
        reply = client.post("/v1/chat/completions", json=CHAT)  # served with the last good policy
        assert reply.status_code == 200 and reply.json()["hedgetune"]["candidates"] == 5
        assert "hedgetune_policy_reload_errors_total 1" in client.get("/metrics").text


def test_an_ensemble_policy_scores_like_the_table(tmp_path: Path) -> None:
    """An ensemble proxy tuned on a table is served with the table's own standardisation."""
    rng = np.random.default_rng(0)
    gold = rng.random((120, 8))
    proxies = {"length": gold + rng.normal(0, 0.3, gold.shape), "mean_logprob": gold + rng.normal(0, 0.3, gold.shape)}
    table = ht.with_ensemble(ht.RewardTable.from_arrays(proxies, gold), None, "mean-std", 0.5)
    result = ht.tune(table, "bon", bootstrap=50)
    policy = Policy.from_tune(result, table=table)
    assert policy.ensemble is not None and policy.ensemble["rule"] == "mean-std"
    from hedgetune.ensembles import ensemble_scores

    with _client(Upstream(), Policy(mechanism="bon", theta=3, proxy=policy.proxy, ensemble=policy.ensemble)) as client:
        decision = client.post("/v1/completions", json={"model": "m", "prompt": "x"}).json()["hedgetune"]
    # The stub's three candidates are "w", "w w", "w w w" with token log-probs -0.1, -0.2, 0.
    recipe = policy.ensemble
    expected = ensemble_scores(
        {"length": np.array([1.0, 3.0, 5.0]), "mean_logprob": np.array([-0.1, -0.2, 0.0])},
        "mean-std",
        0.5,
        recipe["centres"],
        recipe["scales"],
    )
    assert decision["proxy"] == policy.proxy
    np.testing.assert_allclose(decision["scores"], expected, rtol=1e-12)


def test_repeated_rewards_make_an_ensemble(tmp_path: Path) -> None:
    """``--reward length --reward mean_logprob``: standardised across the request's candidates and
    combined by the rule; with the policy's own members, the policy's recipe is used instead."""
    from hedgetune.ensembles import ensemble_name

    # The stub's three candidates: lengths 1, 3, 5 and mean token log-probs -0.1, -0.2, 0.
    length, logprob = np.array([1.0, 3.0, 5.0]), np.array([-0.1, -0.2, 0.0])
    z = [(v - v.mean()) / v.std() for v in (length, logprob)]
    prompt = {"model": "m", "prompt": "x"}
    for rule, k, expected in [("min", 1.0, np.minimum(*z)), ("mean-std", 2.0, (z[0] + z[1]) / 2 - 2.0 * np.abs(z[0] - z[1]) / 2)]:
        with _client(Upstream(), _policy("bon", 3), reward=["length", "mean_logprob"], ensemble=rule, ensemble_k=k) as client:
            decision = client.post("/v1/completions", json=prompt).json()["hedgetune"]
        np.testing.assert_allclose(decision["scores"], expected, rtol=1e-12)
        assert decision["chosen"] == int(np.argmax(expected)) and decision["proxy"] == ensemble_name(["length", "mean_logprob"], rule, k)
    with _client(Upstream(), _policy("bon", 3), reward=["length", "mean_logprob"]) as client:  # default: mean
        np.testing.assert_allclose(client.post("/v1/completions", json=prompt).json()["hedgetune"]["scores"], (z[0] + z[1]) / 2)
    recipe = {"ensemble": ["length", "mean_logprob"], "rule": "mean", "k": 1.0, "centres": [2.0, -1.0], "scales": [4.0, 0.5]}
    policy = Policy(mechanism="bon", theta=3, proxy="ensemble_mean(length,mean_logprob)", ensemble=recipe)
    with _client(Upstream(), policy, reward=["length", "mean_logprob"]) as client:
        scores = client.post("/v1/completions", json=prompt).json()["hedgetune"]["scores"]
    np.testing.assert_allclose(scores, ((length - 2.0) / 4.0 + (logprob + 1.0) / 0.5) / 2, rtol=1e-12)
    for bad, message in [(dict(reward=["length", "length"]), "once"), (dict(reward=["length"], ensemble="mean"), "two rewards"),
                         (dict(reward=["length", "judge"], ensemble="max"), "rule must be")]:
        with pytest.raises(ValueError, match=message):
            make_app("http://upstream", _policy("bon", 3), **bad)  # type: ignore[arg-type]


def test_the_decision_log_becomes_a_calibration_table(tmp_path: Path) -> None:
    """Closing the loop: log decisions, label them, build a table, re-tune on it."""
    from click.testing import CliRunner

    from hedgetune.cli import main
    from hedgetune.gateway.log import read_log

    app = make_app(
        "http://upstream", _policy("bon", 3), transport=httpx.MockTransport(Upstream()), seed=0,
        log_dir=tmp_path / "log", log_rotate=4,
    )
    with TestClient(app) as client:
        ids = [client.post("/v1/completions", json={"model": "m", "prompt": f"q{i}"}).json()["hedgetune"]["request_id"] for i in range(10)]
    log = read_log(tmp_path / "log")
    assert len(list((tmp_path / "log").glob("log-*.parquet"))) == 3  # rotated after 4 and 8, flushed at shutdown
    assert log.num_rows == 30 and sorted(set(log.column("request_id").to_pylist())) == sorted(ids)
    assert sum(log.column("chosen").to_pylist()) == 10
    gold = tmp_path / "gold.jsonl"
    rows = [{"request_id": r, "candidate": c, "true_reward": float(c == 1)} for r in ids for c in range(3)]
    gold.write_text("\n".join(json.dumps(r) for r in rows[:-1]) + "\n")  # the last label is missing
    runner = CliRunner()
    out = runner.invoke(main, ["log-table", str(tmp_path / "log"), "--gold", str(gold), "--out", str(tmp_path / "t.parquet")])
    assert out.exit_code == 2 and "no gold label" in out.stderr
    out = runner.invoke(
        main, ["log-table", str(tmp_path / "log"), "--gold", str(gold), "--missing", "drop", "--out", str(tmp_path / "t.parquet")]
    )
    assert out.exit_code == 0, out.output
    table = ht.read_table(tmp_path / "t.parquet")
    assert table.n_prompts == 10 and table.n_responses == 29 and table.proxy == "length"
    assert table.true_reward is not None and table.true_reward.sum() == 10.0  # one right answer each
    assert np.isfinite(ht.tune(table, "bon", bootstrap=50).true_reward)  # and it can be re-tuned


@pytest.mark.parametrize(
    "fault", [httpx.ReadTimeout("hung"), httpx.RemoteProtocolError("closed"), httpx.ConnectError("refused")]
)
def test_an_upstream_that_hangs_or_drops_the_connection(fault: Exception) -> None:
    """Timeouts and dropped connections are retried, then answered with a 502, never a crash; a
    dead upstream is not fanned out to (the first call's tries are all it gets)."""
    calls = []

    def broken(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise fault

    app = make_app("http://upstream", _policy("bon", 2), transport=httpx.MockTransport(broken), limits=Limits(backoff_s=0.0, retries=2))
    with TestClient(app) as client:
        reply = client.post("/v1/chat/completions", json=CHAT)
        assert reply.status_code == 502 and type(fault).__name__ in reply.json()["error"]["message"]
        assert "hedgetune_upstream_errors_total" in client.get("/metrics").text
    assert len(calls) == 3  # the n-request, tried 1 + 2 times; no fill-ins to a dead upstream


class _RawUpstream:
    """A real TCP server on loopback that misbehaves at the HTTP level: it answers 503, sends
    bytes that are not JSON, closes the connection without a reply, or never answers."""

    def __init__(self, fault: str) -> None:
        import asyncio
        import threading

        self.fault, self.calls = fault, 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def start() -> None:
            self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
            self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
            ready.set()

        threading.Thread(target=lambda: (self.loop.run_until_complete(start()), self.loop.run_forever()), daemon=True).start()
        ready.wait(10)

    async def handle(self, reader: Any, writer: Any) -> None:
        import asyncio

        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
            await reader.readexactly(length[0] if length else 0)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        self.calls += 1
        if self.fault == "hang":
            await asyncio.sleep(30)
        elif self.fault in ("503", "garbage"):
            status, body = (b"503 Service Unavailable", b"busy") if self.fault == "503" else (b"200 OK", b"{not json")
            writer.write(b"HTTP/1.1 " + status + b"\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        writer.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)


@pytest.mark.parametrize("fault, named", [("hang", "deadline"), ("close", "ServerDisconnected"), ("503", "HTTP 503"), ("garbage", "malformed JSON")])
def test_the_real_client_against_a_misbehaving_upstream(fault: str, named: str) -> None:
    """The same faults over real sockets, through the gateway's own (aiohttp) client: retried
    within the deadline, then a 502 (504 when the deadline passed) that names the failure; nothing
    hangs, nothing crashes."""
    import time

    upstream = _RawUpstream(fault)
    app = make_app(upstream.url, _policy("bon", 2), limits=Limits(backoff_s=0.0, retries=1, deadline_s=0.5))
    try:
        with TestClient(app) as client:
            started = time.monotonic()
            reply = client.post("/v1/chat/completions", json=CHAT)
            assert time.monotonic() - started < 3.0  # one deadline bounds every attempt
            assert reply.status_code == (504 if fault == "hang" else 502), reply.text
            assert reply.json()["error"]["type"] == ("timeout_error" if fault == "hang" else "upstream_error")
            assert named in reply.json()["error"]["message"]
            assert client.get("/v1/models").status_code == 502
        assert upstream.calls >= 2 if fault != "hang" else upstream.calls >= 1  # retried
    finally:
        upstream.stop()


def test_trained_reward_heads_are_saved_and_served(tmp_path: Path) -> None:
    """A head saved by train-proxy scores candidates at the gateway exactly as in training."""
    from hedgetune.gateway.scoring import Scorer
    from hedgetune.pipeline.train_proxy import BradleyTerryHead, head_features

    rng = np.random.default_rng(0)
    dim = head_features(["q"], ["a"]).shape[1]
    head = BradleyTerryHead(rng.normal(size=dim), rng.normal(size=dim), rng.random(dim) + 0.5, 10, 0.0, 1.0)
    path = head.save(tmp_path / "rm.json")
    loaded = BradleyTerryHead.load(path)
    np.testing.assert_array_equal(loaded.weights, head.weights)
    responses = ["4", "four, since 2 + 2 = 4", "5"]
    expected = head.score(head_features(["2+2?"] * 3, responses))
    np.testing.assert_allclose(Scorer(str(path)).score("2+2?", responses, [[]] * 3), expected, rtol=1e-12)
    for text, fragment in (
        ("{}", "not a hedgetune reward head"),
        ('{"kind": "bradley-terry-head", "features": "other"}', "other features"),
        (json.dumps({"kind": "bradley-terry-head", "features": json.loads(path.read_text())["features"],
                     "weights": [1, 2], "mean": [0], "scale": [1]}), "one length"),
        ("[", "cannot read"),
    ):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ValueError, match=fragment):
            Scorer(str(tmp_path / "bad.json"))


def test_a_remote_scoring_server(tmp_path: Path) -> None:
    """The gateway scores with a server speaking vLLM's score API (ours, on loopback: vLLM itself
    needs a GPU); its scores decide the choice."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def score(request: Request) -> JSONResponse:
        body = await request.json()
        # Prefers the *shortest* candidate, unlike the length proxy.
        data = [{"index": i, "object": "score", "score": -float(len(t))} for i, t in enumerate(body["text_2"])]
        return JSONResponse({"object": "list", "data": data})

    scorer_server, scorer_url = _serve_in_thread(Starlette(routes=[Route("/score", score, methods=["POST"])]))
    try:
        with _client(Upstream(), _policy("bon", 4), reward=scorer_url) as client:
            decision = client.post("/v1/chat/completions", json=CHAT).json()["hedgetune"]
        assert decision["proxy"] == scorer_url and decision["chosen"] == 0
        assert decision["scores"] == [-1.0, -3.0, -5.0, -7.0]
    finally:
        scorer_server.should_exit = True


def test_a_full_queue_answers_429_with_retry_after() -> None:
    """One slot and no queue: while a slow request holds the slot, others are told to retry."""
    import threading

    release = threading.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        import asyncio

        while not release.is_set():
            await asyncio.sleep(0.01)
        return Upstream()(request)

    app = make_app(
        "http://upstream", _policy("bon", 1), transport=httpx.MockTransport(slow), limits=Limits(max_concurrency=1, max_queue=0)
    )
    gateway, url = _serve_in_thread(app)
    try:
        results: list[httpx.Response] = []
        first = threading.Thread(target=lambda: results.append(httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30)))
        first.start()
        import time

        time.sleep(0.3)  # the first request now holds the only slot
        busy = httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30)
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        assert busy.json()["error"]["type"] == "rate_limit_error"
        release.set()
        first.join()
        assert results[0].status_code == 200
    finally:
        gateway.should_exit = True


def test_a_scorer_loads_its_model_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Models are loaded on first use and kept: never once per request."""
    from hedgetune.gateway.scoring import Scorer
    from hedgetune.pipeline import embeddings
    from hedgetune.pipeline.train_proxy import BradleyTerryHead, head_features

    real = embeddings.minilm_model
    loads = []
    monkeypatch.setattr(embeddings, "minilm_model", lambda: loads.append(1) or real())
    dim = head_features(["q"], ["a"], real()).shape[1]
    path = BradleyTerryHead(np.ones(dim), np.zeros(dim), np.ones(dim), 1, 0.0, 1.0).save(tmp_path / "h.json")
    for name in (str(path), "similarity"):
        loads.clear()
        scorer = Scorer(name)
        for _ in range(3):
            scorer.score("q", ["a", "bb"], [[], []])
        assert len(loads) == 1, name
