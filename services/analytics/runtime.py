"""Everything one service process holds, shared by the REST and gRPC front ends."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from torch import Tensor

from services.analytics.batcher import Batcher, Pending
from services.analytics.hub import ModelHub
from services.analytics.metrics import Metrics, ModelLabels
from services.analytics.model_control import ModelControl
from services.analytics.pipeline import Job, Outcome, Pipeline
from services.analytics.settings import Settings
from services.analytics.store import open_store
from services.common.errors import ServiceError, to_service_error
from services.common.grpc_limits import CallCounter
from services.common.model_loader import InFlight
from transtic.bitstream import peek_header
from transtic.tasks import TaskBackend
from transtic.tasks.registry import BackendRegistry

log = logging.getLogger(__name__)


def build_labels() -> dict[str, str]:
    """Versions that decide behaviour: the package, Python, torch and its CUDA build."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    try:
        package = version("transtic")
    except PackageNotFoundError:  # run from a checkout without installing
        package = "unknown"
    return {
        "version": package,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
    }


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        backends: Sequence[TaskBackend] | None = None,
        backend_registry: BackendRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics(request_timeout_s=settings.request_timeout_s)
        self.hub = ModelHub(settings, backends=backends, backend_registry=backend_registry)
        self.models = ModelControl(self.hub)
        self.metrics.model_ready.set_function(lambda: float(self.ready))
        self.metrics.models_loaded.labels("codec").set_function(lambda: len(self.hub.codecs))
        self.metrics.models_loaded.labels("task").set_function(lambda: len(self.hub.ready_tasks()))
        self.metrics.queue_capacity.set(settings.max_queue)
        self.metrics.build_info.labels(**build_labels()).set(1)
        self.pipeline = Pipeline(self.metrics)
        self.batcher: Batcher[Job, Outcome] = Batcher(
            self.pipeline.process,
            max_batch_size=settings.max_batch_size,
            max_delay_s=settings.max_batch_delay_ms / 1e3,
            max_queue=settings.max_queue,
            on_batch=self.metrics.batch_size.observe,
            on_depth=self.metrics.queue_depth.set,
        )
        self.store = open_store(settings)
        self.draining = False
        self._started = False
        # gRPC calls in progress (counted by the gRPC front end): readiness fails when
        # they hold every handler thread, as the HTTP side cannot see that otherwise.
        self.grpc_calls = CallCounter()

    def start(self) -> None:
        if self._started:
            return
        self.hub.load()
        self.batcher.start()
        self._started = True

    def drain(self) -> None:
        """Refuse new work and finish everything queued (call after the servers stopped)."""
        self.draining = True
        self.batcher.close(timeout=self.settings.request_timeout_s)

    def close(self) -> None:
        self.drain()
        self.models.close()
        self.store.close()

    @property
    def started(self) -> bool:
        return self._started

    @property
    def ready(self) -> bool:
        return self._started and self.hub.ready and not self.draining and not self.grpc_saturated

    @property
    def grpc_saturated(self) -> bool:
        return self.grpc_calls.in_flight >= self.settings.grpc_max_workers

    def record_error(self, exc: BaseException, labels: ModelLabels | None = None) -> ServiceError:
        """Classify ``exc`` for a client and count it (under the model the request had
        resolved to, if any); unexpected ones are logged in full."""
        error = to_service_error(exc)
        if error is not exc and error.code.value == "INTERNAL":
            log.error("unexpected error", exc_info=exc)
        self.metrics.count_error(error.code.value, labels)
        return error

    # -- submission (raises ServiceError for what can be refused up front) -------------
    def submit_bitstream(
        self,
        data: bytes,
        task: str | None,
        *,
        api: str,
        keep_image: bool = False,
        labels: ModelLabels | None = None,
        request_id: str = "",
    ) -> Pending[Outcome]:
        """Queue a bitstream; ``labels`` (if given) learn the codec and task as they are
        resolved, so a caller counts a refusal under what was known by then."""
        job = self.bitstream_job(
            data, task, api=api, keep_image=keep_image, labels=labels, request_id=request_id
        )
        return self._queue(job)

    def bitstream_job(
        self,
        data: bytes,
        task: str | None,
        *,
        api: str,
        keep_image: bool = False,
        labels: ModelLabels | None = None,
        request_id: str = "",
    ) -> Job:
        """The job of a bitstream, checked (header, size, codec, task) but not queued."""
        labels = labels if labels is not None else ModelLabels()
        try:
            header = peek_header(data, max_pixels=self.settings.max_pixels)
        except Exception as exc:
            raise to_service_error(exc) from None
        codec = self.hub.codec_for_stream(header)
        labels.codec, labels.quality = codec.id, str(codec.quality)
        try:
            # What the header claims is what decoding would cost: refused before queueing.
            codec.codec.check_size(*header.original_size)
        except Exception as exc:
            raise to_service_error(exc) from None
        task = self.hub.resolve_task(task, header.task)
        labels.task = task
        backend = self.hub.backend(task)
        return Job(
            task,
            codec,
            backend,
            api,
            bitstream=data,
            keep_image=keep_image,
            request_id=request_id,
        )

    def submit_image(
        self,
        image: Tensor,
        task: str | None,
        quality: int | None,
        *,
        api: str,
        keep_image: bool = False,
        labels: ModelLabels | None = None,
        request_id: str = "",
    ) -> Pending[Outcome]:
        job = self.image_job(
            image,
            task,
            quality,
            api=api,
            keep_image=keep_image,
            labels=labels,
            request_id=request_id,
        )
        return self._queue(job)

    def image_job(
        self,
        image: Tensor,
        task: str | None,
        quality: int | None,
        *,
        api: str,
        keep_image: bool = False,
        labels: ModelLabels | None = None,
        request_id: str = "",
    ) -> Job:
        """The job of a decoded image, checked (size, codec, task) but not queued."""
        labels = labels if labels is not None else ModelLabels()
        task = self.hub.resolve_task(task)
        labels.task = task
        codec = self.hub.codec_for_image(task, quality)
        labels.codec, labels.quality = codec.id, str(codec.quality)
        try:
            codec.codec.check_size(int(image.shape[-2]), int(image.shape[-1]))
        except Exception as exc:
            raise to_service_error(exc) from None
        backend = self.hub.backend(task)
        return Job(
            task,
            codec,
            backend,
            api,
            image=image,
            keep_image=keep_image,
            request_id=request_id,
        )

    def _queue(self, job: Job) -> Pending[Outcome]:
        (future,) = self.queue_all([job])
        return future

    def queue_all(self, jobs: list[Job]) -> list[Pending[Outcome]]:
        """Queue every job or none (RESOURCE_EXHAUSTED: no room for all), each holding its
        codec and task model until it is done: unloading either (model control) lets the
        job finish on the model it was given."""
        held = [counter for job in jobs for counter in (job.codec.in_flight, job.backend.in_flight)]
        for counter in held:
            counter.hold()

        def release(counters: list[InFlight]) -> None:
            for counter in counters:
                counter.release()
            if self.hub.retired:
                self.hub.unloading()  # the last holder of an unloaded model lets it go

        def release_when_done(job: Job) -> Callable[[object], None]:
            return lambda _: release([job.codec.in_flight, job.backend.in_flight])

        try:
            futures = self.batcher.submit_all([(job, job.abandoned) for job in jobs])
        except BaseException:
            release(held)
            raise
        for job, future in zip(jobs, futures, strict=True):
            future.add_done_callback(release_when_done(job))
        return futures

    def wait(self, future: Pending[Outcome], deadline_s: float | None = None) -> Outcome:
        """Block for a result (gRPC threads), at most the request timeout or ``deadline_s``;
        on a timeout the work is abandoned, so it stops holding up the requests behind it."""
        timeout = self.settings.request_timeout_s
        if deadline_s is not None:
            timeout = min(timeout, max(0.0, deadline_s))
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            future.abandon()
            raise
