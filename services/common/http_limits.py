"""HTTP limits: a connection cap and a header read timeout under uvicorn, and a budget
for request bodies held in memory.

uvicorn keeps a connection open for as long as a client takes to send its request
headers, and accepts connections without limit, so slow or half-open sockets can use up
the process's file descriptors (which the gRPC server shares). This protocol closes
connections beyond a cap at once, and closes any connection whose next request headers
have not arrived within a timeout. Body timeouts are the application's (it reads bodies).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from services.common.errors import ErrorCode, ServiceError

log = logging.getLogger(__name__)


class _GuardedH11Protocol(H11Protocol):
    max_connections = 256
    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            log.warning("HTTP: %d connections, the cap; closing a new one", self.max_connections)
            transport.close()
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()  # the next request's headers have the same deadline

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        waiting_for_headers = self.cycle is None or self.cycle.response_complete
        if waiting_for_headers and not self.transport.is_closing():
            self.transport.close()


def guarded_http_protocol(*, max_connections: int, header_timeout_s: float) -> type[Any]:
    """An h11 protocol class for ``uvicorn.Config(http=...)`` with these limits."""
    return type(
        "GuardedH11Protocol",
        (_GuardedH11Protocol,),
        {"max_connections": max_connections, "header_timeout_s": header_timeout_s},
    )


class BodyBudget:
    """Bytes of request bodies held in memory by all requests together.

    Used from the event loop only (no lock needed). A request takes bytes as its body
    arrives and gives them all back when it is answered; one that would go over the
    budget is refused with 429, so many large uploads at once cannot exhaust memory.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.held = 0

    @contextlib.contextmanager
    def account(self) -> Iterator[Callable[[int], None]]:
        taken = 0

        def take(size: int) -> None:
            nonlocal taken
            if self.held + size > self.max_bytes:
                raise ServiceError(
                    ErrorCode.RESOURCE_EXHAUSTED,
                    "too many uploads in progress; retry shortly",
                    retry_after_s=1.0,
                )
            self.held += size
            taken += size

        try:
            yield take
        finally:
            self.held -= taken
