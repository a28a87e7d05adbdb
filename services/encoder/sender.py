"""The connection loop of a stream: AnalyzeStream calls, acks, reconnects with backoff."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from services.common.auth import auth_metadata
from services.common.request_ids import METADATA_KEY, new_request_id
from services.common.tls import ClientTLS, open_channel
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc

from .resend import Cursor, PendingFrame, ResendBuffer

CONNECT_TIMEOUT_S = 5.0
log = logging.getLogger(__name__)

# Per-frame errors worth another try (the cloud was busy); others are final for that frame.
TRANSIENT_FRAME_CODES = frozenset(
    c.value[0]
    for c in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
    )
)
# A frame coded with weights the analytics does not hold (see served.py).
_FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]
# Stream-level failures no reconnect can fix.
FATAL_STREAM_CODES = frozenset(
    {
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
_CHANNEL_OPTIONS = [
    # Notice a dead peer (pulled cable, killed node) without waiting for TCP timeouts.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_send_message_length", 64 * 2**20),
    ("grpc.max_receive_message_length", 64 * 2**20),
    # With a dns:/// target naming a headless Service, spread streams over every replica;
    # a single address behaves as before.
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
]


# Told what the analytics holds (None: it does not say); returns why the stream cannot go
# on with that analytics, or None when it can.
InfoHandler = Callable[[api_pb2.ServiceInfo | None], str | None]


@dataclass
class AckEvent:
    sequence: int
    outcome: str  # "ok", "duplicate", "error", "retry", "stray"
    ack: api_pb2.FrameAck
    pending: PendingFrame | None


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.2
    max_s: float = 10.0
    jitter: float = 0.2

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Exponential in consecutive failures, jittered so a fleet does not reconnect in step."""
        base = min(self.max_s, self.initial_s * 2 ** max(0, failures))
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, base * (1 + spread))


class StreamSender:
    """Runs in its own thread until the buffer is done, stop() is called or a fatal error."""

    def __init__(
        self,
        target: str,
        buffer: ResendBuffer,
        stream_id: str,
        *,
        backoff: Backoff | None = None,
        max_attempts: int = 0,
        ack_timeout_s: float = 30.0,
        frame_max_retries: int = 3,
        on_ack: Callable[[AckEvent], None] | None = None,
        on_send: Callable[[PendingFrame], None] | None = None,
        on_connect: Callable[[int], None] | None = None,
        on_info: InfoHandler | None = None,
        tls: ClientTLS | None = None,
        api_key: str | None = None,
    ) -> None:
        self.target = target
        self.tls = tls
        self.metadata = (("x-stream-id", stream_id), *auth_metadata(api_key))
        if api_key and tls is None:
            log.warning("sending an API key to %s without TLS: anyone on the path sees it", target)
        self.buffer = buffer
        self.stream_id = stream_id
        self.backoff = backoff or Backoff()
        self.max_attempts = max_attempts
        self.ack_timeout_s = ack_timeout_s
        self.frame_max_retries = frame_max_retries
        self.on_ack = on_ack
        self.on_send = on_send
        self.on_connect = on_connect
        self.on_info = on_info
        self._stub: api_pb2_grpc.AnalyticsStub | None = None
        self.connections = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._call: grpc.Future | None = None
        self._thread = threading.Thread(target=self._run, name="stream-sender", daemon=True)

    def start(self) -> StreamSender:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Abandon the stream now (pending frames stay in the buffer, unacknowledged)."""
        self._stop.set()
        with self._lock:
            if self._call is not None:
                self._call.cancel()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the loop ---------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set() and not self.buffer.done:
            progressed = self._connect_once()
            if self.error is not None:
                self.buffer.abort()
                return
            if self._stop.is_set() or self.buffer.done:
                return
            failures = 0 if progressed else failures + 1
            if self.max_attempts and failures >= self.max_attempts:
                self.error = f"gave up after {failures} failed connection attempts to {self.target}"
                log.error("%s", self.error)
                self.buffer.abort()
                return
            delay = self.backoff.delay(failures)
            log.info(
                "reconnecting to %s in %.2fs (%d frames unacknowledged)",
                self.target,
                delay,
                len(self.buffer),
            )
            self._stop.wait(delay)

    def _wait_ready(self, channel: grpc.Channel) -> bool:
        """Wait until the channel is connected (or stop / timeout).

        Starting the call first would make gRPC pull frames from the buffer while the
        server is still down, counting them as sent and each attempt as a connection.
        """
        ready = grpc.channel_ready_future(channel)
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                ready.result(timeout=0.25)
                return True
            except grpc.FutureTimeoutError:
                continue
        ready.cancel()
        return False

    def _connect_once(self) -> bool:
        """One AnalyzeStream call; True if it acknowledged anything."""
        progressed = False
        try:
            # Certificates are read per connection: rotated files apply at the next reconnect.
            channel = open_channel(self.target, self.tls, _CHANNEL_OPTIONS)
        except (OSError, ValueError) as exc:
            self.error = f"cannot set up TLS for {self.target}: {exc}"
            log.error("%s", self.error)
            return False
        if not self._wait_ready(channel):
            channel.close()
            return False
        stub = api_pb2_grpc.AnalyticsStub(channel)
        if not self._ask_info(stub):
            channel.close()
            return False
        self.connections += 1
        if self.on_connect is not None:
            self.on_connect(self.connections)
        cursor = self.buffer.connection()
        cursor.on_send = self.on_send
        stalled = threading.Event()
        watchdog = threading.Thread(
            target=self._watch, args=(cursor, stalled), daemon=True, name="stream-watchdog"
        )
        try:
            # One id per call; frames carry their own, this one names the connection.
            call_id = new_request_id()
            log.info("stream %s connected to %s (call %s)", self.stream_id, self.target, call_id)
            metadata = (*self.metadata, (METADATA_KEY, call_id))
            call = stub.AnalyzeStream(iter(cursor), metadata=metadata)
            with self._lock:
                self._call = call
                self._stub = stub
            if self._stop.is_set():
                call.cancel()
            watchdog.start()
            for ack in call:
                progressed = True
                self._handle(ack)
            if not self.buffer.done:
                log.warning(
                    "analytics ended the stream with %d frames unacknowledged", len(self.buffer)
                )
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            if code in FATAL_STREAM_CODES:
                self.error = f"analytics refused the stream: {code}: {details}"
                log.error("%s", self.error)
            elif stalled.is_set():
                log.warning("no ack for %.1fs: reconnecting", self.ack_timeout_s)
            elif not self._stop.is_set():
                log.warning(
                    "stream to %s broke: %s: %s", self.target, code.name if code else "?", details
                )
        finally:
            with self._lock:
                self._call = None
                self._stub = None
            cursor.stop()
            channel.close()
        return progressed

    def _refresh_info(self) -> None:
        """A codec the analytics held may be gone (unloaded, or another replica answered):
        learn what it serves now; end this call if it can no longer be used."""
        with self._lock:
            stub, call = self._stub, self._call
        if stub is not None and not self._ask_info(stub) and call is not None:
            call.cancel()

    def _ask_info(self, stub: api_pb2_grpc.AnalyticsStub) -> bool:
        """Ask the analytics what it serves (GetInfo) before frames go out; False when this
        connection cannot be used (``error`` is set when no reconnect can help)."""
        if self.on_info is None:
            return True
        info: api_pb2.ServiceInfo | None = None
        try:
            info = stub.GetInfo(
                api_pb2.GetInfoRequest(), timeout=CONNECT_TIMEOUT_S, metadata=self.metadata
            )
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code in FATAL_STREAM_CODES - {grpc.StatusCode.UNIMPLEMENTED}:
                self.error = f"analytics refused GetInfo: {code}: {exc.details()}"
                log.error("%s", self.error)
                return False
            if code != grpc.StatusCode.UNIMPLEMENTED:
                log.warning("GetInfo on %s failed (%s): reconnecting", self.target, code)
                return False
            log.warning("%s does not answer GetInfo: cannot check its codecs", self.target)
        problem = self.on_info(info)
        if problem is not None:
            self.error = problem
            log.error("%s", problem)
            return False
        return True

    def _watch(self, cursor: Cursor, stalled: threading.Event) -> None:
        """Cancel a call that keeps frames out but acknowledges nothing (a hung peer)."""
        while not cursor.stopped and not self._stop.is_set():
            time.sleep(min(0.5, self.ack_timeout_s / 4))
            if cursor.first_send_at is None or not len(self.buffer):
                continue
            quiet = time.monotonic() - max(self.buffer.last_ack_at, cursor.first_send_at)
            if quiet > self.ack_timeout_s:
                stalled.set()
                with self._lock:
                    if self._call is not None:
                        self._call.cancel()
                return

    def _handle(self, ack: api_pb2.FrameAck) -> None:
        seq = int(ack.sequence)
        if ack.stream_id and ack.stream_id != self.stream_id:
            log.warning("ignoring ack for another stream %r (seq %d)", ack.stream_id, seq)
            return
        pending: PendingFrame | None
        if ack.duplicate or ack.error_code == 0:
            pending = self.buffer.ack(seq)
            outcome = "duplicate" if ack.duplicate else "ok"
        elif ack.error_code in TRANSIENT_FRAME_CODES and self._may_retry(seq):
            pending = self.buffer.retry_later(seq, self.backoff.delay(self._retries(seq)))
            outcome = "retry"
        else:
            pending = self.buffer.ack(seq)
            outcome = "error"
            if ack.error_code == _FAILED_PRECONDITION:
                self._refresh_info()
        if pending is None and outcome != "retry":
            outcome = "stray"  # acknowledged before: a resend crossed an ack on the wire
        if self.on_ack is not None:
            self.on_ack(AckEvent(seq, outcome, ack, pending))

    def _retries(self, seq: int) -> int:
        pending = self.buffer.peek(seq)
        return pending.retries if pending is not None else 0

    def _may_retry(self, seq: int) -> bool:
        pending = self.buffer.peek(seq)
        return pending is not None and pending.retries < self.frame_max_retries
