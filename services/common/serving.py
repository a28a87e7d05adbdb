"""Run a gRPC server and a uvicorn HTTP server in one process, and stop them gracefully.

On SIGTERM/SIGINT: report "draining" (so health checks fail and load balancers
move away), stop accepting new connections and RPCs, let in-flight work finish
within the grace period, then return so the caller can release its resources.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Generator

import grpc
import uvicorn

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn would re-raise the captured signal after its own shutdown, killing the
    process before the gRPC side has drained; the signals are ours to handle."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind_http_socket(host: str, port: int) -> socket.socket:
    """Bind the HTTP port up front: a clear OSError here beats uvicorn's sys.exit() from
    inside the event loop, and port 0 yields its real number before serving starts."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"cannot listen for HTTP on {host}:{port}: {exc.strerror}"
        ) from None
    return sock


async def serve_until_signalled(
    grpc_server: grpc.Server,
    http_config: uvicorn.Config,
    *,
    grace_s: float,
    on_draining: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
    http_socket: socket.socket | None = None,
) -> None:
    """Start both servers (gRPC must be bound, not yet started) and serve until stopped.

    Pass ``http_socket`` from :func:`bind_http_socket`; without it uvicorn binds
    ``http_config``'s host and port itself.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    http = _Server(http_config)
    grpc_server.start()
    sockets = [http_socket] if http_socket is not None else None
    http_task = asyncio.create_task(http.serve(sockets=sockets))
    stop_task = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({http_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        log.info("shutting down: draining in-flight requests (grace %.1f s)", grace_s)
        if on_draining is not None:
            on_draining()
        grpc_stopped = grpc_server.stop(grace_s)
        http.should_exit = True
        stop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stop_task
        # A failed HTTP start (port taken) surfaces here as SystemExit; re-raise it.
        await http_task
        await asyncio.to_thread(grpc_stopped.wait, grace_s + 5.0)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        log.info("servers stopped")
