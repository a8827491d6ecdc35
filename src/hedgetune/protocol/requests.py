"""Checks of OpenAI-style request bodies shared by ``hedgetune gateway`` and ``hedgetune serve``:
a malformed or absurd request gets a 4xx with a message naming the field, never a crash or a huge
allocation."""

from __future__ import annotations

import json
import math
from typing import Any

#: Default caps (both servers take them as settings).
MAX_BODY_BYTES = 1 << 20
MAX_N = 64
MAX_TOKENS = 8192


class RequestError(ValueError):
    """A request the server refuses: ``status`` (400 or 413), a message for the client and the
    offending field (``param``)."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def parse_body(raw: bytes, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The JSON object of a request body."""
    if len(raw) > max_bytes:
        raise RequestError(413, f"the body exceeds {max_bytes} bytes")
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise RequestError(400, "the body is not valid JSON (NaN and Infinity are not JSON)") from None
    if not isinstance(body, dict):
        raise RequestError(400, "the body must be a JSON object")
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(400, "the body holds text that is not valid Unicode (a lone surrogate such as \\ud800)") from None
    return body


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def check_body(body: dict[str, Any], max_n: int = MAX_N, max_tokens: int = MAX_TOKENS) -> None:
    """Types and ranges of the sampling fields a server acts on."""
    for key in ("n", "max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RequestError(400, f"{key} must be a positive integer", key)
        cap = max_n if key == "n" else max_tokens
        if value > cap:
            raise RequestError(400, f"{key} = {value} exceeds the server's limit of {cap}", key)
    for key, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise RequestError(400, f"{key} must be a number", key)
        if not low <= value <= high:
            raise RequestError(400, f"{key} must lie in [{low:g}, {high:g}], got {value}", key)
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63):
        raise RequestError(400, "seed must be a non-negative integer below 2**63", "seed")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise RequestError(400, f"stream must be true or false, got {json.dumps(stream)[:40]}", "stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool)):
        raise RequestError(400, 'stream_options must be an object like {"include_usage": true}', "stream_options")


def check_chat(body: dict[str, Any]) -> None:
    """The fields of a chat-completions request: ``messages`` and the chat form of ``logprobs``."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty list of {role, content} objects", "messages")
    for k, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(400, f"messages[{k}] must be an object with a string role", f"messages[{k}]")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise RequestError(400, f"messages[{k}].content must be a string or a list of parts", f"messages[{k}].content")
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise RequestError(400, "logprobs must be true or false on chat completions", "logprobs")
    top = body.get("top_logprobs")
    if top is not None and (not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= 20):
        raise RequestError(400, "top_logprobs must be an integer in [0, 20]", "top_logprobs")


def check_completion(body: dict[str, Any], single_prompt: bool = False) -> None:
    """The fields of a (legacy) completions request: ``prompt`` and the integer ``logprobs``."""
    prompt = body.get("prompt")
    if single_prompt:
        if not isinstance(prompt, str):
            raise RequestError(400, "prompt must be a string (one prompt per request)", "prompt")
    elif not isinstance(prompt, str) and not (isinstance(prompt, list) and prompt):
        raise RequestError(400, "prompt must be a string or a non-empty list", "prompt")
    logprobs = body.get("logprobs")
    if logprobs is not None and (not isinstance(logprobs, int) or isinstance(logprobs, bool) or not 0 <= logprobs <= 5):
        raise RequestError(400, "logprobs must be an integer in [0, 5] on completions", "logprobs")


def message_text(content: Any) -> str:
    """The text of a chat message's ``content``: the string itself, or the text parts of a list of
    content parts joined (images and other parts carry no text); ``""`` otherwise."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""
