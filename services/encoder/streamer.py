"""The stream command: read frames, rate-control and encode them, stream them, report.

Reading and encoding run on the calling thread; a :class:`StreamSender` thread owns the
connection. The two meet in the :class:`ResendBuffer`, whose bound is the backpressure.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from services.common.request_ids import new_request_id
from services.generated.transtic.v1 import api_pb2

from .codecs import CodecBank
from .metrics import UNKNOWN, HealthHTTPServer, StreamMetrics
from .rate_control import RateController, RateTarget
from .report import StreamStats, build_summary, code_name, report
from .resend import PendingFrame, ResendBuffer
from .sender import AckEvent, Backoff, StreamSender
from .served import ServedCodecs
from .settings import EncoderSettings
from .sources import Reconnect, SourceFrame, open_source

log = logging.getLogger(__name__)
_CLOSE_GRACE_S = 2.0

# EXIT_REFUSED: the run ended, but the analytics refused some frames (they are not stored).
EXIT_OK, EXIT_ERROR, EXIT_UNACKED, EXIT_REFUSED = 0, 1, 3, 4


@dataclass
class EncodedFrame:
    data: bytes
    encode_ms: float
    codec_id: str = UNKNOWN  # the metrics' codec label


EncodeFn = Callable[[Any, int], EncodedFrame]  # (image, quality) -> coded frame


@dataclass
class FrameInfo:
    quality: int
    bpp: float
    nbytes: int


def default_stream_id() -> str:
    # Random part: a restarted run must not collide with the previous run's sequences.
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def codec_encoder(settings: EncoderSettings) -> tuple[EncodeFn, list[int], dict[int, str]]:
    """The encode function, its qualities and each quality's weights fingerprint."""
    bank = CodecBank.load(settings, only_task=settings.task)
    qualities = bank.qualities(settings.task)
    if not qualities:
        raise ValueError(f"no codec checkpoints for task {settings.task!r}")

    def encode(image: Any, quality: int) -> EncodedFrame:
        start = time.perf_counter()
        result = bank.encode(image, settings.task, quality)
        elapsed_ms = (time.perf_counter() - start) * 1e3
        return EncodedFrame(result.data, elapsed_ms, bank.codec_id(settings.task, quality))

    return encode, qualities, {q: bank.fingerprint(settings.task, q) for q in qualities}


def rate_target(settings: EncoderSettings) -> RateTarget | None:
    if settings.target_bpp is not None:
        return RateTarget(bpp=settings.target_bpp, fps=settings.fps)
    if settings.target_kbps is not None:
        return RateTarget(kbps=settings.target_kbps, fps=settings.fps)
    return None


class StreamRun:
    """One run of the stream command; ``stop`` (e.g. from a signal) starts a graceful drain."""

    def __init__(
        self,
        settings: EncoderSettings,
        *,
        encode: EncodeFn | None = None,
        qualities: list[int] | None = None,
        frames: Iterable[SourceFrame] | None = None,
        metrics: StreamMetrics | None = None,
        fingerprints: dict[int, str] | None = None,
    ) -> None:
        self.settings = settings
        self.stream_id = settings.stream_id or default_stream_id()
        # Sequences restart at 0 with every run: a new session tells the service so, and a
        # configured (fixed) stream_id then starts afresh instead of colliding.
        self.session = f"{time.time_ns() // 1_000_000:x}-{uuid.uuid4().hex[:6]}"
        # Unreadable certificate or key files stop the run here, before loading codecs.
        tls = settings.client_tls_config()
        if tls is not None:
            tls.credentials()
        api_key = settings.client_key()
        if encode is None:
            encode, qualities, fingerprints = codec_encoder(settings)
        assert qualities, "a custom encode function needs its list of qualities"
        self.encode = encode
        self.controller = RateController(
            qualities, rate_target(settings), fixed_quality=settings.quality or None
        )
        self.served = ServedCodecs(fingerprints, settings.task, settings.quality or None)
        if frames is None:
            if not settings.source:
                raise ValueError("no source: pass --source DIR|VIDEO|/dev/videoN|rtsp://...")
            source_backoff = Backoff(settings.reconnect_initial_s, settings.reconnect_max_s)
            frames = open_source(
                settings.source,
                max_pixels=settings.max_pixels,
                reconnect=Reconnect(source_backoff.delay, settings.source_reconnect_attempts),
                newest_only=settings.source_skip_stale,
            )
        self.frames = frames
        self.metrics = metrics or StreamMetrics()
        self.stats = StreamStats()
        self.buffer = ResendBuffer(settings.buffer_size)
        self.stop_requested = threading.Event()
        self.abort_requested = threading.Event()
        self.stopped_by = "end_of_source"
        self.refused_in_a_row = 0
        self.sender = StreamSender(
            settings.target,
            self.buffer,
            self.stream_id,
            backoff=Backoff(settings.reconnect_initial_s, settings.reconnect_max_s),
            max_attempts=settings.reconnect_max_attempts,
            ack_timeout_s=settings.ack_timeout_s,
            frame_max_retries=settings.frame_max_retries,
            on_ack=self._on_ack,
            on_send=self._on_send,
            on_connect=lambda n: self.metrics.stream_reconnects.inc(),
            # Nothing to check without fingerprints (a custom encode function).
            on_info=self.served.update if fingerprints is not None else None,
            tls=tls,
            api_key=api_key,
        )

    def stop(self) -> None:
        """First call: stop reading and drain; second call: stop waiting for acks too."""
        if self.stop_requested.is_set():
            self.abort_requested.set()
        self.stop_requested.set()

    # -- callbacks from the sender thread ---------------------------------------------
    def _on_send(self, pending: PendingFrame) -> None:
        self.stats.on_send(pending)
        self.metrics.stream_sent.inc()

    def _on_ack(self, event: AckEvent) -> None:
        self.stats.on_ack(event)
        if event.outcome == "error":
            self.refused_in_a_row += 1
            log.error(
                "analytics refused frame seq=%d (%s: %s); it is not stored",
                event.sequence,
                code_name(event.ack.error_code),
                event.ack.error_message,
            )
        elif event.outcome in ("ok", "duplicate"):
            self.refused_in_a_row = 0
        self.metrics.stream_acked.labels(event.outcome).inc()
        self.metrics.stream_unacked.set(len(self.buffer))
        result = event.ack.result
        top = result.labels[0].name if result.labels else f"{len(result.detections)} detections"
        log.info(
            "ack seq=%d outcome=%s%s",
            event.sequence,
            event.outcome,
            f" error={event.ack.error_message!r}" if event.ack.error_code else f" top={top}",
            extra={
                "request_id": event.ack.request_id,
                "stream_id": self.stream_id,
                "sequence": event.sequence,
            },
        )

    # -- the run ----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        start = time.monotonic()
        s = self.settings
        if self.controller.target is not None:
            log.info(
                "stream %s -> %s, task %s, rate target %s",
                self.stream_id,
                s.target,
                s.task,
                self.controller.target.describe(),
            )
        self.sender.start()
        try:
            self._read_loop(start)
        finally:
            close_source = getattr(self.frames, "close", None)
            if close_source is not None:
                close_source()  # a live source stops reading (and reconnecting) now
            self.buffer.close()
            drained = self._drain()
            if drained and not self.abort_requested.is_set():
                # Every frame is acknowledged: let the call end by itself (the analytics
                # closes it once it has seen the end of the frames) instead of cancelling it,
                # which the analytics would count as a client that went away.
                self.sender.join(timeout=_CLOSE_GRACE_S)
            self.sender.stop()
            self.sender.join(timeout=5.0)
        summary = self.summary(time.monotonic() - start, drained)
        report(summary, self.settings.summary_json)
        return summary

    def _wait_served(self) -> bool:
        """Wait until the analytics said which codecs it holds (a frame coded with a codec it
        lacks would be refused); False when the run ends first."""
        while not self.served.known.wait(0.1):
            if self.stop_requested.is_set():
                self.stopped_by = "signal"
                return False
            if self.sender.error is not None or not self.sender.alive:
                self.stopped_by = "error"
                return False
        return True

    def _read_loop(self, start: float) -> None:
        s = self.settings
        sequence = 0
        if not self._wait_served():
            return
        for frame in self.frames:
            if self.stop_requested.is_set():
                self.stopped_by = "signal"
                return
            if self.sender.error is not None:
                self.stopped_by = "error"
                return
            if s.refused_frames_limit and self.refused_in_a_row >= s.refused_frames_limit:
                self.stopped_by = "refused"
                log.error("%d frames in a row refused: stopping", self.refused_in_a_row)
                return
            self.stats.add("read")
            if frame.image is None:
                self.stats.add("read_errors")
                log.warning("skipping %s: %s", frame.name, frame.error)
                continue
            if s.pace:
                delay = start + sequence / s.fps - time.monotonic()
                if delay > 0 and self.stop_requested.wait(delay):
                    self.stopped_by = "signal"
                    return
            if not self._encode_and_queue(frame, sequence):
                return
            sequence += 1
            if s.max_frames and sequence >= s.max_frames:
                self.stopped_by = "max_frames"
                return

    def _encode_and_queue(self, frame: SourceFrame, sequence: int) -> bool:
        served = self.served.take_change()
        if served is not None and served != self.controller.qualities:
            log.info("analytics serves qualities %s: rate control keeps to them", served)
            self.controller.restrict(served)
        pixels = frame.pixels
        quality = self.controller.choose(pixels)
        goal = self.controller.effective_bpp(pixels)
        try:
            coded = self.encode(frame.image, quality)
        except Exception as exc:  # one bad frame must not end a camera stream
            self.stats.add("encode_errors")
            log.warning("cannot encode %s: %s", frame.name, exc)
            return True
        bits = len(coded.data) * 8
        self.controller.update(quality, bits, pixels)
        bpp = bits / pixels
        self.stats.add_encoded(len(coded.data), coded.encode_ms)
        self._observe(coded, quality, bpp)
        # Made here, once per frame: every resend carries the same id, so the edge log,
        # the analytics log and the stored result all name the frame alike.
        request_id = new_request_id()
        msg = api_pb2.Frame(
            stream_id=self.stream_id,
            sequence=sequence,
            bitstream=coded.data,
            task=self.settings.task,
            capture_time_unix_ms=frame.capture_time_ms,
            session=self.session,
            request_id=request_id,
        )
        log.info(
            "frame seq=%d src=%s q=%d bytes=%d bpp=%.4f goal=%s avg_bpp=%.4f encode_ms=%.1f "
            "unacked=%d",
            sequence,
            frame.name,
            quality,
            len(coded.data),
            bpp,
            f"{goal:.4f}" if goal is not None else "-",
            self.controller.stats.bpp,
            coded.encode_ms,
            len(self.buffer),
            extra={"request_id": request_id, "stream_id": self.stream_id, "sequence": sequence},
        )
        while not self.buffer.put(msg, FrameInfo(quality, bpp, len(coded.data)), timeout=0.25):
            # Full buffer: this wait is the backpressure. Leave only on stop or a dead sender.
            if self.stop_requested.is_set() or self.sender.error is not None or self.buffer.closed:
                self.stopped_by = "error" if self.sender.error else "signal"
                self.stats.add("dropped_unqueued")
                return False
        self.stats.add("queued")
        self.metrics.stream_unacked.set(len(self.buffer))
        return True

    def _observe(self, coded: EncodedFrame, quality: int, bpp: float) -> None:
        m, task = self.metrics, self.settings.task
        m.count_frame(coded.codec_id, quality, task, len(coded.data), bpp)
        m.encode_seconds.labels(task).observe(coded.encode_ms / 1e3)
        m.stream_achieved_bpp.set(self.controller.stats.bpp)
        if self.controller.stats.pixels:
            m.stream_target_bpp.set(self.controller.stats.target_bpp)

    def _drain(self) -> bool:
        """Wait for outstanding acks: while they keep coming, or up to drain_timeout on stop."""
        timeout = self.settings.drain_timeout_s
        stop_deadline: float | None = None
        while not self.buffer.done:
            if (
                self.sender.error is not None
                or not self.sender.alive
                or self.abort_requested.is_set()
            ):
                break
            now = time.monotonic()
            if self.stop_requested.is_set() and stop_deadline is None:
                stop_deadline = now + timeout
            if stop_deadline is not None and now >= stop_deadline:
                break
            # Without a stop, keep waiting as long as the cloud makes progress.
            quiet = now - self.buffer.last_ack_at
            if stop_deadline is None and quiet > max(timeout, self.settings.ack_timeout_s):
                break
            self.buffer.wait_empty(0.1)
        return not len(self.buffer)

    def summary(self, duration: float, drained: bool) -> dict[str, Any]:
        return build_summary(self, duration, drained)

    def exit_code(self, summary: dict[str, Any]) -> int:
        if summary["error"]:
            return EXIT_ERROR
        if summary["frames"]["unacked"]:
            return EXIT_UNACKED
        return EXIT_REFUSED if summary["frames"]["errors"] else EXIT_OK


def start_metrics(settings: EncoderSettings, metrics: StreamMetrics) -> HealthHTTPServer | None:
    if not settings.stream_metrics_port:
        return None
    return HealthHTTPServer(
        settings.host, settings.stream_metrics_port, metrics.registry, lambda: True
    ).start()
