"""A gRPC server interceptor: API-key authentication and per-client rate limits.

Authentication is decided from the call's metadata before the handler runs; calls with a
missing or wrong key are rate-limited by address before they are refused. Rate
limiting needs the peer (address or client certificate), which only the servicer
context knows, so it runs inside a wrapper around the handler. Unary calls over the
rate are refused (RESOURCE_EXHAUSTED with a retry-after trailer); the frames of a
stream are throttled instead, reading more slowly, so a camera that sends too fast is
slowed by HTTP/2 flow control rather than cut off. Streaming calls are also counted
against the per-client and total stream caps (grpc_limits.StreamLimiter).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from services.common.auth import ApiKeys
from services.common.errors import ErrorCode, ServiceError, abort_grpc
from services.common.grpc_limits import CallCounter, StreamLimiter
from services.common.ratelimit import RateLimiter

log = logging.getLogger(__name__)

# Probes (kubelet, Docker HEALTHCHECK) cannot send keys; health reveals nothing.
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
_THROTTLE_STEP_S = 0.25


def peer_identity(context: grpc.ServicerContext) -> str:
    """``cert:<CN>`` for a verified client certificate, else ``ip:<address>``."""
    auth = context.auth_context() or {}
    names = auth.get("x509_common_name") or auth.get("x509_subject_alternative_name")
    if names:
        return f"cert:{names[0].decode(errors='replace')}"
    peer = context.peer() or "unknown"
    # "ipv4:10.0.0.7:51234", "ipv6:[::1]:51234", "unix:/path": the port is per connection.
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        rest = rest.rsplit(":", 1)[0].strip("[]")
    return f"ip:{rest}"


class GrpcGuard(grpc.ServerInterceptor):
    def __init__(
        self,
        keys: ApiKeys,
        limiter: RateLimiter | None,
        *,
        streams: StreamLimiter | None = None,
        calls: CallCounter | None = None,
        on_refused: Callable[[ErrorCode], None] | None = None,
        open_methods: frozenset[str] = OPEN_METHODS,
    ) -> None:
        self.keys = keys
        self.limiter = limiter
        self.streams = streams
        self.calls = calls
        self.on_refused = on_refused
        self.open_methods = open_methods

    @property
    def active(self) -> bool:
        optional = (self.limiter, self.streams, self.calls)
        return self.keys.enabled or any(part is not None for part in optional)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        if self.calls is not None:
            handler = _wrap(handler, self.calls.enter, None)
        if handler_call_details.method in self.open_methods:
            return handler
        key_identity = None
        if self.keys.enabled:
            key_identity = self.keys.identify_metadata(handler_call_details.invocation_metadata)
            if key_identity is None:
                error = ServiceError(
                    ErrorCode.UNAUTHENTICATED,
                    "missing or invalid API key: send metadata 'authorization: Bearer <key>'",
                )

                def unauthenticated(context: grpc.ServicerContext) -> None:
                    # Guessing keys costs the guesser its own (per-address) budget.
                    self._check_rate(context, peer_identity(context))
                    self._refuse(context, error)

                return _wrap(handler, unauthenticated, None)
        streams = self.streams if handler.request_streaming else None
        if self.limiter is None and streams is None:
            return handler
        limiter = self.limiter

        def admit(context: grpc.ServicerContext) -> str:
            client = key_identity or peer_identity(context)
            self._check_rate(context, client)
            if streams is not None:
                try:
                    streams.acquire(client)
                except ServiceError as exc:
                    self._refuse(context, exc)
                if not context.add_callback(lambda: streams.release(client)):
                    streams.release(client)  # the call already ended
            return client

        def throttle(requests: Iterator[Any], context: grpc.ServicerContext, client: str) -> Any:
            if limiter is None:
                yield from requests
                return
            for request in requests:
                wait = limiter.acquire(client)
                while wait > 0 and context.is_active():
                    time.sleep(min(wait, _THROTTLE_STEP_S))
                    wait = limiter.acquire(client)
                yield request

        return _wrap(handler, admit, throttle)

    def _check_rate(self, context: grpc.ServicerContext, client: str) -> None:
        """Refuse (RESOURCE_EXHAUSTED, with a retry-after) a client over its rate."""
        if self.limiter is None:
            return
        wait = self.limiter.acquire(client)
        if wait > 0:
            self._refuse(
                context,
                ServiceError(
                    ErrorCode.RESOURCE_EXHAUSTED,
                    f"rate limit of {self.limiter.rate:g} requests/s exceeded; retry in "
                    f"{wait:.2f} s",
                    retry_after_s=wait,
                ),
            )

    def _refuse(self, context: grpc.ServicerContext, error: ServiceError) -> None:
        if self.on_refused is not None:
            self.on_refused(error.code)
        abort_grpc(context, error)


Admit = Callable[[grpc.ServicerContext], Any]
Throttle = Callable[[Iterator[Any], grpc.ServicerContext, Any], Iterator[Any]]


def _wrap(
    handler: grpc.RpcMethodHandler, admit: Admit, throttle: Throttle | None
) -> grpc.RpcMethodHandler:
    """The same handler with ``admit`` (which may abort) run first and, for streamed
    requests, every request message passed through ``throttle``."""
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }

    def requests(iterator: Iterator[Any], context: grpc.ServicerContext, ticket: Any) -> Any:
        return iterator if throttle is None else throttle(iterator, context, ticket)

    if handler.request_streaming and handler.response_streaming:
        inner_ss = handler.stream_stream

        def stream_stream(iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
            ticket = admit(context)
            return inner_ss(requests(iterator, context, ticket), context)

        return grpc.stream_stream_rpc_method_handler(stream_stream, **codec)
    if handler.request_streaming:
        inner_su = handler.stream_unary

        def stream_unary(iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
            ticket = admit(context)
            return inner_su(requests(iterator, context, ticket), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **codec)
    if handler.response_streaming:
        inner_us = handler.unary_stream

        def unary_stream(request: Any, context: grpc.ServicerContext) -> Any:
            admit(context)
            return inner_us(request, context)

        return grpc.unary_stream_rpc_method_handler(unary_stream, **codec)
    inner_uu = handler.unary_unary

    def unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
        admit(context)
        return inner_uu(request, context)

    return grpc.unary_unary_rpc_method_handler(unary_unary, **codec)
