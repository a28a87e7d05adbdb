"""The issue's cheap-request attacks against the real service processes.

Each is a tiny request whose decoded or coded size is huge; each must be refused from
its header, in well under a second, without the server's peak memory moving.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from e2e_helpers import Analytics, Encoder, png
from PIL import Image

from services.generated.transtic.v1 import api_pb2, api_pb2_grpc
from transtic.bitstream import AlignMode, EntropyParamMode, StreamHeader, encode_container
from transtic.codec import ImageCodec

from .load_helpers import proc_status_mb

pytestmark = pytest.mark.integration
# The refusals are header checks; the bound leaves room for a machine shared with training.
REFUSAL_S = 2.0
GROWTH_MB = 100.0


def flat_png(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def lying_stream(checkpoint: Path, height: int, width: int) -> bytes:
    codec = ImageCodec.from_checkpoint(str(checkpoint))
    config = codec.model.config
    header = StreamHeader(
        codec=codec.codec_name,
        weights_fingerprint=codec.fingerprint,
        quality=0,
        task=codec.task,
        original_size=(height, width),
        coded_size=(height, width),
        align_mode=AlignMode.PAD,
        entropy_mode=EntropyParamMode.FIXED_POINT,
        y_shape=(config.M, height // 16, width // 16),
        z_shape=(config.N, height // 64, width // 64),
    )
    return encode_container(header, b"\0", b"\0", max_pixels=2**30)


@pytest.fixture(scope="module")
def services(
    codec_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Analytics, Encoder]]:
    work = tmp_path_factory.mktemp("attacks")
    analytics = Analytics(
        codec_checkpoint,
        work / "frames.db",
        work,
        work / "analytics.log",
        extra=["--task-backends", "classification", "--rate-limit-per-s", "0"],
    )
    encoder = Encoder(codec_checkpoint, work, work / "encoder.log")
    try:
        analytics.start()
        encoder.start()
        analytics.wait_ready()
        encoder.wait_ready()
        yield analytics, encoder
    finally:
        analytics.stop()
        encoder.stop()


def timed(call) -> tuple[object, float]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def test_analytics_refuses_cheap_huge_requests(services, codec_checkpoint):
    analytics, _ = services
    with httpx.Client(base_url=analytics.url, timeout=60) as client:
        # Warm up (the classifier loads on first use), then take the memory baseline.
        image = {"content-type": "image/png"}
        warm = client.post("/v1/analyze", content=png(64, 64), headers=image)
        assert warm.status_code == 200, warm.text
        peak_before = proc_status_mb(analytics.pid, "VmHWM")
        attacks = {
            "8192x1 png": (flat_png(1, 8192), "image/png"),
            "1x32768 png": (flat_png(32768, 1), "image/png"),
            "header claiming 4096x8192": (
                lying_stream(codec_checkpoint, 4096, 8192),
                "application/x-transtic",
            ),
        }
        for name, (body, media) in attacks.items():
            assert len(body) < 400, name
            reply, seconds = timed(
                lambda b=body, m=media: client.post(
                    "/v1/analyze", content=b, headers={"content-type": m}
                )
            )
            assert reply.status_code == 400, (name, reply.text)
            assert reply.json()["error"]["code"] == "INVALID_ARGUMENT"
            assert seconds < REFUSAL_S, (name, seconds)
    with grpc.insecure_channel(analytics.target) as channel:
        stub = api_pb2_grpc.AnalyticsStub(channel)
        stream = lying_stream(codec_checkpoint, 4096, 8192)
        with pytest.raises(grpc.RpcError) as info:
            stub.Analyze(api_pb2.AnalyzeRequest(bitstream=stream), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "max_pixels" in (info.value.details() or "")
    growth = proc_status_mb(analytics.pid, "VmHWM") - peak_before
    assert growth < GROWTH_MB, f"peak RSS grew by {growth:.0f} MB"


def test_encoder_refuses_a_4096x1_png(services):
    _, encoder = services
    with grpc.insecure_channel(encoder.target) as channel:
        stub = api_pb2_grpc.EncoderStub(channel)
        warm = stub.Encode(api_pb2.EncodeRequest(image=png(64, 64)), timeout=60)
        assert warm.bitstream
        peak_before = proc_status_mb(encoder.pid, "VmHWM")
        start = time.perf_counter()
        with pytest.raises(grpc.RpcError) as info:
            stub.Encode(api_pb2.EncodeRequest(image=flat_png(1, 4096)), timeout=10)
        seconds = time.perf_counter() - start
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "aspect ratio" in (info.value.details() or "")
    assert seconds < REFUSAL_S
    growth = proc_status_mb(encoder.pid, "VmHWM") - peak_before
    assert growth < GROWTH_MB, f"peak RSS grew by {growth:.0f} MB"
