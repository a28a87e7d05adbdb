"""The stream client against a real (fake) Analytics gRPC server that stops and restarts."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
import torch
from documented_metrics import documented, served
from encoder_fakes import FakeAnalyticsServer, FakeEncoder, free_port

from services.encoder.resend import ResendBuffer
from services.encoder.sender import StreamSender
from services.encoder.settings import EncoderSettings
from services.encoder.sources import SourceFrame
from services.encoder.streamer import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNACKED,
    StreamRun,
    start_metrics,
)
from services.generated.transtic.v1 import api_pb2

BPP = {1: 0.5, 2: 1.0, 3: 2.0}
CAPACITY = 4


def frames(n: int) -> Iterator[SourceFrame]:
    for i in range(n):
        yield SourceFrame(i, f"f{i}", torch.zeros(3, 16, 16), 1_700_000_000_000 + i)


def make_run(
    make_settings: Callable[..., EncoderSettings], target: str, n: int, **overrides: Any
) -> tuple[StreamRun, FakeEncoder]:
    values: dict[str, Any] = {
        "target": target,
        "stream_id": "cam-1",
        "buffer_size": CAPACITY,
        "reconnect_initial_s": 0.05,
        "reconnect_max_s": 0.2,
        "drain_timeout_s": 5.0,
        "ack_timeout_s": 10.0,
    }
    values.update(overrides)
    run_ref: list[StreamRun] = []
    occupancy: list[int] = []
    encoder = FakeEncoder(BPP, observe=lambda: occupancy.append(len(run_ref[0].buffer)))
    run = StreamRun(
        make_settings(**values),
        encode=encoder,
        qualities=list(BPP),
        frames=frames(n),
        fingerprints={q: f"{q:032x}" for q in BPP},
    )
    run_ref.append(run)
    encoder.occupancy = occupancy  # type: ignore[attr-defined]
    return run, encoder


class Background:
    """Run a StreamRun in a thread, keeping its summary."""

    def __init__(self, run: StreamRun) -> None:
        self.run = run
        self.summary: dict[str, Any] = {}
        self.thread = threading.Thread(target=lambda: self.summary.update(run.run()), daemon=True)
        self.thread.start()

    def join(self, timeout: float = 30) -> dict[str, Any]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "stream run did not finish"
        return self.summary


@pytest.fixture
def analytics() -> Iterator[FakeAnalyticsServer]:
    server = FakeAnalyticsServer()
    yield server
    server.stop()


def test_all_frames_delivered_in_order(
    make_settings: Callable[..., EncoderSettings], analytics: FakeAnalyticsServer
) -> None:
    analytics.start()
    run, encoder = make_run(make_settings, analytics.target, 20)
    summary = run.run()
    assert analytics.store.sequences() == list(range(20))
    assert summary["frames"]["acked"] == 20 and summary["frames"]["unacked"] == 0
    assert summary["frames"]["resent"] == 0 and summary["connections"] == 1
    assert max(encoder.occupancy) <= CAPACITY  # type: ignore[attr-defined]
    assert run.exit_code(summary) == EXIT_OK
    assert all(sid == "cam-1" for sid, _ in analytics.store.processed)


def test_analytics_restart_loses_no_frame_and_processes_none_twice(
    make_settings: Callable[..., EncoderSettings], analytics: FakeAnalyticsServer
) -> None:
    analytics.store.hang_after = 7  # processes frame 7, then dies before acking it
    analytics.start()
    run, encoder = make_run(make_settings, analytics.target, 30)
    background = Background(run)
    assert analytics.store.hanging.wait(10)
    time.sleep(0.3)
    # Backpressure: with the cloud stuck the reader stops once the buffer is full.
    assert len(encoder.calls) <= 8 + CAPACITY + 1
    analytics.stop()
    time.sleep(0.4)  # down for a while: the client keeps retrying with backoff
    analytics.start()
    summary = background.join()
    store = analytics.store
    assert store.sequences() == list(range(30))  # every frame, each exactly once, in order
    assert 7 in store.duplicates_answered  # the lost ack was answered from the store
    f = summary["frames"]
    assert f["acked"] + f["duplicates"] == 30 and f["unacked"] == 0
    assert f["resent"] >= 1 and summary["connections"] >= 2
    assert max(encoder.occupancy) <= CAPACITY  # type: ignore[attr-defined]
    assert run.exit_code(summary) == EXIT_OK


def test_client_waits_for_a_server_that_is_not_up_yet(
    make_settings: Callable[..., EncoderSettings], analytics: FakeAnalyticsServer
) -> None:
    run, _ = make_run(make_settings, analytics.target, 6)
    background = Background(run)
    time.sleep(0.5)
    analytics.start()
    summary = background.join()
    assert analytics.store.sequences() == list(range(6))
    # the client waits for the channel instead of burning attempts (and frames) on a dead one
    assert summary["connections"] == 1 and summary["frames"]["resent"] == 0
    assert summary["frames"]["unacked"] == 0


def test_gives_up_after_max_reconnect_attempts(
    make_settings: Callable[..., EncoderSettings],
) -> None:
    target = f"127.0.0.1:{free_port()}"  # nothing listens there
    run, _ = make_run(make_settings, target, 20, reconnect_max_attempts=2)
    summary = run.run()
    assert summary["stopped_by"] == "error" and "gave up" in summary["error"]
    # Nothing is coded before the analytics has said which codecs it holds.
    assert summary["frames"]["encoded"] == 0 and summary["frames"]["unacked"] == 0
    assert run.exit_code(summary) == EXIT_ERROR


def test_transient_frame_errors_are_retried_and_permanent_ones_counted(
    make_settings: Callable[..., EncoderSettings], analytics: FakeAnalyticsServer
) -> None:
    analytics.store.fail_once = {3: grpc.StatusCode.UNAVAILABLE}
    analytics.store.fail_always = {5: grpc.StatusCode.INVALID_ARGUMENT}
    analytics.start()
    run, _ = make_run(make_settings, analytics.target, 10)
    summary = run.run()
    processed = analytics.store.sequences()
    assert sorted(processed) == list(range(10)) and processed[:3] == [0, 1, 2]
    f = summary["frames"]
    assert (f["acked"], f["errors"], f["retries"], f["unacked"]) == (9, 1, 1, 0)
    assert summary["errors_by_code"] == {"UNAVAILABLE": 1, "INVALID_ARGUMENT": 1}
    # The refused frame is not stored: the run says so, in its summary and its exit code.
    assert summary["refused"] == [{"sequence": 5, "code": "INVALID_ARGUMENT", "message": "bad"}]
    assert run.exit_code(summary) == EXIT_REFUSED


def test_frames_refused_in_a_row_stop_the_run(
    make_settings: Callable[..., EncoderSettings], analytics: FakeAnalyticsServer
) -> None:
    analytics.store.fail_always = {i: grpc.StatusCode.INVALID_ARGUMENT for i in range(2, 200)}
    analytics.start()
    run, encoder = make_run(make_settings, analytics.target, 200, refused_frames_limit=3)
    summary = run.run()
    assert summary["stopped_by"] == "refused" and len(encoder.calls) < 200
    assert summary["frames"]["errors"] >= 3 and summary["frames"]["acked"] == 2
    assert run.exit_code(summary) == EXIT_REFUSED


def test_a_codec_unloaded_mid_stream_is_dropped_from_rate_control(
    make_settings: Callable[..., EncoderSettings], analytics: FakeAnalyticsServer
) -> None:
    analytics.store.codecs = {q: f"{q:032x}" for q in BPP}
    analytics.store.unload_at = (8, 3)  # the analytics lets go of the q3 codec at frame 8
    analytics.start()
    run, encoder = make_run(make_settings, analytics.target, 40, target_bpp=5.0)
    summary = run.run()
    assert encoder.calls[:8].count(3) >= 1  # before: q3 served, and the controller used it
    refused = [r["sequence"] for r in summary["refused"]]
    assert refused and {r["code"] for r in summary["refused"]} == {"FAILED_PRECONDITION"}
    # Only frames coded before the client learnt of the change are refused; then no more q3.
    assert 3 not in encoder.calls[max(refused) + 1 :]
    assert sorted(analytics.store.sequences() + refused) == list(range(40))
    assert summary["served_qualities"] == [1, 2]
    assert run.exit_code(summary) == EXIT_REFUSED


def test_stop_drains_in_flight_frames(
    make_settings: Callable[..., EncoderSettings], analytics: FakeAnalyticsServer
) -> None:
    analytics.store.ack_delay_s = 0.1
    analytics.start()
    run, _ = make_run(make_settings, analytics.target, 1000)
    background = Background(run)
    while len(analytics.store.processed) < 3:
        time.sleep(0.02)
    run.stop()  # what SIGINT/SIGTERM do
    summary = background.join()
    f = summary["frames"]
    assert summary["stopped_by"] == "signal" and summary["drained"]
    assert f["read"] < 1000 and f["unacked"] == 0 and f["acked"] == f["queued"]
    assert run.exit_code(summary) == EXIT_OK


def test_stop_gives_up_after_drain_timeout(
    make_settings: Callable[..., EncoderSettings], analytics: FakeAnalyticsServer
) -> None:
    analytics.store.hang_after = 2
    analytics.start()
    run, _ = make_run(make_settings, analytics.target, 1000, drain_timeout_s=0.3)
    background = Background(run)
    assert analytics.store.hanging.wait(10)
    start = time.monotonic()
    run.stop()
    summary = background.join()
    assert time.monotonic() - start < 5
    assert not summary["drained"] and summary["frames"]["unacked"] >= 1
    assert summary["unacked_sequences"][0] == 2
    assert run.exit_code(summary) == EXIT_UNACKED


def test_a_silent_server_is_abandoned_after_ack_timeout(
    make_settings: Callable[..., EncoderSettings], analytics: FakeAnalyticsServer
) -> None:
    analytics.store.hang_after = 2  # never acks frame 2 on the first connection
    analytics.start()
    run, _ = make_run(make_settings, analytics.target, 8, ack_timeout_s=0.5)
    summary = run.run()
    assert analytics.store.sequences() == list(range(8))
    assert summary["connections"] >= 2 and summary["frames"]["duplicates"] >= 1
    assert summary["frames"]["unacked"] == 0


def test_acks_for_other_streams_and_stray_acks_are_ignored() -> None:
    buf = ResendBuffer(4)
    buf.put(api_pb2.Frame(stream_id="me", sequence=0))
    events: list[str] = []
    sender = StreamSender("unused:1", buf, "me", on_ack=lambda e: events.append(e.outcome))
    sender._handle(api_pb2.FrameAck(stream_id="other", sequence=0))
    assert len(buf) == 1 and events == []
    sender._handle(api_pb2.FrameAck(stream_id="me", sequence=0))
    sender._handle(api_pb2.FrameAck(stream_id="me", sequence=0, duplicate=True))
    assert len(buf) == 0 and events == ["ok", "stray"]


def test_the_stream_client_serves_the_documented_metrics_only(
    make_settings: Callable[..., EncoderSettings], analytics: FakeAnalyticsServer
) -> None:
    """Its own: the frames it coded and their delivery, none of the Encode service's."""
    analytics.start()
    port = free_port()
    run, _ = make_run(make_settings, analytics.target, 3, stream_metrics_port=port)
    http = start_metrics(run.settings, run.metrics)
    assert http is not None
    try:
        assert run.exit_code(run.run()) == EXIT_OK
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        http.stop()
    assert served(text.decode()) == documented("stream client")
