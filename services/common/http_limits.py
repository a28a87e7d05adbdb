"""HTTP limits: a connection cap and a header read timeout under uvicorn; a body read
timeout and a budget for request bodies held in memory (an ASGI middleware).

uvicorn keeps a connection open for as long as a client takes to send its request
headers, and accepts connections without limit, so slow or half-open sockets can use up
the process's file descriptors (which the gRPC server shares). This protocol closes
connections beyond a cap at once, and closes any connection whose next request headers
have not arrived within a timeout.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
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


class BodyLimits:
    """ASGI middleware: request bodies must arrive within a time limit, and the bodies of
    all requests together may hold at most ``max_buffered_bytes`` at once.

    It wraps ``receive``, so it covers every route that reads a body: a body still
    arriving after ``body_timeout_s`` raises REQUEST_TIMEOUT (408) from the route's read,
    one that would take the process over its budget raises RESOURCE_EXHAUSTED (429,
    Retry-After). A request's bytes are given back when its response is done. Used from
    the event loop only, so the counter needs no lock.
    """

    def __init__(self, app: ASGIApp, *, max_buffered_bytes: int, body_timeout_s: float) -> None:
        self.app = app
        self.max_buffered_bytes = max_buffered_bytes
        self.body_timeout_s = body_timeout_s
        self.held = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        taken = 0
        body_done = False
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s

        async def limited_receive() -> Message:
            nonlocal taken, body_done
            if body_done:  # later calls only wait for a disconnect
                return await receive()
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(remaining, 0.001))
            except TimeoutError:
                raise ServiceError(
                    ErrorCode.REQUEST_TIMEOUT,
                    f"the request body did not arrive within {self.body_timeout_s:g} s",
                ) from None
            if message["type"] != "http.request":
                body_done = True
                return message
            size = len(message.get("body", b""))
            if self.held + size > self.max_buffered_bytes:
                raise ServiceError(
                    ErrorCode.RESOURCE_EXHAUSTED,
                    "too many uploads in progress; retry shortly",
                    retry_after_s=1.0,
                )
            self.held += size
            taken += size
            body_done = not message.get("more_body", False)
            return message

        try:
            await self.app(scope, limited_receive, send)
        finally:
            self.held -= taken


def length_value(text: str | None) -> int | None:
    """A length header's value (Content-Length, Inference-Header-Content-Length): ASCII
    digits only, else None.

    ``str.isdigit`` also accepts digits such as '\u00b2' (a Latin-1 header byte) that
    ``int`` refuses, and ``int`` accepts signs, spaces and underscores no length has.
    """
    if text is None or not (text.isascii() and text.isdigit()):
        return None
    return int(text)
