"""The contract an edge developer reads: what Encode and GetInfo say, reflection v1."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest
from encoder_fakes import png_bytes
from grpc_reflection.v1alpha import reflection_pb2

from services.encoder.codecs import CodecBank
from services.encoder.server import SERVICE_NAME, EncoderServer
from services.encoder.settings import EncoderSettings
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc
from transtic.bitstream import peek_header


@pytest.fixture(scope="module")
def channel(make_settings: Callable[..., EncoderSettings]) -> Iterator[grpc.Channel]:
    settings = make_settings(quality=2)
    server = EncoderServer(settings, CodecBank.load(settings)).start()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch
    server.stop(grace=0)


def test_encode_says_which_codec_quality_and_task_it_used(channel: grpc.Channel) -> None:
    reply = api_pb2_grpc.EncoderStub(channel).Encode(
        api_pb2.EncodeRequest(image=png_bytes(64, 64)), timeout=60
    )
    header = peek_header(reply.bitstream)
    assert reply.task == "classification" and reply.quality == 2  # the defaults, resolved
    assert reply.fingerprint == header.weights_fingerprint.hex()
    assert {"decode_image", "analysis", "entropy_encode", "pack", "total"} <= set(reply.timings_ms)


def test_service_info_carries_defaults_and_ready_tasks(channel: grpc.Channel) -> None:
    info = api_pb2_grpc.EncoderStub(channel).GetInfo(api_pb2.GetInfoRequest(), timeout=10)
    assert info.default_task == "classification" and info.default_quality == 2
    assert set(info.ready_tasks) <= set(info.tasks) and "classification" in info.ready_tasks


def list_services(channel: grpc.Channel, package: str) -> list[str]:
    """ListServices over reflection ``package`` (v1 and v1alpha share their messages)."""
    call = channel.stream_stream(
        f"/{package}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = list(call(iter([request]), timeout=10))
    return [s.name for s in reply.list_services_response.service]


@pytest.mark.parametrize("package", ["grpc.reflection.v1", "grpc.reflection.v1alpha"])
def test_reflection_v1_and_v1alpha(channel: grpc.Channel, package: str) -> None:
    services = list_services(channel, package)
    assert SERVICE_NAME in services and "grpc.reflection.v1.ServerReflection" in services
