"""Streamed frames: deduplicated by (stream_id, sequence), persisted before the ack.

A frame already stored is answered from the store; a frame still being
processed (a resend that overtook its own ack) shares the first copy's work.
So a client may resend anything after a reconnect and nothing runs twice.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from services.analytics.pipeline import Outcome
from services.analytics.results import jpeg_thumbnail_base64
from services.analytics.runtime import Runtime
from services.analytics.schemas import AnalysisResult
from services.analytics.store import MAX_SEQUENCE
from services.common.errors import ErrorCode, ServiceError

log = logging.getLogger(__name__)
MAX_STREAM_ID = 128


@dataclass(frozen=True)
class FrameOutcome:
    stream_id: str
    sequence: int
    duplicate: bool = False
    result: AnalysisResult | None = None
    error: ServiceError | None = None


def check_frame_key(stream_id: str, sequence: int) -> None:
    if not stream_id or len(stream_id) > MAX_STREAM_ID or not stream_id.isprintable():
        raise ServiceError(
            ErrorCode.INVALID_ARGUMENT,
            f"stream_id must be 1..{MAX_STREAM_ID} printable characters",
        )
    if not 0 <= sequence <= MAX_SEQUENCE:
        raise ServiceError(
            ErrorCode.INVALID_ARGUMENT, f"sequence must be below 2**63, got {sequence}"
        )


class FrameProcessor:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._inflight: dict[tuple[str, int], Future[FrameOutcome]] = {}
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
    ) -> Future[FrameOutcome]:
        key = (stream_id, sequence)
        done: Future[FrameOutcome] = Future()
        with self._lock:
            first = self._inflight.get(key)
            if first is None:
                try:
                    check_frame_key(stream_id, sequence)
                    # Checked after _inflight: a frame leaves it only once stored,
                    # so no copy can slip between the two lookups and run twice.
                    stored = self.runtime.store.get(stream_id, sequence)
                    if stored is None:
                        work = self.runtime.submit_bitstream(
                            bitstream, task, source="stream", keep_image=self._thumbnail_px > 0
                        )
                except Exception as exc:
                    done.set_result(self._failed(key, exc))
                    return done
                if stored is not None:
                    self.runtime.metrics.duplicates.inc()
                    done.set_result(
                        FrameOutcome(
                            stream_id,
                            sequence,
                            True,
                            AnalysisResult.model_validate(stored.result),
                        )
                    )
                    return done
                self._inflight[key] = done
                work.add_done_callback(
                    lambda f: self._writer.submit(self._finish, key, f, done, capture_time_ms)
                )
                return done
        self.runtime.metrics.duplicates.inc()
        copy: Future[FrameOutcome] = Future()

        def mirror(f: Future[FrameOutcome]) -> None:
            o = f.result()
            copy.set_result(
                FrameOutcome(o.stream_id, o.sequence, o.error is None, o.result, o.error)
            )

        first.add_done_callback(mirror)
        return copy

    def _failed(self, key: tuple[str, int], exc: BaseException) -> FrameOutcome:
        return FrameOutcome(key[0], key[1], error=self.runtime.record_error(exc))

    def _finish(
        self,
        key: tuple[str, int],
        work: Future[Outcome],
        done: Future[FrameOutcome],
        capture_time_ms: int | None,
    ) -> None:
        try:
            try:
                outcome = work.result()
                stored = outcome.result
                if outcome.image is not None:
                    thumb = jpeg_thumbnail_base64(outcome.image, self._thumbnail_px)
                    stored = stored.model_copy(update={"thumbnail_jpeg_base64": thumb})
                frame, inserted = self.runtime.store.put(
                    key[0], key[1], stored.task, stored.to_json(), capture_time_ms
                )
            except BaseException as exc:
                # Failures are not stored: a resend after a transient error is retried.
                result = self._failed(key, exc)
            else:
                if not inserted:
                    self.runtime.metrics.duplicates.inc()
                result = FrameOutcome(
                    key[0], key[1], not inserted, AnalysisResult.model_validate(frame.result)
                )
        finally:
            with self._lock:
                self._inflight.pop(key, None)
        done.set_result(result)
