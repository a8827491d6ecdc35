"""Checks of OpenAI-style request bodies shared by ``hedgetune gateway`` and ``hedgetune serve``:
a malformed or absurd request gets a 4xx with a message, never a crash or a huge allocation."""

from __future__ import annotations

import json
import math
from typing import Any

#: Default caps (both servers take them as settings).
MAX_BODY_BYTES = 1 << 20
MAX_N = 64
MAX_TOKENS = 8192


class RequestError(ValueError):
    """A request the server refuses: ``status`` (400 or 413) and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def parse_body(raw: bytes, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The JSON object of a request body."""
    if len(raw) > max_bytes:
        raise RequestError(413, f"the body exceeds {max_bytes} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise RequestError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RequestError(400, "the body must be a JSON object")
    return body


def check_body(body: dict[str, Any], max_n: int = MAX_N, max_tokens: int = MAX_TOKENS) -> None:
    """Types and ranges of the sampling fields a server acts on."""
    for key in ("n", "max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RequestError(400, f"{key} must be a positive integer")
        cap = max_n if key == "n" else max_tokens
        if value > cap:
            raise RequestError(400, f"{key} = {value} exceeds the server's limit of {cap}")
    for key, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise RequestError(400, f"{key} must be a number")
        if not low <= value <= high:
            raise RequestError(400, f"{key} must lie in [{low:g}, {high:g}], got {value}")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63):
        raise RequestError(400, "seed must be a non-negative integer")
