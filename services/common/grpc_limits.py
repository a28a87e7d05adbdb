"""What keeps a gRPC server from being starved: stream caps and connection policy.

Every RPC holds one thread of the server's pool for its whole life, so idle streams
could take every thread and leave none for GetInfo or Health. Streams are therefore
capped per client and in total, below the pool size (the rest is reserved for unary
calls), and the HTTP/2 connection policy closes idle connections and refuses clients
that ping too often.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from services.common.errors import ErrorCode, ServiceError
from services.common.settings import ServiceSettings

# Threads of the pool that streams may never take: unary calls and health checks.
RESERVED_UNARY_THREADS = 4


def reserved_unary_threads(pool_size: int) -> int:
    return min(RESERVED_UNARY_THREADS, pool_size // 2)


class StreamLimiter:
    """Counts open streaming RPCs per client and in total; refuses beyond the caps."""

    def __init__(self, per_client: int, total: int) -> None:
        if per_client < 1 or total < 1:
            raise ValueError("stream limits must be >= 1")
        self.per_client = per_client
        self.total = total
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def open_streams(self) -> int:
        with self._lock:
            return sum(self._open.values())

    def acquire(self, client: str) -> None:
        """Count one more stream of ``client``, or raise RESOURCE_EXHAUSTED."""
        with self._lock:
            if sum(self._open.values()) >= self.total:
                raise ServiceError(
                    ErrorCode.RESOURCE_EXHAUSTED,
                    f"the server has {self.total} open streams, its limit; retry later",
                    retry_after_s=5.0,
                )
            if self._open[client] >= self.per_client:
                raise ServiceError(
                    ErrorCode.RESOURCE_EXHAUSTED,
                    f"this client has {self.per_client} open streams, the limit per client",
                    retry_after_s=5.0,
                )
            self._open[client] += 1

    def release(self, client: str) -> None:
        with self._lock:
            self._open[client] -= 1
            if self._open[client] <= 0:
                del self._open[client]


class CallCounter:
    """RPCs in progress, so that readiness can report a server whose threads are all taken."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        return self._count

    def enter(self, context: Any) -> None:
        """Count a call until ``context`` (a grpc.ServicerContext) ends."""
        with self._lock:
            self._count += 1
        if not context.add_callback(self._leave):
            self._leave()  # the call already ended

    def _leave(self) -> None:
        with self._lock:
            self._count -= 1


def server_options(settings: ServiceSettings, max_message_bytes: int) -> list[tuple[str, Any]]:
    """grpc.server options: message caps plus the keepalive and idle-connection policy."""
    return [
        # Oversized messages are refused by grpc itself (RESOURCE_EXHAUSTED) before they
        # are buffered whole.
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # Server pings find dead peers (a camera that lost power) and free their streams.
        ("grpc.keepalive_time_ms", round(settings.grpc_keepalive_s * 1e3)),
        ("grpc.keepalive_timeout_ms", 20_000),
        # Keepalive enforcement: a client pinging more often than this is sent GOAWAY
        # after two strikes (pings cost the server work and can hide idle connections).
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
        # Connections without any call for this long are closed.
        ("grpc.max_connection_idle_ms", round(settings.grpc_max_connection_idle_s * 1e3)),
        # HTTP/2 streams one connection may open at once.
        ("grpc.max_concurrent_streams", settings.grpc_max_calls_per_connection),
    ]
