"""Request ids from the edge client to the stored result and both services' JSON logs.

The analytics service and the edge stream client run as real processes with
``--log-format json``; the test reads their log files line by line as JSON, the stored
frames over REST, and talks gRPC and REST to the service with good and hostile ids.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from e2e_helpers import Analytics, stored_frames, stream_client, write_frames

from services.generated.transtic.v1 import api_pb2, api_pb2_grpc

pytestmark = pytest.mark.integration

N_FRAMES = 4
CLIENT_TIMEOUT_S = 240.0
GENERATED = re.compile(r"^[0-9a-f]{32}$")
# What must never reach a log line or the store: terminal escapes, forged lines, floods.
HOSTILE_FRAME_IDS = ["\x1b[31mred\nINJECTED-LINE", "x" * 500, "spaces are not allowed"]


@pytest.fixture(scope="module")
def analytics(
    codec_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Analytics]:
    work = tmp_path_factory.mktemp("request-ids")
    cache = work / "weights"
    cache.mkdir()
    service = Analytics(
        codec_checkpoint,
        work / "frames.db",
        cache,
        work / "analytics.log",
        extra=["--log-format", "json"],
    )
    try:
        service.start()
        service.wait_ready()
        yield service
    finally:
        service.stop()


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a log file, each of which must be one JSON object (but the start
    markers the test helper writes)."""
    lines = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("===== ")
    ]
    records = [json.loads(line) for line in lines]
    for record in records:
        assert {"timestamp", "level", "logger", "message"} <= set(record), record
    return records


def test_a_streamed_frame_keeps_its_edge_request_id_in_store_and_logs(
    analytics: Analytics, codec_checkpoint: Path, tmp_path: Path
) -> None:
    write_frames(tmp_path / "frames", N_FRAMES, 64, 96)
    client = stream_client(
        codec=codec_checkpoint,
        cache_dir=tmp_path,
        source=tmp_path / "frames",
        target=analytics.target,
        stream_id="ids-cam",
        summary=tmp_path / "summary.json",
        log_path=tmp_path / "client.log",
        extra=["--log-format", "json"],
    ).start()
    assert client.wait(CLIENT_TIMEOUT_S) == 0, client.fail("stream client failed")

    stored = {f["sequence"]: f for f in stored_frames(analytics.url, "ids-cam")}
    assert sorted(stored) == list(range(N_FRAMES))
    # The edge client named each frame when it coded it (its "frame seq=..." line).
    edge = {
        r["sequence"]: r["request_id"]
        for r in json_lines(tmp_path / "client.log")
        if r["message"].startswith("frame seq=") and r.get("stream_id") == "ids-cam"
    }
    cloud = {
        r["sequence"]: r["request_id"]
        for r in json_lines(analytics.log_path)
        if r["message"].startswith("stored frame") and r.get("stream_id") == "ids-cam"
    }
    assert sorted(edge) == sorted(cloud) == list(range(N_FRAMES))
    for sequence, frame in stored.items():
        request_id = frame["request_id"]
        assert request_id and request_id == frame["result"]["request_id"]
        assert edge[sequence] == cloud[sequence] == request_id
    assert len(set(edge.values())) == N_FRAMES  # one id per frame


def test_hostile_frame_ids_are_replaced_and_never_logged(
    analytics: Analytics, bitstream: bytes
) -> None:
    frames = [
        api_pb2.Frame(stream_id="ids-hostile", sequence=0, bitstream=bitstream, request_id="ok-0")
    ] + [
        api_pb2.Frame(stream_id="ids-hostile", sequence=i + 1, bitstream=bitstream, request_id=bad)
        for i, bad in enumerate(HOSTILE_FRAME_IDS)
    ]
    with grpc.insecure_channel(analytics.target) as channel:
        call = api_pb2_grpc.AnalyticsStub(channel).AnalyzeStream(
            iter(frames), metadata=(("x-request-id", "call-7"),), timeout=120
        )
        acks = {ack.sequence: ack for ack in call}
        assert dict(call.initial_metadata())["x-request-id"] == "call-7"
    # A good id is kept; a bad one becomes "<call id>.<sequence>", in the ack and the store.
    expected = {0: "ok-0", **{i: f"call-7.{i}" for i in range(1, len(frames))}}
    assert {seq: ack.request_id for seq, ack in acks.items()} == expected
    assert all(ack.result.request_id == expected[seq] for seq, ack in acks.items())
    stored = {f["sequence"]: f["request_id"] for f in stored_frames(analytics.url, "ids-hostile")}
    assert stored == expected
    log_text = analytics.log_path.read_text()
    assert "INJECTED-LINE" not in log_text and "\\u001b" not in log_text
    assert "x" * 200 not in log_text and "spaces are not allowed" not in log_text
    refusals = [
        r for r in json_lines(analytics.log_path) if r["message"].startswith("refused a client")
    ]
    assert len(refusals) >= len(HOSTILE_FRAME_IDS)


def test_unary_grpc_echoes_or_replaces_the_metadata_id(
    analytics: Analytics, bitstream: bytes
) -> None:
    with grpc.insecure_channel(analytics.target) as channel:
        stub = api_pb2_grpc.AnalyticsStub(channel)
        result, call = stub.Analyze.with_call(
            api_pb2.AnalyzeRequest(bitstream=bitstream),
            metadata=(("x-request-id", "unary-1"),),
            timeout=120,
        )
        assert result.request_id == "unary-1"
        assert dict(call.initial_metadata())["x-request-id"] == "unary-1"
        assert dict(call.trailing_metadata())["x-request-id"] == "unary-1"
        result, call = stub.Analyze.with_call(
            api_pb2.AnalyzeRequest(bitstream=bitstream),
            metadata=(("x-request-id", "y" * 300),),
            timeout=120,
        )
        assert GENERATED.match(result.request_id)
        assert dict(call.initial_metadata())["x-request-id"] == result.request_id
        # Errors carry the id in their trailers.
        with pytest.raises(grpc.RpcError) as refused:
            stub.Analyze(
                api_pb2.AnalyzeRequest(bitstream=b"junk"),
                metadata=(("x-request-id", "bad-input-1"),),
                timeout=60,
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert dict(refused.value.trailing_metadata())["x-request-id"] == "bad-input-1"  # type: ignore[attr-defined]
    assert "y" * 200 not in analytics.log_path.read_text()


def test_rest_takes_a_safe_x_request_id_and_replaces_others(
    analytics: Analytics, sample_png: bytes
) -> None:
    url = f"{analytics.url}/v1/analyze"
    headers = {"content-type": "image/png"}
    with httpx.Client(timeout=120) as http:
        good = http.post(url, content=sample_png, headers={**headers, "X-Request-ID": "rest-1"})
        assert good.status_code == 200, good.text
        assert good.headers["x-request-id"] == good.json()["request_id"] == "rest-1"
        long = http.post(url, content=sample_png, headers={**headers, "X-Request-ID": "z" * 129})
        assert long.status_code == 200
        replaced = long.headers["x-request-id"]
        assert GENERATED.match(replaced) and long.json()["request_id"] == replaced
        # Errors and answers without a body model carry one too.
        bad = http.post(url, content=b"junk", headers={**headers, "X-Request-ID": "rest-bad"})
        assert bad.status_code == 400 and bad.headers["x-request-id"] == "rest-bad"
        assert GENERATED.match(http.get(f"{analytics.url}/healthz").headers["x-request-id"])
    assert "z" * 129 not in analytics.log_path.read_text()
