"""Streamed frames: deduplicated by (stream_id, session, sequence) and content digest,
persisted before the ack.

A frame already stored is answered from the store; a frame still being
processed (a resend that overtook its own ack) shares the first copy's work.
So a client may resend anything after a reconnect and nothing runs twice. A frame
whose key is taken by *different* content (SHA-256 of the bitstream) is refused with
ALREADY_EXISTS, never answered with the other frame's result. A new session of a
stream (a rebooted device counting from 0 again) is a new key space: the frames of the
stream's earlier sessions stay stored and readable.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from services.analytics.metrics import ModelLabels
from services.analytics.pipeline import Outcome
from services.analytics.results import jpeg_thumbnail_base64
from services.analytics.runtime import Runtime
from services.analytics.schemas import AnalysisResult
from services.analytics.store import MAX_SEQUENCE
from services.common.errors import ErrorCode, ServiceError

log = logging.getLogger(__name__)
STREAM_API = "stream"  # the metrics' api label of streamed frames
MAX_STREAM_ID = 128
MAX_SESSION = 64
# URL-safe (RFC 3986 unreserved characters): a stream id reads back unescaped as
# /v1/streams/{stream_id}/frames.
STREAM_ID_PATTERN = rf"^[A-Za-z0-9._~-]{{1,{MAX_STREAM_ID}}}$"
_STREAM_ID = re.compile(STREAM_ID_PATTERN)
_SESSION = re.compile(rf"^[A-Za-z0-9._~-]{{0,{MAX_SESSION}}}$")


@dataclass(frozen=True)
class FrameOutcome:
    stream_id: str
    sequence: int
    duplicate: bool = False
    result: AnalysisResult | None = None
    error: ServiceError | None = None
    session: str = ""
    digest: str = ""
    request_id: str = ""  # this copy's; a duplicate's result keeps the processed copy's


def content_digest(bitstream: bytes) -> str:
    return hashlib.sha256(bitstream).hexdigest()


# An empty bitstream is no frame: it asks for the stored result of its key.
_EMPTY_DIGEST = content_digest(b"")


# Dot segments: a URL path normalises them away, so /v1/streams/{id}/frames could never
# read such a stream back.
_DOT_SEGMENTS = frozenset({".", ".."})


def check_frame_key(stream_id: str, sequence: int, session: str = "") -> None:
    if not _STREAM_ID.fullmatch(stream_id):
        raise ServiceError(
            ErrorCode.INVALID_ARGUMENT,
            f"stream_id must be 1 to {MAX_STREAM_ID} characters of A-Z a-z 0-9 . _ ~ -",
        )
    if stream_id in _DOT_SEGMENTS:
        raise ServiceError(
            ErrorCode.INVALID_ARGUMENT,
            f"stream_id {stream_id!r} is a URL dot segment and could not be read back; "
            "use another name",
        )
    if not _SESSION.fullmatch(session):
        raise ServiceError(
            ErrorCode.INVALID_ARGUMENT,
            f"session must be at most {MAX_SESSION} characters of A-Z a-z 0-9 . _ ~ -",
        )
    if not 0 <= sequence <= MAX_SEQUENCE:
        raise ServiceError(
            ErrorCode.INVALID_ARGUMENT, f"sequence must be below 2**63, got {sequence}"
        )


class FrameProcessor:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # (stream_id, session, sequence) -> (digest, the first copy's outcome)
        self._inflight: dict[tuple[str, str, int], tuple[str, Future[FrameOutcome]]] = {}
        # One writer thread: SQLite serialises writes anyway, and fsyncs stay off
        # the batch worker so decoding never waits for the disk.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frame-store")
        self._lock = threading.Lock()
        self._thumbnail_px = runtime.settings.stream_thumbnail_px

    def close(self) -> None:
        self._writer.shutdown(wait=True)

    def submit(
        self,
        stream_id: str,
        sequence: int,
        bitstream: bytes,
        task: str | None,
        capture_time_ms: int | None = None,
        session: str = "",
        request_id: str = "",
    ) -> Future[FrameOutcome]:
        """Process (or answer from the store) one frame; ``request_id`` must be checked
        already (``services.common.request_ids.for_frame``)."""
        start = time.perf_counter()
        frame = _Frame(
            stream_id, sequence, session, content_digest(bitstream), ModelLabels(), request_id
        )
        answer = self._answer(frame, bitstream, task, capture_time_ms)
        # Every frame is timed up to its answer, refused and stored ones too.
        answer.add_done_callback(
            lambda _: self.runtime.metrics.time_request(
                STREAM_API, frame.labels, time.perf_counter() - start
            )
        )
        return answer

    def _answer(
        self, frame: _Frame, bitstream: bytes, task: str | None, capture_time_ms: int | None
    ) -> Future[FrameOutcome]:
        stream_id, sequence, session = frame.stream_id, frame.sequence, frame.session
        key = (stream_id, session, sequence)
        done: Future[FrameOutcome] = Future()
        with self._lock:
            first = self._inflight.get(key)
            if first is not None:
                return self._same_key(frame, first[0], first[1])
            try:
                check_frame_key(stream_id, sequence, session)
                # Checked after _inflight: a frame leaves it only once stored,
                # so no copy can slip between the two lookups and run twice.
                stored = self.runtime.store.get(stream_id, sequence, session)
                if stored is not None:
                    # An empty bitstream asks for the stored result (it is no frame).
                    digest = stored.digest if not bitstream else frame.digest
                    done.set_result(self._stored(frame, stored.digest, stored.result, digest))
                    return done
                work = self.runtime.submit_bitstream(
                    bitstream,
                    task,
                    api=STREAM_API,
                    keep_image=self._thumbnail_px > 0,
                    labels=frame.labels,
                    request_id=frame.request_id,
                )
            except Exception as exc:
                done.set_result(frame.failed(self.runtime.record_error(exc, frame.labels)))
                return done
            self._inflight[key] = (frame.digest, done)
            work.add_done_callback(
                lambda f: self._writer.submit(self._finish, frame, f, done, capture_time_ms)
            )
            return done

    def _stored(
        self,
        frame: _Frame,
        stored_digest: str | None,
        result: dict[str, Any],
        sent_digest: str | None = None,
    ) -> FrameOutcome:
        """The answer for a frame whose key is stored already: the stored result if the
        content is the same (or predates digests), else ALREADY_EXISTS."""
        sent_digest = frame.digest if sent_digest is None else sent_digest
        if stored_digest is not None and stored_digest != sent_digest:
            return frame.failed(self.runtime.record_error(frame.conflict(stored_digest)))
        self.runtime.metrics.duplicates.inc()
        return FrameOutcome(
            frame.stream_id,
            frame.sequence,
            True,
            AnalysisResult.model_validate(result),
            session=frame.session,
            digest=frame.digest,
            request_id=frame.request_id,
        )

    def _same_key(
        self, frame: _Frame, first_digest: str, first: Future[FrameOutcome]
    ) -> Future[FrameOutcome]:
        """A copy of a frame still in flight shares its work, if it is the same frame."""
        copy: Future[FrameOutcome] = Future()
        if first_digest != frame.digest and frame.digest != _EMPTY_DIGEST:
            copy.set_result(frame.failed(self.runtime.record_error(frame.conflict(first_digest))))
            return copy
        self.runtime.metrics.duplicates.inc()

        def mirror(f: Future[FrameOutcome]) -> None:
            o = f.result()
            copy.set_result(
                FrameOutcome(
                    o.stream_id,
                    o.sequence,
                    o.error is None,
                    o.result,
                    o.error,
                    o.session,
                    o.digest,
                    frame.request_id,
                )
            )

        first.add_done_callback(mirror)
        return copy

    def _finish(
        self,
        frame: _Frame,
        work: Future[Outcome],
        done: Future[FrameOutcome],
        capture_time_ms: int | None,
    ) -> None:
        try:
            try:
                outcome = work.result()
                result_to_store = outcome.result
                if outcome.image is not None:
                    thumb = jpeg_thumbnail_base64(outcome.image, self._thumbnail_px)
                    result_to_store = result_to_store.model_copy(
                        update={"thumbnail_jpeg_base64": thumb}
                    )
                stored, inserted = self.runtime.store.put(
                    frame.stream_id,
                    frame.sequence,
                    result_to_store.task,
                    result_to_store.to_json(),
                    capture_time_ms,
                    session=frame.session,
                    digest=frame.digest,
                    request_id=frame.request_id or None,
                )
            except BaseException as exc:
                # Failures are not stored: a resend after a transient error is retried.
                result = frame.failed(self.runtime.record_error(exc, frame.labels))
                log.info(
                    "frame %d of stream %s failed: %s",
                    frame.sequence,
                    frame.stream_id,
                    result.error.code.value if result.error else "?",
                    extra=frame.log_fields(),
                )
            else:
                if inserted:
                    log.info(
                        "stored frame %d of stream %s: %s, codec %s, %.4f bpp",
                        frame.sequence,
                        frame.stream_id,
                        result_to_store.task,
                        result_to_store.codec_id,
                        result_to_store.bits_per_pixel,
                        extra=frame.log_fields(),
                    )
                    result = FrameOutcome(
                        frame.stream_id,
                        frame.sequence,
                        False,
                        AnalysisResult.model_validate(stored.result),
                        session=frame.session,
                        digest=frame.digest,
                        request_id=frame.request_id,
                    )
                else:  # another copy was stored first
                    result = self._stored(frame, stored.digest, stored.result)
        finally:
            with self._lock:
                self._inflight.pop((frame.stream_id, frame.session, frame.sequence), None)
        done.set_result(result)


@dataclass(frozen=True)
class _Frame:
    stream_id: str
    sequence: int
    session: str
    digest: str
    labels: ModelLabels
    request_id: str = ""

    def log_fields(self) -> dict[str, Any]:
        """The frame's request fields for a log record (its key was checked already)."""
        return {
            "request_id": self.request_id,
            "stream_id": self.stream_id,
            "sequence": self.sequence,
        }

    def failed(self, error: ServiceError) -> FrameOutcome:
        return FrameOutcome(
            self.stream_id,
            self.sequence,
            error=error,
            session=self.session,
            digest=self.digest,
            request_id=self.request_id,
        )

    def conflict(self, stored_digest: str) -> ServiceError:
        return ServiceError(
            ErrorCode.ALREADY_EXISTS,
            f"frame {self.sequence} of stream {self.stream_id!r} (session {self.session!r}) "
            f"was already received with other content: stored sha256 {stored_digest}, this "
            f"frame's sha256 {self.digest}; send new content under a new sequence or session",
        )
