"""The plaintext health-only gRPC port (grpc_health_port) for the kubelet's gRPC probe,
beside a main port that demands mutual TLS and API keys: it answers Health/Check, follows
the service's health, and serves nothing else."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import ValidationError
from security_helpers import GOOD_KEY, TIMEOUT, Pki, analytics_front, refused

from services.analytics.grpc_service import SERVICE_NAME as ANALYTICS_SERVICE
from services.analytics.runtime import Runtime
from services.analytics.settings import Settings
from services.common.grpc_utils import set_serving
from services.encoder.codecs import CodecBank
from services.encoder.server import SERVICE_NAME as ENCODER_SERVICE
from services.encoder.server import EncoderServer
from services.encoder.settings import EncoderSettings
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
KEY = (("authorization", f"Bearer {GOOD_KEY}"),)


@dataclass
class Running:
    service: str  # its gRPC service name, e.g. transtic.v1.Analytics
    port: int  # the API port: mutual TLS + API keys
    health_port: int
    health: health.HealthServicer
    runtime: Runtime | None  # the analytics runtime, whose readiness the port reports

    def plain(self) -> grpc.Channel:
        return grpc.insecure_channel(f"127.0.0.1:{self.health_port}")


@pytest.fixture(params=["analytics", "encoder"])
def running(
    request: pytest.FixtureRequest,
    pki: Pki,
    analytics_settings: Callable[..., Settings],
    encoder_settings: Callable[..., EncoderSettings],
    encoder_bank: CodecBank,
) -> Iterator[Running]:
    secured = {**pki.server_settings(mutual=True), "api_keys": [GOOD_KEY], "grpc_health_port": 0}
    if request.param == "analytics":
        with analytics_front(analytics_settings(**secured), start=True) as front:
            assert front.health_port is not None and front.runtime.ready
            health_port = front.health_port.port
            yield Running(ANALYTICS_SERVICE, front.port, health_port, front.health, front.runtime)
        return
    server = EncoderServer(encoder_settings(**secured), encoder_bank).start()
    try:
        assert server.health_port is not None
        yield Running(ENCODER_SERVICE, server.port, server.health_port.port, server.health, None)
    finally:
        server.stop(0)


def check(running: Running, service: str = "") -> int:
    with running.plain() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
    return int(reply.status)


def test_plaintext_check_without_a_key_while_the_api_port_needs_mtls(running: Running) -> None:
    assert running.health_port not in (0, running.port)
    assert check(running) == SERVING
    assert check(running, running.service) == SERVING
    # The same plaintext check on the API port cannot even connect.
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        assert refused(lambda: stub.Check(request, timeout=TIMEOUT)) == grpc.StatusCode.UNAVAILABLE


def test_health_port_serves_nothing_else(running: Running) -> None:
    unimplemented = grpc.StatusCode.UNIMPLEMENTED
    with running.plain() as channel:
        info: Callable[..., Any]
        work: Callable[[], Any]
        if running.service == ANALYTICS_SERVICE:
            analytics = api_pb2_grpc.AnalyticsStub(channel)
            info = analytics.GetInfo
            request = api_pb2.AnalyzeRequest(bitstream=b"x")
            work = lambda: analytics.Analyze(request, metadata=KEY, timeout=TIMEOUT)  # noqa: E731
        else:
            encoder = api_pb2_grpc.EncoderStub(channel)
            info = encoder.GetInfo
            request = api_pb2.EncodeRequest(image=b"x")
            work = lambda: encoder.Encode(request, metadata=KEY, timeout=TIMEOUT)  # noqa: E731
        # Even with a valid key: the API is not there at all, not merely locked.
        get_info = api_pb2.GetInfoRequest()
        assert refused(lambda: info(get_info, metadata=KEY, timeout=TIMEOUT)) == unimplemented
        assert refused(work) == unimplemented

        list_services = reflection_pb2.ServerReflectionRequest(list_services="")
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo
        assert refused(lambda: list(reflect(iter([list_services]), timeout=TIMEOUT))) == (
            unimplemented
        )
        # Watch would hold one of the port's few threads for as long as it lasts.
        watch = health_pb2_grpc.HealthStub(channel).Watch
        watch_all = health_pb2.HealthCheckRequest(service="")
        assert refused(lambda: next(iter(watch(watch_all, timeout=TIMEOUT)))) == unimplemented


def test_health_port_follows_the_service_health(running: Running) -> None:
    set_serving(running.health, [running.service], False)  # as on drain or not ready
    assert check(running) == NOT_SERVING
    assert check(running, running.service) == NOT_SERVING
    set_serving(running.health, [running.service], True)
    assert check(running) == SERVING
    assert refused(lambda: check(running, "no.such.Service")) == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("running", ["analytics"], indirect=True)
def test_analytics_health_port_reports_readiness_as_readyz_does(running: Running) -> None:
    runtime = running.runtime
    assert runtime is not None
    calls = [HeldCall() for _ in range(runtime.settings.grpc_max_workers)]
    for call in calls:  # every gRPC handler thread busy: saturated, so not ready
        runtime.grpc_calls.enter(call)
    try:
        assert runtime.grpc_saturated
        # The port has threads of its own, so it still answers, and says not ready.
        assert check(running) == NOT_SERVING
    finally:
        for call in calls:
            call.end()
    assert check(running) == SERVING
    runtime.draining = True
    try:
        assert check(running) == NOT_SERVING
    finally:
        runtime.draining = False


class HeldCall:
    """Stands for the context of an RPC in progress, until ``end``."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self.callbacks.append(callback)
        return True

    def end(self) -> None:
        for callback in self.callbacks:
            callback()


@pytest.mark.parametrize("settings_class", [Settings, EncoderSettings])
def test_health_port_setting(settings_class: type[Any]) -> None:
    assert settings_class().grpc_health_port is None  # off unless asked for
    assert settings_class(grpc_port=50051, grpc_health_port=50061).grpc_health_port == 50061
    with pytest.raises(ValidationError, match="grpc_health_port must differ"):
        settings_class(grpc_port=50051, grpc_health_port=50051)
