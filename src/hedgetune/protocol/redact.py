"""Removing anything credential-like from text relayed to a client or written to a log."""

from __future__ import annotations

import re
from collections.abc import Iterable

_PATTERNS = (
    re.compile(r"(?i)\b(authorization|proxy-authorization|x-api-key|api[-_]?key|token|password|secret)\b(\"?\s*[:=]\s*\"?)[^\s\"',;&}]+"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)\bbasic\s+[A-Za-z0-9+/=]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/\s:@]*:[^/\s@]*@"),  # user:password@ in URLs
)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with known ``secrets`` and credential-shaped substrings (bearer tokens, API keys,
    ``key=value`` credentials, passwords in URLs) replaced by ``[redacted]``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _PATTERNS[0].sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
    text = _PATTERNS[1].sub("Bearer [redacted]", text)
    text = _PATTERNS[2].sub("Basic [redacted]", text)
    text = _PATTERNS[3].sub("[redacted]", text)
    return _PATTERNS[4].sub(lambda m: f"{m.group(1)}[redacted]@", text)
