"""The unacknowledged-frame buffer: acks, bound/backpressure, resend order, retries."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.encoder.resend import Cursor, ResendBuffer
from services.encoder.sender import Backoff
from services.generated.transtic.v1 import api_pb2


def frame(seq: int) -> api_pb2.Frame:
    return api_pb2.Frame(stream_id="s", sequence=seq, bitstream=b"x")


def take(cursor: Cursor, n: int) -> list[int]:
    """The next n sequences a connection would send (from a thread, as gRPC does)."""
    out: list[int] = []
    it: Iterator[api_pb2.Frame] = iter(cursor)

    def run() -> None:
        for _ in range(n):
            out.append(int(next(it).sequence))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), f"cursor produced only {out}"
    return out


def test_acks_remove_frames_and_duplicates_are_harmless() -> None:
    buf = ResendBuffer(4)
    for seq in range(3):
        assert buf.put(frame(seq))
    assert buf.ack(1) is not None
    assert buf.ack(1) is None  # a duplicate ack for a frame already gone
    assert buf.ack(99) is None
    assert buf.pending_sequences() == [0, 2]
    with pytest.raises(ValueError):
        buf.put(frame(2))  # sequences only go up


def test_full_buffer_blocks_the_producer_until_an_ack() -> None:
    buf = ResendBuffer(2)
    buf.put(frame(0))
    buf.put(frame(1))
    assert not buf.put(frame(2), timeout=0.05)
    result: list[bool] = []
    producer = threading.Thread(target=lambda: result.append(buf.put(frame(2))))
    producer.start()
    time.sleep(0.1)
    assert producer.is_alive() and len(buf) == 2  # backpressure: waiting, nothing dropped
    buf.ack(0)
    producer.join(5)
    assert result == [True] and buf.pending_sequences() == [1, 2]


def test_abort_releases_a_blocked_producer() -> None:
    buf = ResendBuffer(1)
    buf.put(frame(0))
    result: list[bool] = []
    producer = threading.Thread(target=lambda: result.append(buf.put(frame(1))))
    producer.start()
    buf.abort()
    producer.join(5)
    assert result == [False]


def test_reconnect_resends_unacked_frames_in_sequence_order() -> None:
    buf = ResendBuffer(8)
    for seq in range(5):
        buf.put(frame(seq))
    first = buf.connection()
    assert take(first, 5) == [0, 1, 2, 3, 4]
    buf.ack(0)
    buf.ack(3)
    second = buf.connection()  # the old connection broke
    assert list(iter(first)) == []  # superseded cursors end
    assert take(second, 3) == [1, 2, 4]
    buf.put(frame(5))
    assert take(second, 1) == [5]  # then it follows new frames


def test_cursor_ends_when_closed_and_everything_acknowledged() -> None:
    buf = ResendBuffer(4)
    buf.put(frame(0))
    cursor = buf.connection()
    assert take(cursor, 1) == [0]
    buf.close()
    assert not buf.done and not buf.put(frame(1))
    rest: list[api_pb2.Frame] = []
    reader = threading.Thread(target=lambda: rest.extend(iter(cursor)))
    reader.start()
    time.sleep(0.05)
    assert reader.is_alive()  # still waiting: an ack might turn into a retry
    buf.ack(0)
    reader.join(5)
    assert rest == [] and buf.done and buf.wait_empty(0)


def test_transient_error_resends_on_the_same_connection_after_a_delay() -> None:
    buf = ResendBuffer(4)
    for seq in range(3):
        buf.put(frame(seq))
    cursor = buf.connection()
    assert take(cursor, 3) == [0, 1, 2]
    start = time.monotonic()
    pending = buf.retry_later(1, 0.1)
    assert pending is not None and pending.retries == 1
    assert take(cursor, 1) == [1]
    assert time.monotonic() - start >= 0.09
    assert buf.peek(1) is not None and buf.peek(1).sends == 2  # type: ignore[union-attr]


def test_stopped_cursor_ends_promptly() -> None:
    buf = ResendBuffer(4)
    cursor = buf.connection()
    done = threading.Event()

    def drain() -> None:
        list(iter(cursor))
        done.set()

    threading.Thread(target=drain, daemon=True).start()
    cursor.stop()
    assert done.wait(2)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "ack", "reconnect"]), st.integers(0, 30))))
def test_every_connection_sends_exactly_the_unacked_frames_in_order(
    ops: list[tuple[str, int]],
) -> None:
    buf = ResendBuffer(1000)
    next_seq = 0
    acked: set[int] = set()
    for op, arg in ops:
        if op == "put":
            buf.put(frame(next_seq))
            next_seq += 1
        elif op == "ack":
            if buf.ack(arg) is not None:
                acked.add(arg)
            assert arg >= next_seq or arg in acked  # acking a future frame is a no-op
        else:
            expected = [s for s in range(next_seq) if s not in acked]
            cursor = buf.connection()
            assert take(cursor, len(expected)) == expected
            cursor.stop()


def test_backoff_grows_exponentially_and_is_capped() -> None:
    backoff = Backoff(initial_s=0.1, max_s=1.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    jittery = Backoff(initial_s=1.0, max_s=10.0, jitter=0.2)
    assert all(0.8 <= jittery.delay(0) <= 1.2 for _ in range(50))
