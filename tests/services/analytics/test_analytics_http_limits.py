"""HTTP limits: header and body read timeouts, a connection cap, a body memory budget."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from service_fakes import analyze_scope

from services.analytics.rest import create_app
from services.analytics.runtime import Runtime
from services.common.http_limits import guarded_http_protocol
from services.common.serving import bind_http_socket


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def http_server(max_connections: int, header_timeout_s: float) -> Iterator[int]:
    sock = bind_http_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    protocol = guarded_http_protocol(
        max_connections=max_connections, header_timeout_s=header_timeout_s
    )
    server = uvicorn.Server(uvicorn.Config(hello, http=protocol, log_config=None, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def closed_within(conn: socket.socket, seconds: float) -> bool:
    """True when the server closes ``conn`` (recv gives b"") within ``seconds``."""
    conn.settimeout(seconds)
    try:
        return conn.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return conn.recv(1024)


def test_slow_headers_are_cut_off() -> None:
    with http_server(max_connections=8, header_timeout_s=0.5) as port:
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            assert closed_within(slow, 10)
        assert get(port).startswith(b"HTTP/1.1 200")


def test_connections_beyond_the_cap_are_closed_and_the_server_still_answers() -> None:
    with http_server(max_connections=4, header_timeout_s=1.0) as port:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        try:
            time.sleep(0.3)  # accepted
            with socket.create_connection(("127.0.0.1", port)) as extra:
                assert closed_within(extra, 5)
            for conn in idle:  # the half-open ones go after the header timeout
                assert closed_within(conn, 10)
            assert get(port).startswith(b"HTTP/1.1 200")
        finally:
            for conn in idle:
                conn.close()


async def request(app: Any, receive: Callable[[], Any]) -> int:
    """Run one request through the ASGI app; its response status."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(analyze_scope(), receive, send), 30)
    return int(sent[0]["status"])


def trickling(first: bytes) -> Callable[[], Any]:
    """A client that sends ``first`` and then one byte a second, forever."""
    chunks = [first]

    async def receive() -> dict[str, Any]:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(), "more_body": True}
        await asyncio.sleep(1.0)
        return {"type": "http.request", "body": b"x", "more_body": True}

    return receive


def whole(body: bytes) -> Callable[[], Any]:
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    return receive


def test_a_trickling_body_gets_408(start_runtime: Callable[..., Runtime], bitstream: bytes) -> None:
    rt = start_runtime(http_body_timeout_s=0.5)
    status = asyncio.run(request(create_app(rt.settings, rt), trickling(bitstream[:10])))
    assert status == 408
    assert rt.metrics.total(rt.metrics.errors, code="REQUEST_TIMEOUT") == 1


def test_bodies_in_memory_are_bounded(
    start_runtime: Callable[..., Runtime], bitstream: bytes
) -> None:
    rt = start_runtime(http_max_buffered_bytes=len(bitstream) + 100, http_body_timeout_s=3.0)
    app = create_app(rt.settings, rt)

    async def scenario() -> tuple[int, int, int]:
        holder = asyncio.create_task(request(app, trickling(b"\0" * 200)))
        await asyncio.sleep(0.5)  # the slow upload holds 200 bytes of the budget
        refused = await request(app, whole(bitstream))
        held_status = await holder  # its body never completes: 408, and its bytes go back
        served = await request(app, whole(bitstream))
        return refused, held_status, served

    refused, held_status, served = asyncio.run(scenario())
    assert (refused, held_status, served) == (429, 408, 200)
