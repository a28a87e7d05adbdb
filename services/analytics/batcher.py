"""Dynamic batching: a bounded queue and one worker thread that processes batches.

Items from any number of requests and streams are collected until the batch
is full or the first item has waited ``max_delay_s``; then the whole batch is
handed to ``process``, which returns one result or exception per item, so one
bad item never fails its neighbours. A single worker keeps the accelerator (or
the CPU threads) busy with one batch at a time, which is what batching is for.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

from services.common.errors import ErrorCode, ServiceError

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)

_STOP = object()


class Pending(Future[R]):
    """The future of one queued item, which its caller may abandon at any time.

    ``cancel()`` only works while the item waits in the queue; ``abandon()`` also
    raises the item's ``abandoned`` flag, which the processing function checks between
    stages, so a caller that timed out or went away stops costing work either way.
    """

    def __init__(self, abandoned: threading.Event | None = None) -> None:
        super().__init__()
        self.abandoned = abandoned or threading.Event()

    def abandon(self) -> None:
        self.abandoned.set()
        self.cancel()


class Batcher(Generic[T, R]):
    def __init__(
        self,
        process: Callable[[list[T]], list[R | BaseException]],
        *,
        max_batch_size: int = 8,
        max_delay_s: float = 0.005,
        max_queue: int = 64,
        retry_after_s: float = 1.0,
        on_batch: Callable[[int], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
        name: str = "batcher",
    ) -> None:
        if max_batch_size < 1 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be >= 1")
        self._process = process
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.retry_after_s = retry_after_s
        self._on_batch = on_batch
        self._on_depth = on_depth
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue)
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._thread.start()

    @property
    def capacity(self) -> int:
        return self._queue.maxsize

    @property
    def free_slots(self) -> int:
        """Items the queue takes now (a hint: others may take them first)."""
        return self._queue.maxsize - self._queue.qsize()

    def check_room(self, items: int) -> None:
        """RESOURCE_EXHAUSTED (with a retry-after) unless the queue has room for ``items``."""
        if self.free_slots < items:
            raise ServiceError(
                ErrorCode.RESOURCE_EXHAUSTED,
                f"analysis queue is full ({self._queue.maxsize} frames); retry later",
                retry_after_s=self.retry_after_s,
            )

    def submit(self, payload: T, abandoned: threading.Event | None = None) -> Pending[R]:
        """Queue one item; raises RESOURCE_EXHAUSTED when the queue is full.

        ``abandoned`` is the flag the returned future's ``abandon()`` raises; pass the
        one ``process`` looks at for this payload.
        """
        (future,) = self.submit_all([(payload, abandoned)])
        return future

    def submit_all(self, items: list[tuple[T, threading.Event | None]]) -> list[Pending[R]]:
        """Queue all of ``items`` (payload, abandoned flag) or none: RESOURCE_EXHAUSTED
        when the queue lacks room for every one, so a refused request leaves no work."""
        futures: list[Pending[R]] = [Pending(abandoned) for _, abandoned in items]
        with self._lock:
            if self._closed:
                raise ServiceError(ErrorCode.UNAVAILABLE, "the service is shutting down")
            # Only submitters (under this lock) add to the queue and the worker only takes
            # from it, so room seen here stays room until the puts below.
            self.check_room(len(items))
            for (payload, _), future in zip(items, futures, strict=True):
                self._queue.put_nowait((payload, future))
        self._report_depth()
        return futures

    def close(self, timeout: float | None = None) -> None:
        """Refuse new items, finish everything queued, stop the worker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread.is_alive():
            self._queue.put(_STOP)  # blocks only while the worker drains a full queue
            self._thread.join(timeout)

    # -- worker ---------------------------------------------------------------------
    def _report_depth(self) -> None:
        if self._on_depth is not None:
            self._on_depth(self._queue.qsize())

    def _collect(self) -> tuple[list[tuple[T, Pending[R]]], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self.max_delay_s
        stop = False
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        return batch, stop  # type: ignore[return-value]

    def _run(self) -> None:
        while True:
            batch, stop = self._collect()
            self._report_depth()
            # Requests that gave up (cancelled futures) are not worth computing.
            live = []
            for payload, future in batch:
                if future.abandoned.is_set():
                    future.cancel()
                if future.set_running_or_notify_cancel():
                    live.append((payload, future))
            if live:
                self._run_batch(live)
            if stop:
                return

    def _run_batch(self, batch: list[tuple[T, Pending[R]]]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        try:
            results = self._process([payload for payload, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} produced {len(results)} results")
        except Exception as exc:  # the worker must survive anything a batch does
            log.exception("batch of %d failed as a whole", len(batch))
            results = [exc] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
