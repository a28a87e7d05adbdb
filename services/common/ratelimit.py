"""Per-client token buckets, shared by the REST and gRPC front ends of a process."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from services.common.settings import ServiceSettings

# Distinct clients remembered at once. Beyond it the least recently seen client's bucket
# is dropped (it starts full when it comes back): memory stays bounded whatever the
# number of source addresses an attacker uses.
MAX_CLIENTS = 10_000


class RateLimiter:
    """``rate`` tokens per second per client, at most ``burst`` saved up."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> RateLimiter | None:
        if settings.rate_limit_per_s <= 0:
            return None
        return cls(settings.rate_limit_per_s, settings.rate_limit_burst)

    def acquire(self, client: str, tokens: float = 1.0) -> float:
        """Take ``tokens`` now and return 0, or take nothing and return the seconds until
        they would be there (the Retry-After)."""
        now = self._clock()
        with self._lock:
            level, last = self._buckets.pop(client, (self.burst, now))
            level = min(self.burst, level + (now - last) * self.rate)
            if level >= tokens:
                level -= tokens
                wait = 0.0
            else:
                wait = (tokens - level) / self.rate
            self._buckets[client] = (level, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)
