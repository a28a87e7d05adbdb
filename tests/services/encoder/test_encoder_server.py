"""The gRPC Encoder service over a real socket on 127.0.0.1 with tiny codecs."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from documented_metrics import documented, served
from encoder_fakes import free_port, png_bytes
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.encoder.codecs import CodecBank
from services.encoder.server import SERVICE_NAME, EncoderServer
from services.encoder.settings import EncoderSettings
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc
from transtic.codec import ImageCodec

Request = api_pb2.EncodeRequest


@pytest.fixture(scope="module")
def server(
    make_settings: Callable[..., EncoderSettings], bank: CodecBank
) -> Iterator[EncoderServer]:
    settings = make_settings(max_pixels=100_000, max_image_bytes=300_000, http_port=free_port())
    srv = EncoderServer(settings, bank).start()
    yield srv
    srv.stop(grace=0)


@pytest.fixture(scope="module")
def channel(server: EncoderServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> api_pb2_grpc.EncoderStub:
    return api_pb2_grpc.EncoderStub(channel)


def test_encode_returns_a_decodable_bitstream(
    stub: api_pb2_grpc.EncoderStub, checkpoints: dict[int, Any]
) -> None:
    reply = stub.Encode(Request(image=png_bytes(80, 48), task="classification", quality=2))
    assert (reply.width, reply.height) == (80, 48)
    assert reply.codec_id == "cls_q2"  # the weights file, cls_q2.pth
    assert reply.bits_per_pixel == pytest.approx(len(reply.bitstream) * 8 / (80 * 48))
    assert {"decode_image", "analysis", "entropy_encode", "total"} <= set(reply.timings_ms)
    decoded = ImageCodec.from_checkpoint(str(checkpoints[2])).decode(reply.bitstream)
    assert decoded.header.task == "classification" and decoded.header.quality == 2
    assert tuple(decoded.image.shape) == (3, 48, 80)


def test_defaults_apply_for_empty_task_and_zero_quality(stub: api_pb2_grpc.EncoderStub) -> None:
    reply = stub.Encode(Request(image=png_bytes(32, 32), align_mode="resize"))
    # Quality 3, the default of every entry point, as this encoder holds it.
    assert (reply.codec_id, reply.quality) == ("cls_q3", 3)


def test_get_info_lists_every_codec(stub: api_pb2_grpc.EncoderStub) -> None:
    info = stub.GetInfo(api_pb2.GetInfoRequest())
    assert info.service == "encoder" and info.device == "cpu"
    assert list(info.tasks) == ["classification", "detection"]
    # One entry per (task, quality); the id names the weights file (cls_q1.pth serves both
    # classification and detection at quality 1), as the analytics service names it.
    roles = [(m.id, m.task, m.quality) for m in info.models]
    assert roles == [
        ("cls_q1", "classification", 1),
        ("cls_q2", "classification", 2),
        ("cls_q3", "classification", 3),
        ("cls_q1", "detection", 1),
    ]
    assert all(m.ready and m.kind == "codec" and len(m.fingerprint) == 32 for m in info.models)
    # precision "auto" is resolved to what the codecs really run
    assert {m.precision for m in info.models} <= {"float32", "bfloat16"}
    assert len({m.precision for m in info.models}) == 1


@pytest.mark.parametrize(
    ("request_fields", "code"),
    [
        ({"image": b""}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"image": b"not an image at all"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"image": png_bytes(16, 16)[:60]}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"image": png_bytes(16, 16), "task": "juggling"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"image": png_bytes(16, 16), "quality": 9}, grpc.StatusCode.INVALID_ARGUMENT),
        (
            {"image": png_bytes(16, 16), "task": "detection", "quality": 2},
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        ({"image": png_bytes(16, 16), "align_mode": "stretch"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"image": png_bytes(400, 300)}, grpc.StatusCode.RESOURCE_EXHAUSTED),  # > max_pixels
        ({"image": b"\x89PNG" + bytes(320_000)}, grpc.StatusCode.RESOURCE_EXHAUSTED),  # > bytes
    ],
    ids=[
        "empty",
        "garbage",
        "truncated",
        "task",
        "quality",
        "task-quality",
        "align",
        "pixels",
        "bytes",
    ],
)
def test_bad_requests_get_status_codes_and_server_keeps_serving(
    stub: api_pb2_grpc.EncoderStub, request_fields: dict[str, Any], code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.Encode(Request(**request_fields))
    assert info.value.code() == code
    assert info.value.details()
    assert stub.Encode(Request(image=png_bytes(16, 16))).bitstream


def test_health_and_reflection(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE_NAME):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert {"transtic.v1.Encoder", "grpc.health.v1.Health"} <= names


def test_the_service_serves_the_documented_metrics_only(
    server: EncoderServer, stub: api_pb2_grpc.EncoderStub
) -> None:
    """Its own, read with Prometheus's parser: no stream client metrics (it streams
    nothing), bits per pixel by codec, quality and task."""
    stub.Encode(Request(image=png_bytes(16, 16)))
    with pytest.raises(grpc.RpcError):
        stub.Encode(Request(image=png_bytes(16, 16), task="juggling"))
    url = f"http://127.0.0.1:{server.settings.http_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    assert served(text) == documented("encoder")
    assert "transtic_stream_" not in text


def test_metrics_and_http_health(server: EncoderServer, stub: api_pb2_grpc.EncoderStub) -> None:
    stub.Encode(Request(image=png_bytes(16, 16)))
    base = f"http://127.0.0.1:{server.settings.http_port}"
    text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    assert 'transtic_encoder_frames_total{codec="cls_q3",quality="3",task="classification"}' in text
    assert "transtic_encoder_encode_seconds_bucket" in text
    # An unknown task is counted as such, never under the name the client sent.
    assert (
        'transtic_encoder_errors_total{code="INVALID_ARGUMENT",codec="unknown",'
        'quality="unknown",task="unknown"}' in text
    )
    for path in ("/healthz", "/readyz"):
        assert urllib.request.urlopen(base + path, timeout=5).status == 200
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{base}/nope", timeout=5)


class _SlowBank(CodecBank):
    """Blocks inside encode until released, to hold a call in flight."""

    def __init__(self, inner: CodecBank) -> None:
        self.__dict__.update(inner.__dict__)
        self.entered = threading.Event()
        self.release = threading.Event()

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        self.release.wait(10)
        return super().encode(*args, **kwargs)


def test_graceful_stop_finishes_in_flight_and_refuses_new_calls(
    make_settings: Callable[..., EncoderSettings], bank: CodecBank
) -> None:
    slow = _SlowBank(bank)
    srv = EncoderServer(make_settings(), slow).start()
    address = f"127.0.0.1:{srv.port}"
    with grpc.insecure_channel(address) as ch:
        stub = api_pb2_grpc.EncoderStub(ch)
        future = stub.Encode.future(Request(image=png_bytes(16, 16)))
        assert slow.entered.wait(10)
        stopper = threading.Thread(target=srv.stop, kwargs={"grace": 10})
        stopper.start()
        time.sleep(0.2)
        assert srv.health.Check(health_pb2.HealthCheckRequest(service=""), None).status == (
            health_pb2.HealthCheckResponse.NOT_SERVING
        )
        with grpc.insecure_channel(address) as fresh, pytest.raises(grpc.RpcError) as refused:
            api_pb2_grpc.EncoderStub(fresh).Encode(Request(image=png_bytes(16, 16)), timeout=2)
        assert refused.value.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
        slow.release.set()
        assert future.result(timeout=10).bitstream  # the in-flight call completed
        stopper.join(10)
        assert not stopper.is_alive()
