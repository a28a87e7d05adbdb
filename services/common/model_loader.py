"""Model loads on their own thread, one at a time, for model control in either service,
and the in-flight count that lets an unloaded model finish the requests holding it.

A load reads and checks a weights file and builds a model: seconds of work that must
not run on the event loop or on a thread that serves requests, and two at once would
hold two big models in memory beside the serving ones. Loading the same name twice at
once is refused (FAILED_PRECONDITION) rather than queued: the second caller learns that
the first is under way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from services.common.errors import ErrorCode, ServiceError, to_service_error
from services.common.model_catalog import check_model_name
from transtic.models import CheckpointError
from transtic.weights import WeightsError

T = TypeVar("T")
log = logging.getLogger(__name__)


class SerialLoader:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        self._loading: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False

    def loading(self) -> set[str]:
        with self._lock:
            return set(self._loading)

    def submit(self, name: str, load: Callable[[str], T]) -> Future[T]:
        """Run ``load(name)`` on the loader thread; its errors come back as ServiceError."""
        check_model_name(name)
        with self._lock:
            if self._closed:
                raise ServiceError(ErrorCode.UNAVAILABLE, "the service is shutting down")
            if name in self._loading:
                raise ServiceError(
                    ErrorCode.FAILED_PRECONDITION, f"model {name!r} is being loaded already"
                )
            self._loading.add(name)
            future = self._pool.submit(_translated, load, name)
        future.add_done_callback(lambda _: self._done(name))
        return future

    def _done(self, name: str) -> None:
        with self._lock:
            self._loading.discard(name)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)


def _translated(load: Callable[[str], T], name: str) -> T:
    try:
        return load(name)
    except ServiceError:
        raise
    except (CheckpointError, WeightsError, LookupError) as exc:
        # A missing file, one failing its digest, an unknown backend: the operator acts.
        raise ServiceError(
            ErrorCode.FAILED_PRECONDITION, f"model {name!r} not loaded: {exc}"
        ) from None
    except Exception as exc:
        log.exception("loading model %s failed", name)
        raise to_service_error(exc) from exc


class InFlight:
    """How many requests hold a model: one unloaded while they run stays alive for them
    (each request keeps its own reference) and is listed as UNLOADING until they finish."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    def hold(self) -> None:
        with self._lock:
            self._count += 1

    def release(self) -> None:
        with self._lock:
            self._count -= 1

    @property
    def count(self) -> int:
        return self._count
