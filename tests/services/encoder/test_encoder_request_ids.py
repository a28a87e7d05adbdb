"""The Encode call takes the caller's x-request-id (when safe), logs under it and echoes it."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator

import grpc
import pytest
from encoder_fakes import png_bytes

from services.encoder.codecs import CodecBank
from services.encoder.server import EncoderServer
from services.encoder.settings import EncoderSettings
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc


@pytest.fixture(scope="module")
def stub(
    make_settings: Callable[..., EncoderSettings], bank: CodecBank
) -> Iterator[api_pb2_grpc.EncoderStub]:
    server = EncoderServer(make_settings(max_pixels=100_000, max_image_bytes=300_000), bank)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield api_pb2_grpc.EncoderStub(channel)
    finally:
        server.stop(grace=0)


def test_a_safe_id_is_echoed_in_both_metadata(stub: api_pb2_grpc.EncoderStub) -> None:
    _, call = stub.Encode.with_call(
        api_pb2.EncodeRequest(image=png_bytes(16, 16)),
        metadata=(("x-request-id", "edge-cam:42"),),
        timeout=60,
    )
    assert dict(call.initial_metadata())["x-request-id"] == "edge-cam:42"
    assert dict(call.trailing_metadata())["x-request-id"] == "edge-cam:42"


def test_errors_carry_the_id_and_unsafe_ids_are_replaced(
    stub: api_pb2_grpc.EncoderStub, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        stub.Encode(
            api_pb2.EncodeRequest(image=b"not an image"),
            metadata=(("x-request-id", "bad-upload-1"),),
            timeout=60,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(refused.value.trailing_metadata())["x-request-id"] == "bad-upload-1"  # type: ignore[attr-defined]
    hostile = "<" + "q" * 300 + ">"
    with caplog.at_level(logging.WARNING, logger="services.common.request_ids"):
        _, call = stub.Encode.with_call(
            api_pb2.EncodeRequest(image=png_bytes(16, 16)),
            metadata=(("x-request-id", hostile),),
            timeout=60,
        )
    replaced = dict(call.initial_metadata())["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", replaced)
    assert hostile not in caplog.text and replaced in caplog.text
