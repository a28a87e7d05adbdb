"""Work whose caller has gone is dropped (from the queue, or between stages)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from service_fakes import FakeDetection, analyze_scope

from services.analytics.rest import BITSTREAM_TYPE, create_app
from services.analytics.runtime import Runtime
from services.analytics.settings import Settings
from services.common.errors import ErrorCode, ServiceError
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc


class GatedDecoding:
    """Holds the batch worker inside the decode stage until ``gate`` is set."""

    def __init__(self, runtime: Runtime) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.calls = 0
        codec = runtime.hub.codecs[0].codec
        decode = codec.decode_batch

        def gated(streams: Any, **kwargs: Any) -> Any:
            self.calls += 1
            self.entered.set()
            assert self.gate.wait(30)
            return decode(streams, **kwargs)

        codec.decode_batch = gated  # type: ignore[method-assign]


def detector(runtime: Runtime) -> FakeDetection:
    backend = runtime.hub.backend("detection").backend
    assert isinstance(backend, FakeDetection)
    return backend


def errors(runtime: Runtime, code: str) -> float:
    return runtime.metrics.total(runtime.metrics.errors, code=code)


@pytest.fixture
def gated(start_runtime: Callable[..., Runtime]) -> tuple[Runtime, GatedDecoding]:
    """A runtime taking one frame per batch, its decode stage held by the gate."""
    runtime = start_runtime(max_batch_size=1)
    return runtime, GatedDecoding(runtime)


def test_abandoned_work_stops_between_stages(
    gated: tuple[Runtime, GatedDecoding], bitstream: bytes
) -> None:
    runtime, gate = gated
    first = runtime.submit_bitstream(bitstream, "detection", api="test")
    assert gate.entered.wait(30)
    first.abandon()  # the caller timed out while its frame was being decoded
    second = runtime.submit_bitstream(bitstream, "detection", api="test")
    gate.gate.set()
    assert second.result(30).result.task == "detection"
    error = first.exception(30)
    assert isinstance(error, ServiceError) and error.code is ErrorCode.CANCELLED
    assert detector(runtime).batches == [1]  # the task network ran for the second only


def test_abandoned_work_leaves_the_queue_unprocessed(
    gated: tuple[Runtime, GatedDecoding], bitstream: bytes
) -> None:
    runtime, gate = gated
    busy = runtime.submit_bitstream(bitstream, "detection", api="test")
    assert gate.entered.wait(30)
    gone = runtime.submit_bitstream(bitstream, "detection", api="test")
    kept = runtime.submit_bitstream(bitstream, "detection", api="test")
    gone.abandon()
    gate.gate.set()
    assert busy.result(30) and kept.result(30)
    assert gone.cancelled()
    assert gate.calls == 2


def test_a_rest_timeout_drops_the_work_and_the_next_request_is_served(
    make_settings: Callable[..., Settings], bitstream: bytes
) -> None:
    settings = make_settings(max_batch_size=1, request_timeout_s=8.0)
    headers = {"content-type": BITSTREAM_TYPE}
    with TestClient(create_app(settings, backends=[FakeDetection()])) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        gate = GatedDecoding(runtime)
        late = client.post("/v1/analyze?task=detection", content=bitstream, headers=headers)
        assert late.status_code == 504, late.text
        gate.gate.set()
        served = client.post("/v1/analyze?task=detection", content=bitstream, headers=headers)
        assert served.status_code == 200, served.text
        assert detector(runtime).batches == [1]  # the timed-out frame never reached the task


def test_a_rest_client_that_disconnects_is_cancelled(
    make_settings: Callable[..., Settings], bitstream: bytes
) -> None:
    settings = make_settings(max_batch_size=1)
    runtime = Runtime(settings, backends=[FakeDetection()])
    runtime.start()
    try:
        gate = GatedDecoding(runtime)
        app = create_app(settings, runtime)
        sent: list[dict[str, Any]] = []
        messages = [{"type": "http.request", "body": bitstream, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            if gate.entered.is_set():
                return {"type": "http.disconnect"}  # the client hung up while waiting
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(asyncio.wait_for(app(analyze_scope(), receive, send), 30))
        gate.gate.set()
        assert sent[0]["status"] == 499
        assert errors(runtime, "CANCELLED") == 1
        assert errors(runtime, "INTERNAL") == 0
        assert runtime.submit_bitstream(bitstream, "detection", api="t").result(30)
        assert detector(runtime).batches == [1]
    finally:
        runtime.close()


def test_a_cancelled_grpc_call_is_dropped_and_counted_as_cancelled(
    make_settings: Callable[..., Settings], bitstream: bytes
) -> None:
    from services.analytics.grpc_service import GrpcFrontEnd
    from services.analytics.streaming import FrameProcessor

    runtime = Runtime(make_settings(max_batch_size=1), backends=[FakeDetection()])
    runtime.start()
    frames = FrameProcessor(runtime)
    front = GrpcFrontEnd(runtime, frames, "127.0.0.1:0")
    front.server.start()
    try:
        gate = GatedDecoding(runtime)
        with grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
            stub = api_pb2_grpc.AnalyticsStub(channel)
            call = stub.Analyze.future(
                api_pb2.AnalyzeRequest(bitstream=bitstream, task="detection"), timeout=30
            )
            assert gate.entered.wait(30)
            call.cancel()
            gate.gate.set()
            reply = stub.Analyze(
                api_pb2.AnalyzeRequest(bitstream=bitstream, task="detection"), timeout=30
            )
        assert reply.task == "detection"
        assert detector(runtime).batches == [1]
        assert errors(runtime, "CANCELLED") == 1
        assert errors(runtime, "INTERNAL") == 0
    finally:
        front.server.stop(0).wait()
        frames.close()
        runtime.close()
