"""HTTP limits: header and body read timeouts, a connection cap, a body memory budget."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from services.analytics.rest import BITSTREAM_TYPE, create_app
from services.analytics.runtime import Runtime
from services.analytics.settings import Settings
from services.common.http_limits import BodyBudget, guarded_http_protocol
from services.common.serving import bind_http_socket

from .fakes import FakeDetection


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


@pytest.fixture
def runtime(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Runtime]]:
    started: list[Runtime] = []

    def start(**overrides: Any) -> Runtime:
        rt = Runtime(make_settings(**overrides), backends=[FakeDetection()])
        rt.start()
        started.append(rt)
        return rt

    yield start
    for rt in started:
        rt.close()


def call(app: Any, receive: Callable[[], Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/analyze",
        "raw_path": b"/v1/analyze",
        "query_string": b"task=detection",
        "headers": [(b"content-type", BITSTREAM_TYPE.encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
        "root_path": "",
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 30))
    return sent


def test_a_trickling_body_gets_408(runtime: Callable[..., Runtime], bitstream: bytes) -> None:
    rt = runtime(http_body_timeout_s=0.5)
    chunks = [bitstream[:10]]

    async def trickle() -> dict[str, Any]:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(), "more_body": True}
        await asyncio.sleep(1.0)  # one byte a second, forever
        return {"type": "http.request", "body": b"x", "more_body": True}

    sent = call(create_app(rt.settings, rt), trickle)
    assert sent[0]["status"] == 408
    assert rt.metrics.errors.labels("REQUEST_TIMEOUT")._value.get() == 1  # type: ignore[attr-defined]


def test_bodies_in_memory_are_bounded(
    make_settings: Callable[..., Settings], bitstream: bytes
) -> None:
    settings = make_settings(http_max_buffered_bytes=len(bitstream) * 2)
    headers = {"content-type": BITSTREAM_TYPE}
    with TestClient(create_app(settings, backends=[FakeDetection()])) as client:
        budget: BodyBudget = client.app.state.body_budget  # type: ignore[attr-defined]
        with budget.account() as take:
            take(len(bitstream) + 1)  # another upload holds half the budget
            refused = client.post("/v1/analyze?task=detection", content=bitstream, headers=headers)
            assert refused.status_code == 429, refused.text
            assert refused.headers["retry-after"] == "1"
        served = client.post("/v1/analyze?task=detection", content=bitstream, headers=headers)
        assert served.status_code == 200, served.text
        assert budget.held == 0
