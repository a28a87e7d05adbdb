"""Standard gRPC server extras: health checking and reflection."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

OVERALL = ""  # the health service's name for "the whole server"
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
