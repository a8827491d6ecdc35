"""``hedgetune serve``: a small OpenAI-compatible completions server over a local model.

``POST /v1/completions`` (``prompt``, ``n``, ``max_tokens``, ``temperature``, ``top_p``, ``seed``)
answers with ``n`` choices and their token log-probabilities; ``GET /v1/models`` lists the model.
Requests are served one at a time on the model (the HTTP layer is threaded). Meant for local
pipelines and tests, on loopback.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..protocol.requests import MAX_BODY_BYTES, MAX_N, MAX_TOKENS, RequestError, check_body, parse_body
from .backends import TransformersBackend


def make_server(
    backend: TransformersBackend, host: str = "127.0.0.1", port: int = 8000
) -> ThreadingHTTPServer:
    lock = threading.Lock()
    backend.load()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": str(backend.model), "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                length = self.headers.get("Content-Length", "")
                if not length.isdigit():
                    raise RequestError(400, "a Content-Length header is required")
                if int(length) > MAX_BODY_BYTES:
                    raise RequestError(413, f"the body exceeds {MAX_BODY_BYTES} bytes")
                body = parse_body(self.rfile.read(int(length)))
                check_body(body, max_n=MAX_N, max_tokens=MAX_TOKENS)
                prompt = body.get("prompt")
                if not isinstance(prompt, str):
                    raise RequestError(400, "prompt must be a string")
                n = int(body.get("n", 1))
            except RequestError as exc:
                self.close_connection = True
                self._send(exc.status, {"error": {"message": exc.message, "type": "invalid_request_error"}})
                return
            with lock:
                samples = backend.sample_text(
                    prompt,
                    n,
                    int(body.get("seed", 0)),
                    max_new_tokens=int(body.get("max_tokens", 16)),
                    temperature=float(body.get("temperature", 1.0)),
                    top_p=float(body.get("top_p", 1.0)),
                )
            self._send(
                200,
                {
                    "id": f"cmpl-{time.time_ns()}",
                    "object": "text_completion",
                    "created": int(time.time()),
                    "model": str(backend.model),
                    "choices": [
                        {
                            "index": i,
                            "text": s.text,
                            "finish_reason": "length",
                            "logprobs": {"token_logprobs": s.token_logprobs},
                        }
                        for i, s in enumerate(samples)
                    ],
                },
            )

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args(argv)
    server = make_server(TransformersBackend(model=args.model), args.host, args.port)
    print(f"serving {args.model} on http://{args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
