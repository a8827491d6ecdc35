"""``hedgetune serve``: a small OpenAI-compatible server over a local model.

Routes: ``POST /v1/completions`` (``prompt``), ``POST /v1/chat/completions`` (``messages``,
wrapped in the model's chat template), ``GET /v1/models``, ``GET /health``. Both completion routes
take ``n``, ``max_tokens``, ``temperature`` (0: greedy decoding), ``top_p`` and ``seed``, and
answer every choice's token log-probabilities (chat: when ``logprobs`` is true) and ``usage``.

Fair service on one model: requests run one at a time; at most ``max_queue`` wait, and the next
one is answered 429 with ``Retry-After``. One request may ask for at most ``max_batch_tokens``
tokens in all (``n * max_tokens``), which also bounds the memory of its log-probabilities. A
client that disconnects stops its generation at the next token, and is dropped from the queue.
Every error is JSON in OpenAI's schema; text that is not valid Unicode gets a 400. Meant for local
pipelines and tests, on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..protocol import (
    MAX_BODY_BYTES,
    MAX_N,
    MAX_TOKENS,
    ApiError,
    RequestError,
    check_body,
    message_text,
    parse_body,
)
from ..protocol.requests import check_chat, check_completion
from .backends import TransformersBackend

#: Default cap on n * max_tokens of one request.
MAX_BATCH_TOKENS = 1024
#: Default number of requests that may wait for the model.
MAX_QUEUE = 4
#: Seconds a client has to send a whole request (line, headers, body).
READ_DEADLINE_S = 10.0


def client_gone(sock: socket.socket) -> bool:
    """Whether the peer closed the connection (readable with nothing to read)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def make_server(
    backend: TransformersBackend,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
    max_queue: int = MAX_QUEUE,
) -> ModelServer:
    """The server, its model loaded, not yet serving (call ``serve_forever``)."""
    backend.load()
    return ModelServer((host, port), backend, max_batch_tokens, max_queue)


class ModelServer(ThreadingHTTPServer):
    """One model behind the routes of :class:`_Handler`: one generation at a time, a bounded queue."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], backend: Any, max_batch_tokens: int, max_queue: int) -> None:
        super().__init__(address, _Handler)
        self.backend, self.max_batch_tokens, self.max_queue = backend, max_batch_tokens, max_queue
        self.model_lock, self.queue_lock = threading.Lock(), threading.Lock()
        self.waiting = 0


class _Handler(BaseHTTPRequestHandler):
    server: ModelServer

    protocol_version = "HTTP/1.1"
    timeout = 30  # no byte for 30 s: the connection is dropped
    #: The whole request (line, headers and body) must arrive within this many seconds: a client
    #: dribbling a byte at a time (slowloris) is dropped instead of holding a thread for ever.
    read_deadline = READ_DEADLINE_S

    def handle_one_request(self) -> None:
        self._deadline = threading.Timer(self.read_deadline, self._drop_slow_client)
        self._deadline.daemon = True
        self._deadline.start()
        try:
            super().handle_one_request()
        finally:
            self._deadline.cancel()

    def _request_read(self) -> None:
        """The request has arrived whole: generation may take as long as it takes."""
        self._deadline.cancel()

    def _drop_slow_client(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _send(self, status: int, body: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client left

    def _error(self, exc: ApiError) -> None:
        self.close_connection = True
        self._send(exc.status, exc.to_dict(), {"Retry-After": "1"} if exc.status == 429 else None)

    def do_GET(self) -> None:
        self._request_read()
        path = self.path.rstrip("/")
        if path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": str(self.server.backend.model), "object": "model"}]})
        elif path == "/health":
            self._send(200, {"status": "ok"})
        else:
            self._error(ApiError(404, f"no route {self.path}"))

    def do_POST(self) -> None:
        kind = {"/v1/completions": "completions", "/v1/chat/completions": "chat"}.get(self.path.rstrip("/"))
        try:
            if kind is None:
                raise ApiError(404, f"no route {self.path}")
            body = self._body(kind)
            self._generate(kind, body)
        except ApiError as exc:
            self._error(exc)
        except Exception:  # a bug: a JSON 500, never a dropped connection
            self._error(ApiError(500, "internal error in the model server"))

    def do_PUT(self) -> None:
        self._request_read()
        self._error(ApiError(405, f"PUT is not allowed on {self.path}"))

    do_DELETE = do_PATCH = do_PUT

    def _body(self, kind: str) -> dict[str, Any]:
        try:
            length = self.headers.get("Content-Length", "")
            if not length.isdigit():
                raise RequestError(400, "a Content-Length header is required")
            if int(length) > MAX_BODY_BYTES:
                raise RequestError(413, f"the body exceeds {MAX_BODY_BYTES} bytes")
            body = parse_body(self.rfile.read(int(length)))
            self._request_read()
            check_body(body, max_n=MAX_N, max_tokens=MAX_TOKENS)
            if kind == "chat":
                check_chat(body)
            else:
                check_completion(body, single_prompt=True)
        except RequestError as exc:
            raise ApiError(exc.status, exc.message, param=exc.param) from None
        n, tokens = int(body.get("n", 1)), int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        if n * tokens > self.server.max_batch_tokens:
            raise ApiError(400, f"n * max_tokens = {n * tokens} exceeds this server's limit of {self.server.max_batch_tokens} "
                           "tokens per request", param="max_tokens")
        return body

    def _generate(self, kind: str, body: dict[str, Any]) -> None:
        server = self.server
        with server.queue_lock:
            if server.waiting >= server.max_queue + 1:  # one running, max_queue waiting
                raise ApiError(429, "the model server is busy; retry shortly")
            server.waiting += 1
        try:
            while not server.model_lock.acquire(timeout=0.2):
                if client_gone(self.connection):
                    self.close_connection = True
                    return
            try:
                text = self._prompt_text(kind, body)
                n = int(body.get("n", 1))
                temperature = float(body.get("temperature", 1.0))
                samples = self.server.backend.sample_text(
                    text, n, int(body.get("seed", 0)),
                    max_new_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or 16),
                    temperature=temperature, top_p=float(body.get("top_p", 1.0)),
                    stop=lambda: client_gone(self.connection),
                )
                prompt_tokens = self.server.backend.count_tokens(text)
            finally:
                server.model_lock.release()
        finally:
            with server.queue_lock:
                server.waiting -= 1
        if client_gone(self.connection):
            self.close_connection = True
            return
        self._send(200, self._reply(kind, body, samples, prompt_tokens))

    def _prompt_text(self, kind: str, body: dict[str, Any]) -> str:
        if kind == "completions":
            return str(body["prompt"])
        messages = [{"role": m["role"], "content": message_text(m.get("content"))} for m in body["messages"]]
        return self.server.backend.chat_messages(messages)

    def _reply(self, kind: str, body: dict[str, Any], samples: list[Any], prompt_tokens: int) -> dict[str, Any]:
        completion_tokens = sum(len(s.token_logprobs) for s in samples)
        choices = []
        for i, s in enumerate(samples):
            finish = "length" if len(s.token_logprobs) >= int(body.get("max_tokens") or 16) else "stop"
            if kind == "chat":
                choice: dict[str, Any] = {"index": i, "message": {"role": "assistant", "content": s.text},
                                          "finish_reason": finish}
                if body.get("logprobs"):
                    choice["logprobs"] = {"content": [{"token": "", "logprob": v} for v in s.token_logprobs]}
            else:
                choice = {"index": i, "text": s.text, "finish_reason": finish,
                          "logprobs": {"token_logprobs": s.token_logprobs}}
            choices.append(choice)
        return {
            "id": f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{time.time_ns()}",
            "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": int(time.time()),
            "model": str(self.server.backend.model),
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }



def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max-batch-tokens", type=int, default=MAX_BATCH_TOKENS)
    parser.add_argument("--max-queue", type=int, default=MAX_QUEUE)
    args = parser.parse_args(argv)
    server = make_server(TransformersBackend(model=args.model), args.host, args.port, args.max_batch_tokens, args.max_queue)
    print(f"serving {args.model} on http://{args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
