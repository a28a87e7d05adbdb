"""Bounded buffer of unacknowledged frames: what makes a stream survive reconnects losslessly.

A frame enters when encoded and leaves only when Analytics acknowledges it (a result, a
duplicate answer, or a permanent error). While full, :meth:`ResendBuffer.put` blocks, which
slows the reader down to what the link and the cloud sustain (backpressure). Each connection
gets a :class:`Cursor`: the request iterator that first (re)sends every unacknowledged frame in
sequence order and then follows new ones, so after a reconnect nothing is skipped.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from services.generated.transtic.v1 import api_pb2

# Cursors re-check their stop flag at least this often even without a notify.
_POLL_S = 0.5


@dataclass
class PendingFrame:
    frame: api_pb2.Frame
    info: Any = None  # the caller's bookkeeping (quality, bpp...) for logs and stats
    enqueued_at: float = field(default_factory=time.monotonic)
    sends: int = 0
    retries: int = 0

    @property
    def sequence(self) -> int:
        return int(self.frame.sequence)


class ResendBuffer:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._cond = threading.Condition()
        self._frames: OrderedDict[int, PendingFrame] = OrderedDict()
        self._retry_at: dict[int, float] = {}
        self._closed = False
        self._aborted = False
        self._generation = 0
        self._last_seq = -1
        self.last_ack_at = time.monotonic()

    # -- producer side ----------------------------------------------------------------
    def put(self, frame: api_pb2.Frame, info: Any = None, timeout: float | None = None) -> bool:
        """Add a frame, waiting while the buffer is full; False on timeout, abort or close."""
        seq = int(frame.sequence)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if seq <= self._last_seq:
                raise ValueError(f"sequence {seq} is not above the last one ({self._last_seq})")
            while len(self._frames) >= self.capacity and not (self._aborted or self._closed):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            if self._aborted or self._closed:
                return False
            self._frames[seq] = PendingFrame(frame, info)
            self._last_seq = seq
            self._cond.notify_all()
            return True

    def close(self) -> None:
        """No more frames will be put; cursors end once everything is acknowledged."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abort(self) -> None:
        """Give up: wake every waiter; put() refuses, cursors end."""
        with self._cond:
            self._aborted = True
            self._closed = True
            self._cond.notify_all()

    # -- acknowledgement side ---------------------------------------------------------
    def ack(self, sequence: int) -> PendingFrame | None:
        """Forget a frame for good; None if it was not pending (already acknowledged)."""
        with self._cond:
            pending = self._frames.pop(sequence, None)
            self._retry_at.pop(sequence, None)
            if pending is not None:
                self.last_ack_at = time.monotonic()
                self._cond.notify_all()
            return pending

    def retry_later(self, sequence: int, delay: float) -> PendingFrame | None:
        """Send a frame again on the current connection after ``delay`` (a transient error)."""
        with self._cond:
            pending = self._frames.get(sequence)
            if pending is not None:
                pending.retries += 1
                self._retry_at[sequence] = time.monotonic() + delay
                self.last_ack_at = time.monotonic()
                self._cond.notify_all()
            return pending

    # -- state ------------------------------------------------------------------------
    def peek(self, sequence: int) -> PendingFrame | None:
        with self._cond:
            return self._frames.get(sequence)

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)

    def pending_sequences(self) -> list[int]:
        with self._cond:
            return list(self._frames)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def done(self) -> bool:
        """Closed and nothing left to acknowledge (or aborted)."""
        with self._cond:
            return self._aborted or (self._closed and not self._frames)

    def wait_empty(self, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._frames or self._aborted, timeout)

    # -- connections ------------------------------------------------------------------
    def connection(self) -> Cursor:
        """Start a new connection: older cursors end, everything pending is resent."""
        with self._cond:
            self._generation += 1
            # A new connection resends everything from the start; pending retries are moot.
            self._retry_at.clear()
            self._cond.notify_all()
            return Cursor(self, self._generation)

    def _next_for(self, cursor: Cursor) -> api_pb2.Frame | None:
        """Block until the cursor has something to send; None when it should end."""
        with self._cond:
            while True:
                if cursor.stopped or cursor.generation != self._generation or self._aborted:
                    return None
                if self._closed and not self._frames:
                    return None
                now = time.monotonic()
                due = [s for s, at in self._retry_at.items() if at <= now]
                if due:
                    seq = min(due)
                    del self._retry_at[seq]
                    return self._mark_sent(seq, cursor)
                for seq in self._frames:
                    if seq > cursor.last_sent:
                        cursor.last_sent = seq
                        return self._mark_sent(seq, cursor)
                wait = _POLL_S
                if self._retry_at:
                    wait = min(wait, max(0.0, min(self._retry_at.values()) - now))
                self._cond.wait(wait)

    def _mark_sent(self, seq: int, cursor: Cursor) -> api_pb2.Frame:
        pending = self._frames[seq]
        pending.sends += 1
        cursor.sent += 1
        if cursor.first_send_at is None:
            cursor.first_send_at = time.monotonic()
        if cursor.on_send is not None:
            cursor.on_send(pending)
        return pending.frame

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class Cursor:
    """The request iterator of one connection (gRPC consumes it from its own thread)."""

    def __init__(self, buffer: ResendBuffer, generation: int) -> None:
        self.buffer = buffer
        self.generation = generation
        self.last_sent = -1
        self.sent = 0
        self.first_send_at: float | None = None
        self.stopped = False
        self.on_send: Any = None  # callable(PendingFrame), called under the buffer lock

    def __iter__(self) -> Iterator[api_pb2.Frame]:
        while True:
            frame = self.buffer._next_for(self)
            if frame is None:
                return
            yield frame

    def stop(self) -> None:
        self.stopped = True
        self.buffer._wake()
