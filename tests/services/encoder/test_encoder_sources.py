"""Live sources hand out the newest frame (a slow consumer skips the backlog) and stop
reconnecting once nobody reads them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from encoder_fakes import free_port

from services.encoder.sources import (
    Reconnect,
    SourceError,
    SourceFrame,
    network_frames,
    newest_frames,
)


def frame(index: int) -> SourceFrame:
    return SourceFrame(index, f"cam#{index}", np.zeros((2, 2, 3), np.uint8), index)


def test_a_slow_consumer_gets_the_newest_frame_and_the_rest_in_order() -> None:
    backlog_ready, release = threading.Event(), threading.Event()

    def camera() -> Iterator[SourceFrame]:
        for i in range(5):
            yield frame(i)
        # Runs once frame 4 is in the slot: the consumer has taken nothing so far.
        backlog_ready.set()
        release.wait(30)
        yield from (frame(i) for i in range(5, 8))

    frames = newest_frames(camera())
    first = next(frames)  # starts the reader
    assert backlog_ready.wait(30)
    assert first.index <= 4
    newest = next(frames) if first.index < 4 else first
    assert newest.index == 4  # frames read while the consumer was busy were skipped
    release.set()
    rest = [f.index for f in frames]
    assert rest and rest[-1] == 7 and rest == sorted(set(rest)) and rest[0] >= 5


def test_closing_the_consumer_closes_the_source() -> None:
    closed = threading.Event()

    def camera() -> Iterator[SourceFrame]:
        try:
            i = 0
            while True:
                yield frame(i)
                i += 1
                time.sleep(0.01)  # a camera's frame interval
        finally:
            closed.set()

    frames = newest_frames(camera())
    assert next(frames).index >= 0
    frames.close()
    assert closed.wait(30)


def test_a_failing_source_ends_the_stream() -> None:
    def camera() -> Iterator[SourceFrame]:
        yield frame(0)
        raise OSError("device gone")

    assert [f.index for f in newest_frames(camera())] == [0]


def test_a_cancelled_source_stops_reconnecting() -> None:
    pytest.importorskip("cv2")
    waits: list[int] = []
    reconnect = Reconnect(delay=lambda failures: waits.append(failures) or 0.0, max_attempts=50)
    reconnect.cancelled.set()  # e.g. the stream run ended while the camera was away
    with pytest.raises(SourceError, match="cannot open stream"):
        network_frames(f"rtsp://127.0.0.1:{free_port()}/cam", reconnect)
    assert waits == [0]  # gave up at the first wait instead of trying 50 times
