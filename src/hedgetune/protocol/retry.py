"""One retry policy for every HTTP client hedgetune runs (the gateway's upstream calls, the
pipeline's OpenAI backend), and the whole-request deadline the gateway bounds them with."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

#: Statuses worth another try: the server was busy or failed, not the request.
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more tries after the first, waiting ``backoff_s * 2**(k-1)`` before try k
    (times a uniform factor in [1, 2) when ``jitter``), for connection failures and the statuses
    of :data:`RETRY_STATUS`."""

    retries: int = 2
    backoff_s: float = 0.2
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.retries < 0 or not self.backoff_s >= 0:
            raise ValueError(f"retries and backoff_s must be >= 0, got {self.retries} and {self.backoff_s}")

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def retryable(self, status: int) -> bool:
        return status in RETRY_STATUS

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try ``attempt`` (0-based; the first try waits nothing)."""
        if attempt <= 0:
            return 0.0
        base = self.backoff_s * 2 ** (attempt - 1)
        return base * (1.0 + random.random()) if self.jitter else base


class Deadline:
    """A point in time that every attempt and phase of one request must finish by."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0
