"""Standard gRPC server extras: health checking, reflection and a health-only port."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from services.common.settings import ServiceSettings
from services.common.tls import add_port

log = logging.getLogger(__name__)

OVERALL = ""  # the health service's name for "the whole server"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# grpcio-reflection implements v1alpha only; v1 has the same messages under another
# package name (identical on the wire), so the same servicer answers both.
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def add_health_and_reflection(
    server: grpc.Server, service_names: Iterable[str]
) -> health.HealthServicer:
    """Register grpc.health.v1 and reflection (v1 and v1alpha); everything starts
    NOT_SERVING."""
    names = list(service_names)
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in [OVERALL, *names]:
        servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    listed = [*names, health.SERVICE_NAME, reflection.SERVICE_NAME, REFLECTION_V1]
    reflection.enable_server_reflection(listed, server)
    answer = reflection.ReflectionServicer(listed).ServerReflectionInfo
    v1 = grpc.stream_stream_rpc_method_handler(
        answer,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": v1}),)
    )
    return servicer


def set_serving(
    servicer: health.HealthServicer, service_names: Iterable[str], serving: bool
) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in [OVERALL, *service_names]:
        servicer.set(name, status)


class HealthPort:
    """A second, plaintext gRPC server that answers grpc.health.v1 Check and nothing else.

    The kubelet's gRPC probe cannot do TLS, and the service's gRPC port may demand mutual
    TLS; this port gives the probe the same health status (one shared servicer, so drain
    and readiness changes show at once) without opening any API to plaintext. Watch is
    left out because a stream would hold one of the port's few threads for its lifetime;
    its own small thread pool keeps a flood of checks off the service's workers, and lets
    the port answer while those workers are all busy. ``ready``, when given, is asked at
    each check: a SERVING status is reported as NOT_SERVING while it is false (the
    analytics service is not ready while every gRPC handler thread is busy, for example).
    """

    THREADS = 2
    MAX_CALLS = 8  # beyond this a check is refused at once (RESOURCE_EXHAUSTED)

    def __init__(
        self,
        servicer: health.HealthServicer,
        address: str,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self.address = address
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.THREADS, thread_name_prefix="health"),
            maximum_concurrent_rpcs=self.MAX_CALLS,
        )

        def answer(
            request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
        ) -> health_pb2.HealthCheckResponse:
            reply = servicer.Check(request, context)  # an unknown service stays NOT_FOUND
            if reply.status == SERVING and ready is not None and not ready():
                return health_pb2.HealthCheckResponse(status=NOT_SERVING)
            return reply

        check = grpc.unary_unary_rpc_method_handler(
            answer,
            request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
        )
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(health.SERVICE_NAME, {"Check": check}),)
        )
        self.port = add_port(self.server, address, None)
        if self.port == 0:
            raise OSError(f"cannot listen for gRPC health checks on {address}")

    @classmethod
    def from_settings(
        cls,
        servicer: health.HealthServicer,
        settings: ServiceSettings,
        ready: Callable[[], bool] | None = None,
    ) -> HealthPort | None:
        """The port ``grpc_health_port`` asks for on the service's host; None when unset."""
        if settings.grpc_health_port is None:
            return None
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        return cls(servicer, f"{host}:{settings.grpc_health_port}", ready)

    def start(self) -> HealthPort:
        self.server.start()
        log.info("gRPC health checks (plaintext, Health/Check only) on port %d", self.port)
        return self

    def stop(self) -> None:
        # Called after the service has drained: a probe in flight gets its answer.
        self.server.stop(1.0).wait()
