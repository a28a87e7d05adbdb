"""API keys and rate limits over gRPC: the real servers and the interceptor by itself."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from security_helpers import (
    GOOD_KEY,
    OTHER_KEY,
    TIMEOUT,
    WRONG_KEY,
    Pki,
    analytics_server,
    echo_calls,
    echo_server,
    refused,
    service_stub,
)

from services.analytics.metrics import ModelLabels
from services.analytics.settings import Settings
from services.common.auth import ApiKeys, auth_metadata
from services.common.grpc_guard import GrpcGuard, peer_identity
from services.common.ratelimit import RateLimiter
from services.common.tls import open_channel, server_credentials
from services.encoder.settings import EncoderSettings
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc

pytestmark = pytest.mark.integration


@pytest.fixture
def serve(serve: Callable[..., Any]) -> Callable[..., Any]:
    """The security conftest's ``serve``, yielding (service name, stub, channel)."""

    @contextmanager
    def start(**overrides: Any) -> Iterator[tuple[str, Any, grpc.Channel]]:
        with serve(**overrides) as (service, port), open_channel(f"127.0.0.1:{port}") as channel:
            yield service, service_stub(service, channel), channel

    return start


def info(stub: Any, key: str | None = None, **kwargs: Any) -> Any:
    metadata = kwargs.pop("metadata", auth_metadata(key))
    return stub.GetInfo(api_pb2.GetInfoRequest(), timeout=TIMEOUT, metadata=metadata, **kwargs)


def test_api_keys_over_grpc(serve: Callable[..., Any]) -> None:
    with serve(api_keys=[GOOD_KEY, OTHER_KEY]) as (service, stub, channel):
        assert info(stub, GOOD_KEY).service == service
        assert info(stub, OTHER_KEY).service == service
        assert info(stub, metadata=(("x-api-key", GOOD_KEY),)).service == service
        for metadata in (
            (),
            auth_metadata(WRONG_KEY),
            (("authorization", f"Basic {GOOD_KEY}"),),
            (("authorization", "Bearer "),),
        ):
            with pytest.raises(grpc.RpcError) as refusal:
                info(stub, metadata=metadata)
            assert refusal.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "API key" in refusal.value.details()
            assert GOOD_KEY not in refusal.value.details()
        # Probes cannot send keys: the health service stays open.
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status == 1


def test_no_keys_configured_means_no_authentication(serve: Callable[..., Any]) -> None:
    with serve() as (service, stub, _):
        assert info(stub).service == service


def test_rate_limit_per_client_over_grpc(serve: Callable[..., Any]) -> None:
    limits = {"rate_limit_per_s": 0.5, "rate_limit_burst": 2}
    with serve(api_keys=[GOOD_KEY, OTHER_KEY], **limits) as (_, stub, _channel):
        info(stub, GOOD_KEY)
        info(stub, GOOD_KEY)
        with pytest.raises(grpc.RpcError) as refusal:
            info(stub, GOOD_KEY)
        assert refusal.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(refusal.value.trailing_metadata() or ())
        assert int(trailers["retry-after"]) >= 1
        # Another key is another client with its own bucket.
        info(stub, OTHER_KEY)


def test_stream_frames_over_the_rate_are_throttled_not_refused() -> None:
    guard = GrpcGuard(ApiKeys(), RateLimiter(rate=20, burst=2))
    server, port = echo_server([guard])
    try:
        with open_channel(f"127.0.0.1:{port}") as channel:
            _, echo = echo_calls(channel)
            start = time.monotonic()
            replies = list(echo(iter([b"%d" % i for i in range(6)]), timeout=TIMEOUT))
            elapsed = time.monotonic() - start
    finally:
        server.stop(0)
    assert replies == [b"%d" % i for i in range(6)]
    # 1 token for the call + 6 frames, 2 in the burst: 5 tokens at 20/s = 0.25 s at least.
    assert elapsed >= 0.2


def test_unary_calls_over_the_rate_are_refused_with_retry_after() -> None:
    refusals: list[str] = []
    guard = GrpcGuard(ApiKeys(), RateLimiter(rate=0.2, burst=1), on_refused=refusals.append)
    server, port = echo_server([guard])
    try:
        with open_channel(f"127.0.0.1:{port}") as channel:
            who, _ = echo_calls(channel)
            who(b"", timeout=TIMEOUT)
            with pytest.raises(grpc.RpcError) as refusal:
                who(b"", timeout=TIMEOUT)
    finally:
        server.stop(0)
    assert refusal.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(refusal.value.trailing_metadata())["retry-after"] == "5"
    assert refusals == ["RESOURCE_EXHAUSTED"]


def test_clients_are_told_apart_by_certificate_then_address(
    pki: Pki, encoder_settings: Callable[..., EncoderSettings]
) -> None:
    """Rate-limit buckets: per device certificate under mutual TLS, else per IP."""
    credentials = server_credentials(encoder_settings(**pki.server_settings(mutual=True)))
    tls_server, tls_port = echo_server([], credentials, who=peer_identity)
    plain_server, plain_port = echo_server([], None, who=peer_identity)
    try:
        with open_channel(f"127.0.0.1:{tls_port}", pki.client()) as channel:
            assert echo_calls(channel)[0](b"", timeout=TIMEOUT) == b"cert:edge-1"
        with open_channel(f"127.0.0.1:{plain_port}") as channel:
            assert echo_calls(channel)[0](b"", timeout=TIMEOUT) == b"ip:127.0.0.1"
    finally:
        tls_server.stop(0)
        plain_server.stop(0)


def test_auth_refusals_are_counted(analytics_settings: Callable[..., Settings]) -> None:
    with (
        analytics_server(analytics_settings(api_keys=[GOOD_KEY])) as (port, runtime),
        open_channel(f"127.0.0.1:{port}") as channel,
    ):
        stub = api_pb2_grpc.AnalyticsStub(channel)
        assert refused(lambda: info(stub)) == grpc.StatusCode.UNAUTHENTICATED
        # A refusal at the guard knows no model yet: it counts under the unknown labels.
        counted = runtime.metrics.total(
            runtime.metrics.errors, code="UNAUTHENTICATED", **ModelLabels().values()
        )
        assert counted == 1
