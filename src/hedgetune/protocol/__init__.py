"""The OpenAI HTTP protocol as hedgetune's servers and clients speak it: request validation, the
error object, the retry policy and credential redaction.

Neutral ground: ``hedgetune.gateway`` and ``hedgetune.pipeline`` (``serve``, the OpenAI backend)
both import from here, never from each other.
"""

from .errors import ApiError, UpstreamError, error_body
from .redact import redact
from .requests import (
    MAX_BODY_BYTES,
    MAX_N,
    MAX_TOKENS,
    RequestError,
    check_body,
    check_chat,
    check_completion,
    message_text,
    parse_body,
)
from .retry import Deadline, RetryPolicy

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_N",
    "MAX_TOKENS",
    "ApiError",
    "Deadline",
    "RequestError",
    "RetryPolicy",
    "UpstreamError",
    "check_body",
    "check_chat",
    "check_completion",
    "error_body",
    "message_text",
    "parse_body",
    "redact",
]
