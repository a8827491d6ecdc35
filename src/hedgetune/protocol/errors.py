"""OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any

#: The ``type`` and ``code`` an error gets from its HTTP status when the raiser names none.
_KINDS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_value"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "override_not_allowed"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    408: ("timeout_error", "request_timeout"),
    413: ("invalid_request_error", "body_too_large"),
    422: ("invalid_request_error", "invalid_value"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    499: ("client_closed_request", "client_closed_request"),
    500: ("server_error", "internal_error"),
    502: ("upstream_error", "upstream_failed"),
    503: ("server_error", "unavailable"),
    504: ("timeout_error", "deadline_exceeded"),
}


class UpstreamError(RuntimeError):
    """An upstream server (a model server hedgetune calls) could not be reached or refused the
    request; the message is one line with credentials redacted."""


class ApiError(Exception):
    """An error answered to a client as JSON in OpenAI's schema; ``param`` names the offending
    request field (``"hedge.n"``, ``"logprobs"``) or is ``None``."""

    def __init__(
        self, status: int, message: str, kind: str | None = None, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        default_kind, default_code = _KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", "error"))
        self.status, self.message = status, message
        self.kind, self.param, self.code = kind or default_kind, param, code or default_code

    def to_dict(self) -> dict[str, Any]:
        return error_body(self.message, self.kind, self.param, self.code)


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
