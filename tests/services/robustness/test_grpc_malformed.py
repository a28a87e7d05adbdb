"""Malformed gRPC traffic against a real in-process analytics server on 127.0.0.1.

Raw bytes go through ``channel.unary_unary`` / ``stream_stream`` without serializers, so
the server sees exactly what a broken or hostile client sends: random bytes, truncated
protobufs, wrong wire types, invalid UTF-8 in string fields, oversized messages, empty
frames, absurd sequence numbers and missing or bad stream ids.

The oracle is protobuf itself: what ``FromString`` cannot parse must end in grpc's own
INTERNAL "Exception deserializing request!" (the servicer never sees it); everything
that parses must get the service's typed answer (never INTERNAL), and on a stream exactly
one ack per frame. Afterwards the server must still report SERVING and analyse normally.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_fakes import MeanColourClassifier

from services.analytics.grpc_service import GrpcFrontEnd
from services.analytics.runtime import Runtime
from services.analytics.settings import Settings
from services.analytics.streaming import FrameProcessor
from services.generated.transtic.v1 import api_pb2

from .conftest import watchdog

pytestmark = pytest.mark.integration

MAX_MESSAGE = 100_000  # the server's max_upload_bytes = gRPC receive limit
CALL_TIMEOUT_S = 60.0
TEST_BUDGET_S = 300.0
DESERIALIZE_FAILED = "Exception deserializing request!"
ANALYZE = "/transtic.v1.Analytics/Analyze"
ANALYZE_STREAM = "/transtic.v1.Analytics/AnalyzeStream"
# What the service itself may answer for a parsed but bad request (INTERNAL is not one).
SERVICE_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
}
# ALREADY_EXISTS: the same (stream, sequence) sent again with other bytes.
FRAME_ERROR_CODES = {0, grpc.StatusCode.ALREADY_EXISTS.value[0]} | {
    c.value[0] for c in SERVICE_CODES
}


def start_front(runtime: Runtime) -> tuple[GrpcFrontEnd, FrameProcessor]:
    frames = FrameProcessor(runtime)
    front = GrpcFrontEnd(runtime, frames, "127.0.0.1:0")
    front.set_serving(runtime.ready)
    front.server.start()
    return front, frames


def stop_front(front: GrpcFrontEnd, frames: FrameProcessor, wait_s: float) -> bool:
    """Stop the server (1 s grace); False if it did not finish stopping within ``wait_s``."""
    stopped = front.server.stop(1).wait(wait_s)
    frames.close()
    return stopped


@pytest.fixture(scope="module")
def server(robust_settings: Callable[..., Settings]) -> Iterator[tuple[Runtime, grpc.Channel]]:
    settings_ = robust_settings(max_upload_bytes=MAX_MESSAGE, grpc_max_workers=4)
    runtime = Runtime(settings_, backends=[MeanColourClassifier()])
    runtime.start()
    front, frames = start_front(runtime)
    channel = grpc.insecure_channel(f"127.0.0.1:{front.port}")
    try:
        yield runtime, channel
    finally:
        channel.close()
        runtime.drain()
        # Bounded: after malformed streams grpc may never report "stopped" (see the
        # xfail test at the end), as the service's own shutdown bounds it too.
        stop_front(front, frames, wait_s=5)
        runtime.close()


@pytest.fixture(scope="module")
def raw_analyze(server: tuple[Runtime, grpc.Channel]) -> Callable[[bytes], bytes]:
    method = server[1].unary_unary(ANALYZE, request_serializer=None, response_deserializer=None)
    return lambda data: method(data, timeout=CALL_TIMEOUT_S)


@pytest.fixture(scope="module")
def raw_stream(server: tuple[Runtime, grpc.Channel]) -> Callable[[list[bytes]], list[bytes]]:
    method = server[1].stream_stream(
        ANALYZE_STREAM, request_serializer=None, response_deserializer=None
    )
    return lambda frames: list(method(iter(frames), timeout=CALL_TIMEOUT_S))


def fuzz_settings(examples: int) -> Any:
    return settings(
        max_examples=examples,
        deadline=timedelta(seconds=30),
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


def parses(message: type[Any], data: bytes) -> bool:
    try:
        message.FromString(data)
    except Exception:  # google.protobuf.message.DecodeError and friends
        return False
    return True


def status_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str, object]:
    try:
        reply = call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", None
    return grpc.StatusCode.OK, "", reply


def frame(**fields: Any) -> bytes:
    return bytes(api_pb2.Frame(**fields).SerializeToString())


def check_analyze(raw_analyze: Callable[[bytes], bytes], data: bytes) -> grpc.StatusCode:
    code, details, reply = status_of(lambda: raw_analyze(data))
    if not parses(api_pb2.AnalyzeRequest, data):
        assert (code, details) == (grpc.StatusCode.INTERNAL, DESERIALIZE_FAILED)
        return code
    assert code in SERVICE_CODES, (code, details)
    if code == grpc.StatusCode.OK:
        assert isinstance(reply, bytes) and api_pb2.AnalyzeResult.FromString(reply).labels
    else:
        assert details and "Traceback" not in details
    return code


def check_stream(
    raw_stream: Callable[[list[bytes]], list[bytes]], frames: list[bytes]
) -> Counter[str]:
    """Check one call; count its outcomes ("call INTERNAL", "ack ok", "ack code 3"...)."""
    code, details, reply = status_of(lambda: raw_stream(frames))
    if not all(parses(api_pb2.Frame, f) for f in frames):
        # grpc ends the whole call when a request does not parse (acks may be lost; a
        # resend after reconnect is answered from the store, so nothing is lost for good).
        assert (code, details) == (grpc.StatusCode.INTERNAL, DESERIALIZE_FAILED)
        return Counter(["call INTERNAL"])
    assert code == grpc.StatusCode.OK, (code, details)
    assert isinstance(reply, list)
    acks = [api_pb2.FrameAck.FromString(a) for a in reply]
    sent = Counter((f.stream_id, f.sequence) for f in map(api_pb2.Frame.FromString, frames))
    assert Counter((a.stream_id, a.sequence) for a in acks) == sent, "one ack per frame"
    for ack in acks:
        assert ack.error_code in FRAME_ERROR_CODES, ack
        assert bool(ack.error_code) == bool(ack.error_message), ack
        assert ack.error_code or ack.result.labels, ack
    return Counter(
        f"ack code {a.error_code}" if a.error_code else "ack duplicate" if a.duplicate else "ack ok"
        for a in acks
    )


# -- fuzzing ---------------------------------------------------------------------------------
def test_analyze_random_and_mutated_messages(
    raw_analyze: Callable[[bytes], bytes], bitstream: bytes
) -> None:
    valid = bytes(
        api_pb2.AnalyzeRequest(bitstream=bitstream, task="classification").SerializeToString()
    )
    seen: Counter[grpc.StatusCode] = Counter()

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        data = bytearray(valid)
        if draw(st.booleans()):
            return bytes(data[: draw(st.integers(0, len(data) - 1))])
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, min(len(data), 24) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)

    @fuzz_settings(examples=50)
    @given(data=st.one_of(st.binary(max_size=512), mutated()))
    def run(data: bytes) -> None:
        seen[check_analyze(raw_analyze, data)] += 1

    with watchdog(TEST_BUDGET_S):
        run()
    print("Analyze statuses:", dict(seen))
    assert grpc.StatusCode.INTERNAL in seen and grpc.StatusCode.INVALID_ARGUMENT in seen


STREAM_IDS = ["cam-fuzz", "cam-fuzz-2", "", "x" * 129, "a\x00b", "tab\there", "ünïcode-cam"]
SEQUENCES = [0, 1, 7, 2**63 - 1, 2**63, 2**64 - 1]


def test_stream_malformed_frames(
    raw_stream: Callable[[list[bytes]], list[bytes]], bitstream: bytes
) -> None:
    payloads = [bitstream, bitstream[: len(bitstream) // 2], os.urandom(64), b""]
    likely_good = st.builds(
        frame,
        stream_id=st.sampled_from(STREAM_IDS[:2]),
        sequence=st.integers(0, 1000),
        bitstream=st.just(bitstream),
        task=st.sampled_from(["", "classification"]),
    )
    any_fields = st.builds(
        frame,
        stream_id=st.sampled_from(STREAM_IDS),
        sequence=st.one_of(st.sampled_from(SEQUENCES), st.integers(0, 2**64 - 1)),
        bitstream=st.sampled_from(payloads),
        task=st.sampled_from(["", "classification", "detection", "nonsense"]),
        capture_time_unix_ms=st.integers(-(2**63), 2**63 - 1),
    )
    garbage = st.one_of(
        st.binary(max_size=64),
        st.just(b"\x0a\x02\xff\xfe"),  # stream_id: invalid UTF-8
        st.just(b"\x10"),  # sequence: varint cut short
        st.just(b"\x1a\x05ab"),  # bitstream: length beyond the end
    )

    seen: Counter[str] = Counter()

    well_formed = st.one_of(likely_good, any_fields)
    parsed_only = st.lists(well_formed, max_size=4)
    with_garbage = st.lists(st.one_of(well_formed, garbage), min_size=1, max_size=4)

    @fuzz_settings(examples=30)
    @given(frames=st.one_of(parsed_only, with_garbage))
    def run(frames: list[bytes]) -> None:
        seen.update(check_stream(raw_stream, frames))

    with watchdog(TEST_BUDGET_S):
        run()
    print("AnalyzeStream outcomes:", dict(seen))
    assert {"call INTERNAL", "ack ok", "ack duplicate", "ack code 3"} <= set(seen), seen


# -- explicit cases --------------------------------------------------------------------------
def test_analyze_explicit_cases(
    raw_analyze: Callable[[bytes], bytes], bitstream: bytes, foreign_bitstream: bytes
) -> None:
    request = api_pb2.AnalyzeRequest
    cases: list[tuple[str, bytes, grpc.StatusCode, str]] = [
        ("empty message", b"", grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        ("bitstream as varint", b"\x08\x05", grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        ("bitstream as group", b"\x0b\x0c", grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        ("task not UTF-8", b"\x12\x02\xff\xfe", grpc.StatusCode.INTERNAL, DESERIALIZE_FAILED),
        ("random", os.urandom(300), grpc.StatusCode.INTERNAL, ""),
        ("foreign weights", request(bitstream=foreign_bitstream).SerializeToString(),
         grpc.StatusCode.FAILED_PRECONDITION, "weights"),
        # The message must not echo 50 kB back: gRPC clients refuse trailers over 16 kB.
        ("50 kB task name", request(bitstream=bitstream, task="x" * 50_000).SerializeToString(),
         grpc.StatusCode.INVALID_ARGUMENT, "unknown task"),
        ("oversized", request(bitstream=os.urandom(MAX_MESSAGE)).SerializeToString(),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max"),
        ("unknown fields are ignored",
         request(bitstream=bitstream).SerializeToString() + b"\x98\x06\x01",
         grpc.StatusCode.OK, ""),
    ]  # fmt: skip
    problems = []
    with watchdog(TEST_BUDGET_S):
        for name, data, want, text in cases:
            code, details, _ = status_of(functools.partial(raw_analyze, data))
            if code != want or text not in details:
                problems.append(f"{name}: {code} {details[:200]!r}")
    assert not problems, "\n".join(problems)


def test_stream_explicit_cases(
    raw_stream: Callable[[list[bytes]], list[bytes]], bitstream: bytes
) -> None:
    good = frame(stream_id="cam-explicit", sequence=0, bitstream=bitstream)
    with watchdog(TEST_BUDGET_S):
        assert status_of(lambda: raw_stream([]))[:2] == (grpc.StatusCode.OK, "")
        for frames in (
            [b""],  # an empty frame: no stream id
            [frame(sequence=3, bitstream=bitstream)],  # missing stream id
            [frame(stream_id="cam-explicit", sequence=s, bitstream=bitstream) for s in SEQUENCES],
            [good, good, good],  # the same frame three times in one call
            [frame(stream_id="cam-explicit", sequence=9, bitstream=bitstream, task="y" * 50_000)],
        ):
            check_stream(raw_stream, frames)
        code, details, _ = status_of(
            lambda: raw_stream(
                [good, frame(stream_id="c", sequence=1, bitstream=bytes(MAX_MESSAGE))]
            )
        )
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)


def test_stream_cancelled_by_client_mid_call(
    server: tuple[Runtime, grpc.Channel], bitstream: bytes
) -> None:
    method = server[1].stream_stream(ANALYZE_STREAM)
    frames = (frame(stream_id="cam-cancel", sequence=i, bitstream=bitstream) for i in range(50))
    call = method(frames, timeout=CALL_TIMEOUT_S)
    with watchdog(TEST_BUDGET_S):
        first = next(iter(call))
        call.cancel()
    assert first


def test_server_still_serving(
    server: tuple[Runtime, grpc.Channel], raw_analyze: Callable[[bytes], bytes], bitstream: bytes
) -> None:
    runtime, channel = server
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=10
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    reply = raw_analyze(bytes(api_pb2.AnalyzeRequest(bitstream=bitstream).SerializeToString()))
    assert api_pb2.AnalyzeResult.FromString(reply).labels
    assert runtime.metrics.total(runtime.metrics.errors, code="INTERNAL") == 0


@pytest.mark.xfail(
    strict=False,
    reason="grpcio 1.85 (sync server): when grpc aborts a stream because a request does not "
    "parse and the handler then returns, grpc sends a second status (_server._status does not "
    "check state.statused); that batch may never complete, the RPC state leaks and "
    "server.stop(grace) never sets its event. The service bounds the wait (grace + 5 s).",
)
def test_server_stops_promptly_after_malformed_streams(
    server: tuple[Runtime, grpc.Channel],
) -> None:
    front, frames = start_front(server[0])
    with grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        method = channel.stream_stream(
            ANALYZE_STREAM, request_serializer=None, response_deserializer=None
        )
        for _ in range(30):
            code, _, _ = status_of(lambda: list(method(iter([b"\x10"]), timeout=CALL_TIMEOUT_S)))
            assert code == grpc.StatusCode.INTERNAL
    with watchdog(60):
        assert stop_front(front, frames, wait_s=5), "gRPC server did not stop within 5 s"
