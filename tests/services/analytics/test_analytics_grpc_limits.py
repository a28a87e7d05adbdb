"""The gRPC server cannot be starved: stream caps, idle streams, rate limits before keys."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from service_fakes import FakeDetection, analytics_grpc

from services.analytics.grpc_service import GrpcFrontEnd
from services.analytics.runtime import Runtime
from services.analytics.settings import Settings
from services.common.grpc_limits import StreamLimiter, server_options
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc

pytestmark = pytest.mark.integration
KEY = "k" * 32


@contextmanager
def serving(settings: Settings) -> Iterator[tuple[grpc.Channel, GrpcFrontEnd]]:
    with analytics_grpc(settings, [FakeDetection()]) as served:
        yield served.channel, served.front


def idle_streams(channel: grpc.Channel, count: int, release: threading.Event) -> list[Any]:
    """``count`` AnalyzeStream calls that never send a frame until ``release`` is set."""

    def nothing() -> Iterator[api_pb2.Frame]:
        release.wait(60)
        return
        yield  # a generator that yields nothing

    stub = api_pb2_grpc.AnalyticsStub(channel)
    return [stub.AnalyzeStream(nothing(), timeout=60) for _ in range(count)]


def wait_done(calls: list[Any], count: int, timeout: float = 30.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [c for c in calls if c.done()]
        if len(done) >= count:
            return done
        time.sleep(0.05)
    raise AssertionError(f"only {sum(c.done() for c in calls)} of {count} calls ended")


def errors(runtime: Runtime, code: str) -> float:
    return runtime.metrics.total(runtime.metrics.errors, code=code)


def test_sixteen_idle_streams_do_not_block_unary_calls(
    make_settings: Callable[..., Settings],
) -> None:
    release = threading.Event()
    with serving(make_settings(grpc_max_workers=16, grpc_max_streams=12)) as (channel, _):
        calls = idle_streams(channel, 16, release)
        try:
            refused = wait_done(calls, 8)  # 8 per client
            assert {c.code() for c in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert "per client" in refused[0].details()
            start = time.monotonic()
            info = api_pb2_grpc.AnalyticsStub(channel).GetInfo(api_pb2.GetInfoRequest(), timeout=5)
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert info.service == "analytics"
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            assert time.monotonic() - start < 5
        finally:
            release.set()
            for call in calls:
                call.cancel()


def test_the_total_stream_cap_holds_across_clients() -> None:
    limiter = StreamLimiter(per_client=2, total=3)
    limiter.acquire("a")
    limiter.acquire("a")
    limiter.acquire("b")
    with pytest.raises(Exception, match="open streams, its limit"):
        limiter.acquire("c")
    limiter.release("a")
    limiter.acquire("c")
    assert limiter.open_streams == 3
    single = StreamLimiter(per_client=1, total=9)
    single.acquire("x")
    with pytest.raises(Exception, match="limit per client"):
        single.acquire("x")


def test_settings_keep_threads_for_unary_calls(make_settings: Callable[..., Settings]) -> None:
    assert make_settings(grpc_max_workers=16, grpc_max_streams=16).stream_cap == 12
    assert make_settings(grpc_max_workers=4, grpc_max_streams=16).stream_cap == 2
    assert make_settings(grpc_max_workers=48, grpc_max_streams=8).stream_cap == 8


def test_an_idle_stream_is_closed(make_settings: Callable[..., Settings]) -> None:
    release = threading.Event()
    with serving(make_settings(grpc_stream_idle_timeout_s=1.0)) as (channel, _):
        (call,) = idle_streams(channel, 1, release)
        try:
            wait_done([call], 1)
            assert call.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "idle" in call.details()
        finally:
            release.set()


def cancel_one_stream(settings: Settings, after_cancel: Callable[[], None]) -> dict[str, float]:
    """Serve, cancel one open stream, and return the CANCELLED and INTERNAL error counts
    once the cancel is counted (or after 10 s)."""
    release = threading.Event()
    with serving(settings) as (channel, front):
        runtime = front.runtime
        (call,) = idle_streams(channel, 1, release)
        # A loaded CI machine can take many seconds to take the stream's slot.
        deadline = time.monotonic() + 60
        while front.streams.open_streams < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert front.streams.open_streams == 1
        # The client's request generator stays blocked until the server has seen the
        # cancel: released first, its end could reach the server as a clean close of a
        # stream without frames before the cancel does (then nothing was cancelled).
        try:
            call.cancel()
            after_cancel()
            deadline = time.monotonic() + 10
            while errors(runtime, "CANCELLED") < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            release.set()
        return {code: errors(runtime, code) for code in ("CANCELLED", "INTERNAL")}


def test_a_cancelled_stream_counts_as_cancelled(make_settings: Callable[..., Settings]) -> None:
    counts = cancel_one_stream(make_settings(), after_cancel=lambda: None)
    assert counts == {"CANCELLED": 1, "INTERNAL": 0}


def test_wrong_keys_count_against_the_rate_limit(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(api_keys=[KEY], rate_limit_per_s=0.01, rate_limit_burst=2)
    with serving(settings) as (channel, _):
        stub = api_pb2_grpc.AnalyticsStub(channel)
        codes = []
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as info:
                stub.GetInfo(
                    api_pb2.GetInfoRequest(),
                    metadata=[("authorization", "Bearer wrong")],
                    timeout=5,
                )
            codes.append(info.value.code())
        assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED]


def test_keepalive_policy_is_enforced(make_settings: Callable[..., Settings]) -> None:
    options = dict(server_options(make_settings(), 1024))
    assert options["grpc.http2.min_ping_interval_without_data_ms"] >= 10_000
    assert options["grpc.http2.max_ping_strikes"] >= 1
    assert options["grpc.keepalive_time_ms"] > 0
    assert options["grpc.max_connection_idle_ms"] > 0


def test_readiness_fails_while_every_grpc_thread_is_busy(
    make_settings: Callable[..., Settings], bitstream: bytes
) -> None:
    from fastapi.testclient import TestClient

    from services.analytics.rest import create_app

    from .test_analytics_abandon import GatedDecoding

    settings = make_settings(grpc_max_workers=8, grpc_max_streams=4, max_batch_size=1)
    with serving(settings) as (channel, front):
        client = TestClient(create_app(settings, front.runtime))
        assert client.get("/readyz").status_code == 200
        gate = GatedDecoding(front.runtime)
        stub = api_pb2_grpc.AnalyticsStub(channel)
        request = api_pb2.AnalyzeRequest(bitstream=bitstream, task="detection")
        calls = [stub.Analyze.future(request, timeout=60) for _ in range(8)]
        try:
            deadline = time.monotonic() + 20
            while front.runtime.grpc_calls.in_flight < 8 and time.monotonic() < deadline:
                time.sleep(0.05)
            reply = client.get("/readyz")
            assert reply.status_code == 503
            assert "gRPC" in reply.json()["error"]["message"]
        finally:
            gate.gate.set()
            for call in calls:
                call.result(60)
        assert client.get("/readyz").status_code == 200


def test_a_stream_cancelled_before_its_handler_starts_counts_as_cancelled(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel can end the call between the stream slot being taken and the handler's
    first steps (gRPC then refuses metadata and callbacks): still counted, no error."""
    from services.analytics import grpc_service

    cancel_sent = threading.Event()
    echo = grpc_service.request_ids.echo_grpc

    def late_handler(context: grpc.ServicerContext) -> str:
        cancel_sent.wait(30)
        deadline = time.monotonic() + 10
        while context.is_active() and time.monotonic() < deadline:
            time.sleep(0.02)  # until gRPC has ended the call on its side
        return echo(context)

    monkeypatch.setattr(grpc_service.request_ids, "echo_grpc", late_handler)
    counts = cancel_one_stream(make_settings(), after_cancel=cancel_sent.set)
    assert counts == {"CANCELLED": 1, "INTERNAL": 0}


class EndedCall:
    """A servicer context for a call that ended before its handler ran. ``client``:
    how the call ended as grpcio's server records it (None: a gRPC that does not say)."""

    def __init__(self, client: str | None) -> None:
        self.callbacks: list[Callable[[], None]] = []
        if client is not None:
            self._state = type("State", (), {"client": client})()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False  # gRPC refuses callbacks once a call is over

    def is_active(self) -> bool:
        return False


@pytest.mark.parametrize(("client", "counted"), [(None, 1), ("cancelled", 1), ("closed", 0)])
def test_a_stream_over_before_its_handler_runs_is_counted_once(
    make_settings: Callable[..., Settings], client: str | None, counted: int
) -> None:
    """Where the gRPC server does not say how the call ended, ending before the handler
    did anything can only come from outside, so it counts as cancelled (never twice)."""
    from services.analytics.grpc_service import AnalyticsServicer

    runtime = Runtime(make_settings(), backends=[FakeDetection()])
    try:
        servicer = AnalyticsServicer(runtime, frames=None)  # type: ignore[arg-type]
        assert list(servicer.AnalyzeStream(iter([]), EndedCall(client))) == []  # type: ignore[arg-type]
        assert errors(runtime, "CANCELLED") == counted
        assert errors(runtime, "INTERNAL") == 0
    finally:
        runtime.close()
