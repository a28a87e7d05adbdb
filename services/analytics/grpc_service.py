"""The gRPC front end: transtic.v1.Analytics, plus health and reflection."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

import transtic
from services.analytics.metrics import ModelLabels
from services.analytics.runtime import Runtime
from services.analytics.streaming import FrameOutcome, FrameProcessor
from services.common import request_ids
from services.common.auth import ApiKeys
from services.common.errors import ErrorCode, ServiceError, abort_grpc
from services.common.grpc_guard import GrpcGuard
from services.common.grpc_limits import StreamLimiter, server_options
from services.common.grpc_model_control import add_model_control
from services.common.grpc_utils import HealthPort, add_health_and_reflection, set_serving
from services.common.logs import log_context
from services.common.ratelimit import RateLimiter
from services.common.tls import add_port, server_credentials
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = api_pb2.DESCRIPTOR.services_by_name["Analytics"].full_name
GRPC_API = "grpc"  # the metrics' api label of Analyze calls
_END = object()
_POLL_S = 0.5


def service_info(runtime: Runtime) -> api_pb2.ServiceInfo:
    info = api_pb2.ServiceInfo(
        service="analytics",
        version=transtic.__version__,
        device=runtime.hub.device,
        tasks=runtime.hub.tasks(),
        default_task=runtime.settings.default_task,
        ready_tasks=runtime.hub.ready_tasks(),
    )
    fields = set(api_pb2.ModelInfo.DESCRIPTOR.fields_by_name)
    for model in runtime.hub.describe():
        info.models.add(**{k: v for k, v in model.items() if k in fields})
    return info


class AnalyticsServicer(api_pb2_grpc.AnalyticsServicer):
    def __init__(self, runtime: Runtime, frames: FrameProcessor) -> None:
        self.runtime = runtime
        self.frames = frames
        # Bounds one stream's in-flight frames; beyond it the reader stops reading,
        # so a fast client is slowed by HTTP/2 flow control instead of erroring.
        self.stream_window = max(2, 2 * runtime.settings.max_batch_size)

    def Analyze(self, request: Any, context: grpc.ServicerContext) -> api_pb2.AnalyzeResult:
        request_id = request_ids.echo_grpc(context)
        with log_context(request_id=request_id):
            return self._analyze(request, context, request_id)

    def _analyze(
        self, request: Any, context: grpc.ServicerContext, request_id: str
    ) -> api_pb2.AnalyzeResult:
        labels = ModelLabels()
        start = time.perf_counter()
        try:
            future = self.runtime.submit_bitstream(
                request.bitstream,
                request.task or None,
                api=GRPC_API,
                labels=labels,
                request_id=request_id,
            )
            # A cancelled or expired call drops its work from the queue or between stages.
            context.add_callback(future.abandon)
            outcome = self.runtime.wait(future, context.time_remaining())
        except Exception as exc:
            error = self.runtime.record_error(exc, labels)
            if not context.is_active():
                return api_pb2.AnalyzeResult()  # nobody is listening any more
            abort_grpc(context, error)
            raise  # unreachable: abort raises
        finally:
            self.runtime.metrics.time_request(GRPC_API, labels, time.perf_counter() - start)
        log.debug("analysed: %s, codec %s", outcome.result.task, outcome.result.codec_id)
        return outcome.result.to_proto()

    def AnalyzeStream(
        self, request_iterator: Iterator[Any], context: grpc.ServicerContext
    ) -> Iterator[api_pb2.FrameAck]:
        def count_cancel() -> None:
            self.runtime.record_error(ServiceError(ErrorCode.CANCELLED, "stream cancelled"))

        def on_end() -> None:  # gRPC calls this once the call is over, however it ended
            if _cancelled_by_client(context):
                count_cancel()

        def ended_early() -> None:
            # Over before the handler did anything, so ended from outside: counted here
            # unless gRPC says the client did not cancel (on_end counts where it says so).
            if _cancelled_by_client(context) is None:
                count_cancel()

        # Registered first: a cancel can end the call before the handler gets here.
        if not context.add_callback(on_end):
            on_end()  # over already (gRPC refuses callbacks then)
            ended_early()
            return
        try:
            # The call's id; each frame gets its own (Frame.request_id, or derived from this).
            call_id = request_ids.echo_grpc(context)
        except grpc.RpcError:  # cancelled meanwhile
            ended_early()
            return
        acks: queue.Queue[Any] = queue.Queue()
        window = threading.BoundedSemaphore(self.stream_window)
        total: list[int] = []
        received = [0]
        last_activity = [time.monotonic()]
        idle_s = self.runtime.settings.grpc_stream_idle_timeout_s

        def on_done(f: futures.Future[FrameOutcome]) -> None:
            window.release()
            acks.put(f.result())

        def read() -> None:
            with log_context(request_id=call_id):
                read_frames()

        def read_frames() -> None:
            try:
                for frame in request_iterator:
                    last_activity[0] = time.monotonic()
                    while not window.acquire(timeout=_POLL_S):
                        if not context.is_active():
                            return
                    future = self.frames.submit(
                        frame.stream_id,
                        frame.sequence,
                        frame.bitstream,
                        frame.task or None,
                        frame.capture_time_unix_ms or None,
                        frame.session,
                        request_ids.for_frame(frame.request_id, call_id, frame.sequence),
                    )
                    received[0] += 1
                    future.add_done_callback(on_done)
            except Exception as exc:  # the client went away mid-stream (counted below)
                log.debug("stream reader ended: %s", exc)
            finally:
                total.append(received[0])
                acks.put(_END)

        threading.Thread(target=read, name="stream-reader", daemon=True).start()
        sent = 0
        while context.is_active():
            try:
                item = acks.get(timeout=_POLL_S)
            except queue.Empty:
                idle = time.monotonic() - last_activity[0]
                if not total and sent == received[0] and idle > idle_s:
                    # An idle stream holds a handler thread and a slot of the stream cap.
                    error = ServiceError(
                        ErrorCode.DEADLINE_EXCEEDED,
                        f"stream idle for {idle_s:g} s (no frame sent); closed",
                    )
                    abort_grpc(context, self.runtime.record_error(error))
                continue
            if item is not _END:
                sent += 1
                last_activity[0] = time.monotonic()
                yield _ack(item)
            if total and sent >= total[0]:
                if context.is_active():
                    return  # the client closed its side and every frame is acknowledged
                break
        # The call ended from outside (an idle stream is aborted above): the client
        # cancelled or went away; counted here where gRPC does not say so itself.
        if _cancelled_by_client(context) is None:
            count_cancel()

    def GetInfo(self, request: Any, context: grpc.ServicerContext) -> api_pb2.ServiceInfo:
        return service_info(self.runtime)


def _cancelled_by_client(context: grpc.ServicerContext) -> bool | None:
    """Whether the client cancelled the call (or let its deadline pass), as gRPC's server
    records it once the call has ended; None where this gRPC does not show it.

    The handler alone cannot tell: after a cancel, gRPC may end the request iterator as
    if the client had closed its side, and mark the call cancelled a moment later."""
    client = getattr(getattr(context, "_state", None), "client", None)
    return None if client is None else client == "cancelled"


def _ack(outcome: FrameOutcome) -> api_pb2.FrameAck:
    ack = api_pb2.FrameAck(
        stream_id=outcome.stream_id,
        sequence=outcome.sequence,
        duplicate=outcome.duplicate,
        content_sha256=outcome.digest,
        session=outcome.session,
        request_id=outcome.request_id,
    )
    if outcome.error is not None:
        ack.error_code = outcome.error.grpc_code_value
        ack.error_message = outcome.error.message
    elif outcome.result is not None:
        ack.result.CopyFrom(outcome.result.to_proto())
    return ack


class GrpcFrontEnd:
    """A bound (not yet started) gRPC server and its health status."""

    def __init__(self, runtime: Runtime, frames: FrameProcessor, address: str) -> None:
        settings = runtime.settings
        self.runtime = runtime
        limit = settings.max_upload_bytes

        def refused(code: ErrorCode) -> None:
            runtime.metrics.count_error(code.value)

        self.streams = StreamLimiter(settings.grpc_max_streams_per_client, settings.stream_cap)
        guard = GrpcGuard(
            ApiKeys.from_settings(settings),
            RateLimiter.from_settings(settings),
            streams=self.streams,
            calls=runtime.grpc_calls,
            on_refused=refused,
        )
        self.server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=settings.grpc_max_workers, thread_name_prefix="grpc"
            ),
            interceptors=[guard],
            options=server_options(settings, limit),
        )
        api_pb2_grpc.add_AnalyticsServicer_to_server(
            AnalyticsServicer(runtime, frames), self.server
        )
        control = add_model_control(self.server, runtime.models, runtime.record_error)
        self.services = [SERVICE_NAME, control]
        self.health = add_health_and_reflection(self.server, self.services)
        self.port = add_port(self.server, address, server_credentials(settings))
        if self.port == 0:
            raise OSError(f"cannot listen for gRPC on {address}")
        # Bound now (a taken port fails the start), started and stopped by the caller.
        # Probes on it see what /readyz says: not ready while draining, without a codec,
        # or while every gRPC handler thread is busy.
        self.health_port = HealthPort.from_settings(
            self.health, settings, ready=lambda: runtime.ready
        )

    def set_serving(self, serving: bool) -> None:
        set_serving(self.health, self.services, serving)
