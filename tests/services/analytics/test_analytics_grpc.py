"""The gRPC server on 127.0.0.1 (ephemeral port): Analyze, AnalyzeStream, health, reflection."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from service_fakes import analytics_grpc

from services.analytics.grpc_service import SERVICE_NAME
from services.analytics.runtime import Runtime
from services.analytics.settings import Settings
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc
from transtic.tasks import TaskBackend

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(
    module_settings: Settings, backends: list[TaskBackend]
) -> Iterator[tuple[Runtime, grpc.Channel]]:
    with analytics_grpc(module_settings, backends, serving=None, grace_s=1) as served:
        yield served.runtime, served.channel


@pytest.fixture(scope="module")
def stub(server: tuple[Runtime, grpc.Channel]) -> api_pb2_grpc.AnalyticsStub:
    return api_pb2_grpc.AnalyticsStub(server[1])


def test_analyze(stub: api_pb2_grpc.AnalyticsStub, bitstream: bytes) -> None:
    result = stub.Analyze(api_pb2.AnalyzeRequest(bitstream=bitstream), timeout=60)
    assert result.task == "classification" and len(result.labels) == 3
    assert result.width == result.height == 64
    assert result.bits_per_pixel == pytest.approx(len(bitstream) * 8 / 64**2)
    assert result.codec_id == "tiny"
    assert result.task_model_id == "classification:efficientnet_lite0_imagenet"
    assert {"parse", "entropy_decode", "synthesis", "task"} <= set(result.timings_ms)
    det = stub.Analyze(api_pb2.AnalyzeRequest(bitstream=bitstream, task="detection"), timeout=60)
    assert det.detections[0].box == [16.0, 16.0, 48.0, 48.0]
    assert det.detections[0].mask_size == [64, 64] and det.detections[0].mask_rle


@pytest.mark.parametrize(
    ("kind", "task", "code", "needle"),
    [
        ("random", "", grpc.StatusCode.INVALID_ARGUMENT, "magic"),
        ("truncated", "", grpc.StatusCode.INVALID_ARGUMENT, "bitstream"),
        ("foreign", "", grpc.StatusCode.FAILED_PRECONDITION, "weights"),
        ("good", "captioning", grpc.StatusCode.INVALID_ARGUMENT, "captioning"),
        ("good", "segmentation", grpc.StatusCode.UNAVAILABLE, "maskrcnn_resnet50_fpn_coco"),
    ],
)
def test_analyze_errors(
    stub: api_pb2_grpc.AnalyticsStub,
    bitstream: bytes,
    foreign_bitstream: bytes,
    kind: str,
    task: str,
    code: grpc.StatusCode,
    needle: str,
) -> None:
    data = {
        "random": b"\x13\x37" * 64,
        "truncated": bitstream[:-20],
        "foreign": foreign_bitstream,
        "good": bitstream,
    }[kind]
    with pytest.raises(grpc.RpcError) as info:
        stub.Analyze(api_pb2.AnalyzeRequest(bitstream=data, task=task), timeout=60)
    assert info.value.code() == code
    assert needle in info.value.details()


def _frames(stream_id: str, items: list[tuple[int, bytes]]) -> Iterator[api_pb2.Frame]:
    for seq, data in items:
        yield api_pb2.Frame(stream_id=stream_id, sequence=seq, bitstream=data)


def test_stream_dedupes_and_persists_before_ack(
    server: tuple[Runtime, grpc.Channel],
    stub: api_pb2_grpc.AnalyticsStub,
    bitstream: bytes,
) -> None:
    runtime = server[0]
    corrupt = bitstream[:-30]
    sent = [(0, bitstream), (1, bitstream), (1, bitstream), (2, corrupt), (3, bitstream)]
    acks = list(stub.AnalyzeStream(_frames("cam-1", sent), timeout=60))
    assert len(acks) == len(sent)
    by_seq: dict[int, list[api_pb2.FrameAck]] = {}
    for ack in acks:
        assert ack.stream_id == "cam-1"
        by_seq.setdefault(ack.sequence, []).append(ack)
        if ack.error_code == 0:
            # Persisted before the ack was sent.
            assert runtime.store.get("cam-1", ack.sequence) is not None
    assert sorted(a.duplicate for a in by_seq[1]) == [False, True]
    assert by_seq[1][0].result == by_seq[1][1].result
    (bad,) = by_seq[2]
    assert bad.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "bitstream" in bad.error_message and not bad.HasField("result")
    assert runtime.store.get("cam-1", 2) is None  # failures are not stored

    # A reconnecting client resends everything: stored frames come back as duplicates,
    # the failed one is processed (now with good data).
    again = list(stub.AnalyzeStream(_frames("cam-1", [(0, b""), (2, bitstream)]), timeout=60))
    resent = {a.sequence: a for a in again}
    assert resent[0].duplicate and resent[0].error_code == 0
    assert resent[0].result == next(a for a in acks if a.sequence == 0).result
    assert not resent[2].duplicate and resent[2].result.task == "classification"
    assert [f.sequence for f in runtime.store.frames("cam-1")] == [0, 1, 2, 3]


def test_stream_rejects_bad_frame_keys(stub: api_pb2_grpc.AnalyticsStub, bitstream: bytes) -> None:
    acks = list(stub.AnalyzeStream(_frames("", [(0, bitstream)]), timeout=60))
    assert acks[0].error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "stream_id" in acks[0].error_message


def test_empty_stream_ends_cleanly(stub: api_pb2_grpc.AnalyticsStub) -> None:
    assert list(stub.AnalyzeStream(iter([]), timeout=30)) == []


def test_get_info(stub: api_pb2_grpc.AnalyticsStub) -> None:
    info = stub.GetInfo(api_pb2.GetInfoRequest(), timeout=10)
    assert info.service == "analytics" and info.device == "cpu"
    assert list(info.tasks) == ["classification", "detection", "segmentation"]
    codec = next(m for m in info.models if m.kind == "codec")
    assert codec.ready and len(codec.fingerprint) == 32
    assert codec.precision in ("float32", "bfloat16")  # "auto", resolved
    seg = next(m for m in info.models if m.task == "segmentation")
    assert not seg.ready and "maskrcnn" in seg.detail


def test_health_is_serving(server: tuple[Runtime, grpc.Channel]) -> None:
    health = health_pb2_grpc.HealthStub(server[1])
    for name in ("", SERVICE_NAME):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_services(server: tuple[Runtime, grpc.Channel]) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(server[1])
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = list(reflection.ServerReflectionInfo(iter([request]), timeout=10))
    names = {s.name for s in reply.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
