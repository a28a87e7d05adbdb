"""Both services and the edge client as real processes: stream, crash, restart, bad inputs.

The analytics service (``python -m services.analytics``) and the edge encoder service
(``python -m services.encoder serve``) run on 127.0.0.1 with free ports and one tiny
random-weight codec file; the analytics side classifies with the real default backend
(EfficientNet-Lite0, weights shipped in a package). The edge client
(``python -m services.encoder stream``) streams a folder of small PNGs.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from e2e_helpers import (
    BITSTREAM,
    SERVING,
    Analytics,
    Encoder,
    Inputs,
    Process,
    child_pids,
    free_port,
    grpc_health,
    grpc_problems,
    make_inputs,
    metric,
    png,
    read_summary,
    rest_cases,
    stored_frames,
    stream_client,
    wait_gone,
    write_frames,
)

from services.analytics.store import SqliteFrameStore
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc
from transtic.client import AnalyticsClient, AnalyticsGrpcClient, ClientError, EncoderGrpcClient

pytestmark = pytest.mark.integration

N_FRAMES = 12
N_KILL_FRAMES = 16
HEIGHT, WIDTH = 96, 128
MAX_UPLOAD = 1_000_000  # analytics body / message limit, so "too large" stays cheap
MAX_IMAGE = 300_000  # encoder upload limit
CLIENT_TIMEOUT_S = 240.0
STAGES = {"queue", "parse", "entropy_decode", "synthesis", "task"}


@dataclass
class Stack:
    analytics: Analytics
    encoder: Encoder
    codec: Path
    cache: Path


@pytest.fixture(scope="module")
def stack(codec_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("e2e")
    # Empty on purpose: classification finds its weights in an installed package,
    # detection and segmentation find none (the 503 case below).
    cache = work / "weights"
    cache.mkdir()
    analytics = Analytics(
        codec_checkpoint,
        work / "frames.db",
        cache,
        work / "analytics.log",
        extra=["--max-upload-bytes", str(MAX_UPLOAD)],
    )
    encoder = Encoder(
        codec_checkpoint, cache, work / "encoder.log", extra=["--max-image-bytes", str(MAX_IMAGE)]
    )
    try:
        # Both import torch and load models: start them together.
        analytics.start()
        encoder.start()
        analytics.wait_ready()
        encoder.wait_ready()
        yield Stack(analytics, encoder, codec_checkpoint, cache)
    finally:
        encoder.stop()
        analytics.stop()


def run_client(stack: Stack, tmp_path: Path, stream_id: str, *extra: str) -> Process:
    return stream_client(
        codec=stack.codec,
        cache_dir=stack.cache,
        source=tmp_path / "frames",
        target=stack.analytics.target,
        stream_id=stream_id,
        summary=tmp_path / "summary.json",
        log_path=tmp_path / "client.log",
        extra=extra,
    ).start()


def check_results(frames: list[dict[str, Any]], count: int) -> None:
    """Every sequence 0..count-1 stored exactly once, each with a classification result."""
    sequences = [f["sequence"] for f in frames]
    assert sorted(sequences) == list(range(count)), sequences
    assert len(set(sequences)) == len(sequences)
    for frame in frames:
        result = frame["result"]
        assert frame["task"] == result["task"] == "classification"
        assert result["labels"] and all(0 <= lab["score"] <= 1 for lab in result["labels"])
        assert result["bits_per_pixel"] > 0 and result["num_bytes"] > 0
        assert (result["height"], result["width"]) == (HEIGHT, WIDTH)
        assert result["bits_per_pixel"] == pytest.approx(result["num_bytes"] * 8 / HEIGHT / WIDTH)
        assert set(result["timings_ms"]) >= STAGES


# -- a: a stream end to end --------------------------------------------------------------
def test_stream_results_and_metrics(stack: Stack, tmp_path: Path) -> None:
    write_frames(tmp_path / "frames", N_FRAMES, HEIGHT, WIDTH)
    service = stack.analytics
    before = service.metrics()
    client = run_client(stack, tmp_path, "e2e-stream")
    assert client.wait(CLIENT_TIMEOUT_S) == 0, client.fail("stream client failed")

    summary = read_summary(tmp_path / "summary.json")
    counts = summary["frames"]
    assert summary["error"] is None and summary["drained"], summary
    assert counts["encoded"] == counts["acked"] == N_FRAMES, counts
    assert counts["unacked"] == counts["errors"] == counts["duplicates"] == 0, counts

    frames = stored_frames(service.url, "e2e-stream")
    check_results(frames, N_FRAMES)
    stored_bytes = sum(f["result"]["num_bytes"] for f in frames)
    assert stored_bytes == summary["bytes"]
    with AnalyticsClient(service.url, timeout_s=10) as client:
        listing = [s.model_dump() for s in client.streams().streams]
    (entry,) = [s for s in listing if s["stream_id"] == "e2e-stream"]
    assert entry["frames_total"] == entry["frames_stored"] == N_FRAMES
    assert entry["last_sequence"] == N_FRAMES - 1

    after = service.metrics()

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, labels) - metric(before, name, labels)

    cls = {"task": "classification"}
    frames_name = "transtic_analytics_frames_total"
    assert delta(frames_name, **cls, api="stream") == N_FRAMES
    assert delta("transtic_analytics_bitstream_bytes_total", **cls) == summary["bytes"]
    assert delta("transtic_analytics_bits_per_pixel_count", **cls) == N_FRAMES
    assert delta("transtic_analytics_bits_per_pixel_sum", **cls) == pytest.approx(
        sum(f["result"]["bits_per_pixel"] for f in frames)
    )
    assert delta("transtic_analytics_errors_total") == 0
    assert delta("transtic_analytics_duplicate_frames_total") == 0


# -- b: the analytics process dies mid-stream ----------------------------------------------
def test_sigkill_mid_stream_loses_and_duplicates_nothing(stack: Stack, tmp_path: Path) -> None:
    write_frames(tmp_path / "frames", N_KILL_FRAMES, HEIGHT, WIDTH)
    service = stack.analytics
    stream_id = "e2e-kill"
    client_metrics = f"http://127.0.0.1:{free_port()}"
    client = run_client(
        stack,
        tmp_path,
        stream_id,
        "--fps", "4", "--pace",
        "--reconnect-initial-s", "0.2", "--reconnect-max-s", "1",
        "--drain-timeout-s", "180", "--ack-timeout-s", "120",
        "--stream-metrics-port", client_metrics.rsplit(":", 1)[1],
    )  # fmt: skip

    seen = {"sent": 0.0, "acked": 0.0}

    def client_counts(check: Callable[[], bool]) -> Callable[[], bool]:
        def poll() -> bool:
            try:
                text = httpx.get(f"{client_metrics}/metrics", timeout=2).text
            except httpx.HTTPError:
                return False
            for key in seen:
                seen[key] = metric(text, f"transtic_stream_frames_{key}_total")
            return check()

        return poll

    client.wait_until(client_counts(lambda: seen["acked"] >= 3), CLIENT_TIMEOUT_S, "3 acks")
    # Freeze the service first, so that frames are surely in flight (sent, never
    # acknowledged) when it dies, however fast this machine processes them.
    workers = child_pids(service.pid)
    service.signal(signal.SIGSTOP)
    in_flight = client_counts(lambda: seen["sent"] >= seen["acked"] + 2)
    client.wait_until(in_flight, CLIENT_TIMEOUT_S, "frames in flight to the frozen service")
    assert service.kill() == -signal.SIGKILL
    # What the dead process had stored (every acknowledged frame, and perhaps a few
    # whose ack was still on its way), read from its SQLite file.
    store = SqliteFrameStore(service.db)
    snapshot = {f.sequence: f.to_json() for f in store.frames(stream_id, -1, 1000)}
    store.close()
    # The isolated range-decoder worker sees its pipe close and exits with its parent.
    orphans = wait_gone(workers, timeout=15)
    assert not orphans, f"workers outlived the killed service: {orphans}"

    restart_ms = time.time() * 1000
    service.start()
    service.wait_ready()
    assert client.wait(CLIENT_TIMEOUT_S) == 0, client.fail("stream client did not finish")

    summary = read_summary(tmp_path / "summary.json")
    counts = summary["frames"]
    assert summary["error"] is None and summary["drained"], summary
    assert counts["encoded"] == N_KILL_FRAMES and counts["unacked"] == 0, counts
    assert counts["errors"] == 0, counts
    # Each frame is acknowledged exactly once: by a result, or (a resend of a frame
    # stored before the kill) by the stored result.
    assert counts["acked"] + counts["duplicates"] == N_KILL_FRAMES, counts
    assert counts["resent"] >= 1 and summary["connections"] >= 2, summary

    frames = stored_frames(service.url, stream_id)
    check_results(frames, N_KILL_FRAMES)
    by_sequence = {f["sequence"]: f for f in frames}
    # A result is stored before its ack is sent: whatever the client saw acknowledged
    # is in the dead process's store.
    assert len(snapshot) >= seen["acked"] >= 3, (snapshot.keys(), seen)
    for sequence, before in snapshot.items():
        assert by_sequence[sequence] == before, f"frame {sequence} changed across the restart"

    # The restarted process analysed exactly the frames it stored: nothing twice.
    fresh = sum(1 for f in frames if f["received_ms"] >= restart_ms)
    text = service.metrics()
    processed = metric(text, "transtic_analytics_frames_total", {"api": "stream"})
    assert processed == fresh, (processed, fresh)
    assert metric(text, "transtic_analytics_duplicate_frames_total") == counts["duplicates"]


# -- c: bad inputs -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inputs(stack: Stack, foreign_bitstream: bytes) -> Inputs:
    # The SDK, as an application would call the services.
    with EncoderGrpcClient(stack.encoder.target, timeout_s=120) as encoder:
        reply = encoder.encode(png(HEIGHT, WIDTH, seed=99))
    with AnalyticsClient(stack.analytics.url, timeout_s=10) as analytics:
        models = analytics.models().models
    (detector,) = [m for m in models if m.kind == "task" and m.task == "detection"]
    assert detector.required_weights
    return make_inputs(reply.bitstream, foreign_bitstream, detector.required_weights[0])


def test_rest_rejects_bad_inputs(stack: Stack, inputs: Inputs) -> None:
    url = f"{stack.analytics.url}/v1/analyze"
    problems = []
    for name, kwargs, status, code, text in rest_cases(inputs, MAX_UPLOAD):
        reply = httpx.post(url, timeout=60, **kwargs)
        body = reply.json()
        error = body.get("error", {})
        if (reply.status_code, error.get("code")) != (status, code) or text not in error.get(
            "message", ""
        ):
            problems.append(f"{name}: {reply.status_code} {body}")
    # Random range-coder input decodes to *some* latent (rANS cannot tell), or fails in
    # the isolated decoder worker: either way a clean answer, never a crash.
    reply = httpx.post(url, content=inputs.garbage_payload, headers=BITSTREAM, timeout=60)
    if reply.status_code not in (200, 400):
        problems.append(f"garbage payload: {reply.status_code} {reply.text}")
    missing = httpx.get(f"{stack.analytics.url}/v1/streams/nope/frames", timeout=10)
    if missing.status_code != 404 or missing.json()["error"]["code"] != "NOT_FOUND":
        problems.append(f"unknown stream: {missing.status_code} {missing.text}")
    assert not problems, "\n".join(problems)


def test_grpc_analyze_rejects_bad_inputs(stack: Stack, inputs: Inputs) -> None:
    x, invalid = inputs, grpc.StatusCode.INVALID_ARGUMENT

    def req(data: bytes, task: str = "") -> api_pb2.AnalyzeRequest:
        return api_pb2.AnalyzeRequest(bitstream=data, task=task)

    cases = [
        ("corrupt", req(x.corrupt), invalid, ""),
        ("truncated", req(x.truncated), invalid, ""),
        ("random", req(x.random), invalid, ""),
        ("empty", req(b""), invalid, ""),
        ("unknown task", req(x.good, "astrology"), invalid, "astrology"),
        ("other weights", req(x.foreign), grpc.StatusCode.FAILED_PRECONDITION, "does not hold"),
        (
            "missing weights",
            req(x.good, "detection"),
            grpc.StatusCode.UNAVAILABLE,
            x.detection_file,
        ),
        # gRPC's own message limit (max_upload_bytes) answers before the service sees it.
        ("too large", req(os.urandom(MAX_UPLOAD + 1)), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    ]
    with grpc.insecure_channel(stack.analytics.target) as channel:
        stub = api_pb2_grpc.AnalyticsStub(channel)
        problems = grpc_problems(lambda r: stub.Analyze(r, timeout=60), cases)
    assert not problems, "\n".join(problems)


def test_grpc_stream_answers_bad_frames_in_band(stack: Stack, inputs: Inputs) -> None:
    x, stream = inputs, "e2e-bad-frames"
    frames = [
        api_pb2.Frame(stream_id=stream, sequence=0, bitstream=x.corrupt),
        api_pb2.Frame(stream_id=stream, sequence=1, bitstream=x.foreign),
        api_pb2.Frame(stream_id=stream, sequence=2, bitstream=x.good),
        api_pb2.Frame(stream_id=stream, sequence=3, bitstream=x.good, task="detection"),
        api_pb2.Frame(stream_id="", sequence=4, bitstream=x.good),
    ]
    with grpc.insecure_channel(stack.analytics.target) as channel:
        acks = list(api_pb2_grpc.AnalyticsStub(channel).AnalyzeStream(iter(frames), timeout=120))
    codes = {
        a.sequence: grpc.StatusCode.OK.value[0] if not a.error_code else a.error_code for a in acks
    }
    expected = {
        0: grpc.StatusCode.INVALID_ARGUMENT,
        1: grpc.StatusCode.FAILED_PRECONDITION,
        2: grpc.StatusCode.OK,
        3: grpc.StatusCode.UNAVAILABLE,
        4: grpc.StatusCode.INVALID_ARGUMENT,
    }
    assert codes == {s: c.value[0] for s, c in expected.items()}, acks
    (good,) = [a for a in acks if a.sequence == 2]
    assert good.result.labels and not good.duplicate
    # Failed frames are not stored (a resend retries them); the good one is.
    assert [f["sequence"] for f in stored_frames(stack.analytics.url, stream)] == [2]


def test_encoder_rejects_bad_inputs(stack: Stack) -> None:
    invalid, req, good = grpc.StatusCode.INVALID_ARGUMENT, api_pb2.EncodeRequest, png(seed=5)
    cases = [
        ("garbage image", req(image=b"GIF89a garbage"), invalid, ""),
        ("empty image", req(image=b""), invalid, "empty"),
        ("unknown task", req(image=good, task="astrology"), invalid, "astrology"),
        ("unknown quality", req(image=good, quality=7), invalid, "quality"),
        ("bad align mode", req(image=good, align_mode="crop"), invalid, "align"),
        (
            "too large",
            req(image=b"\x89PNG" + os.urandom(MAX_IMAGE)),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            str(MAX_IMAGE),
        ),
    ]
    with grpc.insecure_channel(stack.encoder.target) as channel:
        stub = api_pb2_grpc.EncoderStub(channel)
        problems = grpc_problems(lambda r: stub.Encode(r, timeout=60), cases)
    assert not problems, "\n".join(problems)


def test_services_still_serve_after_bad_inputs(stack: Stack, inputs: Inputs) -> None:
    assert stack.analytics.alive and stack.encoder.alive
    assert grpc_health(stack.analytics.target) == SERVING
    assert grpc_health(stack.encoder.target) == SERVING
    # Edge encoder -> analytics over gRPC, as a camera would, through the SDK.
    with EncoderGrpcClient(stack.encoder.target, timeout_s=120) as encoder:
        coded = encoder.encode(png(HEIGHT, WIDTH, seed=6))
    assert coded.bits_per_pixel > 0 and (coded.height, coded.width) == (HEIGHT, WIDTH)
    with AnalyticsGrpcClient(stack.analytics.target, timeout_s=120) as analytics_grpc:
        result = analytics_grpc.analyze(coded.bitstream)
        with pytest.raises(ClientError) as refused:
            analytics_grpc.analyze(b"not a bitstream")
    assert refused.value.code == "INVALID_ARGUMENT"
    assert result.task == "classification" and result.labels
    assert result.bits_per_pixel == pytest.approx(coded.bits_per_pixel)
    # And an image upload over REST (coded by the analytics side's edge codec).
    with AnalyticsClient(stack.analytics.url, timeout_s=120) as analytics:
        answer = analytics.analyze(png(HEIGHT, WIDTH, seed=7), content_type="image/png")
        assert answer.labels and answer.bits_per_pixel > 0 and answer.input.kind == "image"
        assert analytics.ready()
    # Errors were counted by code, and none was an internal error.
    text = stack.analytics.metrics()
    assert metric(text, "transtic_analytics_errors_total", {"code": "INVALID_ARGUMENT"}) > 0
    assert metric(text, "transtic_analytics_errors_total", {"code": "INTERNAL"}) == 0


def test_services_drain_and_exit_cleanly(stack: Stack) -> None:
    assert stack.encoder.stop() == 0, stack.encoder.log_tail()
    assert stack.analytics.stop() == 0, stack.analytics.log_tail()
