"""Run the analytics service: gRPC and HTTP in one process, sharing one runtime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import uvicorn

from services.analytics.grpc_service import GrpcFrontEnd
from services.analytics.rest import create_app
from services.analytics.runtime import Runtime
from services.analytics.settings import Settings
from services.analytics.streaming import FrameProcessor
from services.common.auth import ApiKeys
from services.common.http_limits import guarded_http_protocol
from services.common.logs import configure_logging
from services.common.serving import bind_http_socket, serve_until_signalled
from services.common.tls import describe_server, server_credentials
from transtic.allocator import retain_freed_memory
from transtic.kernels import set_cache_dir as set_kernel_cache_dir
from transtic.tasks import TaskBackend

log = logging.getLogger(__name__)


def grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def http_tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS arguments: HTTPS with the gRPC server certificate when http_tls is on."""
    if not settings.http_tls or settings.tls_cert_file is None:
        return {}
    return {"ssl_certfile": str(settings.tls_cert_file), "ssl_keyfile": str(settings.tls_key_file)}


def run(settings: Settings, *, backends: Sequence[TaskBackend] | None = None) -> None:
    configure_logging(settings.log_level, settings.log_format)
    set_kernel_cache_dir(settings.kernel_cache_dir)
    retain_freed_memory()  # before any server thread gets an arena of its own
    # Unreadable certificates or key files stop the start here, before minutes of loading.
    server_credentials(settings)
    ApiKeys.from_settings(settings)
    runtime = Runtime(settings, backends=backends)
    runtime.start()
    frames = FrameProcessor(runtime)
    front: GrpcFrontEnd | None = None
    try:
        front = GrpcFrontEnd(runtime, frames, grpc_address(settings.host, settings.grpc_port))
        http_socket = bind_http_socket(settings.host, settings.http_port)
        http_port = http_socket.getsockname()[1]
        config = uvicorn.Config(
            create_app(settings, runtime),
            host=settings.host,
            port=http_port,
            log_config=None,
            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
            http=guarded_http_protocol(
                max_connections=settings.http_max_connections,
                header_timeout_s=settings.http_header_timeout_s,
            ),
            **http_tls_options(settings),
        )
        front.set_serving(runtime.ready)
        log.info(
            "analytics: gRPC (%s) on %s, HTTP on %s://%s, device %s, ready=%s",
            describe_server(settings),
            grpc_address(settings.host, front.port),
            "https" if settings.http_tls else "http",
            grpc_address(settings.host, http_port),
            runtime.hub.device,
            runtime.ready,
        )

        def draining() -> None:
            runtime.draining = True
            front.set_serving(False)

        if front.health_port is not None:
            front.health_port.start()
        asyncio.run(
            serve_until_signalled(
                front.server,
                config,
                grace_s=settings.shutdown_grace_s,
                on_draining=draining,
                http_socket=http_socket,
            )
        )
    finally:
        # Stopped last: through the drain, probes read NOT_SERVING rather than a dead port.
        if front is not None and front.health_port is not None:
            front.health_port.stop()
        # Queued frames finish first, so their results still reach the store writer.
        runtime.drain()
        frames.close()
        runtime.close()
        log.info("analytics service stopped")
