"""The gRPC Encoder service: Encode and GetInfo, with health, reflection and graceful stop."""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent import futures
from types import FrameType
from typing import Any

import grpc

import transtic
from services.common import request_ids
from services.common.auth import ApiKeys
from services.common.errors import ErrorCode, ServiceError, abort_grpc, to_service_error
from services.common.grpc_guard import GrpcGuard
from services.common.grpc_limits import server_options
from services.common.grpc_model_control import add_model_control
from services.common.grpc_utils import HealthPort, add_health_and_reflection, set_serving
from services.common.logs import log_context
from services.common.ratelimit import RateLimiter
from services.common.tls import add_port, describe_server, server_credentials
from services.generated.transtic.v1 import api_pb2, api_pb2_grpc

from .codecs import CodecBank
from .metrics import UNKNOWN, EncoderMetrics, HealthHTTPServer
from .model_control import EncoderModelControl
from .settings import EncoderSettings

log = logging.getLogger(__name__)

SERVICE_NAME = api_pb2.DESCRIPTOR.services_by_name["Encoder"].full_name
# Protobuf framing on top of the image bytes; the RPC limit must not cut in before ours does.
_MESSAGE_OVERHEAD = 64 * 1024


class EncoderServicer(api_pb2_grpc.EncoderServicer):
    def __init__(self, bank: CodecBank, settings: EncoderSettings, metrics: EncoderMetrics) -> None:
        self.bank = bank
        self.settings = settings
        self.metrics = metrics

    def Encode(self, request: api_pb2.EncodeRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        request_id = request_ids.echo_grpc(context)
        with log_context(request_id=request_id):
            return self._encode(request, context)

    def _encode(self, request: api_pb2.EncodeRequest, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        labels = {"codec": UNKNOWN, "quality": UNKNOWN, "task": UNKNOWN}
        with self.metrics.inflight.track_inprogress():
            try:
                task, quality = self.bank.resolve(request.task, request.quality)
                labels = {
                    "codec": self.bank.codec_id(task, quality),
                    "quality": str(quality),
                    "task": task,
                }
                t0 = time.perf_counter()
                image = self.bank.decode_upload(request.image)
                decode_ms = (time.perf_counter() - t0) * 1e3
                result = self.bank.encode(image, task, quality, request.align_mode)
            except ServiceError as exc:
                error = exc
            except Exception as exc:
                log.exception("encode failed")
                error = to_service_error(exc)
            else:
                elapsed = time.perf_counter() - start
                self._observe(task, quality, len(result.data), result.bpp, elapsed)
                h, w = result.header.original_size
                timings = {"decode_image": decode_ms, **result.timings, "total": elapsed * 1e3}
                return api_pb2.EncodeResponse(
                    bitstream=result.data,
                    bits_per_pixel=result.bpp,
                    width=w,
                    height=h,
                    timings_ms=timings,
                    codec_id=self.bank.codec_id(task, quality),
                    # From the stream itself: the model may have been swapped meanwhile.
                    fingerprint=result.header.weights_fingerprint.hex(),
                    quality=quality,
                    task=task,
                )
        self.metrics.count_error(error.grpc_status.name, **labels)
        abort_grpc(context, error)

    def _observe(self, task: str, quality: int, nbytes: int, bpp: float, seconds: float) -> None:
        m = self.metrics
        m.count_frame(self.bank.codec_id(task, quality), quality, task, nbytes, bpp)
        m.encode_seconds.labels(task).observe(seconds)

    def GetInfo(self, request: api_pb2.GetInfoRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return service_info(self.bank, self.settings)


def service_info(bank: CodecBank, settings: EncoderSettings) -> api_pb2.ServiceInfo:
    models = [
        api_pb2.ModelInfo(
            id=bank.codec_id(m.task, m.quality),
            kind="codec",
            task=m.task,
            quality=m.quality,
            fingerprint=m.fingerprint,
            detail=f"model {m.model_name}",
            ready=True,
            precision=bank.precision,
        )
        for m in bank.models()
    ]
    return api_pb2.ServiceInfo(
        service="encoder",
        version=transtic.__version__,
        device=bank.device,
        models=models,
        tasks=bank.tasks(),
        ready_tasks=bank.tasks(),  # the encoder loads every codec before it serves
        default_task=settings.task,
        default_quality=bank.default_quality(settings.task),
    )


class EncoderServer:
    """A started gRPC server plus the health state that probes read."""

    def __init__(
        self, settings: EncoderSettings, bank: CodecBank, metrics: EncoderMetrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics or EncoderMetrics()
        limit = settings.max_image_bytes + _MESSAGE_OVERHEAD
        metrics = self.metrics

        def refused(code: ErrorCode) -> None:
            metrics.count_error(code.value)

        guard = GrpcGuard(
            ApiKeys.from_settings(settings), RateLimiter.from_settings(settings), on_refused=refused
        )
        self._server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=settings.max_workers, thread_name_prefix="encode"
            ),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            interceptors=[guard] if guard.active else None,
            options=server_options(settings, limit),
        )
        api_pb2_grpc.add_EncoderServicer_to_server(
            EncoderServicer(bank, settings, self.metrics), self._server
        )
        self.control = EncoderModelControl(bank, settings)

        def control_error(exc: BaseException) -> ServiceError:
            error = to_service_error(exc)
            metrics.count_error(error.code.value)
            return error

        self.services = [
            SERVICE_NAME,
            add_model_control(self._server, self.control, control_error),
        ]
        self.health = add_health_and_reflection(self._server, self.services)
        self.port = add_port(
            self._server, f"{settings.host}:{settings.grpc_port}", server_credentials(settings)
        )
        if self.port == 0:
            raise OSError(f"cannot bind gRPC port {settings.host}:{settings.grpc_port}")
        self.health_port = HealthPort.from_settings(self.health, settings)
        self._http: HealthHTTPServer | None = None
        self._stopped = threading.Event()

    def start(self) -> EncoderServer:
        self._server.start()
        set_serving(self.health, self.services, True)
        if self.health_port is not None:
            self.health_port.start()
        if self.settings.http_port:
            self._http = HealthHTTPServer(
                self.settings.host, self.settings.http_port, self.metrics.registry, self.serving
            ).start()
        log.info(
            "encoder gRPC (%s) listening on %s:%d",
            describe_server(self.settings),
            self.settings.host,
            self.port,
        )
        return self

    def serving(self) -> bool:
        return not self._stopped.is_set()

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight ones finish within grace."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        grace = self.settings.shutdown_grace_s if grace is None else grace
        log.info("stopping: draining in-flight calls for up to %.1fs", grace)
        self._server.stop(grace).wait()
        self.control.close()
        if self._http is not None:
            self._http.stop()
        if self.health_port is not None:
            self.health_port.stop()
        log.info("encoder stopped")

    def wait(self) -> None:
        self._server.wait_for_termination()


def serve(settings: EncoderSettings) -> int:
    """Run until SIGTERM/SIGINT, then drain; the exit status is 0 on a clean stop."""
    # Unreadable certificates or key files stop the start here, before loading codecs.
    server_credentials(settings)
    ApiKeys.from_settings(settings)
    bank = CodecBank.load(settings)
    server = EncoderServer(settings, bank).start()
    stop_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop_requested.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    # Stopping from the main thread (not the handler) keeps the handler trivially reentrant.
    while not stop_requested.wait(1.0):
        pass
    server.stop()
    return 0
