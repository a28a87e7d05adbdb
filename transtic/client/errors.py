"""What the client raises, and how long it waits before trying again."""

from __future__ import annotations

import random
from dataclasses import dataclass


class ClientError(Exception):
    """A service refused or failed a call; ``code`` is the service's stable error code
    (``NOT_FOUND``, ``RESOURCE_EXHAUSTED``, ...) and ``status`` the HTTP status or the
    gRPC status name."""

    def __init__(
        self, status: int | str, code: str, message: str, *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of refusals that say "later" (HTTP 429/503, gRPC RESOURCE_EXHAUSTED /
    UNAVAILABLE): exponential backoff with jitter, or the server's Retry-After when it
    sends one, never longer than ``max_delay_s``."""

    attempts: int = 4  # in all, the first try included
    base_delay_s: float = 0.2
    max_delay_s: float = 10.0

    def delay(self, attempt: int, retry_after_s: float | None) -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based)."""
        if retry_after_s is not None:
            return min(self.max_delay_s, max(0.0, retry_after_s))
        backoff = self.base_delay_s * (2**attempt)
        # Full jitter: clients refused together do not come back together.
        return min(self.max_delay_s, random.uniform(0.5, 1.0) * backoff)


NO_RETRY = RetryPolicy(attempts=1)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is not sent by these services)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
