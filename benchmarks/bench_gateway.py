"""The gateway's cost, measured on loopback with real HTTP on both hops (uvicorn servers).

* overhead: latency of a hedged Best-of-1 request through the gateway minus a direct request to
  an instant stub upstream (p50 and p99), and the gateway's throughput with 32 concurrent clients;
* pass-through: throughput through the gateway (``"hedge": false``) as a share of calling the
  upstream directly, with an upstream that takes 20 ms per request (target >= 90%);
* concurrency: latency of a Best-of-8 request when the upstream ignores ``n`` (8 concurrent calls
  of 20 ms each) over a single request's (target <= 1.5x).

The stub upstream and the gateway each run in their own process (uvicorn), the clients in this
one. Run: ``.venv/bin/python benchmarks/bench_gateway.py`` (needs the ``gateway`` extra).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from typing import Any

import httpx
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hedgetune.gateway import Policy
from hedgetune.gateway.app import Limits, make_app
from hedgetune.gateway.support import Calibration


def stub(delay: float, honours_n: bool) -> Starlette:
    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        await asyncio.sleep(delay)
        n = body.get("n", 1) if honours_n else 1
        choices = [{"index": i, "text": "x" * (i + 1), "finish_reason": "stop"} for i in range(n)]
        return JSONResponse({"id": "c", "object": "text_completion", "choices": choices, "usage": {"total_tokens": n}})

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    """This script in another process serving one app (own GIL, as in a real deployment)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, *args, str(port)])
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process, url
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{args} did not start")


async def latencies(url: str, body: dict[str, Any], requests: int, concurrency: int) -> tuple[np.ndarray, float]:
    """Per-request latencies and the wall time of ``requests`` requests from ``concurrency`` clients."""
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        times: list[float] = []
        queue = list(range(requests))

        async def worker() -> None:
            while queue:
                queue.pop()
                start = time.perf_counter()
                reply = await client.post("/v1/completions", json=body)
                reply.raise_for_status()
                times.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return np.array(times), time.perf_counter() - start


def _best_of_8_ratio(upstream_url: str, gateway_url: str, body: dict[str, Any], requests: int) -> float:
    """Median latency of a Best-of-8 request through the gateway over one request to the upstream."""
    single, _ = asyncio.run(latencies(upstream_url, body, requests, 1))
    asyncio.run(latencies(gateway_url, body, 1, 1))  # the first reply shows that the upstream ignores n
    best_of_8, _ = asyncio.run(latencies(gateway_url, body, requests, 1))
    return float(np.median(best_of_8) / np.median(single))


def main(requests: int = 2000) -> dict[str, float]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        return _measure(requests, started)
    finally:  # never leave a server behind, whatever happened
        for process in started:
            process.kill()


def _pair(delay: float, honours_n: bool, n: int, started: list[subprocess.Popen[bytes]]) -> tuple[str, str]:
    """A stub upstream and a Best-of-``n`` gateway in front of it, each in its own process."""
    upstream, upstream_url = spawn("--stub", str(delay), "1" if honours_n else "0")
    gateway, gateway_url = spawn("--gateway", upstream_url, str(n))
    started += [upstream, gateway]
    return upstream_url, gateway_url


def _measure(requests: int, started: list[subprocess.Popen[bytes]]) -> dict[str, float]:
    body = {"model": "m", "prompt": "p"}
    out: dict[str, float] = {}
    fast_url, gateway_url = _pair(0.0, True, 1, started)
    direct, _ = asyncio.run(latencies(fast_url, body, 500, 1))
    hedged, _ = asyncio.run(latencies(gateway_url, body, 500, 1))
    out["overhead_p50_ms"] = 1e3 * (np.median(hedged) - np.median(direct))
    out["overhead_p99_ms"] = 1e3 * (np.quantile(hedged, 0.99) - np.quantile(direct, 0.99))
    _, wall = asyncio.run(latencies(gateway_url, body, requests, 32))
    out["hedged_requests_per_s"] = requests / wall
    print(
        f"gateway overhead per request (Best-of-1, instant upstream): p50 {out['overhead_p50_ms']:.2f} ms, "
        f"p99 {out['overhead_p99_ms']:.2f} ms; {out['hedged_requests_per_s']:.0f} hedged requests/s with 32 clients"
    )
    slow_url, gateway_url = _pair(0.02, False, 8, started)
    _, direct_wall = asyncio.run(latencies(slow_url, body, requests, 32))
    _, through_wall = asyncio.run(latencies(gateway_url, {**body, "hedge": False}, requests, 32))
    out["passthrough_share"] = direct_wall / through_wall
    out["best_of_8_latency_ratio"] = _best_of_8_ratio(slow_url, gateway_url, body, 100)
    print(
        f"pass-through throughput {100 * out['passthrough_share']:.0f}% of direct (target >= 90%); "
        f"Best-of-8 latency {out['best_of_8_latency_ratio']:.2f}x one request when the upstream ignores n (target <= 1.5x)"
    )
    # The same with a 100 ms upstream (a short generation): the gateway's fixed cost weighs less.
    slow_url, gateway_url = _pair(0.1, False, 8, started)
    out["best_of_8_latency_ratio_100ms"] = _best_of_8_ratio(slow_url, gateway_url, body, 30)
    print(f"with a 100 ms upstream: Best-of-8 latency {out['best_of_8_latency_ratio_100ms']:.2f}x one request")
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["--stub"]:  # --stub DELAY HONOURS_N PORT
        app = stub(float(sys.argv[2]), sys.argv[3] == "1")
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[4]), log_level="error")
    elif sys.argv[1:2] == ["--gateway"]:  # --gateway UPSTREAM N PORT
        # The guards on: a calibrated policy places every candidate in its support before selection.
        calibration = Calibration.from_values(np.arange(1.0, 9.0), np.arange(1.0, 9.0))
        policy = Policy("bon", float(sys.argv[3]), "length", calibration=calibration)
        app = make_app(sys.argv[2], policy, limits=Limits(max_concurrency=64), seed=0)
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[4]), log_level="error")
    else:
        main()
